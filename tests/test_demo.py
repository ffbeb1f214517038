"""The shipped demo models and ``python -m engine demo``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.ingest.data import GlyphDataset
from engine.ingest.glyphs import GlyphConfig
from engine.ingest.models import DEMO_MODELS, WEIGHTS_DIR, create_classifier, demo_weights_info


@pytest.fixture(scope="module")
def test_split(tmp_path_factory) -> GlyphDataset:
    """8 test images per class (the demo's split has 50; the same world, rendered faster)."""
    return GlyphDataset("test", tmp_path_factory.getbasetemp() / "glyph-cache", GlyphConfig(test_per_class=8))


# Issue 12 asks >= 90 % test top-1 of each (measured on the 50,000 test images: engine/weights/*.json).
MIN_TEST_ACC = 0.90


def test_weights_are_small_and_documented():
    files = [WEIGHTS_DIR / d.weights for d in DEMO_MODELS.values()]
    assert sum(f.stat().st_size for f in files) <= 50 * 2**20
    for name, demo in DEMO_MODELS.items():
        info = demo_weights_info(name)
        assert info["config"]["model"] == name and info["test_acc"] >= MIN_TEST_ACC
        assert info["config"]["model_kwargs"] == demo.kwargs  # trained as the registry builds it
        assert info["config"]["label_smoothing"] == 0.0


@pytest.fixture(scope="module")
def demo_logits(test_split) -> dict[str, np.ndarray]:
    """Each shipped model's logits on the 8,000 images, by a direct forward pass (float64)."""
    x = (test_split.images.float() / 255 - 0.5) / 0.5
    logits = {}
    for name in DEMO_MODELS:
        loaded = create_classifier(name)
        assert loaded.num_classes == test_split.num_classes == 1000
        with torch.inference_mode():
            logits[name] = torch.cat([loaded.model(x[s : s + 1000]) for s in range(0, len(x), 1000)]).double().numpy()
    return logits


@pytest.mark.parametrize("name", sorted(DEMO_MODELS))
def test_shipped_weights_reach_their_accuracy(name, test_split, demo_logits):
    acc = float((demo_logits[name].argmax(1) == test_split.labels).mean())
    recorded = demo_weights_info(name)["test_acc"]
    assert acc >= MIN_TEST_ACC - 0.02, f"{name}: {acc:.3f} top-1 on the sample"
    assert abs(acc - recorded) < 0.03, f"{name}: {acc:.3f} here, {recorded:.3f} recorded"


@pytest.mark.slow
def test_demo_is_idempotent(tmp_path):
    from engine.commands.demo import DEMO_STORES, prepare_demo
    from engine.storage.store import Cache

    cache = Cache(tmp_path)
    first = prepare_demo(cache, progress=False)
    assert not first.all_hits and set(DEMO_STORES) <= set(cache.store_names())
    second = prepare_demo(cache, progress=False)
    assert second.all_hits
    stores = [cache.load_store(name) for name in DEMO_STORES]
    assert all(s.n == 50_000 and s.k == 1000 for s in stores)
    assert len({s.sample_fingerprint for s in stores}) == 1


def _r_squared(target: np.ndarray, sources: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """R² of every target column from the sources' logits, by numpy on the logits themselves."""
    residual = target - sources @ coef.T
    return 1 - (residual**2).sum(0) / ((target - target.mean(0)) ** 2).sum(0)


# α where the median category has at most 16 sources on the demo's 50,000 images (docs/demo-models.md)
WITHIN_ALPHA = {"glyph-vgg": 7.3, "glyph-resnet": 7.6, "glyph-vgg-seed2": 7.3}


@pytest.mark.parametrize("name", sorted(DEMO_MODELS))
def test_each_shipped_model_shows_sparse_dependencies(name, demo_logits):
    """Issue 12's within bar, on 8,000 images: most categories' logits are a few others' (R² ≥ 0.95)."""
    from engine.core.covlasso import CovLasso

    f = demo_logits[name]
    coef = CovLasso(alpha=WITHIN_ALPHA[name]).fit(f).coef_
    assert np.all(np.diag(coef) == 0)
    sources = (coef != 0).sum(1)
    r2 = _r_squared(f, f, coef)
    assert np.median(sources) <= 18, np.median(sources)
    assert (r2 >= 0.95).mean() >= 0.85, (r2 >= 0.95).mean()


# measured on these 8,000 images at α = 4 (median 15-16 sources): median R² 0.86 and 0.72, the
# counterpart strongest for 95 % and 72 % (on the demo's 50,000: docs/demo-models.md)
BETWEEN_ALPHA = 4.0
MIN_MEDIAN_R2 = {"glyph-vgg-seed2": 0.83, "glyph-resnet": 0.68}
MIN_COUNTERPART = {"glyph-vgg-seed2": 0.90, "glyph-resnet": 0.65}


@pytest.mark.parametrize(("targets", "source"), [("glyph-vgg", "glyph-vgg-seed2"), ("glyph-vgg", "glyph-resnet")])
def test_dependencies_carry_over_between_shipped_models(targets, source, demo_logits):
    """Between two independently trained models, each category's strongest source is mostly the
    same category of the other model (nothing tells the solver which categories correspond)."""
    from engine.core.covlasso import CovLasso

    x, y = demo_logits[source], demo_logits[targets]
    coef = CovLasso(alpha=BETWEEN_ALPHA).fit(x, y).coef_
    r2 = _r_squared(y, x, coef)
    assert np.median((coef != 0).sum(1)) <= 32
    strongest = np.abs(coef).argmax(1)
    assert (strongest == np.arange(len(coef))).mean() >= MIN_COUNTERPART[source]
    assert np.median(r2) >= MIN_MEDIAN_R2[source]
