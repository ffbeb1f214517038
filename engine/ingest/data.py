"""One dataset registry: ImageFolder trees and the embedded glyph world.

``create_dataset(name_or_path, split)`` returns an :class:`ImageDataset`:

* a folder path -> :class:`ImageFolderDataset` (``root/<class>/<image>``; ``root/<split>/<class>/…``
  is used when that sub-folder exists, as in ImageNet's ``train`` / ``val`` layout). Folders named
  by ImageNet synsets (``n01440764``) get readable class names from timm's ImageNet info;
* ``"glyphs"`` -> :class:`GlyphDataset`, the glyph world's ``train`` / ``val`` / ``test`` / ``ood``
  split, rendered once and cached under ``<cache>/datasets/``;
* images already in memory (uint8 arrays) -> :class:`ArrayDataset`.

:func:`iterate_batches` feeds a model any of them, preprocessed by the model's own data
config (:func:`prepare_transform`): extraction and training both read data this way.

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
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from engine.errors import InvalidInputError, NotFoundError
from engine.ingest.glyphs import SPLITS as GLYPH_SPLITS
from engine.ingest.glyphs import GlyphConfig, GlyphSplits
from engine.storage.atomic import canonical_json, sha256_bytes
from engine.storage.layout import DEFAULT_CACHE
from engine.storage.store import Cache

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


# timm's ImageNet label sets, smallest first: folders named by synsets take the first that holds them
IMAGENET_SUBSETS = ("imagenet-1k", "imagenet-12k", "imagenet-22k", "imagenet-21k-goog", "imagenet-22k-ms")


def imagenet_subset(synsets: Sequence[str]) -> str | None:
    """The smallest of timm's ImageNet label sets (1k, 12k, 21k/22k) holding every synset, or None."""
    if not synsets or not all(_SYNSET_RE.match(n) for n in synsets):
        return None
    from timm.data import ImageNetInfo

    wanted = set(synsets)
    for subset in IMAGENET_SUBSETS:
        if wanted <= set(ImageNetInfo(subset).label_names()):
            return subset
    return None


def imagenet_names(synsets: Sequence[str]) -> list[str]:
    """Readable names from timm's ImageNet metadata: a synset's first lemma ('n01440764' ->
    'tench'); a lemma shared by several of ``synsets`` keeps its synset ('crane (n02012849)',
    'crane (n03126707)': ImageNet-1k has 2 such pairs, ImageNet-22k 1,444 groups)."""
    from collections import Counter

    from timm.data import ImageNetInfo

    info = ImageNetInfo()  # the lemma table covers every subset's synsets
    firsts = [info.label_name_to_description(n).split(",")[0].strip() for n in synsets]
    shared = {name for name, count in Counter(firsts).items() if count > 1}
    return [f"{name} ({syn})" if name in shared else name for name, syn in zip(firsts, synsets)]


def imagenet_readable_names(folder_names: Sequence[str]) -> list[str] | None:
    """Readable names of folders named by ImageNet synsets (1k, 12k or 21k/22k); None if they are not."""
    if imagenet_subset(folder_names) is None:
        return None
    return imagenet_names(folder_names)


def imagenet_class_names(num_classes: int) -> list[str] | None:
    """Names of an ImageNet head's outputs, in timm's order, from its size (1,000: ImageNet-1k;
    11,821: timm's 12k; 21,841 / 21,843: 22k / 21k), or None for other sizes."""
    from timm.data import ImageNetInfo
    from timm.data.imagenet_info import infer_imagenet_subset

    subset = infer_imagenet_subset({"num_classes": num_classes})
    if subset is None or subset == "imagenet-21k-miil":  # miil's list is not in the lemma table's order
        return None
    return imagenet_names(ImageNetInfo(subset).label_names())


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


# ----------------------------------------------------------------------------- arrays, glyphs


class ArrayDataset(ImageDataset):
    """Images held in memory: uint8 (N, C, H, W) with labels (N,) (numpy arrays, renderers, tests)."""

    yields_tensors = True

    def __init__(self, images: np.ndarray | torch.Tensor, labels: np.ndarray, class_names: list[str],
                 name: str = "arrays", split: str = "", sample_ids: list[str] | None = None):
        images = torch.as_tensor(images)
        labels = np.asarray(labels, dtype=np.int64)
        if images.ndim != 4 or images.dtype != torch.uint8:
            raise InvalidInputError(
                f"images must be a uint8 array (N, C, H, W); got {images.dtype} of shape {tuple(images.shape)}")
        if labels.shape != (len(images),):
            raise InvalidInputError(f"{len(images)} images but labels of shape {labels.shape}: one label per image")
        if len(labels) and not 0 <= labels.min() <= labels.max() < len(class_names):
            raise InvalidInputError(
                f"labels must lie in [0, {len(class_names) - 1}] (one class name each); "
                f"got [{labels.min()}, {labels.max()}]")
        self.images, self.labels, self.class_names = images, labels, list(class_names)
        self.name, self.split = name, split
        self.sample_ids = sample_ids or [f"{name}/{split}/{i:06d}" for i in range(len(labels))]
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            body = self.images.contiguous().numpy().tobytes() + self.labels.tobytes()
            self._fingerprint = "arrays:" + sha256_bytes(body)
        return self._fingerprint

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        return self.images[index], int(self.labels[index]), index

    def get_batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Fast path: a batch by fancy indexing, no DataLoader."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.images[idx], torch.from_numpy(self.labels[indices])


