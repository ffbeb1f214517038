"""The CovLasso's batched torch kernels (see :mod:`engine.covlasso` for the problem).

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
import warnings

import numpy as np
import torch

from engine.covlasso import CovLassoResult, SolverConfig
from engine.errors import InvalidInputError

log = logging.getLogger(__name__)

_GROUP = 128  # targets per working-set group (similar sizes together: little padding)
# Growth limits. Both keep the subproblems small and well-conditioned; neither changes the
# result (every solution is certified by its duality gap). On the demo's logits (1,000
# classes spanning 128 or 257 dimensions, so supports approach the Gram's rank) the Newton
# guesses used to cycle: glyph-vit's α path took 161 s of CPU for its first 23 of 25 α,
# each further α doubling; with these limits and the fallback below, 28 s (docs/dashboard.md).
_GROWTH = 4  # a working set grows by at most 1/_GROWTH of the support per round (≥ min_working_set)
_MIN_ADD = 4  # an active-set step adds at most max(_MIN_ADD, nnz/_GROWTH) features


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


def _entering(c: torch.Tensor, nz: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Zeros that violate ``|c_j| ≤ α``, only the largest excesses (see :func:`_newton`)."""
    excess = torch.where(nz, 0.0, c.abs() - alpha)
    cap = min(c.shape[1], max(_MIN_ADD, int(nz.sum(1).max()) // _GROWTH))
    kth = torch.topk(excess, cap, dim=1).values[:, -1:]
    return (excess > 0) & (excess >= kth)


def _batched_submatrix(H: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """``H[b][pos_b][:, pos_b]`` for every b: (B, w, w), (B, s) → (B, s, s).

    One flat gather per batch row (~2.5× faster than three-tensor advanced indexing here).
    """
    B, w, _ = H.shape
    s = pos.shape[1]
    flat = (pos[:, :, None] * w + pos[:, None, :]).reshape(B, s * s)
    return H.reshape(B, w * w).gather(1, flat).reshape(B, s, s)


def _newton(H, bW, theta, alpha, max_steps):
    """Primal-dual active-set (semismooth Newton) steps on (B, w, w) subproblems.

    With ``c = b − Hθ``, the next active set keeps the non-zeros whose sign agrees with
    ``c`` and adds the zeros with ``|c_j| > α`` — the largest excesses first, at most
    ``max(_MIN_ADD, nnz/_GROWTH)`` of them per step: adding every violator at once makes
    the guessed set overshoot (past the Gram's rank when the logits span few dimensions),
    its system near-singular and the steps cycle. On it, ``H_AA θ_A = b_A − α·sign(c_A)``
    is solved exactly (Cholesky on the active set only, padded to the largest in the batch).
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
        active = (nz & (torch.sign(cur) == torch.sign(c))) | _entering(c, nz, ar)
        s = max(int(active.sum(1).max()), 1)
        pos = torch.argsort((~active).to(torch.int8), dim=1, stable=True)[:, :s]
        valid = torch.gather(active, 1, pos)
        Hs = _batched_submatrix(Hr, pos)
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


def _ridge_retry(Hs, L, info):
    """Cholesky of the singular systems again with a tiny ridge (10⁻⁹ of the largest diagonal).

    The regularised step points almost exactly along the null direction of the set; moving
    along it until the first coefficient reaches zero is the exchange step of the exact
    method, after which the set is regular again (the final answer never uses the ridge:
    a row is solved only when the unregularised KKT conditions hold).
    """
    bad = info != 0
    d = torch.diagonal(Hs[bad], dim1=1, dim2=2).amax(1)
    eye = torch.eye(Hs.shape[1], dtype=Hs.dtype, device=Hs.device)
    L2, info2 = torch.linalg.cholesky_ex(Hs[bad] + 1e-9 * d[:, None, None] * eye)
    L, info = L.clone(), info.clone()
    L[bad], info[bad] = L2, info2
    return L, info


def _one_at_a_time(H, bW, theta, alpha, max_steps):
    """The classic active-set method for the Lasso (Osborne, Presnell & Turlach, 2000),
    batched over (B, w, w) subproblems; for the rows where :func:`_newton` cycles.

    The working signs σ start as sign(θ). Each step solves ``H_AA x = b_A − α·σ_A`` on the
    working set; if x keeps the signs, θ moves to it and the worst violator (if any) enters
    with the sign of its gradient; otherwise θ moves towards x only until the first
    coefficient reaches zero, which leaves the set. The objective never increases, so it
    cannot cycle like the Newton guesses (one feature enters per step, hence the cost).
    Returns (θ, solved); an unsolved row returns its last iterate.
    """
    out = theta.clone()
    solved = torch.zeros(len(theta), dtype=torch.bool, device=H.device)
    rows = torch.arange(len(theta), device=H.device)
    cur, sigma, Hr, br, ar = theta.clone(), torch.sign(theta), H, bW, alpha[:, None]
    for _ in range(max_steps):
        act = sigma != 0
        s = max(int(act.sum(1).max()), 1)
        pos = torch.argsort((~act).to(torch.int8), dim=1, stable=True)[:, :s]
        valid = torch.gather(act, 1, pos)
        eye = torch.eye(s, dtype=H.dtype, device=H.device)
        Hs = torch.where(valid[:, :, None] & valid[:, None, :], _batched_submatrix(Hr, pos), eye)
        rhs = (torch.gather(br, 1, pos) - ar * torch.gather(sigma, 1, pos)) * valid
        L, info = torch.linalg.cholesky_ex(Hs)
        if bool((info != 0).any()):  # the entering feature is (numerically) a combination of the set
            L, info = _ridge_retry(Hs, L, info)
        x = torch.zeros_like(cur).scatter_(1, pos, torch.cholesky_solve(rhs[:, :, None], L)[:, :, 0] * valid)
        wrong = act & (torch.sign(x) != sigma)
        # ratio test: the step t ∈ [0, 1] towards x at which the first wrong-signed coefficient hits 0
        d = x - cur
        t = torch.where(wrong, cur / torch.where(wrong, cur - x, 1.0), float("inf")).clamp(0.0, 1.0)
        step = t.amin(1, keepdim=True).clamp(max=1.0)
        cur = torch.where(act, cur + step * d, 0.0)
        leaves = wrong & (t <= step)
        cur[leaves], sigma[leaves] = 0.0, 0.0
        c = br - torch.bmm(Hr, cur[:, :, None])[:, :, 0]
        slack = 1e-9 * ar + 1e-13 * torch.diagonal(Hr, dim1=1, dim2=2).amax(1, keepdim=True)
        excess = torch.where(sigma != 0, -1.0, c.abs() - ar - slack)
        moved_fully = ~wrong.any(1)
        done = moved_fully & (excess <= 0).all(1) & (info == 0)
        enter = moved_fully & ~done
        j = excess.argmax(1)
        idx = torch.nonzero(enter)[:, 0]
        sigma[idx, j[idx]] = torch.sign(c[idx, j[idx]])
        out[rows[done]] = cur[done]
        solved[rows[done]] = True
        keep = ~done & (info == 0)  # a singular working set (duplicates): left to coordinate descent
        if not bool(keep.any()):
            break
        rows, cur, sigma, Hr, br, ar = rows[keep], cur[keep], sigma[keep], Hr[keep], br[keep], ar[keep]
    else:
        out[rows] = cur
    return out, solved


def _solve_working_set(H, bW, theta, alpha, alpha_from, cfg: SolverConfig):
    """Exact solutions of the working-set subproblems, warm-started at θ.

    Active-set Newton first. The rare rows where it cycles (ill-conditioned working sets:
    supports near the Gram's rank) get the one-at-a-time active-set method, and what still
    resists gets coordinate descent, which always converges, in bursts of 10 sweeps each
    followed by the exact Newton polish. ``cfg.max_cd_sweeps = 0`` turns both fallbacks off.
    """
    theta, solved = _newton(H, bW, theta, alpha, cfg.max_newton)
    if not bool(solved.all()) and cfg.max_cd_sweeps > 0:
        rest = torch.nonzero(~solved)[:, 0]
        log.debug("active-set Newton cycled for %d targets; one-at-a-time active set", len(rest))
        th, ok = _one_at_a_time(H[rest], bW[rest], theta[rest], alpha[rest], 4 * H.shape[1])
        theta[rest] = th
        solved[rest] = ok
    sweeps = 0
    while not bool(solved.all()) and sweeps < cfg.max_cd_sweeps:
        rest = torch.nonzero(~solved)[:, 0]
        log.debug("active-set steps cycled for %d targets; coordinate descent", len(rest))
        th = _coordinate_descent(H[rest], bW[rest], theta[rest], alpha[rest], 10)
        sweeps += 10
        th, ok = _newton(H[rest], bW[rest], th, alpha[rest], 2)
        theta[rest] = th
        solved[rest] = ok
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
        # support + the worst violators (at most a quarter of the support), never fewer than the minimum
        grow = torch.clamp(n_sup // _GROWTH, min=cfg.min_working_set)
        need = torch.clamp(n_sup + torch.minimum(n_viol, grow), min=cfg.min_working_set, max=allowed)
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
    H = torch.take(G, W[:, :, None] * G.shape[1] + W[:, None, :])  # G[W_t][:, W_t] per target
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


def solve_chunks(design, rhs, target_sq, alphas, amax, within, warm_start, warm_alpha, cfg: SolverConfig):
    """Solve every target, ``cfg.chunk`` targets at a time (inputs validated by the caller).

    Returns (coef, gaps, objectives, n_iter) with coef a list of (sources, values, n_targets,
    counts) per chunk.
    """
    T = rhs.shape[1]
    dev = torch.device(cfg.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {cfg.device!r} asked for, but no CUDA device is available; use cpu")
    G = torch.as_tensor(design, device=dev)
    coef: list = []
    gaps, objs, iters = np.zeros(T), np.zeros(T), np.zeros(T, dtype=np.int64)
    with _torch_threads(cfg.threads if dev.type == "cpu" else None):
        for start in range(0, T, cfg.chunk):
            _solve_columns(G, rhs, target_sq, alphas, amax, within, warm_start, warm_alpha, start,
                           cfg, coef, gaps, objs, iters)
    return coef, gaps, objs, iters
