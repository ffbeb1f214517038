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


def _support(theta: torch.Tensor, rows: torch.Tensor | None = None):
    """The non-zeros of θ's rows (all, or ``rows``) in index order, padded to the largest:
    (pos (R, s), valid (R, s)). One pass over θ (an argsort would cost P log P per row)."""
    rr, cc = torch.nonzero(theta, as_tuple=True)
    R = theta.shape[0]
    if rows is not None:  # keep the entries of ``rows``, renumbered by their place in it
        where = torch.full((R,), -1, dtype=torch.int64, device=theta.device)
        where[rows] = torch.arange(len(rows), device=theta.device)
        rr = where[rr]
        keep = rr >= 0
        rr, cc, R = rr[keep], cc[keep], len(rows)
    counts = torch.bincount(rr, minlength=R)
    s = max(int(counts.max()) if R else 0, 1)
    slot = torch.arange(len(rr), device=theta.device) - (torch.cumsum(counts, 0) - counts)[rr]
    pos = torch.zeros(R, s, dtype=torch.int64, device=theta.device)
    valid = torch.zeros(R, s, dtype=torch.bool, device=theta.device)
    pos[rr, slot], valid[rr, slot] = cc, True
    return pos, valid


def _certify(G: torch.Tensor, b, ysq, alpha, theta, forbid):
    """The gradient ``c = b − θG`` of every row (forbidden sources → 0), sklearn's duality
    gap (Gram form, normalised by N) and the primal objective.

    θ is sparse: the product reads one Gram row per non-zero (a CSR product), and every
    sum over θ runs over its non-zeros; the gap's dual norm is one pass over c.
    """
    R, P = theta.shape
    rr, cc = torch.nonzero(theta, as_tuple=True)
    vals = theta[rr, cc]
    if len(rr) == 0:
        c = b.clone()
    elif len(rr) < _SPARSE_BELOW * theta.numel():
        crow = torch.zeros(R + 1, dtype=torch.int64, device=theta.device)
        crow[1:] = torch.cumsum(torch.bincount(rr, minlength=R), 0)
        with warnings.catch_warnings():  # "sparse CSR support is in beta": the product is exact
            warnings.simplefilter("ignore", UserWarning)
            csr = torch.sparse_csr_tensor(crow, cc, vals, size=(R, P))
            c = torch.addmm(b, csr, G, beta=1.0, alpha=-1.0)
    else:
        c = torch.addmm(b, theta, G, beta=1.0, alpha=-1.0)
    if forbid is not None:
        c[torch.arange(R, device=c.device), forbid] = 0.0

    def per_row(x):
        return torch.zeros(R, dtype=theta.dtype, device=theta.device).index_add_(0, rr, x)

    b_theta = per_row(b[rr, cc] * vals)
    r2 = torch.clamp(ysq - b_theta - per_row(c[rr, cc] * vals), min=0.0)  # E[(y − θᵀf)²]
    l1 = per_row(vals.abs())
    dual_norm = torch.linalg.vector_norm(c, ord=float("inf"), dim=1)
    const = torch.where(dual_norm > alpha, alpha / torch.clamp(dual_norm, min=1e-300), 1.0)
    gap = 0.5 * r2 * (1 + const**2) + alpha * l1 - const * (ysq - b_theta)
    gap = torch.where(dual_norm > alpha, gap, r2 + alpha * l1 - (ysq - b_theta))
    return c, torch.clamp(gap, min=0.0), 0.5 * r2 + alpha * l1


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


def _predict(G, b, theta, alpha, rows, pos, valid):
    """θ of ``rows`` moved along its current segment of the α path, in place: solved on its
    own support (``pos``/``valid``: :func:`_support` of those rows) and signs at the new α
    (rows with a dependent support are left as they are).

    The gradient at the predicted point ranks the features that will enter far better
    than the gradient at the old solution, where every feature near the old α ties.
    """
    P = theta.shape[1]
    n_sup = valid.sum(1)
    order = torch.argsort(n_sup)
    order = order[n_sup[order] > 0]
    for start in range(0, len(order), _GROUP):
        grp = order[start : start + _GROUP]
        r = rows[grp]
        s = max(int(n_sup[grp].max()), 1)
        pg, vg = pos[grp, :s], valid[grp, :s]
        _, L, first = _factor(_shared_submatrix(G, pg), vg)
        flat = r[:, None] * P + pg
        sign = torch.sign(torch.take(theta, flat)) * vg
        x = _leading_solve(L, first, (torch.take(b, flat) - alpha[r, None] * sign) * vg) * vg
        ok = vg & (first == s)[:, None]
        theta[r[:, None].expand_as(pg)[ok], pg[ok]] = x[ok]


