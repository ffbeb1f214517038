"""The CovLasso's working-set subproblems, solved exactly (see :mod:`engine.core.covlasso_kernels`):
primal-dual active-set (semismooth Newton) steps with Cholesky factors kept across steps,
and the monotone active-set method where they stall. Every function works on a batch of
rows (targets) at once: (B, w, w) working-set Grams, or one (w, w) Gram shared by every row.
"""

from __future__ import annotations

import logging

import torch

from engine.core.covlasso_factors import (
    _append,
    _batched_submatrix,
    _capacitance_solve,
    _factor,
    _fresh_factor,
    _leading_solve,
    _matvec,
    _ordered,
    _pad_factor,
)
from engine.core.covlasso_types import SolverConfig

log = logging.getLogger(__name__)

# Growth limits: they keep the subproblems small and the guesses near the solution;
# neither changes the result (every solution is certified by its duality gap).
_GROWTH = 4  # a working set grows by at most 1/_GROWTH of the support per round (≥ min_working_set)
# an active-set guess adds at most max(_MIN_ADD, nnz/_GROWTH) features. (12 in cold first
# rounds, where every row starts from zero, was 10–15 % faster on a full-rank synthetic Gram at
# 15–60 sources but 5–10 % slower on the demo's near-rank Grams: dropped.)
_MIN_ADD = 4
_STALL = 3  # Newton steps without fewer KKT violations before the monotone method takes over


def _subproblem_objective(theta, c, b, alpha):
    """½θᵀHθ − bᵀθ + α‖θ‖₁ from c = b − Hθ (no product needed)."""
    return -0.5 * (theta * (b + c)).sum(1) + alpha[:, 0] * theta.abs().sum(1)


def _slack(H, alpha):
    """Rounding allowance of the subproblem's KKT test."""
    if H.dim() == 2:
        return 1e-9 * alpha + 1e-13 * torch.diagonal(H).amax()
    return 1e-9 * alpha + 1e-13 * torch.diagonal(H, dim1=1, dim2=2).amax(1, keepdim=True)


