"""The best-subset search of one chunk of targets: several starts per target, the forward
sweep m = 1 … M (greedy starts, swaps), the backward sweep, and the packing of the best of
each m into a :class:`~engine.core.bestsubset_types.BestSubsetResult` (the method:
:mod:`engine.core.bestsubset`; the kernels: :mod:`engine.core.bestsubset_kernels`)."""

from __future__ import annotations

import numpy as np
import torch

from engine.core.bestsubset_kernels import (
    OmpTrack,
    add_source,
    fit_supports,
    forward_pick,
    put,
    swap_descent,
    take,
    without_weakest,
)
from engine.core.bestsubset_types import BestSubsetResult, SubsetConfig
from engine.core.sparse import SparseColumns


def solve_starts(G, gd, b, ysq, ban, M: int, cfg: SubsetConfig) -> BestSubsetResult:
    """One chunk of targets: ``cfg.starts`` searches per target, the best kept per m."""
    L = min(cfg.starts, G.shape[0])
    if L == 1:
        return _pack(*_solve_chunk(G, gd, b, ysq, ban, M, cfg, None), ysq, G.shape[0])
    B = b.shape[0]
    score = torch.where(gd > 0, b**2 / torch.where(gd > 0, gd, 1.0), -1.0)
    if ban is not None:
        score[torch.arange(B, device=b.device), ban] = -2.0
    top = torch.topk(score, L, 1)
    seeds = torch.where(top.values > 0, top.indices, -1)
    seeds[:, 0] = -1  # the first search is free (its m = 1 is the best single source anyway)
    rep = lambda x: None if x is None else x.repeat_interleave(L, 0)  # noqa: E731
    sup, val, resid, n_swaps, omp_start, last = _solve_chunk(G, gd, rep(b), rep(ysq), rep(ban), M, cfg,
                                                             seeds.reshape(-1), L)
    reached = torch.arange(M, device=b.device)[None, :] < last[:, None]
    pick = torch.argmin(torch.where(reached, resid, float("inf")).reshape(B, L, M), 1)  # (B, M)
    rows = (torch.arange(B, device=b.device)[:, None] * L + pick)  # (B, M) replica rows
    ms = torch.arange(M, device=b.device)[None, :]
    return _pack(sup[rows, ms], val[rows, ms], resid[rows, ms], n_swaps[rows, ms], omp_start[rows, ms],
                 last.reshape(B, L).amax(1), ysq, G.shape[0])


