"""Best-subset dependencies from the Gram alone: the fewest sources that fit, for every target.

For target ``t`` with right-hand side ``b = E[f g_t]``, design Gram ``G = E[f fᵀ]`` and
``E[g_t²]``, the least-squares residual of a support ``S`` (a set of sources) is::

    e(S) = E[(g_t − θ_Sᵀ f_S)²] = E[g_t²] − b_Sᵀ G_SS⁻¹ b_S,     θ_S = G_SS⁻¹ b_S

and the best dependency with at most m sources is the support of size ≤ m with the lowest
``e(S)`` (within one model, ``t ∉ S``; between models nothing is excluded — nothing tells
the solver which category corresponds). Exhaustive search is out of reach (1,000 choose 4
is 4·10¹⁰), so for m = 1 … M, every target of a batch advancing together (torch, float64):

1. **Greedy starts.** Forward selection — the previous m's support plus the source that
   lowers the residual most, ``c_i² / d_i`` with ``c = b − G_{:,S} θ_S`` (the residual's
   correlation) and ``d_i = G_ii − G_iS G_SS⁻¹ G_Si`` (what of source i lies outside the
   span of S) — and orthogonal matching pursuit (OMP, the source of largest ``|c_i|``, as
   scikit-learn's ``orthogonal_mp_gram`` picks it, carried on its own support). The start is
   the better of the two, so the result is never worse than OMP's.
2. **Swaps** (the splicing idea of abess, done exactly): the residual after replacing
   source j ∈ S by i ∉ S is, with ``H = G_SS⁻¹`` and ``w_j = G_{:,S} H_{S,j}``::

       e(S − j + i) = e(S) + θ_j² / H_jj − (c_i + θ_j w_ji / H_jj)² / (d_i + w_ji² / H_jj)

   (remove j: the rank-one downdate of the projection; then add i), for every pair at once
   (k × P values per target). The best pair is made while it lowers the residual by more
   than ``tol · E[g_t²]``; a swap whose recomputed residual is not lower is undone and the
   target stops (a guard against rounding on near-singular sets). Every swap lowers the
   residual, so the search ends; ``max_swaps`` bounds it per m.
3. **Several starts** (``starts``, default 4): logits share a large common component, so the
   best pair is often two sources that fit only together (their difference), which no
   single swap reaches from the greedy path. Each target is searched ``starts`` times, the
   k-th search forced to begin with its k-th best single source; searches that meet the
   same support go on as one; the best is kept per m. Measured on the demo's glyph-vgg
   (docs/best-subset.md), 4 starts raise the share of categories at R² ≥ 0.95 with 4
   sources from 57 % to 76 %.
4. **Backward sweep**: for m = M−1 … 1, the (m+1)-th solution less its weakest source
   (smallest ``θ_j² / H_jj``), swapped, replaces the m-th where it is better; where that
   makes m better than m+1, m+1 is grown again from it. Where the (m+1)-th less its weakest
   is the m-th itself (three rows in four on the demo), there is nothing to search: the m-th
   is a local optimum already.

The residual never rises with m (a solution for m may keep fewer than m sources when no
further source is numerically independent of its support). It is a search, not a proof:
the tests measure it against exhaustive search over every support of size ≤ 3.

**Near-singular supports.** Logit Grams are singular (rank ≈ penultimate width + 1), and a
support must stay solvable: a source may join S only when its squared distance to the span
of S in the Gram's metric, ``d_i``, is above ``pivot · G_ii`` (default 1e-8: conditioning of
the unit-diagonal G_SS ≲ 10⁸). S is then always factorised by a plain Cholesky, its
coefficients by ``G_SS⁻¹ b_S``; no ridge is added, and nothing outside S is ever inverted.

**Speed.** Chunks of targets are solved in threads (``SubsetConfig.threads``), each with one
torch thread. Most of the work is the exact evaluation of every swap, needed once per (row,
m) even where no swap helps (it proves the support locally optimal): five passes over the
(B, k, P) candidates, a block of rows at a time so that the temporaries stay in cache
(``bestsubset_kernels.SWAP_BLOCK``). OMP's start is grown in Gram–Schmidt form (no inverse to keep), and
m = 1 makes no swaps (its forward pick is the best single source).

Modules: this one (the method, :func:`best_subsets`, :func:`least_squares_on`);
:mod:`engine.core.bestsubset_types` (:class:`SubsetConfig`, :class:`BestSubsetResult`; numpy
only); :mod:`engine.core.bestsubset_search` (one chunk: starts, forward and backward sweeps);
:mod:`engine.core.bestsubset_kernels` (the batched fits, updates, swap evaluation and descent).

Pure: arrays in, :class:`BestSubsetResult` out; torch is imported only to solve.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from engine.core.bestsubset_types import (  # noqa: F401  (the public names, from here as before)
    DEFAULT_MAX_SOURCES,
    MAX_SOURCES_LIMIT,
    RESULT_ARRAYS,
    BestSubsetResult,
    SubsetConfig,
    check_max_sources,
)

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- public solve


def best_subsets(
    design,
    rhs,
    target_sq,
    max_sources: int = DEFAULT_MAX_SOURCES,
    *,
    forbid=None,
    config: SubsetConfig | None = None,
    design_diag: np.ndarray | None = None,
    check_input: bool = True,
    progress: Callable[[float, str], None] | None = None,
) -> BestSubsetResult:
    """The best dependency with at most m sources, m = 1 … ``max_sources``, of every target
    (column of ``rhs``) at once; see the module docstring for the search.

    Parameters
    ----------
    design : (P, P) ``E[f fᵀ]`` (a read-only memory map is fine: a target reads the Gram rows
        of the sources it tries, about k per swap round).
    rhs : (P, T) ``E[f g_t]`` per target.
    target_sq : (T,) ``E[g_t²]``.
    forbid : (T,) int, optional — the source target t may not use (itself, within one model).
    design_diag : (P,) the design's diagonal, when known (spares a strided read of it).
    check_input : False skips the O(P²) scan of ``design`` (a Gram checked when built).
    progress : called with (fraction, message) after each chunk of targets.
    """
    from engine.core.covlasso_types import check_problem

    cfg = config or SubsetConfig()
    design, rhs, target_sq, forbid = check_problem(design, rhs, target_sq, forbid, check_design=check_input)
    P, T = rhs.shape
    M = check_max_sources(max_sources)
    diag = np.diagonal(design).copy() if design_diag is None else np.asarray(design_diag, dtype=np.float64)
    workers = 1 if cfg.device != "cpu" else cfg.threads or max(1, min(4, os.cpu_count() or 1))
    chunk = cfg.chunk or max(1, min(1024, (256 << 20) // (8 * 6 * max(P, 1) * M * cfg.starts), -(-T // workers)))
    spans = [(start, min(T, start + chunk)) for start in range(0, T, chunk)]
    with _threads(cfg):
        import torch

        from engine.core.bestsubset_search import solve_starts
        from engine.core.covlasso_kernels import _device, _shared_design

        dev = _device(cfg)  # type: ignore[arg-type]  # (it reads cfg.device only)
        G = _shared_design(design, dev)
        gd = torch.as_tensor(diag, device=dev)

        def solve(span: tuple[int, int]) -> BestSubsetResult:
            start, stop = span
            b = torch.as_tensor(np.array(rhs[:, start:stop].T, order="C"), device=dev)  # (a copy: rhs may be read-only)
            ysq = torch.as_tensor(target_sq[start:stop].copy(), device=dev)
            ban = None if forbid is None else torch.as_tensor(forbid[start:stop], device=dev)
            return solve_starts(G, gd, b, ysq, ban, M, cfg)

        parts = []
        with contextlib.ExitStack() as stack:
            solved = map(solve, spans)
            if workers > 1 and len(spans) > 1:  # results in order, as they come
                solved = stack.enter_context(ThreadPoolExecutor(min(workers, len(spans)))).map(solve, spans)
            for (_, stop), part in zip(spans, solved, strict=True):
                parts.append(part)
                if progress is not None:
                    progress(stop / T, f"best subsets: {stop:,} of {T:,} targets")
    return BestSubsetResult.concat(parts)


@contextlib.contextmanager
def _threads(cfg: SubsetConfig):
    import torch

    if cfg.device != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # per chunk thread: see SubsetConfig.threads
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- least squares on a support


def least_squares_on(design, rhs_col, target_sq: float, support, pivot: float = 1e-8
                     ) -> tuple[np.ndarray, np.ndarray, float]:
    """Least squares of one target on the sources ``support`` (the relaxed Lasso's refit).

    The sources are taken in the order given (strongest first, say); one whose squared distance
    to the span of those before it is below ``pivot`` of its ``G_jj`` is left out (it adds
    nothing the others do not, and would make ``G_SS`` singular: a Lasso support on a
    low-rank Gram can be). Returns (kept sources in the given order, coefficients, residual
    ``E[g²] − b_Sᵀθ``). Incremental Cholesky, numpy only.
    """
    support = np.asarray(support, dtype=np.int64).reshape(-1)
    b = np.asarray(rhs_col, dtype=np.float64)
    kept: list[int] = []
    L = np.zeros((len(support), len(support)))
    for j in support:
        row = np.asarray(design[j], dtype=np.float64)  # one Gram row (a memory map reads just it)
        g_jj, k = float(row[j]), len(kept)
        ell = _forward_solve(L[:k, :k], row[kept]) if k else np.zeros(0)
        d = g_jj - float(ell @ ell)
        if not d > pivot * g_jj:
            continue
        L[k, :k], L[k, k] = ell, np.sqrt(d)
        kept.append(int(j))
    k = len(kept)
    if k == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0), float(target_sq)
    bS = b[kept]
    z = _forward_solve(L[:k, :k], bS)
    theta = _triangular(L[:k, :k].T, z, lower=False)
    return np.array(kept, dtype=np.int64), theta, float(max(target_sq - z @ z, 0.0))


def _forward_solve(L: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    return _triangular(L, rhs, lower=True)


def _triangular(L: np.ndarray, rhs: np.ndarray, lower: bool) -> np.ndarray:
    from scipy.linalg import solve_triangular

    return solve_triangular(L, rhs, lower=lower, check_finite=False)
