"""How many sources a dependency needs: best subsets and the relaxed Lasso beside the paper's
CovLasso, as cached stages, and the curve of R² against the number of sources.

The paper's Lasso shrinks its coefficients and, at the α where it keeps a few sources, picks
worse ones than a search for the best few (docs/best-subset.md). This module serves the three
methods side by side, from the Grams alone (the metrics read the stored logits):

* **best subset** (:mod:`engine.core.bestsubset`): for every target, the best dependency with at
  most m sources, m = 1 … M (default 8);
* **relaxed Lasso**: least squares on the CovLasso's support at α (its choice of sources,
  without its shrinkage);
* **Lasso**: the CovLasso itself (:mod:`engine.stages.solutions`, :mod:`engine.stages.alpha_paths`).

API (what the pages call)
-------------------------
``sources_curve(cache, pairing, target, *, max_sources=8, alphas=None) -> SourcesCurve``
    One pairing, one target, one cached call: for m = 1 … M the best subset's sources and
    coefficients (strongest first) with its Table 1 metrics, and the Lasso's and the relaxed
    Lasso's number of sources and R² at every α of the target's α path (the cached
    :mod:`engine.stages.alpha_paths` grid; or at ``alphas``, when given). Draw ``curve.best_r2`` against
    ``curve.m`` and ``curve.lasso_r2`` / ``curve.relaxed_r2`` against ``curve.lasso_n`` /
    ``curve.relaxed_n``. ``curve.sparsest_fit()`` is the smallest m that fits (R² ≥ 0.95 and
    ≤ 0.5 pt of top-1 lost), or None. Milliseconds when cached; a first call solves the
    target's best subsets and α path (well under a second at 1,000 categories).
``solve_best_subsets(cache, pairing, max_sources=8, targets=None) -> BestSubsetResult``
    The best subsets of ``targets`` (default: every target, cached as one entry; a subset is
    read from that entry when it exists, else solved alone and cached under the subset).
    ``result.column(i, m)`` is (sources ascending, coefficients) of the i-th target asked for.
``relaxed_dependencies(cache, pairing, alpha, targets=None) -> RelaxedFits``
    Least squares on the CovLasso's support at ``alpha`` (the solution is the cached one).
``subset_metrics(cache, pairing, targets, coef) -> list[DependencyMetrics]``
    Table 1 metrics of sparse dependencies (columns of ``coef``) from the stored logits.

Every target as a job: ``python -m engine jobs submit best-subsets --model A [--source B]``
(:func:`compute_all_best_subsets`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

from engine.core.analysis import (
    DependencyMetrics,
    dependency_metrics,
    r2_from_error,
    target_variance,
)
from engine.core.bestsubset import (
    DEFAULT_MAX_SOURCES,
    RESULT_ARRAYS,
    BestSubsetResult,
    SubsetConfig,
    best_subsets,
    check_max_sources,
    least_squares_on,
)
from engine.core.covlasso_types import SolverConfig
from engine.core.gram import GramSet
from engine.core.sparse import SparseColumns
from engine.stages.gramsets import load_gramset
from engine.stages.pairing import Pairing
from engine.stages.solutions import load_top2, solve_dependencies, targets_array
from engine.storage.derived import declare_derived
from engine.storage.store import Cache

log = logging.getLogger(__name__)

LAYOUT = 1  # cached best subsets and curves
FIT_R2 = 0.95  # a dependency "fits" at R² ≥ 0.95 …
FIT_LOST = 0.5  # … and costs at most 0.5 pt of top-1 accuracy


# ----------------------------------------------------------------------------- pure


def allowed_sources(gs: GramSet) -> int:
    """How many sources a target may use (all but itself within one model)."""
    return gs.n_sources - (1 if gs.within else 0)


def best_subsets_of(gs: GramSet, max_sources: int, config: SubsetConfig | None = None, targets=None,
                    progress: Callable[[float, str], None] | None = None) -> BestSubsetResult:
    """Best subsets on a Gram set, for every target or for ``targets`` alone (pure)."""
    idx = np.arange(gs.n_targets) if targets is None else np.asarray(targets, dtype=np.int64)
    rhs = gs.rhs if targets is None else gs.rhs_columns(idx)
    return best_subsets(gs.design, rhs, gs.target_sq[idx], max_sources, forbid=gs.forbid(idx), config=config,
                        design_diag=gs.design_diag, check_input=False, progress=progress)


def r2_of_residuals(gs: GramSet, targets, residual) -> np.ndarray:
    """R² ``1 − e_t / Var g_t`` of residuals (any shape (T, …)) of ``targets``."""
    t = np.asarray(targets, dtype=np.int64)
    ysq = gs.target_sq[t]
    var = target_variance(ysq, gs.target_mean[t])
    extra = (1,) * (np.ndim(residual) - 1)
    return r2_from_error(residual, var.reshape(-1, *extra), ysq.reshape(-1, *extra))


@dataclass(frozen=True)
class RelaxedFits:
    """Least squares on the CovLasso's supports (one column per target).

    coef : the refitted coefficients (:class:`SparseColumns`, T columns); a Lasso source that
        is numerically a combination of stronger ones is left out (see
        :func:`engine.core.bestsubset.least_squares_on`).
    residual : (T,) ``E[(g_t − θᵀf)²]``; lasso_sources : (T,) the Lasso's support sizes.
    """

    coef: SparseColumns
    residual: np.ndarray
    lasso_sources: np.ndarray


def relaxed_fits(gs: GramSet, lasso: SparseColumns, targets) -> RelaxedFits:
    """Least squares on the support of each column of ``lasso`` (its targets: ``targets``),
    strongest Lasso coefficient first (pure)."""
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    cols, rows, vals, resid = [], [], [], np.empty(len(targets))
    for i, t in enumerate(targets):
        src, coef = lasso.column(i)
        order = src[np.argsort(-np.abs(coef), kind="stable")]
        kept, theta, resid[i] = least_squares_on(gs.design, gs.rhs_columns([t])[:, 0], float(gs.target_sq[t]), order)
        asc = np.argsort(kept)
        keep = theta[asc] != 0
        cols.append(np.full(int(keep.sum()), i))
        rows.append(kept[asc][keep])
        vals.append(theta[asc][keep])
    coef = SparseColumns.from_entries(np.concatenate(cols + [np.zeros(0, np.int64)]).astype(np.int64),
                                      np.concatenate(rows + [np.zeros(0, np.int64)]),
                                      np.concatenate(vals + [np.zeros(0)]), len(targets), lasso.n_sources)
    return RelaxedFits(coef, resid, lasso.support_sizes.copy())


def strongest_first(sources: np.ndarray, coefs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-np.abs(coefs), kind="stable")
    return np.asarray(sources)[order], np.asarray(coefs)[order]


# ----------------------------------------------------------------------------- cached stages


def _subset_key(pairing: Pairing, solved: int, cfg: SubsetConfig) -> dict:
    return {**pairing.key(), "max_sources": int(solved), "search": cfg.key(), "layout": LAYOUT}




def solve_best_subsets(cache: Cache, pairing: Pairing, max_sources: int = DEFAULT_MAX_SOURCES, targets=None,
                       config: SubsetConfig | None = None,
                       progress: Callable[[float, str], None] | None = None) -> BestSubsetResult:
    """Best subsets with at most 1 … ``max_sources`` sources of ``targets`` (default: every
    target), in that order. Solved up to M = max(``max_sources``, 8) and cached under M, so
    that any ``max_sources`` ≤ 8 is read from the one M = 8 search. The answers for m ≤ 8 of
    a search with M > 8 may differ from it: the backward sweep starts from the M-source fit
    and walks down (then repairs m upwards), so what it finds at each m depends on M; a
    ``max_sources`` > 8 is a search, and an entry, of its own. Every target is one entry (a
    lock, and a second look in it); a subset is read from that entry when it exists, else
    solved alone (the cost of len(targets) searches, not of K) and cached under the subset."""
    cfg = config or SubsetConfig()
    M = check_max_sources(max_sources, pairing.source.k - (1 if pairing.within else 0))
    base = _subset_key(pairing, max(M, DEFAULT_MAX_SOURCES), cfg)
    solved = base["max_sources"]
    every = cache.load_derived("best-subset", base, RESULT_ARRAYS)
    if targets is None:
        if every is None:
            with cache.lock(cache.derived_key("best-subset", base)):
                every = cache.load_derived("best-subset", base, RESULT_ARRAYS)
                if every is None:
                    log.info("best subsets (≤ %d sources) of all %d targets of %s ← %s", solved, pairing.model.k,
                             pairing.model.name, pairing.source.name)
                    res = best_subsets_of(load_gramset(cache, pairing), solved, cfg, None, progress)
                    cache.save_derived("best-subset", base, res.to_arrays(), pairing.names())
                    return res.up_to(M)
        return BestSubsetResult.from_arrays(every[0], pairing.source.k).up_to(M)
    idx = targets_array(pairing, targets)
    if every is not None:
        return BestSubsetResult.from_arrays(every[0], pairing.source.k).select(idx).up_to(M)
    key = {**base, "targets": [int(t) for t in idx]}
    hit = cache.load_derived("best-subset-targets", key, RESULT_ARRAYS)
    if hit is not None:
        return BestSubsetResult.from_arrays(hit[0], pairing.source.k).up_to(M)
    res = best_subsets_of(load_gramset(cache, pairing), solved, cfg, idx)
    cache.save_derived("best-subset-targets", key, res.to_arrays(), pairing.names())
    return res.up_to(M)


def has_all_best_subsets(cache: Cache, pairing: Pairing, config: SubsetConfig | None = None) -> bool:
    """Whether every target's best subsets (m ≤ 8) are cached (cheap: one file test)."""
    return cache.has_derived("best-subset", _subset_key(pairing, DEFAULT_MAX_SOURCES, config or SubsetConfig()))