def _solve_chunk(G, gd, b, ysq, ban, M: int, cfg: SubsetConfig, seeds=None, starts: int = 1):
    """Every m = 1 … M for one chunk of targets (rows of ``b``): a forward sweep (greedy
    starts and swaps), then a backward one (the m+1 solution less its weakest source, swapped:
    it finds the pairs that work only together, e.g. two sources whose difference fits)."""
    B, P = b.shape
    dev = b.device
    sup = torch.full((B, M, M), -1, dtype=torch.int64, device=dev)  # sources per (target, m)
    val = torch.zeros(B, M, M, dtype=b.dtype, device=dev)
    resid = torch.zeros(B, M, dtype=b.dtype, device=dev)
    n_swaps = torch.zeros(B, M, dtype=torch.int64, device=dev)
    omp_start = torch.zeros(B, M, dtype=torch.bool, device=dev)
    last = torch.zeros(B, dtype=torch.int64, device=dev)  # the last m each row reached (0: none)
    grow = torch.arange(B, device=dev)  # rows whose support still grows
    best = torch.zeros(B, 0, dtype=torch.int64, device=dev)  # supports of the rows in ``grow``
    omp_alive = torch.ones(B, dtype=torch.bool, device=dev)
    fit = fit_supports(G, gd, b, ysq, best)
    track = OmpTrack(best, [], fit.c, fit.d, fit.resid, fit.ok)  # OMP's support, grown alongside
    if seeds is not None:  # which target each row searches for (rows are target-major)
        seeds_of = torch.arange(B, device=dev) // starts

    def sub(x, rows):
        return None if x is None else x[rows]

    for m in range(1, M + 1):
        idx, found = forward_pick(fit, gd, best, sub(ban, grow), cfg.pivot, omp=False)
        o_idx, o_found = forward_pick(track, gd, track.S, sub(ban, grow), cfg.pivot, omp=True)
        # rows with no source left to add keep their last solution for every larger m
        grow, best, idx = grow[found], best[found], idx[found]
        omp_alive = omp_alive[found] & o_found[found]
        fit = take(fit, found)
        if len(grow) == 0:
            break
        seeded = None
        if m == 1 and seeds is not None:
            seeded = seeds[grow] >= 0  # a forced first source (one search per start)
            idx = torch.where(seeded, seeds[grow], idx)
            omp_alive &= ~seeded
        start, fwd = add_source(fit, G, best, idx)
        track = track.take(found).add(G, o_idx[found])
        use_omp = omp_alive & track.ok & (track.resid < fwd.resid - cfg.tol * ysq[grow])  # (not rounding)
        start = torch.where(use_omp[:, None], track.S, start)
        if bool(use_omp.any()):  # (a few %): the fit of OMP's support
            put(fwd, use_omp, fit_supports(G, gd, b[grow[use_omp]], ysq[grow[use_omp]], track.S[use_omp]))
        if m == 1:  # one source: the forward pick is the best (a swap cannot lower it); a seeded one stays
            best, fit, n = start, fwd, torch.zeros(len(grow), dtype=torch.int64, device=dev)
        else:
            best, fit, n = swap_descent(G, gd, b[grow], ysq[grow], sub(ban, grow), start, cfg, fwd)
        sup[grow, m - 1, :m], val[grow, m - 1, :m], resid[grow, m - 1] = best, fit.theta, fit.resid
        n_swaps[grow, m - 1], omp_start[grow, m - 1], last[grow] = n, use_omp, m
        if seeds is not None and m < M:  # searches of one target that met go on as one
            twin = _twins(torch.cat([seeds_of[grow][:, None], best.sort(1).values], 1))
            if bool(twin.any()):
                on = ~twin
                grow, best, omp_alive = grow[on], best[on], omp_alive[on]
                fit, track = take(fit, on), track.take(on)
    for m in range(M - 1, 0, -1) if cfg.backward else ():
        rows = torch.nonzero(last > m)[:, 0]
        if len(rows) == 0:
            continue
        above = sup[rows, m, : m + 1]
        S = without_weakest(G, b[rows], above)  # (k × k work: the fit of S is made at m)
        # most often (~¾) that is m's own solution, a local optimum already: nothing to search
        new = ~(S.sort(1).values == sup[rows, m - 1, :m].sort(1).values).all(1)
        rows, S = rows[new], S[new]
        if len(rows) == 0:
            continue
        f = fit_supports(G, gd, b[rows], ysq[rows], S)
        S, f, n = swap_descent(G, gd, b[rows], ysq[rows], sub(ban, rows), S, cfg, f)
        better = f.ok & (f.resid < resid[rows, m - 1] - cfg.tol * ysq[rows])
        r = rows[better]
        sup[r, m - 1, :m], val[r, m - 1, :m], resid[r, m - 1] = S[better], f.theta[better], f.resid[better]
        n_swaps[r, m - 1] += n[better] + 1
        omp_start[r, m - 1] = False
    _repair(G, gd, b, ysq, ban, cfg, sup, val, resid, n_swaps, omp_start, last)
    return sup, val, resid, n_swaps, omp_start, last


