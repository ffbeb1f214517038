"""Paper §3.3: cut chosen neural dependencies by fine-tuning with a covariance penalty.

    loss = CE + β · Σ_(i,j) | mean_batch f_i(x) f_j(x) |

for the chosen pairs (target i, source j). By Conjecture 1, a small ``|C_ij| = |E[f_i f_j]|``
means no dependency of i on j, so the penalty drives the CovLasso coefficient θ_j of
target i towards zero. Two fine-tunes start from the same trained model with the same
recipe and seed — with the penalty, and a control with β = 0 — so that what differs is the
penalty's doing. Reported (Table 3): top-1 accuracy, θ_j of target i at ``alpha`` (and
``C_ij``) before and after, and OOD AUPR (anomaly score −max softmax, OOD samples positive).
Test logits of the three models become stores (``<prefix>-before``, ``-after``, ``-control``).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import average_precision_score
from torch import nn
from torch.utils.data import Dataset

from engine.atomic import write_json_atomic
from engine.covlasso import solve_covlasso
from engine.errors import InvalidInputError
from engine.gram import GramAccumulator
from engine.jobs.context import RunContext
from engine.jobs.specs import RegularizerSpec, spec_hash, spec_to_dict
from engine.service import parse_index
from engine.store import Cache
from engine.train.appdata import (
    Relabeled,
    Splits,
    checkpoint_dir,
    model_fingerprint,
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


# ----------------------------------------------------------------------------- the pieces


def dependency_penalty(pairs: list[tuple[int, int]], beta: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """``logits -> β · Σ |mean_batch f_i f_j|`` (the paper's regulariser)."""
    i = torch.tensor([p[0] for p in pairs])
    j = torch.tensor([p[1] for p in pairs])

    def penalty(logits: torch.Tensor) -> torch.Tensor:
        return beta * (logits[:, i] * logits[:, j]).mean(0).abs().sum()

    return penalty


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
        token = token.strip()
        idx = parse_index(token)
        if idx is not None:
            if not 0 <= idx < len(class_names):
                raise InvalidInputError(
                    f"pairs: class index {idx} is out of range [0, {len(class_names) - 1}]")
            return idx
        matches = [i for i, n in enumerate(class_names) if n == token]
        matches = matches or [i for i, n in enumerate(class_names) if n.split(" ")[0] == token]
        if len(matches) != 1:
            raise InvalidInputError(
                f"pairs: class {token!r} matches {len(matches)} class names; give its index "
                f"or its exact name (e.g. {class_names[0]!r})")
        return matches[0]

    out = []
    for pair in pairs:
        target, source = (one(t) for t in pair.split(","))
        if target == source:
            raise InvalidInputError(f"pairs: {pair!r} names the same category twice")
        out.append((target, source))
    return out


# ----------------------------------------------------------------------------- the experiment


def _predict(model: nn.Module, test: Dataset, ood: Dataset | None, device) -> tuple[np.ndarray, ...]:
    """(test logits, test labels, OOD logits or None)."""
    logits, labels = predict_logits(model, test, device)
    return logits, labels, None if ood is None else predict_logits(model, ood, device)[0]


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


def regularize_dependencies(spec: RegularizerSpec, ctx: RunContext, splits: Splits,
                            ood: Dataset | None, model: nn.Module) -> Path | None:
    """Run the whole §3.3 experiment from the trained ``model``; returns the report's path."""
    t0 = time.perf_counter()
    device = resolve_device(spec.device)
    k = spec.num_classes or splits.num_classes
    if k > splits.num_classes:
        raise InvalidInputError(
            f"num_classes = {k} but the dataset has only {splits.num_classes} classes")
    classes, class_names = np.arange(k), splits.class_names[:k]
    test_idx = select_indices(splits.test_labels, classes)
    test = Relabeled(splits.test, test_idx, np.arange(splits.num_classes))
    ctx.progress(0.0, "evaluating the original model")
    pairs = resolve_pairs(spec.pairs, class_names)
    before = _predict(model, test, ood, device)
    if not pairs:
        pairs = [strongest_dependency(before[0], spec.alpha)]
        log.info("no pairs given: cutting the strongest dependency %s", pairs)
    rows = {"before": _metrics(*before, pairs, spec.alpha)}
    logits_by_name = {"before": before[0]}
    train = Relabeled(splits.train, select_indices(splits.train_labels, classes, spec.train_per_class),
                      np.arange(splits.num_classes))
    cfg = LoopConfig(epochs=spec.epochs, lr=spec.lr, weight_decay=spec.weight_decay,
                     batch_size=spec.batch_size, optimizer="sgd", momentum=spec.momentum,
                     schedule="cosine", seed=spec.seed, workers=spec.workers)
    runs = [("after", spec.beta)] + ([("control", 0.0)] if spec.control else [])
    ckpt = checkpoint_dir(ctx.run_dir, splits.identity, model_fingerprint(model))
    timings = {}
    for n, (name, beta) in enumerate(runs):
        t = time.perf_counter()
        tuned = copy.deepcopy(model)
        span = (0.05 + 0.9 * n / len(runs), 0.05 + 0.9 * (n + 1) / len(runs))
        fit(tuned, train, cfg, ckpt / name, device=device, progress=ctx.progress, span=span,
            phase=f"fine-tune β={beta:g}",
            extra_loss=dependency_penalty(pairs, beta) if beta > 0 else None)
        timings[f"{name}_s"] = time.perf_counter() - t
        if is_main_process():
            after = _predict(tuned, test, ood, device)
            rows[name], logits_by_name[name] = _metrics(*after, pairs, spec.alpha), after[0]
    if not is_main_process():
        barrier()
        return None
    timings["total_s"] = time.perf_counter() - t0
    timings["cpu_s"] = process_cpu_seconds()
    stores = _save_stores(spec, ctx, splits, test_idx, class_names, logits_by_name)
    for row in rows.values():
        for p in row["pairs"]:
            p["target_name"] = class_names[p["target"]]
            p["source_name"] = class_names[p["source"]]
    report = {
        "kind": "regularizer", "config": spec_to_dict(spec), "run_dir": str(ctx.run_dir),
        "checkpoints": str(ckpt), "data": splits.identity,
        "pairs": [list(p) for p in pairs], "metrics": rows, "stores": stores,
        "timings": timings, "device": str(device), "n_test": int(len(test_idx)),
        "n_ood": None if ood is None else len(ood),
    }
    path = ctx.run_dir / "report.json"
    write_json_atomic(path, report)
    barrier()
    return path


def _save_stores(spec, ctx, splits, test_idx, class_names, logits_by_name) -> dict[str, str]:
    cache = Cache(ctx.cache_root)
    prefix = f"regularizer-{spec_hash('regularizer', spec)[:10]}"
    fingerprint = test_fingerprint(splits, test_idx)
    names = {}
    for name, logits in logits_by_name.items():
        store = cache.save_store(
            f"{prefix}-{name}", logits, splits.test_labels[test_idx], class_names,
            overwrite=True, sample_fingerprint=fingerprint,
            meta={"source": {"job_kind": "regularizer", "model": name, "config": spec_to_dict(spec),
                             "run_dir": str(ctx.run_dir)}},
        )
        names[name] = store.name
    return names


def run_job(spec: RegularizerSpec, ctx: RunContext) -> Path | None:
    """The job entry: resolve the dataset, OOD set and trained model by name, then run."""
    from engine.train import registry_adapter as reg

    splits = reg.load_splits(spec.dataset, ctx.cache_root)
    ood = reg.load_ood(spec.ood, ctx.cache_root)
    model = reg.load_trained_model(spec.model, spec.checkpoint, spec.num_classes or splits.num_classes)
    if spec.dataset != reg.GLYPHS:
        reg.set_transform([splits.train, splits.test, ood], reg.model_transform(model))
    return regularize_dependencies(spec, ctx, splits, ood, model)
