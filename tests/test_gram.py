"""Streaming Grams equal the direct products; pairing checks samples."""

from __future__ import annotations

import numpy as np
import pytest

from engine.core.gram import GramAccumulator
from engine.errors import InvalidInputError


@pytest.mark.parametrize("method", ["syrk", "syrk-scipy", "full", "blocks"])
def test_chunked_gram_equals_direct(logits_small, method, monkeypatch):
    import engine.core.gram

    monkeypatch.setattr(engine.core.gram, "_BLOCK_ROWS", 7)  # several blocks of rows at K = 40
    monkeypatch.setattr(engine.core.gram, "_SYRK_BLOCK", 9)  # dsyrk on 5 diagonal blocks, dgemm right of them
    if method == "syrk-scipy":  # no numpy OpenBLAS: scipy's dsyrk
        monkeypatch.setattr(engine.core.gram, "_CBLAS", [None])
        method = "syrk"
    elif method == "syrk" and engine.core.gram._cblas() is None:
        pytest.skip("numpy brings no OpenBLAS here")
    elif method == "syrk":
        monkeypatch.setattr(engine.core.gram, "SYRK_MAX_K", 10)  # numpy's OpenBLAS is taken above this K
    F, _ = logits_small
    acc = GramAccumulator(F.shape[1], method=method)
    for s in range(0, len(F), 97):
        acc.update(F[s : s + 97])
    F64 = F.astype(np.float64)
    g = acc.gram()
    np.testing.assert_allclose(g, F64.T @ F64 / len(F), rtol=1e-12)
    assert np.array_equal(g, g.T)


def test_syrk_gram_mirrors_every_block():
    """K above the mirroring block (1,024): the lower triangle is filled across blocks."""
    rng = np.random.default_rng(3)
    F = rng.standard_normal((300, 1100)).astype(np.float32)
    acc = GramAccumulator(1100)
    acc.update(F[:150])
    acc.update(F[150:])
    F64 = F.astype(np.float64)
    np.testing.assert_allclose(acc.gram(), F64.T @ F64 / 300, rtol=1e-10, atol=1e-13)


def test_cross_gram_equals_direct(logits_small):
    F, _ = logits_small
    G = np.sin(F[:, :7]) * 3
    acc = GramAccumulator(F.shape[1], 7)
    for s in range(0, len(F), 200):
        acc.update(F[s : s + 200], G[s : s + 200])
    F64, G64 = F.astype(np.float64), G.astype(np.float64)
    np.testing.assert_allclose(acc.cross_gram(), F64.T @ G64 / len(F), rtol=1e-12)
    np.testing.assert_allclose(acc.target_sq(), (G64**2).mean(0), rtol=1e-12)


def test_bad_chunks_rejected():
    acc = GramAccumulator(4)
    with pytest.raises(InvalidInputError, match=r"\(n, 4\)"):
        acc.update(np.zeros((3, 5)))
    with pytest.raises(InvalidInputError, match="no samples"):
        acc.gram()
    pair, f = GramAccumulator(4, 2), np.arange(12.0).reshape(3, 4)
    with pytest.raises(InvalidInputError, match="paired chunk"):
        pair.update(f, np.zeros((2, 2)))  # refused before anything is added
    pair.update(f, f[:, :2])
    np.testing.assert_allclose(pair.gram(), f.T @ f / 3)
    np.testing.assert_allclose(pair.cross_gram(), f.T @ f[:, :2] / 3)


def test_chunks_of_any_layout_are_read_not_written(tmp_path):
    """Read-only memory maps, float64 views with strides and tensors give the same Gram; the
    reused conversion buffer never leaks one chunk into the next (chunks of falling size)."""
    import torch

    rng = np.random.default_rng(5)
    F = rng.standard_normal((500, 30)).astype(np.float32)
    np.save(tmp_path / "f.npy", F)
    original = F.copy()
    mapped = np.load(tmp_path / "f.npy", mmap_mode="r")
    wide = np.repeat(F.astype(np.float64), 2, axis=1)[:, ::2]  # float64, not contiguous
    acc = GramAccumulator(30)
    acc.update(mapped[:300])
    acc.update(wide[300:450])
    acc.update(torch.from_numpy(F[450:480]))
    acc.update(torch.from_numpy(F[480:]).to(torch.bfloat16))  # as autocast may hand them over
    F[480:] = torch.from_numpy(F[480:]).to(torch.bfloat16).float().numpy()
    F64 = F.astype(np.float64)
    np.testing.assert_allclose(acc.gram(), F64.T @ F64 / 500, rtol=1e-12)
    np.testing.assert_array_equal(np.load(tmp_path / "f.npy"), original)


def test_large_grams_avoid_the_bundled_blas_syrk(monkeypatch):
    """OpenBLAS's dsyrk crashes once the K × K result passes 2 GiB: numpy's takes large K in
    diagonal blocks under that size; scipy's (the fallback) only K ≤ SYRK_MAX_K, above which
    the CPU accumulates by torch GEMMs, and a dsyrk asked for there is refused, not attempted."""
    import torch

    import engine.core.gram
    from engine.core.gram import _SYRK_BLOCK, SYRK_MAX_K, _pick_method

    cpu = torch.device("cpu")
    assert 8 * SYRK_MAX_K**2 < 2**31 and 8 * _SYRK_BLOCK**2 < 2**31
    assert _pick_method(torch.device("cuda"), 1000, None, None) == "full"
    if engine.core.gram._cblas() is not None:
        assert _pick_method(cpu, 21843, None, None) == "syrk"
    monkeypatch.setattr(engine.core.gram, "_CBLAS", [None])
    assert _pick_method(cpu, 1000, None, None) == "syrk"
    assert _pick_method(cpu, 21843, None, None) == "blocks"
    with pytest.raises(InvalidInputError, match="K ≤"):
        _pick_method(cpu, 21843, True, None)
