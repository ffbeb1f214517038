"""What a dependency means: Table 1 metrics, Fig. 3 data, Conjecture 1, redundancy, graphs.

All functions are pure (arrays in, numbers out); reading stores and caching happen in
:mod:`engine.stages.solutions` and :mod:`engine.stages.alpha_paths`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import networkx as nx
import numpy as np

from engine.core.sparse import SparseColumns
from engine.errors import InvalidInputError

# ----------------------------------------------------------------------------- Table 1


@dataclass(frozen=True)
class DependencyMetrics:
    """The paper's Table 1 for one target: replace f_t by θᵀg, keep every other logit."""

    abs_err: float  # mean_x |f_t − θᵀg|
    rel_err: float  # abs_err / mean_x |f_t|, in %
    acc: float  # top-1 accuracy (%) over all samples with the replaced logit
    ori_acc: float  # the same with the original logit
    pos_acc: float  # top-1 accuracy (%) on samples labelled t, replaced logit (nan if none)
    ori_pos_acc: float  # the same, original logit
    n_pos: int  # samples labelled t
    # 1 − Σ(f_t − θᵀg)² / Σ(f_t − mean f_t)²: the share of the logit's variance over the samples
    # that the dependency explains. Unlike Rel Err it ignores where the logit sits (softmax
    # ignores a per-sample offset, so each network's is arbitrary). nan when f_t is constant.
    r2: float = float("nan")

    def as_dict(self) -> dict:
        return asdict(self)

    def as_json(self) -> dict:
        """The fields for a JSON report: nan (no positive sample, a constant logit) becomes
        null, never NaN, and an undefined ``r2`` comes with ``r2_reason``."""
        out = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in asdict(self).items()}
        if self.r2_reason:
            out["r2_reason"] = self.r2_reason
        return out

    @property
    def r2_reason(self) -> str | None:
        """Why ``r2`` is undefined (None when it is defined)."""
        if np.isnan(self.r2):
            return "the target's logit is constant over the samples: R² (explained variance) is undefined"
        return None


