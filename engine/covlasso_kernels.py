"""The CovLasso's batched torch kernels (see :mod:`engine.covlasso` for the problem).

Algorithm (all targets of a chunk advance together, as batched torch tensors):

1. **Prediction** (warm starts). A solution θ at α' stays on a straight line as α moves
   until its support changes; one solve on the old support and signs at the new α gives
   that line's point, and the full gradient there says which features will enter.
2. **Working sets.** Each target keeps a small set of candidate features: its current
   support plus the features that violate the KKT condition ``|b_j − G_jθ| ≤ α`` the most.
3. **Subproblem**, solved exactly on the working set:

   * *primal-dual active set* (semismooth Newton) steps guess the support and signs from
     the gradient and solve ``G_AA θ_A = b_A − α·sign`` for it; a target is solved when the
     guess is consistent (signs as assumed, ``|c_j| ≤ α`` off the support), which is the
     KKT system. Columns that are (numerically) combinations of the ones before them are
     left out of the guess: the Gram of logits has as many zero eigenvalues as there are
     categories beyond the penultimate width, and a guess past that rank is singular.
   * where the guesses stop improving (they can cycle on ill-conditioned sets), a
     *monotone active-set method* takes over: it moves only as far as the signs stay
     feasible, lets features in by blocks that halve down to one at a time when a block
     fails, and exchanges a dependent feature along the null direction of the set. Every
     step lowers the objective or shrinks an entering block, so it cannot cycle.
4. **Certificate.** The full gradient ``b − Gθ`` over *all* features gives sklearn's
   duality gap per target; targets whose gap exceeds ``tol·E[g_t²]`` go round again with
   their violators added. Nothing unconverged is returned silently: a
   :class:`~engine.covlasso.ConvergenceWarning` names how many targets and the worst gap.

Cold starts at small α go down a short ladder of α values from α_max (each rung a warm
start for the next); paths over α use the previous grid point.
"""

from __future__ import annotations

import contextlib
import logging
import warnings

import numpy as np
import torch

from engine.covlasso_types import CovLassoResult, SolverConfig
from engine.errors import InvalidInputError
from engine.sparse import SparseColumns

log = logging.getLogger(__name__)

_GROUP = 128  # targets per working-set group (similar sizes together: little padding)
# Growth limits: they keep the subproblems small and the guesses near the solution;
# neither changes the result (every solution is certified by its duality gap).
_GROWTH = 4  # a working set grows by at most 1/_GROWTH of the support per round (≥ min_working_set)
_MIN_ADD = 4  # an active-set guess adds at most max(_MIN_ADD, nnz/_GROWTH) features
# A column whose squared distance to the span of the columns before it (in the Gram's metric)
# is below _PIVOT of its squared norm counts as a combination of them (cond ≳ 1/_PIVOT).
_PIVOT = 1e-10
_STALL = 3  # Newton steps without fewer KKT violations before the monotone method takes over
# The full gradient b − θG uses a sparse × dense product while θ has fewer non-zeros than
# this share of its entries (else one dense GEMM).
_SPARSE_BELOW = 0.05


# ----------------------------------------------------------------------------- full problem


def _gradient(G: torch.Tensor, b: torch.Tensor, theta: torch.Tensor, forbid) -> torch.Tensor:
    """c = b − θG for every target row (θ is sparse: use a CSR product); forbidden → 0."""
    nnz = int((theta != 0).sum())
    if nnz == 0:
        c = b.clone()
    elif nnz < _SPARSE_BELOW * theta.numel():
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


# ----------------------------------------------------------------------------- active sets


