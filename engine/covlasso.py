"""The Covariance Lasso, solved from the Gram alone, for every target at once.

For target ``t`` with right-hand side ``b = E[f g_t]`` and design Gram ``G = E[f fᵀ]``::

    θ*(α) = argmin_θ  ½ θᵀGθ − bᵀθ + ½ E[g_t²] + α ‖θ‖₁          (θ_t = 0 within one model)

which is exactly the objective of ``sklearn.linear_model.Lasso(alpha=α, fit_intercept=False)``
fitted on the raw logits (``½N⁻¹‖y − Xθ‖² + α‖θ‖₁``), so the paper's α values carry over.

The batched torch kernels that solve it live in :mod:`engine.covlasso_kernels`, imported
only when something is solved: reading cached solutions and paths needs numpy alone (the
dashboard starts without importing torch).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np

from engine.errors import InvalidInputError

_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d{1,2})?)$")


class ConvergenceWarning(UserWarning):
    """Some targets did not reach the requested duality gap within the iteration budget."""


@dataclass(frozen=True)
class SolverConfig:
    """How the CovLasso is solved; part of every cached solution's key."""

    tol: float = 1e-7  # stop when duality gap ≤ tol · E[g_t²] (sklearn's convention)
    max_outer: int = 50  # working-set rounds (each ends with a full KKT/gap check)
    max_newton: int = 30  # active-set Newton steps per round before the monotone method
    # steps of the monotone active-set method (where Newton stalls), per feature of the
    # working set; 0 turns it off (then stalled targets wait for the next round)
    monotone_steps: int = 4
    min_working_set: int = 24  # features per target in the first working set
    chunk: int = 1024  # targets solved together (bounds memory: chunk × P float64)
    device: str = "cpu"
    # CPU threads for the solve. The work is many small batched ops; measured here (torch
    # 2.14 + MKL, 2 cores) one thread is faster: a threaded batched 36×36 matrix-vector
    # product took 16 ms against 0.14 ms on one thread when the other core was busy, and
    # MKL's threaded batched Cholesky above 128×128 was 15–70× slower than one thread.
    threads: int = 1

    def __post_init__(self) -> None:
        tol = self.tol
        if isinstance(tol, bool) or not isinstance(tol, int | float) or not np.isfinite(tol) or tol <= 0:
            raise InvalidInputError(f"tol must be a finite number > 0 (default 1e-7); got {tol!r}")
        for name in ("max_outer", "max_newton", "monotone_steps", "min_working_set", "chunk", "threads"):
            value, low = getattr(self, name), 0 if name == "monotone_steps" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InvalidInputError(f"{name} must be an integer >= {low}; got {value!r}")
        if not isinstance(self.device, str) or not _DEVICE_RE.match(self.device):
            raise InvalidInputError(f"device must be 'cpu', 'cuda' or 'cuda:N'; got {self.device!r}")

    def key(self) -> dict:
        """The settings that change the result (device and chunking do not)."""
        d = asdict(self)
        for name in ("device", "chunk", "threads"):
            d.pop(name)
        return d


@dataclass
class CovLassoResult:
    """Solutions for every target at one α (or one α per target).

    The coefficients are kept sparse, column by column (targets are columns):
    target t's sources are ``sources[offsets[t]:offsets[t+1]]`` with ``values`` alongside.
    ``coef`` gives the dense (P, T) matrix (built on first use: avoid it when P·T is large).
    duality_gap: (T,) sklearn's gap, in the normalised units of the objective above.
    n_iter: (T,) working-set rounds used; converged: (T,) gap ≤ tol · E[g_t²].
    """

    alpha: np.ndarray
    offsets: np.ndarray
    sources: np.ndarray
    values: np.ndarray
    n_sources: int
    duality_gap: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    objective: np.ndarray

    @property
    def n_targets(self) -> int:
        return len(self.offsets) - 1

    @cached_property
    def coef(self) -> np.ndarray:
        out = np.zeros((self.n_sources, self.n_targets))
        cols = np.repeat(np.arange(self.n_targets), np.diff(self.offsets))
        out[self.sources, cols] = self.values
        return out

    def column(self, t: int) -> np.ndarray:
        """Dense (P,) coefficients of target t."""
        vec = np.zeros(self.n_sources)
        sl = slice(self.offsets[t], self.offsets[t + 1])
        vec[self.sources[sl]] = self.values[sl]
        return vec

    @property
    def support_sizes(self) -> np.ndarray:
        return np.diff(self.offsets)


# ----------------------------------------------------------------------------- validation


def check_alpha(alpha) -> float:
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise InvalidInputError(f"alpha must be a positive number; got {alpha!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise InvalidInputError(
            f"alpha must be finite and > 0; got {alpha!r}. The paper uses 2.5 (ResNet, ViT) "
            "and 0.25 (Swin-T); α ≥ α_max gives no dependency at all"
        )
    return value


