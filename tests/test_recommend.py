"""Where pages open (engine.stages.recommend): R² along a cached path against the logits themselves,
the recommended α, and the clear example on planted dependencies."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import r2_score

from engine.stages.alpha_paths import GridRule, load_or_compute_path
from engine.stages.pairing import Pairing, open_pairing
from engine.stages.recommend import (
    FIT_R2,
    GramHint,
    Recommendation,
    gram_hint,
    recommend,
    recommended_index,
)


@pytest.fixture
def planted(cache):
    """Logits where category 5 is 0.6·c1 + 0.4·c2 (+ a little noise) and category 9 is a
    noisy 0.5·c3 + 0.3·c4 + 0.2·c6; the rest are independent."""
    rng = np.random.default_rng(0)
    n, k = 3000, 12
    F = rng.standard_normal((n, k)) + 2.0
    F[:, 5] = 0.6 * F[:, 1] + 0.4 * F[:, 2] + 0.05 * rng.standard_normal(n)
    F[:, 9] = 0.5 * F[:, 3] + 0.3 * F[:, 4] + 0.2 * F[:, 6] + 0.5 * rng.standard_normal(n)
    labels = rng.integers(0, k, n)
    cache.save_store("p", F.astype(np.float32), labels, [f"c{i}" for i in range(k)])
    return cache, F.astype(np.float32).astype(np.float64)


def test_path_r2_matches_r2_score_on_the_logits(planted):
    cache, F = planted
    pairing = open_pairing(cache, "p")
    path = load_or_compute_path(cache, pairing, rule=GridRule(n=10, span=1e-3))
    rec = recommend(path)
    for t in (5, 9, 0):
        a = rec.alpha_index[t]
        # the path's R² (from the Grams) against r2_score on the logits, at every α
        curve = [r2_score(F[:, t], F @ path.coef_vector(t, i)) for i in path.alpha_indices(t)]
        np.testing.assert_allclose(path.r2_of(t), curve, atol=1e-8)
        # recommended = the largest α (first index) whose R² reaches FIT_R2, if any
        fits = [i for i, r in enumerate(curve) if r >= FIT_R2]
        if fits:
            assert a == fits[0]
        else:  # none fits: the largest α within 0.01 of the best
            assert a == next(i for i, r in enumerate(curve) if r >= max(curve) - 0.01)
    assert rec.r2[5] >= FIT_R2 and set(path.coef_at(5, rec.alpha_index[5])[0]) >= {1, 2}
    assert rec.r2[9] < FIT_R2  # the noise caps it: no α fits
    # the clear example is one of the planted triple c1, c2, c5 (each is the other two's
    # combination), shown with exactly the other two as sources
    example = rec.clear_example()
    assert example in (1, 2, 5)
    assert set(path.coef_at(example, rec.alpha_index[example])[0]) == {1, 2, 5} - {example}


def test_recommended_index_rules():
    assert recommended_index(np.array([0.1, 0.5, 0.96, 0.995])) == 3  # FIT_R2 = 0.99
    assert recommended_index(np.array([0.1, 0.5, 0.96, 0.995]), fit=0.95) == 2
    assert recommended_index(np.array([0.1, 0.80, 0.805, 0.79])) == 1  # none fits: near the best
    assert recommended_index(np.array([np.nan, np.nan])) is None


def test_clear_example_prefers_few_sources_then_r2_and_skips_duplicates():
    rec = Recommendation(alpha_index=np.array([0, 1, 2, 3, 4]), r2=np.array([0.99, 0.96, 0.97, 0.5, 0.999]),
                         n_sources=np.array([1, 3, 3, 2, 8]))
    assert rec.clear_example(fit=0.95) == 2  # 1 source is a duplicate; 3 sources, higher R² wins; 2 does not fit
    assert rec.clear_example() == 4  # at FIT_R2 = 0.99 only the 8-source one fits (1 source: a duplicate)
    prefer = np.array([False, True, False, False, True])
    assert rec.clear_example(fit=0.95, prefer=prefer) == 1
    assert Recommendation(np.array([0]), np.array([0.3]), np.array([4])).clear_example() is None


def _least_squares_r2(F: np.ndarray, t: int, sources: list[int]) -> float:
    """R² of target t fitted by least squares (no intercept) on ``sources``, on the logits."""
    X = F[:, sources]
    coef = np.linalg.lstsq(X, F[:, t], rcond=None)[0]
    return r2_score(F[:, t], X @ coef)


@pytest.mark.parametrize("chunk", [128, 5])
def test_gram_hint_is_the_best_single_source_and_the_best_pair_with_it(planted, chunk):
    """Against least squares on the logits: the best single source of every target, then
    the best second source with it (searched over all), as R² — and the planted two-source
    combination (category 5) is the clear example."""
    from engine.stages.gramsets import load_gramset

    cache, F = planted
    gs = load_gramset(cache, open_pairing(cache, "p"))
    hint = gram_hint(gs, chunk=chunk)
    k = F.shape[1]
    for t in range(k):
        others = [j for j in range(k) if j != t]
        ones = {j: _least_squares_r2(F, t, [j]) for j in others}
        j1 = max(ones, key=ones.get)
        assert hint.r2_one[t] == pytest.approx(ones[j1], abs=1e-9)
        best_pair = max(_least_squares_r2(F, t, [j1, j]) for j in others if j != j1)
        assert hint.r2_two[t] == pytest.approx(best_pair, abs=1e-9)
    assert hint.clear_example() == 5
    assert hint.r2_two[5] > 0.99 > 0.95 > hint.r2_one[5]


def test_gram_hint_between_models_and_its_rules(planted):
    """Between two stores the right-hand sides are the cross-Gram's rows and a target may use
    every source; a duplicate (one source fits) is never the example."""
    from engine.stages.gramsets import load_gram_hint

    cache, F = planted
    G = np.hstack([F[:, [7]] * 2.0, 0.7 * F[:, [1]] + 0.3 * F[:, [8]], F[:, [0]]]).astype(np.float32)
    rng = np.random.default_rng(1)
    G[:, 2] += 0.2 * rng.standard_normal(len(G)).astype(np.float32)
    labels = np.asarray(cache.load_store("p").labels) % 3
    cache.save_store("q", G, labels, ["dup", "pair", "noisy"], sample_fingerprint=cache.load_store("p").sample_fingerprint)
    p, q = cache.load_store("p"), cache.load_store("q")
    from engine.stages.gramsets import load_gramset

    load_gramset(cache, Pairing.of(q, p))  # computes and caches the cross-Gram set and its hint
    hint = load_gram_hint(cache, p, q, compute=False)
    assert hint is not None and len(hint.r2_one) == 3
    Gd = G.astype(np.float64)
    for t in range(3):
        both = np.hstack([F, Gd[:, [t]]])
        ones = {j: _least_squares_r2(both, F.shape[1], [j]) for j in range(F.shape[1])}
        assert hint.r2_one[t] == pytest.approx(max(ones.values()), abs=1e-9)
    assert hint.r2_one[0] > 0.999  # "dup" is 2·c7: one source
    assert hint.clear_example() == 1
    assert GramHint(np.array([0.99, np.nan]), np.array([0.999, np.nan])).clear_example() is None
    assert GramHint(np.array([0.2, 0.3]), np.array([0.5, 0.4])).clear_example(prefer=np.array([False, True])) == 1


def test_pages_open_on_categories_the_model_recognises():
    """A category confused with a near-duplicate (half its samples predicted as the other) is
    not recognised; without labels nothing is. default_target prefers recognised glance names."""
    from engine.apps.controls import default_target
    from engine.apps.views import recognised_categories

    labels = np.repeat(np.arange(4), 10)
    pred = labels.copy()
    pred[:5] = 1  # category 0: 5 of 10 right
    pred[30] = 2  # category 3: 9 of 10 right (the 90 % bar)
    np.testing.assert_array_equal(recognised_categories(labels, pred, 5), [False, True, True, True, False])
    assert not recognised_categories(None, pred, 4).any()
    names = ["a LATIN SMALL LETTER A", "b LATIN SMALL LETTER B", "c LATIN SMALL LETTER C", "x"]
    rec = Recommendation(np.zeros(4, dtype=np.int64), np.array([0.999, 0.995, 0.992, 0.999]), np.array([2, 3, 3, 2]))
    assert default_target(names, rec) == 0  # fewest sources among the glance names
    assert default_target(names, rec, recognised=np.array([False, True, True, True])) == 1


def test_sources_recommendation_picks_the_fewest_sources_that_fit():
    """Hand-made R² per target and m: the smallest m reaching 0.95, 2 … 4 sources only (one
    source is a duplicate), fewest first then the highest R²; ``prefer`` restricts; a target
    whose dependency loses accuracy is skipped."""
    from engine.stages.recommend import SourcesRecommendation, clear_sparse_example

    r2 = np.array([
        [0.99, 0.99, 0.99, 0.99, 0.99],  # a duplicate: one source fits
        [0.50, 0.90, 0.96, 0.97, 0.98],  # 3
        [0.60, 0.955, 0.96, 0.97, 0.98],  # 2
        [0.60, 0.97, 0.98, 0.99, 0.99],  # 2, higher R²
        [0.30, 0.50, 0.70, 0.80, 0.96],  # 5: too many
        [np.nan] * 5,  # constant
    ])
    rec = SourcesRecommendation(r2)
    assert list(rec.sparsest()) == [1, 3, 2, 2, 5, 0]
    assert list(rec.candidates()) == [3, 2, 1]
    assert list(rec.candidates(prefer=np.array([False, True, True, False, False, False]))) == [2, 1]
    assert clear_sparse_example(rec, lambda t, m: True) == (3, 2)
    assert clear_sparse_example(rec, lambda t, m: t != 3) == (2, 2)
    assert clear_sparse_example(rec, lambda t, m: False) is None


def test_recommend_sources_r2_matches_least_squares():
    """R² from the best subsets' residuals equals scikit-learn's r2_score of least squares on
    their sources, recomputed from the samples."""
    from sklearn.metrics import r2_score

    from engine.core.bestsubset import best_subsets
    from engine.stages.recommend import recommend_sources

    rng = np.random.default_rng(0)
    F = rng.standard_normal((400, 12)) + 0.3
    F[:, 0] = 0.7 * F[:, 3] - 0.4 * F[:, 5] + 0.05 * rng.standard_normal(400)
    G = F.T @ F / len(F)
    rhs = G[:, [0]]
    res = best_subsets(G, rhs, np.array([G[0, 0]]), 3, forbid=np.array([0]))
    rec = recommend_sources(res.residual, np.array([G[0, 0]]), np.array([F[:, 0].mean()]))
    for m in range(1, 4):
        src, _ = res.column(0, m)
        theta = np.linalg.lstsq(F[:, src], F[:, 0], rcond=None)[0]
        assert rec.r2[0, m - 1] == pytest.approx(r2_score(F[:, 0], F[:, src] @ theta), abs=1e-9)
    assert rec.sparsest()[0] == 2
