"""The emergence figures against independent references: exhaustive search of every support
and scikit-learn's OMP on the Gram, least squares on the raw logits, Table 1's replaced-logit
accuracy, eigenvalues by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.linear_model import orthogonal_mp_gram

from engine.core.analysis import dependency_metrics, r_squared
from engine.core.emergence import (
    FIT_MAX_DROP,
    FIT_R2,
    best_sources,
    checkpoint_figures,
    effective_rank,
    gram_of,
    sparse_fit_figures,
    spectrum_figures,
)


def _logits(n: int = 600, k: int = 12, rank: int = 6, seed: int = 0, noise: float = 0.05):
    """Classifier-like logits: a rank-``rank`` head plus a bias and a little noise, labels
    mostly the argmax (so top-1 is high and a replaced logit can cost accuracy)."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n, rank))
    head = rng.normal(size=(rank, k))
    logits = feats @ head + rng.normal(size=k) + noise * rng.normal(size=(n, k))
    labels = logits.argmax(1)
    flip = rng.random(n) < 0.1
    labels[flip] = rng.integers(0, k, flip.sum())
    return logits.astype(np.float32), labels


def _best_support(gram: np.ndarray, t: int, m: int) -> np.ndarray:
    """The support of m other categories with the least residual ``C_tt − b_Sᵀ C_SS⁻¹ b_S``,
    by exhaustive search (every support, batched solves)."""
    others = np.delete(np.arange(len(gram)), t)
    sup = np.array(list(itertools.combinations(others, m)))
    b = gram[sup, t]
    theta = np.linalg.solve(gram[sup[:, :, None], sup[:, None, :]], b[..., None])[..., 0]
    return sup[np.argmin(gram[t, t] - (b * theta).sum(1))]


def test_best_sources_are_never_below_sklearns_omp():
    """On the unit-diagonal Gram, target excluded, at every m (OMP's residual computed on the
    raw logits by least squares on its support)."""
    logits, _ = _logits(k=15, rank=8, noise=0.3)
    x = logits.astype(np.float64)
    gram = gram_of(logits)
    res = best_sources(gram, 6)
    d = np.sqrt(np.diag(gram))
    scaled = gram / np.outer(d, d)
    for t in range(gram.shape[0]):
        others = np.delete(np.arange(15), t)
        for m in (1, 4, 6):
            ref = orthogonal_mp_gram(scaled[np.ix_(others, others)], scaled[others, t], n_nonzero_coefs=m)
            support = others[np.flatnonzero(ref)]
            theta, *_ = np.linalg.lstsq(x[:, support], x[:, t], rcond=None)
            omp = np.mean((x[:, t] - x[:, support] @ theta) ** 2)
            assert res.residual[t, m - 1] <= omp * (1 + 1e-6)


def _independent_figures(logits, labels, support_of=None, sizes=(4, 6)):
    """The figures recomputed from scratch for the supports ``support_of(gram, t, m)`` (default:
    exhaustive search's): numpy's lstsq fits them on the raw logits, Table 1's
    dependency_metrics gives the accuracy with the logit replaced."""
    support_of = support_of or _best_support
    x = logits.astype(np.float64)
    n, k = x.shape
    gram = x.T @ x / n
    r2 = np.full((k, max(sizes)), np.nan)
    fits = np.zeros((k, max(sizes)), dtype=bool)
    for t in range(k):
        for m in range(1, min(max(sizes), k - 1) + 1):
            support = support_of(gram, t, m)
            theta, *_ = np.linalg.lstsq(x[:, support], x[:, t], rcond=None)
            r2[t, m - 1] = r_squared(x[:, t], x[:, support] @ theta)
            coef = np.zeros(k)
            coef[support] = theta
            met = dependency_metrics(x, x, labels, t, coef)
            fits[t, m - 1] = r2[t, m - 1] >= FIT_R2 and met.ori_acc - met.acc <= FIT_MAX_DROP
    out = {}
    for m in sizes:
        s = min(m, k - 1)
        out[f"fit_{m}"] = fits[:, :s].any(1).mean()
        out[f"median_r2_{m}"] = np.nanmedian(r2[:, s - 1])
    return out


def _omp_support(gram, t, m):
    d = np.sqrt(np.diag(gram))
    scaled = gram / np.outer(d, d)
    others = np.delete(np.arange(len(gram)), t)
    ref = orthogonal_mp_gram(scaled[np.ix_(others, others)], scaled[others, t], n_nonzero_coefs=m)
    return others[np.flatnonzero(ref)]


