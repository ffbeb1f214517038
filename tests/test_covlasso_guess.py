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
    """Logits of 240 categories (rank 200, full rank with the noise) and α where the median
    target has ~117 sources: most targets start their round on all features with many
    violators and take a guess (~110 sources: within half the rank)."""
    F, _ = classifier_like_logits(3000, 240, rank=200, seed=5)
    F = F.astype(np.float64)
    C = gram_of(F)
    return F, C, 0.1 * float(np.median(alpha_max(C, C, True)))


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
    g = ProximalGuess(G)
    g._rank = 2 * C.shape[0]  # no refusal by size: this test is about the iteration
    theta, took = g.guess(b, torch.zeros_like(b), alphas, ban)
    assert took.all()
    theta = theta.numpy()
    for row, t in enumerate(targets):
        ref = _sk(F, t, alpha)
        assert theta[row, t] == 0.0
        np.testing.assert_allclose(theta[row], ref, atol=1e-3 * np.abs(ref).max())
        big = np.abs(ref) > 1e-2 * np.abs(ref).max()  # support up to float32's rounding
        assert (theta[row][big] != 0).all()


def test_the_solver_uses_the_guess_and_matches_sklearn(wide, monkeypatch):
    F, C, alpha = wide
    monkeypatch.setattr(guess_mod, "MIN_ROWS", 1)  # 120 targets: a few rows per round
    calls = []
    original = ProximalGuess.guess

    def spy(self, b, theta, alphas, ban=None, least=0):
        out, took = original(self, b, theta, alphas, ban, least)
        calls.append(int(took.sum()))
        return out, took

    monkeypatch.setattr(ProximalGuess, "guess", spy)
    res = solve_covlasso(C, C, np.diag(C), alpha, within=True, config=SolverConfig(threads=1))
    assert res.converged.all()
    assert sum(calls) > 0, "no row started from a guess: the test no longer covers it"
    assert np.median(res.support_sizes) > 60
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

    def garbage(self, b, theta, alphas, ban=None, least=0):
        out = torch.as_tensor(rng.normal(scale=0.3, size=tuple(b.shape)))
        if bad == "nan":
            out[:, ::7] = float("nan")
        if ban is not None:
            out = out.masked_fill(ban, 0.0)
        return out, torch.ones(len(b), dtype=torch.bool)  # taken, whatever it is

    monkeypatch.setattr(guess_mod, "MIN_ROWS", 1)
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
    out, took = g.guess(torch.tensor([[1.0, 1.0, 1.0]], dtype=torch.float64), start,
                        torch.tensor([0.1], dtype=torch.float64))
    assert torch.equal(out, start) and not took.any()


def test_guesses_past_half_the_rank_are_refused_and_then_not_tried():
    """On a Gram of rank 8 among 40 features a guess may hold at most 4 sources; one with more
    is refused, and once half the rows tried refused theirs no further steps are taken."""
    rng = np.random.default_rng(1)
    F = rng.normal(size=(500, 8)) @ rng.normal(size=(8, 40))
    C = gram_of(F)
    G = torch.as_tensor(C)
    g = ProximalGuess(G)
    assert g.rank() == 8
    b = G[torch.arange(64) % 40].clone()
    alphas = torch.full((64,), 1e-3 * float(np.abs(C).max()), dtype=torch.float64)
    out, took = g.guess(b, torch.zeros_like(b), alphas)
    assert not took.any() and torch.equal(out, torch.zeros_like(b))
    assert not g._welcome()  # 64 rows tried, none took theirs: no further guess
    out, took = g.guess(b, torch.ones_like(b), alphas)
    assert not took.any() and torch.equal(out, torch.ones_like(b))


def test_no_guess_smaller_than_asked_or_where_half_the_rank_is_below_it(wide):
    F, C, alpha = wide
    G = torch.as_tensor(C)
    g = ProximalGuess(G)
    b = G[:8].clone()
    alphas = torch.full((8,), alpha, dtype=torch.float64)
    _, took = g.guess(b, torch.zeros_like(b), alphas, least=C.shape[0])  # more than any support
    assert not took.any()
    _, took = ProximalGuess(G).guess(b, torch.zeros_like(b), alphas, least=g.rank())  # half the rank < least
    assert not took.any()
