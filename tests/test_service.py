"""Cached α paths (engine.service): exact along the grid, stopped where dependencies stop being sparse."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Lasso

from engine.service import GridRule, load_or_compute_path, open_pairing
from engine.synthetic import classifier_like_logits


def _sk(X, y, alpha):
    return Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=200000).fit(X, y).coef_


@pytest.fixture
def pair(cache):
    """Two 'models' of the same samples: B's logits are A's mixed and perturbed."""
    F, labels = classifier_like_logits(1200, 30, rank=12, seed=4)
    rng = np.random.default_rng(4)
    G = (F @ rng.standard_normal((30, 30)) / 6 + 0.3 * rng.standard_normal((1200, 30))).astype(np.float32)
    cache.save_store("a", F, labels, [f"a{i}" for i in range(30)])
    cache.save_store("b", G, labels, [f"b{i}" for i in range(30)])
    return cache, F.astype(np.float64), G.astype(np.float64)


def test_within_path_matches_sklearn_at_every_alpha(pair):
    cache, F, _ = pair
    path = load_or_compute_path(cache, open_pairing(cache, "a"), rule=GridRule(n=8, span=0.05))
    assert np.all(np.diff(path.alphas) < 0)
    for a in range(0, len(path.alphas), 3):
        for t in (0, 11, 29):
            ref = np.insert(_sk(np.delete(F, t, axis=1), F[:, t], path.alphas[a]), t, 0.0)
            np.testing.assert_allclose(path.coef_vector(t, a), ref, atol=1e-6)
            assert set(path.coef_at(t, a)[0]) == set(np.flatnonzero(np.abs(ref) > 1e-9))


def test_between_path_matches_sklearn(pair):
    cache, F, G = pair
    path = load_or_compute_path(cache, open_pairing(cache, "b", "a"), rule=GridRule(n=6, span=0.05))
    assert not path.within and path.n_sources == 30 and path.n_targets == 30
    a = len(path.alphas) - 1
    for t in (0, 29):
        np.testing.assert_allclose(path.coef_vector(t, a), _sk(F, G[:, t], path.alphas[a]), atol=1e-6)


def test_path_stops_after_the_first_alpha_where_dependencies_stop_being_sparse(pair):
    cache, F, _ = pair
    pairing = open_pairing(cache, "a")
    full = load_or_compute_path(cache, pairing, rule=GridRule(n=12, span=1e-3, max_median_sources=10**6))
    medians = np.median(full.support_sizes, axis=1)
    assert medians[-1] > 8  # the full grid goes well past the cap below
    cut = load_or_compute_path(cache, pairing, rule=GridRule(n=12, span=1e-3, max_median_sources=8))
    first_over = int(np.argmax(medians > 8))
    assert len(cut.alphas) == first_over + 1
    np.testing.assert_array_equal(cut.alphas, full.alphas[: first_over + 1])
    assert np.median(cut.support_sizes[-1]) > 8 >= np.median(cut.support_sizes[-2])
    again = load_or_compute_path(cache, pairing, rule=GridRule(n=12, span=1e-3, max_median_sources=8))
    np.testing.assert_array_equal(again.alphas, cut.alphas)  # read back from the cache
    np.testing.assert_array_equal(again.values, cut.values)


def test_explicit_grid_is_solved_in_full(pair):
    cache, F, _ = pair
    grid = np.array([0.01, 0.5, 0.1])
    path = load_or_compute_path(cache, open_pairing(cache, "a"), alphas=grid)
    np.testing.assert_array_equal(path.alphas, [0.5, 0.1, 0.01])
    ref = np.insert(_sk(np.delete(F, 3, axis=1), F[:, 3], 0.01), 3, 0.0)
    np.testing.assert_allclose(path.coef_vector(3, 2), ref, atol=1e-6)


def test_targets_by_index_exact_name_or_unique_first_word():
    """The CLI and the regulariser's pairs share one resolver (engine.service.find_category)."""
    from types import SimpleNamespace

    from engine.errors import NotFoundError
    from engine.service import resolve_targets

    names = ["é LATIN SMALL LETTER E WITH ACUTE", "e LATIN SMALL LETTER E", "crane bird", "crane machine"]
    store = SimpleNamespace(name="s", k=len(names), class_names=names)
    assert resolve_targets(store, ["é", "1", "crane bird", "e"]) == [0, 1, 2, 1]
    with pytest.raises(NotFoundError, match="'crane' matches 2 class names"):
        resolve_targets(store, ["crane"])
    with pytest.raises(NotFoundError, match="no category named 'E'"):
        resolve_targets(store, ["E"])
    with pytest.raises(NotFoundError, match="out of range"):
        resolve_targets(store, ["4"])
