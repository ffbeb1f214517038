"""The solution stage (engine.stages.solutions): a subset of targets is solved alone and agrees with
the all-target solve; both are cached."""

from __future__ import annotations

import numpy as np

import engine.core.covlasso_kernels as kernels
from engine.stages.pairing import open_pairing
from engine.stages.solutions import solve_dependencies


def test_a_subset_is_solved_alone_and_equals_the_full_solve(cache, logits_small, monkeypatch):
    F, y = logits_small
    cache.save_store("m", F, y)
    pairing = open_pairing(cache, "m")
    widths = []
    real = kernels.solve_chunks
    monkeypatch.setattr(kernels, "solve_chunks", lambda d, rhs, *a, **k: widths.append(rhs.shape[1]) or real(d, rhs, *a, **k))
    some = solve_dependencies(cache, pairing, 0.05, targets=[7, 2])
    assert widths == [2]  # two targets solved, not forty
    again = solve_dependencies(cache, pairing, 0.05, targets=[7, 2])
    assert widths == [2]  # cached
    every = solve_dependencies(cache, pairing, 0.05)
    assert widths == [2, 40]
    for i, t in enumerate((7, 2)):
        np.testing.assert_array_equal(some.sparse.column(i)[0], every.sparse.column(t)[0])
        np.testing.assert_allclose(some.column(i), every.column(t), atol=1e-10)
        np.testing.assert_allclose(again.objective[i], every.objective[t], rtol=1e-9)
    assert some.column(0)[7] == 0.0  # a target never uses itself
    from_full = solve_dependencies(cache, open_pairing(cache, "m"), 0.05, targets=[3])
    assert widths == [2, 40]  # read from the full entry
    np.testing.assert_array_equal(from_full.column(0), every.column(3))
