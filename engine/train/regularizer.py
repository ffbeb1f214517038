"""Paper §3.3: cut chosen neural dependencies by fine-tuning with a covariance penalty.

    loss = CE + β · Σ_(i,j) | mean_batch f_i(x) f_j(x) |

for the chosen pairs (target i, source j). By Conjecture 1, a small ``|C_ij| = |E[f_i f_j]|``
means no dependency of i on j, so the penalty drives the CovLasso coefficient θ_j of
target i towards zero. Two fine-tunes start from the same trained model with the same
recipe and seed — with the penalty, and a control with β = 0 — so that what differs is the
penalty's doing; they run side by side on a CPU with two cores (``engine.train.parallel``).
Reported (Table 3): top-1 accuracy, θ_j of target i at ``alpha`` (and
``C_ij``) before and after, and OOD AUPR (anomaly score −max softmax, OOD samples positive).
Test logits of the three models become stores (``<prefix>-before``, ``-after``, ``-control``).
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import average_precision_score
from torch import nn

from engine.atomic import write_json_atomic
from engine.categories import find_category
from engine.covlasso import solve_covlasso
from engine.data import ImageDataset, prepare_transform
from engine.errors import InvalidInputError
from engine.gram import GramAccumulator
from engine.jobs.context import RunContext
from engine.jobs.specs import RegularizerSpec, spec_to_dict
from engine.train.appdata import (
    checkpoint_dir,
    load_ood,
    load_splits,
    load_trained_model,
    model_fingerprint,
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

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- the pieces


class DependencyPenalty:
    """``logits -> β · Σ_(i,j) |mean_batch f_i f_j|`` (the paper's regulariser); picklable."""

    def __init__(self, pairs: list[tuple[int, int]], beta: float):
        self.i = torch.tensor([p[0] for p in pairs])
        self.j = torch.tensor([p[1] for p in pairs])
        self.beta = beta

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return self.beta * (logits[:, self.i] * logits[:, self.j]).mean(0).abs().sum()


def dependency_coefficients(logits: np.ndarray, target: int, alpha: float) -> np.ndarray:
    """CovLasso coefficients θ (K,) predicting logit ``target`` from the others (θ_target = 0)."""
    acc = GramAccumulator(logits.shape[1])
    acc.update(logits)
    gram = acc.gram()
    others = np.delete(np.arange(logits.shape[1]), target)
    res = solve_covlasso(gram[np.ix_(others, others)], gram[others, target][:, None],
                         gram[[target], [target]], alpha, within=False)
    theta = np.zeros(logits.shape[1])
    theta[others] = res.coef[:, 0]
    return theta


def strongest_dependency(logits: np.ndarray, alpha: float) -> tuple[int, int]:
    """(target, source) with the largest |θ_j| over every target's CovLasso at ``alpha``."""
    acc = GramAccumulator(logits.shape[1])
    acc.update(logits)
    gram = acc.gram()
    coef = solve_covlasso(gram, gram, np.diag(gram).copy(), alpha, within=True).coef  # (P, T)
    source, target = np.unravel_index(np.abs(coef).argmax(), coef.shape)
    if coef[source, target] == 0:
        raise InvalidInputError(
            f"no category has a dependency at alpha = {alpha}: lower alpha, or name pairs"
        )
    return int(target), int(source)


def ood_aupr(in_logits: np.ndarray, ood_logits: np.ndarray) -> float:
    """AUPR (%) of detecting OOD samples (positive) with the score −max softmax probability."""
    def score(logits: np.ndarray) -> np.ndarray:
        return -torch.softmax(torch.as_tensor(logits, dtype=torch.float64), 1).max(1).values.numpy()

    y = np.r_[np.zeros(len(in_logits)), np.ones(len(ood_logits))]
    return float(100 * average_precision_score(y, np.r_[score(in_logits), score(ood_logits)]))


def resolve_pairs(pairs: tuple[str, ...], class_names: list[str]) -> list[tuple[int, int]]:
    """"TARGET,SOURCE" strings (index, exact class name, or a name's first word) → indices."""
    def one(token: str) -> int:
        i = find_category(class_names, token)
        if isinstance(i, str):
            raise InvalidInputError(f"pairs: {i}")
        return i

    out = []
    for pair in pairs:
        target, source = (one(t) for t in pair.split(","))
        if target == source:
            raise InvalidInputError(f"pairs: {pair!r} names the same category twice")
        out.append((target, source))
    return out


# ----------------------------------------------------------------------------- the experiment


def _predict(model: nn.Module, test: ImageDataset, test_idx: np.ndarray, ood: ImageDataset | None,
             device, transform) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """(test logits, test labels, OOD logits or None, the test samples read)."""
    logits, labels, kept = predict_logits(model, test, test_idx, device, transform)
    ood_logits = None if ood is None else predict_logits(model, ood, None, device, transform)[0]
    return logits, labels, ood_logits, kept


def _metrics(logits: np.ndarray, labels: np.ndarray, ood_logits: np.ndarray | None,
             pairs: list[tuple[int, int]], alpha: float) -> dict:
    """Table 3's row of one model: top-1, θ_j and C_ij per pair, OOD AUPR."""
    row: dict = {"top1": float(100 * (logits.argmax(1) == labels).mean())}
    if ood_logits is not None:
        row["ood_aupr"] = ood_aupr(logits, ood_logits)
    f = logits.astype(np.float64)
    row["pairs"] = []
    for target, source in pairs:
        theta = dependency_coefficients(logits, target, alpha)
        row["pairs"].append({
            "target": target, "source": source, "coef": float(theta[source]),
            "cov": float((f[:, target] * f[:, source]).mean()),
            "n_sources": int((theta != 0).sum()),
        })
    return row


def _loop_config(spec: RegularizerSpec) -> LoopConfig:
    return LoopConfig(epochs=spec.epochs, lr=spec.lr, weight_decay=spec.weight_decay,
                      batch_size=spec.batch_size, optimizer="sgd", momentum=spec.momentum,
                      schedule="cosine", seed=spec.seed, workers=spec.workers)


def regularize_dependencies(spec: RegularizerSpec, ctx: RunContext, train: ImageDataset, test: ImageDataset,
                            ood: ImageDataset | None, model: nn.Module) -> Path | None:
    """Run the whole §3.3 experiment from the trained ``model``; returns the report's path."""
    t0 = time.perf_counter()
    device = resolve_device(spec.device)
    k = spec.num_classes or train.num_classes
    if k > train.num_classes:
        raise InvalidInputError(f"num_classes = {k} but the dataset has only {train.num_classes} classes")
    classes, class_names = np.arange(k), train.class_names[:k]
    _, _, transform = prepare_transform(model, train)
    for data in (test, ood):
        if data is not None:
            prepare_transform(model, data)
    ctx.progress(0.0, "evaluating the original model")
    pairs = resolve_pairs(spec.pairs, class_names)
    ckpt = checkpoint_dir(ctx.run_dir, train.fingerprint(), test.fingerprint(), model_fingerprint(model))
    timings = {}
    t = time.perf_counter()
    before = _predict(model, test, select_indices(test.labels, classes), ood, device, transform)
    test_idx = before[3]
    if not pairs:
        pairs = [strongest_dependency(before[0], spec.alpha)]
        log.info("no pairs given: cutting the strongest dependency %s", pairs)
    rows = {"before": _metrics(*before[:3], pairs, spec.alpha)}
    logits_by_name = {"before": before[0]}
    timings["before_s"] = time.perf_counter() - t
    samples = Samples(train, select_indices(train.labels, classes, spec.train_per_class))
    runs = [("after", spec.beta)] + ([("control", 0.0)] if spec.control else [])
    tasks = [FitTask(f"fine-tune β={beta:g}", copy.deepcopy(model), samples, _loop_config(spec), ckpt / name,
                     DependencyPenalty(pairs, beta) if beta > 0 else None) for name, beta in runs]
    t = time.perf_counter()
    tuned = fit_tasks(tasks, device=device, transform=transform, threads=spec.threads,
                      side_by_side=spec.side_by_side, progress=ctx.progress, span=(0.05, 0.9))
    timings["fine_tune_s"] = time.perf_counter() - t
    if is_main_process():
        t = time.perf_counter()
        for (name, _), net in zip(runs, tuned, strict=True):
            after = _predict(net, test, test_idx, ood, device, transform)
            rows[name], logits_by_name[name] = _metrics(*after[:3], pairs, spec.alpha), after[0]
        timings["evaluate_s"] = time.perf_counter() - t
    if not is_main_process():
        barrier()
        return None
    timings["total_s"] = time.perf_counter() - t0
    timings["cpu_s"] = process_cpu_seconds()  # the whole process: imports and data loading too
    stores = save_test_stores(ctx, "regularizer", spec, test, test_idx, class_names, logits_by_name)
    for row in rows.values():
        for p in row["pairs"]:
            p["target_name"] = class_names[p["target"]]
            p["source_name"] = class_names[p["source"]]
    report = {
        "kind": "regularizer", "config": spec_to_dict(spec), "run_dir": str(ctx.run_dir),
        "checkpoints": str(ckpt), "data": {"train": train.fingerprint(), "test": test.fingerprint()},
        "pairs": [list(p) for p in pairs], "metrics": rows, "stores": stores,
        "timings": timings, "device": str(device), "threads": torch.get_num_threads(),
        "n_train": len(samples), "n_test": int(len(test_idx)), "n_ood": None if ood is None else len(ood),
    }
    path = ctx.run_dir / "report.json"
    write_json_atomic(path, report)
    barrier()
    return path


def run_job(spec: RegularizerSpec, ctx: RunContext) -> Path | None:
    """The job entry: the dataset, OOD set and trained model by name, then the experiment."""
    use_threads(spec.threads)
    train, test = load_splits(spec.dataset, ctx.cache)
    ood = load_ood(spec.ood, ctx.cache)
    model = load_trained_model(spec.model, spec.checkpoint, spec.num_classes or train.num_classes)
    return regularize_dependencies(spec, ctx, train, test, ood, model)
