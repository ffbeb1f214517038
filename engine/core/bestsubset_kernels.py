"""The best-subset search's batched kernels (torch, float64): least squares of a batch of
targets on supports of one size, the rank-one updates that add or remove a source, the exact
evaluation of every single swap, and the swap descent (the search: :mod:`engine.core.bestsubset`).
Every function works on B rows at once (one target, or one start of a target, a row)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.core.bestsubset_types import SubsetConfig

SWAP_BLOCK = 192_000  # swap candidates evaluated at once on the CPU (~1.5 MB per temporary)


@dataclass
class Fit:
    """Least squares of a batch of targets on supports ``S`` (B, k), everything a step needs."""

    theta: object  # (B, k) θ_S = G_SS⁻¹ b_S
    H: object  # (B, k, k) G_SS⁻¹
    W: object  # (B, k, P) H G_{S,:}  (row j: w_j)
    c: object  # (B, P) b − θᵀ G_{S,:}  (the residual's correlation with every source)
    d: object  # (B, P) G_ii − G_iS H G_Si (0 on S)
    resid: object  # (B,) E[g²] − b_Sᵀ θ_S
    ok: object  # (B,) False where the Cholesky failed (never expected: see the pivot rule)


FIT_FIELDS = ("theta", "H", "W", "c", "d", "resid", "ok")


def fit_supports(G, gd, b, ysq, S) -> Fit:
    """The fit of every row's support ``S`` (B, k) from the Gram (a Cholesky of G_SS)."""
    B, k = S.shape
    P = G.shape[0]
    if k == 0:
        z = torch.zeros(B, 0, dtype=b.dtype, device=b.device)
        return Fit(z, z.reshape(B, 0, 0), z.reshape(B, 0, 1).expand(B, 0, P), b.clone(),
                   gd.expand(B, P).clone(), ysq.clone(), torch.ones(B, dtype=torch.bool, device=b.device))
    R = G.index_select(0, S.reshape(-1)).reshape(B, k, P)  # Gram rows of the support (contiguous reads)
    Gss = torch.gather(R, 2, S[:, None, :].expand(B, k, k))
    L, info = torch.linalg.cholesky_ex(Gss)
    ok = info == 0
    if not bool(ok.all()):  # keep the batch solvable; those rows are reported as failed
        eye = torch.eye(k, dtype=G.dtype, device=G.device)
        L = torch.where(ok[:, None, None], L, eye)
    H = torch.cholesky_inverse(L)
    bS = torch.gather(b, 1, S)
    theta = (H @ bS[:, :, None])[:, :, 0]
    W = H @ R
    c = b - (theta[:, None, :] @ R)[:, 0, :]
    d = gd[None, :] - (W * R).sum(1)
    resid = ysq - (bS * theta).sum(1)
    return Fit(theta, H, W, c, d, resid, ok)


def eligible(fit_d, gd, S, ban, pivot: float):
    """(B, P) sources that may join S: numerically independent of it, not in it, not banned."""
    ok = fit_d > pivot * gd[None, :]
    if S.shape[1]:
        ok.scatter_(1, S, False)
    if ban is not None:
        ok[torch.arange(len(ok), device=ok.device), ban] = False
    return ok


def forward_pick(fit: Fit, gd, S, ban, pivot: float, omp: bool):
    """The next source of each row: largest residual decrease ``c²/d`` (forward selection) or
    largest ``|c|`` (OMP). Returns (index (B,), found (B,))."""
    ok = eligible(fit.d, gd, S, ban, pivot)
    score = fit.c.abs() if omp else fit.c.square().div_(fit.d)
    idx = torch.argmax(score.masked_fill_(~ok, -1.0), 1)
    return idx, ok.any(1)