def _entering(c: torch.Tensor, nz: torch.Tensor, alpha: torch.Tensor, ban=None) -> torch.Tensor:
    """Zeros that violate ``|c_j| ≤ α``, only the largest excesses (see :func:`_newton`)."""
    excess = torch.where(nz if ban is None else nz | ban, 0.0, c.abs() - alpha)
    cap = min(c.shape[1], max(_MIN_ADD, int(nz.sum(1).max()) // _GROWTH))
    kth = torch.topk(excess, cap, dim=1).values[:, -1:]
    return (excess > 0) & (excess >= kth)


# ----------------------------------------------------------------------------- Newton (fast)
#
# The Newton steps keep each row's Cholesky factor from one step to the next: a factor of the
# Gram on an ordered list of *slots* (working-set positions) that holds the active set and, at
# most a few, columns that left it ("dead" slots). Entering columns are appended (a block
# update: one triangular solve against the factor, one small Cholesky of their Schur
# complement); leaving columns stay in the factor and are held at zero by a capacitance
# correction; a column that re-enters revives its slot. A row is refactored from scratch (its
# active set only) when its dead slots outnumber max(_DEAD_MIN, live/_DEAD_SHARE), and when an
# updated solve misses its own equations by more than the KKT test's rounding allowance
# (measured on the gradient every step computes anyway).
_DEAD_MIN = 8
_DEAD_SHARE = 4
# rows still iterating, as a share of the batch, below which the batch is compacted (copying
# the working-set Grams and factors of the rows that remain)
_COMPACT = 0.75


def _newton(H, bW, theta, alpha, max_steps, ban=None):
    """Primal-dual active-set (semismooth Newton) steps on (B, w, w) subproblems.

    With ``c = b − Hθ``, the next active set keeps the non-zeros whose sign agrees with
    ``c`` and adds the zeros with ``|c_j| > α`` — the largest excesses first, at most
    ``max(_MIN_ADD, nnz/_GROWTH)`` of them per step: adding every violator at once makes
    the guess overshoot. On it, ``H_AA θ_A = b_A − α·sign(c_A)`` is solved exactly with
    a Cholesky factor kept across the steps (see the note above :func:`_fresh_factor`):
    the entering columns are appended by decreasing excess and the guess is cut at the
    first column that depends on the ones before it (:func:`_factor`). A row is solved
    when the result is consistent — signs as assumed, ``|c_j| ≤ α`` off the support and
    ``c_j = α·sign_j`` on it — which are the KKT conditions. A row stops when its number
    of violations has not fallen for ``_STALL`` steps. Returns (θ, solved, best): ``best``
    is each row's iterate of lowest objective (its input if none was lower), where the
    monotone method starts.

    ``H``: (B, w, w), or one (w, w) Gram shared by every row (then ``ban`` (B, w), optional,
    marks the features a row may not use).
    """
    B, w = bW.shape
    dev = H.device
    out, solved = theta.clone(), torch.zeros(B, dtype=torch.bool, device=dev)
    rows = torch.arange(B, device=dev)
    cur, Hr, br, ar = theta, H, bW, alpha[:, None]
    c = br - _matvec(Hr, cur)
    best, f_best = theta.clone(), _subproblem_objective(cur, c, br, ar)
    fewest = torch.full((B,), w + 1, device=dev)
    since = torch.zeros(B, dtype=torch.int64, device=dev)
    slack = _slack(Hr, ar)
    alive = torch.ones(B, dtype=torch.bool, device=dev)  # rows still iterating
    slots = n = L = None  # the factors: slots (B, m), n (B,), L (B, m, m)
    refresh = torch.ones(B, dtype=torch.bool, device=dev)
    for _ in range(max_steps):
        nz = cur != 0
        kept = nz & (torch.sign(cur) == torch.sign(c))
        enter = _entering(c, nz, ar, ban)
        act = kept | enter
        sgn = torch.sign(torch.where(kept, cur, c))
        if slots is not None:
            used = torch.arange(slots.shape[1], device=dev) < n[:, None]
            live = used & torch.gather(act, 1, slots)
            n_dead = (used & ~live).sum(1)
            refresh |= n_dead > torch.clamp(live.sum(1) // _DEAD_SHARE, min=_DEAD_MIN)
            refresh &= alive
        fresh = refresh
        if slots is None or bool(refresh.all()):
            key = torch.where(kept, -1.0, -(c.abs() - ar) / ar)  # kept first, then by excess
            pos, valid = _ordered(act, key)
            slots, n, L = _fresh_factor(Hr, pos, valid)
            fresh = torch.ones_like(refresh)
        else:
            in_fac = torch.zeros(len(rows), w, dtype=torch.int64, device=dev).scatter_add_(1, slots, used.long()) > 0
            if bool(refresh.any()):
                r = torch.nonzero(refresh)[:, 0]
                key = torch.where(kept[r], -1.0, -(c[r].abs() - ar[r]) / ar[r])
                pos, valid = _ordered(act[r], key)
                s_r, n_r, L_r = _fresh_factor(Hr[r] if Hr.dim() == 3 else Hr, pos, valid)
                m2 = max(slots.shape[1], s_r.shape[1])
                slots, L = _pad_factor(slots, L, m2)
                s_r, L_r = _pad_factor(s_r, L_r, m2)
                slots[r], n[r], L[r] = s_r, n_r, L_r
            new_cols = enter & ~in_fac & ~refresh[:, None] & alive[:, None]
            if bool(new_cols.any()):
                epos, evalid = _ordered(new_cols, -(c.abs() - ar) / ar)
                slots, n, L, _ = _append(Hr, slots, n, L, epos, evalid)
        used = torch.arange(slots.shape[1], device=dev) < n[:, None]
        live = used & torch.gather(act, 1, slots)
        sign = torch.gather(sgn, 1, slots) * live
        x = _capacitance_solve(L, (torch.gather(br, 1, slots) - ar * sign) * live, used & ~live) * live
        new = torch.zeros_like(cur).scatter_add_(1, slots, x)
        c = br - _matvec(Hr, new)
        sign_full = torch.zeros_like(cur).scatter_add_(1, slots, sign)
        wrong = (sign_full != 0) & (torch.sign(new) != sign_full)
        outside = (sign_full == 0) & (c.abs() > ar + slack)
        if ban is not None:
            outside &= ~ban
        # an updated factor must solve its equations as well as the KKT test allows (else
        # the row is refactored and takes the step again)
        miss = ((torch.gather(c, 1, slots) - ar * sign).abs() * live).amax(1) > slack[:, 0]
        refresh = miss & ~fresh & alive
        n_viol = (wrong | outside).sum(1)
        done = (n_viol == 0) & ~refresh & alive
        f = _subproblem_objective(new, c, br, ar)
        lower = (f < f_best) & alive
        best[rows[lower]], f_best = new[lower], torch.where(lower, f, f_best)
        since = torch.where(n_viol < fewest, 0, since + ~refresh)
        fewest = torch.minimum(fewest, n_viol)
        out[rows[done]] = new[done]
        solved[rows[done]] = True
        alive &= ~done & (since < _STALL)
        n_alive = int(alive.sum())
        if n_alive == 0:
            break
        cur = new
        if n_alive < _COMPACT * len(alive):
            k = alive
            cur, c, rows, br, ar = cur[k], c[k], rows[k], br[k], ar[k]
            Hr, ban = Hr[k] if Hr.dim() == 3 else Hr, None if ban is None else ban[k]
            f_best, fewest, since, slack = f_best[k], fewest[k], since[k], slack[k]
            slots, n, L, refresh, alive = slots[k], n[k], L[k], refresh[k], alive[k]
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
