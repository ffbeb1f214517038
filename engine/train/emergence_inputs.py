"""The emergence job's inputs, checked when it is submitted: the numbers of categories against
the data, a user's checkpoint folder against the architecture (``engine.jobs.kinds`` calls
:func:`check_emergence_inputs`; this module imports nothing of the job system)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from engine.errors import InvalidInputError
from engine.ingest.data import ImageDataset, create_dataset

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


# ----------------------------------------------------------------------------- inputs


def category_order(num_classes: int, seed: int) -> np.ndarray:
    """The order in which categories join the nested subsets (subset k: the first k)."""
    return np.random.default_rng(seed).permutation(num_classes)


def world_size_of(dataset: str, cache) -> int:
    """How many categories the training data has (the glyph world's from its config, no rendering)."""
    if dataset == "glyphs":
        from engine.ingest.glyphs import GlyphConfig

        return GlyphConfig().n_classes
    root = Path(dataset).expanduser() / "train"
    return len([d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]) if root.is_dir() else 0


def epoch_of(path: Path) -> float | None:
    """The epoch a checkpoint's file name gives: its last number (``epoch_3.pth`` → 3)."""
    numbers = re.findall(r"\d+(?:\.\d+)?", path.stem)
    return float(numbers[-1]) if numbers else None


def list_checkpoints(folder: str | Path) -> list[tuple[float, Path]]:
    """(epoch, path) of the checkpoint files in ``folder``, by epoch (files without a number
    in their name follow, by name, numbered on from the last epoch)."""
    files = sorted(p for p in Path(folder).expanduser().iterdir()
                   if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES)
    numbered = sorted(((e, p) for p in files if (e := epoch_of(p)) is not None), key=lambda x: (x[0], x[1].name))
    last = numbered[-1][0] if numbered else 0.0
    rest = [(last + i + 1, p) for i, p in enumerate(p for p in files if epoch_of(p) is None)]
    return numbered + rest


def check_emergence_inputs(spec, cache, fail: Callable[..., None]) -> None:
    """At submission: the numbers of categories fit the data; the checkpoints exist, are
    distinct epochs and load into the architecture (``fail(kind, field, value, expected)``)."""
    k = "emergence"
    if spec.checkpoint_dir:
        folder = Path(spec.checkpoint_dir).expanduser()
        if not folder.is_dir():
            fail(k, "checkpoint_dir", spec.checkpoint_dir, "expected an existing folder of checkpoints")
        found = list_checkpoints(folder)
        if not found:
            fail(k, "checkpoint_dir", spec.checkpoint_dir,
                 f"the folder holds no checkpoint ({', '.join(CHECKPOINT_SUFFIXES)} files)")
        epochs = [e for e, _ in found]
        if len(set(epochs)) != len(epochs):
            fail(k, "checkpoint_dir", spec.checkpoint_dir,
                 "two checkpoints give the same epoch (the last number of their file names); rename them")
        test = measure_split(spec.dataset, cache)
        from engine.ingest.models import create_classifier

        for _, path in found:
            try:
                model = create_classifier(spec.model, checkpoint=path, num_classes=test.num_classes).model
            except InvalidInputError as exc:
                fail(k, "checkpoint_dir", str(path), str(exc))
            if model.num_classes != test.num_classes:
                fail(k, "checkpoint_dir", str(path),
                     f"it has {model.num_classes} classes but {spec.dataset!r} has {test.num_classes}")
        return
    world = world_size_of(spec.dataset, cache)
    for value in spec.categories:
        if int(value) > world:
            fail(k, "categories", value, f"expected at most {world:,}: the categories {spec.dataset!r} has")


def measure_split(dataset: str, cache) -> ImageDataset:
    """The images a user's checkpoints are measured on: the glyph world's test split, or the
    ImageFolder's ``test/`` (or ``val/``) folder, or the folder itself."""
    if dataset == "glyphs":
        return create_dataset("glyphs", "test", cache=cache)
    root = Path(dataset).expanduser()
    split = next((d for d in ("test", "val") if (root / d).is_dir()), "")
    return create_dataset(str(root), split, cache=cache)
