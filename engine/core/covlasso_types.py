"""The CovLasso problem's vocabulary: solver settings, the result type, input checks, α_max.

Shared by :mod:`engine.core.covlasso` (the public solve and path) and
:mod:`engine.core.covlasso_kernels` (the batched torch kernels), which import this module and
never each other's internals. Numpy only: reading cached results needs no torch.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np

from engine.core.sparse import SparseColumns
from engine.errors import InvalidInputError

_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d{1,2})?)$")


def check_device(device) -> None:
    """A solver's ``device`` setting: 'cpu', 'cuda' or 'cuda:N', else one line saying so."""
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise InvalidInputError(f"device must be 'cpu', 'cuda' or 'cuda:N'; got {device!r}")
# the arrays a stored CovLassoResult holds (CovLassoResult.to_arrays)
RESULT_ARRAYS = ("offsets", "source", "value", "alpha", "gap", "n_iter", "converged", "objective")


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
    # CPU worker threads: the targets are split into as many chunks, solved side by side,
    # each on one torch thread (0: one per core, at most 4). The work is many small batched
    # ops, and a threaded op does not pay: measured here (torch 2.14, 2 cores) a threaded
    # batched 36×36 matrix-vector product took 16 ms against 0.14 ms on one thread when the
    # other core was busy, and MKL's threaded batched Cholesky above 128×128 was 15–70×
    # slower than one thread; whole chunks in threads share no op.
    threads: int = 0

    def __post_init__(self) -> None:
        tol = self.tol
        if isinstance(tol, bool) or not isinstance(tol, int | float) or not np.isfinite(tol) or tol <= 0:
            raise InvalidInputError(f"tol must be a finite number > 0 (default 1e-7); got {tol!r}")
        check_integers(self, {"max_outer": 1, "max_newton": 1, "monotone_steps": 0, "min_working_set": 1,
                              "chunk": 1, "threads": 0})
        check_device(self.device)

    def key(self) -> dict:
        """The settings that change the result (device, chunking and threads do not)."""
        return result_key(self)


def check_integers(config, lows: dict[str, int]) -> None:
    """Each named field of a configuration an integer at least its low bound, else one line
    naming the field, the bound and the value."""
    for name, low in lows.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidInputError(f"{name} must be an integer >= {low}; got {value!r}")


def result_key(config) -> dict:
    """A solver configuration's settings that change the result: all but where and how the
    work is split (device, chunk, threads), which change only rounding."""
    d = asdict(config)
    for name in ("device", "chunk", "threads"):
        d.pop(name)
    return d


@dataclass(frozen=True)
class CovLassoResult:
    """Solutions of T targets at one α each.

    sparse : the coefficients, one column per target (:class:`~engine.core.sparse.SparseColumns`).
    alpha : (T,) the α of every target.
    duality_gap : (T,) sklearn's gap, in the normalised units of the objective.
    n_iter : (T,) working-set rounds used.
    converged : (T,) gap ≤ tol · E[g_t²].
    objective : (T,) ½E[(g_t − θᵀf)²] + α‖θ‖₁.
    """

    sparse: SparseColumns
    alpha: np.ndarray
    duality_gap: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    objective: np.ndarray

    @property
    def n_targets(self) -> int:
        return self.sparse.n_targets

    @property
    def n_sources(self) -> int:
        return self.sparse.n_sources

    @property
    def support_sizes(self) -> np.ndarray:
        return self.sparse.support_sizes

    @cached_property
    def coef(self) -> np.ndarray:
        """Dense (P, T) coefficients (built on first use: avoid it when P·T is large)."""
        return self.sparse.to_dense()

    def column(self, t: int) -> np.ndarray:
        """Dense (P,) coefficients of target t."""
        return self.sparse.dense_column(t)

    def select(self, cols) -> CovLassoResult:
        """The results of targets ``cols`` (positions in this result)."""
        cols = np.asarray(cols, dtype=np.int64)
        return CovLassoResult(self.sparse.select(cols), self.alpha[cols], self.duality_gap[cols],
                              self.n_iter[cols], self.converged[cols], self.objective[cols])

    @classmethod
    def concat(cls, parts: list[CovLassoResult]) -> CovLassoResult:
        return cls(SparseColumns.concat([p.sparse for p in parts]),
                   *(np.concatenate([getattr(p, f) for p in parts])
                     for f in ("alpha", "duality_gap", "n_iter", "converged", "objective")))

    # -- storage
    def to_arrays(self) -> dict[str, np.ndarray]:
        return {**self.sparse.to_arrays(), "alpha": self.alpha, "gap": self.duality_gap, "n_iter": self.n_iter,
                "converged": self.converged.astype(np.uint8), "objective": self.objective}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], n_sources: int) -> CovLassoResult:
        return cls(SparseColumns.from_arrays(arrays, n_sources), np.asarray(arrays["alpha"]),
                   np.asarray(arrays["gap"]), np.asarray(arrays["n_iter"]),
                   np.asarray(arrays["converged"]).astype(bool), np.asarray(arrays["objective"]))


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


