"""Paper §3.2: learn new categories as linear combinations of old ones.

A backbone is trained on the base classes and frozen; the new classes' logits are
``W · f_base(x)`` with W (new × base, no bias), learned with cross-entropy over all the
logits ``[f_base(x); W f_base(x)]`` on the new classes' training images. The frozen
backbone's logits are computed once, so learning W costs seconds. A baseline of the same
architecture and recipe is trained on all the classes, beside the backbone on a CPU with two
cores (``engine.train.parallel``). Reported (Tables 2 and 4):

* accuracy over all classes (argmax over every logit, every test image);
* within base: base test images, argmax over the base logits only;
* within new: new test images, argmax over the new logits only;
* with one new class, a binary test over positive/negative pairs (see :func:`binary_test`).

Both models' test logits become ordinary stores (``<prefix>-ours``, ``<prefix>-baseline``,
same samples, so they pair), beside ``report.json`` in the run's folder.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from engine.errors import InvalidInputError
from engine.ingest.data import GlyphDataset, ImageDataset, prepare_transform
from engine.jobs.context import RunContext
from engine.jobs.kinds import spec_to_dict
from engine.storage.atomic import atomic_path, write_json_atomic
from engine.train.appdata import (
    checkpoint_dir,
    label_map_for,
    load_splits,
    save_test_stores,
    select_indices,
)
from engine.train.loop import (
    LoopConfig,
    Samples,
    barrier,
    is_main_process,
    predict_logits,
    process_cpu_seconds,
    resolve_device,
    use_threads,
)
from engine.train.parallel import FitTask, fit_tasks
from engine.train.specs import NewClassesSpec

log = logging.getLogger(__name__)

ModelFactory = Callable[[int], nn.Module]  # number of outputs -> a fresh model


def choose_classes(spec: NewClassesSpec, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(base, new) class indices of the dataset, both sorted."""
    k = spec.num_classes or num_classes
    if k > num_classes:
        raise InvalidInputError(
            f"num_classes = {spec.num_classes} but the dataset has only {num_classes} classes"
        )
    if spec.n_new > k - 2:
        raise InvalidInputError(
            f"n_new = {spec.n_new} leaves fewer than 2 base classes out of {k}; lower n_new"
        )
    if spec.new_classes == "last":
        new = np.arange(k - spec.n_new, k)
    else:
        new = np.sort(np.random.default_rng(spec.seed).choice(k, spec.n_new, replace=False))
    base = np.setdiff1d(np.arange(k), new)
    return base, new


def _loop_config(spec: NewClassesSpec) -> LoopConfig:
    return LoopConfig(epochs=spec.epochs, lr=spec.lr, weight_decay=spec.weight_decay,
                      batch_size=spec.batch_size, optimizer="adamw", schedule="onecycle",
                      label_smoothing=0.1, seed=spec.seed, workers=spec.workers)


