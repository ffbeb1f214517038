"""Paper §3.2: learn new categories as linear combinations of old ones.

A backbone is trained on the base classes and frozen; the new classes' logits are
``W · f_base(x)`` with W (new × base, no bias), learned with cross-entropy over all the
logits ``[f_base(x); W f_base(x)]`` on the new classes' training images. The frozen
backbone's logits are computed once, so learning W costs seconds. A baseline of the same
architecture and recipe is trained on all the classes. Reported (Tables 2 and 4):

* accuracy over all classes (argmax over every logit, every test image);
* within base: base test images, argmax over the base logits only;
* within new: new test images, argmax over the new logits only;
* with one new class, a binary test over positive/negative pairs (see :func:`binary_test`).

Both models' test logits become ordinary stores (``<prefix>-ours``, ``<prefix>-baseline``,
same samples, so they pair), beside ``report.json`` in the run's folder.
"""

from __future__ import annotations

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
from torch.utils.data import Dataset, Subset

from engine.atomic import atomic_path, write_json_atomic
from engine.errors import InvalidInputError
from engine.jobs.context import RunContext
from engine.jobs.specs import NewClassesSpec, spec_hash, spec_to_dict
from engine.store import Cache
from engine.train.appdata import (
    Relabeled,
    Splits,
    checkpoint_dir,
    label_map_for,
    select_indices,
    test_fingerprint,
)
from engine.train.loop import (
    LoopConfig,
    barrier,
    fit,
    is_main_process,
    predict_logits,
    process_cpu_seconds,
    resolve_device,
)

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
        "acc_within_new": pct(pred_new[is_new] == labels[is_new]),
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


def _binary_pairs(spec: NewClassesSpec, splits: Splits, new_class: int, labels: np.ndarray,
                  device) -> tuple[Dataset, np.ndarray, str]:
    """Positives and negatives of the binary test: (positives dataset, negative test indices, source).

    Positives are fresh images of the new class where the dataset can render them (the
    paper draws them from ImageNet's unused training images), else the new class's test
    images (then fewer pairs than asked, and the report says so). Negatives are test images
    of the other classes, drawn with the seed.
    """
    rng = np.random.default_rng(spec.seed)
    negatives = np.flatnonzero(labels != new_class)
    if splits.fresh_images is not None:
        positives = splits.fresh_images(new_class, spec.binary_pairs, spec.seed + 7_777)
        source = "fresh images of the new class"
    else:
        idx = np.flatnonzero(labels == new_class)
        positives = Relabeled(splits.test, idx, np.arange(splits.num_classes))
        source = "test images of the new class"
    n = min(len(positives), len(negatives), spec.binary_pairs)
    if n < len(positives):
        positives = Subset(positives, range(n))
    return positives, np.sort(rng.choice(negatives, n, replace=False)), source


def _train_model(name: str, n_out: int, data, spec: NewClassesSpec, ctx: RunContext,
                 make_model: ModelFactory, device, span, ckpt: Path) -> nn.Module:
    torch.manual_seed(spec.seed)
    model = make_model(n_out)
    fit(model, data, _loop_config(spec), ckpt / name, device=device,
        progress=ctx.progress, span=span, phase=name)
    return model.eval()


def _ours_logits(backbone: nn.Module, w: torch.Tensor, data: Dataset, base, new, k, device) -> np.ndarray:
    """``[f_base; W f_base]`` placed in the dataset's class order (K columns)."""
    f, _ = predict_logits(backbone, data, device)
    out = np.zeros((len(f), k), dtype=np.float32)
    out[:, base] = f
    out[:, new] = (torch.as_tensor(f) @ w.T).numpy()
    return out


def _evaluate(spec, splits, scorers, base, new, k, device) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    """Metrics per model, test logits per model, test indices and labels."""
    test_idx = select_indices(splits.test_labels, np.arange(k))
    test = Relabeled(splits.test, test_idx, np.arange(splits.num_classes))
    labels = splits.test_labels[test_idx]
    logits = {name: score(test) for name, score in scorers.items()}
    rows = {name: class_metrics(x, labels, base, new) for name, x in logits.items()}
    if len(new) == 1 and spec.binary_pairs:
        positives, neg_idx, source = _binary_pairs(spec, splits, int(new[0]), labels, device)
        for name, score in scorers.items():
            rows[name]["binary"] = {**binary_test(score(positives), logits[name][neg_idx], int(new[0])),
                                    "pairs_requested": spec.binary_pairs, "positives": source}
    return rows, logits, test_idx, labels


