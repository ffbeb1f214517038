"""Per-sample-centred logits (``dependencies --centred``) against references computed on the
centred logits themselves: the Grams by numpy, the dependencies by scikit-learn's Lasso."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import Lasso
from sklearn.metrics import r2_score

from engine.cli import main as cli_main
from engine.core.centring import (
    CentredLogits,
    centre_gram,
    centred_gramset,
    centred_top2,
    row_means,
)
from engine.core.gram import GramAccumulator
from engine.core.synthetic import classifier_like_logits
from engine.storage.store import Cache

N, K_A, K_B = 1500, 24, 20


def _centre(x: np.ndarray) -> np.ndarray:
    return x - x.mean(axis=1, keepdims=True)


def _pair(offset: float = 5.0):
    """Two models over the same samples; B's logits carry a per-sample common offset (softmax
    ignores it), as the first demo's ResNet did."""
    rng = np.random.default_rng(0)
    a, labels = classifier_like_logits(N, K_A, rank=K_A + 4, seed=1)
    mix = rng.standard_normal((K_A, K_B)) * (rng.random((K_A, K_B)) < 0.2)
    b = a.astype(np.float64) @ mix + 0.3 * rng.standard_normal((N, K_B))
    b += offset * rng.standard_normal((N, 1))  # the offset: one value per sample, every category
    return a.astype(np.float64), b, labels % K_B


def _gramset(x, y=None):
    acc = GramAccumulator(x.shape[1], None if y is None else y.shape[1])
    acc.update(x, y)
    return acc.gramset()


def test_centred_grams_equal_the_grams_of_centred_logits():
    a, b, _ = _pair()
    within = centred_gramset(_gramset(a))
    direct = _gramset(_centre(a))
    np.testing.assert_allclose(within.design, direct.design, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(within.target_sq, direct.target_sq, rtol=1e-10)
    np.testing.assert_allclose(within.target_mean, direct.target_mean, atol=1e-10)
    np.testing.assert_allclose(within.alpha_max, direct.alpha_max, rtol=1e-10)
    between = centred_gramset(_gramset(a, b), _gramset(b))
    direct = _gramset(_centre(a), _centre(b))
    np.testing.assert_allclose(between.cross_t, direct.cross_t, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(between.target_sq, direct.target_sq, rtol=1e-10)
    np.testing.assert_allclose(between.target_mean, direct.target_mean, atol=1e-10)
    np.testing.assert_allclose(centre_gram(np.ones((3, 5))), np.zeros((3, 5)), atol=1e-15)
    with pytest.raises(ValueError, match="target model's own Gram"):
        centred_gramset(_gramset(a, b))


def test_centred_view_and_top2():
    a, _, _ = _pair()
    view = CentredLogits(a.astype(np.float32))
    np.testing.assert_allclose(view[:, [3, 1]], _centre(a)[:, [3, 1]], atol=1e-5)
    np.testing.assert_allclose(view[:, 2], _centre(a)[:, 2], atol=1e-5)
    with pytest.raises(IndexError):
        view[:5, 2]
    from engine.core.analysis import Top2

    top = centred_top2(Top2.of(a), row_means(a))
    ref = Top2.of(_centre(a))
    np.testing.assert_array_equal(top.idx1, ref.idx1)
    np.testing.assert_allclose(top.val2, ref.val2, atol=1e-12)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    a, b, labels = _pair()
    cache = Cache(tmp_path_factory.mktemp("centred"))
    cache.save_store("a", a.astype(np.float32), labels % K_A, [f"a{i}" for i in range(K_A)])
    cache.save_store("b", b.astype(np.float32), labels, [f"b{i}" for i in range(K_B)])
    return cache


def _report(cache, tmp_path, *args) -> dict:
    out = tmp_path / "deps.json"
    assert cli_main(["--cache", str(cache.root), "dependencies", *args, "--json", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.mark.parametrize("source", [None, "a"])
def test_dependencies_centred_match_sklearn_on_centred_logits(cache, tmp_path, source):
    """`--centred` solves the Lasso on centred logits — scikit-learn's, fitted on them — and its R²
    is r2_score's there; without it the JSON says "raw" and the contract is unchanged."""
    alpha = 0.05
    model = "b" if source else "a"
    args = ["--model", model, "--alpha", str(alpha)] + (["--source", source] if source else [])
    doc = _report(cache, tmp_path, *args, "--centred")
    assert doc["logits"] == "centred"
    f_t = _centre(cache.load_store(model).logits.astype(np.float64))
    f_s = _centre(cache.load_store(source or model).logits.astype(np.float64))
    for entry in doc["targets"][:6]:
        t = entry["target"]
        x = f_s if source else np.delete(f_s, t, axis=1)
        ref = Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=100_000).fit(x, f_t[:, t]).coef_
        if not source:
            ref = np.insert(ref, t, 0.0)
        coef = np.zeros(f_s.shape[1])
        for s in entry["sources"]:
            coef[s["index"]] = s["coef"]
        np.testing.assert_allclose(coef, ref, atol=2e-5)
        assert entry["r2"] == pytest.approx(r2_score(f_t[:, t], f_s @ coef), abs=1e-5)
    raw = _report(cache, tmp_path, *args)
    assert raw["logits"] == "raw" and set(raw) == {"method", "alpha", "model", "source", "targets", "logits"}
    assert raw["method"] == "covlasso"  # the contract grew a field (issue 25); nothing renamed


def test_a_per_sample_offset_does_not_move_centred_dependencies(cache, tmp_path):
    """Centring removes what softmax ignores: B with and without its offset give the same
    centred dependencies from A, while the raw ones differ."""
    b = cache.load_store("b")
    cache.save_store("b-shifted", b.logits + 3.0 * np.arange(N, dtype=np.float32)[:, None] % 7,
                     b.labels, b.class_names)
    both = [_report(cache, tmp_path, "--model", m, "--source", "a", "--alpha", "0.05", "--target", "0", "1", "--centred")
            for m in ("b", "b-shifted")]
    for x, y in zip(both[0]["targets"], both[1]["targets"]):
        assert [s["index"] for s in x["sources"]] == [s["index"] for s in y["sources"]]
        np.testing.assert_allclose([s["coef"] for s in x["sources"]], [s["coef"] for s in y["sources"]], atol=1e-4)
    raw = [_report(cache, tmp_path, "--model", m, "--source", "a", "--alpha", "0.05", "--target", "0")
           for m in ("b", "b-shifted")]
    assert raw[0]["targets"][0]["r2"] != pytest.approx(raw[1]["targets"][0]["r2"], abs=1e-3)
