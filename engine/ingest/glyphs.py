"""The embedded default world: 1,000+ glyph categories rendered from matplotlib's own fonts.

Nothing here downloads anything: the characters are drawn with the 16 TrueType faces that
matplotlib ships (DejaVu Sans / Serif / Sans Mono and STIX General, four styles each).

How the world is made (all deterministic for a :class:`GlyphConfig`):

1. **Characters.** Every letter, digit, punctuation mark or symbol covered by at least
   ``min_faces`` of the 16 faces. Each is drawn once per covering face at 64×64 with the
   face's own metrics (baseline fixed, ink centred horizontally), so size and position stay
   meaningful (``o`` vs ``O``, ``,`` vs ``'``).
2. **Distinct shapes.** Two characters are "the same shape" when the cosine similarity of
   their 32×32 renderings, averaged over the faces covering both, is ≥ ``dedupe_cosine``
   (0.975: identical outlines score ≈ 1 in every face, while an accent keeps É at 0.970
   from E). Going through the characters by code point, one that matches an already kept
   character is dropped, so Greek Alpha and Cyrillic A fold into Latin A, which comes first.
   Specks (less than 2 pixels of ink at 32×32) are dropped too.
3. **Classes.** Basic Latin and Latin-1 characters are always classes (the dependencies a
   person checks at a glance live there: é ↔ e, O ↔ 0); the rest are drawn at random (seeded)
   from the remaining distinct characters. ``n_ood`` further distinct characters, never used
   for training, form the out-of-distribution split.
4. **Images.** Per image: a random covering face, stroke weight (erode / keep / dilate),
   scale, rotation, shear and translation (one affine warp), blur, foreground/background
   levels and Gaussian noise, all vectorised in torch from cached 64×64 glyph bitmaps,
   then stored as uint8 (``image_size``², one channel, ink bright on dark).

Splits ``train`` / ``val`` / ``test`` hold the classes; ``ood`` holds the held-out characters.
Rendered splits are cached on disk under ``<cache>/datasets/`` keyed by the config's hash.
"""

from __future__ import annotations

import json
import logging
import math
import unicodedata
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file, save_file

from engine.errors import InvalidInputError
from engine.storage.atomic import canonical_json, commit, sha256_bytes, sha256_file, temp_file
from engine.storage.store import Cache

log = logging.getLogger(__name__)

FACE_FILES: tuple[str, ...] = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
)
SPLITS = ("train", "val", "test", "ood")
_BASE = 64  # glyph bitmaps are cached at this size, warped, then reduced to image_size
_FONT_PX = 40  # em size at _BASE; DejaVu capitals are then ~29 px tall
_BASELINE = 0.70  # baseline position, as a fraction of the canvas height
_ALWAYS_CLASSES = (0x21, 0x100)  # Basic Latin + Latin-1 (code point range, end excluded)
_FORMAT = 1  # bump when rendering changes, so cached splits are rebuilt


@dataclass(frozen=True)
class GlyphConfig:
    """Everything that determines the glyph world; its hash names the cached files."""

    seed: int = 0  # one seed for class selection and every image
    n_classes: int = 1000  # categories of train/val/test
    n_ood: int = 200  # held-out characters of the `ood` split (never in training)
    image_size: int = 32  # side of the square, single-channel images
    min_faces: int = 12  # a character must be covered by at least this many of the 16 faces
    dedupe_cosine: float = 0.975  # mean per-face cosine at/above which two are one shape
    train_per_class: int = 48  # images per class of each split
    val_per_class: int = 4
    test_per_class: int = 50  # 50,000 test images: ImageNet validation's size, 50 positives per class
    ood_per_class: int = 8

    def per_class(self, split: str) -> int:
        return int(getattr(self, f"{split}_per_class"))

    def world_dict(self) -> dict:
        """What decides the classes (not the per-split sizes)."""
        d = {k: v for k, v in asdict(self).items() if not k.endswith("_per_class")}
        return {**d, "format": _FORMAT}

    def world_key(self) -> str:
        return sha256_bytes(canonical_json(self.world_dict()).encode())[:16]

    def split_key(self, split: str) -> str:
        body = {**self.world_dict(), "split": split, "n": self.per_class(split)}
        return sha256_bytes(canonical_json(body).encode())[:16]


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def char_name(cp: int) -> str:
    """Readable class name: the character and its Unicode name, e.g. 'é LATIN SMALL ...'."""
    return f"{chr(cp)} {unicodedata.name(chr(cp), f'U+{cp:04X}')}"


