"""Emergence: the figures of one checkpoint's test logits, the curves' points (pure, no I/O).

For a checkpoint of a training run (or of a user's own run) :func:`checkpoint_figures` turns
its test logits into the numbers the Emergence page plots against epochs and against the
number of categories:

* ``top1``: test accuracy (fraction);
* the logit spectrum: ``effective_rank`` = exp(entropy of the Gram's eigenvalues / their sum)
  (Roy & Vetterli), and ``spectrum_rank``, the dimensions the logits span — eigenvalues of the
  unit-diagonal Gram above the floor ρ of :func:`engine.core.analysis.redundancy`, where the Theory
  page's spectrum falls off its cliff;
* sparse dependencies: ``fit_4`` / ``fit_6``, the share of categories whose dependency *fits*
  (R² ≥ 0.95 and ≤ 0.5 pt of top-1 lost when its logit is replaced) with at most 4 / 6 sources,
  and ``median_r2_4`` / ``median_r2_6``, the median R² with 4 / 6 sources (:func:`sparse_fit_figures`);
* ``redundancy_median``: the median of §2.2's r_i = 1 / (C_ii (C⁻¹)_ii), and
  ``exactly_redundant``, the share of categories that are exact combinations of the others.

Every share is a fraction in [0, 1]. The run that trains, snapshots and extracts lives in
:mod:`engine.train.emergence`; this module only computes.
"""

from __future__ import annotations

import numpy as np

from engine.core.analysis import Top2, r2_from_error, redundancy, target_variance

FIT_R2 = 0.95  # a dependency fits when its R² is at least this ...
FIT_MAX_DROP = 0.5  # ... and replacing the logit costs at most this many points of top-1
SOURCES = (4, 6)  # the sparsities the figures are read at


# ----------------------------------------------------------------------------- sparse fits


def greedy_sources(gram: np.ndarray, max_sources: int, jitter: float = 1e-10) -> tuple[np.ndarray, list[np.ndarray]]:
    """Orthogonal matching pursuit on the Gram, every target of one model at once.

    TO BE REPLACED by the best-subset stage (issue 25) when it lands: forward selection is a
    lower bound on what the best ``m`` sources achieve.

    Target t is predicted from the other categories (t itself excluded). The Gram is scaled to
    unit diagonal, so a source is chosen by its correlation with the residual, not its size:
    at each step the source with the largest ``|S_jt − S_{j,chosen} θ|`` joins and θ is the
    least-squares solution on the chosen sources (``S_{chosen,chosen} θ = S_{chosen,t}``) —
    exactly scikit-learn's ``orthogonal_mp_gram`` on the scaled Gram.

    Returns ``chosen`` (K, m) source indices in the order chosen (m = min(max_sources, K − 1))
    and ``coefs``: for s = 1..m, (K, s) coefficients on ``chosen[:, :s]`` in the Gram's own units.
    """
    c = np.asarray(gram, dtype=np.float64)
    k = c.shape[0]
    m = int(min(max_sources, k - 1))
    d = np.sqrt(np.maximum(np.diag(c), 1e-300))
    s_mat = c / d[:, None] / d[None, :]
    rows = np.arange(k)
    chosen = np.zeros((k, m), dtype=np.int64)
    theta = np.zeros((k, 0))
    coefs: list[np.ndarray] = []
    for step in range(m):
        if step:
            resid = s_mat - np.einsum("tsk,ts->tk", s_mat[chosen[:, :step]], theta)
        else:
            resid = s_mat.copy()  # row t: correlations with target t (S is symmetric)
        resid[rows, rows] = 0.0  # a target is never its own source
        if step:
            resid[rows[:, None], chosen[:, :step]] = 0.0
        chosen[:, step] = np.argmax(np.abs(resid), axis=1)
        sel = chosen[:, : step + 1]
        sub = s_mat[sel[:, :, None], sel[:, None, :]] + jitter * np.eye(step + 1)
        rhs = s_mat[sel, rows[:, None]]
        theta = np.linalg.solve(sub, rhs[..., None])[..., 0]
        coefs.append(theta * d[:, None] / d[sel])  # back to the Gram's units
    return chosen, coefs


def sparse_fit_figures(gram: np.ndarray, logits: np.ndarray, labels: np.ndarray,
                       sizes: tuple[int, ...] = SOURCES) -> dict[str, float]:
    """``fit_m`` and ``median_r2_m`` for each m of ``sizes`` (greedy sources, see below).

    TO BE REPLACED by the best-subset stage (issue 25) when it lands; until then the sources
    are :func:`greedy_sources`' (OMP on the Gram, least squares on the chosen sources).

    ``gram``: (K, K) ``E[f fᵀ]`` of ``logits`` (N, K); ``labels``: (N,). A category *fits
    with ≤ m sources* when for some s ≤ m its s-source dependency has R² ≥ :data:`FIT_R2` and
    replacing its logit by the dependency (every other logit kept) costs at most
    :data:`FIT_MAX_DROP` points of top-1 accuracy. ``median_r2_m``: the median R² with
    exactly m sources (nan-aware: a constant logit has no R²).
    """
    logits = np.asarray(logits)
    k = logits.shape[1]
    chosen, coefs = greedy_sources(gram, max(sizes))
    r2 = sparse_r2(gram, logits.mean(0), chosen, coefs)  # (K, m)
    fits = _fits(logits, labels, chosen, coefs, r2)  # (K, m)
    out: dict[str, float] = {}
    for size in sizes:
        s = min(size, k - 1)
        out[f"fit_{size}"] = float(fits[:, :s].any(1).mean()) if s else 0.0
        col = r2[:, s - 1] if s else np.full(k, np.nan)
        out[f"median_r2_{size}"] = float(np.nanmedian(col)) if np.isfinite(col).any() else float("nan")
    return out


def sparse_r2(gram: np.ndarray, means: np.ndarray, chosen: np.ndarray, coefs: list[np.ndarray]) -> np.ndarray:
    """(K, m) R² of every target's s-source fit, s = 1..m, from Gram quantities alone:
    the least-squares error is ``C_tt − θᵀ C_{S,t}``, divided by the logit's variance."""
    c = np.asarray(gram, dtype=np.float64)
    k = c.shape[0]
    rows = np.arange(k)
    sq = np.diag(c).copy()
    var = target_variance(sq, means)
    out = np.empty((k, len(coefs)))
    for s, theta in enumerate(coefs):
        b = c[chosen[:, : s + 1], rows[:, None]]  # (K, s+1) C_{source, t}
        err = np.maximum(sq - (theta * b).sum(1), 0.0)
        out[:, s] = r2_from_error(err, var, sq)
    return out


def _fits(logits: np.ndarray, labels: np.ndarray, chosen: np.ndarray, coefs: list[np.ndarray],
          r2: np.ndarray) -> np.ndarray:
    """(K, m) whether target t's s-source fit meets both criteria (the accuracy is checked only
    where R² already does: replacing a logit costs an (N, s) product per target)."""
    top2 = Top2.of(logits)
    ori = float((top2.pred == labels).mean())
    fits = np.zeros(r2.shape, dtype=bool)
    for t in np.flatnonzero((r2 >= FIT_R2).any(1)):
        src = np.asarray(logits[:, chosen[t]], dtype=np.float64)  # (N, m)
        first = top2.idx1 == t
        other_idx = np.where(first, top2.idx2, top2.idx1)
        other_val = np.where(first, top2.val2, top2.val1)
        for s in np.flatnonzero(r2[t] >= FIT_R2):
            replaced = src[:, : s + 1] @ coefs[s][t]
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
