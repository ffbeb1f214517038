"""The CovLasso's batched torch kernels (see :mod:`engine.core.covlasso` for the problem).

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
   :class:`~engine.core.covlasso.ConvergenceWarning` names how many targets and the worst gap.

Cold starts at small α go down a short ladder of α values from α_max (each rung a warm
start for the next); paths over α use the previous grid point.
"""

from __future__ import annotations

import contextlib
import logging
import warnings

import numpy as np
import torch

from engine.core.covlasso_types import CovLassoResult, SolverConfig
from engine.core.sparse import SparseColumns
from engine.errors import InvalidInputError

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


def _take(src: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """``src.flatten()[flat]`` (any shape of ``flat``). On the CPU numpy's ``take`` is used: it
    gathers 2–4× faster than ``torch.take`` or ``gather`` (measured on (128, 250, 250)
    gathers, torch 2.14, one thread); elsewhere ``torch.take``."""
    if src.device.type == "cpu" and src.is_contiguous():
        return torch.from_numpy(np.take(src.numpy().reshape(-1), flat.numpy()))
    return torch.take(src, flat)


def _batched_submatrix(H: torch.Tensor, pos: torch.Tensor, cols: torch.Tensor | None = None) -> torch.Tensor:
    """``H[b][pos_b][:, cols_b]`` for every b (``cols`` = ``pos`` when not given):
    (B, w, w), (B, s), (B, k) → (B, s, k). One flat gather."""
    B, w, _ = H.shape
    cols = pos if cols is None else cols
    base = torch.arange(B, device=H.device)[:, None, None] * (w * w)
    return _take(H, base + pos[:, :, None] * w + cols[:, None, :])


def _shared_submatrix(G: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """``G[pos_b][:, pos_b]`` for every row b of ``pos`` from one shared (P, P) G: (B, s, s)."""
    return _take(G, pos[:, :, None] * G.shape[1] + pos[:, None, :])


def _submatrix(H: torch.Tensor, pos: torch.Tensor, cols: torch.Tensor | None = None) -> torch.Tensor:
    """``H[pos_b][:, cols_b]`` of the subproblems' Gram: per row (B, w, w) or one shared (w, w)."""
    if H.dim() == 3:
        return _batched_submatrix(H, pos, cols)
    cols = pos if cols is None else cols
    return _take(H, pos[:, :, None] * H.shape[1] + cols[:, None, :])


def _matvec(H: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``H x`` of every row of x (B, w): a batched product, or one GEMM with a shared
    (symmetric) H."""
    if H.dim() == 3:
        return torch.bmm(H, x[:, :, None])[:, :, 0]
    return x @ H


def _chol_solve(L: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``(L Lᵀ)⁻¹ rhs`` for (B, m, m) factors and (B, m, r) right-hand sides: two triangular
    solves (4× faster than ``torch.cholesky_solve`` on batched CPU factors, torch 2.14)."""
    y = torch.linalg.solve_triangular(L, rhs, upper=False)
    return torch.linalg.solve_triangular(L.mT, y, upper=True)


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
    U, info = torch.linalg.cholesky_ex(Hs, upper=True)
    L = U.mT  # contiguous (LAPACK writes column-major): no copy for the factor updates
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
        return _chol_solve(L, rhs[:, :, None])[:, :, 0]
    eye = torch.eye(s, dtype=L.dtype, device=L.device)
    Lk = torch.where(lead[:, :, None] & lead[:, None, :], L, eye)
    return _chol_solve(Lk, (rhs * lead)[:, :, None])[:, :, 0] * lead


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


def _fresh_factor(Hr, pos, valid):
    """A new factor on the ordered active columns ``pos``/``valid`` (B, s): (slots (B, s),
    n (B,), L (B, s, s)) with the factor cut at the first dependent column (:func:`_factor`)
    and the identity beyond ``n``."""
    _, L, first = _factor(_submatrix(Hr, pos), valid)
    s = pos.shape[1]
    lead = valid & (torch.arange(s, device=Hr.device) < first[:, None])  # valid: a prefix
    n = lead.sum(1)
    if bool((n < valid.sum(1)).any()):  # a cut: the identity beyond it (the padding has it)
        eye = torch.eye(s, dtype=L.dtype, device=L.device)
        L = torch.where(lead[:, :, None] & lead[:, None, :], L, eye)
    return pos, n, L.contiguous()


def _pad_factor(slots, L, m):
    """Room for ``m`` slots (identity and slot 0 on the new ones)."""
    B, s = slots.shape
    if m <= s:
        return slots, L
    Lp = torch.zeros(B, m, m, dtype=L.dtype, device=L.device)
    Lp.diagonal(dim1=1, dim2=2).fill_(1.0)
    Lp[:, :s, :s] = L
    return torch.cat([slots, slots.new_zeros(B, m - s)], 1), Lp


def _append(Hr, slots, n, L, epos, evalid):
    """Append the ordered columns ``epos``/``evalid`` (B, k) to every row's factor (block
    update), cut at the first one that depends on the columns before it. Returns
    (slots, n, L, joined (B, k): which of ``epos`` joined)."""
    B, w = slots.shape[0], Hr.shape[-1]
    m, k = slots.shape[1], epos.shape[1]
    dev, dt = Hr.device, Hr.dtype
    used = torch.arange(m, device=dev) < n[:, None]
    Hfe = _submatrix(Hr, slots, epos) * (used[:, :, None] & evalid[:, None, :])
    Hee = _submatrix(Hr, epos)
    L12 = torch.linalg.solve_triangular(L, Hfe, upper=False)
    # the Schur complement's pivots are the new columns' squared distances to the span of
    # the factor's columns: a column counts as dependent below _PIVOT of its H_jj, as in
    # a fresh factor
    _, L22, first = _factor(Hee - L12.mT @ L12, evalid)
    ar_k = torch.arange(k, device=dev)
    pivot = torch.diagonal(L22, dim1=1, dim2=2) ** 2
    bad = ~(pivot >= _PIVOT * torch.diagonal(Hee, dim1=1, dim2=2)) & evalid
    first = torch.minimum(first, torch.where(bad, ar_k, k).amin(1))
    joined = evalid & (ar_k < first[:, None])
    eye = torch.eye(k, dtype=dt, device=dev)
    L22 = torch.where(joined[:, :, None] & joined[:, None, :], L22, eye)
    L12 = L12 * joined[:, None, :]
    # one spare row at least, beyond every row's factor: the columns that did not join
    # write identity rows, and those beyond the factor's room all write that last row
    need = int((n + joined.sum(1)).max()) + 1  # ≤ w + 1: the slots are distinct positions
    if need > m:  # grow with some room: a reallocation copies every factor
        slots, L = _pad_factor(slots, L, min(w + 1, need + max(8, need // 8)))
    m2 = slots.shape[1]
    # (B, k): the rows of L the new columns take
    rows_at = torch.clamp(n[:, None] + ar_k, max=m2 - 1)
    vals = torch.zeros(B, k, m2, dtype=dt, device=dev)
    vals[:, :, :m] = L12.mT
    vals.scatter_add_(2, rows_at[:, None, :].expand(B, k, k), L22)
    idx = (rows_at[:, :, None] * m2 + torch.arange(m2, device=dev)).reshape(B, k * m2)
    L.view(B, m2 * m2).scatter_(1, idx, vals.reshape(B, k * m2))
    slots = slots.scatter(1, rows_at, torch.where(joined, epos, torch.gather(slots, 1, rows_at)))
    return slots, n + joined.sum(1), L, joined


def _capacitance_solve(L, rhs, dead):
    """Solve on the live slots only: ``H_FF x = rhs`` with ``x = 0`` on the ``dead`` slots
    (B, m), through the factor of H_FF and a (dead × dead) capacitance system."""
    if not bool(dead.any()):
        return _chol_solve(L, rhs[:, :, None])[:, :, 0]
    B, m = rhs.shape
    dpos, dvalid = _ordered(dead, torch.arange(m, device=L.device, dtype=L.dtype).expand_as(rhs))
    d = dpos.shape[1]
    E = torch.zeros(B, m, d + 1, dtype=L.dtype, device=L.device)
    E[:, :, 0] = rhs
    E[:, :, 1:].scatter_(1, dpos[:, None, :], dvalid[:, None, :].to(L.dtype))
    YZ = _chol_solve(L, E)  # H_FF⁻¹ rhs and the columns of H_FF⁻¹ at the dead slots
    y, Z = YZ[:, :, 0], YZ[:, :, 1:]
    eye = torch.eye(d, dtype=L.dtype, device=L.device)
    Zd = torch.gather(Z, 1, dpos[:, :, None].expand(-1, -1, d))
    Zd = torch.where(dvalid[:, :, None] & dvalid[:, None, :], Zd, eye)
    u = torch.linalg.solve(Zd, torch.gather(y, 1, dpos) * dvalid)
    return y - (Z @ u[:, :, None])[:, :, 0]


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
        _rounds(G, b, theta, alpha, idx, None, score, need, cfg, None if forbid is None else forbid[idx])
        fresh = _certify(G, b[idx], ysq[idx], alpha[idx], theta[idx], None if forbid is None else forbid[idx])
        c[idx], gap[idx], obj[idx] = fresh


# A group whose working sets reach 1/_FULL_SHARE of all features is solved on all of them:
# its Newton steps then read the one shared Gram (a GEMM per step) instead of gathering each
# row's (w × w) working-set Gram (a gather of (128, 250, 250) costs ~15 such GEMMs at P = 1,000,
# measured), and it needs no further rounds. Measured at P = 1,000 (CPU seconds, median 60 /
# 200 sources): share 8: 0.86 / 6.6 s, 16: 1.13 / 5.0 s, 32: – / 4.9 s, all groups: 1.8 / 5.7 s.
_FULL_SHARE = 16


def _rounds(G, b, theta, alpha, rows, features, score, need, cfg: SolverConfig, forbid=None) -> None:
    """One working-set round for each of ``rows``, in place: the ``need`` features of highest
    ``score`` (the support must score ∞: it is overwritten), solved exactly. ``features``
    (R, n): the features ``score`` is for (None: all P; then ``forbid`` (R,), optional, is
    each row's forbidden source). Rows of similar working-set size go together (little
    padding); a group with large working sets is solved on all features (:func:`_full_round`)."""
    P = theta.shape[1]
    order = torch.argsort(need)
    for start in range(0, len(order), _GROUP):
        grp = order[start : start + _GROUP]
        r = rows[grp]
        sc, nd = score[grp], need[grp]
        if features is None and int(nd.max()) * _FULL_SHARE >= P:
            ban = None if forbid is None else forbid[grp]
            stalled = _full_round(G, b, theta, alpha, r, ban, cfg)
            if not bool(stalled.any()):
                continue
            # where its Newton steps stalled, a row takes a working-set round from its new θ
            grp, r = grp[stalled], r[stalled]
            sc, nd = _working_set_score(G, b[r], theta[r], alpha[r], None if ban is None else ban[stalled], cfg)
        W = torch.topk(sc, int(nd.max()), dim=1).indices
        if features is not None:
            W = torch.gather(features[grp], 1, W)
        flat = r[:, None] * P + W
        thW = _solve_working_set(_shared_submatrix(G, W), torch.take(b, flat), torch.take(theta, flat),
                                 alpha[r], cfg)
        theta[r[:, None].expand_as(W), W] = thW


def _working_set_score(G, b, theta, alpha, forbid, cfg: SolverConfig):
    """(score, need) of a working-set round for rows θ: the support scores ∞, the others
    ``|c_j|/α`` (the forbidden source −1); the support plus a quarter of it, at least
    ``cfg.min_working_set``."""
    P = theta.shape[1]
    nz = theta != 0
    n_sup = nz.sum(1)
    allowed = P - (1 if forbid is not None else 0)
    need = torch.clamp(n_sup + torch.clamp(n_sup // _GROWTH, min=cfg.min_working_set), max=allowed)
    score = (b - theta @ G).abs() / alpha[:, None]
    score[nz] = float("inf")
    if forbid is not None:
        score[torch.arange(len(theta), device=b.device), forbid] = -1.0
    return score, need


def _full_round(G, b, theta, alpha, r, forbid, cfg: SolverConfig) -> torch.Tensor:
    """Newton steps for rows ``r`` on all features at once, with the shared Gram (in place).
    Returns the rows (a mask over ``r``) whose steps stalled: their θ is their lowest iterate."""
    ban = None
    if forbid is not None:
        ban = torch.zeros(len(r), G.shape[0], dtype=torch.bool, device=G.device)
        ban[torch.arange(len(r), device=G.device), forbid] = True
    out, solved, best = _newton(G, b[r], theta[r], alpha[r], cfg.max_newton, ban)
    theta[r] = torch.where(solved[:, None], out, best)
    return ~solved


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
    validated by the caller: :func:`engine.core.covlasso.covlasso_path`).

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
    validated by the caller: :func:`engine.core.covlasso.solve_covlasso`).

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