def _coverage() -> dict[int, list[int]]:
    """Code point -> indices of the faces whose character map covers it."""
    from fontTools.ttLib import TTFont

    cover: dict[int, list[int]] = {}
    for f, fname in enumerate(FACE_FILES):
        for cp in TTFont(font_dir() / fname, lazy=True).getBestCmap():
            cover.setdefault(cp, []).append(f)
    return cover


def _is_visible(cp: int) -> bool:
    ch = chr(cp)
    return unicodedata.category(ch)[0] in "LNPS" and not ch.isspace()


def _render_face(face: int, cps: list[int]) -> np.ndarray:
    """Render code points with one face at _BASE×_BASE: (len(cps), _BASE, _BASE) uint8."""
    from PIL import Image, ImageDraw, ImageFont

    out = np.zeros((len(cps), _BASE, _BASE), np.uint8)
    path = str(font_dir() / FACE_FILES[face])
    font = ImageFont.truetype(path, _FONT_PX)
    base_y = _BASELINE * _BASE
    for i, cp in enumerate(cps):
        ch = chr(cp)
        x0, y0, x1, y1 = font.getbbox(ch, anchor="ls")
        w, h = x1 - x0, y1 - y0
        fit = 0.94 * _BASE
        use, ox, oy = font, _BASE / 2 - (x0 + x1) / 2, base_y
        if w > fit or y0 + base_y < 0 or y1 + base_y > _BASE:
            # too wide or falls off the canvas: shrink to fit and centre both ways
            scale = min(1.0, fit / max(w, 1), fit / max(h, 1))
            use = ImageFont.truetype(path, max(4, int(_FONT_PX * scale)))
            x0, y0, x1, y1 = use.getbbox(ch, anchor="ls")
            ox, oy = _BASE / 2 - (x0 + x1) / 2, _BASE / 2 - (y0 + y1) / 2
        img = Image.new("L", (_BASE, _BASE), 0)
        ImageDraw.Draw(img).text((ox, oy), ch, font=use, fill=255, anchor="ls")
        out[i] = np.asarray(img)
    return out


def _downsample(bitmaps: np.ndarray, size: int) -> np.ndarray:
    """Box-filter (n, B, B) uint8 bitmaps to (n, size, size) float32 in [0, 1]."""
    f = bitmaps.shape[-1] // size
    x = bitmaps.reshape(-1, size, f, size, f).astype(np.float32)
    return x.mean((2, 4)) / 255


@dataclass(frozen=True)
class GlyphWorld:
    """The chosen characters and their cached 64×64 bitmaps (one per covering face)."""

    config: GlyphConfig
    class_cps: tuple[int, ...]  # code points of the classes, in label order
    ood_cps: tuple[int, ...]  # held-out code points of the ood split
    n_candidates: int  # characters covered by >= min_faces faces
    n_distinct: int  # of which distinct after deduplication
    bitmaps: np.ndarray = field(repr=False)  # (M, 64, 64) uint8, all (char, face) pairs
    owner: np.ndarray = field(repr=False)  # (M,) index into class_cps + ood_cps
    merged_into: dict[int, int] = field(default_factory=dict, repr=False)  # dropped -> kept

    @cached_property
    def class_names(self) -> list[str]:
        return [char_name(cp) for cp in self.class_cps]

    @cached_property
    def ood_names(self) -> list[str]:
        return [char_name(cp) for cp in self.ood_cps]


def _render_candidates(cands: list[int], cover: dict[int, list[int]]) -> dict[tuple[int, int], np.ndarray]:
    """64×64 bitmaps of every (face, code point) pair of the candidates."""
    out: dict[tuple[int, int], np.ndarray] = {}
    for f in range(len(FACE_FILES)):
        cps = [cp for cp in cands if f in cover[cp]]
        for cp, bm in zip(cps, _render_face(f, cps)):
            out[(f, cp)] = bm
    return out


