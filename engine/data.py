"""One dataset registry: ImageFolder trees and the embedded glyph world.

``create_dataset(name_or_path, split)`` returns an :class:`ImageDataset`:

* a folder path -> :class:`ImageFolderDataset` (``root/<class>/<image>``; ``root/<split>/<class>/…``
  is used when that sub-folder exists, as in ImageNet's ``train`` / ``val`` layout). Folders named
  by ImageNet synsets (``n01440764``) get readable class names from timm's ImageNet info;
* ``"glyphs"`` -> :class:`GlyphDataset`, the glyph world's ``train`` / ``val`` / ``test`` / ``ood``
  split, rendered once and cached under ``<cache>/datasets/``.

Every dataset knows its class names, a stable id per sample (relative path, or split/index)
and a fingerprint of its content; items are ``(image, label, index)``. An unreadable or
truncated image yields ``None`` as its image: the loader's collate function drops it and the
extraction counts it — one bad file never stops a run.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from engine.atomic import canonical_json, sha256_bytes
from engine.errors import InvalidInputError, NotFoundError
from engine.glyphs import SPLITS as GLYPH_SPLITS
from engine.glyphs import GlyphConfig, GlyphSplits

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
_SYNSET_RE = re.compile(r"^n\d{8}$")
DATASET_NAMES = ("glyphs",)


class ImageDataset(Dataset):
    """What extraction needs from a dataset, whatever it is made of."""

    name: str  # registry name or folder path
    split: str
    class_names: list[str]
    labels: np.ndarray  # (N,) int64
    sample_ids: list[str]  # stable id per sample, in order
    yields_tensors: bool  # True: uint8 (C, H, W) tensors, normalised per batch; False: PIL + transform

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def fingerprint(self) -> str:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"dataset": self.name, "split": self.split, "n": len(self), "k": self.num_classes,
                "fingerprint": self.fingerprint()}

    def __len__(self) -> int:
        return len(self.labels)


# ----------------------------------------------------------------------------- ImageFolder


def imagenet_readable_names(folder_names: Sequence[str]) -> list[str] | None:
    """'n01440764' -> 'tench' (first lemma of timm's ImageNet description); None if not synsets."""
    if not folder_names or not all(_SYNSET_RE.match(n) for n in folder_names):
        return None
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    known = set(info.label_names())
    if not all(n in known for n in folder_names):
        return None
    return [info.label_name_to_description(n).split(",")[0].strip() for n in folder_names]


class ImageFolderDataset(ImageDataset):
    """``root/<class>/<image>`` with classes in sorted folder order (torchvision's convention)."""

    yields_tensors = False

    def __init__(self, root: Path | str, split: str = "", transform: Callable | None = None):
        root = Path(root)
        if split and (root / split).is_dir():
            root = root / split
        if not root.is_dir():
            raise NotFoundError(f"dataset folder {str(root)!r} does not exist or is not a folder")
        classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not classes:
            raise InvalidInputError(
                f"dataset folder {str(root)!r} has no class sub-folders; expected the ImageFolder "
                "layout root/<class name>/<image files>"
            )
        paths, labels = [], []
        for label, cls in enumerate(classes):
            for path in sorted((root / cls).rglob("*")):
                if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                    paths.append(path.relative_to(root).as_posix())
                    labels.append(label)
        if not paths:
            raise InvalidInputError(
                f"dataset folder {str(root)!r} has {len(classes)} class folders but no images "
                f"(extensions {', '.join(IMAGE_EXTENSIONS)})"
            )
        self.root, self.name, self.split = root, str(root), split
        self.folder_names = classes
        self.class_names = imagenet_readable_names(classes) or classes
        self.sample_ids = paths
        self.labels = np.asarray(labels, np.int64)
        self.transform = transform
        self._fingerprint: str | None = None

    def describe(self) -> dict[str, Any]:
        # root + folder names let the dashboard show a sample image of each class
        return {**super().describe(), "root": str(self.root), "folder_names": list(self.folder_names)}

    def fingerprint(self) -> str:
        """Hash of (relative path, byte size) of every image and of the class folders.

        Sizes rather than contents: hashing ImageNet's 6 GB would cost minutes; an edited
        file of the same size is not detected (documented limitation).
        """
        if self._fingerprint is None:
            sizes = [(self.root / p).stat().st_size for p in self.sample_ids]
            body = {"classes": self.folder_names, "files": list(zip(self.sample_ids, sizes))}
            self._fingerprint = "folder:" + sha256_bytes(canonical_json(body).encode())
        return self._fingerprint

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        from PIL import Image

        path = self.root / self.sample_ids[index]
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
            image = self.transform(img) if self.transform else img
        except Exception as exc:  # unreadable, truncated, not an image: skipped and counted
            log.debug("skipping unreadable image %s: %s", path, exc)
            image = None
        return image, int(self.labels[index]), index


# ----------------------------------------------------------------------------- glyphs


class GlyphDataset(ImageDataset):
    """One split of the glyph world as uint8 tensors (1, S, S)."""

    yields_tensors = True

    def __init__(self, split: str = "test", cache_root: Path | str = "cache", config: GlyphConfig | None = None):
        if split not in GLYPH_SPLITS:
            raise InvalidInputError(f"unknown glyph split {split!r}; valid splits: {', '.join(GLYPH_SPLITS)}")
        self.splits = GlyphSplits(cache_root, config or GlyphConfig())
        images, labels, digest = self.splits.load(split)
        self.images = torch.from_numpy(images)[:, None]
        self.labels = labels.astype(np.int64)
        self.class_names = self.splits.class_names(split)
        self.name, self.split = "glyphs", split
        key = self.splits.config.split_key(split)
        self.sample_ids = [f"glyphs-{key}/{split}/{i:06d}" for i in range(len(labels))]
        self._digest = digest

    def fingerprint(self) -> str:
        return "glyphs:" + self._digest

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "glyph_config": self.splits.config.world_dict()}

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        return self.images[index], int(self.labels[index]), index

    def get_batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Fast path: a batch by fancy indexing, no DataLoader."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.images[idx], torch.from_numpy(self.labels[indices])


