"""Where a page opens: the α and the target worth showing first, read off the cached α path.

A dependency is worth showing when it *fits* — its replaced logit keeps at least
``FIT_R2`` = 99 % of the logit's variance (R², which ignores the per-sample offset that softmax
leaves arbitrary) — with as few sources as possible. Why 99 % and not the 95 % of issue 12's
bar: the residual of a logit concentrates on the samples where it is large, its own
category's, so a fit at R² 0.95 can cost the category most of its positives. Measured on the
demo's glyph-vgg (50,000 images): at the α where the median category has R² 0.97, replacing
a logit lost a median 36 pt of its category's positive accuracy; at R² 0.99, 6 pt; the
Table 1 card a page opens on should show a dependency that does the category's job. Along a target's path R² falls as α
grows and sources drop out, so the **recommended α** of a target is the largest α of the
path whose dependency still fits; where no α fits (between two weakly related models),
the largest α within ``NEAR_BEST`` of the path's best R².

The **clear example** of a pairing (the target a page opens on) is, among the targets
whose recommended dependency fits, one with the fewest sources — at least
``MIN_EXAMPLE_SOURCES``, since a one-source dependency shows a duplicate, not a
combination — and the highest R² among those.

Pure functions of a path's R² (:class:`engine.stages.alpha_paths.DependencyPath` carries one per target
and α, computed from the Grams when the path is solved). A page's target needs its own path
only; the clear example needs every target's (the ``paths`` job), or the targets solved so far.

Before any path exists (a store just imported), :class:`GramHint` stands in: from the Grams
alone, each target's best least-squares fit by one source and by a greedy pair — O(P) per
target, no Lasso — and the target that a pair fits while no single source does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from engine.core.analysis import r2_from_error, target_variance

if TYPE_CHECKING:
    from engine.core.gram import GramSet

FIT_R2 = 0.99
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
    """The recommended α of the targets ``path`` holds (a :class:`engine.stages.alpha_paths.DependencyPath`
    with its R² per target and α), in arrays over all the pairing's targets (−1 / nan for
    the others): what a page opens on."""
    t_count = path.n_targets
    idx = np.full(t_count, -1, dtype=np.int64)
    r2 = np.full(t_count, np.nan)
    sizes = np.zeros(t_count, dtype=np.int64)
    support = path.support_sizes
    for i, t in enumerate(path.targets):
        a = recommended_index(path.r2[i, : int(path.n_alphas[i])])
        if a is not None:
            idx[t], r2[t], sizes[t] = a, path.r2[i, a], support[i, a]
    return Recommendation(idx, r2, sizes)


# ----------------------------------------------------------------------------- before any path

# A pair of sources counts as collinear (its 2 × 2 system is not used) below this relative
# determinant.
_COLLINEAR = 1e-9


@dataclass(frozen=True)
class GramHint:
    """Where a page opens before any α path exists, from the Grams alone (:func:`gram_hint`).

    r2_one : (T,) R² of each target's best fit by one source (least squares, no intercept:
        the Lasso's limit α → 0 on that source alone); nan where the logit is constant.
    r2_two : (T,) R² of the best pair that contains that source (a greedy second source).
    """

    r2_one: np.ndarray
    r2_two: np.ndarray

    def clear_example(self, fit: float = FIT_R2, prefer: np.ndarray | None = None) -> int | None:
        """A target that a pair of sources fits (R² ≥ ``fit``) and no single source does — a
        combination, not a duplicate — with the highest R²; where no pair fits, the best pair
        among the targets no single source fits. ``prefer`` as in
        :meth:`Recommendation.clear_example`. None when every target is a duplicate or constant.

        A guess for the page's first view, not a result: the page then solves this target's
        path and shows its recommended dependency, which usually has more than two sources.
        """
        one = np.nan_to_num(self.r2_one, nan=np.inf)
        two = np.nan_to_num(self.r2_two, nan=-np.inf)
        combination = (one < fit) & np.isfinite(two)
        pool = combination & (two >= fit) if (combination & (two >= fit)).any() else combination
        if prefer is not None and (pool & prefer).any():
            pool = pool & prefer
        if not pool.any():
            return None
        return int(np.argmax(np.where(pool, two, -np.inf)))


def gram_hint(gs: GramSet, chunk: int = 128) -> GramHint:
    """Each target's best one-source fit and best greedy pair, from the Grams (pure).

    For target t with right-hand side b (``E[f g_t]``) and design G: the best single source
    j₁ maximises ``b_j² / G_jj`` (the variance it explains); the pair (j₁, j) explains
    ``[b_j₁ b_j] G_{j₁j}⁻¹ [b_j₁ b_j]ᵀ`` — one Gram row (j₁'s) per target. By ``chunk``
    targets: memory ``chunk × P`` floats a few times over.
    """
    T = gs.n_targets
    diag = np.asarray(gs.design_diag if gs.design_diag is not None else np.diagonal(gs.design), dtype=np.float64)
    usable = diag > 0
    safe = np.where(usable, diag, 1.0)
    ysq = np.asarray(gs.target_sq, dtype=np.float64)
    var = target_variance(ysq, gs.target_mean)
    r2_one, r2_two = np.empty(T), np.empty(T)
    for start in range(0, T, chunk):
        t = np.arange(start, min(T, start + chunk))
        rows = np.arange(len(t))
        B = np.asarray(gs.design[t] if gs.within else gs.cross_t[t], dtype=np.float64)  # (c, P): b of each target
        forbid = gs.forbid(t)
        one = np.square(B)
        one /= safe
        one[:, ~usable] = -np.inf
        if forbid is not None:
            one[rows, forbid] = -np.inf
        j1 = np.argmax(one, axis=1)
        best_one = one[rows, j1]
        G1 = np.asarray(gs.design[j1], dtype=np.float64)  # (c, P): G[j₁, :]
        d1, b1 = diag[j1][:, None], B[rows, j1][:, None]
        # explained by (j₁, j): (b₁² G_jj − 2 b₁ b_j G_j₁j + b_j² G_j₁j₁) / (G_j₁j₁ G_jj − G_j₁j²)
        det = np.square(G1)
        np.subtract(d1 * diag, det, out=det)
        explained = B * G1
        explained *= -2.0 * b1
        explained += np.square(b1) * diag
        one = np.square(B, out=one)
        one *= d1
        explained += one
        pair = det > _COLLINEAR * d1 * diag
        pair &= usable
        np.divide(explained, det, out=explained, where=pair)
        explained[~pair] = -np.inf
        explained[rows, j1] = -np.inf
        if forbid is not None:
            explained[rows, forbid] = -np.inf
        best_two = np.maximum(best_one, explained.max(axis=1))
        r2_one[t] = r2_from_error(ysq[t] - best_one, var[t], ysq[t])
        r2_two[t] = r2_from_error(ysq[t] - best_two, var[t], ysq[t])
    return GramHint(r2_one, r2_two)


# ----------------------------------------------------------------------------- the fewest sources

# Where the pages open on the best-subset view (issue 25): a category the model recognises
# whose dependency with at most MAX_EXAMPLE_SOURCES sources fits — R² ≥ SOURCES_FIT_R2 from
# the Grams, then checked on the logits: top-1 accuracy kept (≤ SOURCES_FIT_LOST points lost).
SOURCES_FIT_R2 = 0.95
SOURCES_FIT_LOST = 0.5
MAX_EXAMPLE_SOURCES = 4


@dataclass(frozen=True)
class SourcesRecommendation:
    """Every target's best-subset R² for m = 1 … M (from the all-target best subsets).

    r2 : (T, M) R² of the best dependency with at most m sources (``r2[:, m − 1]``), from the
        Grams; nan where the logit is constant.
    """

    r2: np.ndarray

    def sparsest(self, fit: float = SOURCES_FIT_R2) -> np.ndarray:
        """(T,) the smallest m whose R² ≥ ``fit`` (0 where none up to M does)."""
        ok = np.nan_to_num(self.r2, nan=-np.inf) >= fit
        return np.where(ok.any(axis=1), ok.argmax(axis=1) + 1, 0)

    def candidates(self, fit: float = SOURCES_FIT_R2, max_sources: int = MAX_EXAMPLE_SOURCES,
                   min_sources: int = MIN_EXAMPLE_SOURCES, prefer: np.ndarray | None = None) -> np.ndarray:
        """Targets that ``min_sources`` … ``max_sources`` sources fit (a combination, not a
        duplicate), fewest sources first, then highest R² there; ``prefer`` (bool (T,)) as in
        :meth:`Recommendation.clear_example`."""
        m = self.sparsest(fit)
        ok = (m >= min_sources) & (m <= max_sources)
        if prefer is not None and (ok & prefer).any():
            ok = ok & prefer
        cand = np.flatnonzero(ok)
        r2_there = self.r2[cand, m[cand] - 1]
        return cand[np.lexsort((-r2_there, m[cand]))]


def recommend_sources(residual: np.ndarray, target_sq: np.ndarray, target_mean: np.ndarray) -> SourcesRecommendation:
    """R² of every target's best subsets from their residuals ``E[(g_t − θᵀf)²]`` ((T, M),
    :attr:`engine.core.bestsubset.BestSubsetResult.residual`) and the targets' ``E[g_t²]``, ``E g_t`` (pure)."""
    ysq = np.asarray(target_sq, dtype=np.float64)[:, None]
    var = target_variance(target_sq, target_mean)[:, None]
    return SourcesRecommendation(r2_from_error(residual, var, ysq))


def clear_sparse_example(rec: SourcesRecommendation, keeps_accuracy, prefer: np.ndarray | None = None,
                         tries: int = 24) -> tuple[int, int] | None:
    """(target, m): the first of :meth:`SourcesRecommendation.candidates` whose dependency
    keeps top-1 accuracy (``keeps_accuracy(target, m) -> bool``, measured on the logits by the
    caller), trying at most ``tries``; None when none does."""
    m = rec.sparsest()
    for t in rec.candidates(prefer=prefer)[:tries]:
        if keeps_accuracy(int(t), int(m[t])):
            return int(t), int(m[t])
    return None
