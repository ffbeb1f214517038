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

Beyond the paper's literal recipe (see ``RegularizerSpec``): with no pairs named, the pair cut
is the strongest *peculiar* dependency (``engine.train.peculiarity``: unlike shapes in the glyph
world, unlike names elsewhere), as the paper cuts dependencies "not that sensible for
humans"; the penalty is divided by the pair's ``|C_ij|`` before fine-tuning, so that β means
the same whatever the logits' scale; several β (``sweep``) and seeds (``seeds``) can run in
one job, reported as mean ± sd over seeds against the control of the same seed.
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

from engine.core.categories import find_category
from engine.core.covlasso import solve_covlasso
from engine.core.gram import GramAccumulator
from engine.errors import InvalidInputError
from engine.ingest.data import ImageDataset, prepare_transform
from engine.jobs.context import RunContext
from engine.jobs.kinds import spec_to_dict
from engine.storage.atomic import write_json_atomic
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
from engine.train.parallel import FitTask, fit_and_evaluate
from engine.train.specs import RegularizerSpec

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- the pieces


class DependencyPenalty:
    """``logits -> β · Σ_(i,j) |mean_batch f_i f_j| / s_ij``; picklable.

    With ``scale`` None, ``s_ij = 1``: the paper's penalty on the raw scale, whose size grows
    with the square of the logits' (β · |C_ij| is 23 against a cross-entropy of 0.1 for the
    demo's ǃ ← !). :meth:`relative` divides by ``|C_ij|`` of the model before fine-tuning, so
    the penalty starts near β whatever the logits' magnitude, and multiplying every logit by
    a constant changes nothing.
    """

    def __init__(self, pairs: list[tuple[int, int]], beta: float, scale: list[float] | None = None):
        self.i = torch.tensor([p[0] for p in pairs])
        self.j = torch.tensor([p[1] for p in pairs])
        self.beta = beta
        self.scale = torch.ones(len(pairs), dtype=torch.float64) if scale is None else torch.tensor(scale, dtype=torch.float64)

    @classmethod
    def relative(cls, pairs: list[tuple[int, int]], beta: float, reference: np.ndarray) -> DependencyPenalty:
        """The scale-free penalty: each pair's term divided by its ``|E[f_i f_j]|`` over
        ``reference`` logits (the model before fine-tuning); a pair already near zero falls
        back on ``sqrt(E[f_i²] E[f_j²])``, its largest possible value."""
        f = np.asarray(reference, dtype=np.float64)
        scale = []
        for i, j in pairs:
            c, bound = abs((f[:, i] * f[:, j]).mean()), np.sqrt((f[:, i] ** 2).mean() * (f[:, j] ** 2).mean())
            scale.append(float(c if c > 1e-3 * bound else max(bound, 1e-12)))
        return cls(pairs, beta, scale)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        cov = (logits[:, self.i] * logits[:, self.j]).mean(0).abs()
        return self.beta * (cov / self.scale.to(logits.device, logits.dtype)).sum()


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


def all_coefficients(logits: np.ndarray, alpha: float) -> np.ndarray:
    """(sources, targets) CovLasso coefficients of every target within the model at ``alpha``."""
    acc = GramAccumulator(logits.shape[1])
    acc.update(logits)
    gram = acc.gram()
    return solve_covlasso(gram, gram, np.diag(gram).copy(), alpha, within=True).coef


def strongest_dependency(logits: np.ndarray, alpha: float) -> tuple[int, int]:
    """(target, source) with the largest |θ_j| over every target's CovLasso at ``alpha``."""
    coef = all_coefficients(logits, alpha)
    source, target = np.unravel_index(np.abs(coef).argmax(), coef.shape)
    if coef[source, target] == 0:
        raise InvalidInputError(
            f"no category has a dependency at alpha = {alpha}: lower alpha, or name pairs"
        )
    return int(target), int(source)


