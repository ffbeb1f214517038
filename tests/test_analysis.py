"""Table 1 metrics, Conjecture 1 check, redundancy and graphs against direct computations."""

from __future__ import annotations

import numpy as np
import pytest

from engine.analysis import (
    dependency_graph,
    dependency_metrics,
    redundancy,
    screening_check,
)
from engine.covlasso import solve_covlasso
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


def test_redundancy_equals_least_squares_residual(logits_small):
    F = logits_small[0].astype(np.float64)
    C = gram_of(F)
    r, precision = redundancy(C)
    for i in (0, 9, 31):
        X = np.delete(F, i, axis=1)
        theta, *_ = np.linalg.lstsq(X, F[:, i], rcond=None)
        direct = np.mean((F[:, i] - X @ theta) ** 2) / np.mean(F[:, i] ** 2)
        assert r[i] == pytest.approx(direct, rel=1e-6)
    assert precision < 1e-6


def test_redundancy_of_an_exact_copy_is_zero(logits_small):
    F = logits_small[0].astype(np.float64)
    F = np.hstack([F, F[:, [2]] * 3.0])
    r, _ = redundancy(gram_of(F))
    assert r[-1] == 0.0 and r[2] == 0.0
    assert (r[[0, 1, 5]] > 0).all()


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
