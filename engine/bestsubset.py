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
   makes m better than m+1, m+1 is grown again from it.

The residual never rises with m (a solution for m may keep fewer than m sources when no
further source is numerically independent of its support). It is a search, not a proof:
the tests measure it against exhaustive search over every support of size ≤ 3.

**Near-singular supports.** Logit Grams are singular (rank ≈ penultimate width + 1), and a
support must stay solvable: a source may join S only when its squared distance to the span
of S in the Gram's metric, ``d_i``, is above ``pivot · G_ii`` (default 1e-8: conditioning of
the unit-diagonal G_SS ≲ 10⁸). S is then always factorised by a plain Cholesky, its
coefficients by ``G_SS⁻¹ b_S``; no ridge is added, and nothing outside S is ever inverted.

Pure: arrays in, :class:`BestSubsetResult` out; torch is imported only to solve.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from engine.errors import InvalidInputError
from engine.sparse import SparseColumns

log = logging.getLogger(__name__)

DEFAULT_MAX_SOURCES = 8  # the Sources control of the pages: 1 … 8
MAX_SOURCES_LIMIT = 32  # beyond it a dependency is not "a few sources", and the swaps cost k²·P
RESULT_ARRAYS = ("offsets", "source", "value", "residual", "swaps", "omp_start")


