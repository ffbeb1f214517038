"""Where pages open (engine.recommend): R² along a cached path against the logits themselves,
the recommended α, and the clear example on planted dependencies."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import r2_score

from engine.recommend import Recommendation, recommend, recommended_index
from engine.service import GridRule, load_or_compute_path, open_pairing


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
        curve = [r2_score(F[:, t], F @ path.coef_vector(t, i)) for i in range(len(path.alphas))]
        np.testing.assert_allclose(path.r2[:, t], curve, atol=1e-8)
        # recommended = the largest α (first index) whose R² reaches 0.95, if any
        fits = [i for i, r in enumerate(curve) if r >= 0.95]
        if fits:
            assert a == fits[0]
        else:  # none fits: the largest α within 0.01 of the best
            assert a == next(i for i, r in enumerate(curve) if r >= max(curve) - 0.01)
    assert rec.r2[5] >= 0.95 and set(path.coef_at(5, rec.alpha_index[5])[0]) >= {1, 2}
    assert rec.r2[9] < 0.95  # the noise caps it: no α fits
    # the clear example is one of the planted triple c1, c2, c5 (each is the other two's
    # combination), shown with exactly the other two as sources
    example = rec.clear_example()
    assert example in (1, 2, 5)
    assert set(path.coef_at(example, rec.alpha_index[example])[0]) == {1, 2, 5} - {example}


def test_recommended_index_rules():
    assert recommended_index(np.array([0.1, 0.5, 0.96, 0.99])) == 2
    assert recommended_index(np.array([0.1, 0.80, 0.805, 0.79])) == 1  # none fits: near the best
    assert recommended_index(np.array([np.nan, np.nan])) is None


def test_clear_example_prefers_few_sources_then_r2_and_skips_duplicates():
    rec = Recommendation(alpha_index=np.array([0, 1, 2, 3, 4]), r2=np.array([0.99, 0.96, 0.97, 0.5, 0.999]),
                         n_sources=np.array([1, 3, 3, 2, 8]))
    assert rec.clear_example() == 2  # 1 source is a duplicate; 3 sources, higher R² wins; 2 does not fit
    prefer = np.array([False, True, False, False, True])
    assert rec.clear_example(prefer=prefer) == 1
    assert Recommendation(np.array([0]), np.array([0.3]), np.array([4])).clear_example() is None
