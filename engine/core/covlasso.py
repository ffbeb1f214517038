"""The Covariance Lasso, solved from the Gram alone, for every target at once.

For target ``t`` with right-hand side ``b = E[f g_t]`` and design Gram ``G = E[f fᵀ]``::

    θ*(α) = argmin_θ  ½ θᵀGθ − bᵀθ + ½ E[g_t²] + α ‖θ‖₁          (θ_t = 0 within one model)

which is exactly the objective of ``sklearn.linear_model.Lasso(alpha=α, fit_intercept=False)``
fitted on the raw logits (``½N⁻¹‖y − Xθ‖² + α‖θ‖₁``), so the paper's α values carry over.

The batched torch kernels that solve it live in :mod:`engine.core.covlasso_kernels`, imported
only when something is solved: reading cached solutions and paths needs numpy alone (the
dashboard starts without importing torch).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.core.covlasso_types import (  # noqa: F401 - the solver's public vocabulary, re-exported
    RESOLUTION,
    ConvergenceWarning,
    CovLassoResult,
    SolverConfig,
    alpha_max,
    check_alpha,
    check_problem,
    check_resolution,
    max_correlation,
)
from engine.core.sparse import SparseColumns
from engine.errors import InvalidInputError

log = logging.getLogger(__name__)


def _forbid_for(within: bool, forbid, n_targets: int, n_sources: int):
    if within:
        if n_targets != n_sources:
            raise InvalidInputError("within one model the Gram is K×K and every category is a target")
        return np.arange(n_targets)
    return forbid


def _scale(design: np.ndarray, target_sq: np.ndarray, design_diag: np.ndarray | None) -> float:
    """The problem's largest E[f²]. ``design_diag``: the design's diagonal when the caller has
    it (a memory-mapped Gram's diagonal is P reads, one per page: at 21,843 categories they
    would map gigabytes of the file into the process)."""
    diag = np.diagonal(design) if design_diag is None else design_diag
    return max(float(np.max(diag, initial=0.0)), float(np.max(target_sq, initial=0.0)))


def solve_covlasso(
    design,
    rhs,
    target_sq,
    alpha,
    *,
    within: bool = False,
    forbid=None,
    config: SolverConfig | None = None,
    warm_start=None,
    check_input: bool = True,
    design_diag: np.ndarray | None = None,
) -> CovLassoResult:
    """Solve the CovLasso for every target (column of ``rhs``) at once.

    Parameters
    ----------
    design : (P, P) array — ``E[f fᵀ]`` of the source model (a read-only memory map is fine:
        only the rows a solve needs are read).
    rhs : (P, T) array — ``E[f g_t]`` per target (``design`` itself within one model).
    target_sq : (T,) array — ``E[g_t²]`` (the diagonal of ``design`` within one model).
    alpha : float or (T,) array — the L1 weight, sklearn's ``Lasso(alpha=…)``.
    within : if True, P == T and target t may not use itself (θ_t = 0).
    forbid : (T,) int, optional — the source target t may not use (a subset of one model's
        targets: ``forbid = targets``, ``rhs = design[:, targets]``).
    warm_start : optional (P, T) coefficients, :class:`~engine.core.sparse.SparseColumns` or a
        previous :class:`CovLassoResult` to start from (e.g. the previous α of a path).
    check_input : False skips the O(P²) scan of ``design`` (a Gram checked when built).
    design_diag : (P,) the design's diagonal, when known (spares a strided read of it).

    Returns a :class:`CovLassoResult`; warns with :class:`ConvergenceWarning` for targets
    whose duality gap is still above ``tol · E[g_t²]``.
    """
    cfg = config or SolverConfig()
    design, rhs, target_sq, forbid = check_problem(
        design, rhs, target_sq, _forbid_for(within, forbid, np.shape(rhs)[1], np.shape(design)[0]),
        check_design=check_input)
    T = rhs.shape[1]
    if np.ndim(alpha) == 0:
        alpha = check_alpha(alpha)
    alphas = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (T,)).copy()
    for a in np.unique(alphas):
        check_alpha(a)
    check_resolution(alphas, _scale(design, target_sq, design_diag))
    from engine.core.covlasso_kernels import solve_chunks  # torch: imported only to solve

    res = solve_chunks(design, rhs, target_sq, alphas, max_correlation(rhs, forbid), forbid, warm_start, cfg)
    _warn_unconverged(res, target_sq, cfg)
    return res


def _warn_unconverged(res: CovLassoResult, target_sq: np.ndarray, cfg: SolverConfig) -> None:
    if res.converged.all():
        return
    gaps = res.duality_gap
    worst = int(np.argmax(gaps / np.maximum(target_sq, 1e-300)))
    warnings.warn(
        f"CovLasso did not converge for {int((~res.converged).sum())} of {len(gaps)} targets "
        f"(worst: target {worst}, gap {gaps[worst]:.3g} > tol·E[g²] = "
        f"{cfg.tol * target_sq[worst]:.3g}); raise max_outer or check for duplicated "
        "categories",
        ConvergenceWarning,
        stacklevel=3,
    )


# ----------------------------------------------------------------------------- α paths


@dataclass(frozen=True)
class CovLassoPath:
    """Exact solutions of T targets on a descending grid of α, like sklearn's ``lasso_path``.

    A target's path is a prefix of the grid: it ends after the first α at which the target
    has more than ``max_sources`` sources (when a cap was given), or covers every α.

    alphas : (A,) the grid, descending.
    coef : :class:`SparseColumns` with A·T columns; column ``t·A + a`` is target t at
        ``alphas[a]`` (empty beyond the target's path).
    gaps : (T, A) duality gaps (NaN beyond a target's path).
    n_alphas : (T,) how many α of the grid each target's path covers.
    alpha_max : (T,) each target's α_max (above it, θ = 0).
    """

    alphas: np.ndarray
    coef: SparseColumns
    gaps: np.ndarray
    n_alphas: np.ndarray
    alpha_max: np.ndarray

    @property
    def n_targets(self) -> int:
        return len(self.n_alphas)


def check_grid(alphas) -> np.ndarray:
    """A grid of α, validated and sorted descending."""
    grid = np.sort(np.asarray(alphas, dtype=np.float64).reshape(-1))[::-1]
    if grid.size == 0:
        raise InvalidInputError("the α grid is empty; give at least one α")
    for a in grid:
        check_alpha(a)
    return grid.copy()


def covlasso_path(
    design,
    rhs,
    target_sq,
    alphas,
    *,
    forbid=None,
    config: SolverConfig | None = None,
    max_sources: int | None = None,
    check_input: bool = True,
    design_diag: np.ndarray | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> CovLassoPath:
    """The α path of every target (column of ``rhs``): a pure function of the Grams.

    Each α is warm-started from the previous one (see :func:`solve_covlasso` for the
    arguments); a target leaves the path after the first α at which it has more than
    ``max_sources`` sources. Solving a subset of one model's targets (``rhs = design[:, S]``,
    ``forbid = S``) gives what the full solve gives for them: the solver treats every target
    on its own, and every solution is certified by its duality gap.
    """
    cfg = config or SolverConfig()
    grid = check_grid(alphas)
    design, rhs, target_sq, forbid = check_problem(design, rhs, target_sq, forbid, check_design=check_input)
    T, A = rhs.shape[1], len(grid)
    amax = max_correlation(rhs, forbid)
    check_resolution(grid, _scale(design, target_sq, design_diag))
    from engine.core.covlasso_kernels import solve_path_chunks  # torch: imported only to solve

    per_alpha = solve_path_chunks(design, rhs, target_sq, grid, amax, forbid, cfg, max_sources, progress)
    pieces, keys = [], []
    gaps = np.full((T, A), np.nan)
    n_alphas = np.zeros(T, dtype=np.int64)
    for a, parts in enumerate(per_alpha):
        for targets, res in parts:
            _warn_unconverged(res, target_sq[targets], cfg)
            pieces.append(res.sparse)
            keys.append(targets * A + a)
            gaps[targets, a] = res.duality_gap
            n_alphas[targets] = a + 1
    return CovLassoPath(grid, _by_target(pieces, keys, T * A), gaps, n_alphas, amax)


def _by_target(pieces: list[SparseColumns], keys: list[np.ndarray], n_columns: int) -> SparseColumns:
    """The per-α pieces reordered into columns ``t·A + a`` (missing ones empty)."""
    n_sources = pieces[0].n_sources
    allcols = SparseColumns.concat(pieces + [SparseColumns.empty(1, n_sources)])
    where = np.full(n_columns, allcols.n_targets - 1, dtype=np.int64)  # default: the empty column
    where[np.concatenate(keys)] = np.arange(allcols.n_targets - 1)
    return allcols.select(where)


class CovLasso:
    """scikit-learn-style estimator over :func:`solve_covlasso`.

    ``CovLasso(alpha).fit(F)`` finds every category's dependency on the others within one
    model (row t of ``coef_`` predicts column t of F, with ``coef_[t, t] = 0``);
    ``fit(F, G)`` predicts every column of G from all columns of F (between models).
    ``coef_`` has sklearn's multi-output shape (n_targets, n_features); the objective is
    ``Lasso(alpha, fit_intercept=False)``'s, fitted on the raw logits.
    """

    def __init__(self, alpha: float = 1.0, *, tol: float = 1e-7, device: str = "cpu"):
        self.alpha = alpha
        self.tol = tol
        self.device = device

    def get_params(self, deep: bool = True) -> dict:
        return {"alpha": self.alpha, "tol": self.tol, "device": self.device}

    def set_params(self, **params) -> CovLasso:
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def fit(self, X, Y=None) -> CovLasso:
        from engine.core.gram import (
            GramAccumulator,  # pure accumulation: the solver never reads a store
        )

        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise InvalidInputError(f"X must be 2-D (samples × categories); got shape {X.shape}")
        within = Y is None
        if within:
            acc = GramAccumulator(X.shape[1])
            acc.update(X)
            G = acc.gram()
            rhs, ysq = G, np.diag(G).copy()
        else:
            Y = np.asarray(Y, dtype=np.float64)
            if Y.ndim != 2 or Y.shape[0] != X.shape[0]:
                raise InvalidInputError(f"Y must be 2-D with {X.shape[0]} rows; got shape {Y.shape}")
            acc = GramAccumulator(X.shape[1], Y.shape[1])
            acc.update(X, Y)
            G, rhs, ysq = acc.gram(), acc.cross_gram(), acc.target_sq()
        cfg = SolverConfig(tol=self.tol, device=self.device)
        res = solve_covlasso(G, rhs, ysq, self.alpha, within=within, config=cfg)
        self.coef_ = res.coef.T
        self.dual_gap_ = res.duality_gap
        self.n_iter_ = res.n_iter
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) @ self.coef_.T