def _check_problem(design, rhs, target_sq, within):
    design = np.asarray(design, dtype=np.float64)
    rhs = np.asarray(rhs, dtype=np.float64)
    target_sq = np.asarray(target_sq, dtype=np.float64)
    if design.ndim != 2 or design.shape[0] != design.shape[1]:
        raise InvalidInputError(f"design Gram must be square; got shape {design.shape}")
    if rhs.ndim != 2 or rhs.shape[0] != design.shape[0]:
        raise InvalidInputError(
            f"right-hand sides must have shape ({design.shape[0]}, T); got {rhs.shape}"
        )
    if target_sq.shape != (rhs.shape[1],):
        raise InvalidInputError(f"target_sq must have shape ({rhs.shape[1]},); got {target_sq.shape}")
    if within and rhs.shape[1] != design.shape[0]:
        raise InvalidInputError("within one model the Gram is K×K and every category is a target")
    for what, arr in (("design", design), ("rhs", rhs), ("target_sq", target_sq)):
        if not np.isfinite(arr).all():
            raise InvalidInputError(f"the {what} Gram holds NaN/Inf; the logits were not finite")
    if (np.diag(design) < 0).any() or (target_sq < 0).any():
        raise InvalidInputError("a Gram diagonal is negative: these are not Gram matrices")
    return design, rhs, target_sq


# Below this fraction of the largest E[f²], α drowns in the float64 rounding of the Gram's
# products (≈ 1e-16 of it): no solution could be told apart from another, nor certified.
RESOLUTION = 1e-11


def _check_resolution(alphas: np.ndarray, design: np.ndarray, target_sq: np.ndarray) -> None:
    scale = max(float(np.max(np.diag(design), initial=0.0)), float(np.max(target_sq, initial=0.0)))
    floor = RESOLUTION * scale
    if float(alphas.min()) < floor:
        raise InvalidInputError(
            f"alpha = {float(alphas.min()):.3g} is below the numerical resolution of these logits "
            f"(largest E[f²] = {scale:.3g}): in float64 any α under {floor:.3g} is the same as 0. "
            f"Use α ≥ {floor:.3g}, or rescale the logits (divide them by a constant s and α by s²)"
        )


def alpha_max(design, rhs, within: bool, chunk: int = 2048) -> np.ndarray:
    """Smallest α with θ*(α) = 0, per target: ``max_j |b_j|`` over the allowed features."""
    rhs = np.asarray(rhs, dtype=np.float64)
    out = np.empty(rhs.shape[1])
    for s in range(0, rhs.shape[1], chunk):
        b = np.abs(rhs[:, s : s + chunk])
        if within:
            b = b.copy()
            idx = np.arange(s, min(s + chunk, rhs.shape[1]))
            b[idx, idx - s] = 0.0
        out[s : s + chunk] = b.max(axis=0)
    return out



# ----------------------------------------------------------------------------- public API


def solve_covlasso(
    design,
    rhs,
    target_sq,
    alpha,
    *,
    within: bool,
    config: SolverConfig | None = None,
    warm_start: np.ndarray | CovLassoResult | None = None,
) -> CovLassoResult:
    """Solve the CovLasso for every target (column of ``rhs``) at once.

    Parameters
    ----------
    design : (P, P) array — ``E[f fᵀ]`` of the source model.
    rhs : (P, T) array — ``E[f g_t]`` per target (``design`` itself within one model).
    target_sq : (T,) array — ``E[g_t²]`` (the diagonal of ``design`` within one model).
    alpha : float or (T,) array — the L1 weight, sklearn's ``Lasso(alpha=…)``.
    within : if True, P == T and target t may not use itself (θ_t = 0).
    warm_start : optional (P, T) coefficients, or a previous :class:`CovLassoResult`, to start
        from (e.g. the previous α of a path); rows that are not zero start from their
        solution moved along its current segment of the path (engine.covlasso_kernels).

    Returns a :class:`CovLassoResult`; warns with :class:`ConvergenceWarning` for targets
    whose duality gap is still above ``tol · E[g_t²]``.
    """
    cfg = config or SolverConfig()
    design, rhs, target_sq = _check_problem(design, rhs, target_sq, within)
    P, T = rhs.shape
    if np.ndim(alpha) == 0:
        alpha = check_alpha(alpha)
    alphas = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (T,)).copy()
    for a in np.unique(alphas):
        check_alpha(a)
    _check_resolution(alphas, design, target_sq)
    from engine.covlasso_kernels import solve_chunks  # torch: imported only to solve

    amax = alpha_max(design, rhs, within)
    coef, gaps, objs, iters = solve_chunks(design, rhs, target_sq, alphas, amax, within, warm_start, cfg)
    converged = gaps <= cfg.tol * target_sq
    if not converged.all():
        worst = int(np.argmax(gaps / np.maximum(target_sq, 1e-300)))
        warnings.warn(
            f"CovLasso did not converge for {int((~converged).sum())} of {T} targets "
            f"(worst: target {worst}, gap {gaps[worst]:.3g} > tol·E[g²] = "
            f"{cfg.tol * target_sq[worst]:.3g}); raise max_outer or check for duplicated "
            "categories",
            ConvergenceWarning,
            stacklevel=2,
        )
    counts = np.concatenate([c[3] for c in coef])
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    sources = np.concatenate([c[0] for c in coef]).astype(np.int64)
    values = np.concatenate([c[1] for c in coef])
    return CovLassoResult(alphas, offsets, sources, values, P, gaps, iters, converged, objs)


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
        from engine.gram import GramAccumulator

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
