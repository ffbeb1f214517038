"""Table 1 metrics, Conjecture 1 check, redundancy and graphs against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

from engine.core.analysis import (
    Top2,
    dependency_graph,
    dependency_metrics,
    r_squared,
    redundancy,
    screening_check,
)
from engine.core.covlasso import solve_covlasso
from tests.conftest import gram_of


def test_table1_metrics_match_brute_force(logits_small):
    F, y = logits_small
    F = F.astype(np.float64)
    C = gram_of(F)
    res = solve_covlasso(C, C, np.diag(C), 0.05, within=True)
    for t in (0, 3, 17):
        m = dependency_metrics(F, F, y, t, res.coef[:, t])
        replaced = F.copy()
        replaced[:, t] = F @ res.coef[:, t]
        err = np.abs(F[:, t] - replaced[:, t])
        assert m.abs_err == pytest.approx(err.mean(), rel=1e-9)
        assert m.rel_err == pytest.approx(100 * err.mean() / np.abs(F[:, t]).mean(), rel=1e-9)
        assert m.acc == pytest.approx(100 * (replaced.argmax(1) == y).mean())
        assert m.ori_acc == pytest.approx(100 * (F.argmax(1) == y).mean())
        pos = y == t
        assert m.pos_acc == pytest.approx(100 * (replaced[pos].argmax(1) == t).mean())
        assert m.ori_pos_acc == pytest.approx(100 * (F[pos].argmax(1) == t).mean())
        assert m.n_pos == pos.sum()


def test_r2_matches_sklearn_and_ignores_an_offset(logits_small):
    F, y = logits_small
    F = F.astype(np.float64)
    C = gram_of(F)
    res = solve_covlasso(C, C, np.diag(C), 0.05, within=True)
    for t in (0, 3, 17):
        m = dependency_metrics(F, F, y, t, res.coef[:, t])
        assert m.r2 == pytest.approx(r2_score(F[:, t], F @ res.coef[:, t]), abs=1e-12)
        assert m.r2_reason is None and m.as_json()["r2"] == m.r2
    # the same residuals around a logit moved by a constant: R² stays, Rel Err does not
    pred = F @ res.coef[:, 3]
    assert r_squared(F[:, 3] + 40.0, pred + 40.0) == pytest.approx(r_squared(F[:, 3], pred), abs=1e-12)


def test_r2_of_a_constant_logit_is_null_with_a_reason(logits_small):
    F, y = logits_small
    F = F.astype(np.float64).copy()
    F[:, 2] = 3.5
    coef = np.zeros(F.shape[1])
    coef[0] = 0.1
    m = dependency_metrics(F, F, y, 2, coef)
    assert np.isnan(m.r2) and "constant" in m.r2_reason
    doc = m.as_json()
    assert doc["r2"] is None and "constant" in doc["r2_reason"]
    import json

    assert "NaN" not in json.dumps(doc)


def test_exact_dependency_costs_nothing(logits_small):
    F, y = logits_small
    coef = np.zeros(F.shape[1])
    coef[4] = 1.0
    m = dependency_metrics(F, F, y, 4, coef)
    assert m.abs_err == 0 and m.acc == m.ori_acc and m.pos_acc == m.ori_pos_acc


def test_screening_check_counts(logits_small):
    C = gram_of(logits_small[0])
    alpha = 0.1
    res = solve_covlasso(C, C, np.diag(C), alpha, within=True)
    sc = screening_check(C, res.coef, alpha, within=True)
    off = ~np.eye(C.shape[0], dtype=bool)
    screened = (np.abs(C) < alpha) & off
    zero = (res.coef == 0) & off
    assert sc.screened == screened.sum() and sc.zeros == zero.sum()
    assert sc.violations == (screened & ~zero).sum()
    assert 0 <= sc.precision <= 1 and 0 <= sc.recall <= 1


def _relative_residual(F: np.ndarray, i: int) -> float:
    """Independent reference: sklearn's least squares of column i on all the others."""
    X = np.delete(F, i, axis=1)
    fit = LinearRegression(fit_intercept=False).fit(X, F[:, i])
    return float(np.mean((F[:, i] - fit.predict(X)) ** 2) / np.mean(F[:, i] ** 2))


def test_redundancy_equals_least_squares_residual():
    rng = np.random.default_rng(0)
    F = rng.standard_normal((3000, 30)) @ rng.standard_normal((30, 30))
    F[:, 5] = F[:, :5] @ rng.standard_normal(5) + 0.01 * rng.standard_normal(3000)  # nearly redundant
    red = redundancy(gram_of(F), data_eps=np.finfo(np.float64).eps)
    assert red.rank == 30 and not red.exact.any()
    assert red.rel_precision <= 1e-3
    for i in (0, 5, 9, 29):
        assert red.r[i] == pytest.approx(_relative_residual(F, i), rel=1e-6)
    assert np.argmin(red.r) == 5


def test_redundancy_of_an_ill_conditioned_gram_matches_50_digit_arithmetic():
    mpmath = pytest.importorskip("mpmath")
    rng = np.random.default_rng(1)
    base = rng.standard_normal((400, 5))
    scales = np.array([1e-3, 1e-4, 1e-5])  # three columns close to combinations of the others
    F = np.hstack([base, base[:, :3] @ rng.standard_normal((3, 3)) + scales * rng.standard_normal((400, 3))])
    C = gram_of(F)
    assert np.linalg.cond(C) > 1e10
    red = redundancy(C, data_eps=np.finfo(np.float64).eps)
    mpmath.mp.dps = 50
    M = mpmath.matrix(C.tolist())
    inv = M**-1
    exact = np.array([float(1 / (M[i, i] * inv[i, i])) for i in range(C.shape[0])])
    assert exact.min() < 1e-9  # the float64 Gram is near-singular, yet …
    assert not red.exact.any()
    np.testing.assert_allclose(red.r, exact, rtol=max(red.rel_precision, 1e-6))


