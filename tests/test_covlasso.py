"""The CovLasso solver against independent references: sklearn's Lasso, KKT, analytic cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.linear_model import Lasso

from engine.core.covlasso import (
    ConvergenceWarning,
    CovLasso,
    SolverConfig,
    alpha_max,
    solve_covlasso,
)
from engine.core.synthetic import classifier_like_logits
from engine.errors import InvalidInputError
from tests.conftest import gram_of


def _sk_within(F, i, alpha):
    X = np.delete(F, i, axis=1)
    m = Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=200000).fit(X, F[:, i])
    return np.insert(m.coef_, i, 0.0)


def _objective(F, y, coef, alpha):
    return 0.5 * np.mean((y - F @ coef) ** 2) + alpha * np.abs(coef).sum()


@pytest.mark.parametrize("alpha_frac", [0.6, 0.2, 0.05, 0.01])
def test_within_matches_sklearn_lasso(logits_small, alpha_frac):
    F = logits_small[0].astype(np.float64)
    C = gram_of(F)
    alpha = alpha_frac * float(np.median(alpha_max(C, C, True)))
    res = solve_covlasso(C, C, np.diag(C), alpha, within=True)
    assert res.converged.all()
    for i in (0, 7, 23, 39):
        ref = _sk_within(F, i, alpha)
        scale = max(np.abs(ref).max(), 1.0)
        np.testing.assert_allclose(res.coef[:, i], ref, atol=1e-6 * scale)
        assert ((res.coef[:, i] != 0) == (ref != 0)).all()
        ours, theirs = _objective(F, F[:, i], res.coef[:, i], alpha), _objective(F, F[:, i], ref, alpha)
        assert ours <= theirs + 1e-9 * abs(theirs)
        assert res.coef[i, i] == 0.0


@pytest.mark.parametrize("alpha", [0.5, 0.1, 0.02])
def test_between_matches_sklearn_lasso(alpha):
    Fa, y = classifier_like_logits(1200, 30, rank=10, seed=1)
    Fb = Fa[:, ::-1] @ np.random.default_rng(0).normal(size=(30, 25)) * 0.2
    Fa, Fb = Fa.astype(np.float64), Fb.astype(np.float64)
    G = gram_of(Fa)
    rhs = Fa.T @ Fb / len(Fa)
    res = solve_covlasso(G, rhs, (Fb**2).mean(0), alpha, within=False)
    for t in (0, 11, 24):
        m = Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=200000).fit(Fa, Fb[:, t])
        scale = max(np.abs(m.coef_).max(), 1.0)
        np.testing.assert_allclose(res.coef[:, t], m.coef_, atol=1e-6 * scale)
        assert _objective(Fa, Fb[:, t], res.coef[:, t], alpha) <= _objective(Fa, Fb[:, t], m.coef_, alpha) + 1e-9


def test_kkt_conditions_hold(logits_small):
    C = gram_of(logits_small[0])
    alpha = 0.1 * float(np.median(alpha_max(C, C, True)))
    res = solve_covlasso(C, C, np.diag(C), alpha, within=True)
    grad = C - C @ res.coef  # column t: b − Gθ
    for t in range(C.shape[0]):
        g, th = np.delete(grad[:, t], t), np.delete(res.coef[:, t], t)
        on = th != 0
        np.testing.assert_allclose(g[on], alpha * np.sign(th[on]), rtol=1e-7, atol=1e-9)
        assert (np.abs(g[~on]) <= alpha * (1 + 1e-7)).all()


def test_alpha_at_or_above_alpha_max_gives_zeros(logits_small):
    C = gram_of(logits_small[0])
    amax = alpha_max(C, C, True)
    res = solve_covlasso(C, C, np.diag(C), amax, within=True)
    assert np.count_nonzero(res.coef) == 0
    just_below = solve_covlasso(C, C, np.diag(C), amax * 0.999, within=True)
    assert ((just_below.coef != 0).sum(0) >= 1).all()
    # α_max is max_{j≠t}|C_jt| by definition
    t = 5
    assert amax[t] == np.abs(np.delete(C[:, t], t)).max()


def test_orthogonal_design_is_soft_thresholding():
    d = np.array([1.0, 2.0, 4.0, 0.5])
    G = np.diag(d)
    rhs = np.array([[3.0, -0.2], [-1.0, 5.0], [0.1, -0.3], [0.7, 0.6]])
    res = solve_covlasso(G, rhs, np.array([20.0, 30.0]), 0.5, within=False)
    expected = np.sign(rhs) * np.maximum(np.abs(rhs) - 0.5, 0) / d[:, None]
    np.testing.assert_allclose(res.coef, expected, atol=1e-14)


def test_planted_sparse_dependencies_recovered():
    rng = np.random.default_rng(7)
    base = rng.normal(size=(5000, 30))
    planted = {30: {2: 0.8, 5: -0.5, 17: 0.3}, 31: {0: 1.2, 9: 0.4}, 32: {21: -0.9, 22: 0.9, 29: 0.6}}
    cols = [base]
    for t in sorted(planted):
        w = np.zeros(30)
        for j, v in planted[t].items():
            w[j] = v
        cols.append((base @ w + 0.01 * rng.normal(size=5000))[:, None])
    F = np.hstack(cols)
    C = gram_of(F)
    res = solve_covlasso(C, C, np.diag(C), 0.02, within=True)
    for t, deps in planted.items():
        support = set(np.flatnonzero(res.coef[:30, t]).tolist()) | set(np.flatnonzero(res.coef[30:, t]) + 30)
        assert support == set(deps), (t, support)
        for j, v in deps.items():
            assert abs(res.coef[j, t] - v) < 0.03


def test_warm_started_path_equals_cold_solves(logits_small):
    C = gram_of(logits_small[0])
    amax = float(alpha_max(C, C, True).max())
    prev = None
    for a in np.geomspace(amax, amax * 0.01, 6):
        warm = solve_covlasso(C, C, np.diag(C), a, within=True, warm_start=prev)
        cold = solve_covlasso(C, C, np.diag(C), a, within=True)
        np.testing.assert_allclose(warm.coef, cold.coef, atol=1e-9)
        prev = warm.coef


def test_per_target_alpha(logits_small):
    C = gram_of(logits_small[0])
    alphas = np.linspace(0.01, 0.3, C.shape[0])
    res = solve_covlasso(C, C, np.diag(C), alphas, within=True)
    one = solve_covlasso(C, C, np.diag(C), alphas[9], within=True)
    np.testing.assert_allclose(res.coef[:, 9], one.coef[:, 9], atol=1e-10)


def test_duplicated_category_still_solved():
    """A copied category makes the Gram singular; the solver must still certify its gap."""
    F, _ = classifier_like_logits(800, 12, rank=6, seed=2)
    F = np.hstack([F, F[:, [3]]]).astype(np.float64)
    C = gram_of(F)
    res = solve_covlasso(C, C, np.diag(C), 0.05, within=True)
    assert res.converged.all()
    ours = _objective(F, F[:, 12], res.coef[:, 12], 0.05)
    assert ours <= _objective(F, F[:, 12], _sk_within(F, 12, 0.05), 0.05) + 1e-9
    assert res.coef[3, 12] > 0.5  # the copy is the main source


def test_nonconvergence_warns_and_reports_gap(logits_small):
    C = gram_of(logits_small[0])
    cfg = SolverConfig(max_outer=1, max_newton=1, monotone_steps=0, tol=1e-14)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        res = solve_covlasso(C, C, np.diag(C), 0.01, within=True, config=cfg)
    assert (~res.converged).any()
    assert (res.duality_gap[~res.converged] > 1e-14 * np.diag(C)[~res.converged]).all()
    assert (res.n_iter <= 1).all()


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "abc", None])
def test_bad_alpha_rejected(logits_small, bad):
    C = gram_of(logits_small[0])
    with pytest.raises(InvalidInputError, match="alpha"):
        solve_covlasso(C, C, np.diag(C), bad, within=True)


def test_bad_gram_rejected():
    with pytest.raises(InvalidInputError, match="square"):
        solve_covlasso(np.zeros((3, 4)), np.zeros((3, 3)), np.zeros(3), 1.0, within=True)
    G = np.eye(3)
    G[0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        solve_covlasso(G, G, np.ones(3), 1.0, within=True)


def test_estimator_matches_solver_and_sklearn(logits_small):
    F = logits_small[0].astype(np.float64)
    est = CovLasso(alpha=0.05).fit(F)
    assert est.coef_.shape == (40, 40)
    assert np.all(np.diag(est.coef_) == 0)
    np.testing.assert_allclose(est.coef_[4], _sk_within(F, 4, 0.05), atol=1e-6)
    pred = est.predict(F)
    assert pred.shape == F.shape
    Y = F[:, :5] * 2.0
    between = CovLasso(alpha=0.05).fit(F, Y)
    assert between.coef_.shape == (5, 40)
    m = Lasso(alpha=0.05, fit_intercept=False, tol=1e-12, max_iter=100000).fit(F, Y[:, 2])
    np.testing.assert_allclose(between.coef_[2], m.coef_, atol=1e-6)


def test_no_warning_when_converged(logits_small):
    C = gram_of(logits_small[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solve_covlasso(C, C, np.diag(C), 0.05, within=True)


@pytest.mark.parametrize("min_working_set", [24, 1])
def test_path_candidate_rounds_give_the_cold_solutions(monkeypatch, min_working_set):
    """Along a path each α's first working set is picked from the previous α's gradient
    (engine.core.covlasso_kernels._candidate_round), without a full gradient; with one feature
    added per round (min_working_set=1) it misses entering features, which the certificate
    must catch. Either way every point equals a cold solve (same support, same objective)
    and sklearn's Lasso."""
    import engine.core.covlasso_kernels as kernels
    from engine.core.covlasso import covlasso_path

    used = []
    real = kernels._candidate_round
    monkeypatch.setattr(kernels, "_candidate_round", lambda *a, **k: used.append(real(*a, **k)) or used[-1])
    F, _ = classifier_like_logits(4000, 300, rank=40, seed=7)
    F = F.astype(np.float64)
    C = gram_of(F)
    targets = np.arange(0, 300, 23)
    amax = alpha_max(C, C, True)[targets]
    grid = np.geomspace(amax.max(), 0.02 * amax.max(), 10)
    cfg = SolverConfig(min_working_set=min_working_set)
    path = covlasso_path(C, C[:, targets], np.diag(C)[targets], grid, forbid=targets, config=cfg)
    assert any(used)
    A = len(grid)
    for a, alpha in enumerate(grid):
        cold = solve_covlasso(C, C[:, targets], np.diag(C)[targets], alpha, forbid=targets)
        for i, t in enumerate(targets):
            idx, val = path.coef.column(i * A + a)
            theta = np.zeros(300)
            theta[idx] = val
            np.testing.assert_array_equal(idx, cold.sparse.column(i)[0])
            ours, ref = _objective(F, F[:, t], theta, alpha), _objective(F, F[:, t], cold.column(i), alpha)
            assert abs(ours - ref) <= 1e-9 * abs(ref)
    for a, i in ((3, 0), (8, 5)):
        t = targets[i]
        theta = np.zeros(300)
        idx, val = path.coef.column(i * A + a)
        theta[idx] = val
        sk = _sk_within(F, t, grid[a])
        assert _objective(F, F[:, t], theta, grid[a]) <= _objective(F, F[:, t], sk, grid[a]) + 1e-10
        assert set(idx.tolist()) == set(np.flatnonzero(np.abs(sk) > 1e-9).tolist())


