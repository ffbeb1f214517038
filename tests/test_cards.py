"""The target card (engine.apps.cards): what Explore shows of one dependency, from one call,
checked against independent references — an exhaustive search over every pair of sources
(least squares by numpy), scikit-learn's Lasso and r2_score, the covariance from the logits."""

from __future__ import annotations

import itertools
import unicodedata

import numpy as np
import pytest
from sklearn.linear_model import Lasso
from sklearn.metrics import r2_score

from engine.apps.cards import BEST, LASSO, target_card
from engine.errors import InvalidInputError
from engine.storage.store import Cache
from tests.dashboard_cache import MODEL_A, build_cache


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = build_cache(tmp_path_factory.mktemp("cards"), k=24, n=1500, jobs=False)
    store = Cache(root).load_store(MODEL_A)
    target = store.class_names.index(f"é {unicodedata.name('é')}")  # the planted é ≈ 0.6·e + 0.6·è
    return root, np.asarray(store.logits, dtype=np.float64), np.asarray(store.labels), target


def test_best_subset_card_is_the_exhaustive_best_pair(small):
    root, F, labels, t = small
    card = target_card(root, MODEL_A, None, t, BEST, m=2)
    others = [j for j in range(F.shape[1]) if j != t]

    def rss(pair):
        X = F[:, list(pair)]
        coef = np.linalg.lstsq(X, F[:, t], rcond=None)[0]
        return float(((F[:, t] - X @ coef) ** 2).sum()), coef

    best = min(itertools.combinations(others, 2), key=lambda p: rss(p)[0])
    assert set(card.sources.tolist()) == set(best)
    ref = dict(zip(best, rss(best)[1]))
    for j, c in zip(card.sources, card.coefs):
        assert c == pytest.approx(ref[int(j)], rel=1e-4)
    replaced = F[:, card.sources] @ card.coefs
    assert card.metrics.r2 == pytest.approx(r2_score(F[:, t], replaced), abs=1e-5)
    assert card.metrics.acc == pytest.approx(100 * np.mean(np.where(
        np.arange(F.shape[1]) == t, replaced[:, None], F).argmax(1) == labels), abs=1e-9)
    # the table: strongest first, with the target's covariance E[f_j g_t] with each source
    assert list(card.frame["index"]) == [int(j) for j in card.sources[np.argsort(-np.abs(card.coefs))]]
    cov = F.T @ F[:, t] / F.shape[0]
    assert card.frame["covariance"].to_numpy() == pytest.approx(cov[card.frame["index"]], rel=1e-4)
    assert card.formula.startswith("é ≈ ") and card.method == BEST and card.m == 2 and card.slug == "m2"


def test_covlasso_card_matches_scikit_learn(small):
    root, F, labels, t = small
    card = target_card(root, MODEL_A, None, t, LASSO, alpha_index=3)
    X = np.delete(F, t, 1)
    ref = Lasso(alpha=card.alpha, fit_intercept=False, tol=1e-12, max_iter=200_000).fit(X, F[:, t])
    full = np.insert(ref.coef_, t, 0.0)
    assert set(card.sources.tolist()) == set(np.flatnonzero(np.abs(full) > 1e-9).tolist())
    for j, c in zip(card.sources, card.coefs):
        assert c == pytest.approx(full[j], abs=1e-5)
    assert card.metrics.r2 == pytest.approx(r2_score(F[:, t], X @ ref.coef_), abs=1e-5)
    assert card.label == f"CovLasso, α = {card.alpha:.3g}" and card.m is None
    assert len(card.frame) == len(card.sources)


def test_card_refuses_what_it_cannot_show(small):
    root, _, _, t = small
    with pytest.raises(InvalidInputError, match="method"):
        target_card(root, MODEL_A, None, t, "ridge")
    with pytest.raises(InvalidInputError, match="needs m"):
        target_card(root, MODEL_A, None, t, BEST)
    with pytest.raises(InvalidInputError, match="alpha_index"):
        target_card(root, MODEL_A, None, t, LASSO)
