"""Numerical faults: each either works — checked against scikit-learn's Lasso and the KKT
conditions, never against our own output — or is refused with a reason; nothing hangs.

Duplicated, constant and all-zero categories (a singular Gram), all-zero logits, one sample,
two categories, float16 stores, logits scaled by 1e±20 (compared with the unscaled problem
through the Lasso's exact scaling law), values beyond float32, α below the Gram's float64
resolution, NaN/Inf, and an adversarial near-singular problem with a time bound.
"""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning
from sklearn.linear_model import Lasso

from engine.apps.report import dependency_report
from engine.core.covlasso import ConvergenceWarning, CovLasso, SolverConfig, solve_covlasso
from engine.errors import InvalidInputError
from engine.stages.alpha_paths import load_or_compute_path
from engine.stages.pairing import open_pairing

RNG = np.random.default_rng(7)
A = RNG.standard_normal((300, 6)) + 0.5 * RNG.standard_normal((300, 1))  # correlated categories


def _sk_fit(X: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkConvergenceWarning)
        return Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=200_000).fit(X, y).coef_


def _objective(X, y, theta, alpha) -> float:
    return float(0.5 * np.mean((y - X @ theta) ** 2) + alpha * np.abs(theta).sum())


def _check_target(F: np.ndarray, t: int, theta: np.ndarray, alpha: float) -> None:
    """θ (our solution for target t, within F) is a minimiser: KKT holds, and its objective
    is no worse than scikit-learn's on the same data (θ_t = 0 imposed by zeroing column t)."""
    F = F.astype(np.float64)
    X, y = F.copy(), F[:, t]
    X[:, t] = 0.0
    assert theta[t] == 0
    scale = float(np.mean(y**2)) + float(np.max(np.mean(X**2, 0), initial=0.0))
    c = X.T @ (y - X @ theta) / len(y)  # the gradient; KKT: c_j = α·sign θ_j, |c_j| ≤ α
    slack = 1e-6 * alpha + 1e-9 * scale
    nz = theta != 0
    assert np.all(np.abs(c[~nz]) <= alpha + slack), (t, np.abs(c[~nz]).max(), alpha)
    np.testing.assert_allclose(c[nz], alpha * np.sign(theta[nz]), rtol=1e-5, atol=slack)
    sk = _sk_fit(X, y, alpha)
    assert _objective(X, y, theta, alpha) <= _objective(X, y, sk, alpha) + 1e-9 * scale


def _check_all(F: np.ndarray, alpha: float) -> CovLasso:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # converged, or the test fails
        est = CovLasso(alpha=alpha, tol=1e-10).fit(F)
    for t in range(F.shape[1]):
        _check_target(F, t, est.coef_[t], alpha)
    return est


SINGULAR = {
    "duplicated category": np.column_stack([A, A[:, 0]]),
    "three copies of two categories": np.column_stack([A[:, :2]] * 3),
    "constant category": np.column_stack([A, np.full(len(A), 3.0)]),
    "all-zero category": np.column_stack([A, np.zeros(len(A))]),
    "one sample": A[:1],
    "two samples, six categories": A[:2],
    "two categories": A[:, :2],
}


@pytest.mark.parametrize("case", sorted(SINGULAR))
@pytest.mark.parametrize("alpha", [0.3, 0.03, 0.003])
def test_singular_grams_are_solved_exactly_and_fast(case, alpha):
    t0 = time.process_time()
    _check_all(SINGULAR[case], alpha)
    assert time.process_time() - t0 < 1.0  # the singular case once took the whole sweep budget (2 s)