@pytest.mark.parametrize("threads, chunk", [(2, 1024), (3, 1024), (2, 7), (0, 16)])
def test_worker_threads_give_the_one_thread_solutions(logits_small, threads, chunk):
    """Chunks of targets solved side by side in threads: every target's solution is the one a
    single thread finds (same supports; values to rounding), in target order, and each still
    matches scikit-learn's Lasso."""
    F = logits_small[0].astype(np.float64)
    C = gram_of(F)
    alpha = 0.05 * float(np.median(alpha_max(C, C, True)))
    one = solve_covlasso(C, C, np.diag(C), alpha, within=True, config=SolverConfig(threads=1))
    many = solve_covlasso(C, C, np.diag(C), alpha, within=True, config=SolverConfig(threads=threads, chunk=chunk))
    assert ((many.coef != 0) == (one.coef != 0)).all()
    np.testing.assert_allclose(many.coef, one.coef, atol=1e-12)
    np.testing.assert_allclose(many.duality_gap, one.duality_gap, atol=1e-12)
    assert many.converged.all() and (many.coef[np.arange(40), np.arange(40)] == 0).all()
    ref = _sk_within(F, 31, alpha)
    np.testing.assert_allclose(many.coef[:, 31], ref, atol=1e-6 * max(np.abs(ref).max(), 1.0))