def compute_all_best_subsets(cache: Cache, pairing: Pairing, max_sources: int = DEFAULT_MAX_SOURCES,
                             config: SubsetConfig | None = None,
                             progress: Callable[[float, str], None] | None = None) -> BestSubsetResult:
    """Every target's best subsets (what the ``best-subsets`` job runs), cached as one entry."""
    return solve_best_subsets(cache, pairing, max_sources, None, config, progress)


def relaxed_dependencies(cache: Cache, pairing: Pairing, alpha: float, targets=None,
                         config: SolverConfig | None = None) -> RelaxedFits:
    """Least squares on the CovLasso's support at ``alpha`` (the cached solution) for
    ``targets`` (default: all). Not cached: a few Gram rows and a small Cholesky per target."""
    res = solve_dependencies(cache, pairing, alpha, config, targets)
    idx = np.arange(pairing.model.k) if targets is None else targets_array(pairing, targets)
    return relaxed_fits(load_gramset(cache, pairing), res.sparse, idx)


def subset_metrics(cache: Cache, pairing: Pairing, targets, coef: SparseColumns) -> list[DependencyMetrics]:
    """Table 1 metrics (replaced logit; R², Acc and Pos Acc) of the columns of ``coef``, whose
    targets are ``targets``, from the stored logits."""
    m, s = pairing.model, pairing.source
    top2 = load_top2(cache, m)
    out = []
    for i, t in enumerate(np.asarray(targets, dtype=np.int64).reshape(-1)):
        out.append(dependency_metrics(m.logits, s.logits, m.labels, int(t), coef.dense_column(i), top2))
    return out


