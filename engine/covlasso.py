"""The Covariance Lasso, solved from the Gram alone, for every target at once.

For target ``t`` with right-hand side ``b = E[f g_t]`` and design Gram ``G = E[f fᵀ]``::

    θ*(α) = argmin_θ  ½ θᵀGθ − bᵀθ + ½ E[g_t²] + α ‖θ‖₁          (θ_t = 0 within one model)

which is exactly the objective of ``sklearn.linear_model.Lasso(alpha=α, fit_intercept=False)``
fitted on the raw logits (``½N⁻¹‖y − Xθ‖² + α‖θ‖₁``), so the paper's α values carry over.

Algorithm (all targets of a chunk advance together, as batched torch tensors):

1. **Working sets.** Each target keeps a small set of candidate features: its current
   support plus the features that violate the KKT condition ``|b_j − G_jθ| ≤ α`` the most.
2. **Subproblem.** On the working set, a primal-dual active-set (semismooth Newton) step
   solves ``G_AA θ_A = b_A − α·sign`` exactly for the guessed support ``A`` and signs; it
   stops when signs and the inactive bound are consistent, i.e. when the subproblem's KKT
   conditions hold to rounding. Targets where the guess cycles fall back to coordinate
   descent, which always converges, followed by the same exact polish.
3. **Certificate.** The full gradient ``b − Gθ`` over *all* features (a sparse×dense product)
   gives sklearn's duality gap per target; targets whose gap exceeds ``tol·E[g_t²]`` get their
   violators added to the working set and go round again. Nothing unconverged is returned
   silently: a :class:`ConvergenceWarning` names how many targets and the worst gap.

Paths over α use warm starts, which is also what keeps the active-set steps few.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch

from engine.errors import InvalidInputError

log = logging.getLogger(__name__)
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


class ConvergenceWarning(UserWarning):
    """Some targets did not reach the requested duality gap within the iteration budget."""


@dataclass(frozen=True)
class SolverConfig:
    """How the CovLasso is solved; part of every cached solution's key."""

    tol: float = 1e-7  # stop when duality gap ≤ tol · E[g_t²] (sklearn's convention)
    max_outer: int = 50  # working-set rounds (each ends with a full KKT/gap check)
    max_newton: int = 12  # active-set Newton steps per round before falling back to CD
    max_cd_sweeps: int = 5000  # coordinate-descent sweeps of the fallback, per round
    min_working_set: int = 24  # features per target in the first working set
    chunk: int = 1024  # targets solved together (bounds memory: chunk × P float64)
    device: str = "cpu"

    def key(self) -> dict:
        """The settings that change the result (device and chunking do not)."""
        d = asdict(self)
        d.pop("device")
        d.pop("chunk")
        return d


@dataclass
class CovLassoResult:
    """Solutions for every target at one α (or one α per target).

    coef: (P, T) float64 — column t predicts target t from the P source categories.
    duality_gap: (T,) sklearn's gap, in the normalised units of the objective above.
    n_iter: (T,) working-set rounds used; converged: (T,) gap ≤ tol · E[g_t²].
    """

    alpha: np.ndarray
    coef: np.ndarray
    duality_gap: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    objective: np.ndarray


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


def alpha_max(design, rhs, within: bool) -> np.ndarray:
    """Smallest α with θ*(α) = 0, per target: ``max_j |b_j|`` over the allowed features."""
    b = np.abs(np.asarray(rhs, dtype=np.float64)).copy()
    if within:
        np.fill_diagonal(b, 0.0)
    return b.max(axis=0)


# ----------------------------------------------------------------------------- kernels


