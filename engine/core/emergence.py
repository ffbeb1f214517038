"""Emergence: the figures of one checkpoint's test logits, the curves' points (pure, no I/O).

For a checkpoint of a training run (or of a user's own run) :func:`checkpoint_figures` turns
its test logits into the numbers the Emergence page plots against epochs and against the
number of categories:

* ``top1``: test accuracy (fraction);
* the logit spectrum: ``effective_rank`` = exp(entropy of the Gram's eigenvalues / their sum)
  (Roy & Vetterli), and ``spectrum_rank``, the dimensions the logits span — eigenvalues of the
  unit-diagonal Gram above the floor ρ of :func:`engine.core.analysis.redundancy`, where the Theory
  page's spectrum falls off its cliff;
* sparse dependencies: ``fit_4`` / ``fit_6``, the share of categories whose best dependency
  *fits* (R² ≥ 0.95 and ≤ 0.5 pt of top-1 lost when its logit is replaced) with at most 4 / 6
  sources, and ``median_r2_4`` / ``median_r2_6``, the median R² of the best dependencies with
  at most 4 / 6 sources (:func:`sparse_fit_figures`; the search: :mod:`engine.core.bestsubset`);
* ``redundancy_median``: the median of §2.2's r_i = 1 / (C_ii (C⁻¹)_ii), and
  ``exactly_redundant``, the share of categories that are exact combinations of the others.

Every share is a fraction in [0, 1]. The run that trains, snapshots and extracts lives in
:mod:`engine.train.emergence`; this module only computes.
"""

from __future__ import annotations

import numpy as np

from engine.core.analysis import Top2, r2_from_error, redundancy, target_variance
from engine.core.bestsubset import BestSubsetResult, best_subsets

FIT_R2 = 0.95  # a dependency fits when its R² is at least this ...
FIT_MAX_DROP = 0.5  # ... and replacing the logit costs at most this many points of top-1
SOURCES = (4, 6)  # the sparsities the figures are read at


# ----------------------------------------------------------------------------- sparse fits


def best_sources(gram: np.ndarray, max_sources: int) -> BestSubsetResult | None:
    """Every category's best dependency on the others with at most m sources, m = 1 … M
    (M = min(``max_sources``, K − 1); None when K < 2): the best-subset search of
    :mod:`engine.core.bestsubset` on the Gram (greedy starts improved by exact swaps, several
    starts, never below OMP), the target excluded."""
    c = np.asarray(gram, dtype=np.float64)
    m = int(min(max_sources, c.shape[0] - 1))
    if m < 1:
        return None
    return best_subsets(c, c, np.diag(c).copy(), m, forbid=np.arange(c.shape[0]))


def sparse_fit_figures(gram: np.ndarray, logits: np.ndarray, labels: np.ndarray,
                       sizes: tuple[int, ...] = SOURCES) -> dict[str, float]:
    """``fit_m`` and ``median_r2_m`` for each m of ``sizes``, from :func:`best_sources`.

    ``gram``: (K, K) ``E[f fᵀ]`` of ``logits`` (N, K); ``labels``: (N,). A category *fits
    with ≤ m sources* when for some s ≤ m its best s-source dependency has R² ≥ :data:`FIT_R2`
    and replacing its logit by the dependency (every other logit kept) costs at most
    :data:`FIT_MAX_DROP` points of top-1 accuracy. ``median_r2_m``: the median R² of the best
    dependencies with at most m sources (nan-aware: a constant logit has no R²).
    """
    logits = np.asarray(logits)
    k = logits.shape[1]
    res = best_sources(gram, max(sizes))
    out: dict[str, float] = {}
    if res is None:
        return {f: v for size in sizes for f, v in ((f"fit_{size}", 0.0), (f"median_r2_{size}", float("nan")))}
    c = np.asarray(gram, dtype=np.float64)
    sq = np.diag(c).copy()
    r2 = r2_from_error(res.residual, target_variance(sq, logits.mean(0))[:, None], sq[:, None])  # (K, M)
    fits = _fits(logits, labels, res, r2)  # (K, M)
    for size in sizes:
        s = min(size, k - 1)
        out[f"fit_{size}"] = float(fits[:, :s].any(1).mean())
        col = r2[:, s - 1]
        out[f"median_r2_{size}"] = float(np.nanmedian(col)) if np.isfinite(col).any() else float("nan")
    return out


def _fits(logits: np.ndarray, labels: np.ndarray, res: BestSubsetResult, r2: np.ndarray) -> np.ndarray:
    """(K, M) whether target t's best s-source fit meets both criteria (the accuracy is checked
    only where R² already does: replacing a logit costs an (N, s) product per target)."""
    top2 = Top2.of(logits)
    ori = float((top2.pred == labels).mean())
    fits = np.zeros(r2.shape, dtype=bool)
    for t in np.flatnonzero((r2 >= FIT_R2).any(1)):
        first = top2.idx1 == t
        other_idx = np.where(first, top2.idx2, top2.idx1)
        other_val = np.where(first, top2.val2, top2.val1)
        for s in np.flatnonzero(r2[t] >= FIT_R2):
            sources, coefs = res.column(int(t), int(s) + 1)
            replaced = np.asarray(logits[:, sources], dtype=np.float64) @ coefs
            wins = (replaced > other_val) | ((replaced == other_val) & (t < other_idx))
            acc = float((np.where(wins, t, other_idx) == labels).mean())
            fits[t, s] = 100.0 * (ori - acc) <= FIT_MAX_DROP + 1e-9
    return fits