@dataclass(frozen=True)
class SubsetConfig:
    """How best subsets are searched; part of every cached solution's key."""

    pivot: float = 1e-8  # a source joins S only when d_i > pivot · G_ii (see the module doc)
    tol: float = 1e-12  # a swap must lower the residual by more than tol · E[g_t²]
    max_swaps: int = 64  # swaps per target and m (each lowers the residual; rarely > 5)
    # independent searches per target, each started from one of its ``starts`` best single
    # sources (the first one free); the best of them is kept for every m
    starts: int = 4
    backward: bool = True  # the backward sweep (m+1's solution less its weakest source, swapped)
    chunk: int = 0  # targets solved together; 0: as many as ~256 MB of temporaries allow
    device: str = "cpu"
    # chunks of targets solved at once on the CPU, each in its own thread with one torch
    # thread (small batched ops run fastest single-threaded; torch releases the GIL); 0: one
    # per core, at most 4
    threads: int = 0

    def __post_init__(self) -> None:
        for name in ("pivot", "tol"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v) or not 0 < v < 1:
                raise InvalidInputError(f"{name} must be a number in (0, 1); got {v!r}")
        for name, low in (("max_swaps", 0), ("starts", 1), ("chunk", 0), ("threads", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise InvalidInputError(f"{name} must be an integer >= {low}; got {v!r}")
        if not isinstance(self.device, str) or not (self.device == "cpu" or self.device.startswith("cuda")):
            raise InvalidInputError(f"device must be 'cpu', 'cuda' or 'cuda:N'; got {self.device!r}")

    def key(self) -> dict:
        """The settings that change the result (device, chunking and threads do not)."""
        d = asdict(self)
        for name in ("device", "chunk", "threads"):
            d.pop(name)
        return d


def check_max_sources(value, n_sources: int | None = None) -> int:
    """``--sources`` / ``max_sources``: an integer in 1 … :data:`MAX_SOURCES_LIMIT` (and below
    the number of sources when known), else one line naming the value and what to give."""
    text = str(value).strip()
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not ok and isinstance(value, str) and text.lstrip("+").isdigit() and text.isascii():
        value, ok = int(text), True
    limit = MAX_SOURCES_LIMIT if n_sources is None else min(MAX_SOURCES_LIMIT, max(n_sources, 1))
    if not ok or not 1 <= int(value) <= limit:
        raise InvalidInputError(
            f"--sources must be a whole number of sources from 1 to {limit}; got {text!r}. "
            f"Give e.g. --sources 4 (the paper's illustrated dependencies have 3 or 4 sources)")
    return int(value)


@dataclass(frozen=True)
class BestSubsetResult:
    """The best dependency with at most m sources, m = 1 … M, of T targets.

    coef : :class:`SparseColumns` with T·M columns; column ``t·M + (m − 1)`` is target t with
        at most m sources (ascending source indices, as every SparseColumns).
    residual : (T, M) ``E[(g_t − θᵀf)²]`` of each, from the Grams (non-increasing in m).
    swaps : (T, M) swaps made after the greedy start.
    omp_start : (T, M) True where OMP's support was the better start.
    """

    coef: SparseColumns
    residual: np.ndarray
    swaps: np.ndarray
    omp_start: np.ndarray

    @property
    def n_targets(self) -> int:
        return self.residual.shape[0]

    @property
    def max_sources(self) -> int:
        return self.residual.shape[1]

    @property
    def n_sources(self) -> int:
        return self.coef.n_sources

    def column(self, position: int, m: int) -> tuple[np.ndarray, np.ndarray]:
        """(sources, coefficients) of the target at ``position`` with at most ``m`` sources."""
        if not 1 <= m <= self.max_sources:
            raise InvalidInputError(f"m must lie in 1 … {self.max_sources}; got {m!r}")
        return self.coef.column(position * self.max_sources + m - 1)

    def at(self, m: int) -> SparseColumns:
        """Every target's dependency with at most ``m`` sources: T columns, in target order."""
        if not 1 <= m <= self.max_sources:
            raise InvalidInputError(f"m must lie in 1 … {self.max_sources}; got {m!r}")
        return self.coef.select(np.arange(self.n_targets) * self.max_sources + m - 1)

    def select(self, positions) -> BestSubsetResult:
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        M = self.max_sources
        cols = (pos[:, None] * M + np.arange(M)[None, :]).reshape(-1)
        return BestSubsetResult(self.coef.select(cols), self.residual[pos], self.swaps[pos], self.omp_start[pos])

    def up_to(self, m: int) -> BestSubsetResult:
        """The same targets with M = ``m`` (a prefix of every target's sequence)."""
        if not 1 <= m <= self.max_sources:
            raise InvalidInputError(f"m must lie in 1 … {self.max_sources}; got {m!r}")
        M, T = self.max_sources, self.n_targets
        cols = (np.arange(T)[:, None] * M + np.arange(m)[None, :]).reshape(-1)
        return BestSubsetResult(self.coef.select(cols), self.residual[:, :m], self.swaps[:, :m],
                                self.omp_start[:, :m])

    @classmethod
    def concat(cls, parts: list[BestSubsetResult]) -> BestSubsetResult:
        return cls(SparseColumns.concat([p.coef for p in parts]),
                   *(np.concatenate([getattr(p, f) for p in parts]) for f in ("residual", "swaps", "omp_start")))

    # -- storage
    def to_arrays(self) -> dict[str, np.ndarray]:
        return {**self.coef.to_arrays(), "residual": self.residual, "swaps": self.swaps,
                "omp_start": self.omp_start.astype(np.uint8)}

    @classmethod
    def from_arrays(cls, arrays: dict, n_sources: int) -> BestSubsetResult:
        return cls(SparseColumns.from_arrays(arrays, n_sources), np.asarray(arrays["residual"], dtype=np.float64),
                   np.asarray(arrays["swaps"], dtype=np.int64), np.asarray(arrays["omp_start"]).astype(bool))


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
    from engine.covlasso_types import check_problem

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

        from engine.covlasso_kernels import _device, _shared_design

        dev = _device(cfg)  # type: ignore[arg-type]  # (it reads cfg.device only)
        G = _shared_design(design, dev)
        gd = torch.as_tensor(diag, device=dev)

        def solve(span: tuple[int, int]) -> BestSubsetResult:
            start, stop = span
            b = torch.as_tensor(np.ascontiguousarray(rhs[:, start:stop].T), device=dev)
            ysq = torch.as_tensor(target_sq[start:stop].copy(), device=dev)
            ban = None if forbid is None else torch.as_tensor(forbid[start:stop], device=dev)
            return _solve_starts(G, gd, b, ysq, ban, M, cfg)

        parts = []
        with ThreadPoolExecutor(max(1, min(workers, len(spans)))) as pool:  # results in order, as they come
            for (_, stop), part in zip(spans, pool.map(solve, spans), strict=True):
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


# ----------------------------------------------------------------------------- kernels


@dataclass
class _Fit:
    """Least squares of a batch of targets on supports ``S`` (B, k), everything a step needs."""

    theta: object  # (B, k) θ_S = G_SS⁻¹ b_S
    H: object  # (B, k, k) G_SS⁻¹
    W: object  # (B, k, P) H G_{S,:}  (row j: w_j)
    c: object  # (B, P) b − θᵀ G_{S,:}  (the residual's correlation with every source)
    d: object  # (B, P) G_ii − G_iS H G_Si (0 on S)
    resid: object  # (B,) E[g²] − b_Sᵀ θ_S
    ok: object  # (B,) False where the Cholesky failed (never expected: see the pivot rule)


_FIELDS = ("theta", "H", "W", "c", "d", "resid", "ok")


def _fit(G, gd, b, ysq, S) -> _Fit:
    import torch

    B, k = S.shape
    P = G.shape[0]
    if k == 0:
        z = torch.zeros(B, 0, dtype=b.dtype, device=b.device)
        return _Fit(z, z.reshape(B, 0, 0), z.reshape(B, 0, 1).expand(B, 0, P), b.clone(),
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
    return _Fit(theta, H, W, c, d, resid, ok)


def _eligible(fit_d, gd, S, ban, pivot: float):
    """(B, P) sources that may join S: numerically independent of it, not in it, not banned."""
    import torch

    ok = fit_d > pivot * gd[None, :]
    if S.shape[1]:
        ok.scatter_(1, S, False)
    if ban is not None:
        ok[torch.arange(len(ok), device=ok.device), ban] = False
    return ok


def _forward_pick(fit: _Fit, gd, S, ban, pivot: float, omp: bool):
    """The next source of each row: largest residual decrease ``c²/d`` (forward selection) or
    largest ``|c|`` (OMP). Returns (index (B,), gain (B,), found (B,))."""
    import torch

    ok = _eligible(fit.d, gd, S, ban, pivot)
    gain = torch.where(ok, fit.c**2 / torch.where(ok, fit.d, 1.0), 0.0)
    score = torch.where(ok, fit.c.abs() if omp else gain, -1.0)
    idx = torch.argmax(score, 1)
    return idx, torch.gather(gain, 1, idx[:, None])[:, 0], ok.any(1)


def _best_swap(fit: _Fit, gd, S, ban, pivot: float):
    """The pair (j ∈ S, i ∉ S) whose swap lowers the residual most: (delta (B,), j, i).

    With ``U = W / √H_jj`` the swap's gain is ``(c_i + θ_j U_ji / √H_jj)² / (d_i + U_ji²)``
    less ``θ_j² / H_jj``: five passes over the (B, k, P) candidates (``addcmul``/``addcdiv``).
    A source in S or banned has ``d_i = −∞`` (its gain is −0: never a swap); the pivot rule
    is checked only in the rows where some source is near the span of S (``d_i`` below it
    before the removal of j), rare: elsewhere every ``d_i + U_ji²`` is above it."""
    import torch

    B, k = S.shape
    P = fit.W.shape[2]
    hjj = torch.diagonal(fit.H, dim1=1, dim2=2)  # (B, k)
    d = fit.d.clone()
    d.scatter_(1, S, -float("inf"))
    if ban is not None:
        d[torch.arange(B, device=d.device), ban] = -float("inf")
    rs = torch.rsqrt(hjj)
    U = fit.W * rs[:, :, None]
    d_new = torch.addcmul(d[:, None, :], U, U)  # (B, k, P)
    c_new = torch.addcmul(fit.c[:, None, :], U, (fit.theta * rs)[:, :, None]).square_()
    score = torch.addcdiv((-(fit.theta**2) / hjj)[:, :, None], c_new, d_new, out=c_new)  # − delta
    near = torch.nonzero(((d <= pivot * gd[None, :]) & (d > -float("inf"))).any(1))[:, 0]
    if len(near):
        score[near] = score[near].masked_fill_(~(d_new[near] > pivot * gd), -float("inf"))
    flat = torch.argmax(score.reshape(B, -1), 1)
    best = -torch.gather(score.reshape(B, -1), 1, flat[:, None])[:, 0]
    return best, flat // P, flat % P


def _take(fit: _Fit, rows) -> _Fit:
    if rows.dtype == torch_bool() and bool(rows.all()):
        return fit  # every row (no copy: callers replace, never write into, what they take)
    return _Fit(*(getattr(fit, f)[rows] for f in _FIELDS))


def torch_bool():
    import torch

    return torch.bool


def _put(fit: _Fit, rows, part: _Fit) -> None:
    for f in _FIELDS:
        getattr(fit, f)[rows] = getattr(part, f)


def _add(fit: _Fit, G, S, i):
    """The fit of ``S + i`` from the fit of S (B rows, one source ``i`` each): the bordered
    inverse, O(k·P) per row instead of a refit's O(k²·P). Returns (new S, new fit)."""
    import torch

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
    W = torch.cat([fit.W - v[:, :, None] * ud[:, None, :], ud[:, None, :]], 1)
    H = torch.zeros(B, k + 1, k + 1, dtype=fit.H.dtype, device=S.device)
    vd = v / delta[:, None]
    H[:, :k, :k] = fit.H + v[:, :, None] * vd[:, None, :]
    H[:, :k, k], H[:, k, :k], H[:, k, k] = -vd, -vd, 1.0 / delta
    theta = torch.cat([fit.theta - vd * ci[:, None], (ci / delta)[:, None]], 1)
    new = _Fit(theta, H, W, fit.c - (ci / delta)[:, None] * u, fit.d - u * ud, fit.resid - ci**2 / delta, ok)
    return torch.cat([S, i[:, None]], 1), new


@dataclass
class _Omp:
    """OMP's own support, grown without swaps, so kept in Gram–Schmidt form (no inverse):
    ``q_l = (G_{s_l,·} − Σ_{l'<l} q_l'[s_l] q_l') / √δ_l``; adding a source costs one pass
    over the k rows (``_add`` also updates the k rows of ``W``)."""

    S: object  # (B, k)
    q: list  # k tensors (B, P)
    c: object  # (B, P) b − G_{:,S} θ_S
    d: object  # (B, P) G_ii − Σ_l q_l[i]²
    resid: object  # (B,)
    ok: object  # (B,)

    def take(self, rows) -> _Omp:
        if rows.dtype == torch_bool() and bool(rows.all()):
            return self
        return _Omp(self.S[rows], [x[rows] for x in self.q], self.c[rows], self.d[rows], self.resid[rows],
                    self.ok[rows])

    def add(self, G, i) -> _Omp:
        import torch

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
        return _Omp(torch.cat([self.S, i[:, None]], 1), self.q + [u], torch.addcmul(self.c, gain[:, None], u, value=-1.0),
                    torch.addcmul(self.d, u, u, value=-1.0), self.resid - gain**2, ok)


def _remove(fit: _Fit, S, j):
    """The fit of S less its source at position ``j`` (B,) from the fit of S: the rank-one
    downdate of the inverse, O(k·P) per row. Returns (new S, new fit)."""
    import torch

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
    W = torch.gather(fit.W, 1, keep[:, :, None].expand(B, k - 1, P)) - (hj / h[:, None])[:, :, None] * wj[:, None, :]
    theta = torch.gather(fit.theta, 1, keep) - thj[:, None] * hj / h[:, None]
    new = _Fit(theta, H, W, fit.c + (thj / h)[:, None] * wj, fit.d + wj**2 / h[:, None], fit.resid + thj**2 / h,
               fit.ok.clone())
    return torch.gather(S, 1, keep), new


def _swap_descent(G, gd, b, ysq, ban, S, cfg: SubsetConfig, start: _Fit | None = None):
    """Swaps on supports ``S`` (B, k) until none lowers the residual by more than
    ``tol·E[g²]``, each made by a downdate and an update of the fit (``start``: the fit of S
    when the caller has it; it is reused for the result). Returns (S, its fit, swaps per
    row): a row that swapped is refitted from the Gram, and goes back to its start where
    the refit is not below the start's residual (rounding in the updates on a near-singular
    set)."""
    import torch

    B, k = S.shape
    S0 = S
    first = cur = start if start is not None else _fit(G, gd, b, ysq, S)  # cur: the live rows' fits
    resid0 = cur.resid.clone()
    swaps = torch.zeros(B, dtype=torch.int64, device=S.device)
    live = torch.arange(B, device=S.device)
    S = S.clone()
    for _ in range(cfg.max_swaps if k else 0):
        delta, j, i = _best_swap(cur, gd, S[live], None if ban is None else ban[live], cfg.pivot)
        go = delta < -cfg.tol * ysq[live]
        if not bool(go.any()):
            break
        live, j, i = live[go], j[go], i[go]
        s1, f1 = _remove(cur if bool(go.all()) else _take(cur, go), S[live], j)
        S[live], cur = _add(f1, G, s1, i)
        swaps[live] += 1
    # rows that swapped: refit from the Gram (the updates' rounding never accumulates)
    final = first  # (updated in place: callers hand over their start)
    moved = torch.nonzero(swaps > 0)[:, 0]
    if len(moved):
        again = _fit(G, gd, b[moved], ysq[moved], S[moved])
        back = ~again.ok | (again.resid > resid0[moved] + 1e-9 * ysq[moved])  # rounding: keep the start
        keep = ~back
        S[moved[back]] = S0[moved[back]]
        swaps[moved[back]] = 0
        _put(final, moved[keep], _take(again, keep))
    return S, final, swaps


def _solve_starts(G, gd, b, ysq, ban, M: int, cfg: SubsetConfig) -> BestSubsetResult:
    """One chunk of targets: ``cfg.starts`` searches per target, the best kept per m."""
    import torch

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
    import torch

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
    fit = _fit(G, gd, b, ysq, best)
    track = _Omp(best, [], fit.c, fit.d, fit.resid, fit.ok)  # OMP's support, grown alongside
    if seeds is not None:  # which target each row searches for (rows are target-major)
        seeds_of = torch.arange(B, device=dev) // starts

    def sub(x, rows):
        return None if x is None else x[rows]

    for m in range(1, M + 1):
        idx, gain, found = _forward_pick(fit, gd, best, sub(ban, grow), cfg.pivot, omp=False)
        o_idx, _, o_found = _forward_pick(track, gd, track.S, sub(ban, grow), cfg.pivot, omp=True)
        # rows with no source left to add keep their last solution for every larger m
        grow, best, idx, gain = grow[found], best[found], idx[found], gain[found]
        omp_alive = omp_alive[found] & o_found[found]
        fit = _take(fit, found)
        if len(grow) == 0:
            break
        seeded = None
        if m == 1 and seeds is not None:
            seeded = seeds[grow] >= 0  # a forced first source (one search per start)
            idx = torch.where(seeded, seeds[grow], idx)
            gain = torch.where(seeded, torch.gather(fit.c**2 / fit.d.clamp(min=1e-300), 1,
                                                    idx.clamp(min=0)[:, None])[:, 0], gain)
            omp_alive &= ~seeded
        start, fwd = _add(fit, G, best, idx)
        track = track.take(found).add(G, o_idx[found])
        use_omp = omp_alive & track.ok & (track.resid < fwd.resid)
        start = torch.where(use_omp[:, None], track.S, start)
        if bool(use_omp.any()):  # (a few %): the fit of OMP's support
            _put(fwd, use_omp, _fit(G, gd, b[grow[use_omp]], ysq[grow[use_omp]], track.S[use_omp]))
        if m == 1:  # one source: the forward pick is the best (a swap cannot lower it)
            best, fit, n = start, fwd, torch.zeros(len(grow), dtype=torch.int64, device=dev)
        else:
            best, fit, n = _swap_descent(G, gd, b[grow], ysq[grow], sub(ban, grow), start, cfg, fwd)
        if seeded is not None and bool(seeded.any()):  # a forced start stays as it is at m = 1
            best[seeded] = start[seeded]
            _put(fit, seeded, _fit(G, gd, b[grow[seeded]], ysq[grow[seeded]], start[seeded]))
            n[seeded] = 0
        sup[grow, m - 1, :m], val[grow, m - 1, :m], resid[grow, m - 1] = best, fit.theta, fit.resid
        n_swaps[grow, m - 1], omp_start[grow, m - 1], last[grow] = n, use_omp, m
        if seeds is not None and m < M:  # searches of one target that met go on as one
            twin = _twins(torch.cat([seeds_of[grow][:, None], best.sort(1).values], 1))
            if bool(twin.any()):
                on = ~twin
                grow, best, omp_alive = grow[on], best[on], omp_alive[on]
                fit, track = _take(fit, on), track.take(on)
    for m in range(M - 1, 0, -1) if cfg.backward else ():
        rows = torch.nonzero(last > m)[:, 0]
        if len(rows) == 0:
            continue
        above = sup[rows, m, : m + 1]
        f = _fit(G, gd, b[rows], ysq[rows], above)
        weakest = torch.argmin(f.theta**2 / torch.diagonal(f.H, dim1=1, dim2=2), 1)
        S, f = _remove(f, above, weakest)
        S, f, n = _swap_descent(G, gd, b[rows], ysq[rows], sub(ban, rows), S, cfg, f)
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
    import torch

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
    f = _fit(G, gd, b[rows], ysq[rows], below)
    idx, gain, found = _forward_pick(f, gd, below, ban_r, cfg.pivot, omp=False)
    S, f = _add(f, G, below, idx)
    S, f, n = _swap_descent(G, gd, b[rows], ysq[rows], ban_r, S, cfg, f)
    ok = found & f.ok & (f.resid < resid[rows, m - 1])
    r = rows[ok]
    sup[r, m - 1, :m], val[r, m - 1, :m], resid[r, m - 1] = S[ok], f.theta[ok], f.resid[ok]
    n_swaps[r, m - 1] = n[ok]
    omp_start[r, m - 1] = False


def _twins(key):
    """(R,) True for the rows whose ``key`` row appeared before (the first one is kept)."""
    import torch

    _, inv = torch.unique(key, dim=0, return_inverse=True)
    order = torch.arange(len(key), device=key.device)
    first = torch.full((int(inv.max()) + 1,), len(key), dtype=torch.int64, device=key.device)
    first = first.scatter_reduce(0, inv, order, "amin")
    return first[inv] != order


def _pack(sup, val, resid, n_swaps, omp_start, last, ysq, P: int) -> BestSubsetResult:
    """Columns t·M + (m − 1), ascending sources; an m beyond a row's last keeps its last."""
    import torch

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