def choose_pair(coef: np.ndarray, similarity: np.ndarray | None, min_peculiarity: float,
                class_names: list[str], measure: str) -> tuple[tuple[int, int], dict]:
    """The pair to cut when none is named: the strongest *peculiar* dependency (peculiarity ≥
    ``min_peculiarity``), or the strongest of all without a similarity; and how it was chosen."""
    from engine.train.peculiarity import peculiarity, rank_dependencies, strongest_peculiar

    if not np.any(coef):
        raise InvalidInputError("no category has a dependency at this alpha: lower alpha, or name pairs")
    pec = np.zeros(coef.shape[::-1]) if similarity is None else peculiarity(similarity)
    every = rank_dependencies(coef, pec)
    chosen = every[0] if similarity is None else strongest_peculiar(coef, pec, min_peculiarity)

    def row(d) -> dict:
        return {"target": d.target, "source": d.source, "target_name": class_names[d.target],
                "source_name": class_names[d.source], "coef": d.coef,
                "peculiarity": None if similarity is None else d.peculiarity}

    info = {"measure": measure, "min_peculiarity": min_peculiarity if similarity is not None else None,
            "chosen": row(chosen), "strongest_of_all": row(every[0]),
            "rank_among_all": next(n for n, d in enumerate(every) if (d.target, d.source) ==
                                   (chosen.target, chosen.source)) + 1,
            "n_dependencies": len(every),
            "next_peculiar": [row(d) for d in (rank_dependencies(coef, pec, min_peculiarity)[1:6]
                                               if similarity is not None else [])]}
    return (chosen.target, chosen.source), info


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


class _Evaluate:
    """A fine-tuned model → (Table 3's row, its test logits if kept); picklable, so that it runs
    in the process that fine-tuned the model, side by side with the others."""

    def __init__(self, test: ImageDataset, test_idx: np.ndarray, ood: ImageDataset | None, device, transform,
                 pairs: list[tuple[int, int]], alpha: float, keep_logits: bool):
        self.test, self.test_idx, self.ood, self.device, self.transform = test, test_idx, ood, device, transform
        self.pairs, self.alpha, self.keep_logits = pairs, alpha, keep_logits

    def __call__(self, model: nn.Module) -> tuple[dict, np.ndarray | None] | None:
        if not is_main_process():
            return None
        logits, labels, ood_logits, _ = _predict(model, self.test, self.test_idx, self.ood, self.device,
                                                 self.transform)
        return _metrics(logits, labels, ood_logits, self.pairs, self.alpha), (logits if self.keep_logits else None)


def _loop_config(spec: RegularizerSpec, seed: int) -> LoopConfig:
    return LoopConfig(epochs=spec.epochs, lr=spec.lr, weight_decay=spec.weight_decay,
                      batch_size=spec.batch_size, optimizer="sgd", momentum=spec.momentum,
                      schedule="cosine", seed=seed, workers=spec.workers)


def _runs(spec: RegularizerSpec) -> list[tuple[str, float, int]]:
    """(name, β, seed) of every fine-tune: per seed the control (β = 0) and each β. The first
    seed's are also "after" (β = ``spec.beta``) and "control", the report's Table 3 rows."""
    runs = []
    for n in range(spec.seeds):
        seed = spec.seed + n
        for beta in ([0.0] if spec.control else []) + list(spec.betas()):
            name = {0.0: "control", spec.beta: "after"}.get(beta) if n == 0 else None
            runs.append((name or f"beta={beta:g},seed={seed}", beta, seed))
    return runs


def _mean_sd(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "n": len(a)}


def summarize_runs(runs: list[tuple[str, float, int]], rows: dict, before: dict) -> list[dict]:
    """Per β (0 = control): mean ± sd over seeds of top-1, OOD AUPR and each pair's θ and C;
    differences against the control of the same seed; θ as a fraction of θ before."""
    control = {seed: rows[name] for name, beta, seed in runs if beta == 0}
    out = []
    for beta in sorted({b for _, b, _ in runs}):
        mine = [(seed, rows[name]) for name, b, seed in runs if b == beta]
        entry: dict = {"beta": beta, "seeds": [seed for seed, _ in mine],
                       "top1": _mean_sd([r["top1"] for _, r in mine])}
        if all(seed in control for seed, _ in mine):
            entry["top1_vs_control"] = _mean_sd([r["top1"] - control[seed]["top1"] for seed, r in mine])
        if "ood_aupr" in before:
            entry["ood_aupr"] = _mean_sd([r["ood_aupr"] for _, r in mine])
            if all(seed in control for seed, _ in mine):
                entry["ood_aupr_vs_control"] = _mean_sd([r["ood_aupr"] - control[seed]["ood_aupr"] for seed, r in mine])
        entry["pairs"] = []
        for p, ref in enumerate(before["pairs"]):
            coefs = [r["pairs"][p]["coef"] for _, r in mine]
            entry["pairs"].append({
                "coef": _mean_sd(coefs), "cov": _mean_sd([r["pairs"][p]["cov"] for _, r in mine]),
                "coef_fraction": _mean_sd([c / ref["coef"] if ref["coef"] else 0.0 for c in coefs]),
            })
        out.append(entry)
    return out