def load_glyph_arrays(split: str, cache_root: Path | str = "cache", train_per_class: int = 48,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images (N, S, S) uint8, labels (N,), class names) of a glyph split, for training."""
    splits = GlyphSplits(cache_root, GlyphConfig(seed=seed, train_per_class=train_per_class))
    images, labels, _ = splits.load(split)
    return images, labels, splits.class_names(split)


# ----------------------------------------------------------------------------- registry


def create_dataset(name_or_path: str, split: str = "test", *, cache_root: Path | str = "cache") -> ImageDataset:
    """A registry name (``glyphs``) or an ImageFolder path; raises listing the valid names."""
    if name_or_path == "glyphs":
        return GlyphDataset(split, cache_root)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return ImageFolderDataset(path, split)
    raise NotFoundError(
        f"unknown dataset {name_or_path!r}: not a registry name ({', '.join(DATASET_NAMES)}) and "
        "not an existing folder. Give a folder in the ImageFolder layout (root/<class>/<image>), "
        "or one of the registry names"
    )


def collate_skipping(batch: list[tuple[Any, int, int]]) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, list[int]]:
    """Stack the readable items; return (images, labels, indices, skipped indices)."""
    ok = [b for b in batch if b[0] is not None]
    skipped = [b[2] for b in batch if b[0] is None]
    if not ok:
        return None, torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), skipped
    images = torch.stack([b[0] for b in ok])
    labels = torch.tensor([b[1] for b in ok], dtype=torch.long)
    indices = torch.tensor([b[2] for b in ok], dtype=torch.long)
    return images, labels, indices, skipped
