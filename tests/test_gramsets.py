"""The Gram-set stage (engine.stages.gramsets): one streamed pass, cached, memory-mapped, per-target rows."""

from __future__ import annotations

import numpy as np
import pytest

from engine.core.covlasso import alpha_max
from engine.errors import IncompatibleStoresError, InvalidInputError
from engine.stages.gramsets import compute_gramset, load_gramset
from engine.stages.pairing import Pairing
from tests.conftest import gram_of


def test_pairing_requires_same_samples(cache, logits_small):
    F, y = logits_small
    a = cache.save_store("a", F, y)
    b = cache.save_store("b", F[:, ::-1].copy(), y)
    gs = compute_gramset(a, b)
    assert not gs.within and gs.rhs.shape == (F.shape[1], F.shape[1])
    perm = np.random.default_rng(0).permutation(len(y))
    shuffled = cache.save_store("shuffled", F[perm], y[perm])
    with pytest.raises(IncompatibleStoresError, match="same samples in the same order"):
        compute_gramset(a, shuffled)
    fewer = cache.save_store("fewer", F[:-1], y[:-1])
    with pytest.raises(IncompatibleStoresError):
        compute_gramset(a, fewer)


def test_gramset_cached(cache, logits_small):
    F, y = logits_small
    a = cache.save_store("a", F, y)
    first = load_gramset(cache, Pairing.of(a))
    assert list(cache.derived_dir.glob("gram-*.json"))
    again = load_gramset(cache, Pairing.of(a))
    np.testing.assert_array_equal(first.design, again.design)
    assert again.within and again.n == len(F)


def test_gramset_rows_and_alpha_max_match_numpy(cache, logits_small):
    F, y = logits_small
    a = cache.save_store("a", F, y)
    b = cache.save_store("b", (F[:, ::-1] * 0.5 + 1).copy(), y)
    within = load_gramset(cache, Pairing.of(a))
    C = gram_of(F)
    np.testing.assert_allclose(within.design, C, rtol=1e-12)
    assert isinstance(within.design, np.memmap)  # read back as a map, not a copy
    np.testing.assert_array_equal(within.rhs_columns([3, 0]), np.asarray(within.design)[:, [3, 0]])
    np.testing.assert_array_equal(within.forbid([3, 0]), [3, 0])
    np.testing.assert_allclose(within.alpha_max, alpha_max(C, C, True), rtol=1e-12)
    pair = load_gramset(cache, Pairing.of(b, a))
    G = b.logits.astype(np.float64)
    cross = F.astype(np.float64).T @ G / len(F)
    np.testing.assert_allclose(pair.rhs_columns([1, 5]), cross[:, [1, 5]], rtol=1e-12)
    np.testing.assert_allclose(pair.alpha_max, np.abs(cross).max(0), rtol=1e-12)
    np.testing.assert_allclose(pair.target_sq, (G**2).mean(0), rtol=1e-12)
    assert pair.forbid([1]) is None


def test_a_gram_too_large_for_memory_is_refused_with_the_size(cache, logits_small, monkeypatch):
    import engine.storage.memory

    F, y = logits_small
    a = cache.save_store("a", F, y)
    monkeypatch.setattr(engine.storage.memory, "available_memory", lambda: 1000)
    with pytest.raises(InvalidInputError, match=r"the Gram of 'a' needs .* of memory; this machine has"):
        compute_gramset(a)


def test_a_resident_gram_equals_the_mapped_one_and_needs_the_memory(cache, logits_small, monkeypatch):
    """The all-target jobs read the Gram into their own memory (huge pages where the kernel
    gives them): the same values, read-only; left mapped when memory is short."""
    import engine.stages.gramsets as gramsets

    F, y = logits_small
    store = cache.save_store("m", F, y)
    mapped = gramsets.load_gramset(cache, Pairing.of(store))
    assert isinstance(mapped.design, np.memmap)
    held = gramsets.resident_gramset(mapped)
    assert not isinstance(held.design, np.memmap) and not held.design.flags.writeable
    np.testing.assert_array_equal(held.design, mapped.design)
    np.testing.assert_array_equal(held.target_sq, mapped.target_sq)
    monkeypatch.setattr(gramsets, "available_memory", lambda: mapped.design.nbytes)
    assert gramsets.resident_gramset(mapped) is mapped
