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

Cold starts take their first working sets from the gradient at zero; rows whose supports
will be several times what they are start their all-feature round from a few FISTA steps
(:mod:`engine.core.covlasso_guess`); paths over α use the previous grid point.

This module holds the full problem (certificates, working-set rounds, chunks of targets);
the subproblems' solvers are in :mod:`engine.core.covlasso_subproblem`, their batched linear
algebra (gathers, Cholesky factors kept across steps) in :mod:`engine.core.covlasso_factors`,
the first supports in :mod:`engine.core.covlasso_guess`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from engine.core.covlasso_factors import _factor, _leading_solve, _shared_submatrix
from engine.core.covlasso_guess import MIN_ROWS, ProximalGuess, far_from_support, worth_guessing
from engine.core.covlasso_subproblem import _GROWTH, _newton, _solve_working_set
from engine.core.covlasso_types import CovLassoResult, SolverConfig
from engine.core.sparse import SparseColumns
from engine.errors import InvalidInputError

log = logging.getLogger(__name__)

_GROUP = 128  # targets per working-set group (similar sizes together: little padding)
# The full gradient b − θG uses a sparse × dense product while θ has fewer non-zeros than
# this share of its entries (else one dense GEMM). Measured (torch 2.14, one thread, 1,000 ×
# 1,000 θ and G): CSR 10.8 / 13.2 / 19.4 / 27.4 / 43.7 ms at 3 / 5 / 8 / 12 / 20 % non-zeros,
# the dense GEMM 41–43 ms throughout.
_SPARSE_BELOW = 0.15


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


def _solve_at(G, b, ysq, alpha, forbid, theta, warm, cfg: SolverConfig, c_prev=None, guess=None):
    """Working-set rounds at fixed α until every target's duality gap is below tolerance
    (at most ``cfg.max_outer`` rounds per target). ``theta`` is updated in place.

    ``warm`` marks the rows whose θ solves a nearby α: they start from :func:`_predict`.
    ``c_prev`` (a path's previous α): the gradient ``b − θG`` at those θ; then the first
    round of the warm rows picks its working set from it (:func:`_candidate_round`) instead
    of from a full gradient at the predicted point. A full gradient is computed only for
    the rows whose θ changed since their last one. Returns (θ, gap, objective, rounds, c),
    ``c`` the gradient at the returned θ (the next α's ``c_prev``). ``guess``: a
    :class:`~engine.core.covlasso_guess.ProximalGuess` of G for the rounds on all features.
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
        _rounds(G, b, theta, alpha, idx, None, score, need, cfg, None if forbid is None else forbid[idx], guess)
        fresh = _certify(G, b[idx], ysq[idx], alpha[idx], theta[idx], None if forbid is None else forbid[idx])
        c[idx], gap[idx], obj[idx] = fresh


# Rows whose working sets reach 1/_FULL_SHARE of all features are solved on all of them: their
# Newton steps then read the one shared Gram (a GEMM per step) instead of gathering each row's
# (w × w) working-set Gram (a gather of (128, 250, 250) costs ~15 such GEMMs at P = 1,000,
# measured), and they need no further rounds. Before the first support (covlasso_guess) this
# was one threshold for every row; measured at P = 1,000 (CPU seconds, median 60 / 200
# sources): share 8: 0.86 / 6.6 s, 16: 1.13 / 5.0 s, 32: – / 4.9 s, all groups: 1.8 / 5.7 s.
# With it, the rows that start from a guess (many violators) pay from P/16, the others only
# from P/8 (working-set rounds are cheaper while few features are missing): one thread,
# share 16 for all rows 2.6 / 0.83 s; 8 for all: 4.5 / 0.61 s; 16 and 8: see the README.
# Rows far from their support (covlasso_guess.far_from_support) go at any size.
_FULL_SHARE = 16
_FULL_SHARE_FEW = 8


def _rounds(G, b, theta, alpha, rows, features, score, need, cfg: SolverConfig, forbid=None, guess=None) -> None:
    """One working-set round for each of ``rows``, in place: the ``need`` features of highest
    ``score`` (the support must score ∞: it is overwritten), solved exactly. ``features``
    (R, n): the features ``score`` is for (None: all P; then ``forbid`` (R,), optional, is
    each row's forbidden source). Rows of similar working-set size go together (little
    padding); rows with large working sets are solved on all features (:func:`_full_round`;
    ``guess``, optional, gives those with many violators a first support)."""
    P = theta.shape[1]
    full = torch.zeros(len(rows), dtype=torch.bool, device=theta.device)
    took = before = None
    if features is None:
        full = need * _FULL_SHARE >= P
        if guess is not None:
            far = (worth_guessing(score) & full) | far_from_support(score)
            if int(far.sum()) >= MIN_ROWS:
                took, before = _guesses(guess, b, theta, alpha, rows, far, forbid)
                full = took | (full & (need * _FULL_SHARE_FEW >= P))
            else:
                full &= need * _FULL_SHARE_FEW >= P
    if bool(full.any()):
        at = torch.nonzero(full)[:, 0]
        again = []  # rows whose Newton steps stalled: a working-set round from their new θ
        for grp in _groups(at, need):
            r = rows[grp]
            ban = None if forbid is None else forbid[grp]
            stalled = _full_round(G, b, theta, alpha, r, ban, cfg)
            if took is not None:  # a row that stalled from a guess goes on from before it
                back = stalled & took[grp]
                theta[r[back]] = before[grp[back]]
            if bool(stalled.any()):
                sc, nd = _working_set_score(G, b[r[stalled]], theta[r[stalled]], alpha[r[stalled]],
                                            None if ban is None else ban[stalled], cfg)
                again.append((grp[stalled], sc, nd))
        rest = torch.nonzero(~full)[:, 0]
        parts = [(rest, score[rest], need[rest]), *again]
        idx = torch.cat([p[0] for p in parts])
        if len(idx) == 0:
            return
        rows, score, need = rows[idx], torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts])
    for grp in _groups(torch.arange(len(rows), device=rows.device), need):
        r = rows[grp]
        sc, nd = score[grp], need[grp]
        W = torch.topk(sc, int(nd.max()), dim=1).indices
        if features is not None:
            W = torch.gather(features[grp], 1, W)
        flat = r[:, None] * P + W
        thW = _solve_working_set(_shared_submatrix(G, W), torch.take(b, flat), torch.take(theta, flat),
                                 alpha[r], cfg)
        theta[r[:, None].expand_as(W), W] = thW


def _groups(at: torch.Tensor, need: torch.Tensor):
    """The positions ``at`` in groups of :data:`_GROUP`, by increasing ``need``."""
    order = at[torch.argsort(need[at])]
    return [order[start : start + _GROUP] for start in range(0, len(order), _GROUP)]


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
    out, solved, best = _newton(G, b[r], theta[r], alpha[r], cfg.max_newton, _ban(forbid, theta))
    theta[r] = torch.where(solved[:, None], out, best)
    return ~solved


def _ban(forbid, like: torch.Tensor):
    """(rows, P) mask of each row's forbidden source (``forbid`` (rows,)), or None."""
    if forbid is None:
        return None
    ban = torch.zeros(len(forbid), like.shape[1], dtype=torch.bool, device=like.device)
    ban[torch.arange(len(forbid), device=like.device), forbid] = True
    return ban


