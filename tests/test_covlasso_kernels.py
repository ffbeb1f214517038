"""The solver's kernels where they are weakest: supports close to the Gram's rank.

Logits span few dimensions (a head on a narrow penultimate layer), so at small α a target's
support approaches the Gram's rank, its working-set systems become near-singular and the
Newton (primal-dual active-set) guesses stall or cycle. The monotone active-set method that
takes over must still give sklearn's answer.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso

from engine.core.covlasso import alpha_max, solve_covlasso
from engine.core.covlasso_subproblem import _monotone, _newton


def _near_rank_problem(seed: int, n: int = 600, p: int = 60, rank: int = 20, targets: int = 40):
    """Float32 logits of rank 20 (p = 60 categories) and targets partly outside their span."""
    rng = np.random.default_rng(seed)
    F = (rng.standard_normal((n, rank)) @ rng.standard_normal((rank, p))).astype(np.float32).astype(np.float64)
    Y = rng.standard_normal((n, targets)) + 0.5 * F[:, :targets]
    return F, Y, F.T @ F / n, F.T @ Y / n


def _objective(F, y, coef, alpha):
    return 0.5 * np.mean((y - F @ coef) ** 2) + alpha * np.abs(coef).sum()


def test_monotone_method_solves_where_newton_stalls():
    F, Y, G, B = _near_rank_problem(2)
    alpha = 0.002 * float(np.abs(B).max())
    T, p = B.shape[1], B.shape[0]
    H = torch.as_tensor(np.broadcast_to(G, (T, p, p)).copy())
    b = torch.as_tensor(B.T.copy())
    al = torch.full((T,), alpha, dtype=torch.float64)
    _, newton_ok, _ = _newton(H, b, torch.zeros(T, p, dtype=torch.float64), al, 30)
    assert (~newton_ok).sum() >= 1  # the case is hard for the Newton guesses
    theta, ok = _monotone(H, b, torch.zeros(T, p, dtype=torch.float64), al, 4 * p)
    assert ok.all()
    for t in range(0, T, 5):
        ref = Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=500000).fit(F, Y[:, t]).coef_
        assert _objective(F, Y[:, t], theta[t].numpy(), alpha) <= _objective(F, Y[:, t], ref, alpha) + 1e-10


@pytest.mark.parametrize("seed", [0, 5])
def test_solver_near_the_gram_rank_matches_sklearn(seed):
    F, Y, G, B = _near_rank_problem(seed)
    alpha = 0.002 * float(np.median(alpha_max(G, B, within=False)))
    res = solve_covlasso(G, B, np.mean(Y**2, axis=0), alpha, within=False)
    assert res.converged.all()
    for t in (0, 13, 39):
        ref = Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=500000).fit(F, Y[:, t]).coef_
        assert _objective(F, Y[:, t], res.column(t), alpha) <= _objective(F, Y[:, t], ref, alpha) + 1e-10


def test_device_gathers_give_the_cpu_solutions(monkeypatch):
    """On CUDA the working-set gathers go through ``torch.take`` (the CPU uses numpy's
    ``take``): that branch, run here on the CPU, gives the same supports and objectives, and
    both match sklearn's Lasso."""
    import engine.core.covlasso_factors as factors

    F, Y, G, B = _near_rank_problem(3)
    alpha = 0.01 * float(np.median(alpha_max(G, B, within=False)))
    ysq = np.mean(Y**2, axis=0)
    cpu = solve_covlasso(G, B, ysq, alpha, within=False)
    monkeypatch.setattr(factors, "_take", lambda src, flat: torch.take(src, flat))
    device = solve_covlasso(G, B, ysq, alpha, within=False)
    assert cpu.converged.all() and device.converged.all()
    np.testing.assert_array_equal(cpu.coef != 0, device.coef != 0)
    np.testing.assert_allclose(device.objective, cpu.objective, rtol=1e-12)
    for t in (0, 21):
        ref = Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=500000).fit(F, Y[:, t]).coef_
        assert _objective(F, Y[:, t], device.column(t), alpha) <= _objective(F, Y[:, t], ref, alpha) + 1e-10