def best_swap(fit: Fit, gd, S, ban, pivot: float):
    """The pair (j ∈ S, i ∉ S) whose swap lowers the residual most: (delta (B,), j, i).

    With ``U = W / √H_jj`` the swap's gain is ``(c_i + θ_j U_ji / √H_jj)² / (d_i + U_ji²)``
    less ``θ_j² / H_jj``: five passes over the (rows, k, P) candidates (``addcmul``/``addcdiv``),
    a block of rows at a time on the CPU (about :data:`SWAP_BLOCK` candidates: the
    temporaries stay in cache, ~10× faster than one pass over the batch). A source in S or
    banned has ``d_i = −∞`` (its gain is −0: never a swap); the pivot rule is checked only
    in the rows where some source is near the span of S (``d_i`` below it before the removal
    of j), rare: elsewhere every ``d_i + U_ji²`` is above it."""
    B, k = S.shape
    P = fit.W.shape[2]
    hjj = torch.diagonal(fit.H, dim1=1, dim2=2)  # (B, k)
    d = fit.d.clone()
    d.scatter_(1, S, -float("inf"))
    if ban is not None:
        d[torch.arange(B, device=d.device), ban] = -float("inf")
    rs = torch.rsqrt(hjj)
    a = (fit.theta * rs)[:, :, None]
    cost = (-(fit.theta**2) / hjj)[:, :, None]  # − what removing j costs
    near = ((d <= pivot * gd[None, :]) & (d > -float("inf"))).any(1)
    any_near = bool(near.any())
    best = torch.empty(B, dtype=d.dtype, device=d.device)
    flat = torch.empty(B, dtype=torch.int64, device=d.device)
    step = B if d.device.type != "cpu" else max(1, SWAP_BLOCK // max(1, k * P))
    for lo in range(0, B, step):
        sl = slice(lo, min(B, lo + step))
        U = fit.W[sl] * rs[sl, :, None]
        d_new = torch.addcmul(d[sl, None, :], U, U)  # (rows, k, P)
        c_new = torch.addcmul(fit.c[sl, None, :], U, a[sl]).square_()
        score = torch.addcdiv(cost[sl], c_new, d_new, out=c_new)  # − delta
        if any_near and bool(near[sl].any()):
            rows = torch.nonzero(near[sl])[:, 0]
            score[rows] = score[rows].masked_fill_(~(d_new[rows] > pivot * gd), -float("inf"))
        v, i = score.reshape(len(score), -1).max(1)  # the first of equal maxima, as argmax
        best[sl], flat[sl] = -v, i
    return best, flat // P, flat % P


def take(fit: Fit, rows) -> Fit:
    if rows.dtype == torch.bool and bool(rows.all()):
        return fit  # every row (no copy: callers replace, never write into, what they take)
    return Fit(*(getattr(fit, f)[rows] for f in FIT_FIELDS))


def put(fit: Fit, rows, part: Fit) -> None:
    for f in FIT_FIELDS:
        getattr(fit, f)[rows] = getattr(part, f)


def add_source(fit: Fit, G, S, i):
    """The fit of ``S + i`` from the fit of S (B rows, one source ``i`` each): the bordered
    inverse, O(k·P) per row instead of a refit's O(k²·P). Returns (new S, new fit)."""
    B, k = S.shape
    ar = torch.arange(B, device=S.device)
    r = G.index_select(0, i)  # (B, P): the new source's Gram row
    v = torch.gather(fit.W, 2, i[:, None, None].expand(B, k, 1))[:, :, 0]  # H G_{S,i}
    raw = fit.d[ar, i]
    ok = fit.ok & (raw > 0)
    delta = torch.where(ok, raw, 1.0)
    u = r - (torch.gather(r, 1, S)[:, None, :] @ fit.W)[:, 0, :] if k else r  # G_i· − G_iS H G_S·
    ci = fit.c[ar, i]
    ud = u / delta[:, None]
    W = torch.empty(B, k + 1, fit.W.shape[2], dtype=fit.W.dtype, device=S.device)  # one pass: W − v udᵀ, then ud
    torch.addcmul(fit.W, v[:, :, None], ud[:, None, :], value=-1.0, out=W[:, :k])
    W[:, k] = ud
    H = torch.zeros(B, k + 1, k + 1, dtype=fit.H.dtype, device=S.device)
    vd = v / delta[:, None]
    H[:, :k, :k] = fit.H + v[:, :, None] * vd[:, None, :]
    H[:, :k, k], H[:, k, :k], H[:, k, k] = -vd, -vd, 1.0 / delta
    theta = torch.cat([fit.theta - vd * ci[:, None], (ci / delta)[:, None]], 1)
    new = Fit(theta, H, W, torch.addcmul(fit.c, u, (ci / delta)[:, None], value=-1.0),
              torch.addcmul(fit.d, u, ud, value=-1.0), fit.resid - ci**2 / delta, ok)
    return torch.cat([S, i[:, None]], 1), new


@dataclass
class OmpTrack:
    """OMP's own support, grown without swaps, so kept in Gram–Schmidt form (no inverse):
    ``q_l = (G_{s_l,·} − Σ_{l'<l} q_l'[s_l] q_l') / √δ_l``; adding a source costs one pass
    over the k rows (``add_source`` also updates the k rows of ``W``)."""

    S: object  # (B, k)
    q: list  # k tensors (B, P)
    c: object  # (B, P) b − G_{:,S} θ_S
    d: object  # (B, P) G_ii − Σ_l q_l[i]²
    resid: object  # (B,)
    ok: object  # (B,)

    def take(self, rows) -> OmpTrack:
        if rows.dtype == torch.bool and bool(rows.all()):
            return self
        return OmpTrack(self.S[rows], [x[rows] for x in self.q], self.c[rows], self.d[rows], self.resid[rows],
                        self.ok[rows])

    def add(self, G, i) -> OmpTrack:
        B = len(i)
        ar = torch.arange(B, device=i.device)
        u = G.index_select(0, i)  # (B, P): the new source's Gram row
        for x in self.q:
            u = u.addcmul_(x[ar, i][:, None], x, value=-1.0)
        raw = self.d[ar, i]
        ok = self.ok & (raw > 0)
        u = u / torch.sqrt(torch.where(ok, raw, 1.0))[:, None]
        ci = u[ar, i]  # √δ
        gain = self.c[ar, i] / ci
        return OmpTrack(torch.cat([self.S, i[:, None]], 1), self.q + [u],
                        torch.addcmul(self.c, gain[:, None], u, value=-1.0), torch.addcmul(self.d, u, u, value=-1.0),
                        self.resid - gain**2, ok)


def remove_source(fit: Fit, S, j):
    """The fit of S less its source at position ``j`` (B,) from the fit of S: the rank-one
    downdate of the inverse, O(k·P) per row. Returns (new S, new fit)."""
    B, k = S.shape
    P = fit.W.shape[2]
    ar = torch.arange(B, device=S.device)
    keep = torch.arange(k - 1, device=S.device)[None, :].expand(B, k - 1)
    keep = keep + (keep >= j[:, None])
    h = fit.H[ar, j, j]
    hj = torch.gather(fit.H[ar, :, j], 1, keep)  # H_{S−j, j}
    wj, thj = fit.W[ar, j], fit.theta[ar, j]
    Hk = torch.gather(torch.gather(fit.H, 1, keep[:, :, None].expand(B, k - 1, k)), 2,
                      keep[:, None, :].expand(B, k - 1, k - 1))
    H = Hk - hj[:, :, None] * hj[:, None, :] / h[:, None, None]
    flat = (ar[:, None] * k + keep).reshape(-1)  # the rows of W kept, as one contiguous copy
    W = fit.W.reshape(B * k, P).index_select(0, flat).reshape(B, k - 1, P)
    W.addcmul_((hj / h[:, None])[:, :, None], wj[:, None, :], value=-1.0)
    theta = torch.gather(fit.theta, 1, keep) - thj[:, None] * hj / h[:, None]
    new = Fit(theta, H, W, torch.addcmul(fit.c, (thj / h)[:, None], wj), torch.addcmul(fit.d, wj, wj / h[:, None]),
              fit.resid + thj**2 / h, fit.ok.clone())
    return torch.gather(S, 1, keep), new


def without_weakest(G, b, S):
    """``S`` (B, k) less, per row, its source of smallest ``θ_j² / H_jj`` (what removing it
    costs), from G_SS alone (k × k per row)."""
    B, k = S.shape
    L, info = torch.linalg.cholesky_ex(G[S[:, :, None], S[:, None, :]])
    L = torch.where((info == 0)[:, None, None], L, torch.eye(k, dtype=G.dtype, device=G.device))
    H = torch.cholesky_inverse(L)
    theta = (H @ torch.gather(b, 1, S)[:, :, None])[:, :, 0]
    j = torch.argmin(theta**2 / torch.diagonal(H, dim1=1, dim2=2), 1)
    keep = torch.arange(k - 1, device=S.device)[None, :].expand(B, k - 1)
    return torch.gather(S, 1, keep + (keep >= j[:, None]))


def swap_descent(G, gd, b, ysq, ban, S, cfg: SubsetConfig, start: Fit | None = None):
    """Swaps on supports ``S`` (B, k) until none lowers the residual by more than
    ``tol·E[g²]``, each made by a downdate and an update of the fit (``start``: the fit of S
    when the caller has it; it is reused for the result). Returns (S, its fit, swaps per
    row): a row that swapped is refitted from the Gram, and goes back to its start where
    the refit is not below the start's residual (rounding in the updates on a near-singular
    set)."""
    B, k = S.shape
    S0 = S
    first = cur = start if start is not None else fit_supports(G, gd, b, ysq, S)  # cur: the live rows' fits
    resid0 = cur.resid.clone()
    swaps = torch.zeros(B, dtype=torch.int64, device=S.device)
    live = torch.arange(B, device=S.device)
    S = S.clone()
    for _ in range(cfg.max_swaps if k else 0):
        delta, j, i = best_swap(cur, gd, S[live], None if ban is None else ban[live], cfg.pivot)
        go = delta < -cfg.tol * ysq[live]
        if not bool(go.any()):
            break
        live, j, i = live[go], j[go], i[go]
        s1, f1 = remove_source(cur if bool(go.all()) else take(cur, go), S[live], j)
        S[live], cur = add_source(f1, G, s1, i)
        swaps[live] += 1
    # rows that swapped: refit from the Gram (the updates' rounding never accumulates)
    final = first  # (updated in place: callers hand over their start)
    moved = torch.nonzero(swaps > 0)[:, 0]
    if len(moved):
        again = fit_supports(G, gd, b[moved], ysq[moved], S[moved])
        back = ~again.ok | (again.resid > resid0[moved] + 1e-9 * ysq[moved])  # rounding: keep the start
        keep = ~back
        S[moved[back]] = S0[moved[back]]
        swaps[moved[back]] = 0
        put(final, moved[keep], take(again, keep))
    return S, final, swaps
