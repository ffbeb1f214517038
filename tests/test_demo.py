"""The shipped demo models and ``python -m engine demo``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.data import GlyphDataset
from engine.glyphs import GlyphConfig
from engine.models import DEMO_MODELS, WEIGHTS_DIR, create_classifier, demo_weights_info


@pytest.fixture(scope="module")
def test_split(tmp_path_factory) -> GlyphDataset:
    """8 test images per class (the demo's split has 50; the same world, rendered faster)."""
    return GlyphDataset("test", tmp_path_factory.getbasetemp() / "glyph-cache", GlyphConfig(test_per_class=8))


# Issue 3 asks >= 85 % test top-1 for both (measured: 92.9 % and 89.7 %, see engine/weights/*.json).
MIN_TEST_ACC = {"glyph-resnet": 0.85, "glyph-vit": 0.85}


def test_weights_are_small_and_documented():
    files = [WEIGHTS_DIR / d.weights for d in DEMO_MODELS.values()]
    assert sum(f.stat().st_size for f in files) <= 25 * 2**20
    for name in DEMO_MODELS:
        info = demo_weights_info(name)
        assert info["config"]["model"] == name and info["test_acc"] >= MIN_TEST_ACC[name]


@pytest.mark.parametrize("name", sorted(DEMO_MODELS))
def test_shipped_weights_reach_their_accuracy(name, test_split):
    """A direct forward pass on every 4th test image (2,000 images, all 1,000 classes)."""
    loaded = create_classifier(name)
    assert loaded.num_classes == test_split.num_classes == 1000
    idx = np.arange(0, len(test_split), 4)
    x = (test_split.images[idx].float() / 255 - 0.5) / 0.5
    with torch.inference_mode():
        pred = torch.cat([loaded.model(x[s : s + 500]).argmax(1) for s in range(0, len(x), 500)])
    acc = float((pred.numpy() == test_split.labels[idx]).mean())
    recorded = demo_weights_info(name)["test_acc"]
    assert acc >= MIN_TEST_ACC[name] - 0.02, f"{name}: {acc:.3f} top-1 on the sample"
    assert abs(acc - recorded) < 0.03, f"{name}: {acc:.3f} here, {recorded:.3f} recorded"


@pytest.mark.slow
def test_demo_is_idempotent(tmp_path):
    from engine.commands.demo import DEMO_STORES, prepare_demo
    from engine.store import Cache

    cache = Cache(tmp_path)
    first = prepare_demo(cache, progress=False)
    assert not first.all_hits and set(DEMO_STORES) <= set(cache.store_names())
    second = prepare_demo(cache, progress=False)
    assert second.all_hits
    store = cache.load_store("glyph-resnet")
    assert store.n == 50_000 and store.k == 1000
    assert store.sample_fingerprint == cache.load_store("glyph-vit").sample_fingerprint