def check_problem(design, rhs, target_sq, forbid, *, check_design: bool = True):
    """Shapes and values of a CovLasso problem, as float64 arrays (no copy when they are).

    ``check_design=False`` skips the O(P²) scan of the design (finite values, non-negative
    diagonal) for a Gram that was checked when it was built: a per-target solve on a
    21,843-category Gram would otherwise read all of it for one column.
    """
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
    if forbid is not None:
        forbid = np.asarray(forbid, dtype=np.int64)
        if forbid.shape != (rhs.shape[1],) or (forbid < 0).any() or (forbid >= design.shape[0]).any():
            raise InvalidInputError(
                f"forbid must hold one source index in [0, {design.shape[0] - 1}] per target; "
                f"got shape {forbid.shape}")
    checked = (("design", design), ("rhs", rhs), ("target_sq", target_sq)) if check_design else \
        (("rhs", rhs), ("target_sq", target_sq))
    for what, arr in checked:
        if not np.isfinite(arr).all():
            raise InvalidInputError(f"the {what} Gram holds NaN/Inf; the logits were not finite")
    if (check_design and (np.diag(design) < 0).any()) or (target_sq < 0).any():
        raise InvalidInputError("a Gram diagonal is negative: these are not Gram matrices")
    return design, rhs, target_sq, forbid


# Below this fraction of the largest E[f²], α drowns in the float64 rounding of the Gram's
# products (≈ 1e-16 of it): no solution could be told apart from another, nor certified.
RESOLUTION = 1e-11


def check_resolution(alphas: np.ndarray, scale: float) -> None:
    """``scale``: the largest E[f²] of the problem (diagonal of the design, or E[g_t²])."""
    floor = RESOLUTION * scale
    if float(alphas.min()) < floor:
        raise InvalidInputError(
            f"alpha = {float(alphas.min()):.3g} is below the numerical resolution of these logits "
            f"(largest E[f²] = {scale:.3g}): in float64 any α under {floor:.3g} is the same as 0. "
            f"Use α ≥ {floor:.3g}, or rescale the logits (divide them by a constant s and α by s²)"
        )


def max_correlation(rhs, forbid=None, chunk: int = 512) -> np.ndarray:
    """Smallest α with θ*(α) = 0, per target (column of ``rhs``): ``max_j |b_j|`` over the
    allowed sources (``forbid[t]``, when given, is excluded for target t). By chunks of
    columns: at most P × ``chunk`` floats at once (90 MB at 21,843 categories)."""
    rhs = np.asarray(rhs, dtype=np.float64)
    out = np.empty(rhs.shape[1])
    for s in range(0, rhs.shape[1], chunk):
        b = np.abs(rhs[:, s : s + chunk])  # a new array: the forbidden entries may be zeroed
        if forbid is not None:
            b[np.asarray(forbid[s : s + chunk]), np.arange(b.shape[1])] = 0.0
        out[s : s + chunk] = b.max(axis=0)
    return out


def alpha_max(design, rhs, within: bool, chunk: int = 2048) -> np.ndarray:
    """α_max of every target of a full problem (``within``: target t may not use source t)."""
    forbid = np.arange(np.shape(rhs)[1]) if within else None
    return max_correlation(rhs, forbid, chunk)