def r_squared(original: np.ndarray, replaced: np.ndarray) -> float:
    """``1 − Σ(y − ŷ)² / Σ(y − ȳ)²`` in float64; nan when ``y`` is constant (no variance to explain).

    "Constant" allows for rounding: a variance below 1e-12 of E[y²] (a spread below 1e-6 of
    the logit's size, a few float32 steps) is none, as in :func:`r2_from_error`.
    """
    y = np.asarray(original, dtype=np.float64)
    resid = float(np.sum((y - np.asarray(replaced, dtype=np.float64)) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    if not total > 1e-12 * max(float(np.sum(y * y)), 1e-300):
        return float("nan")
    return 1.0 - resid / total


def _pct(mask: np.ndarray) -> float:
    return float(100.0 * mask.mean()) if mask.size else float("nan")


@dataclass(frozen=True)
class Top2:
    """Per sample, the two largest logits and their categories (for fast replaced argmaxes)."""

    idx1: np.ndarray
    val1: np.ndarray
    idx2: np.ndarray
    val2: np.ndarray
    pred: np.ndarray  # argmax of the original logits

    @classmethod
    def of(cls, logits: np.ndarray, block_bytes: int = 64 << 20) -> Top2:
        """Two argmax passes (ties to the lower index, like np.argmax): ~10× faster than a
        partition over 1,000 categories (0.31 s → 0.03 s for 8,000 samples), which the
        dashboard's first page waits for. By blocks of rows: the copy the second pass needs
        is one block (~64 MiB), not the logits (1.75 GB at 21,843 categories)."""
        n = logits.shape[0]
        step = max(1, block_bytes // max(logits.shape[1] * logits.dtype.itemsize, 1))
        idx1, idx2 = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
        val1, val2 = np.empty(n), np.empty(n)
        for s in range(0, n, step):
            block = np.array(logits[s : s + step], copy=True)
            rows = np.arange(len(block))
            i1 = np.argmax(block, axis=1)
            val1[s : s + step] = block[rows, i1]
            block[rows, i1] = -np.inf
            i2 = np.argmax(block, axis=1)
            idx1[s : s + step], idx2[s : s + step], val2[s : s + step] = i1, i2, block[rows, i2]
        return cls(idx1, val1, idx2, val2, idx1)


def dependency_metrics(
    target_logits: np.ndarray,
    source_logits: np.ndarray,
    labels: np.ndarray,
    target: int,
    coef: np.ndarray,
    top2: Top2 | None = None,
) -> DependencyMetrics:
    """Table 1 metrics of the dependency ``f_target ≈ source_logits @ coef``.

    target_logits: (N, K_t) the model whose category ``target`` is replaced;
    source_logits: (N, K_s) the logits it is predicted from (the same array within a model);
    coef: (K_s,) the dependency's coefficients; top2: ``Top2.of(target_logits)``, pass it
    when evaluating many targets of the same model.
    """
    n, k_t = target_logits.shape
    if not 0 <= target < k_t:
        raise InvalidInputError(f"target {target} is out of range [0, {k_t - 1}]")
    if source_logits.shape[0] != n or coef.shape != (source_logits.shape[1],):
        raise InvalidInputError("source logits / coefficients do not match the target logits")
    top2 = top2 or Top2.of(target_logits)
    nz = np.flatnonzero(coef)
    original = target_logits[:, target].astype(np.float64)
    replaced = source_logits[:, nz].astype(np.float64) @ coef[nz]
    abs_err = float(np.mean(np.abs(original - replaced)))
    rel_err = float(100.0 * abs_err / max(np.mean(np.abs(original)), 1e-300))
    first_is_t = top2.idx1 == target
    other_idx = np.where(first_is_t, top2.idx2, top2.idx1)
    other_val = np.where(first_is_t, top2.val2, top2.val1)
    # argmax with the replaced logit (ties go to the lower index, like np.argmax)
    wins = (replaced > other_val) | ((replaced == other_val) & (target < other_idx))
    pred_rep = np.where(wins, target, other_idx)
    pos = labels == target
    return DependencyMetrics(
        abs_err=abs_err,
        rel_err=rel_err,
        acc=_pct(pred_rep == labels),
        ori_acc=_pct(top2.pred == labels),
        pos_acc=_pct(pred_rep[pos] == target),
        ori_pos_acc=_pct(top2.pred[pos] == target),
        n_pos=int(pos.sum()),
        r2=r_squared(original, replaced),
    )


def prediction_error(design, rhs_col, target_sq, coef) -> float:
    """``e_t = E[(g_t − θᵀf)²] = E[g_t²] − 2θᵀb + θᵀGθ`` from the Grams alone."""
    return float(max(target_sq - 2 * coef @ rhs_col + coef @ design @ coef, 0.0))


def target_variance(target_sq, target_mean) -> np.ndarray:
    """``Var g_t = E[g_t²] − (E g_t)²`` per target, never negative."""
    return np.clip(np.asarray(target_sq, np.float64) - np.asarray(target_mean, np.float64) ** 2, 0.0, None)


def r2_from_error(error, variance, target_sq) -> np.ndarray:
    """``1 − e_t / Var g_t`` (the R² of :func:`r_squared`, from Gram quantities); nan where the
    target's logit has no variance (below 1e-12 of its E[g_t²]: rounding, not spread)."""
    error, variance = np.asarray(error, np.float64), np.asarray(variance, np.float64)
    ok = variance > 1e-12 * np.maximum(np.asarray(target_sq, np.float64), 1e-300)
    return np.where(ok, 1.0 - np.clip(error, 0.0, None) / np.where(ok, variance, 1.0), np.nan)


def sparse_fit(gs, coef: SparseColumns, targets) -> tuple[np.ndarray, np.ndarray]:
    """(relative error ``e_t / E[g_t²]``, R²) of the dependencies of ``targets`` (``coef``'s
    columns), from the Grams alone (``gs``: a :class:`engine.core.gram.GramSet`):
    ``e_t = E[g²] − 2θᵀb + θᵀGθ`` with θ sparse (a few rows of the Gram each);
    R² = ``1 − e_t / Var g_t`` (nan where the logit is constant)."""
    targets = np.asarray(targets)
    err = np.empty(coef.n_targets)
    for i, t in enumerate(targets):
        idx, val = coef.column(i)
        b = gs.rhs_columns([t])[idx, 0]
        quad = val @ np.asarray(gs.design[np.ix_(idx, idx)]) @ val if len(idx) else 0.0
        err[i] = max(gs.target_sq[t] - 2 * val @ b + quad, 0.0)
    ysq = gs.target_sq[targets]
    r2 = r2_from_error(err, target_variance(ysq, gs.target_mean[targets]), ysq)
    return err / np.maximum(ysq, 1e-300), r2


# ----------------------------------------------------------------------------- Fig. 3, Conjecture 1


def covariance_vs_coef(rhs_col: np.ndarray, coef: np.ndarray, target: int | None) -> dict:
    """Data of the paper's Fig. 3 for one target: C_tj against θ_j for every source j ≠ t."""
    keep = np.ones(coef.shape[0], dtype=bool)
    if target is not None:
        keep[target] = False
    idx = np.flatnonzero(keep)
    return {"source": idx, "covariance": rhs_col[idx], "coef": coef[idx]}


@dataclass(frozen=True)
class ScreeningCheck:
    """How Conjecture 1 (|C_tj| < α ⇒ θ_j = 0) holds over the given targets.

    A "screened" feature is one the rule predicts to be zero. precision: screened features
    that really are zero / screened; recall: zero features that were screened / zeros.
    violations: screened features that are in fact non-zero (the rule is unsafe there).
    """

    alpha: float
    screened: int
    zeros: int
    violations: int
    precision: float
    recall: float


def screening_check(rhs: np.ndarray, coef: np.ndarray, alpha: float, within: bool) -> ScreeningCheck:
    """Evaluate Conjecture 1 against actual solutions (rhs, coef: (P, T))."""
    screened = np.abs(rhs) < alpha
    zero = coef == 0
    if within:
        np.fill_diagonal(screened, False)
        np.fill_diagonal(zero, False)
    n_screened, n_zero = int(screened.sum()), int(zero.sum())
    both = int((screened & zero).sum())
    return ScreeningCheck(
        alpha=float(alpha),
        screened=n_screened,
        zeros=n_zero,
        violations=n_screened - both,
        precision=both / n_screened if n_screened else 1.0,
        recall=both / n_zero if n_zero else 1.0,
    )


# ----------------------------------------------------------------------------- redundancy


def _scaled_eigh(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 eigendecomposition of the unit-diagonal scaling ``S = D^{-1/2} C D^{-1/2}``.

    Returns (√diag C, λ ascending, U). The scaling makes every category weigh the same
    whatever its logit's size, so one relative cut-off on λ fits all of them.
    """
    c = np.asarray(gram, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise InvalidInputError(f"the Gram must be square; got shape {c.shape}")
    d = np.sqrt(np.clip(np.diag(c), 1e-300, None))
    s = c / d[:, None] / d[None, :]
    lam, u = np.linalg.eigh((s + s.T) / 2)
    return d, lam, u


@dataclass(frozen=True)
class Redundancy:
    """Redundancy ``r_i`` of every category, with the resolution it was computed at.

    r: (K,) r_i, float64, computed with the floor ρ (see :func:`redundancy`): > 0, and
        sorting by it is meaningful for every category, exactly redundant or not.
    exact: (K,) True where r_i is 0 at the data's precision — the category is a linear
        combination of the others up to rounding, and ``r`` is set by the floor ρ.
    null_share: (K,) ``‖P_null e_i‖²``, the share of category i's axis that lies in the
        numerical null space of the scaled Gram (eigenvalues ≤ ρ); the paper's geometric
        view: the closer the axis to the null space, the more redundant.
    floor: ρ, the Tikhonov floor in the scaled Gram's units (unit diagonal).
    rank: number of eigenvalues of the scaled Gram above ρ (the dimensions the logits span).
    rel_precision: relative accuracy of ``r`` as computed (float64 eigendecomposition).
    """

    r: np.ndarray
    exact: np.ndarray
    null_share: np.ndarray
    floor: float
    rank: int
    rel_precision: float


def redundancy(
    gram: np.ndarray, *, data_eps: float = float(np.finfo(np.float32).eps), margin: float = 1e3
) -> Redundancy:
    """Redundancy ``r_i = 1 / (C_ii (C⁻¹)_ii)`` of every category, computed stably.

    ``r_i`` is the minimal relative prediction error of category i from all the others,
    ``min_θ E[(f_i − θᵀf_{−i})²] / E[f_i²]`` (paper §2.2). Inverting C is unstable (the
    paper's Remark 2): logits are an affine image of the penultimate features, so when there
    are more categories than feature dimensions C is singular up to rounding and every
    category is an exact combination of the others. We work on the unit-diagonal scaling
    ``S = D^{-1/2} C D^{-1/2}`` (the quantity is scale-invariant) and its float64
    eigendecomposition ``S = U diag(λ) Uᵀ``; eigenvalues below a floor ρ cannot be told from
    0 and are raised to it (a rank-revealing regularisation)::

        r_i = 1 / Σ_k u_ik² / max(λ_k, ρ)

    ρ is the larger of ``margin · K·ε·λ_max`` (a bound on the rounding of S and of its
    eigendecomposition: a perturbation η of S moves every term by at most η/ρ relative, so
    ``r`` is accurate to ``1/margin`` relative — ``rel_precision``) and ``(4·data_eps)²`` (the
    variance of the logits' own rounding relative to their power: float32 or float16 stores).
    A category with no weight on eigenvalues below ρ gets its exact r_i. An exactly redundant
    one gets ``≈ ρ / null_share``: no longer noise but the paper's geometry (how much of its
    axis lies in the null space of C), so sorting by ``r`` stays meaningful, with ties only
    where the geometry is the same. ``exact`` marks categories whose sum is more than half
    made of the floored directions.
    """
    _, lam, u = _scaled_eigh(gram)
    lam_max = float(max(lam.max(), 1e-300))
    rounding = len(lam) * np.finfo(np.float64).eps * lam_max
    floor = max(margin * rounding, (4.0 * data_eps) ** 2)
    below = lam <= floor
    weights = u**2 / np.maximum(lam, floor)
    total = weights.sum(1)
    r = np.clip(1.0 / total, 0.0, 1.0)
    exact = weights[:, below].sum(1) > 0.5 * total
    null_share = (u[:, below] ** 2).sum(1)
    return Redundancy(r=r, exact=exact, null_share=null_share, floor=float(floor), rank=int((~below).sum()),
                      rel_precision=float(rounding / floor))


class LeastSquaresFloor:
    """The dense least-squares fit of every target from *all* sources: the limit α → 0.

    ``coef(t)`` minimises ``E[(g_t − θᵀf)²]`` with no sparsity (the minimum-norm solution
    where the sources' Gram is singular; its fitted values, hence Abs/Rel Err and accuracy,
    are those of every least-squares solution, and of the CovLasso as α → 0). Between two
    models it says how far *any* dependency can go: a target whose floor is 20 % Rel Err has
    no α with 5 %. Built once per pairing from the design's float64 eigendecomposition
    (unit-diagonal scaling); eigenvalues under ``K·ε·λ_max·margin`` count as zero.
    """

    def __init__(self, design: np.ndarray, rhs: np.ndarray, margin: float = 1e3):
        self._d, lam, self._u = _scaled_eigh(design)
        if np.shape(rhs)[0] != len(lam):
            raise InvalidInputError(f"rhs must have {len(lam)} rows (one per source); got shape {np.shape(rhs)}")
        cut = margin * len(lam) * np.finfo(np.float64).eps * max(float(lam.max()), 1e-300)
        self._inv = np.where(lam > cut, 1.0 / np.where(lam > cut, lam, 1.0), 0.0)
        self.rank = int((lam > cut).sum())
        self._rhs = rhs

    def coef(self, target: int) -> np.ndarray:
        """(P,) least-squares coefficients of target ``target`` on every source."""
        b = np.asarray(self._rhs[:, target], dtype=np.float64) / self._d
        return (self._u @ (self._inv * (self._u.T @ b))) / self._d


# ----------------------------------------------------------------------------- graphs


def top_edges(coef: SparseColumns, targets, top_k: int | None, min_coef: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source, target, coef) of each column's ``top_k`` largest |θ| ≥ ``min_coef``
    (``coef``'s columns are ``targets``, in order), strongest first within a column."""
    col = coef.column_index()
    keep = np.abs(coef.values) >= max(min_coef, 1e-300)
    col, src, val = col[keep], coef.sources[keep], coef.values[keep]
    order = np.lexsort((-np.abs(val), col))
    col, src, val = col[order], src[order], val[order]
    if top_k is not None and len(col):
        rank = np.arange(len(col)) - np.searchsorted(col, col, side="left")
        sel = rank < top_k
        col, src, val = col[sel], src[sel], val[sel]
    return src, np.asarray(targets)[col], val


def dependency_graph(
    coef: SparseColumns | np.ndarray,
    target_names: list[str],
    source_names: list[str],
    *,
    targets: list[int] | None = None,
    held=None,
    min_abs_coef: float = 0.0,
    top_k: int | None = None,
    between: bool = False,
) -> nx.DiGraph:
    """Directed graph source → target, edge attribute ``coef`` (the dependency weight).

    ``coef``: sparse columns for the targets ``held`` (default: every column, in order), or a
    dense (P, T) matrix. Nodes are ``("t", i)`` for targets and ``("s", j)`` for sources when
    the models differ (``between=True``); within one model both are the category index. Each
    target of ``targets`` (default: all held) keeps its ``top_k`` largest |coef| sources with
    |coef| ≥ ``min_abs_coef``.
    """
    if isinstance(coef, np.ndarray):
        coef = SparseColumns.from_dense(coef)
    held = np.arange(coef.n_targets) if held is None else np.asarray(held)
    cols = np.arange(len(held)) if targets is None else np.searchsorted(held, np.asarray(targets, dtype=np.int64))
    src, tgt, val = top_edges(coef.select(cols), held[cols], top_k, min_abs_coef)
    graph = nx.DiGraph()
    for t in held[cols]:
        graph.add_node(("t", int(t)) if between else int(t), name=target_names[t], role="target")
    for j, t, c in zip(src.tolist(), tgt.tolist(), val.tolist()):
        snode, tnode = (("s", j), ("t", t)) if between else (j, t)
        if snode not in graph:
            graph.add_node(snode, name=source_names[j], role="source")
        graph.add_edge(snode, tnode, coef=float(c))
    return graph