def _distinct(cands: list[int], cover: dict[int, list[int]], bitmaps: dict, threshold: float):
    """Greedy deduplication by code point order; returns (kept code points, dropped -> kept).

    Similarity of two characters = mean over the faces covering both of the cosine of
    their 32×32 renderings in that face (identical outlines give ≈ 1 in every face, while
    an accent keeps E/É near 0.97). Pairs are pre-filtered by the cosine of their
    face-averaged prototypes, which is cheap to compute for all pairs at once.
    """
    n, nf = len(cands), len(FACE_FILES)
    per_face = np.zeros((nf, n, 32 * 32), np.float32)
    covered = np.zeros((nf, n), bool)
    for i, cp in enumerate(cands):
        faces = cover[cp]
        small = _downsample(np.stack([bitmaps[(f, cp)] for f in faces]), 32).reshape(len(faces), -1)
        per_face[faces, i] = small / np.maximum(np.linalg.norm(small, axis=1, keepdims=True), 1e-12)
        covered[faces, i] = True
    ink = np.array([np.mean([bitmaps[(f, cp)].sum() / 255 / 4 for f in cover[cp]]) for cp in cands])
    proto = per_face.sum(0)
    proto /= np.maximum(np.linalg.norm(proto, axis=1, keepdims=True), 1e-12)
    close = np.argwhere(np.tril(proto @ proto.T, -1) >= threshold - 0.08)  # (i, j), j < i
    sim = np.zeros(len(close), np.float32)
    for s in range(0, len(close), 512):
        i, j = close[s : s + 512, 0], close[s : s + 512, 1]
        dots = np.einsum("fpd,fpd->fp", per_face[:, i], per_face[:, j])
        shared = covered[:, i] & covered[:, j]
        sim[s : s + 512] = (dots * shared).sum(0) / np.maximum(shared.sum(0), 1)
    similar: dict[int, list[int]] = {}
    for (i, j), v in zip(close.tolist(), sim.tolist()):
        if v >= threshold:
            similar.setdefault(i, []).append(j)
    kept_set: set[int] = set()
    kept, merged = [], {}
    for i, cp in enumerate(cands):
        if ink[i] < 2.0:  # blank or a speck at 32×32: nothing to recognise
            continue
        twin = next((j for j in similar.get(i, []) if j in kept_set), None)
        if twin is not None:
            merged[cp] = cands[twin]
            continue
        kept_set.add(i)
        kept.append(cp)
    return kept, merged


def build_world(config: GlyphConfig) -> GlyphWorld:
    """Choose the characters and keep their 64×64 bitmaps with every covering face."""
    cover = _coverage()
    cands = sorted(cp for cp, faces in cover.items() if len(faces) >= config.min_faces and _is_visible(cp))
    bitmaps = _render_candidates(cands, cover)
    distinct, merged = _distinct(cands, cover, bitmaps, config.dedupe_cosine)
    need = config.n_classes + config.n_ood
    if len(distinct) < need:
        raise InvalidInputError(
            f"the fonts give {len(distinct)} distinct characters but n_classes + n_ood = {need}; "
            "lower n_classes / n_ood or min_faces, or raise dedupe_cosine"
        )
    lo, hi = _ALWAYS_CLASSES
    fixed = [cp for cp in distinct if lo <= cp < hi][: config.n_classes]
    rest = [cp for cp in distinct if cp not in set(fixed)]
    order = np.random.default_rng(config.seed).permutation(len(rest))
    rest = [rest[i] for i in order]
    n_more = config.n_classes - len(fixed)
    classes = sorted(fixed + rest[:n_more])
    ood = sorted(rest[n_more : n_more + config.n_ood])
    pairs = [(i, f) for i, cp in enumerate(classes + ood) for f in cover[cp]]
    return GlyphWorld(
        config=config,
        class_cps=tuple(classes),
        ood_cps=tuple(ood),
        n_candidates=len(cands),
        n_distinct=len(distinct),
        bitmaps=np.stack([bitmaps[(f, (classes + ood)[i])] for i, f in pairs]),
        owner=np.array([i for i, _ in pairs], np.int64),
        merged_into=merged,
    )


