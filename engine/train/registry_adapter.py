"""Names → data and models for the applications' jobs (the glyph world, ImageFolders, timm).

The jobs name their dataset, OOD set and model; this module turns those names into
:class:`~engine.train.appdata.Splits`, datasets and ``nn.Module``s:

* ``glyphs``: the embedded glyph world (``engine.glyphs``), train and test splits, images
  scaled to [0, 1] and normalised with mean 0.5, std 0.5; it renders fresh images of any
  class on request (the binary test of §3.2). ``glyphs-ood``: its held-out characters.
* any other name is a folder: an ImageFolder root holding ``train/`` and ``test/`` (or
  ``val/``) class folders for a dataset, or class folders directly for an OOD set
  (ImageNet-O's layout), read with the model's own timm data config.
* models: the model registry's names (``engine.models``: demo models, timm architectures,
  local checkpoints), plus ``glyph-cnn``, the applications' fast default backbone.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from engine.errors import InvalidInputError, NotFoundError
from engine.train.appdata import Splits

log = logging.getLogger(__name__)

GLYPHS, GLYPHS_OOD = "glyphs", "glyphs-ood"
_MEAN, _STD = 0.5, 0.5


class GlyphImages(Dataset):
    """uint8 glyph images (N, S, S) as normalised float tensors (1, S, S) with their labels."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return (self.images[i].float()[None] / 255 - _MEAN) / _STD, int(self.labels[i])


def _glyph_splits(cache_root: Path) -> Splits:
    from engine.glyphs import GlyphSplits, render_images

    glyphs = GlyphSplits(cache_root)
    x_tr, y_tr, sha_tr = glyphs.load("train")
    x_te, y_te, sha_te = glyphs.load("test")
    test_key = glyphs.config.split_key("test")

    def fresh(cls: int, n: int, seed: int) -> Dataset:
        owners = np.full(n, cls, dtype=np.int64)
        return GlyphImages(render_images(glyphs.world, owners, seed), owners)

    return Splits(train=GlyphImages(x_tr, y_tr), test=GlyphImages(x_te, y_te),
                  train_labels=y_tr.astype(np.int64), test_labels=y_te.astype(np.int64),
                  class_names=glyphs.class_names(), identity=f"glyphs:{sha_tr[:16]}:{sha_te[:16]}",
                  fresh_images=fresh, test_sample_ids=[  # as engine.data.GlyphDataset names them
                      f"glyphs-{test_key}/test/{i:06d}" for i in range(len(y_te))])


def _image_folder(root: Path) -> Dataset:
    """An ImageFolder without a transform yet (see :func:`set_transform`)."""
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(root))
    except (FileNotFoundError, RuntimeError) as exc:
        raise InvalidInputError(f"{root}: not a usable ImageFolder ({exc})") from exc


def _folder_splits(root: Path) -> Splits:
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise InvalidInputError(
            f"dataset folder {root} must hold train/ and test/ (or val/) ImageFolder trees")
    train, test = _image_folder(root / "train"), _image_folder(test_dir)
    if train.classes != test.classes:
        raise InvalidInputError(f"{root}: train/ and {test_dir.name}/ have different class folders")
    return Splits(train=train, test=test, train_labels=np.asarray(train.targets, dtype=np.int64),
                  test_labels=np.asarray(test.targets, dtype=np.int64), class_names=list(train.classes),
                  identity=f"folder:{root.resolve()}")


def load_splits(name: str, cache_root: Path) -> Splits:
    """The train/test splits of a dataset name (``glyphs``) or ImageFolder root."""
    if name == GLYPHS:
        return _glyph_splits(Path(cache_root))
    if Path(name).is_dir():
        return _folder_splits(Path(name))
    raise NotFoundError(
        f"unknown dataset {name!r}: use {GLYPHS!r} (the embedded glyph world) or the path of an "
        "ImageFolder root with train/ and test/ (or val/) folders"
    )


def load_ood(name: str, cache_root: Path) -> Dataset | None:
    """The OOD set: ``glyphs-ood``, an ImageFolder of unseen classes (ImageNet-O), or '' (none)."""
    if not name:
        return None
    if name == GLYPHS_OOD:
        from engine.glyphs import GlyphSplits

        images, labels, _ = GlyphSplits(cache_root).load("ood")
        return GlyphImages(images, labels)
    if Path(name).is_dir():
        return _image_folder(Path(name))
    raise NotFoundError(
        f"unknown OOD set {name!r}: use {GLYPHS_OOD!r}, an ImageFolder path (ImageNet-O), or '' for none"
    )


def glyph_cnn(num_classes: int, channels: tuple[int, ...] = (32, 64, 128, 256)) -> nn.Module:
    """``glyph-cnn``: four conv-BN-ReLU-maxpool blocks, global pooling, a linear head.

    The applications' default backbone: the fastest to train on a 2-core CPU among the small
    networks we measured at 32×32 (see docs/jobs-and-training.md), so that §3.2 trains
    both its backbone and its baseline from scratch within minutes.
    """
    layers: list[nn.Module] = []
    c_in = 1
    for c in channels:
        layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                   nn.MaxPool2d(2)]
        c_in = c
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))


def create_model(arch: str, num_classes: int) -> nn.Module:
    """A fresh, randomly initialised model: ``glyph-cnn``, a demo model's architecture, or a timm name."""
    if arch == "glyph-cnn":
        return glyph_cnn(num_classes)
    from engine.models import DEMO_MODELS, create_classifier

    arch = DEMO_MODELS[arch].arch if arch in DEMO_MODELS else arch
    return create_classifier(arch, pretrained=False, num_classes=num_classes).model


def load_trained_model(name: str, checkpoint: str, num_classes: int) -> nn.Module:
    """A trained model from the model registry (a demo model, or ``checkpoint`` for an
    architecture); ``glyph-cnn`` checkpoints (e.g. a §3.2 baseline) too. Checks the class count."""
    from engine.models import create_classifier, read_state_dict

    if name == "glyph-cnn":
        if not checkpoint:
            raise InvalidInputError("model 'glyph-cnn' has no shipped weights: give its checkpoint")
        model = glyph_cnn(num_classes)
        try:
            model.load_state_dict(read_state_dict(checkpoint))
        except RuntimeError as exc:  # wrong keys or shapes (another class count)
            raise InvalidInputError(
                f"checkpoint {checkpoint} does not fit glyph-cnn with {num_classes} classes: "
                f"{str(exc).splitlines()[-1].strip()}") from exc
    else:
        model = create_classifier(name, checkpoint=checkpoint or None, num_classes=num_classes).model
    classes = getattr(model, "num_classes", None) or model[-1].out_features
    if classes != num_classes:
        raise InvalidInputError(
            f"model {name!r} has {classes} classes but the dataset (num_classes) has {num_classes}")
    return model


def model_transform(model: nn.Module):
    """The eval transform of a timm model's own data config (for ImageFolder datasets)."""
    from timm.data import create_transform, resolve_data_config

    return create_transform(**resolve_data_config({}, model=model))


def set_transform(datasets: list[Dataset | None], transform) -> None:
    """Give ImageFolder datasets their model's transform (glyph datasets need none)."""
    for data in datasets:
        if data is not None and hasattr(data, "transform"):
            data.transform = transform