@pytest.mark.parametrize("k, rank, noise", [(12, 6, 0.02), (16, 10, 0.2), (5, 3, 0.01)])
def test_sparse_fit_figures_equal_an_independent_recomputation(k, rank, noise):
    """On the search's supports, the figures are least squares on the raw logits and Table 1's
    accuracy; their median R² lies between OMP's and the exhaustive optimum's (the search is
    measured against exhaustive search in tests/test_bestsubset.py)."""
    logits, labels = _logits(k=k, rank=rank, noise=noise, seed=k)
    got = sparse_fit_figures(gram_of(logits), logits, labels)
    res = best_sources(gram_of(logits), 6)
    ref = _independent_figures(logits, labels, lambda gram, t, m: res.column(t, m)[0])
    assert set(got) == set(ref)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-6), key
    assert 0 <= got["fit_4"] <= got["fit_6"] <= 1
    best = _independent_figures(logits, labels, _best_support)
    omp = _independent_figures(logits, labels, _omp_support)
    for m in (4, 6):
        assert omp[f"median_r2_{m}"] - 1e-9 <= got[f"median_r2_{m}"] <= best[f"median_r2_{m}"] + 1e-9


def test_planted_dependencies_fit_and_noise_does_not():
    rng = np.random.default_rng(3)
    n = 2000
    base = rng.normal(size=(n, 8)) * 3
    planted = base[:, :3] @ np.array([[0.5], [0.3], [-0.4]])  # category 8 = a mix of 0, 1, 2
    logits = np.hstack([base, planted + 0.01 * rng.normal(size=(n, 1))]).astype(np.float32)
    labels = logits.argmax(1)
    assert set(best_sources(gram_of(logits), 3).column(8, 3)[0]) == {0, 1, 2}
    fig = sparse_fit_figures(gram_of(logits), logits, labels)
    # the planted category and its three sources (each one a mix of the other three) fit;
    # the five independent categories do not
    assert fig["fit_4"] == pytest.approx(4 / 9)
    assert fig["median_r2_4"] < 0.1


def test_effective_rank_and_the_span_of_a_low_rank_head():
    assert effective_rank(np.ones(7)) == pytest.approx(7)
    assert effective_rank(np.array([5.0, 0, 0])) == pytest.approx(1)
    assert effective_rank(np.array([1.0, 1.0, 2.0])) == pytest.approx(np.exp(-(2 * 0.25 * np.log(0.25) + 0.5 * np.log(0.5))))
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(500, 5)) @ rng.normal(size=(5, 20))).astype(np.float32)  # rank 5, no bias
    fig = spectrum_figures(gram_of(logits))
    assert fig["spectrum_rank"] == 5
    assert fig["exactly_redundant"] == 1.0  # 20 categories in 5 dimensions: all exact combinations
    full = spectrum_figures(gram_of(rng.normal(size=(500, 20)).astype(np.float32)))
    assert full["spectrum_rank"] == 20 and full["exactly_redundant"] == 0.0
    assert 0 < full["redundancy_median"] <= 1 and 15 < full["effective_rank"] <= 20


def test_checkpoint_figures_top1_and_fields():
    logits, labels = _logits()
    fig = checkpoint_figures(logits, labels)
    assert fig["top1"] == pytest.approx(np.mean(logits.argmax(1) == labels))
    assert set(fig) >= {"top1", "effective_rank", "spectrum_rank", "fit_4", "fit_6", "median_r2_4", "median_r2_6",
                        "redundancy_median", "exactly_redundant"}
    np.testing.assert_allclose(gram_of(logits, rows=7), logits.astype(np.float64).T @ logits / len(logits))


def test_the_sentence_states_the_curves_numbers():
    from engine.core.emergence import describe_emergence

    rows = [{"categories": k, "epoch": e, "top1": t, "fit_4": f4, "fit_6": f6, "median_r2_4": r}
            for k, e, t, f4, f6, r in [(20, 0.5, 0.1, 0.2, 0.3, 0.8), (20, 2.0, 0.9, 0.4, 0.5, 0.9),
                                       (100, 0.5, 0.05, 0.1, 0.2, 0.7), (100, 2.0, 0.8, 0.6, 0.9, 0.95)]]
    text = describe_emergence(rows)
    assert "With 100 categories, from epoch 0.5 to 2 top-1 goes 5 % → 80 %" in text
    assert "≤ 6 sources 20 % → 90 %" in text
    assert "from 20 to 100 categories the share fitting with ≤ 6 sources goes 50 % → 90 %" in text
    assert "2 of the 4 checkpoints are below 50 % top-1" in text
    assert describe_emergence([]) == "No checkpoint measured yet."