def verdict(sweep: list[dict], beta: float) -> list[str]:
    """Plain sentences: does the default β keep top-1, cut θ, improve OOD AUPR (against the control)?"""
    row = next((r for r in sweep if r["beta"] == beta), None)
    if row is None or "top1_vs_control" not in row:
        return []
    n = row["top1"]["n"]
    d, lines = row["top1_vs_control"], []
    lines.append(f"β = {beta:g}: top-1 {d['mean']:+.2f} ± {d['sd']:.2f} pt against the control "
                 f"({'within' if d['mean'] >= -0.5 else 'beyond'} 0.5 pt; {n} seed{'s' * (n > 1)}).")
    for p in row["pairs"]:
        f = p["coef_fraction"]
        lines.append(f"θ of the cut pair: {100 * f['mean']:.1f} ± {100 * f['sd']:.1f} % of before "
                     f"({'cut by ≥ 90 %' if abs(f['mean']) <= 0.1 else 'not cut by 90 %'}).")
    if "ood_aupr_vs_control" in row:
        a = row["ood_aupr_vs_control"]
        better = a["mean"] > 0 and a["mean"] > a["sd"]
        lines.append(f"OOD AUPR {'improves' if better else 'does not improve'}: {a['mean']:+.2f} ± {a['sd']:.2f} pt "
                     "against the control (the paper: +0.09 to +2.60 pt, Table 3).")
    return lines


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
    from engine.train.peculiarity import category_similarity, peculiarity

    ctx.progress(0.02, "judging how peculiar the dependencies are")
    similarity, measure = category_similarity(spec.peculiar, class_names, ctx.cache, spec.dataset)
    choice = None
    if not pairs:
        pair, choice = choose_pair(all_coefficients(before[0], spec.alpha), similarity, spec.min_peculiarity,
                                   class_names, measure)
        pairs = [pair]
        log.info("no pairs given: cutting %s ← %s (peculiarity %s, by %s)", choice["chosen"]["target_name"],
                 choice["chosen"]["source_name"], choice["chosen"]["peculiarity"], measure)
    rows = {"before": _metrics(*before[:3], pairs, spec.alpha)}
    logits_by_name = {"before": before[0]}
    timings["before_s"] = time.perf_counter() - t
    samples = Samples(train, select_indices(train.labels, classes, spec.train_per_class))
    runs = _runs(spec)

    def penalty(beta: float):
        if beta == 0:
            return None
        if spec.penalty == "raw":
            return DependencyPenalty(pairs, beta)
        return DependencyPenalty.relative(pairs, beta, before[0])

    evaluators = {name: _Evaluate(test, test_idx, ood, device, transform, pairs, spec.alpha,
                                  keep_logits=name in ("after", "control")) for name, _, _ in runs}
    tasks = [FitTask(f"fine-tune β={beta:g} seed {seed}", copy.deepcopy(model), samples, _loop_config(spec, seed),
                     ckpt / name, penalty(beta), evaluators[name]) for name, beta, seed in runs]
    t = time.perf_counter()
    tuned = fit_and_evaluate(tasks, device=device, transform=transform, threads=spec.threads,
                             side_by_side=spec.side_by_side, progress=ctx.progress, span=(0.05, 0.95))
    timings["fine_tune_and_evaluate_s"] = time.perf_counter() - t
    if is_main_process():
        for (name, _, _), (_, (row, logits)) in zip(runs, tuned, strict=True):
            rows[name] = row
            if logits is not None:
                logits_by_name[name] = logits
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
    sweep = summarize_runs(runs, rows, rows["before"])
    report = {
        "kind": "regularizer", "config": spec_to_dict(spec), "run_dir": str(ctx.run_dir),
        "checkpoints": str(ckpt), "data": {"train": train.fingerprint(), "test": test.fingerprint()},
        "pairs": [list(p) for p in pairs], "pair_choice": choice,
        "peculiarity": {"measure": measure, "pairs": [
            None if similarity is None else float(peculiarity(similarity[i, j])) for i, j in pairs]},
        "metrics": {name: rows[name] for name in ("before", "control", "after") if name in rows},
        "runs": [{"name": name, "beta": beta, "seed": seed, **rows[name]} for name, beta, seed in runs],
        "sweep": sweep, "verdict": verdict(sweep, spec.beta), "penalty": spec.penalty, "stores": stores,
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