# ----------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class Augment:
    """Ranges of the per-image variations (fractions are of the image side)."""

    scale: tuple[float, float] = (0.85, 1.15)
    rotate_deg: float = 12.0
    shear: float = 0.25
    translate: float = 0.08
    weight_probs: tuple[float, float, float] = (0.2, 0.6, 0.2)  # thinner, keep, bolder
    blur_sigma: tuple[float, float] = (0.0, 0.8)  # in output pixels
    foreground: tuple[float, float] = (0.7, 1.0)
    background: tuple[float, float] = (0.0, 0.2)
    noise: tuple[float, float] = (0.0, 0.06)


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64).float()


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image: x (B, 1, H, W)."""
    radius = 2
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(t[None] ** 2) / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)  # (B, 5); sigma≈0 gives a delta
    b, _, h, w = x.shape
    y = x.reshape(1, b, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), k[:, None, None, :], groups=b)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), k[:, None, :, None], groups=b)
    return y.reshape(b, 1, h, w)


def render_images(
    world: GlyphWorld, owners: np.ndarray, seed: int, aug: Augment = Augment(), batch: int = 2048
) -> np.ndarray:
    """Render one image per entry of ``owners`` (indices into classes + ood): (N, S, S) uint8.

    Every random draw comes from one generator seeded with ``seed`` and is made for all N
    images at once, so the result does not depend on ``batch``.
    """
    n, size = len(owners), world.config.image_size
    gen = torch.Generator().manual_seed(int(seed))
    # which bitmap (face) per image: uniform over the character's covering faces
    starts = np.searchsorted(world.owner, owners, side="left")
    ends = np.searchsorted(world.owner, owners, side="right")
    pick = torch.rand(n, generator=gen, dtype=torch.float64).numpy()
    bitmap_idx = starts + np.minimum((pick * (ends - starts)).astype(np.int64), ends - starts - 1)
    weight = torch.multinomial(torch.tensor(aug.weight_probs), n, replacement=True, generator=gen)
    scale = _uniform(gen, n, *aug.scale)
    angle = _uniform(gen, n, -aug.rotate_deg, aug.rotate_deg) * math.pi / 180
    shear = _uniform(gen, n, -aug.shear, aug.shear)
    shift = _uniform(gen, 2 * n, -aug.translate, aug.translate).reshape(n, 2) * 2
    sigma = _uniform(gen, n, *aug.blur_sigma)
    fg, bg = _uniform(gen, n, *aug.foreground), _uniform(gen, n, *aug.background)
    noise_std = _uniform(gen, n, *aug.noise)
    noise = torch.randn(n, size, size, generator=gen)

    out = np.empty((n, size, size), np.uint8)
    for s in range(0, n, batch):
        sl = slice(s, s + batch)
        x = torch.from_numpy(world.bitmaps[bitmap_idx[sl]]).float()[:, None] / 255
        dil = F.max_pool2d(x, 3, 1, 1)
        ero = (x - F.max_pool2d(-x, 3, 1, 1)) / 2  # half an erosion: thin strokes survive
        w = weight[sl].view(-1, 1, 1, 1)
        x = torch.where(w == 0, ero, torch.where(w == 2, dil, x))
        # inverse map output -> input coordinates: rotation · shear, divided by scale
        cos, sin, sh = torch.cos(angle[sl]), torch.sin(angle[sl]), shear[sl]
        a = torch.stack([cos, -sin + cos * sh, sin, cos + sin * sh], 1).view(-1, 2, 2)
        a = a / scale[sl].view(-1, 1, 1)
        theta = torch.cat([a, shift[sl].view(-1, 2, 1)], 2)
        grid = F.affine_grid(theta, [x.shape[0], 1, 2 * size, 2 * size], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        x = F.avg_pool2d(x, 2)  # supersampled by 2: less aliasing
        x = _blur(x, sigma[sl])
        x = bg[sl].view(-1, 1, 1, 1) + (fg[sl] - bg[sl]).view(-1, 1, 1, 1) * x
        x = x + noise_std[sl].view(-1, 1, 1, 1) * noise[sl][:, None]
        out[sl] = (x.clamp(0, 1) * 255).round().to(torch.uint8)[:, 0].numpy()
    return out


# ----------------------------------------------------------------------------- cached splits


def _split_seed(config: GlyphConfig, split: str) -> int:
    return int(sha256_bytes(f"{config.seed}:{split}".encode())[:12], 16)


class GlyphSplits:
    """Rendered splits on disk: ``<root>/glyphs-<world key>/<split>-<split key>.safetensors``."""

    def __init__(self, cache: Cache | Path | str, config: GlyphConfig = GlyphConfig()):
        for split in SPLITS:
            if config.per_class(split) < 1:
                raise InvalidInputError(
                    f"GlyphConfig.{split}_per_class must be >= 1; got {config.per_class(split)}"
                )
        if config.image_size < 8:
            raise InvalidInputError(f"image_size must be >= 8; got {config.image_size}")
        self.config = config
        self.dir = Cache.of(cache).dataset_dir(f"glyphs-{config.world_key()}")
        self._world: GlyphWorld | None = None

    @property
    def world(self) -> GlyphWorld:
        """The world, read from ``world.safetensors`` or built once and written there."""
        if self._world is None:
            self._world = self._load_world() or self._build_and_save_world()
        return self._world

    def _load_world(self) -> GlyphWorld | None:
        path, meta_path = self.dir / "world.safetensors", self._meta_path()
        if not (path.exists() and meta_path.exists()):
            return None
        meta, arrays = json.loads(meta_path.read_text()), load_file(str(path))
        return GlyphWorld(
            config=self.config,
            class_cps=tuple(meta["class_codepoints"]),
            ood_cps=tuple(meta["ood_codepoints"]),
            n_candidates=meta["n_candidates"],
            n_distinct=meta["n_distinct"],
            bitmaps=arrays["bitmaps"],
            owner=arrays["owner"],
        )

    def _build_and_save_world(self) -> GlyphWorld:
        w = build_world(self.config)
        meta = {
            "config": self.config.world_dict(),
            "class_codepoints": list(w.class_cps),
            "ood_codepoints": list(w.ood_cps),
            "n_candidates": w.n_candidates,
            "n_distinct": w.n_distinct,
            "merged_into": {f"{chr(a)} U+{a:04X}": f"{chr(b)} U+{b:04X}" for a, b in w.merged_into.items()},
            "faces": list(FACE_FILES),
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        with temp_file(self.dir, ".safetensors") as tmp:
            save_file({"bitmaps": w.bitmaps, "owner": w.owner}, str(tmp))
            commit(tmp, self.dir / "world.safetensors")
        with temp_file(self.dir, ".json") as tmp:  # written last: it marks the world complete
            tmp.write_text(json.dumps(meta, indent=1, ensure_ascii=False))
            commit(tmp, self._meta_path())
        log.info("glyph world: %d candidates, %d distinct, %d classes, %d held out",
                 w.n_candidates, w.n_distinct, len(w.class_cps), len(w.ood_cps))
        return w

    def _meta_path(self) -> Path:
        return self.dir / "world.json"

    def meta(self) -> dict:
        """Classes, held-out characters and counts."""
        if not self._meta_path().exists():
            _ = self.world
        return json.loads(self._meta_path().read_text())

    def class_names(self, split: str = "test") -> list[str]:
        meta = self.meta()
        cps = meta["ood_codepoints"] if split == "ood" else meta["class_codepoints"]
        return [char_name(cp) for cp in cps]

    def load(self, split: str) -> tuple[np.ndarray, np.ndarray, str]:
        """(images (N, S, S) uint8, labels (N,) int64, sha256 of the file) of one split."""
        if split not in SPLITS:
            raise InvalidInputError(f"unknown glyph split {split!r}; valid splits: {', '.join(SPLITS)}")
        path = self.dir / f"{split}-{self.config.split_key(split)}.safetensors"
        if path.exists():
            arrays = load_file(str(path))
            return arrays["images"], arrays["labels"], sha256_file(path)
        images, labels = self._render(split)
        with temp_file(self.dir, ".safetensors") as tmp:
            save_file({"images": images, "labels": labels}, str(tmp))
            commit(tmp, path)
        return images, labels, sha256_file(path)

    def _render(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        w, per = self.world, self.config.per_class(split)
        n_cls = len(w.ood_cps) if split == "ood" else len(w.class_cps)
        offset = len(w.class_cps) if split == "ood" else 0
        labels = np.repeat(np.arange(n_cls, dtype=np.int64), per)
        images = render_images(w, labels + offset, _split_seed(self.config, split))
        log.info("rendered glyph split %s: %d images of %d classes", split, len(labels), n_cls)
        return images, labels


def face_indices(world: GlyphWorld) -> np.ndarray:
    """(M,) the face of each of ``world.bitmaps`` (they are stored by character, then face)."""
    cover = _coverage()
    faces = np.array([f for cp in world.class_cps + world.ood_cps for f in cover[cp]], np.int64)
    if len(faces) != len(world.owner):
        raise InvalidInputError(
            f"the glyph world holds {len(world.owner)} renderings but the installed fonts cover "
            f"{len(faces)}: rebuild the world (delete its folder under the cache's datasets)"
        )
    return faces