# ----------------------------------------------------------------------------- spectrum, redundancy


def effective_rank(eigenvalues: np.ndarray) -> float:
    """exp(Shannon entropy of λ / Σλ) over the non-negative eigenvalues (Roy & Vetterli 2007):
    k for k equal eigenvalues, 1 when one dominates."""
    lam = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0.0, None)
    total = lam.sum()
    if not total > 0:
        return 0.0
    p = lam[lam > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def spectrum_figures(gram: np.ndarray, data_eps: float = float(np.finfo(np.float32).eps)) -> dict[str, float]:
    """Effective rank of the Gram, the dimensions the logits span, and §2.2's redundancy."""
    c = np.asarray(gram, dtype=np.float64)
    lam = np.linalg.eigvalsh(c)
    red = redundancy(c, data_eps=data_eps)
    return {"effective_rank": effective_rank(lam), "spectrum_rank": int(red.rank),
            "redundancy_median": float(np.median(red.r)), "exactly_redundant": float(red.exact.mean())}


# ----------------------------------------------------------------------------- one checkpoint


def gram_of(logits: np.ndarray, rows: int = 8192) -> np.ndarray:
    """``E[f fᵀ]`` in float64 by blocks of rows (what the store's Gram set holds)."""
    n, k = logits.shape
    out = np.zeros((k, k))
    for s in range(0, n, rows):
        block = np.asarray(logits[s : s + rows], dtype=np.float64)
        out += block.T @ block
    return out / n


def checkpoint_figures(logits: np.ndarray, labels: np.ndarray, gram: np.ndarray | None = None) -> dict[str, float]:
    """Every figure of one checkpoint from its test logits (N, K) and labels (N,)."""
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    gram = gram_of(logits) if gram is None else np.asarray(gram, dtype=np.float64)
    top1 = float((logits.argmax(1) == labels).mean())
    return {"top1": top1, **spectrum_figures(gram), **sparse_fit_figures(gram, logits, labels)}


# ----------------------------------------------------------------------------- what the curves show

FIGURES = {  # report field -> what a chart's axis calls it
    "top1": "top-1 accuracy",
    "fit_4": "share fitting with ≤ 4 sources",
    "fit_6": "share fitting with ≤ 6 sources",
    "median_r2_4": "median R², 4 sources",
    "median_r2_6": "median R², 6 sources",
    "effective_rank": "effective rank of the Gram",
    "spectrum_rank": "dimensions the logits span",
    "redundancy_median": "median redundancy r_i",
}
LEARNED_TOP1 = 0.5  # below this top-1 a checkpoint has not learned its categories yet


def describe_emergence(rows: list[dict]) -> str:
    """One or two sentences that state what a sweep's curves show (plain numbers, no judgement
    beyond the figures): over training for the largest number of categories, and over the
    number of categories at the last checkpoint."""
    if not rows:
        return "No checkpoint measured yet."
    ks = sorted({r["categories"] for r in rows})
    last_epoch = max(r["epoch"] for r in rows)

    def pct(x: float) -> str:
        return f"{100 * x:.0f} %"

    k = ks[-1]
    run = sorted((r for r in rows if r["categories"] == k), key=lambda r: r["epoch"])
    first, last = run[0], run[-1]
    text = (f"With {k:,} categories, from epoch {first['epoch']:g} to {last['epoch']:g} top-1 goes "
            f"{pct(first['top1'])} → {pct(last['top1'])} and the share of categories fitting with ≤ 6 sources "
            f"{pct(first['fit_6'])} → {pct(last['fit_6'])} (≤ 4: {pct(first['fit_4'])} → {pct(last['fit_4'])}; "
            f"median R² with 4 sources {first['median_r2_4']:.2f} → {last['median_r2_4']:.2f}).")
    at_end = sorted((r for r in rows if r["epoch"] == last_epoch), key=lambda r: r["categories"])
    if len(at_end) > 1:
        text += (f" At epoch {last_epoch:g}, from {at_end[0]['categories']:,} to {at_end[-1]['categories']:,} "
                 f"categories the share fitting with ≤ 6 sources goes {pct(at_end[0]['fit_6'])} → "
                 f"{pct(at_end[-1]['fit_6'])}, top-1 {pct(at_end[0]['top1'])} → {pct(at_end[-1]['top1'])}.")
    unlearned = [r for r in rows if r["top1"] < LEARNED_TOP1]
    if unlearned:
        text += (f" {len(unlearned)} of the {len(rows)} checkpoints are below {pct(LEARNED_TOP1)} top-1: there a "
                 "“fit” describes logits that have not yet learned their categories (a low effective rank), "
                 "not dependencies between learned ones.")
    return text
