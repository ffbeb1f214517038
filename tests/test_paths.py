"""α paths (engine.stages.alpha_paths): exact along the grid; one target on demand = the all-target job's
result (same supports, objectives within 1e-7); the job resumes by chunks and is never read
as complete before it is."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Lasso

import engine.stages.alpha_paths as paths_mod
from engine.core.synthetic import classifier_like_logits
from engine.stages.alpha_paths import (
    GridRule,
    compute_all_paths,
    path_progress,
    path_spec,
    read_all_paths,
    target_paths,
)
from engine.stages.gramsets import load_gramset
from engine.stages.pairing import open_pairing


def _sk(X, y, alpha):
    return Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=200000).fit(X, y).coef_


@pytest.fixture
def pair(cache):
    """Two 'models' of the same samples: B's logits are A's mixed and perturbed."""
    F, labels = classifier_like_logits(1200, 30, rank=12, seed=4)
    rng = np.random.default_rng(4)
    G = (F @ rng.standard_normal((30, 30)) / 6 + 0.3 * rng.standard_normal((1200, 30))).astype(np.float32)
    cache.save_store("a", F, labels, [f"a{i}" for i in range(30)])
    cache.save_store("b", G, labels, [f"b{i}" for i in range(30)])
    return cache, F.astype(np.float64), G.astype(np.float64)


def test_within_path_matches_sklearn_at_every_alpha(pair):
    cache, F, _ = pair
    spec = path_spec(cache, open_pairing(cache, "a"), rule=GridRule(n=8, span=0.05))
    path = compute_all_paths(cache, spec)
    assert path.complete and np.all(np.diff(path.alphas) < 0)
    for a in range(0, len(path.alphas), 3):
        for t in (0, 11, 29):
            ref = np.insert(_sk(np.delete(F, t, axis=1), F[:, t], path.alphas[a]), t, 0.0)
            np.testing.assert_allclose(path.coef_vector(t, a), ref, atol=1e-6)
            assert set(path.coef_at(t, a)[0]) == set(np.flatnonzero(np.abs(ref) > 1e-9))


def test_between_path_of_one_target_matches_sklearn(pair):
    cache, F, G = pair
    spec = path_spec(cache, open_pairing(cache, "b", "a"), rule=GridRule(n=6, span=0.05))
    path = target_paths(cache, spec, [29])
    assert not path.within and path.n_sources == 30 and list(path.targets) == [29] and not path.complete
    a = len(path.alphas) - 1
    np.testing.assert_allclose(path.coef_vector(29, a), _sk(F, G[:, 29], path.alphas[a]), atol=1e-6)


def test_a_target_path_ends_after_its_first_alpha_over_the_cap(pair):
    cache, _, _ = pair
    pairing = open_pairing(cache, "a")
    full = compute_all_paths(cache, path_spec(cache, pairing, rule=GridRule(n=12, span=1e-3, max_sources=10**6)))
    cut = compute_all_paths(cache, path_spec(cache, pairing, rule=GridRule(n=12, span=1e-3, max_sources=8)))
    np.testing.assert_array_equal(cut.alphas, full.alphas)  # one grid; each target stops on it
    for t in range(30):
        sizes = full.support_sizes[t]
        over = np.flatnonzero(sizes > 8)
        expected = len(full.alphas) if over.size == 0 else int(over[0]) + 1
        assert cut.n_alphas[t] == expected
        for a in range(expected):
            np.testing.assert_array_equal(cut.coef_at(t, a)[0], full.coef_at(t, a)[0])
    assert (cut.n_alphas < len(cut.alphas)).any()


def test_explicit_grid_is_solved_in_full(pair):
    cache, F, _ = pair
    spec = path_spec(cache, open_pairing(cache, "a"), alphas=np.array([0.01, 0.5, 0.1]))
    path = target_paths(cache, spec, [3])
    np.testing.assert_array_equal(path.alphas, [0.5, 0.1, 0.01])
    ref = np.insert(_sk(np.delete(F, 3, axis=1), F[:, 3], 0.01), 3, 0.0)
    np.testing.assert_allclose(path.coef_vector(3, 2), ref, atol=1e-6)


def _objective(gs, t, theta, alpha):
    b, ysq = np.asarray(gs.design)[:, t], gs.target_sq[t]
    return 0.5 * (ysq - 2 * theta @ b + theta @ np.asarray(gs.design) @ theta) + alpha * np.abs(theta).sum()


def test_one_target_on_demand_equals_the_all_target_job(cache):
    """Supports identical and objectives within 1e-7 (relative), target by target and α by α,
    between per-target solves in a fresh cache and the chunked all-target job."""
    F, y = classifier_like_logits(3000, 80, rank=30, seed=11)
    cache.save_store("m", F, y)
    pairing = open_pairing(cache, "m")
    rule = GridRule(n=10, span=1e-2, max_sources=40)
    every = compute_all_paths(cache, path_spec(cache, pairing, rule=rule), chunk=32)
    from engine.storage.store import Cache

    fresh = Cache(cache.root.parent / "fresh")
    fresh.save_store("m", F, y)
    fresh_pairing = open_pairing(fresh, "m")
    spec = path_spec(fresh, fresh_pairing, rule=rule)
    gs = load_gramset(cache, pairing)
    for t in (0, 7, 33, 79):
        one = target_paths(fresh, spec, [t])
        assert one.n_alphas[0] == every.n_alphas[t]
        for a in one.alpha_indices(t):
            np.testing.assert_array_equal(one.coef_at(t, a)[0], every.coef_at(t, a)[0])
            f1 = _objective(gs, t, one.coef_vector(t, a), one.alphas[a])
            f2 = _objective(gs, t, every.coef_vector(t, a), every.alphas[a])
            assert abs(f1 - f2) <= 1e-7 * abs(f2)


class _Killed(Exception):
    pass


def test_the_all_target_job_resumes_by_chunks_and_is_read_partially_until_done(cache, monkeypatch):
    F, y = classifier_like_logits(1500, 40, rank=12, seed=3)
    cache.save_store("m", F, y)
    spec = path_spec(cache, open_pairing(cache, "m"), rule=GridRule(n=6, span=0.05))
    assert read_all_paths(cache, spec) is None and path_progress(cache, spec).solved == 0

    def killed_after_two_chunks(fraction, message):
        if fraction >= 16 / 40:
            raise _Killed(message)

    with pytest.raises(_Killed):
        compute_all_paths(cache, spec, progress=killed_after_two_chunks, chunk=8)
    partial = read_all_paths(cache, spec)
    assert not partial.complete and list(partial.targets) == list(range(16))
    assert path_progress(cache, spec).solved == 16 and not path_progress(cache, spec).complete
    solved = []
    real = paths_mod.solve_targets
    monkeypatch.setattr(paths_mod, "solve_targets",
                        lambda c, s, targets, **kw: solved.append(list(targets)) or real(c, s, targets, **kw))
    done = compute_all_paths(cache, spec, chunk=8)
    assert [t[0] for t in solved] == [16, 24, 32]  # only the chunks the killed run had not cached
    assert done.complete and path_progress(cache, spec).complete
    again = read_all_paths(cache, spec)
    np.testing.assert_array_equal(again.coef.values, done.coef.values)
    # a target's page reads it from the job's result; nothing is solved
    monkeypatch.setattr(paths_mod, "covlasso_path", lambda *a, **k: pytest.fail("solved in a read"))
    np.testing.assert_array_equal(target_paths(cache, spec, [5]).coef_vector(5, 2), done.coef_vector(5, 2))