def _soft(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.clamp(x.abs() - t, min=0.0)


def _gradient(G: torch.Tensor, b: torch.Tensor, theta: torch.Tensor, forbid) -> torch.Tensor:
    """c = b − θG for every target row (θ is sparse: use a CSR product); forbidden → 0."""
    nnz = int((theta != 0).sum())
    if nnz == 0:
        c = b.clone()
    elif nnz < 0.05 * theta.numel():
        c = b - theta.to_sparse_csr() @ G
    else:
        c = b - theta @ G
    if forbid is not None:
        c[torch.arange(c.shape[0], device=c.device), forbid] = 0.0
    return c


def _gap_and_objective(theta, c, b, ysq, alpha):
    """sklearn's duality gap (Gram form, normalised by N) and the primal objective."""
    b_theta = (b * theta).sum(1)
    r2 = torch.clamp(ysq - b_theta - (theta * c).sum(1), min=0.0)  # E[(y − θᵀf)²]
    l1 = theta.abs().sum(1)
    dual_norm = c.abs().amax(1)
    const = torch.where(dual_norm > alpha, alpha / torch.clamp(dual_norm, min=1e-300), 1.0)
    gap = 0.5 * r2 * (1 + const**2) + alpha * l1 - const * (ysq - b_theta)
    gap = torch.where(dual_norm > alpha, gap, r2 + alpha * l1 - (ysq - b_theta))
    return torch.clamp(gap, min=0.0), 0.5 * r2 + alpha * l1


def _newton(H, bW, theta, alpha, max_steps):
    """Active-set Newton on (B, w, w) subproblems.

    Each step guesses the support and signs from the CD fixed point ``z = diag(H)·θ + c``
    and solves ``H_AA θ_A = b_A − α·sign`` exactly. A target is solved when the result is
    consistent (signs as guessed, ``|c_j| ≤ α`` off the support): those are the KKT
    conditions, so the result is the subproblem's minimiser. Returns (θ, solved); rows not
    solved keep their input θ (a cycling iterate is never returned).
    """
    B, w = bW.shape
    d = torch.diagonal(H, dim1=1, dim2=2)
    a = alpha[:, None]
    slack = 1e-9 * a + 1e-13 * d.amax(1, keepdim=True)
    eye = torch.eye(w, dtype=H.dtype, device=H.device)
    solved = torch.zeros(B, dtype=torch.bool, device=H.device)
    out = theta.clone()
    cur = theta
    for _ in range(max_steps):
        c = bW - torch.bmm(H, cur[:, :, None])[:, :, 0]
        z = d * cur + c
        active = z.abs() > a
        sign = torch.sign(z) * active
        L, info = torch.linalg.cholesky_ex(torch.where(active[:, :, None] & active[:, None, :], H, eye))
        rhs = (bW - a * sign) * active
        new = torch.cholesky_solve(rhs[:, :, None], L)[:, :, 0] * active
        c_new = bW - torch.bmm(H, new[:, :, None])[:, :, 0]
        consistent = ((torch.sign(new) == sign) | ~active).all(1) & (
            (c_new.abs() <= a + slack) | active
        ).all(1)
        done = (info == 0) & consistent & ~solved
        out[done] = new[done]
        solved |= done
        if bool(solved.all()):
            break
        cur = torch.where((info == 0)[:, None], new, cur)
    return out, solved


def _coordinate_descent(H, bW, theta, alpha, sweeps):
    """Cyclic coordinate descent on (B, w, w) subproblems, all batched; always converges."""
    d = torch.diagonal(H, dim1=1, dim2=2).clamp(min=1e-300)
    c = bW - torch.bmm(H, theta[:, :, None])[:, :, 0]
    w = bW.shape[1]
    theta = theta.clone()
    for _ in range(sweeps):
        biggest = torch.zeros_like(alpha)
        for k in range(w):
            old = theta[:, k]
            new = _soft(old + c[:, k] / d[:, k], alpha / d[:, k])
            delta = new - old
            if bool((delta != 0).any()):
                theta[:, k] = new
                c -= delta[:, None] * H[:, :, k]
                biggest = torch.maximum(biggest, delta.abs())
        if bool((biggest <= 1e-12 * (1 + theta.abs().amax(1))).all()):
            break
    return theta


def _solve_working_set(H, bW, theta, alpha, cfg: SolverConfig):
    theta, solved = _newton(H, bW, theta, alpha, cfg.max_newton)
    sweeps = 0
    while not bool(solved.all()) and sweeps < cfg.max_cd_sweeps:
        # The active-set guess cycled: a few CD sweeps (always descending) usually fix the
        # support and signs, after which one Newton step lands on the exact solution.
        rest = torch.nonzero(~solved)[:, 0]
        log.debug("active-set steps cycled for %d targets; coordinate descent", len(rest))
        th = _coordinate_descent(H[rest], bW[rest], theta[rest], alpha[rest], 10)
        sweeps += 10
        th, ok = _newton(H[rest], bW[rest], th, alpha[rest], 2)
        theta[rest] = th
        solved[rest] = ok
    return theta


def _solve_chunk(G, b, ysq, alpha, forbid, theta, amax, cfg: SolverConfig):
    """Solve targets of one chunk: b (T, P), ysq (T,), alpha (T,), theta (T, P) warm start.

    From a cold start, α first descends geometrically from each target's α_max (halving):
    every step then starts next to its solution, where the active-set steps converge at once.
    """
    cold = (theta == 0).all(1)
    if bool(cold.any()):
        ratio = torch.clamp(amax / alpha, min=1.0)
        steps = int(torch.ceil(torch.log2(ratio[cold])).max())
        for m in range(1, steps):
            a_m = torch.where(cold, torch.maximum(alpha, amax * 0.5**m), alpha)
            theta, *_ = _solve_at(G, b, ysq, a_m, forbid, theta, cfg)
    return _solve_at(G, b, ysq, alpha, forbid, theta, cfg)


def _solve_at(G, b, ysq, alpha, forbid, theta, cfg: SolverConfig):
    T, P = b.shape
    n_iter = torch.zeros(T, dtype=torch.int64, device=b.device)
    todo = torch.ones(T, dtype=torch.bool, device=b.device)
    allowed = P - (1 if forbid is not None else 0)
    for _ in range(cfg.max_outer):
        c = _gradient(G, b, theta, forbid)
        gap, _ = _gap_and_objective(theta, c, b, ysq, alpha)
        todo = gap > cfg.tol * ysq
        if not bool(todo.any()):
            break
        idx = torch.nonzero(todo)[:, 0]
        n_iter[idx] += 1
        th, cc, al = theta[idx], c[idx], alpha[idx]
        support = th != 0
        n_sup = int(support.sum(1).max())
        n_viol = int((cc.abs() > al[:, None]).sum(1).max())
        w = min(allowed, max(cfg.min_working_set, 2 * n_sup, n_sup + n_viol))
        score = cc.abs() / al[:, None]
        score[support] = float("inf")
        if forbid is not None:
            score[torch.arange(len(idx), device=b.device), forbid[idx]] = -1.0
        W = torch.topk(score, w, dim=1).indices
        H = G[W[:, :, None], W[:, None, :]]
        bW = torch.gather(b[idx], 1, W)
        thW = torch.gather(th, 1, W)
        thW = _solve_working_set(H, bW, thW, al, cfg)
        new = torch.zeros_like(th)
        new.scatter_(1, W, thW)
        theta[idx] = new
    c = _gradient(G, b, theta, forbid)
    gap, obj = _gap_and_objective(theta, c, b, ysq, alpha)
    return theta, gap, obj, n_iter


# ----------------------------------------------------------------------------- public API


def solve_covlasso(
    design,
    rhs,
    target_sq,
    alpha,
    *,
    within: bool,
    config: SolverConfig | None = None,
    warm_start: np.ndarray | None = None,
) -> CovLassoResult:
    """Solve the CovLasso for every target (column of ``rhs``) at once.

    Parameters
    ----------
    design : (P, P) array — ``E[f fᵀ]`` of the source model.
    rhs : (P, T) array — ``E[f g_t]`` per target (``design`` itself within one model).
    target_sq : (T,) array — ``E[g_t²]`` (the diagonal of ``design`` within one model).
    alpha : float or (T,) array — the L1 weight, sklearn's ``Lasso(alpha=…)``.
    within : if True, P == T and target t may not use itself (θ_t = 0).
    warm_start : optional (P, T) coefficients to start from (e.g. the previous α of a path).

    Returns a :class:`CovLassoResult`; warns with :class:`ConvergenceWarning` for targets
    whose duality gap is still above ``tol · E[g_t²]``.
    """
    cfg = config or SolverConfig()
    design, rhs, target_sq = _check_problem(design, rhs, target_sq, within)
    P, T = rhs.shape
    alphas = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (T,)).copy()
    for a in np.unique(alphas):
        check_alpha(a)
    dev = torch.device(cfg.device)
    G = torch.as_tensor(design, device=dev)
    coef = np.zeros((P, T))
    gaps, objs, iters = np.zeros(T), np.zeros(T), np.zeros(T, dtype=np.int64)
    amax = alpha_max(design, rhs, within)
    for start in range(0, T, cfg.chunk):
        sl = slice(start, min(T, start + cfg.chunk))
        b = torch.as_tensor(np.ascontiguousarray(rhs[:, sl].T), device=dev)
        ysq = torch.as_tensor(target_sq[sl].copy(), device=dev)
        al = torch.as_tensor(alphas[sl], device=dev)
        forbid = torch.arange(sl.start, sl.stop, device=dev) if within else None
        if warm_start is not None:
            theta = torch.as_tensor(np.ascontiguousarray(warm_start[:, sl].T), device=dev).clone()
        else:
            theta = torch.zeros_like(b)
        theta[torch.as_tensor(amax[sl] <= alphas[sl], device=dev)] = 0.0
        am = torch.as_tensor(amax[sl].copy(), device=dev)
        th, gap, obj, n_it = _solve_chunk(G, b, ysq, al, forbid, theta, am, cfg)
        coef[:, sl] = th.T.cpu().numpy()
        gaps[sl], objs[sl], iters[sl] = gap.cpu().numpy(), obj.cpu().numpy(), n_it.cpu().numpy()
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
    return CovLassoResult(alphas, coef, gaps, iters, converged, objs)
