"""The applications' data and models by name, and the class subsets they train on.

Datasets come from the one dataset registry (``engine.ingest.data.create_dataset``): ``glyphs``
(the embedded glyph world: its train and test splits, and ``glyphs-ood``, the characters
never used in training), or an ImageFolder root holding ``train/`` and ``test/`` (or
``val/``) class folders; an OOD set may also be a folder of class folders (ImageNet-O's
layout). Models come from the one model registry (``engine.ingest.models``): architectures to train
from scratch (``glyph-cnn``, the demo models' architectures, timm names) and trained models
(the demo models, or an architecture with a checkpoint).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.errors import InvalidInputError, NotFoundError
from engine.ingest.data import ImageDataset, create_dataset, sample_fingerprint
from engine.jobs.context import RunContext
from engine.jobs.kinds import spec_hash, spec_to_dict
from engine.storage.atomic import sha256_bytes
from engine.storage.store import Cache

GLYPHS, GLYPHS_OOD = "glyphs", "glyphs-ood"


# ----------------------------------------------------------------------------- by name


def load_splits(name: str, cache: Cache) -> tuple[ImageDataset, ImageDataset]:
    """(train, test) of the dataset ``glyphs`` or of an ImageFolder root with train/ and test/."""
    test_split = "test"
    if name != GLYPHS:
        root = Path(name).expanduser()
        if not root.is_dir():
            raise NotFoundError(
                f"unknown dataset {name!r}: use {GLYPHS!r} (the embedded glyph world) or the path of an "
                "ImageFolder root with train/ and test/ (or val/) folders")
        test_split = next((d for d in ("test", "val") if (root / d).is_dir()), "")
        if not (root / "train").is_dir() or not test_split:
            raise InvalidInputError(f"dataset folder {root} must hold train/ and test/ (or val/) ImageFolder trees")
    train, test = (create_dataset(name, split, cache=cache) for split in ("train", test_split))
    if train.class_names != test.class_names:
        raise InvalidInputError(f"{name}: train/ and {test_split}/ have different class folders")
    return train, test


def load_ood(name: str, cache: Cache) -> ImageDataset | None:
    """The OOD set: ``glyphs-ood``, an ImageFolder of unseen classes (ImageNet-O), or '' (none)."""
    if not name:
        return None
    if name == GLYPHS_OOD:
        return create_dataset(GLYPHS, "ood", cache=cache)
    if Path(name).expanduser().is_dir():
        return create_dataset(name, "", cache=cache)
    raise NotFoundError(
        f"unknown OOD set {name!r}: use {GLYPHS_OOD!r}, an ImageFolder path (ImageNet-O), or '' for none")


def load_trained_model(name: str, checkpoint: str, num_classes: int) -> nn.Module:
    """A trained model: a demo model, or an architecture (``glyph-cnn``, timm) with ``checkpoint``
    (e.g. a §3.2 baseline's ``last.pt``); checks its class count against the data's."""
    from engine.ingest.models import create_classifier

    model = create_classifier(name, checkpoint=checkpoint or None, num_classes=num_classes).model
    if model.num_classes != num_classes:
        raise InvalidInputError(
            f"model {name!r} has {model.num_classes} classes but the dataset (num_classes) has {num_classes}")
    return model


# ----------------------------------------------------------------------------- class subsets


def select_indices(labels: np.ndarray, classes: np.ndarray, per_class: int = 0) -> np.ndarray:
    """Indices of the samples whose label is in ``classes`` (the first ``per_class`` of each
    class when ``per_class`` > 0), in dataset order."""
    keep = np.isin(labels, classes)
    if per_class > 0:
        order = np.argsort(labels, kind="stable")
        starts = np.searchsorted(labels[order], labels[order])
        rank = np.empty(len(labels), dtype=np.int64)
        rank[order] = np.arange(len(labels)) - starts
        keep &= rank < per_class
    return np.flatnonzero(keep)


def label_map_for(classes: np.ndarray, num_classes: int) -> np.ndarray:
    """Map from dataset labels to positions in ``classes`` (−1 for the others)."""
    out = np.full(num_classes, -1, dtype=np.int64)
    out[np.asarray(classes)] = np.arange(len(classes))
    return out


# ----------------------------------------------------------------------------- results


def save_test_stores(ctx: RunContext, kind: str, spec: Any, test: ImageDataset, test_idx: np.ndarray,
                     class_names: list[str], logits_by_name: dict[str, np.ndarray],
                     meta: dict[str, Any] | None = None) -> dict[str, str]:
    """Each model's test logits as a store ``<kind>-<spec hash>-<model>``; returns model → store.

    The stores carry the fingerprint that ``engine.ingest.extract`` gives the same test samples, so
    they pair with each other and with stores extracted from those images.
    """
    cache = ctx.cache
    prefix = f"{kind}-{spec_hash(kind, spec)[:10]}"
    fingerprint = sample_fingerprint([test.sample_ids[i] for i in test_idx])
    source = {"job_kind": kind, "config": spec_to_dict(spec), "run_dir": str(ctx.run_dir), **(meta or {})}
    return {name: cache.save_store(f"{prefix}-{name}", logits, test.labels[test_idx], class_names,
                                   overwrite=True, sample_fingerprint=fingerprint,
                                   meta={"source": {**source, "model": name}}).name
            for name, logits in logits_by_name.items()}


# ----------------------------------------------------------------------------- run folders


def checkpoint_dir(run_dir: Path, *identities: str) -> Path:
    """Where a run keeps its checkpoints: under ``run_dir``, keyed by what it was trained from
    (the data's fingerprints, the starting weights...), so a run over changed data or weights
    starts afresh instead of resuming checkpoints that belong to something else."""
    return Path(run_dir) / ("data-" + sha256_bytes("|".join(identities).encode())[:12])


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of a model's weights and buffers (names, shapes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
