"""§3.2 on tiny generated data: W over a frozen backbone's base logits learns the new classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.errors import InvalidInputError
from engine.jobs.context import RunContext
from engine.jobs.kinds import spec_from_dict
from engine.storage.store import Cache
from engine.train.newclasses import binary_test, choose_classes, class_metrics, train_new_classes
from engine.train.specs import NewClassesSpec
from tests.tiny_images import DIM, blob_images, image_mlp
from tests.torch_threads import one_torch_thread  # noqa: F401  (autouse fixture)

K = 12
PROTOS = torch.randn(K, DIM, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def splits():
    return blob_images(PROTOS, 40, 1, noise=0.6), blob_images(PROTOS, 30, 2, noise=0.6, split="test")


def _spec(**kw) -> NewClassesSpec:
    base = dict(dataset="blobs", arch="mlp", num_classes=0, n_new=3, epochs=6, w_epochs=40, lr=1e-2, w_lr=5e-2,
                batch_size=32, w_batch_size=64, weight_decay=0.0, device="cpu", seed=0, base_negatives=40,
                side_by_side=False)
    return NewClassesSpec(**{**base, **kw})


def test_w_classifier_learns_new_classes_and_writes_stores(tmp_path, splits):
    spec = _spec()
    ctx = RunContext(cache=Cache(tmp_path / "cache"), run_dir=tmp_path / "run")
    report = json.loads(train_new_classes(spec, ctx, *splits, image_mlp).read_text())
    ours, baseline = report["metrics"]["ours"], report["metrics"]["baseline"]
    # Chance within 3 new classes is 33 %; over all 12 classes 8 %.
    assert ours["acc_within_new"] > 80, ours
    assert ours["acc_all"] > 80, ours
    assert baseline["acc_all"] > 60, baseline
    cache = Cache(tmp_path / "cache")
    a, b = (cache.load_store(report["stores"][k]) for k in ("ours", "baseline"))
    assert a.logits.shape == b.logits.shape == (K * 30, K)
    assert a.sample_fingerprint == b.sample_fingerprint
    # The stored "ours" logits of new classes really are W · base logits (no bias).
    new = np.array([splits[0].class_names.index(c) for c in report["new_classes"]])
    base = np.setdiff1d(np.arange(K), new)
    w = np.linalg.lstsq(a.logits[:, base].astype(np.float64), a.logits[:, new], rcond=None)[0]
    assert np.abs(a.logits[:, base] @ w - a.logits[:, new]).max() < 1e-3
    ckpt = Path(report["checkpoints"])
    assert ckpt.parent == ctx.run_dir
    assert (ckpt / "backbone" / "last.pt").exists() and (ckpt / "w.safetensors").exists()


def test_side_by_side_training_gives_the_same_weights(tmp_path, splits):
    """Backbone here, baseline in a helper process: the same weights as one after the other."""
    from engine.train.parallel import side_by_side_possible

    if not side_by_side_possible(torch.device("cpu"), 1, 2):
        pytest.skip("needs two CPU cores")
    reports = {}
    for flag in (False, True):
        ctx = RunContext(cache=Cache(tmp_path / "cache"), run_dir=tmp_path / f"run-{flag}")
        reports[flag] = json.loads(train_new_classes(_spec(side_by_side=flag, epochs=2), ctx, *splits,
                                                     image_mlp).read_text())
    assert reports[True]["metrics"] == reports[False]["metrics"]
    for name in ("backbone", "baseline"):
        a, b = (torch.load(Path(reports[f]["checkpoints"]) / name / "last.pt", weights_only=True)["model"]
                for f in (False, True))
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)


def test_rerun_resumes_from_checkpoints(tmp_path, splits):
    spec = _spec(baseline=False, epochs=2)
    ctx = RunContext(cache=Cache(tmp_path / "cache"), run_dir=tmp_path / "run")
    first = json.loads(train_new_classes(spec, ctx, *splits, image_mlp).read_text())
    checkpoint = Path(first["checkpoints"]) / "backbone" / "last.pt"
    stamp = checkpoint.stat().st_mtime_ns
    second = json.loads(train_new_classes(spec, ctx, *splits, image_mlp).read_text())
    assert second["metrics"] == first["metrics"]  # the same weights...
    assert checkpoint.stat().st_mtime_ns == stamp  # ...loaded, not trained again


def test_one_new_class_binary_test(tmp_path, splits):
    spec = _spec(n_new=1, baseline=False, binary_pairs=500)
    ctx = RunContext(cache=Cache(tmp_path / "cache"), run_dir=tmp_path / "run")
    report = json.loads(train_new_classes(spec, ctx, *splits, image_mlp).read_text())
    binary = report["metrics"]["ours"]["binary"]
    assert report["metrics"]["ours"]["acc_within_new"] is None  # an argmax over one logit
    assert binary["pairs"] == 30 and binary["pairs_requested"] == 500  # capped, and says so
    assert binary["positives"] == "test images of the new class"
    assert binary["pair_acc"] > 80 and binary["binary_acc"] > 70


def test_class_metrics_by_hand():
    logits = np.array([[3, 1, 0, 2], [0, 3, 2, 1], [1, 0, 2, 3], [0, 0, 3, 1]], dtype=float)
    labels = np.array([0, 2, 3, 3])
    m = class_metrics(logits, labels, base=np.array([0, 1]), new=np.array([2, 3]))
    assert m["acc_all"] == 50.0  # samples 0 and 2
    assert m["acc_within_base"] == 100.0  # sample 0 among base logits {0, 1}
    assert m["acc_within_new"] == pytest.approx(100 * 2 / 3)  # 1: 2 ok; 2: 3 ok; 3: 2 wrong
    b = binary_test(logits[[2, 3]], logits[[0, 1]], new_class=3)
    # positives: sample 2 top-1 is 3 (right), sample 3 top-1 is 2 (wrong); negatives both right
    assert b == {"pairs": 2, "binary_acc": 75.0, "pair_acc": 100.0}


def test_choose_classes_and_bad_specs():
    base, new = choose_classes(_spec(n_new=3, new_classes="last"), 12)
    assert new.tolist() == [9, 10, 11] and base.tolist() == list(range(9))
    base, new = choose_classes(_spec(n_new=3), 12)
    assert len(set(new) | set(base)) == 12 and len(new) == 3
    with pytest.raises(InvalidInputError, match="n_new"):
        choose_classes(_spec(n_new=11), 12)
    with pytest.raises(InvalidInputError, match="'n_new'"):
        spec_from_dict("newclasses", {"n_new": 0})
    with pytest.raises(InvalidInputError, match="'new_classes'"):
        spec_from_dict("newclasses", {"new_classes": "first"})
    with pytest.raises(InvalidInputError, match="'num_classes'.*|'n_new'"):
        spec_from_dict("newclasses", {"num_classes": 10, "n_new": 9})


def test_binary_test_renders_fresh_glyphs_of_the_new_class(tmp_path, tmp_path_factory):
    """On the glyph world the 500 positives are new renderings (the test split has 2 per class;
    negatives: 29 other classes × 2)."""
    from engine.ingest.data import GlyphDataset
    from engine.ingest.glyphs import GlyphConfig
    from engine.ingest.models import create_architecture

    small = GlyphConfig(train_per_class=2, val_per_class=1, test_per_class=2, ood_per_class=1)
    root = tmp_path_factory.getbasetemp() / "glyph-cache"  # shared with test_glyphs
    train, test = GlyphDataset("train", root, small), GlyphDataset("test", root, small)
    spec = NewClassesSpec(num_classes=30, n_new=1, epochs=1, w_epochs=2, batch_size=4, baseline=False,
                          binary_pairs=50, device="cpu")
    ctx = RunContext(cache=Cache(tmp_path / "cache"), run_dir=tmp_path / "run")
    report = json.loads(train_new_classes(spec, ctx, train, test,
                                          lambda n: create_architecture("glyph-cnn", n)).read_text())
    binary = report["metrics"]["ours"]["binary"]
    assert binary["pairs"] == 50 and binary["positives"] == "fresh images of the new class"
    new = train.class_names.index(report["new_classes"][0])
    fresh = test.render(new, 3, seed=7_777)
    assert (fresh.labels == new).all() and fresh.images.shape == (3, 1, 32, 32)
    assert not set(fresh.sample_ids) & set(test.sample_ids)
    seen = {bytes(img.numpy()) for img in (*train.images, *test.images)}
    assert not any(bytes(img.numpy()) in seen for img in fresh.images)  # new images, not copies
    assert np.array_equal(fresh.images, test.render(new, 3, seed=7_777).images)  # seeded
