"""The best-subset solver against independent references: exhaustive search over every support
of size ≤ 3 (small K), scikit-learn's ``orthogonal_mp_gram``, least squares on the samples, and
planted sparse dependencies."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.linear_model import orthogonal_mp_gram

from engine.core.bestsubset import (
    BestSubsetResult,
    SubsetConfig,
    best_subsets,
    check_max_sources,
    least_squares_on,
)
from engine.core.synthetic import classifier_like_logits
from engine.errors import InvalidInputError


def _logits(seed: int, k: int = 12, n: int = 3000, rank: int = 6) -> np.ndarray:
    return classifier_like_logits(n, k, rank=rank, seed=seed)[0].astype(np.float64)


def _residual(G, b, ysq, S) -> float:
    S = list(S)
    return float(ysq - b[S] @ np.linalg.solve(G[np.ix_(S, S)], b[S])) if S else float(ysq)


def _exhaustive(G, b, ysq, allowed, m) -> float:
    return min(_residual(G, b, ysq, S) for S in itertools.combinations(allowed, m))


def _problems(seed: int):
    """(within, G, rhs, ysq, forbid, variance): one model, then a second model's targets."""
    F, H = _logits(seed), _logits(seed + 100)
    G = F.T @ F / len(F)
    yield True, G, G, np.diag(G).copy(), np.arange(len(G)), F.var(0)
    yield False, G, F.T @ H / len(F), np.mean(H**2, 0), None, H.var(0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_exhaustive_search_of_every_support_up_to_three(seed):
    """m = 1 is exact; every support is a local optimum for single swaps (checked against
    every swap); the exhaustive optimum is found for most (target, m) and lost by little."""
    for within, G, rhs, ysq, forbid, var in _problems(seed):
        P, T = rhs.shape
        res = best_subsets(G, rhs, ysq, 3, forbid=forbid)
        hits, gaps = 0, []
        for t in range(T):
            allowed = [j for j in range(P) if not (within and j == t)]
            for m in (1, 2, 3):
                ours = res.residual[t, m - 1]
                S, _ = res.column(t, m)
                assert len(S) == m and (not within or t not in S)
                assert ours == pytest.approx(_residual(G, rhs[:, t], ysq[t], S), rel=1e-9, abs=1e-12)
                best = _exhaustive(G, rhs[:, t], ysq[t], allowed, m)
                assert ours >= best - 1e-9 * ysq[t]
                if m == 1:
                    assert ours == pytest.approx(best, rel=1e-12)
                for j, i in itertools.product(range(m), [a for a in allowed if a not in S]):
                    swapped = list(S)
                    swapped[j] = i
                    assert _residual(G, rhs[:, t], ysq[t], swapped) >= ours - 1e-9 * ysq[t]
                hits += ours <= best + 1e-9 * ysq[t]
                gaps.append((ours - best) / var[t])
        assert hits >= 0.8 * 3 * T, (within, hits)
        assert max(gaps) < 0.1, (within, max(gaps))


@pytest.mark.parametrize("seed", [0, 3])
def test_never_below_scikit_learns_omp(seed):
    """R² at every m at least OMP's (``orthogonal_mp_gram``, the target's row and column
    removed within a model), on a wider problem."""
    F = classifier_like_logits(4000, 60, rank=16, seed=seed)[0].astype(np.float64)
    H = classifier_like_logits(4000, 60, rank=16, seed=seed + 7)[0].astype(np.float64)
    G = F.T @ F / len(F)
    for rhs, ysq, forbid in ((G, np.diag(G).copy(), np.arange(60)), (F.T @ H / len(F), np.mean(H**2, 0), None)):
        res = best_subsets(G, rhs, ysq, 8, forbid=forbid)
        for t in range(0, 60, 3):
            keep = np.arange(60) != t if forbid is not None else np.ones(60, dtype=bool)
            for m in (1, 3, 5, 8):
                coef = np.zeros(60)
                coef[keep] = orthogonal_mp_gram(G[np.ix_(keep, keep)], rhs[keep, t], n_nonzero_coefs=m)
                omp = ysq[t] - 2 * coef @ rhs[:, t] + coef @ G @ coef
                assert res.residual[t, m - 1] <= omp + 1e-10 * ysq[t]


def test_residual_is_the_samples_least_squares_and_non_increasing():
    """The residual and coefficients are least squares on the samples (np.linalg.lstsq on
    the chosen columns); more sources never fit worse."""
    F = _logits(4, k=30, rank=10)
    G = F.T @ F / len(F)
    res = best_subsets(G, G, np.diag(G).copy(), 6, forbid=np.arange(30))
    assert np.all(np.diff(res.residual, axis=1) <= 1e-12 * res.residual[:, :1])
    for t in (0, 7, 29):
        for m in (2, 6):
            S, coef = res.column(t, m)
            ref, *_ = np.linalg.lstsq(F[:, S], F[:, t], rcond=None)
            np.testing.assert_allclose(coef, ref, rtol=1e-7, atol=1e-9)
            assert res.residual[t, m - 1] == pytest.approx(np.mean((F[:, t] - F[:, S] @ ref) ** 2), rel=1e-7)


def test_a_planted_sparse_dependency_is_recovered():
    rng = np.random.default_rng(0)
    F = rng.standard_normal((5000, 40)) + 0.5 * rng.standard_normal((5000, 1))  # a shared offset
    y = 0.7 * F[:, 3] - 0.4 * F[:, 9] + 0.25 * F[:, 17] + 0.05 * rng.standard_normal(5000)
    G = F.T @ F / len(F)
    res = best_subsets(G, (F.T @ y / len(F))[:, None], np.array([np.mean(y**2)]), 5)
    S, coef = res.column(0, 3)
    assert list(S) == [3, 9, 17]
    np.testing.assert_allclose(coef, [0.7, -0.4, 0.25], atol=0.01)
    assert res.residual[0, 2] == pytest.approx(0.05**2, rel=0.1)
    assert res.residual[0, 4] <= res.residual[0, 2]  # more allowed: never worse
    # within one model: the planted column is a category, itself excluded
    F2 = np.column_stack([F, y])
    G2 = F2.T @ F2 / len(F2)
    res2 = best_subsets(G2, G2[:, [40]], G2[[40], [40]], 3, forbid=np.array([40]))
    assert list(res2.column(0, 3)[0]) == [3, 9, 17]


def test_a_subset_of_targets_gets_what_the_full_solve_gives():
    F = _logits(5, k=40, rank=12)
    G = F.T @ F / len(F)
    full = best_subsets(G, G, np.diag(G).copy(), 4, forbid=np.arange(40))
    some = np.array([3, 17, 39])
    part = best_subsets(G, G[:, some], np.diag(G)[some], 4, forbid=some)
    np.testing.assert_allclose(part.residual, full.residual[some], rtol=1e-10)
    for i, t in enumerate(some):
        assert list(part.column(i, 4)[0]) == list(full.column(t, 4)[0])


def test_dependent_sources_never_share_a_support():
    """A duplicated category (and a dead one) make the Gram singular: no support holds both
    copies, nothing is NaN, and the fit is the same as without the copy."""
    F = _logits(6, k=16, rank=8)
    F = np.column_stack([F, F[:, 2], np.zeros(len(F))])  # 16: a copy of 2; 17: all zero
    G = F.T @ F / len(F)
    res = best_subsets(G, G, np.diag(G).copy(), 6, forbid=np.arange(18))
    assert np.isfinite(res.residual).all() and np.isfinite(res.coef.values).all()
    for t in range(18):
        for m in range(1, 7):
            S, _ = res.column(t, m)
            assert not {2, 16} <= set(S.tolist()) and 17 not in S
    # the dead target: nothing explains it, its residual is its (zero) power
    assert res.residual[17].tolist() == [0.0] * 6 and res.coef.select([17 * 6]).nnz == 0
    # a target that *is* a copy: one source, exact
    assert res.column(16, 1)[0].tolist() == [2] and res.residual[16, 0] == pytest.approx(0, abs=1e-9)


def test_threads_chunks_and_swap_blocks_leave_the_result_alone(monkeypatch):
    """Targets in chunks solved in threads, and swaps evaluated a few rows at a time (with a
    duplicated and a dead category: the pivot rule's rows), give the one-batch result."""
    import engine.core.bestsubset_kernels as kernels

    F = _logits(6, k=16, rank=8)
    F = np.column_stack([F, F[:, 2], np.zeros(len(F))])
    G = F.T @ F / len(F)
    one = best_subsets(G, G, np.diag(G).copy(), 6, forbid=np.arange(18), config=SubsetConfig(threads=1))
    monkeypatch.setattr(kernels, "SWAP_BLOCK", 40)  # ~1 row per block
    many = best_subsets(G, G, np.diag(G).copy(), 6, forbid=np.arange(18), config=SubsetConfig(threads=2, chunk=5))
    for t in range(18):
        for m in range(1, 7):  # (16 is a copy of 2: rounding may pick either)
            a, b = (sorted(np.where(r.column(t, m)[0] == 16, 2, r.column(t, m)[0]).tolist()) for r in (many, one))
            assert a == b, (t, m)
    np.testing.assert_allclose(many.residual, one.residual, rtol=1e-10, atol=1e-14)


def test_more_sources_than_there_are_stops_at_what_there_is():
    F = _logits(7, k=4, rank=3)
    G = F.T @ F / len(F)
    res = best_subsets(G, G, np.diag(G).copy(), 8, forbid=np.arange(4))
    assert res.coef.support_sizes.reshape(4, 8).max() <= 3
    assert np.all(res.residual[:, 7] == res.residual[:, 2])


def test_storage_round_trip_and_views():
    F = _logits(8, k=10, rank=5)
    G = F.T @ F / len(F)
    res = best_subsets(G, G, np.diag(G).copy(), 4, forbid=np.arange(10))
    back = BestSubsetResult.from_arrays(res.to_arrays(), 10)
    np.testing.assert_array_equal(back.residual, res.residual)
    assert back.at(2).select([5]).sources.tolist() == res.column(5, 2)[0].tolist()
    assert back.up_to(2).residual.shape == (10, 2)
    assert back.select([3, 1]).column(0, 3)[0].tolist() == res.column(3, 3)[0].tolist()


def test_least_squares_on_a_support_drops_dependent_sources():
    F = _logits(9, k=12, rank=6)
    F = np.column_stack([F, 2.0 * F[:, 4]])  # 12 = 2 × category 4
    G = F.T @ F / len(F)
    kept, coef, resid = least_squares_on(G, G[:, 0], G[0, 0], [4, 12, 7, 9])
    assert kept.tolist() == [4, 7, 9]
    ref, *_ = np.linalg.lstsq(F[:, [4, 7, 9]], F[:, 0], rcond=None)
    np.testing.assert_allclose(coef, ref, rtol=1e-7)
    assert resid == pytest.approx(np.mean((F[:, 0] - F[:, [4, 7, 9]] @ ref) ** 2), rel=1e-7)
    assert least_squares_on(G, G[:, 0], G[0, 0], [])[2] == G[0, 0]


@pytest.mark.parametrize("bad", [0, -1, 33, 10000, "2.5", "four", "", True, 2.0, "٣"])
def test_max_sources_is_a_whole_number_in_range(bad):
    with pytest.raises(InvalidInputError, match="--sources must be a whole number"):
        check_max_sources(bad)


def test_max_sources_accepts_integers_and_digit_strings():
    assert check_max_sources(4) == 4 and check_max_sources(" 6 ") == 6 and check_max_sources(np.int64(8)) == 8
    with pytest.raises(InvalidInputError, match="from 1 to 5"):
        check_max_sources(6, n_sources=5)


def test_config_is_validated_and_keyed():
    with pytest.raises(InvalidInputError, match="starts"):
        SubsetConfig(starts=0)
    with pytest.raises(InvalidInputError, match="pivot"):
        SubsetConfig(pivot=2.0)
    assert "device" not in SubsetConfig().key() and SubsetConfig(starts=2).key() != SubsetConfig().key()
