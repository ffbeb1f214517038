"""The emergence job: train on nested subsets of categories, snapshot, extract, measure.

For every number of categories k of :class:`~engine.train.specs.EmergenceSpec` (ascending):

1. the first k categories of a fixed seeded order (the same training images per category
   whatever k) are trained from scratch with the project's one loop
   (:func:`engine.train.loop.fit`), which keeps ``last.pt`` after every epoch; a step hook saves
   the weights at the requested fractions of the first epoch and at the end of each epoch
   (``snapshots/e<epoch>.safetensors``);
2. each snapshot's logits on the k categories' test images become a store
   (``emergence-<recipe>-k<k>-e<epoch>``, with its Gram) and its figures
   (:func:`engine.core.emergence.checkpoint_figures`) a row ``rows/e<epoch>.json``.

A subset's folder is keyed by the recipe (:func:`recipe_key`: the spec without the list of
category counts), so sweeps that share a number of categories share its training.

Everything is written atomically and looked up before it is computed: a job killed at any
moment and run again redoes only the unfinished epoch of the unfinished subset (training is
deterministic given the seed, so the snapshots, stores and rows are those of an unbroken run)
and skips every measured checkpoint. With ``checkpoint_dir`` the user's own checkpoints are
measured instead (nothing trained). The report (``report.json``): ``runs``, one row per
(categories, checkpoint), ascending.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from engine.core.emergence import checkpoint_figures
from engine.errors import InvalidInputError
from engine.ingest.data import ImageDataset, prepare_transform, sample_fingerprint
from engine.jobs.context import RunContext
from engine.jobs.kinds import spec_hash, spec_to_dict
from engine.stages.pairing import Pairing
from engine.storage.atomic import (
    canonical_json,
    commit,
    sha256_bytes,
    sha256_file,
    temp_file,
    write_json_atomic,
)
from engine.train.appdata import checkpoint_dir, label_map_for, load_splits, select_indices
from engine.train.emergence_inputs import category_order, list_checkpoints, measure_split
from engine.train.loop import (
    LoopConfig,
    Samples,
    fit,
    predict_logits,
    process_cpu_seconds,
    use_threads,
)
from engine.train.specs import EmergenceSpec

log = logging.getLogger(__name__)

_TEST_COST = 0.35  # measuring a test image costs about this many training images (forward only)


# ----------------------------------------------------------------------------- progress


class _Eta:
    """Progress over units of work (training images, test images at :data:`_TEST_COST`), with
    the time left estimated from the units this process worked through (skipped ones — done
    by an earlier run — count as done, not as speed)."""

    def __init__(self, progress: Callable[[float, str], None], total: float):
        self.progress, self.total = progress, max(total, 1e-9)
        self.done = self.skipped = 0.0
        self.t0 = time.monotonic()

    def skip_to(self, units: float) -> None:
        self.skipped += max(0.0, units - self.done)
        self.done = max(self.done, units)

    def report(self, units: float, message: str) -> None:
        self.done = max(self.done, units)
        worked = self.done - self.skipped
        eta = ""
        if worked > 0:
            left = (time.monotonic() - self.t0) / worked * (self.total - self.done)
            eta = f", about {_duration(left)} left"
        self.progress(min(self.done / self.total, 0.999), message + eta)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


# ----------------------------------------------------------------------------- one subset


@dataclass(frozen=True)
class _Subset:
    """The data of one number of categories."""

    k: int
    classes: np.ndarray  # dataset labels, in the subset's order
    train_idx: np.ndarray
    test_idx: np.ndarray
    targets: np.ndarray  # dataset label -> 0..k-1 (-1 outside)


def _epoch_tag(epoch: float) -> str:
    return f"{epoch:g}"


def _snapshot_steps(spec: EmergenceSpec, steps: int) -> dict[int, list[float]]:
    """Optimiser step (1-based, over the run) → the checkpoints taken after it (a fraction of a
    short epoch may round to the same step as another, or as the epoch's end)."""
    out: dict[int, list[float]] = {}
    for e in spec.epoch_points():
        step = e * steps if e >= 1 else max(1, min(steps, round(e * steps)))
        out.setdefault(int(step), []).append(e)
    return out


def _build_model(spec: EmergenceSpec, k: int) -> torch.nn.Module:
    import timm

    from engine.ingest.glyph_models import RANKED_ARCHS
    from engine.ingest.models import resolve_arch

    arch = resolve_arch(spec.model)
    kwargs = {"rank": spec.rank} if arch in RANKED_ARCHS else {}
    torch.manual_seed(spec.seed)
    np.random.seed(spec.seed)
    return timm.create_model(arch, pretrained=False, num_classes=k, **kwargs)


def _loop_config(spec: EmergenceSpec) -> LoopConfig:
    return LoopConfig(epochs=spec.epochs, lr=spec.lr, weight_decay=spec.weight_decay, batch_size=spec.batch_size,
                      optimizer="adamw", schedule="onecycle", label_smoothing=spec.label_smoothing,
                      seed=spec.seed, precision="auto")


def _save_weights(model: torch.nn.Module, path: Path) -> None:
    state = {k: v.detach().to(memory_format=torch.contiguous_format).contiguous().clone()
             for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with temp_file(path.parent, ".safetensors") as tmp:
        save_file(state, str(tmp))
        commit(tmp, path)


def _train_subset(spec: EmergenceSpec, train: ImageDataset, sub: _Subset, folder: Path, eta: _Eta,
                  units_before: float) -> None:
    """Train subset ``sub`` (resuming its checkpoint) and keep its snapshots."""
    model = _build_model(spec, sub.k)
    _, _, transform = prepare_transform(model, train)
    samples = Samples(train, sub.train_idx, sub.targets)
    cfg = _loop_config(spec)
    steps = max(1, len(samples) // cfg.batch_size)
    at = _snapshot_steps(spec, steps)
    snaps = folder / "snapshots"

    def on_step(done: int, per_epoch: int, net: torch.nn.Module) -> None:
        for epoch in at.get(done, ()):
            if not (snaps / f"e{_epoch_tag(epoch)}.safetensors").exists():
                _save_weights(net, snaps / f"e{_epoch_tag(epoch)}.safetensors")
        eta.report(units_before + done * cfg.batch_size,
                   f"{sub.k} categories: training, step {done} of {per_epoch * cfg.epochs}")

    fit(model, samples, cfg, folder, device=torch.device("cpu"), transform=transform,
        phase=f"emergence k={sub.k}", on_step=on_step)


def _measure(spec: EmergenceSpec, ctx: RunContext, test: ImageDataset, sub: _Subset, epoch: float,
             weights: Path, class_names: list[str], prefix: str) -> dict[str, Any]:
    """One checkpoint's test logits → a store (with its Gram) and its figures."""
    from engine.stages.gramsets import load_gramset

    model = _build_model(spec, sub.k)
    model.load_state_dict(load_file(str(weights)))
    _, _, transform = prepare_transform(model, test)
    logits, labels, kept = predict_logits(model, test, sub.test_idx, torch.device("cpu"), transform)
    labels = sub.targets[labels]
    name = f"{prefix}-k{sub.k}-e{_epoch_tag(epoch)}"
    store = _save_store(ctx, name, logits, labels, class_names, test, kept,
                        {"categories": sub.k, "epoch": epoch, "weights_sha256": sha256_file(weights)}, spec)
    gs = load_gramset(ctx.cache, Pairing.of(store))
    figures = checkpoint_figures(logits, labels, np.asarray(gs.design))
    return {"categories": sub.k, "epoch": epoch, **figures, "n_test": int(len(labels)), "store": store.name}


def _save_store(ctx: RunContext, name: str, logits: np.ndarray, labels: np.ndarray, class_names: list[str],
                test: ImageDataset, kept: np.ndarray, meta: dict[str, Any], spec: EmergenceSpec):
    source = {"job_kind": "emergence", "config": spec_to_dict(spec), "run_dir": str(ctx.run_dir), **meta}
    fingerprint = sample_fingerprint([test.sample_ids[i] for i in kept])
    return ctx.cache.save_store(name, logits, labels, class_names, overwrite=True,
                                sample_fingerprint=fingerprint, meta={"source": source})


def _subsets(spec: EmergenceSpec, train: ImageDataset, test: ImageDataset) -> list[_Subset]:
    order = category_order(train.num_classes, spec.order_seed)
    out = []
    for k in spec.category_counts():
        if k > train.num_classes:
            raise InvalidInputError(f"categories = {k} but {spec.dataset!r} has only {train.num_classes}; "
                                    "ask for fewer categories")
        classes = order[:k]
        out.append(_Subset(k, classes, select_indices(train.labels, classes, spec.train_per_class),
                           select_indices(test.labels, classes), label_map_for(classes, train.num_classes)))
    return out


def _training_data(spec: EmergenceSpec, ctx: RunContext) -> tuple[ImageDataset, ImageDataset]:
    if spec.dataset == "glyphs":
        from engine.ingest.data import GlyphDataset
        from engine.ingest.glyphs import GlyphConfig

        world = GlyphConfig(train_per_class=max(spec.train_per_class, 1))
        return GlyphDataset("train", ctx.cache, world), GlyphDataset("test", ctx.cache, world)
    return load_splits(spec.dataset, ctx.cache)


def recipe_key(spec: EmergenceSpec) -> str:
    """What one subset's training and checkpoints depend on: the spec without the list of
    category counts (and without threads), so sweeps that share a number of categories share
    its run — ``--categories 20 50`` then ``--categories 20 50 100`` trains only 100."""
    body = {k: v for k, v in spec_to_dict(spec).items() if k not in ("categories", "threads")}
    return sha256_bytes(canonical_json({"kind": "emergence-recipe", "spec": body}).encode())[:16]


def _read_row(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def train_and_measure(spec: EmergenceSpec, ctx: RunContext) -> list[dict[str, Any]]:
    """Every (categories, checkpoint) row of a training sweep, resuming what is done."""
    use_threads(spec.threads)
    ctx.progress(0.0, "emergence: preparing the data")
    train, test = _training_data(spec, ctx)
    subsets = _subsets(spec, train, test)
    points = spec.epoch_points()
    key = recipe_key(spec)
    prefix = f"emergence-{key[:10]}"
    identity = checkpoint_dir(ctx.cache.run_dir("emergence-recipe", key), train.fingerprint(), test.fingerprint())
    work = [(sub, spec.epochs * len(sub.train_idx), len(points) * _TEST_COST * len(sub.test_idx)) for sub in subsets]
    eta = _Eta(ctx.progress, sum(a + b for _, a, b in work))
    rows: list[dict[str, Any]] = []
    start = 0.0
    for sub, train_units, test_units in work:
        folder = identity / f"k{sub.k}"
        row_paths = {e: folder / "rows" / f"e{_epoch_tag(e)}.json" for e in points}
        done = {e: r for e, p in row_paths.items() if (r := _read_row(p)) is not None}
        snaps = {e: folder / "snapshots" / f"e{_epoch_tag(e)}.safetensors" for e in points}
        if all(e in done or snaps[e].exists() for e in points):
            eta.skip_to(start + train_units)
        else:
            eta.skip_to(start)
            _train_subset(spec, train, sub, folder, eta, start)
        names = [test.class_names[c] for c in sub.classes]
        per_point = test_units / len(points)
        for i, e in enumerate(points):
            at = start + train_units + i * per_point
            if e in done:
                eta.skip_to(at + per_point)
                rows.append(done[e])
                continue
            if not snaps[e].exists():
                raise InvalidInputError(f"checkpoint {snaps[e]} is missing although training finished; delete "
                                        f"{folder} and run the job again")
            eta.report(at, f"{sub.k} categories: measuring the checkpoint at epoch {_epoch_tag(e)}")
            row = _measure(spec, ctx, test, sub, e, snaps[e], names, prefix)
            write_json_atomic(row_paths[e], row)
            rows.append(row)
            eta.report(at + per_point, f"{sub.k} categories: epoch {_epoch_tag(e)} measured")
        start += train_units + test_units
    return rows


# ----------------------------------------------------------------------------- a user's checkpoints


def measure_checkpoints(spec: EmergenceSpec, ctx: RunContext) -> list[dict[str, Any]]:
    """Every checkpoint of ``spec.checkpoint_dir`` measured on the data (nothing trained)."""
    from engine.ingest.models import create_classifier
    from engine.stages.gramsets import load_gramset

    use_threads(spec.threads)
    test = measure_split(spec.dataset, ctx.cache)
    found = list_checkpoints(spec.checkpoint_dir)
    if not found:
        raise InvalidInputError(f"checkpoint folder {spec.checkpoint_dir!r} holds no checkpoint")
    prefix = f"emergence-{spec_hash('emergence', spec)[:10]}"
    eta = _Eta(ctx.progress, len(found))
    rows = []
    for i, (epoch, path) in enumerate(found):
        digest = sha256_file(path)
        row_path = ctx.run_dir / "rows" / f"{digest[:16]}.json"
        row = _read_row(row_path)
        if row is None:
            eta.report(i, f"checkpoint {path.name} (epoch {_epoch_tag(epoch)}): logits")
            loaded = create_classifier(spec.model, checkpoint=path, num_classes=test.num_classes)
            _, _, transform = prepare_transform(loaded.model, test)
            logits, labels, kept = predict_logits(loaded.model, test, None, torch.device("cpu"), transform)
            store = _save_store(ctx, f"{prefix}-e{_epoch_tag(epoch)}", logits, labels, test.class_names, test,
                                kept, {"categories": test.num_classes, "epoch": epoch, "checkpoint": str(path),
                                       "weights_sha256": digest}, spec)
            gs = load_gramset(ctx.cache, Pairing.of(store))
            row = {"categories": test.num_classes, "epoch": epoch,
                   **checkpoint_figures(logits, labels, np.asarray(gs.design)),
                   "n_test": int(len(labels)), "store": store.name, "checkpoint": path.name}
            write_json_atomic(row_path, row)
        else:
            eta.skip_to(i + 1)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- the job


def run_job(spec: EmergenceSpec, ctx: RunContext) -> Path:
    t0, cpu0 = time.perf_counter(), process_cpu_seconds()
    rows = measure_checkpoints(spec, ctx) if spec.checkpoint_dir else train_and_measure(spec, ctx)
    rows = sorted(rows, key=lambda r: (r["categories"], r["epoch"]))
    report = {"kind": "emergence", "config": spec_to_dict(spec), "runs": rows,
              "stores": [r["store"] for r in rows], "run_dir": str(ctx.run_dir),
              "timings": {"wall_s": time.perf_counter() - t0, "cpu_s": process_cpu_seconds() - cpu0}}
    path = ctx.run_dir / "report.json"
    write_json_atomic(path, report)
    ctx.progress(1.0, f"emergence: {len(rows)} checkpoints measured")
    return path