def learn_w(base_logits: torch.Tensor, targets: torch.Tensor, n_base: int, n_new: int,
            spec: NewClassesSpec, progress: Callable[[float, str], None] | None = None) -> torch.Tensor:
    """W (n_new × n_base) minimising CE over ``[f; W f]`` for the given samples.

    ``targets`` are positions in the concatenated logits (``n_base + j`` for new class j;
    base positions for the base negatives). AdamW on mini-batches of ``w_batch_size`` for
    ``w_epochs`` epochs, from W = 0, seeded.
    """
    gen = torch.Generator().manual_seed(spec.seed)
    w = torch.zeros(n_new, n_base, requires_grad=True)
    opt = torch.optim.AdamW([w], lr=spec.w_lr, weight_decay=spec.w_weight_decay)
    n = len(targets)
    for epoch in range(spec.w_epochs):
        if progress is not None:
            progress(epoch / spec.w_epochs, f"learning W: epoch {epoch + 1}/{spec.w_epochs}")
        for idx in torch.randperm(n, generator=gen).split(spec.w_batch_size):
            f = base_logits[idx]
            logits = torch.cat([f, f @ w.T], dim=1)
            loss = F.cross_entropy(logits, targets[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return w.detach()


def class_metrics(logits: np.ndarray, labels: np.ndarray, base: np.ndarray, new: np.ndarray) -> dict:
    """Accuracy overall, within base and within new (Tables 2 and 4), in %, plus counts."""
    is_new = np.isin(labels, new)
    pred_all = logits.argmax(1)
    pred_base = base[logits[:, base].argmax(1)]
    pred_new = new[logits[:, new].argmax(1)]

    def pct(mask: np.ndarray) -> float | None:
        return float(100 * mask.mean()) if mask.size else None

    return {
        "acc_all": pct(pred_all == labels),
        "acc_within_base": pct(pred_base[~is_new] == labels[~is_new]),
        # with one new class, "within new" is an argmax over one logit: always right, so not reported
        "acc_within_new": pct(pred_new[is_new] == labels[is_new]) if len(new) > 1 else None,
        "acc_all_on_base_images": pct(pred_all[~is_new] == labels[~is_new]),
        "acc_all_on_new_images": pct(pred_all[is_new] == labels[is_new]),
        "n_test": int(len(labels)),
        "n_test_new": int(is_new.sum()),
    }


def binary_test(pos_logits: np.ndarray, neg_logits: np.ndarray, new_class: int) -> dict[str, Any]:
    """The one-new-class setting as a binary test over positive/negative pairs.

    ``pos_logits`` (images of the new class) and ``neg_logits`` (as many images of other
    classes) pair up row by row.
    * ``binary_acc``: an image is called positive iff the new class is its top-1 over all
      logits; accuracy over the 2·pairs images (50 % = chance, 50 % = "always negative");
    * ``pair_acc``: for each pair, whether the positive gets a higher softmax probability
      of the new class than the negative (50 % = chance).
    """
    n = len(pos_logits)
    if n == 0:
        return {"pairs": 0}

    def prob(logits: np.ndarray) -> np.ndarray:
        return torch.softmax(torch.as_tensor(logits, dtype=torch.float64), 1)[:, new_class].numpy()

    correct = np.concatenate([pos_logits.argmax(1) == new_class, neg_logits.argmax(1) != new_class])
    return {"pairs": n, "binary_acc": float(100 * correct.mean()),
            "pair_acc": float(100 * (prob(pos_logits) > prob(neg_logits)).mean())}


def _task(name: str, classes: np.ndarray, spec: NewClassesSpec, train: ImageDataset,
          make_model: ModelFactory, ckpt: Path) -> FitTask:
    """Training from scratch on ``classes`` (targets: their positions), seeded."""
    torch.manual_seed(spec.seed)
    samples = Samples(train, select_indices(train.labels, classes, spec.train_per_class),
                      label_map_for(classes, train.num_classes))
    return FitTask(name, make_model(len(classes)), samples, _loop_config(spec), ckpt / name)


Scorer = Callable[[ImageDataset, np.ndarray], tuple[np.ndarray, np.ndarray]]  # -> (logits, kept indices)


def _binary_pairs(spec: NewClassesSpec, test: ImageDataset, new_class: int, test_idx: np.ndarray,
                  labels: np.ndarray) -> tuple[ImageDataset, np.ndarray, np.ndarray, str]:
    """The binary test's samples: (positives' dataset, their indices, negatives' rows among the
    evaluated test samples, where the positives come from).

    Positives are fresh images of the new class where the dataset can render them (the
    paper draws them from ImageNet's unused training images), else the new class's test
    images (then fewer pairs than asked, and the report says so). Negatives are test images
    of the other classes, drawn with the seed.
    """
    rng = np.random.default_rng(spec.seed)
    negatives = np.flatnonzero(labels != new_class)
    if isinstance(test, GlyphDataset):
        source, positives = "fresh images of the new class", test.render(new_class, spec.binary_pairs, spec.seed + 7_777)
        pos_idx = np.arange(len(positives))
    else:
        source, positives = "test images of the new class", test
        pos_idx = test_idx[labels == new_class]
    n = min(len(pos_idx), len(negatives), spec.binary_pairs)
    return positives, pos_idx[:n], np.sort(rng.choice(negatives, n, replace=False)), source


def _evaluate(spec, test, scorers: dict[str, Scorer], base, new, k) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    """Metrics per model, test logits per model, the test samples' indices and labels."""
    logits, kept = {}, None
    for name, score in scorers.items():
        logits[name], kept = score(test, select_indices(test.labels, np.arange(k)))
    labels = test.labels[kept]
    rows = {name: class_metrics(x, labels, base, new) for name, x in logits.items()}
    if len(new) == 1 and spec.binary_pairs:
        positives, pos_idx, neg_rows, source = _binary_pairs(spec, test, int(new[0]), kept, labels)
        for name, score in scorers.items():
            pos_logits, _ = score(positives, pos_idx)
            rows[name]["binary"] = {**binary_test(pos_logits, logits[name][neg_rows], int(new[0])),
                                    "pairs_requested": spec.binary_pairs, "positives": source}
    return rows, logits, kept, labels


def train_new_classes(spec: NewClassesSpec, ctx: RunContext, train: ImageDataset, test: ImageDataset,
                      make_model: ModelFactory) -> Path | None:
    """Run the whole §3.2 experiment; returns the report's path (None on ranks > 0)."""
    t0 = time.perf_counter()
    device = resolve_device(spec.device)
    base, new = choose_classes(spec, train.num_classes)
    k = spec.num_classes or train.num_classes
    log.info("%d base and %d new classes: new = %s", len(base), len(new), [train.class_names[c] for c in new[:10]])
    timings: dict[str, float] = {}
    ckpt = checkpoint_dir(ctx.run_dir, train.fingerprint(), test.fingerprint())
    probe = make_model(2)  # the architecture's data config decides the preprocessing
    _, _, transform = prepare_transform(probe, train)
    prepare_transform(probe, test)

    t = time.perf_counter()
    tasks = [_task("backbone", base, spec, train, make_model, ckpt)]
    if spec.baseline:
        tasks.append(_task("baseline", np.arange(k), spec, train, make_model, ckpt))
    backbone, *others = fit_tasks(tasks, device=device, transform=transform, threads=spec.threads,
                                  side_by_side=spec.side_by_side, progress=ctx.progress, span=(0.0, 0.9))
    baseline = others[0] if others else None
    timings["train_s"] = time.perf_counter() - t
    for p in backbone.parameters():
        p.requires_grad_(False)
    if not is_main_process():
        barrier()
        return None

    t = time.perf_counter()
    w = _learn_or_load_w(spec, ctx, train, backbone, base, new, device, transform, ckpt / "w.safetensors")
    timings["w_s"] = time.perf_counter() - t

    t = time.perf_counter()
    ctx.progress(0.95, "evaluating")

    def ours(data: ImageDataset, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[f_base; W f_base]`` placed in the dataset's class order (K columns)."""
        f, _, kept = predict_logits(backbone, data, idx, device, transform)
        out = np.zeros((len(f), k), dtype=np.float32)
        out[:, base] = f
        out[:, new] = (torch.as_tensor(f) @ w.T).numpy()
        return out, kept

    def plain(data: ImageDataset, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, _, kept = predict_logits(baseline, data, idx, device, transform)
        return logits, kept

    scorers: dict[str, Scorer] = {"ours": ours}
    if baseline is not None:
        scorers["baseline"] = plain
    rows, logits, test_idx, labels = _evaluate(spec, test, scorers, base, new, k)
    timings["evaluate_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    timings["cpu_s"] = process_cpu_seconds()  # the whole process: imports and data loading too
    report = {
        "kind": "newclasses", "config": spec_to_dict(spec), "run_dir": str(ctx.run_dir),
        "checkpoints": str(ckpt), "data": {"train": train.fingerprint(), "test": test.fingerprint()},
        "n_base": int(len(base)), "n_new": int(len(new)),
        "new_classes": [train.class_names[c] for c in new],
        "metrics": rows, "improvement": _improvement(rows),
        "stores": save_test_stores(ctx, "newclasses", spec, test, test_idx, test.class_names[:k], logits,
                                   {"base_classes": base.tolist(), "new_classes": new.tolist()}),
        "timings": timings, "device": str(device), "threads": torch.get_num_threads(),
    }
    path = ctx.run_dir / "report.json"
    write_json_atomic(path, report)
    barrier()
    return path


def _learn_or_load_w(spec, ctx, train, backbone, base, new, device, transform, path: Path) -> torch.Tensor:
    """W from ``path`` if already learned, else learned now and saved there (atomically)."""
    if path.exists():
        return load_file(str(path))["w"]
    idx = select_indices(train.labels, new, spec.train_per_class)
    if spec.base_negatives:
        idx = np.concatenate([idx, select_indices(train.labels, base, spec.base_negatives)])
    ctx.progress(0.9, f"base logits of {len(idx)} training images for W")
    feats, labels, _ = predict_logits(backbone, train, idx, device, transform)
    # positions in [f_base; W f_base]: base class c -> its rank among base, new class j -> n_base + j
    position = label_map_for(base, train.num_classes)
    position[new] = len(base) + np.arange(len(new))
    w = learn_w(torch.as_tensor(feats), torch.as_tensor(position[labels]), len(base), len(new), spec,
                progress=lambda f, m: ctx.progress(0.91 + 0.03 * f, m))
    with atomic_path(path) as tmp:
        save_file({"w": w.contiguous()}, str(tmp))
    return w


def _improvement(rows: dict) -> dict:
    if "baseline" not in rows:
        return {}
    out = {}
    for key, value in rows["ours"].items():
        other = rows["baseline"].get(key)
        if key.startswith("acc") and value is not None and other is not None:
            out[key] = value - other
    return out


def run_job(spec: NewClassesSpec, ctx: RunContext) -> Path | None:
    """The job entry: the dataset and the architecture by name, then the experiment."""
    from engine.ingest.models import create_architecture

    use_threads(spec.threads)
    train, test = load_splits(spec.dataset, ctx.cache)
    return train_new_classes(spec, ctx, train, test, functools.partial(create_architecture, spec.arch))
