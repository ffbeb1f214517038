"""All-target analyses that cost more than a request may take: cached stages, run as jobs.

* **Redundancy and spectrum** of a store (paper §2.2): eigendecompositions of the K×K Gram
  (K³ work: a second at 1,000 categories, most of an hour on two cores at 21,843).
* **Least-squares floor** of a pair: every target of ``model`` fitted on all of ``source``'s
  logits (α → 0), with its Table 1 errors — how far any dependency between them can go.
* **Conjecture 1** (|C_tj| < α ⇒ θ_j = 0) checked on every (target, source) pair at every α
  of a complete path: one pass over the Gram.

Pages read these with ``read_*`` (never computing); the ``theory`` and ``paths`` jobs make them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.core.analysis import (
    LeastSquaresFloor,
    Redundancy,
    ScreeningCheck,
    Top2,
    r_squared,
    redundancy,
)
from engine.stages.alpha_paths import DependencyPath, PathSpec
from engine.stages.gramsets import load_gramset
from engine.stages.pairing import Pairing
from engine.storage.derived import declare_derived
from engine.storage.store import Cache

log = logging.getLogger(__name__)

_REDUNDANCY = ("r", "exact", "null_share", "spectrum", "scalars")
_FLOOR = ("abs_err", "rel_err", "acc", "r2", "scalars")
_SCREENING = ("alphas", "screened", "zeros", "violations", "median_sources")
REDUNDANCY = declare_derived("redundancy", _REDUNDANCY, 2, "§2.2's redundancy of every category, the spectrum")
FLOOR = declare_derived("floor", _FLOOR, 2, "the least-squares floor of every target")
SCREENING = declare_derived("screening", _SCREENING, 3, "the screening rule's effect along the α path")


def _key(pairing: Pairing) -> dict:
    return {**pairing.key(), "layout": REDUNDANCY.version}  # the redundancy's and the floor's


# ----------------------------------------------------------------------------- redundancy, spectrum


@dataclass(frozen=True)
class StoreTheory:
    """Redundancy of every category and the Gram's eigenvalues (largest first, ≥ 0)."""

    redundancy: Redundancy
    spectrum: np.ndarray


def compute_redundancy(cache: Cache, pairing: Pairing, progress: Callable[[float, str], None] | None = None
                       ) -> StoreTheory:
    report = progress or (lambda f, m: None)
    gs = load_gramset(cache, pairing)
    k = gs.n_sources
    report(0.05, f"redundancy: eigendecomposition of the {k:,} × {k:,} scaled Gram")
    eps = float(np.finfo(pairing.source.logits.dtype).eps)  # float16 stores: a coarser floor
    red = redundancy(np.asarray(gs.design), data_eps=eps)
    report(0.6, f"spectrum: eigenvalues of the {k:,} × {k:,} Gram")
    spectrum = gram_spectrum(np.asarray(gs.design))
    scalars = np.array([red.floor, red.rank, red.rel_precision])
    cache.save_derived(REDUNDANCY, _key(pairing), {"r": red.r, "exact": red.exact.astype(np.uint8),
                                                     "null_share": red.null_share, "spectrum": spectrum,
                                                     "scalars": scalars}, pairing.names())
    return StoreTheory(red, spectrum)


def read_redundancy(cache: Cache, pairing: Pairing) -> StoreTheory | None:
    hit = cache.load_derived(REDUNDANCY, _key(pairing))
    if hit is None:
        return None
    a = hit[0]
    floor, rank, precision = (float(x) for x in a["scalars"])
    red = Redundancy(r=a["r"], exact=a["exact"].astype(bool), null_share=a["null_share"], floor=floor,
                     rank=int(rank), rel_precision=precision)
    return StoreTheory(red, a["spectrum"])


def gram_spectrum(design: np.ndarray) -> np.ndarray:
    """Eigenvalues of the logit Gram, largest first (float64, clipped at 0 for the log plot)."""
    lam = np.linalg.eigvalsh(design)[::-1]
    return np.clip(lam, 0.0, None)


# ----------------------------------------------------------------------------- floor between models


@dataclass(frozen=True)
class FloorMetrics:
    """Table 1 errors of every target's least-squares fit on all of the source's logits."""

    abs_err: np.ndarray  # (T,)
    rel_err: np.ndarray  # (T,) %
    acc: np.ndarray  # (T,) % top-1 with the target's logit replaced by the fit
    rank: int  # numerical rank of the source's Gram
    r2: np.ndarray  # (T,) R² of the fit (nan where the logit is constant)


def compute_floor(cache: Cache, pairing: Pairing, progress: Callable[[float, str], None] | None = None,
                  chunk: int = 256) -> FloorMetrics:
    report = progress or (lambda f, m: None)
    gs = load_gramset(cache, pairing)
    report(0.02, f"least-squares floor: eigendecomposition of the {gs.n_sources:,}-category Gram")
    floor = LeastSquaresFloor(np.asarray(gs.design), gs.rhs)
    top2 = Top2.of(pairing.model.logits)
    T = gs.n_targets
    out = np.zeros((4, T))
    for start in range(0, T, chunk):
        cols = np.arange(start, min(T, start + chunk))
        out[:, cols] = _fit_metrics(floor, pairing, cols, top2)
        report(0.3 + 0.7 * cols[-1] / T, f"floor metrics: {cols[-1] + 1:,} of {T:,} targets")
    metrics = FloorMetrics(out[0], out[1], out[2], floor.rank, out[3])
    cache.save_derived(FLOOR, _key(pairing), {"abs_err": out[0], "rel_err": out[1], "acc": out[2],
                                                "r2": out[3], "scalars": np.array([floor.rank])}, pairing.names())
    return metrics


