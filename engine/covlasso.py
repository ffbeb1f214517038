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

import contextlib
import logging
import re
import warnings
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np
import torch

from engine.errors import InvalidInputError

log = logging.getLogger(__name__)


_GROUP = 128  # targets per working-set group (similar sizes together: little padding)
_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d{1,2})?)$")


class ConvergenceWarning(UserWarning):
    """Some targets did not reach the requested duality gap within the iteration budget."""


@dataclass(frozen=True)
class SolverConfig:
    """How the CovLasso is solved; part of every cached solution's key."""

    tol: float = 1e-7  # stop when duality gap ≤ tol · E[g_t²] (sklearn's convention)
    max_outer: int = 50  # working-set rounds (each ends with a full KKT/gap check)
    max_newton: int = 30  # active-set Newton steps per round before falling back to CD
    max_cd_sweeps: int = 5000  # coordinate-descent sweeps of the fallback, per round
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
        for name in ("max_outer", "max_newton", "max_cd_sweeps", "min_working_set", "chunk", "threads"):
            value, low = getattr(self, name), 0 if name == "max_cd_sweeps" else 1
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


# ----------------------------------------------------------------------------- kernels


def _soft(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.clamp(x.abs() - t, min=0.0)


def _gradient(G: torch.Tensor, b: torch.Tensor, theta: torch.Tensor, forbid) -> torch.Tensor:
    """c = b − θG for every target row (θ is sparse: use a CSR product); forbidden → 0."""
    nnz = int((theta != 0).sum())
    if nnz == 0:
        c = b.clone()
    elif nnz < 0.05 * theta.numel():
        with warnings.catch_warnings():  # "sparse CSR support is in beta": the product is exact
            warnings.simplefilter("ignore", UserWarning)
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
    """Primal-dual active-set (semismooth Newton) steps on (B, w, w) subproblems.

    With ``c = b − Hθ``, the next active set keeps the non-zeros whose sign agrees with
    ``c`` and adds the zeros with ``|c_j| > α``; on it, ``H_AA θ_A = b_A − α·sign(c_A)`` is
    solved exactly (Cholesky on the active set only, padded to the largest in the batch).
    A target is solved when the result is consistent — signs as assumed and ``|c_j| ≤ α``
    off the support — which are the KKT conditions, so it is the subproblem's minimiser.
    Returns (θ, solved); unsolved rows keep their input θ.
    """
    B, w = bW.shape
    out = theta.clone()
    solved = torch.zeros(B, dtype=torch.bool, device=H.device)
    rows = torch.arange(B, device=H.device)
    cur, Hr, br, ar = theta, H, bW, alpha[:, None]
    for _ in range(max_steps):
        c = br - torch.bmm(Hr, cur[:, :, None])[:, :, 0]
        nz = cur != 0
        active = (nz & (torch.sign(cur) == torch.sign(c))) | (~nz & (c.abs() > ar))
        s = max(int(active.sum(1).max()), 1)
        pos = torch.argsort((~active).to(torch.int8), dim=1, stable=True)[:, :s]
        valid = torch.gather(active, 1, pos)
        r_idx = torch.arange(len(rows), device=H.device)[:, None, None]
        Hs = Hr[r_idx, pos[:, :, None], pos[:, None, :]]
        eye = torch.eye(s, dtype=H.dtype, device=H.device)
        Hs = torch.where(valid[:, :, None] & valid[:, None, :], Hs, eye)
        sign = torch.sign(torch.gather(c, 1, pos)) * valid
        rhs = (torch.gather(br, 1, pos) - ar * sign) * valid
        L, info = torch.linalg.cholesky_ex(Hs)
        x = torch.cholesky_solve(rhs[:, :, None], L)[:, :, 0] * valid
        new = torch.zeros_like(cur).scatter_(1, pos, x)
        c_new = br - torch.bmm(Hr, new[:, :, None])[:, :, 0]
        d = torch.diagonal(Hr, dim1=1, dim2=2)
        slack = 1e-9 * ar + 1e-13 * d.amax(1, keepdim=True)
        sign_full = torch.zeros_like(cur).scatter_(1, pos, sign)
        act_full = sign_full != 0
        consistent = ((torch.sign(new) == sign_full) | ~act_full).all(1) & (
            (c_new.abs() <= ar + slack) | act_full
        ).all(1)
        done = (info == 0) & consistent
        out[rows[done]] = new[done]
        solved[rows[done]] = True
        keep = ~done
        if not bool(keep.any()):
            break
        cur = torch.where((info == 0)[:, None], new, cur)[keep]
        rows, Hr, br, ar = rows[keep], Hr[keep], br[keep], ar[keep]
    return out, solved


def _coordinate_descent(H, bW, theta, alpha, sweeps):
    """Cyclic coordinate descent on (B, w, w) subproblems, all batched; always converges.

    Returns (θ, settled): ``settled`` marks the rows whose last sweep moved no coefficient
    by more than 1e-12 (relative). Those are minimisers even where H is singular
    (duplicated categories, fewer samples than categories), where the exact active-set
    step cannot succeed.
    """
    d = torch.diagonal(H, dim1=1, dim2=2).clamp(min=1e-300)
    c = bW - torch.bmm(H, theta[:, :, None])[:, :, 0]
    w = bW.shape[1]
    theta = theta.clone()
    settled = torch.zeros(len(alpha), dtype=torch.bool, device=H.device)
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
        settled = biggest <= 1e-12 * (1 + theta.abs().amax(1))
        if bool(settled.all()):
            break
    return theta, settled


def _solve_working_set(H, bW, theta, alpha, alpha_from, cfg: SolverConfig):
    """Exact solutions of the working-set subproblems, warm-started at θ.

    Active-set Newton first; the rare rows where it cycles get coordinate descent, which
    always converges, in bursts of 10 sweeps each followed by the exact Newton polish. A row
    whose coordinate descent has settled is done even if the polish fails: with a singular
    H (duplicated categories) the exact step cannot succeed, and waiting for it cost the
    whole sweep budget (measured: 2 s for six categories, three of them duplicates).
    """
    theta, solved = _newton(H, bW, theta, alpha, cfg.max_newton)
    sweeps = 0
    while not bool(solved.all()) and sweeps < cfg.max_cd_sweeps:
        rest = torch.nonzero(~solved)[:, 0]
        log.debug("active-set steps cycled for %d targets; coordinate descent", len(rest))
        th, settled = _coordinate_descent(H[rest], bW[rest], theta[rest], alpha[rest], 10)
        sweeps += 10
        polished, ok = _newton(H[rest], bW[rest], th, alpha[rest], 2)
        theta[rest] = torch.where(ok[:, None], polished, th)
        solved[rest] = ok | settled
    return theta


def _solve_chunk(G, b, ysq, alpha, forbid, theta, alpha_from, cfg: SolverConfig):
    """Solve targets of one chunk: b (T, P), ysq (T,), alpha (T,), theta (T, P) warm start.

    ``alpha_from`` is the α at which ``theta`` is (nearly) optimal: α_max for a cold start,
    the previous grid point on a path. Cold starts go straight to α: measured on classifier-
    like logits (K = 1,000, 77 sources per target), a geometric continuation from α_max
    (ratio 0.6) took 6.0 s against 2.2 s for direct working sets, whose rare active-set
    failures are handled by the α ladder in :func:`_solve_working_set`.
    """
    return _solve_at(G, b, ysq, alpha, forbid, theta, alpha_from, cfg)


def _solve_at(G, b, ysq, alpha, forbid, theta, alpha_from, cfg: SolverConfig):
    """Working-set rounds at fixed α until every target's duality gap is below tolerance."""
    T, P = b.shape
    n_iter = torch.zeros(T, dtype=torch.int64, device=b.device)
    allowed = P - (1 if forbid is not None else 0)
    for _ in range(cfg.max_outer):
        c = _gradient(G, b, theta, forbid)
        gap, _ = _gap_and_objective(theta, c, b, ysq, alpha)
        todo = gap > cfg.tol * ysq
        if not bool(todo.any()):
            break
        idx = torch.nonzero(todo)[:, 0]
        n_iter[idx] += 1
        support = theta[idx] != 0
        n_sup = support.sum(1)
        n_viol = (c[idx].abs() > alpha[idx, None]).sum(1)
        # support + the worst violators (at most as many again), never fewer than the minimum
        need = torch.clamp(n_sup + torch.minimum(n_viol, torch.clamp(n_sup, min=cfg.min_working_set)),
                           min=cfg.min_working_set, max=allowed)
        order = torch.argsort(need)
        for start in range(0, len(order), _GROUP):
            grp = idx[order[start : start + _GROUP]]
            w = int(need[order[start : start + _GROUP]].max())
            theta[grp] = _round(G, b[grp], theta[grp], c[grp], alpha[grp], alpha_from[grp],
                                None if forbid is None else forbid[grp], w, cfg)
    c = _gradient(G, b, theta, forbid)
    gap, obj = _gap_and_objective(theta, c, b, ysq, alpha)
    return theta, gap, obj, n_iter


def _round(G, b, th, c, al, alpha_from, forbid, w, cfg: SolverConfig):
    """One working-set round for a group of targets of similar working-set size ``w``."""
    score = c.abs() / al[:, None]
    score[th != 0] = float("inf")
    if forbid is not None:
        score[torch.arange(len(th), device=th.device), forbid] = -1.0
    W = torch.topk(score, w, dim=1).indices
    H = G[W[:, :, None], W[:, None, :]]
    thW = _solve_working_set(H, torch.gather(b, 1, W), torch.gather(th, 1, W), al, alpha_from, cfg)
    return torch.zeros_like(th).scatter_(1, W, thW)


def _warm_rows(warm_start, sl: slice, like: torch.Tensor) -> torch.Tensor:
    """(targets of ``sl``, P) warm-start rows from a dense (P, T) array or a CovLassoResult."""
    if isinstance(warm_start, CovLassoResult):
        out = torch.zeros_like(like)
        lo, hi = warm_start.offsets[sl.start], warm_start.offsets[sl.stop]
        counts = torch.as_tensor(np.diff(warm_start.offsets[sl.start : sl.stop + 1]), device=like.device)
        rows = torch.repeat_interleave(torch.arange(len(counts), device=like.device), counts)
        cols = torch.as_tensor(warm_start.sources[lo:hi], device=like.device)
        out[rows, cols] = torch.as_tensor(warm_start.values[lo:hi], device=like.device)
        return out
    return torch.as_tensor(np.ascontiguousarray(warm_start[:, sl].T), device=like.device).clone()


@contextlib.contextmanager
def _torch_threads(n: int | None):
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _solve_columns(G, rhs, target_sq, alphas, amax, within, warm_start, warm_alpha, start, cfg,
                   coef, gaps, objs, iters):
    """Solve the targets of one chunk (columns start … start+chunk) into the output arrays."""
    T = rhs.shape[1]
    dev = G.device
    sl = slice(start, min(T, start + cfg.chunk))
    b = torch.as_tensor(np.ascontiguousarray(rhs[:, sl].T), device=dev)
    ysq = torch.as_tensor(target_sq[sl].copy(), device=dev)
    al = torch.as_tensor(alphas[sl], device=dev)
    forbid = torch.arange(sl.start, sl.stop, device=dev) if within else None
    theta = _warm_rows(warm_start, sl, b) if warm_start is not None else torch.zeros_like(b)
    theta[torch.as_tensor(amax[sl] <= alphas[sl], device=dev)] = 0.0
    cold = (theta == 0).all(1)
    a_from = torch.as_tensor(amax[sl].copy(), device=dev)
    if warm_alpha is not None:
        a_from = torch.where(cold, a_from, torch.as_tensor(warm_alpha, dtype=a_from.dtype, device=dev))
    th, gap, obj, n_it = _solve_chunk(G, b, ysq, al, forbid, theta, a_from, cfg)
    rows, cols = torch.nonzero(th, as_tuple=True)  # row-major: by target, then source
    coef.append((cols.cpu().numpy(), th[rows, cols].cpu().numpy(), th.shape[0]))
    counts = torch.bincount(rows, minlength=th.shape[0]).cpu().numpy()
    coef[-1] = (*coef[-1], counts)
    gaps[sl], objs[sl], iters[sl] = gap.cpu().numpy(), obj.cpu().numpy(), n_it.cpu().numpy()


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
    warm_alpha: float | None = None,
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
        from (e.g. the previous α of a path).
    warm_alpha : the α at which ``warm_start`` was solved (lets hard targets step from it).

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
    dev = torch.device(cfg.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {cfg.device!r} asked for, but no CUDA device is available; use cpu")
    G = torch.as_tensor(design, device=dev)
    coef: list = []  # per chunk: (sources, values, n_targets, counts)
    gaps, objs, iters = np.zeros(T), np.zeros(T), np.zeros(T, dtype=np.int64)
    amax = alpha_max(design, rhs, within)
    with _torch_threads(cfg.threads if dev.type == "cpu" else None):
        for start in range(0, T, cfg.chunk):
            _solve_columns(G, rhs, target_sq, alphas, amax, within, warm_start, warm_alpha, start,
                           cfg, coef, gaps, objs, iters)
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