def _batched_submatrix(H: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """``H[b][pos_b][:, pos_b]`` for every b: (B, w, w), (B, s) → (B, s, s).

    One flat gather per batch row (~2.5× faster than three-tensor advanced indexing here).
    """
    B, w, _ = H.shape
    s = pos.shape[1]
    flat = (pos[:, :, None] * w + pos[:, None, :]).reshape(B, s * s)
    return H.reshape(B, w * w).gather(1, flat).reshape(B, s, s)


def _shared_submatrix(G: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """``G[pos_b][:, pos_b]`` for every row b of ``pos`` from one shared (P, P) G: (B, s, s)."""
    return torch.take(G, pos[:, :, None] * G.shape[1] + pos[:, None, :])


def _ordered(active: torch.Tensor, key: torch.Tensor):
    """Positions of the active features, by increasing ``key``, padded to the largest set.

    Returns (pos (B, s), valid (B, s)): ``valid`` is False on the padding.
    """
    s = max(int(active.sum(1).max()), 1)
    pos = torch.argsort(torch.where(active, key, float("inf")), dim=1, stable=True)[:, :s]
    return pos, torch.gather(active, 1, pos)


def _factor(sub: torch.Tensor, valid: torch.Tensor):
    """Cholesky factor of the gathered systems ``sub`` (B, s, s) (identity on the padding)
    and, per row, the first position whose column is a combination of the ones before it
    (s if none).

    Only the leading block before that position is used (:func:`_leading_solve`): the
    factor of a leading block is the leading block of the factor.
    """
    s = sub.shape[1]
    eye = torch.eye(s, dtype=sub.dtype, device=sub.device)
    Hs = torch.where(valid[:, :, None] & valid[:, None, :], sub, eye)
    L, info = torch.linalg.cholesky_ex(Hs)
    ar = torch.arange(s, device=sub.device)
    pivot = torch.diagonal(L, dim1=1, dim2=2) ** 2
    bad = ~(pivot >= _PIVOT * torch.diagonal(Hs, dim1=1, dim2=2))  # NaN counts as bad
    bad |= (info > 0)[:, None] & (ar >= info[:, None] - 1)
    first = torch.where(bad & valid, ar, s).amin(1)
    return Hs, L, first


def _leading_solve(L: torch.Tensor, first: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve with the leading ``first × first`` block of each factor (zeros beyond)."""
    s = L.shape[1]
    lead = torch.arange(s, device=L.device) < first[:, None]
    if bool(lead.all()):
        return torch.cholesky_solve(rhs[:, :, None], L)[:, :, 0]
    eye = torch.eye(s, dtype=L.dtype, device=L.device)
    Lk = torch.where(lead[:, :, None] & lead[:, None, :], L, eye)
    return torch.cholesky_solve((rhs * lead)[:, :, None], Lk)[:, :, 0] * lead


def _subproblem_objective(theta, c, b, alpha):
    """½θᵀHθ − bᵀθ + α‖θ‖₁ from c = b − Hθ (no product needed)."""
    return -0.5 * (theta * (b + c)).sum(1) + alpha[:, 0] * theta.abs().sum(1)


def _slack(H, alpha):
    """Rounding allowance of the subproblem's KKT test."""
    return 1e-9 * alpha + 1e-13 * torch.diagonal(H, dim1=1, dim2=2).amax(1, keepdim=True)


def _entering(c: torch.Tensor, nz: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Zeros that violate ``|c_j| ≤ α``, only the largest excesses (see :func:`_newton`)."""
    excess = torch.where(nz, 0.0, c.abs() - alpha)
    cap = min(c.shape[1], max(_MIN_ADD, int(nz.sum(1).max()) // _GROWTH))
    kth = torch.topk(excess, cap, dim=1).values[:, -1:]
    return (excess > 0) & (excess >= kth)


# ----------------------------------------------------------------------------- Newton (fast)


def _newton(H, bW, theta, alpha, max_steps):
    """Primal-dual active-set (semismooth Newton) steps on (B, w, w) subproblems.

    With ``c = b − Hθ``, the next active set keeps the non-zeros whose sign agrees with
    ``c`` and adds the zeros with ``|c_j| > α`` — the largest excesses first, at most
    ``max(_MIN_ADD, nnz/_GROWTH)`` of them per step: adding every violator at once makes
    the guess overshoot. On it, ``H_AA θ_A = b_A − α·sign(c_A)`` is solved exactly
    (Cholesky on the active set only, padded to the largest in the batch); the kept
    features come first and the entering ones by decreasing excess, and the guess is cut
    at the first column that depends on the ones before it (:func:`_factor`). A row is
    solved when the result is consistent — signs as assumed and ``|c_j| ≤ α`` off the
    support — which are the KKT conditions. A row stops when its number of violations has
    not fallen for ``_STALL`` steps. Returns (θ, solved, best): ``best`` is each row's
    iterate of lowest objective (its input if none was lower), where the monotone method
    starts.
    """
    B, w = bW.shape
    out, solved = theta.clone(), torch.zeros(B, dtype=torch.bool, device=H.device)
    rows = torch.arange(B, device=H.device)
    cur, Hr, br, ar = theta, H, bW, alpha[:, None]
    c = br - torch.bmm(Hr, cur[:, :, None])[:, :, 0]
    best, f_best = theta.clone(), _subproblem_objective(cur, c, br, ar)
    fewest = torch.full((B,), w + 1, device=H.device)
    since = torch.zeros(B, dtype=torch.int64, device=H.device)
    for _ in range(max_steps):
        nz = cur != 0
        kept = nz & (torch.sign(cur) == torch.sign(c))
        enter = _entering(c, nz, ar)
        key = torch.where(kept, -1.0, -(c.abs() - ar) / ar)  # kept first, then by excess
        pos, valid = _ordered(kept | enter, key)
        Hs, L, first = _factor(_batched_submatrix(Hr, pos), valid)
        valid &= torch.arange(pos.shape[1], device=H.device) < first[:, None]
        sign = torch.sign(torch.gather(torch.where(kept, cur, c), 1, pos)) * valid
        x = _leading_solve(L, first, (torch.gather(br, 1, pos) - ar * sign) * valid) * valid
        new = torch.zeros_like(cur).scatter_(1, pos, x)
        c = br - torch.bmm(Hr, new[:, :, None])[:, :, 0]
        sign_full = torch.zeros_like(cur).scatter_(1, pos, sign)
        wrong = (sign_full != 0) & (torch.sign(new) != sign_full)
        outside = (sign_full == 0) & (c.abs() > ar + _slack(Hr, ar))
        n_viol = (wrong | outside).sum(1)
        done = n_viol == 0
        f = _subproblem_objective(new, c, br, ar)
        lower = f < f_best
        best[rows[lower]], f_best = new[lower], torch.where(lower, f, f_best)
        since = torch.where(n_viol < fewest, 0, since + 1)
        fewest = torch.minimum(fewest, n_viol)
        out[rows[done]] = new[done]
        solved[rows[done]] = True
        keep = ~done & (since < _STALL)
        if not bool(keep.any()):
            break
        cur, c, rows, Hr, br, ar = new[keep], c[keep], rows[keep], Hr[keep], br[keep], ar[keep]
        f_best, fewest, since = f_best[keep], fewest[keep], since[keep]
    return out, solved, best


# ----------------------------------------------------------------------------- monotone (safe)


def _null_exchange(Hs, L, first, th_p, sig_p, c_p, valid, alpha):
    """Rows whose column at position p depends on the columns before it (all non-zero):
    move along the null direction of those columns until a coefficient reaches zero (the
    exchange step of the exact active-set method; Osborne et al. 2000, §4).

    ``v`` solves ``H v = 0`` on positions ≤ p with ``v_p = 1``. Along ``t·d·v`` (d = ±1) the
    quadratic part of the objective is constant, so it changes linearly in t; the direction
    that lowers it is taken, and since the objective is bounded below some coefficient
    reaches zero and leaves. Returns (new θ on pos, new σ on pos).
    """
    s = Hs.shape[1]
    p = first.clamp(max=s - 1)
    at_p = torch.arange(s, device=Hs.device) == p[:, None]
    col = torch.gather(Hs, 2, p[:, None, None].expand(-1, s, 1))[:, :, 0]
    v = (at_p.to(Hs.dtype) - _leading_solve(L, first, col)) * valid
    p_zero = (th_p * at_p).sum(1) == 0
    a, sig_at_p = alpha[:, 0], (sig_p * at_p).sum(1)
    # slope of F along d·v: d·(−cᵀv + α Σ_{j<p} σ_j v_j) + α·(1 if θ_p = 0 else σ_p d)
    lin = -(c_p * v).sum(1) + a * (sig_p * v * ~at_p).sum(1)
    up = lin + torch.where(p_zero, a, a * sig_at_p)
    down = -lin + torch.where(p_zero, a, -a * sig_at_p)
    d = torch.where(up <= down, 1.0, -1.0).to(Hs.dtype)
    slope = torch.minimum(up, down)
    dv = d[:, None] * v
    towards = (th_p != 0) & (th_p * dv < 0) & valid
    tj = torch.where(towards, -th_p / torch.where(towards, dv, 1.0), float("inf"))
    t = tj.amin(1)
    moves = torch.isfinite(t) & ((slope < 0) | (~p_zero & (slope <= 0)))
    new = torch.where(moves[:, None], th_p + torch.where(moves, t, 0.0)[:, None] * dv, th_p)
    leaves = (moves[:, None] & towards & (tj <= t[:, None])) | (~moves[:, None] & at_p)
    new = torch.where(leaves, 0.0, new)
    new_sig = torch.where(leaves, 0.0, torch.where(at_p & moves[:, None], d[:, None], sig_p))
    return new, new_sig


def _monotone_step(Hr, br, ar, th, sig, stamp):
    """One step of the monotone active-set method (see :func:`_monotone`).

    Returns (θ, σ, full, reject) for every row: ``full`` when θ reached the minimiser on
    its signs, ``reject`` when entering features were withdrawn instead of moving.
    """
    pos, valid = _ordered(sig != 0, stamp)
    s = pos.shape[1]
    Hs, L, first = _factor(_batched_submatrix(Hr, pos), valid)
    th_p, sig_p = torch.gather(th, 1, pos) * valid, torch.gather(sig, 1, pos) * valid
    b_p = torch.gather(br, 1, pos) * valid
    entering = valid & (th_p == 0)  # the newest block, at the end of the order
    ar_s = torch.arange(s, device=Hr.device)
    first_in = torch.where(entering, ar_s, s).amin(1)
    singular = first < s
    exchange = singular & (first <= first_in)  # dependent among the non-zeros or the first entering
    x = _leading_solve(L, first, (b_p - ar * sig_p) * valid) * valid
    wrong = valid & (x * sig_p <= 0) & ~singular[:, None]
    # entering features that would start with the wrong sign (or depend on the others) withdraw
    withdraw = entering & (wrong | (singular & ~exchange)[:, None] & (ar_s >= first[:, None]))
    reject = withdraw.any(1)
    tj = torch.where(wrong, th_p / torch.where(wrong, th_p - x, 1.0), float("inf"))
    t = tj.amin(1).clamp(max=1.0)
    ratio = torch.where(wrong & (tj <= t[:, None]), 0.0, th_p + t[:, None] * (x - th_p))
    proj = torch.where(wrong, 0.0, x)  # the Newton point with the flipped signs removed

    def f(z):
        return 0.5 * (z * torch.bmm(Hs, z[:, :, None])[:, :, 0]).sum(1) - (b_p * z).sum(1) + ar[:, 0] * z.abs().sum(1)

    use_proj = wrong.any(1) & (f(proj) < f(ratio))
    new = torch.where(use_proj[:, None], proj, ratio)
    new_sig = torch.where(new != 0, torch.sign(new), sig_p)
    new_sig = torch.where(valid & (th_p != 0) & (new == 0), 0.0, new_sig)
    if bool(exchange.any()):
        c_p = b_p - torch.bmm(Hs, th_p[:, :, None])[:, :, 0]
        n_new, n_sig = _null_exchange(Hs, L, first, th_p, sig_p, c_p, valid, ar)
        new = torch.where(exchange[:, None], n_new, new)
        new_sig = torch.where(exchange[:, None], n_sig, new_sig)
    new = torch.where(reject[:, None], th_p, new)
    new_sig = torch.where(reject[:, None], torch.where(withdraw, 0.0, sig_p), new_sig)
    th = torch.zeros_like(th).scatter_(1, pos, new * valid)
    sig = torch.zeros_like(sig).scatter_(1, pos, new_sig * valid)
    full = ~singular & ~reject & ~(valid & (x * sig_p <= 0)).any(1)
    return th, sig, full, reject


def _monotone(H, bW, theta, alpha, max_steps):
    """The monotone active-set method on (B, w, w) subproblems, for the rows where
    :func:`_newton` stalls (Osborne, Presnell & Turlach 2000, with block entering).

    Working signs σ (the support plus entering features) start as sign(θ). Each step solves
    ``H_AA x = b_A − α·σ_A``: if a feature entering at zero would start with the wrong sign,
    the block is withdrawn and the row's block size halves (a single violator always starts
    with its gradient's sign, so this ends); otherwise θ moves towards x, to the first
    coefficient that reaches zero (which leaves) or, if lower, to x with its sign-flipped
    coefficients removed. After a full step the largest violators enter (the block doubles).
    Dependent columns are exchanged along the null direction (:func:`_null_exchange`).
    The objective never increases, so it cannot cycle. Returns (θ, solved).
    """
    B, w = bW.shape
    out, solved = theta.clone(), torch.zeros(B, dtype=torch.bool, device=H.device)
    rows = torch.arange(B, device=H.device)
    th, sig, Hr, br, ar = theta.clone(), torch.sign(theta), H, bW, alpha[:, None]
    stamp = torch.zeros_like(th)  # entry order: the newest features are factored last
    block = torch.full((B, 1), float(max(_MIN_ADD, w // 8)), dtype=H.dtype, device=H.device)
    for step in range(max_steps):
        th, sig, full, reject = _monotone_step(Hr, br, ar, th, sig, stamp)
        block = torch.where(reject[:, None], (block / 2).floor().clamp(min=1.0), block)
        c = br - torch.bmm(Hr, th[:, :, None])[:, :, 0]
        excess = torch.where(sig != 0, -1.0, c.abs() - ar - _slack(Hr, ar))
        done = full & (excess <= 0).all(1)
        grow = full & ~done
        if bool(grow.any()):
            k = min(w, int(block[grow].max()))
            top = torch.topk(excess, k, dim=1)
            enters = (top.values > 0) & (torch.arange(k, device=H.device) < block) & grow[:, None]
            sig.scatter_(1, top.indices, torch.where(enters, torch.sign(torch.gather(c, 1, top.indices)),
                                                     torch.gather(sig, 1, top.indices)))
            order = step + 1 + torch.arange(k, device=H.device, dtype=H.dtype) / (k + 1)
            stamp.scatter_(1, top.indices, torch.where(enters, order, torch.gather(stamp, 1, top.indices)))
            block = torch.where(grow[:, None], torch.clamp(2 * block, max=float(w)), block)
        out[rows[done]] = th[done]
        solved[rows[done]] = True
        keep = ~done
        if not bool(keep.any()):
            break
        rows, th, sig, stamp, Hr, br, ar, block = (z[keep] for z in (rows, th, sig, stamp, Hr, br, ar, block))
    else:
        out[rows] = th
    return out, solved


def _solve_working_set(H, bW, theta, alpha, cfg: SolverConfig):
    """Exact solutions of the working-set subproblems, warm-started at θ: Newton steps
    first, the monotone method for the rows where they stall (from the lowest iterate).
    ``cfg.monotone_steps = 0`` turns the monotone method off."""
    theta, solved, best = _newton(H, bW, theta, alpha, cfg.max_newton)
    rest = torch.nonzero(~solved)[:, 0]
    theta[rest] = best[rest]
    if len(rest) and cfg.monotone_steps > 0:
        log.debug("active-set Newton stalled for %d targets; monotone active set", len(rest))
        theta[rest], _ = _monotone(H[rest], bW[rest], best[rest], alpha[rest],
                                   cfg.monotone_steps * H.shape[1])
    return theta


# ----------------------------------------------------------------------------- rounds


def _predict(G, b, theta, alpha):
    """θ moved along its current segment of the α path: solved on its own support and
    signs at the new α (rows without support, or with a dependent one, are left as they are).

    The gradient at the predicted point ranks the features that will enter far better
    than the gradient at the old solution, where every feature near the old α ties.
    """
    out = theta.clone()
    n_sup = (theta != 0).sum(1)
    order = torch.argsort(n_sup)
    order = order[n_sup[order] > 0]
    for start in range(0, len(order), _GROUP):
        grp = order[start : start + _GROUP]
        th = theta[grp]
        pos, valid = _ordered(th != 0, torch.zeros_like(th))
        _, L, first = _factor(_shared_submatrix(G, pos), valid)
        sign = torch.sign(torch.gather(th, 1, pos)) * valid
        x = _leading_solve(L, first, (torch.gather(b[grp], 1, pos) - alpha[grp, None] * sign) * valid) * valid
        regular = first == pos.shape[1]
        out[grp[regular]] = torch.zeros_like(th[regular]).scatter_(1, pos[regular], x[regular])
    return out


def _solve_at(G, b, ysq, alpha, forbid, theta, warm, cfg: SolverConfig):
    """Working-set rounds at fixed α until every target's duality gap is below tolerance.

    ``warm`` marks the rows whose θ solves a nearby α: they start from :func:`_predict`.
    """
    T, P = b.shape
    n_iter = torch.zeros(T, dtype=torch.int64, device=b.device)
    allowed = P - (1 if forbid is not None else 0)
    if bool(warm.any()):
        theta[warm] = _predict(G, b[warm], theta[warm], alpha[warm])
    for _ in range(cfg.max_outer):
        c = _gradient(G, b, theta, forbid)
        gap, _ = _gap_and_objective(theta, c, b, ysq, alpha)
        todo = gap > cfg.tol * ysq
        if not bool(todo.any()):
            break
        idx = torch.nonzero(todo)[:, 0]
        n_iter[idx] += 1
        n_sup = (theta[idx] != 0).sum(1)
        # support + the largest gradients outside it (a quarter of the support, at least the
        # minimum): violators first, then the features nearest to violating
        grow = torch.clamp(n_sup // _GROWTH, min=cfg.min_working_set)
        need = torch.clamp(n_sup + grow, max=allowed)
        order = torch.argsort(need)
        for start in range(0, len(order), _GROUP):
            grp = idx[order[start : start + _GROUP]]
            w = int(need[order[start : start + _GROUP]].max())
            theta[grp] = _round(G, b[grp], theta[grp], c[grp], alpha[grp],
                                None if forbid is None else forbid[grp], w, cfg)
    c = _gradient(G, b, theta, forbid)
    gap, obj = _gap_and_objective(theta, c, b, ysq, alpha)
    return theta, gap, obj, n_iter


def _round(G, b, th, c, al, forbid, w, cfg: SolverConfig):
    """One working-set round for a group of targets of similar working-set size ``w``."""
    score = c.abs() / al[:, None]
    score[th != 0] = float("inf")
    if forbid is not None:
        score[torch.arange(len(th), device=th.device), forbid] = -1.0
    W = torch.topk(score, w, dim=1).indices
    H = _shared_submatrix(G, W)
    thW = _solve_working_set(H, torch.gather(b, 1, W), torch.gather(th, 1, W), al, cfg)
    return torch.zeros_like(th).scatter_(1, W, thW)


# ----------------------------------------------------------------------------- chunks


def _warm_rows(warm_start, sl: slice, like: torch.Tensor) -> torch.Tensor:
    """(targets of ``sl``, P) warm-start rows from a dense (P, T) array, a
    :class:`SparseColumns` or a :class:`CovLassoResult`."""
    if isinstance(warm_start, CovLassoResult):
        warm_start = warm_start.sparse
    if isinstance(warm_start, SparseColumns):
        part = warm_start.select(np.arange(sl.start, sl.stop))
        out = torch.zeros_like(like)
        rows = torch.as_tensor(part.column_index(), device=like.device)
        out[rows, torch.as_tensor(part.sources, device=like.device)] = torch.as_tensor(part.values, device=like.device)
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


def _shared_design(design: np.ndarray, dev: torch.device) -> torch.Tensor:
    """The design Gram as a tensor without a copy on the CPU (a read-only memory map stays
    one: the kernels only read it, and a per-target solve touches a few rows of it)."""
    if dev.type == "cpu":
        with warnings.catch_warnings():  # "not writable": nothing writes to it
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(np.asarray(design))
    return torch.as_tensor(np.asarray(design), device=dev)


def _solve_columns(G, rhs, target_sq, alphas, amax, forbid, warm_start, sl: slice, cfg) -> CovLassoResult:
    """Solve the targets of one chunk (the columns ``sl`` of ``rhs``)."""
    dev = G.device
    b = torch.as_tensor(np.ascontiguousarray(rhs[:, sl].T), device=dev)
    ysq = torch.as_tensor(target_sq[sl].copy(), device=dev)
    al = torch.as_tensor(alphas[sl], device=dev)
    ban = None if forbid is None else torch.as_tensor(forbid[sl], device=dev)
    theta = _warm_rows(warm_start, sl, b) if warm_start is not None else torch.zeros_like(b)
    if ban is not None:
        theta[torch.arange(len(theta), device=dev), ban] = 0.0
    theta[torch.as_tensor(amax[sl] <= alphas[sl], device=dev)] = 0.0
    warm = (theta != 0).any(1)
    th, gap, obj, n_it = _solve_at(G, b, ysq, al, ban, theta, warm, cfg)
    rows, cols = torch.nonzero(th, as_tuple=True)  # row-major: by target, then source
    coef = SparseColumns.from_entries(rows.cpu().numpy(), cols.cpu().numpy(), th[rows, cols].cpu().numpy(),
                                      th.shape[0], G.shape[0])
    gap, obj = gap.cpu().numpy(), obj.cpu().numpy()
    return CovLassoResult(coef, alphas[sl].copy(), gap, n_it.cpu().numpy(), gap <= cfg.tol * target_sq[sl], obj)


def solve_chunks(design, rhs, target_sq, alphas, amax, forbid, warm_start, cfg: SolverConfig) -> CovLassoResult:
    """Solve every target (column of ``rhs``), ``cfg.chunk`` targets at a time (inputs
    validated by the caller: :func:`engine.covlasso.solve_covlasso`).

    forbid : (T,) source index target t may not use (within one model), or None.
    """
    T = rhs.shape[1]
    dev = torch.device(cfg.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {cfg.device!r} asked for, but no CUDA device is available; use cpu")
    G = _shared_design(design, dev)
    parts = []
    with _torch_threads(cfg.threads if dev.type == "cpu" else None):
        for start in range(0, T, cfg.chunk):
            sl = slice(start, min(T, start + cfg.chunk))
            parts.append(_solve_columns(G, rhs, target_sq, alphas, amax, forbid, warm_start, sl, cfg))
    return CovLassoResult.concat(parts)