def test_low_rank_logits_are_exactly_redundant_and_ordered_by_their_null_space_share():
    rng = np.random.default_rng(2)
    H = rng.standard_normal((2000, 12))
    W = rng.standard_normal((12, 40)) * rng.uniform(0.2, 3.0, 40)  # 40 categories, 12 dimensions + bias
    F = (H @ W + rng.standard_normal(40)).astype(np.float32)  # float32 logits, like a store
    red = redundancy(gram_of(F))
    assert red.rank == 13
    assert red.exact.all()
    assert max(_relative_residual(F.astype(np.float64), i) for i in (0, 7)) < red.floor  # truly ≈ 0
    # null-space share from the data's own SVD (not from the Gram's eigendecomposition)
    Fs = F.astype(np.float64) / np.sqrt(np.mean(F.astype(np.float64) ** 2, axis=0))
    _, _, vt = np.linalg.svd(Fs, full_matrices=True)
    share = (vt[13:] ** 2).sum(0)
    np.testing.assert_allclose(red.null_share, share, rtol=1e-6)
    np.testing.assert_allclose(red.r, red.floor / share, rtol=1e-3)
    assert (np.argsort(red.r, kind="stable") == np.argsort(-share, kind="stable")).all()


def test_a_category_outside_the_span_of_the_others_is_not_exact():
    rng = np.random.default_rng(3)
    F = (rng.standard_normal((2000, 10)) @ rng.standard_normal((10, 30))).astype(np.float32)
    F[:, 4] += 0.2 * rng.standard_normal(2000).astype(np.float32)  # private direction
    red = redundancy(gram_of(F))
    assert not red.exact[4] and red.exact[np.arange(30) != 4].all()
    assert red.r[4] == pytest.approx(_relative_residual(F.astype(np.float64), 4), rel=1e-4)
    assert red.r.argmax() == 4


def test_duplicates_tie_and_float16_stores_have_a_coarser_floor(logits_small):
    F = logits_small[0].astype(np.float64)
    F = np.hstack([F, F[:, [2]]])
    red = redundancy(gram_of(F))
    assert red.exact[[2, 40]].all()
    assert red.r[2] == pytest.approx(red.r[40], rel=1e-9) and red.null_share[2] == pytest.approx(0.5, rel=1e-6)
    coarse = redundancy(gram_of(F), data_eps=float(np.finfo(np.float16).eps))
    assert coarse.floor >= (4 * np.finfo(np.float16).eps) ** 2 > red.floor


def test_dependency_graph_edges_follow_coefficients():
    coef = np.array([[0.0, 0.5, 0.0], [0.2, 0.0, -0.7], [0.0, 0.01, 0.0]])
    names = ["a", "b", "c"]
    g = dependency_graph(coef, names, names, min_abs_coef=0.05)
    assert set(g.edges) == {(1, 0), (0, 1), (1, 2)}
    assert g.edges[1, 2]["coef"] == -0.7
    top1 = dependency_graph(coef, names, names, top_k=1, targets=[1])
    assert set(top1.edges) == {(0, 1)}
    between = dependency_graph(coef, names, names, between=True)
    assert (("s", 1), ("t", 2)) in between.edges


def test_top2_matches_argmax_with_ties():
    """Ori. Acc and the replaced argmax rest on Top2: it must be np.argmax's answer, ties
    included (float16 stores and saturated logits tie often), and the runner-up the argmax
    of the rest."""
    rng = np.random.default_rng(0)
    for logits in (rng.integers(0, 3, (2000, 40)).astype(np.float32),
                   rng.standard_normal((500, 300)).astype(np.float16)):
        top = Top2.of(logits)
        rows = np.arange(len(logits))
        assert np.array_equal(top.idx1, logits.argmax(1))
        rest = logits.astype(np.float64)
        rest[rows, top.idx1] = -np.inf
        assert np.array_equal(top.idx2, rest.argmax(1))
        assert np.array_equal(top.val2, rest.max(1))
        assert not np.any(top.idx1 == top.idx2)


@pytest.mark.parametrize("rank", [None, 12])
def test_least_squares_floor_matches_numpy_lstsq(rank):
    """The α → 0 limit shown on the Compare page: fitted values equal numpy's least squares
    (full rank, and logits of rank 12 from 30 categories: a singular Gram)."""
    from engine.core.analysis import LeastSquaresFloor

    rng = np.random.default_rng(1)
    n, p = 400, 30
    F = rng.standard_normal((n, p)) if rank is None else rng.standard_normal((n, rank)) @ rng.standard_normal((rank, p))
    F = F * 3 - 2  # float64: exactly rank-deficient (float32 rounding would lift the null space to ~1e-7)
    Y = F[:, :5] @ rng.standard_normal((5, 4)) + 0.5 * rng.standard_normal((n, 4))
    floor = LeastSquaresFloor(F.T @ F / n, F.T @ Y / n)
    assert floor.rank == (p if rank is None else rank + 1)  # the offset −2 adds one dimension
    for t in range(4):
        ref, *_ = np.linalg.lstsq(F, Y[:, t], rcond=None)
        np.testing.assert_allclose(F @ floor.coef(t), F @ ref, rtol=1e-7, atol=1e-7)