class GlyphDataset(ArrayDataset):
    """One split of the glyph world as uint8 tensors (1, S, S)."""

    def __init__(self, split: str = "test", cache: Cache | Path | str = DEFAULT_CACHE,
                 config: GlyphConfig | None = None):
        if split not in GLYPH_SPLITS:
            raise InvalidInputError(f"unknown glyph split {split!r}; valid splits: {', '.join(GLYPH_SPLITS)}")
        self.splits = GlyphSplits(Cache.of(cache), config or GlyphConfig())
        images, labels, digest = self.splits.load(split)
        key = self.splits.config.split_key(split)
        super().__init__(torch.from_numpy(images)[:, None], labels, self.splits.class_names(split), "glyphs",
                         split, [f"glyphs-{key}/{split}/{i:06d}" for i in range(len(labels))])
        self._digest = digest

    def fingerprint(self) -> str:
        return "glyphs:" + self._digest

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "glyph_config": self.splits.config.world_dict()}

    def render(self, label: int, n: int, seed: int) -> ArrayDataset:
        """``n`` fresh images of class ``label``, drawn with ``seed`` (in no split when the seed
        differs from the splits' own): the glyph world can always make more."""
        from engine.ingest.glyphs import render_images

        owners = np.full(n, label, dtype=np.int64)
        if self.split == "ood":
            raise InvalidInputError("fresh images are rendered for the trained classes, not the OOD split")
        images = render_images(self.splits.world, owners, seed)
        key = self.splits.config.world_key()
        return ArrayDataset(torch.from_numpy(images)[:, None], owners, self.class_names, "glyphs",
                            f"fresh-{seed}", [f"glyphs-{key}/fresh-{seed}/{label}/{i:06d}" for i in range(n)])


# ----------------------------------------------------------------------------- registry


def create_dataset(name_or_path: str, split: str = "test", *, cache: Cache | Path | str | None = None,
                   cache_root: Path | str | None = None) -> ImageDataset:
    """A registry name (``glyphs``) or an ImageFolder path; raises listing the valid names.

    ``cache``: where rendered datasets are kept (``cache_root``: the same, as a folder).
    """
    if name_or_path == "glyphs":
        return GlyphDataset(split, Cache.of(cache or cache_root or DEFAULT_CACHE))
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


def sample_fingerprint(sample_ids: Sequence[str]) -> str:
    """Fingerprint of an ordered list of samples: stores over the same samples pair up."""
    return "samples:" + sha256_bytes("\n".join(sample_ids).encode())


# ----------------------------------------------------------------------------- batches for a model


class TensorTransform:
    """The model's data config applied to a uint8 batch (B, C, H, W) on the device."""

    def __init__(self, data_config: dict[str, Any]):
        self.chans, self.height, self.width = data_config["input_size"]
        self.mean = tuple(float(m) for m in data_config["mean"])
        self.std = tuple(float(s) for s in data_config["std"])
        self.interpolation = "bicubic" if data_config.get("interpolation") == "bicubic" else "bilinear"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255)
        if x.shape[1] != self.chans:
            x = x.mean(1, keepdim=True).expand(-1, self.chans, -1, -1) if self.chans != 1 else x.mean(1, keepdim=True)
        if x.shape[-2:] != (self.height, self.width):
            x = F.interpolate(x, size=(self.height, self.width), mode=self.interpolation, align_corners=False, antialias=True)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def __repr__(self) -> str:
        return (f"TensorTransform(uint8/255, channels->{self.chans}, size->{self.height}x{self.width} "
                f"{self.interpolation}, mean={self.mean}, std={self.std})")


def prepare_transform(model: torch.nn.Module, dataset: ImageDataset) -> tuple[dict, Callable | None, TensorTransform | None]:
    """(data config, per-image transform for file datasets, per-batch transform for tensor datasets)."""
    import timm.data

    data_config = timm.data.resolve_data_config(model=model)
    if dataset.yields_tensors:
        return data_config, None, TensorTransform(data_config)
    transform = timm.data.create_transform(**data_config, is_training=False)
    if data_config["input_size"][0] == 1:  # a one-channel model on RGB files
        import torchvision.transforms as T

        transform = T.Compose([T.Grayscale(1), transform])
    dataset.transform = transform
    return data_config, transform, None


def iterate_batches(dataset: ImageDataset, indices: np.ndarray, batch_size: int, device: torch.device,
                    transform: TensorTransform | None, workers: int = 0):
    """Yield (images on ``device``, labels, indices, skipped indices) over ``indices``, in that order.

    Tensor datasets are batched by fancy indexing and ``transform`` (per batch, on the device);
    file datasets go through a DataLoader with their per-image transform, and unreadable
    images are dropped from their batch and listed in ``skipped`` (images is None when a
    whole batch was unreadable).
    """
    if dataset.yields_tensors:
        for s in range(0, len(indices), batch_size):
            idx = indices[s : s + batch_size]
            images, labels = dataset.get_batch(idx)
            yield transform(images.to(device, non_blocking=True)), labels, torch.from_numpy(idx), []
        return
    loader = DataLoader(
        Subset(dataset, indices.tolist()), batch_size=batch_size, shuffle=False, num_workers=workers,
        collate_fn=collate_skipping, pin_memory=device.type == "cuda",
        persistent_workers=False, prefetch_factor=4 if workers > 0 else None,
    )
    for images, labels, idx, skipped in loader:
        if images is not None:
            images = images.to(device, non_blocking=True)
        yield images, labels, idx, skipped