def _solve_at(G, b, ysq, alpha, forbid, theta, warm, cfg: SolverConfig, c_prev=None):
    """Working-set rounds at fixed α until every target's duality gap is below tolerance
    (at most ``cfg.max_outer`` rounds per target). ``theta`` is updated in place.

    ``warm`` marks the rows whose θ solves a nearby α: they start from :func:`_predict`.
    ``c_prev`` (a path's previous α): the gradient ``b − θG`` at those θ; then the first
    round of the warm rows picks its working set from it (:func:`_candidate_round`) instead
    of from a full gradient at the predicted point. A full gradient is computed only for
    the rows whose θ changed since their last one. Returns (θ, gap, objective, rounds, c),
    ``c`` the gradient at the returned θ (the next α's ``c_prev``).
    """
    T, P = b.shape
    n_iter = torch.zeros(T, dtype=torch.int64, device=b.device)
    allowed = P - (1 if forbid is not None else 0)
    if bool(warm.any()):
        rows = torch.nonzero(warm)[:, 0]
        pos, valid = _support(theta, rows)
        _predict(G, b, theta, alpha, rows, pos, valid)
        if c_prev is not None and _candidate_round(G, b, theta, c_prev, alpha, forbid, rows, pos, valid,
                                                   allowed, cfg):
            n_iter[rows] += 1
    c, gap, obj = _certify(G, b, ysq, alpha, theta, forbid)
    while True:
        todo = (gap > cfg.tol * ysq) & (n_iter < cfg.max_outer)
        if not bool(todo.any()):
            return theta, gap, obj, n_iter, c
        idx = torch.nonzero(todo)[:, 0]
        n_iter[idx] += 1
        th = theta[idx]
        nz = th != 0
        n_sup = nz.sum(1)
        # support + the largest gradients outside it (a quarter of the support, at least the
        # minimum): violators first, then the features nearest to violating
        grow = torch.clamp(n_sup // _GROWTH, min=cfg.min_working_set)
        need = torch.clamp(n_sup + grow, max=allowed)
        score = c[idx].abs() / alpha[idx, None]
        score[nz] = float("inf")
        if forbid is not None:
            score[torch.arange(len(idx), device=b.device), forbid[idx]] = -1.0
        _rounds(G, b, theta, alpha, idx, None, score, need, cfg)
        fresh = _certify(G, b[idx], ysq[idx], alpha[idx], theta[idx], None if forbid is None else forbid[idx])
        c[idx], gap[idx], obj[idx] = fresh


def _rounds(G, b, theta, alpha, rows, features, score, need, cfg: SolverConfig) -> None:
    """One working-set round for each of ``rows``, in place: the ``need`` features of highest
    ``score`` (the support must score ∞: it is overwritten), solved exactly. ``features``
    (R, n): the features ``score`` is for (None: all P). Rows of similar working-set size
    go together (little padding)."""
    P = theta.shape[1]
    order = torch.argsort(need)
    for start in range(0, len(order), _GROUP):
        grp = order[start : start + _GROUP]
        r = rows[grp]
        W = torch.topk(score[grp], int(need[grp].max()), dim=1).indices
        if features is not None:
            W = torch.gather(features[grp], 1, W)
        flat = r[:, None] * P + W
        thW = _solve_working_set(_shared_submatrix(G, W), torch.take(b, flat), torch.take(theta, flat),
                                 alpha[r], cfg)
        theta[r[:, None].expand_as(W), W] = thW


# How many candidates a path's first working set is picked from, per feature it adds.
_CANDIDATES = 2


def _candidate_round(G, b, theta, c_prev, alpha, forbid, rows, pos, valid, allowed: int, cfg: SolverConfig) -> bool:
    """The first working-set round of ``rows`` at a path's next α, without a full gradient
    (in place; False when P is too small for it to pay, and nothing was done).

    The features that enter as α decreases are, but for a few, those whose ``|c_j|`` was
    largest at the previous α (the ranking of the sequential strong rule). The exact
    gradient at the predicted θ is read for ``_CANDIDATES`` times as many of them as the
    working set adds — from the Gram's support rows at those columns only (support ×
    candidates entries, not support × P) — and the largest join the support. A feature
    missed here violates the certificate that follows, and enters in the next round.
    """
    P = theta.shape[1]
    n_sup = valid.sum(1)
    grow = torch.clamp(n_sup // _GROWTH, min=cfg.min_working_set)
    need = torch.clamp(n_sup + grow, max=allowed)
    # enough candidates for every row to fill the largest working set of any group
    m = max(_CANDIDATES * int(grow.max()), int(need.max()) - int(n_sup.min()))
    s = pos.shape[1]
    if m + s + 1 > P:
        return False
    top = torch.topk(c_prev[rows].abs(), m + s + 1, dim=1).indices  # the support is among them
    out = ((top[:, :, None] == pos[:, None, :]) & valid[:, None, :]).any(2)
    if forbid is not None:
        out |= top == forbid[rows, None]
    rank = torch.where(out, m + s + 1, torch.arange(m + s + 1, device=top.device))
    cand = torch.gather(top, 1, torch.argsort(rank, dim=1, stable=True)[:, :m])  # at most s + 1 are out
    th_s = torch.take(theta, rows[:, None] * P + pos) * valid
    G_sc = torch.take(G, pos[:, :, None] * P + cand[:, None, :])  # G[support][:, candidates]
    c_cand = torch.take(b, rows[:, None] * P + cand) - torch.bmm(th_s[:, None, :], G_sc)[:, 0, :]
    features = torch.cat([pos, cand], 1)
    score = torch.cat([torch.where(valid, float("inf"), -float("inf")), c_cand.abs() / alpha[rows, None]], 1)
    _rounds(G, b, theta, alpha, rows, features, score, need, cfg)
    return True


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
    th, gap, obj, n_it, _ = _solve_at(G, b, ysq, al, ban, theta, warm, cfg)
    return _result(th, gap, obj, n_it, alphas[sl], target_sq[sl], cfg)


def _result(th, gap, obj, n_it, alphas: np.ndarray, target_sq: np.ndarray, cfg: SolverConfig) -> CovLassoResult:
    rows, cols = torch.nonzero(th, as_tuple=True)  # row-major: by target, then source
    coef = SparseColumns.from_entries(rows.cpu().numpy(), cols.cpu().numpy(), th[rows, cols].cpu().numpy(),
                                      th.shape[0], th.shape[1])
    gap, obj = gap.cpu().numpy(), obj.cpu().numpy()
    return CovLassoResult(coef, np.array(alphas, dtype=np.float64), gap, n_it.cpu().numpy(),
                          gap <= cfg.tol * target_sq, obj)


def _device(cfg: SolverConfig) -> torch.device:
    dev = torch.device(cfg.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {cfg.device!r} asked for, but no CUDA device is available; use cpu")
    return dev


def solve_path_chunks(design, rhs, target_sq, grid, amax, forbid, cfg: SolverConfig, max_sources: int | None,
                      progress=None) -> list[list[tuple[np.ndarray, CovLassoResult]]]:
    """Every target's path on ``grid`` (descending), ``cfg.chunk`` targets at a time (inputs
    validated by the caller: :func:`engine.covlasso.covlasso_path`).

    Each α is warm-started from the previous one's solution *and gradient*: the gradient
    certified there ranks the features that may enter (:func:`_candidate_round`), so most
    α cost one full gradient per target, the certificate. A target leaves after its first
    α with more than ``max_sources`` sources. Returns, per α, a list of (targets, results)
    pieces (targets: column indices of ``rhs``).
    """
    T, A = rhs.shape[1], len(grid)
    dev = _device(cfg)
    G = _shared_design(design, dev)
    out: list[list[tuple[np.ndarray, CovLassoResult]]] = [[] for _ in range(A)]
    starts = range(0, T, cfg.chunk)
    with _torch_threads(cfg.threads if dev.type == "cpu" else None):
        for n, start in enumerate(starts):
            stop = min(T, start + cfg.chunk)
            b = torch.as_tensor(np.ascontiguousarray(rhs[:, start:stop].T), device=dev)
            ysq = torch.as_tensor(target_sq[start:stop].copy(), device=dev)
            ban = None if forbid is None else torch.as_tensor(forbid[start:stop], device=dev)
            top = torch.as_tensor(amax[start:stop], device=dev)
            active = np.arange(stop - start)
            theta, c = torch.zeros_like(b), None
            n_sup = np.zeros(len(active), dtype=np.int64)
            for a, alpha in enumerate(grid):
                al = torch.full((len(active),), float(alpha), dtype=b.dtype, device=dev)
                warm = torch.as_tensor(n_sup > 0, device=dev) & (top > alpha)
                theta, gap, obj, n_it, c = _solve_at(G, b, ysq, al, ban, theta, warm, cfg, c_prev=c)
                res = _result(theta, gap, obj, n_it, np.full(len(active), float(alpha)),
                              target_sq[start + active], cfg)
                out[a].append((start + active, res))
                if progress is not None:
                    progress((n * A + a + 1) / (len(starts) * A),
                             f"targets {start}–{stop - 1}, α {a + 1}/{A} = {alpha:.4g}: {len(active)} targets")
                n_sup = res.support_sizes
                if max_sources is not None and (n_sup > max_sources).any():
                    keep = n_sup <= max_sources
                    k = torch.as_tensor(keep, device=dev)
                    active, n_sup = active[keep], n_sup[keep]
                    theta, c, b, ysq, top = theta[k], c[k], b[k], ysq[k], top[k]
                    ban = None if ban is None else ban[k]
                if len(active) == 0:
                    break
    return out


def solve_chunks(design, rhs, target_sq, alphas, amax, forbid, warm_start, cfg: SolverConfig) -> CovLassoResult:
    """Solve every target (column of ``rhs``), ``cfg.chunk`` targets at a time (inputs
    validated by the caller: :func:`engine.covlasso.solve_covlasso`).

    forbid : (T,) source index target t may not use (within one model), or None.
    """
    T = rhs.shape[1]
    dev = _device(cfg)
    G = _shared_design(design, dev)
    parts = []
    with _torch_threads(cfg.threads if dev.type == "cpu" else None):
        for start in range(0, T, cfg.chunk):
            sl = slice(start, min(T, start + cfg.chunk))
            parts.append(_solve_columns(G, rhs, target_sq, alphas, amax, forbid, warm_start, sl, cfg))
    return CovLassoResult.concat(parts)