def test_all_zero_logits_give_zero_dependencies_without_warning():
    F = np.zeros((50, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = CovLasso(alpha=0.1).fit(F)
    assert not est.coef_.any() and not est.dual_gap_.any()


def test_float16_stores_are_solved_on_their_stored_values(cache):
    F = (A * 10).astype(np.float32)
    store = cache.save_store("half", F, np.zeros(len(F), np.int64), dtype="float16")
    assert store.logits.dtype == np.float16
    rep = dependency_report(cache, "half", None, 0.5)
    stored = store.logits.astype(np.float64)
    for t, entry in enumerate(rep["targets"]):
        theta = np.zeros(F.shape[1])
        theta[[s["index"] for s in entry["sources"]]] = [s["coef"] for s in entry["sources"]]
        _check_target(stored, t, theta, 0.5)


@pytest.mark.parametrize("s", [1e20, 1e-20, 1e15, 1e-15])
def test_enormous_and_tiny_logits_follow_the_lasso_scaling_law(s):
    """θ*(s·F, s²·α) = θ*(F, α) exactly (the objective is multiplied by s²): solving the
    scaled problem must give the unscaled problem's solution, which sklearn confirms."""
    alpha = 0.05
    ref = _check_all(A, alpha).coef_
    scaled = (A * s).astype(np.float32)  # as stored; 1e20 · O(1) is still a finite float32
    assert np.isfinite(scaled).all()
    est = CovLasso(alpha=alpha * s * s, tol=1e-10).fit(scaled)
    np.testing.assert_allclose(est.coef_, ref, rtol=1e-4, atol=1e-5)
    assert ((est.coef_ != 0) == (ref != 0)).all()


def test_logits_beyond_float32_are_refused_with_a_reason(cache):
    with pytest.raises(InvalidInputError, match=r"overflow float32.*rescale"):
        cache.save_store("big", A * 1e200, np.zeros(len(A), np.int64))
    with pytest.raises(InvalidInputError, match=r"overflow float16.*float32"):
        cache.save_store("half", A * 1e5, np.zeros(len(A), np.int64), dtype="float16")
    assert cache.store_names() == []


def test_alpha_below_the_grams_resolution_is_refused_with_a_reason():
    F = A * 1e20
    G = F.T @ F / len(F)
    with pytest.raises(InvalidInputError, match="numerical resolution"):
        solve_covlasso(G, G, np.diag(G).copy(), 2.5, within=True)  # the paper's α on 1e20 logits


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_refused_at_the_door_and_in_the_solver(cache, bad):
    F = A.copy()
    F[3, 2] = bad
    with pytest.raises(InvalidInputError, match="NaN/Inf"):
        cache.save_store("x", F, np.zeros(len(F), np.int64))
    G = A.T @ A / len(A)
    G[1, 1] = bad
    with pytest.raises(InvalidInputError, match="NaN/Inf"):
        solve_covlasso(G, G, np.abs(np.diag(G)), 0.1, within=True)


@pytest.mark.parametrize("bad", [{"tol": float("nan")}, {"tol": -1.0}, {"tol": 0.0}, {"max_outer": 0},
                                 {"device": "gpu0"}, {"device": "cuda;rm"}])
def test_bad_solver_settings_are_refused(bad):
    with pytest.raises(InvalidInputError):
        SolverConfig(**bad)


def test_the_solver_never_hangs_on_an_adversarial_problem():
    """Forty categories that are noisy copies of four, a tiny α, an unreachable tolerance:
    the solver stops within its iteration budget and reports the gap it reached."""
    rng = np.random.default_rng(0)
    F = A[:, rng.integers(0, 4, 40)] + 1e-9 * rng.standard_normal((len(A), 40))
    G = F.T @ F / len(F)
    t0 = time.process_time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = solve_covlasso(G, G, np.diag(G).copy(), 1e-6, within=True,
                             config=SolverConfig(tol=1e-16, max_outer=20))
    assert time.process_time() - t0 < 60
    assert (res.n_iter <= 20).all() and np.isfinite(res.duality_gap).all()
    if not res.converged.all():
        assert any(issubclass(w.category, ConvergenceWarning) and "gap" in str(w.message) for w in caught)


PATHOLOGICAL = {
    "all-zero logits": np.zeros((120, 5), np.float32),
    "duplicated categories": np.column_stack([A[:120, :4], A[:120, :2]]).astype(np.float32),
    "one sample": A[:1].astype(np.float32),
    "one class seen": A[:120].astype(np.float32),
    "enormous": (A[:120] * 1e20).astype(np.float32),
}


@pytest.mark.parametrize("case", sorted(PATHOLOGICAL))
def test_pathological_stores_give_a_path_and_a_valid_json_report(cache, case):
    """What the dashboard and the CLI do with such a store: an α path, a strict-JSON report."""
    F = PATHOLOGICAL[case]
    labels = np.zeros(len(F), np.int64)
    cache.save_store("p", F, labels)
    t0 = time.process_time()
    path = load_or_compute_path(cache, open_pairing(cache, "p"))
    assert np.isfinite(path.gaps).all() and len(path.alphas) >= 2
    alpha = float(path.alphas[len(path.alphas) // 2])
    report = dependency_report(cache, "p", None, alpha)
    json.dumps(report, allow_nan=False)  # NaN/Inf would make the JSON invalid
    assert time.process_time() - t0 < 30