def test_path_in_worker_threads_reports_progress_once_per_chunk_and_alpha(logits_small):
    """A path solved in threads: the same path as in one thread, and progress reported from
    every chunk's every α, one call at a time, rising to exactly 1."""
    import threading

    from engine.core.covlasso import covlasso_path

    C = gram_of(logits_small[0])
    grid = np.geomspace(float(alpha_max(C, C, True).max()), 0.02 * float(np.median(alpha_max(C, C, True))), 5)
    calls, inside, overlap = [], [0], []
    lock = threading.Lock()

    def progress(fraction, message):
        with lock:
            inside[0] += 1
            overlap.append(inside[0])
        calls.append((fraction, message))
        with lock:
            inside[0] -= 1

    forbid = np.arange(40)
    one = covlasso_path(C, C, np.diag(C), grid, forbid=forbid, config=SolverConfig(threads=1))
    many = covlasso_path(C, C, np.diag(C), grid, forbid=forbid, config=SolverConfig(threads=3, chunk=12),
                         progress=progress, max_sources=6)
    capped = covlasso_path(C, C, np.diag(C), grid, forbid=forbid, config=SolverConfig(threads=1), max_sources=6)
    np.testing.assert_array_equal(many.n_alphas, capped.n_alphas)
    np.testing.assert_allclose(many.coef.to_dense(), capped.coef.to_dense(), atol=1e-12)
    assert (capped.n_alphas <= one.n_alphas).all()
    fractions = [f for f, _ in calls]
    assert len(calls) == 10 * len(grid)  # 40 targets in chunks of ceil(12 / 3) = 4: 10 chunks, every α
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert max(overlap) == 1