def _fit_metrics(floor: LeastSquaresFloor, pairing: Pairing, cols: np.ndarray, top2: Top2) -> np.ndarray:
    """(4, len(cols)) abs err, rel err (%), acc (%), R² of the fits of targets ``cols``."""
    theta = np.stack([floor.coef(int(t)) for t in cols], axis=1)  # (P, c)
    fitted = _rows_times(pairing.source.logits, theta)  # (N, c)
    original = np.asarray(pairing.model.logits[:, cols], dtype=np.float64)
    abs_err = np.abs(original - fitted).mean(0)
    rel_err = 100 * abs_err / np.maximum(np.abs(original).mean(0), 1e-300)
    first = top2.idx1[:, None] == cols[None, :]
    other_idx = np.where(first, top2.idx2[:, None], top2.idx1[:, None])
    other_val = np.where(first, top2.val2[:, None], top2.val1[:, None])
    wins = (fitted > other_val) | ((fitted == other_val) & (cols[None, :] < other_idx))
    pred = np.where(wins, cols[None, :], other_idx)
    acc = 100 * (pred == pairing.model.labels[:, None]).mean(0)
    r2 = np.array([r_squared(original[:, j], fitted[:, j]) for j in range(len(cols))])
    return np.stack([abs_err, rel_err, acc, r2])


def _rows_times(logits: np.ndarray, theta: np.ndarray, rows: int = 2048) -> np.ndarray:
    """``logits @ theta`` in float64, by blocks of rows (no float64 copy of the logits)."""
    out = np.empty((logits.shape[0], theta.shape[1]))
    for s in range(0, logits.shape[0], rows):
        out[s : s + rows] = np.asarray(logits[s : s + rows], dtype=np.float64) @ theta
    return out


def read_floor(cache: Cache, pairing: Pairing) -> FloorMetrics | None:
    hit = cache.load_derived(FLOOR, _key(pairing))
    if hit is None:
        return None
    a = hit[0]
    return FloorMetrics(a["abs_err"], a["rel_err"], a["acc"], int(a["scalars"][0]), a["r2"])


# ----------------------------------------------------------------------------- Conjecture 1


@dataclass(frozen=True)
class ScreeningPoint:
    alpha: float
    check: ScreeningCheck
    median_sources: float


def compute_screening(cache: Cache, spec: PathSpec, path: DependencyPath, block: int = 512) -> list[ScreeningPoint]:
    """Conjecture 1 at every α of a complete path, over every target the path reaches there.

    One pass over the Gram: per target, how many |C_tj| fall under each α (a histogram over
    the grid), and for the non-zero coefficients whether theirs does.
    """
    gs = load_gramset(cache, spec.pairing)
    A, T = len(path.alphas), gs.n_targets
    asc = path.alphas[::-1]
    below = np.zeros((T, A), dtype=np.int64)  # below[t, a]: sources with |C_tj| < alphas[a]
    for start in range(0, T, block):
        cols = np.arange(start, min(T, start + block))
        c = np.abs(gs.rhs_columns(cols))  # (P, b)
        if gs.within:
            c[cols, np.arange(len(cols))] = np.inf  # a target is never its own source
        for i, a in enumerate(asc):
            below[cols, A - 1 - i] = (c < a).sum(0)
    allowed = gs.n_sources - (1 if gs.within else 0)
    points = []
    for a, alpha in enumerate(path.alphas):
        reached = path.reached(a)
        at = path.at_alpha(a)
        tcol = path.targets[at.column_index()]
        cov = np.abs(_gather(gs, tcol, at.sources))
        screened = int(below[path.targets[reached], a].sum())
        nnz = at.support_sizes[reached]
        zeros = int((allowed - nnz).sum())
        violations = int(((cov < alpha) & reached[at.column_index()]).sum())
        both = screened - violations
        check = ScreeningCheck(float(alpha), screened, zeros, violations,
                               both / screened if screened else 1.0, both / zeros if zeros else 1.0)
        points.append(ScreeningPoint(float(alpha), check, float(np.median(nnz)) if nnz.size else 0.0))
    cache.save_derived(SCREENING, spec.key(), _screening_arrays(points), spec.pairing.names())
    return points


def _gather(gs, targets: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """``C[source, target]`` for entry pairs, read by target rows (one row per distinct target)."""
    out = np.empty(len(targets))
    order = np.argsort(targets, kind="stable")
    uniq, starts = np.unique(targets[order], return_index=True)
    bounds = list(starts) + [len(order)]
    for i, t in enumerate(uniq):
        sel = order[bounds[i] : bounds[i + 1]]
        row = gs.design[t] if gs.within else gs.cross_t[t]
        out[sel] = row[sources[sel]]
    return out


def _screening_arrays(points: list[ScreeningPoint]) -> dict[str, np.ndarray]:
    return {"alphas": np.array([p.alpha for p in points]),
            "screened": np.array([p.check.screened for p in points]),
            "zeros": np.array([p.check.zeros for p in points]),
            "violations": np.array([p.check.violations for p in points]),
            "median_sources": np.array([p.median_sources for p in points])}


def read_screening(cache: Cache, spec: PathSpec) -> list[ScreeningPoint] | None:
    hit = cache.load_derived(SCREENING, spec.key())
    if hit is None:
        return None
    a = hit[0]
    out = []
    for alpha, s, z, v, m in zip(a["alphas"], a["screened"], a["zeros"], a["violations"], a["median_sources"]):
        s, z, v = int(s), int(z), int(v)
        both = s - v
        out.append(ScreeningPoint(float(alpha), ScreeningCheck(float(alpha), s, z, v, both / s if s else 1.0,
                                                               both / z if z else 1.0), float(m)))
    return out
