"""The first support of the CovLasso's large solves (engine.core.covlasso_guess): FISTA against
scikit-learn's Lasso, where the solver uses it, and that it never decides the result."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso

import engine.core.covlasso_guess as guess_mod
from engine.core.covlasso import SolverConfig, alpha_max, solve_covlasso
from engine.core.covlasso_guess import ProximalGuess, far_from_support, worth_guessing
from engine.core.synthetic import classifier_like_logits
from tests.conftest import gram_of


@pytest.fixture(scope="module")
def wide():
    """Logits of 120 categories (rank 48) and α where the median target has ~35 sources: its
    working sets outgrow 1/16 of the features and most targets start with many violators."""
    F, _ = classifier_like_logits(3000, 120, rank=48, seed=5)
    F = F.astype(np.float64)
    C = gram_of(F)
    return F, C, 0.02 * float(np.median(alpha_max(C, C, True)))


def _sk(F, t, alpha):
    X = np.delete(F, t, axis=1)
    coef = Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=200000).fit(X, F[:, t]).coef_
    return np.insert(coef, t, 0.0)


def test_worth_guessing_counts_violators_against_sources():
    inf = float("inf")
    score = torch.tensor([[inf, inf, 1.5, 1.2, 0.3, -1.0],   # 2 sources, 2 violators: no
                          [inf, 2.0, 1.5, 1.2, 0.3, 0.9],    # 1 source, 3 violators: yes
                          [0.5, 0.2, 0.1, 1.0, 0.3, 0.9]])   # 0 sources, 0 violators (|c| = α is none)
    assert worth_guessing(score).tolist() == [False, True, False]


def test_far_from_support_needs_sources_and_many_times_their_violators():
    inf = float("inf")
    row = [inf, 2.0, 2.0, 2.0, 2.0, 2.0, 0.5]  # 1 source, 5 violators: > 4 × 1
    four = [inf, 2.0, 2.0, 2.0, 2.0, 0.5, 0.5]  # 1 source, 4 violators: not more than 4 ×
    cold = [2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]  # no sources: a cold start, never
    assert far_from_support(torch.tensor([row, four, cold])).tolist() == [True, False, False]


def test_many_fista_steps_reach_sklearns_lasso(wide, monkeypatch):
    """The iteration itself (float32) converges to the Lasso's solution: run long, from zero,
    it finds scikit-learn's support but for coefficients at float32's rounding."""
    F, C, alpha = wide
    monkeypatch.setattr(guess_mod, "STEPS", 3000)
    G = torch.as_tensor(C)
    targets = [0, 17, 64]
    b = G[targets].clone()
    ban = torch.zeros(len(targets), C.shape[0], dtype=torch.bool)
    ban[torch.arange(len(targets)), torch.tensor(targets)] = True
    alphas = torch.full((len(targets),), alpha, dtype=torch.float64)
    theta = ProximalGuess(G).guess(b, torch.zeros_like(b), alphas, ban).numpy()
    for row, t in enumerate(targets):
        ref = _sk(F, t, alpha)
        assert theta[row, t] == 0.0
        np.testing.assert_allclose(theta[row], ref, atol=1e-3 * np.abs(ref).max())
        big = np.abs(ref) > 1e-2 * np.abs(ref).max()  # support up to float32's rounding
        assert (theta[row][big] != 0).all()


@pytest.mark.parametrize("copy_bytes", [None, 0])
def test_the_solver_uses_the_guess_and_matches_sklearn(wide, monkeypatch, copy_bytes):
    """… in float32, and in float64 where the Gram is too large for a float32 copy."""
    F, C, alpha = wide
    if copy_bytes is not None:
        monkeypatch.setattr(guess_mod, "_COPY_BYTES", copy_bytes)
    calls = []
    original = ProximalGuess.guess

    def spy(self, b, theta, alphas, ban=None):
        calls.append(self._prepared()[0].dtype)
        return original(self, b, theta, alphas, ban)

    monkeypatch.setattr(ProximalGuess, "guess", spy)
    res = solve_covlasso(C, C, np.diag(C), alpha, within=True, config=SolverConfig(threads=1))
    assert res.converged.all()
    assert calls, "no row started from a guess: the test no longer covers it"
    assert set(calls) == {torch.float64 if copy_bytes == 0 else torch.float32}
    assert np.median(res.support_sizes) > 20
    for t in (0, 17, 64, 119):
        ref = _sk(F, t, alpha)
        np.testing.assert_allclose(res.coef[:, t], ref, atol=1e-6 * np.abs(ref).max())
        assert ((res.coef[:, t] != 0) == (ref != 0)).all()


@pytest.mark.parametrize("bad", ["dense", "nan"])
def test_a_bad_guess_does_not_change_the_solution(wide, monkeypatch, bad):
    """The guess is only a starting point: replaced by a dense random θ, or one that is not
    finite, the solver still returns the certified solution (equal to the one without it)."""
    F, C, alpha = wide
    plain = solve_covlasso(C, C, np.diag(C), alpha, within=True, config=SolverConfig(threads=1))
    rng = np.random.default_rng(0)

    def garbage(self, b, theta, alphas, ban=None):
        out = torch.as_tensor(rng.normal(scale=0.3, size=tuple(b.shape)))
        if bad == "nan":
            out[:, ::7] = float("nan")
            out = torch.where(torch.isfinite(out).all(1, keepdim=True), out, theta)  # as guess() does
        if ban is not None:
            out = out.masked_fill(ban, 0.0)
        return out

    monkeypatch.setattr(ProximalGuess, "guess", garbage)
    res = solve_covlasso(C, C, np.diag(C), alpha, within=True, config=SolverConfig(threads=1))
    assert res.converged.all()
    assert (res.support_sizes == plain.support_sizes).all()
    np.testing.assert_allclose(res.coef, plain.coef, atol=1e-9 * np.abs(plain.coef).max())


def test_a_gram_the_margin_does_not_cover_keeps_the_start(monkeypatch):
    """If the step overshoots (a Lipschitz estimate far too low), the iterate blows up and the
    rows keep their starting θ instead of a non-finite guess."""
    G = torch.diag(torch.tensor([1.0, 2.0, 1e6], dtype=torch.float64))
    g = ProximalGuess(G)
    g._prepared()
    g._low = (g._low[0], 1.0)  # as if the power iteration had found 1 instead of 1e6
    monkeypatch.setattr(guess_mod, "STEPS", 400)
    start = torch.tensor([[0.5, 0.0, 0.1]], dtype=torch.float64)
    out = g.guess(torch.tensor([[1.0, 1.0, 1.0]], dtype=torch.float64), start, torch.tensor([0.1], dtype=torch.float64))
    assert torch.equal(out, start)