def _guesses(guess, b, theta, alpha, rows, far, forbid):
    """θ of the ``far`` rows (a mask over ``rows``) replaced by ``guess``'s first supports
    where they are taken (:mod:`engine.core.covlasso_guess`), in place, by groups. Returns
    (took, before): the rows that took one (a mask over ``rows``) and their θ before it
    (a (len(rows), P) tensor, filled on those rows only)."""
    took = torch.zeros(len(rows), dtype=torch.bool, device=theta.device)
    before = torch.zeros(len(rows), theta.shape[1], dtype=theta.dtype, device=theta.device)
    at = torch.nonzero(far)[:, 0]
    for start in range(0, len(at), _GROUP):
        grp = at[start : start + _GROUP]
        r = rows[grp]
        old = theta[r]
        new, ok = guess.guess(b[r], old, alpha[r], _ban(None if forbid is None else forbid[grp], theta),
                              least=-(-theta.shape[1] // _FULL_SHARE))
        theta[r[ok]], before[grp[ok]], took[grp] = new[ok], old[ok], ok
    return took, before


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


def _solve_columns(G, rhs, target_sq, alphas, amax, forbid, warm_start, sl: slice, cfg, guess=None) -> CovLassoResult:
    """Solve the targets of one chunk (the columns ``sl`` of ``rhs``; ``guess``: see :func:`_solve_at`)."""
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
    th, gap, obj, n_it, _ = _solve_at(G, b, ysq, al, ban, theta, warm, cfg, guess=guess)
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


def _workers(cfg: SolverConfig, dev: torch.device, n_targets: int) -> int:
    """Worker threads for a solve: ``cfg.threads`` on the CPU, never more than there are
    targets; 0 (automatic): one per core, at most 4, and one per group of targets at least
    (a few targets are solved faster in one thread). One on a GPU."""
    if dev.type != "cpu":
        return 1
    if cfg.threads:
        return max(1, min(cfg.threads, n_targets))
    return max(1, min(4, os.cpu_count() or 1, -(-n_targets // _GROUP)))


def _spans(T: int, cfg: SolverConfig, workers: int) -> list[slice]:
    """Chunks of targets: at most ``cfg.chunk`` targets in flight across the workers (each
    holds its chunk's b, θ and gradient, chunk × P floats), split evenly among them."""
    size = max(1, -(-min(T, cfg.chunk) // workers))
    return [slice(start, min(T, start + size)) for start in range(0, T, size)]


def _map_in_threads(fn, items: list, workers: int) -> list:
    """``[fn(x) for x in items]``, in ``workers`` threads when more than one (results in order).

    Every target is solved on its own, so the chunks are independent: torch releases the
    GIL in its kernels, and each thread runs its ops on one torch thread (set by the caller):
    the batched ops are small, and one torch thread per chunk scales where a threaded op
    does not (see :class:`~engine.core.covlasso_types.SolverConfig`).
    """
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


def solve_path_chunks(design, rhs, target_sq, grid, amax, forbid, cfg: SolverConfig, max_sources: int | None,
                      progress=None) -> list[list[tuple[np.ndarray, CovLassoResult]]]:
    """Every target's path on ``grid`` (descending), in chunks of targets solved side by side
    in worker threads (:func:`_spans`; inputs validated by the caller:
    :func:`engine.core.covlasso.covlasso_path`).

    Each α is warm-started from the previous one's solution *and gradient*: the gradient
    certified there ranks the features that may enter (:func:`_candidate_round`), so most
    α cost one full gradient per target, the certificate. A target leaves after its first
    α with more than ``max_sources`` sources. Returns, per α, a list of (targets, results)
    pieces (targets: column indices of ``rhs``), in the order of the chunks.
    """
    T, A = rhs.shape[1], len(grid)
    dev = _device(cfg)
    G = _shared_design(design, dev)
    workers = _workers(cfg, dev, T)
    spans = _spans(T, cfg, workers)
    guess = ProximalGuess(G)  # shared by the chunks: one float32 Gram, made if a round asks
    lock, done = threading.Lock(), [0]

    def report(span: slice, a: int, n_active: int) -> None:
        if progress is None:
            return
        with lock:  # one call at a time, the fraction counted over every chunk's α
            done[0] += 1
            progress(done[0] / (len(spans) * A),
                     f"targets {span.start}–{span.stop - 1}, α {a + 1}/{A} = {grid[a]:.4g}: {n_active} targets")

    def solve(span: slice) -> list[tuple[int, np.ndarray, CovLassoResult]]:
        start, stop = span.start, span.stop
        b = torch.as_tensor(np.ascontiguousarray(rhs[:, start:stop].T), device=dev)
        ysq = torch.as_tensor(target_sq[start:stop].copy(), device=dev)
        ban = None if forbid is None else torch.as_tensor(forbid[start:stop], device=dev)
        top = torch.as_tensor(amax[start:stop], device=dev)
        active = np.arange(stop - start)
        theta, c = torch.zeros_like(b), None
        n_sup = np.zeros(len(active), dtype=np.int64)
        pieces = []
        for a, alpha in enumerate(grid):
            al = torch.full((len(active),), float(alpha), dtype=b.dtype, device=dev)
            warm = torch.as_tensor(n_sup > 0, device=dev) & (top > alpha)
            theta, gap, obj, n_it, c = _solve_at(G, b, ysq, al, ban, theta, warm, cfg, c_prev=c, guess=guess)
            res = _result(theta, gap, obj, n_it, np.full(len(active), float(alpha)), target_sq[start + active], cfg)
            pieces.append((a, start + active, res))
            report(span, a, len(active))
            n_sup = res.support_sizes
            if max_sources is not None and (n_sup > max_sources).any():
                keep = n_sup <= max_sources
                k = torch.as_tensor(keep, device=dev)
                active, n_sup = active[keep], n_sup[keep]
                theta, c, b, ysq, top = theta[k], c[k], b[k], ysq[k], top[k]
                ban = None if ban is None else ban[k]
            if len(active) == 0:
                if progress is not None:  # the α this chunk skips count as done
                    for _ in range(a + 1, A):
                        report(span, A - 1, 0)
                break
        return pieces

    out: list[list[tuple[np.ndarray, CovLassoResult]]] = [[] for _ in range(A)]
    with _torch_threads(1 if dev.type == "cpu" else None):
        for pieces in _map_in_threads(solve, spans, workers):
            for a, targets, res in pieces:
                out[a].append((targets, res))
    return out


def solve_chunks(design, rhs, target_sq, alphas, amax, forbid, warm_start, cfg: SolverConfig) -> CovLassoResult:
    """Solve every target (column of ``rhs``), in chunks of targets solved side by side in
    worker threads (:func:`_spans`; inputs validated by the caller:
    :func:`engine.core.covlasso.solve_covlasso`).

    forbid : (T,) source index target t may not use (within one model), or None.
    """
    T = rhs.shape[1]
    dev = _device(cfg)
    G = _shared_design(design, dev)
    workers = _workers(cfg, dev, T)
    guess = ProximalGuess(G)  # shared by the chunks: one float32 Gram, made if a round asks

    def solve(sl: slice) -> CovLassoResult:
        return _solve_columns(G, rhs, target_sq, alphas, amax, forbid, warm_start, sl, cfg, guess)

    with _torch_threads(1 if dev.type == "cpu" else None):
        return CovLassoResult.concat(_map_in_threads(solve, _spans(T, cfg, workers), workers))