def _repair(G, gd, b, ysq, ban, cfg: SubsetConfig, sup, val, resid, n_swaps, omp_start, last) -> None:
    """Where the backward sweep found an m better than m+1, grow m+1 again from it (in place,
    m ascending): the residual never rises with m."""
    M = sup.shape[1]
    for m in range(2, M + 1):
        rows = torch.nonzero((last >= m) & (resid[:, m - 1] > resid[:, m - 2] - cfg.tol * ysq)
                             & (sup[:, m - 2, m - 2] >= 0))[:, 0]  # m − 1 has m − 1 sources
        if len(rows):
            _grow_again(G, gd, b, ysq, ban, cfg, sup, val, resid, n_swaps, omp_start, rows, m)
        worse = torch.nonzero((last >= m) & (resid[:, m - 1] > resid[:, m - 2]))[:, 0]  # keep m − 1's
        sup[worse, m - 1], val[worse, m - 1], resid[worse, m - 1] = sup[worse, m - 2], val[worse, m - 2], \
            resid[worse, m - 2]


def _grow_again(G, gd, b, ysq, ban, cfg: SubsetConfig, sup, val, resid, n_swaps, omp_start, rows, m: int) -> None:
    """m's solution of ``rows`` grown again from m − 1's (a forward pick, then swaps), kept
    where it is better (in place)."""

    below = sup[rows, m - 2, : m - 1]
    ban_r = None if ban is None else ban[rows]
    f = fit_supports(G, gd, b[rows], ysq[rows], below)
    idx, found = forward_pick(f, gd, below, ban_r, cfg.pivot, omp=False)
    S, f = add_source(f, G, below, idx)
    S, f, n = swap_descent(G, gd, b[rows], ysq[rows], ban_r, S, cfg, f)
    ok = found & f.ok & (f.resid < resid[rows, m - 1])
    r = rows[ok]
    sup[r, m - 1, :m], val[r, m - 1, :m], resid[r, m - 1] = S[ok], f.theta[ok], f.resid[ok]
    n_swaps[r, m - 1] = n[ok]
    omp_start[r, m - 1] = False


def _twins(key):
    """(R,) True for the rows whose ``key`` row appeared before (the first one is kept)."""
    _, inv = torch.unique(key, dim=0, return_inverse=True)
    order = torch.arange(len(key), device=key.device)
    first = torch.full((int(inv.max()) + 1,), len(key), dtype=torch.int64, device=key.device)
    first = first.scatter_reduce(0, inv, order, "amin")
    return first[inv] != order


def _pack(sup, val, resid, n_swaps, omp_start, last, ysq, P: int) -> BestSubsetResult:
    """Columns t·M + (m − 1), ascending sources; an m beyond a row's last keeps its last."""
    B, M, _ = sup.shape
    m_idx = torch.arange(M, device=sup.device)[None, :]
    src_m = torch.clamp(torch.minimum(m_idx, (last[:, None] - 1).clamp(min=0)), min=0)  # (B, M)
    rows = torch.arange(B, device=sup.device)[:, None]
    sup, val = sup[rows, src_m], val[rows, src_m]
    none = last == 0  # no source at all (a zero target, or every source banned or dependent)
    resid = torch.where(none[:, None], ysq[:, None], resid[rows, src_m])
    sup[none] = -1
    beyond = m_idx >= last[:, None]
    n_swaps = torch.where(beyond, 0, n_swaps)
    omp_start = omp_start & ~beyond
    sup_np, val_np = sup.cpu().numpy().reshape(B * M, M), val.cpu().numpy().reshape(B * M, M)
    order = np.argsort(np.where(sup_np < 0, P, sup_np), axis=1, kind="stable")
    sup_np = np.take_along_axis(sup_np, order, 1)
    val_np = np.take_along_axis(val_np, order, 1)
    present = (sup_np >= 0) & (val_np != 0)
    cols = np.repeat(np.arange(B * M), present.sum(1))
    coef = SparseColumns.from_entries(cols, sup_np[present], val_np[present], B * M, P)
    return BestSubsetResult(coef, resid.cpu().numpy(), n_swaps.cpu().numpy(), omp_start.cpu().numpy())
