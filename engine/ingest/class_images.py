"""Pictures of a store's classes: glyphs drawn from matplotlib's fonts, or the first image of an
ImageFolder class found on this machine (PNG bytes, cached in memory).

The one place the engine reads fonts and dataset images for display (the pages' star graphs and
tables, the talk's slides); :mod:`engine.apps.views` stays pure.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

from engine.core.categories import glyph_name_mask, is_glyph_name
from engine.storage.manifests import manifest_dataset


def class_image_source(manifest: dict, class_names: list[str]) -> str | None:
    """How images of this store's classes can be shown: 'glyph', 'folder' or None."""
    dataset = manifest_dataset(manifest)
    if str(dataset.get("name", "")).lower().startswith("glyph") or (class_names and all(is_glyph_name(n) for n in class_names[:50])):
        return "glyph"
    if _image_folder_root(manifest) is not None:
        return "folder"
    return None


def class_image_png(
    manifest: dict, class_names: list[str], index: int, size: int = 64, kind: str | None = "detect"
) -> bytes | None:
    """A PNG of class ``index`` (dark ink on white for glyphs), or None when there is none.

    Glyph classes are drawn cleanly from matplotlib's own fonts (the face that covers the
    character); ImageFolder datasets give the first image of the class folder when that
    folder exists on this machine.
    """
    if kind == "detect":
        kind = class_image_source(manifest, class_names)
    if kind == "glyph" and is_glyph_name(class_names[index]):
        return glyph_png(class_names[index][0], size)
    if kind == "folder":
        root = _image_folder_root(manifest)
        folders = manifest_dataset(manifest).get("folder_names")
        folder = folders[index] if isinstance(folders, list) and len(folders) == len(class_names) else class_names[index]
        return None if root is None else _folder_png(root, str(folder), size)
    return None


def class_image_pngs(manifest: dict, class_names: list[str], indices, kind: str | None = "detect") -> dict[int, bytes | None]:
    """:func:`class_image_png` of each class of ``indices`` (64 px), by index."""
    if kind == "detect":
        kind = class_image_source(manifest, class_names)
    indices = [int(i) for i in indices]
    if kind == "glyph":  # the glyph test done once for all
        glyph = glyph_name_mask([class_names[i] for i in indices])
        return {i: glyph_png(class_names[i][0], 64) if g else None for i, g in zip(indices, glyph)}
    return {i: None if kind is None else class_image_png(manifest, class_names, i, kind=kind) for i in indices}


_GLYPH_FACES = ("DejaVuSans.ttf", "STIXGeneral.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf")


def _font_dir() -> Path:
    """matplotlib's TrueType folder, found without importing matplotlib (or engine.ingest.glyphs/torch)."""
    from importlib.util import find_spec

    spec = find_spec("matplotlib")
    return Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf"


@lru_cache(maxsize=8)
def _face_cmap(face: str) -> frozenset[int]:
    from fontTools.ttLib import TTFont

    return frozenset(TTFont(_font_dir() / face, lazy=True).getBestCmap())


@lru_cache(maxsize=4096)
def glyph_png(char: str, size: int = 64) -> bytes:
    """The character drawn dark on white, centred, with the first matplotlib face covering it."""
    from PIL import Image, ImageDraw, ImageFont

    face = next((f for f in _GLYPH_FACES if ord(char) in _face_cmap(f)), _GLYPH_FACES[0])
    font = ImageFont.truetype(str(_font_dir() / face), int(size * 0.62))
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = draw.textbbox((0, 0), char, font=font)
    x = (size - (right - left)) / 2 - left
    y = (size - (bottom - top)) / 2 - top
    draw.text((x, y), char, fill=(17, 24, 39), font=font)
    return _png(img)


def _image_folder_root(manifest: dict) -> Path | None:
    dataset = manifest_dataset(manifest)
    for key in ("root", "path", "folder"):
        value = dataset.get(key)
        if isinstance(value, str) and Path(value).is_dir():
            return Path(value)
    return None


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")


@lru_cache(maxsize=4096)
def _folder_png(root: Path, class_name: str, size: int) -> bytes | None:
    from PIL import Image

    if class_name in ("", ".", "..") or "/" in class_name or "\\" in class_name:
        return None  # a class is one folder directly under the root, never a path elsewhere
    folder = root / class_name
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    for path in files[:3]:
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                img.thumbnail((size, size))
                return _png(img)
        except OSError:
            continue
    return None


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