def logits_by_category(store) -> np.ndarray:
    """(K, N) float32 copy of a store's logits, one category per row (what
    :func:`table1_many` reads; make it once when calling it many times)."""
    return np.ascontiguousarray(np.asarray(store.logits, dtype=np.float32).T)


def table1_many(pairing: Pairing, targets, coef: SparseColumns, top2, block: int = 128,
                by_category: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Table 1 metrics of many sparse dependencies at once (columns of ``coef``, targets
    ``targets``), vectorised by blocks of targets: what :func:`subset_metrics` gives one by
    one (r2, acc, ori_acc, pos_acc, ori_pos_acc, abs_err, rel_err; (T,) arrays, nan where
    undefined). For reports over every target (the bench, exports). ``by_category``: the
    (model, source) :func:`logits_by_category`, when the caller holds them."""
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    m, s = pairing.model, pairing.source
    labels = np.asarray(m.labels)
    names = ("r2", "acc", "ori_acc", "pos_acc", "ori_pos_acc", "abs_err", "rel_err")
    out = {k: np.full(len(targets), np.nan) for k in names}
    theta = coef.to_scipy().T.tocsr()  # (T, P)
    target_t, source_t = by_category or (logits_by_category(m), None)
    if source_t is None:
        source_t = target_t if pairing.within else logits_by_category(s)
    ori_acc = 100.0 * float(np.mean(top2.pred == labels))
    for a in range(0, len(targets), block):
        cols = targets[a : a + block]
        fitted = np.asarray(theta[a : a + block] @ source_t, dtype=np.float64).T  # (N, c)
        original = np.asarray(target_t[cols], dtype=np.float64).T
        resid = original - fitted
        out["abs_err"][a : a + block] = np.abs(resid).mean(0)
        out["rel_err"][a : a + block] = 100 * out["abs_err"][a : a + block] / np.maximum(np.abs(original).mean(0), 1e-300)
        var = ((original - original.mean(0)) ** 2).sum(0)
        ok = var > 1e-12 * np.maximum((original**2).sum(0), 1e-300)
        out["r2"][a : a + block] = np.where(ok, 1 - (resid**2).sum(0) / np.where(ok, var, 1.0), np.nan)
        first = top2.idx1[:, None] == cols[None, :]
        other_idx = np.where(first, top2.idx2[:, None], top2.idx1[:, None])
        other_val = np.where(first, top2.val2[:, None], top2.val1[:, None])
        wins = (fitted > other_val) | ((fitted == other_val) & (cols[None, :] < other_idx))
        pred = np.where(wins, cols[None, :], other_idx)
        out["acc"][a : a + block] = 100 * (pred == labels[:, None]).mean(0)
        out["ori_acc"][a : a + block] = ori_acc
        for j, t in enumerate(cols):
            pos = labels == t
            if pos.any():
                out["pos_acc"][a + j] = 100 * float(np.mean(pred[pos, j] == t))
                out["ori_pos_acc"][a + j] = 100 * float(np.mean(top2.pred[pos] == t))
    return out


# ----------------------------------------------------------------------------- the pages' curve


@dataclass(frozen=True)
class SparseFit:
    """One dependency: its sources (strongest first), coefficients and Table 1 metrics."""

    sources: np.ndarray
    coefs: np.ndarray
    metrics: DependencyMetrics

    @property
    def r2(self) -> float:
        return self.metrics.r2

    def fits(self, r2: float = FIT_R2, lost: float = FIT_LOST) -> bool:
        """R² ≥ ``r2`` and top-1 accuracy lost ≤ ``lost`` points."""
        mt = self.metrics
        return bool(mt.r2 >= r2 and mt.ori_acc - mt.acc <= lost)


@dataclass(frozen=True)
class SourcesCurve:
    """R² against the number of sources for one target: best subset, relaxed Lasso, Lasso.

    m : (M,) 1 … M; best : M :class:`SparseFit` (``best[m − 1]``: at most m sources).
    alphas : (A,) the α of the Lasso's path for this target (descending: sources grow).
    lasso_n, lasso_r2 : (A,) the CovLasso's number of sources and R² at each α.
    relaxed_n, relaxed_r2 : (A,) least squares on that support (sources kept, R²).
    R² of the best subsets is from the logits (Table 1's metrics); the Lasso's and the relaxed
    Lasso's from the Grams (equal to float rounding).
    """

    model: str
    source: str
    within: bool
    target: int
    m: np.ndarray
    best: tuple[SparseFit, ...]
    alphas: np.ndarray
    lasso_n: np.ndarray
    lasso_r2: np.ndarray
    relaxed_n: np.ndarray
    relaxed_r2: np.ndarray

    @property
    def best_r2(self) -> np.ndarray:
        return np.array([f.r2 for f in self.best])

    def sparsest_fit(self, r2: float = FIT_R2, lost: float = FIT_LOST) -> int | None:
        """The smallest m whose best subset fits, or None."""
        return next((int(m) for m, f in zip(self.m, self.best) if f.fits(r2, lost)), None)


_METRIC_FIELDS = tuple(f.name for f in fields(DependencyMetrics))
_CURVE_ARRAYS = ("sup", "coef", "metrics", "alphas", "lasso_n", "lasso_r2", "relaxed_n", "relaxed_r2")
BEST_SUBSET = declare_derived("best-subset", RESULT_ARRAYS, LAYOUT, "every target's best subsets of 1 … M sources")
BEST_SUBSET_TARGETS = declare_derived("best-subset-targets", RESULT_ARRAYS, LAYOUT, "some targets' best subsets of 1 … M sources")
SOURCES_CURVE = declare_derived("sources-curve", _CURVE_ARRAYS, LAYOUT, "one target's R² against the number of sources")


def curve_sources(k_source: int, within: bool) -> int:
    """The number of sources the pages' sources curve goes up to (a store of a few categories has fewer)."""
    return max(1, min(DEFAULT_MAX_SOURCES, k_source - (1 if within else 0)))


def sources_curve(cache: Cache, pairing: Pairing, target: int, *, max_sources: int = DEFAULT_MAX_SOURCES,
                  alphas=None, config: SubsetConfig | None = None,
                  solver: SolverConfig | None = None) -> SourcesCurve:
    """The target's :class:`SourcesCurve` (see the module docstring), cached per pairing,
    target, M and α grid."""
    from engine.stages.alpha_paths import path_spec, target_paths

    cfg = config or SubsetConfig()
    M = check_max_sources(max_sources, pairing.source.k - (1 if pairing.within else 0))
    t = int(targets_array(pairing, [target])[0])
    spec = path_spec(cache, pairing, alphas, solver)
    key = {**_subset_key(pairing, M, cfg), "target": t, "path": spec.key()}
    hit = cache.load_derived("sources-curve", key, _CURVE_ARRAYS)
    if hit is not None:
        return _curve_from_arrays(hit[0], pairing, t)
    best = solve_best_subsets(cache, pairing, M, [t], cfg)
    cols = best.coef.select(np.arange(M))
    metrics = subset_metrics(cache, pairing, np.full(M, t), cols)
    path = target_paths(cache, spec, [t])
    gs = load_gramset(cache, pairing)
    steps = path.alpha_indices(t)
    lasso = SparseColumns.concat([SparseColumns.from_dense(path.coef_vector(t, a)[:, None]) for a in steps]) \
        if len(steps) else SparseColumns.empty(0, pairing.source.k)
    relaxed = relaxed_fits(gs, lasso, np.full(len(steps), t))
    sup = np.full((M, M), -1, dtype=np.int64)
    coef = np.zeros((M, M))
    for m in range(M):
        s, c = strongest_first(*cols.column(m))
        sup[m, : len(s)], coef[m, : len(s)] = s, c
    arrays = {"sup": sup, "coef": coef,
              "metrics": np.array([[getattr(mt, f) for f in _METRIC_FIELDS] for mt in metrics], dtype=np.float64),
              "alphas": path.alphas[steps], "lasso_n": lasso.support_sizes.astype(np.int64),
              "lasso_r2": path.r2_of(t).astype(np.float64), "relaxed_n": relaxed.coef.support_sizes.astype(np.int64),
              "relaxed_r2": r2_of_residuals(gs, np.full(len(steps), t), relaxed.residual)}
    cache.save_derived("sources-curve", key, arrays, {**pairing.names(), "target": t})
    return _curve_from_arrays(arrays, pairing, t)


def _curve_from_arrays(a: dict, pairing: Pairing, target: int) -> SourcesCurve:
    sup, coef, met = np.asarray(a["sup"]), np.asarray(a["coef"]), np.asarray(a["metrics"])
    best = []
    for m in range(len(sup)):
        n = int((sup[m] >= 0).sum())
        values = {f: float(v) for f, v in zip(_METRIC_FIELDS, met[m])}
        values["n_pos"] = int(values["n_pos"])
        best.append(SparseFit(sup[m, :n].copy(), coef[m, :n].copy(), DependencyMetrics(**values)))
    return SourcesCurve(pairing.model.name, pairing.source.name, pairing.within, target, np.arange(1, len(sup) + 1),
                        tuple(best), np.asarray(a["alphas"]), np.asarray(a["lasso_n"]), np.asarray(a["lasso_r2"]),
                        np.asarray(a["relaxed_n"]), np.asarray(a["relaxed_r2"]))


def opening_sparse_example(cache: Cache, pairing: Pairing, result, gs: GramSet, prefer: np.ndarray | None = None,
                           lost: float | None = None) -> tuple[int, int] | None:
    """(target, m) where a page opens on the best-subset view: a category (``prefer`` first) that
    2 … 4 sources fit at R² ≥ 0.95 with top-1 accuracy kept (at most ``lost`` points:
    :data:`engine.stages.recommend.SOURCES_FIT_LOST`), from every target's best subsets
    (``result``, the ``best-subsets`` job's); a few candidates checked on the logits."""
    from engine.stages.recommend import SOURCES_FIT_LOST, clear_sparse_example, recommend_sources

    lost = SOURCES_FIT_LOST if lost is None else lost
    rec = recommend_sources(result.residual, gs.target_sq, gs.target_mean)

    def keeps_accuracy(target: int, m: int) -> bool:
        (metrics,) = subset_metrics(cache, pairing, [target], result.select([target]).at(m))
        return metrics.ori_acc - metrics.acc <= lost

    return clear_sparse_example(rec, keeps_accuracy, prefer)