def train_new_classes(spec: NewClassesSpec, ctx: RunContext, splits: Splits,
                      make_model: ModelFactory) -> Path | None:
    """Run the whole §3.2 experiment; returns the report's path (None on ranks > 0)."""
    t0 = time.perf_counter()
    device = resolve_device(spec.device)
    base, new = choose_classes(spec, splits.num_classes)
    k = spec.num_classes or splits.num_classes
    log.info("%d base and %d new classes: new = %s", len(base), len(new),
             [splits.class_names[c] for c in new[:10]])
    timings: dict[str, float] = {}
    ckpt = checkpoint_dir(ctx.run_dir, splits.identity)

    t = time.perf_counter()
    base_train = Relabeled(splits.train, select_indices(splits.train_labels, base, spec.train_per_class),
                           label_map_for(base, splits.num_classes))
    backbone = _train_model("backbone", len(base), base_train, spec, ctx, make_model, device,
                            (0.0, 0.45 if spec.baseline else 0.9), ckpt)
    timings["backbone_s"] = time.perf_counter() - t
    for p in backbone.parameters():
        p.requires_grad_(False)
    baseline = None
    if spec.baseline:
        t = time.perf_counter()
        every = np.arange(k)
        all_train = Relabeled(splits.train, select_indices(splits.train_labels, every, spec.train_per_class),
                              label_map_for(every, splits.num_classes))
        baseline = _train_model("baseline", k, all_train, spec, ctx, make_model, device, (0.45, 0.9),
                                ckpt)
        timings["baseline_s"] = time.perf_counter() - t
    if not is_main_process():
        barrier()
        return None

    t = time.perf_counter()
    w = _learn_or_load_w(spec, ctx, splits, backbone, base, new, device, ckpt / "w.safetensors")
    timings["w_s"] = time.perf_counter() - t

    ctx.progress(0.95, "evaluating")
    scorers = {"ours": lambda data: _ours_logits(backbone, w, data, base, new, k, device)}
    if baseline is not None:
        scorers["baseline"] = lambda data: predict_logits(baseline, data, device)[0]
    rows, logits, test_idx, labels = _evaluate(spec, splits, scorers, base, new, k, device)
    timings["total_s"] = time.perf_counter() - t0
    timings["cpu_s"] = process_cpu_seconds()
    report = {
        "kind": "newclasses", "config": spec_to_dict(spec), "run_dir": str(ctx.run_dir),
        "checkpoints": str(ckpt), "data": splits.identity,
        "n_base": int(len(base)), "n_new": int(len(new)),
        "new_classes": [splits.class_names[c] for c in new],
        "metrics": rows, "improvement": _improvement(rows),
        "stores": _save_stores(spec, ctx, splits, test_idx, labels, logits, base, new),
        "timings": timings, "device": str(device),
    }
    path = ctx.run_dir / "report.json"
    write_json_atomic(path, report)
    barrier()
    return path


def _learn_or_load_w(spec, ctx, splits, backbone, base, new, device, path: Path) -> torch.Tensor:
    """W from ``path`` if already learned, else learned now and saved there (atomically)."""
    if path.exists():
        return load_file(str(path))["w"]
    idx = select_indices(splits.train_labels, new, spec.train_per_class)
    targets = len(base) + label_map_for(new, splits.num_classes)[splits.train_labels[idx]]
    if spec.base_negatives:
        neg = select_indices(splits.train_labels, base, spec.base_negatives)
        idx = np.concatenate([idx, neg])
        targets = np.concatenate([targets, label_map_for(base, splits.num_classes)[splits.train_labels[neg]]])
    ctx.progress(0.9, f"base logits of {len(idx)} training images for W")
    feats, _ = predict_logits(backbone, Relabeled(splits.train, idx, np.arange(splits.num_classes)), device)
    w = learn_w(torch.as_tensor(feats), torch.as_tensor(targets), len(base), len(new), spec,
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


def _save_stores(spec, ctx, splits, test_idx, labels, logits_by_name, base, new) -> dict[str, str]:
    cache = Cache(ctx.cache_root)
    prefix = f"newclasses-{spec_hash('newclasses', spec)[:10]}"
    fingerprint = test_fingerprint(splits, test_idx)
    k = logits_by_name["ours"].shape[1]
    names = {}
    for name, logits in logits_by_name.items():
        store = cache.save_store(
            f"{prefix}-{name}", logits, labels, splits.class_names[:k], overwrite=True,
            sample_fingerprint=fingerprint,
            meta={"source": {"job_kind": "newclasses", "model": name, "config": spec_to_dict(spec),
                             "base_classes": base.tolist(), "new_classes": new.tolist(),
                             "run_dir": str(ctx.run_dir)}},
        )
        names[name] = store.name
    return names


def run_job(spec: NewClassesSpec, ctx: RunContext) -> Path | None:
    """The job entry: resolve the dataset and architecture by name, then run."""
    from engine.train import registry_adapter as reg

    splits = reg.load_splits(spec.dataset, ctx.cache_root)
    if spec.dataset != reg.GLYPHS:
        reg.set_transform([splits.train, splits.test], reg.model_transform(reg.create_model(spec.arch, 2)))
    return train_new_classes(spec, ctx, splits, lambda n: reg.create_model(spec.arch, n))
