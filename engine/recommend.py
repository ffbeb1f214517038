"""Where a page opens: the α and the target worth showing first, read off the cached α path.

A dependency is worth showing when it *fits* — its replaced logit keeps at least
``FIT_R2`` of the logit's variance (R², which ignores the per-sample offset that softmax
leaves arbitrary) — with as few sources as possible. Along a target's path R² falls as α
grows and sources drop out, so the **recommended α** of a target is the largest α of the
path whose dependency still fits; where no α fits (between two weakly related models),
the largest α within ``NEAR_BEST`` of the path's best R².

The **clear example** of a pairing (the target a page opens on) is, among the targets
whose recommended dependency fits, one with the fewest sources — at least
``MIN_EXAMPLE_SOURCES``, since a one-source dependency shows a duplicate, not a
combination — and the highest R² among those.

Pure functions of a path's R² (:class:`engine.service.DependencyPath` carries one per α
and target, computed from the Grams when the path is solved).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FIT_R2 = 0.95
NEAR_BEST = 0.01
MIN_EXAMPLE_SOURCES = 2


def recommended_index(r2: np.ndarray, fit: float = FIT_R2, near_best: float = NEAR_BEST) -> int | None:
    """Index (into α descending) of the largest α whose R² ≥ ``fit``; else of the largest α
    within ``near_best`` of the best R² on the path. None when R² is undefined everywhere."""
    r2 = np.asarray(r2, dtype=np.float64)
    if not np.isfinite(r2).any():
        return None
    fits = np.flatnonzero(r2 >= fit)
    if fits.size:
        return int(fits[0])
    best = float(np.nanmax(r2))
    return int(np.flatnonzero(r2 >= best - near_best)[0])


@dataclass(frozen=True)
class Recommendation:
    """The recommended dependency of every target of a pairing."""

    alpha_index: np.ndarray  # (T,) index into the path's α (−1: none)
    r2: np.ndarray  # (T,) R² there (nan: none)
    n_sources: np.ndarray  # (T,) sources there

    def fits(self, fit: float = FIT_R2) -> np.ndarray:
        return np.nan_to_num(self.r2, nan=-np.inf) >= fit

    def clear_example(self, fit: float = FIT_R2, min_sources: int = MIN_EXAMPLE_SOURCES,
                      prefer: np.ndarray | None = None) -> int | None:
        """The target with the fewest sources (≥ ``min_sources``) among those that fit, the
        highest R² among equals; ``prefer`` (bool (T,)) restricts to those targets first when
        any of them qualifies (e.g. categories a person reads at a glance)."""
        ok = self.fits(fit) & (self.n_sources >= min_sources)
        if prefer is not None and (ok & prefer).any():
            ok = ok & prefer
        if not ok.any():
            return None
        cand = np.flatnonzero(ok)
        order = np.lexsort((-self.r2[cand], self.n_sources[cand]))
        return int(cand[order[0]])


def recommend(path) -> Recommendation:
    """The recommended α of every target of ``path`` (a :class:`engine.service.DependencyPath`
    with its R² per α and target): what a page opens on."""
    if path.r2 is None:
        raise ValueError("this path carries no R²; compute it with engine.service.load_or_compute_path")
    t_count = path.n_targets
    idx = np.full(t_count, -1, dtype=np.int64)
    r2 = np.full(t_count, np.nan)
    sizes = np.zeros(t_count, dtype=np.int64)
    for t in range(t_count):
        a = recommended_index(path.r2[:, t])
        if a is not None:
            idx[t], r2[t], sizes[t] = a, path.r2[a, t], path.support_sizes[a, t]
    return Recommendation(idx, r2, sizes)
