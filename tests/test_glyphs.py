"""The glyph world: deterministic for a seed, >= 1,000 distinct classes, readable names."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest

from engine.errors import InvalidInputError
from engine.ingest.glyphs import (
    FACE_FILES,
    SPLITS,
    GlyphConfig,
    GlyphSplits,
    font_dir,
    render_images,
)

SMALL = GlyphConfig(train_per_class=2, val_per_class=1, test_per_class=2, ood_per_class=1)


@pytest.fixture(scope="session")
def glyph_cache(tmp_path_factory):
    """One on-disk glyph cache for the whole test session (the world takes seconds to build)."""
    return tmp_path_factory.getbasetemp() / "glyph-cache"


@pytest.fixture(scope="module")
def splits(glyph_cache) -> GlyphSplits:
    return GlyphSplits(glyph_cache, SMALL)


def _independent_renderings(cps: list[int], size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Render with PIL directly at ``size`` (not the engine's 64→32 path): (faces, n, size²)."""
    from fontTools.ttLib import TTFont
    from PIL import Image, ImageDraw, ImageFont

    out = np.zeros((len(FACE_FILES), len(cps), size * size), np.float32)
    covered = np.zeros((len(FACE_FILES), len(cps)), bool)
    for f, name in enumerate(FACE_FILES):
        cmap = TTFont(font_dir() / name, lazy=True).getBestCmap()
        font = ImageFont.truetype(str(font_dir() / name), int(size * 0.62))
        for i, cp in enumerate(cps):
            if cp not in cmap:
                continue
            img = Image.new("L", (size, size), 0)
            ImageDraw.Draw(img).text((size / 2, size * 0.7), chr(cp), font=font, fill=255, anchor="ms")
            v = np.asarray(img, np.float32).ravel()
            out[f, i] = v / max(np.linalg.norm(v), 1e-6)
            covered[f, i] = True
    return out, covered


def test_world_has_1000_readable_classes_and_disjoint_ood(splits):
    meta = splits.meta()
    classes, ood = meta["class_codepoints"], meta["ood_codepoints"]
    assert len(classes) == 1000 == len(set(classes))
    assert len(ood) == 200 and not set(ood) & set(classes)
    names = splits.class_names("test")
    assert names[classes.index(ord("é"))] == "é LATIN SMALL LETTER E WITH ACUTE"
    for cp, name in zip(classes, names):
        assert name == f"{chr(cp)} {unicodedata.name(chr(cp))}"
    # every class is covered by >= 12 of the 16 faces (independent check with fontTools)
    from fontTools.ttLib import TTFont

    maps = [TTFont(font_dir() / n, lazy=True).getBestCmap() for n in FACE_FILES]
    assert min(sum(cp in m for m in maps) for cp in classes) >= 12


def test_identical_shapes_are_one_class(splits):
    classes = set(splits.meta()["class_codepoints"])
    # Latin / Greek / Cyrillic capitals A, B, E, H, O, P share one outline in these fonts
    for latin, greek, cyrillic in [("A", "Α", "А"), ("B", "Β", "В"), ("E", "Ε", "Е"), ("O", "Ο", "О")]:
        assert ord(latin) in classes
        assert ord(greek) not in classes and ord(cyrillic) not in classes
    # characters a person tells apart at a glance stay apart
    for ch in "eéèoO0Q":
        assert ord(ch) in classes


def test_classes_are_visually_distinct(splits):
    """No two classes render alike in every face they share (independent PIL rendering)."""
    cps = splits.meta()["class_codepoints"]
    vecs, covered = _independent_renderings(cps)
    sims = np.zeros((len(cps), len(cps)), np.float32)
    for f in range(len(FACE_FILES)):
        sims += vecs[f] @ vecs[f].T
    shared = covered.T.astype(np.float32) @ covered.astype(np.float32)
    mean_sim = sims / np.maximum(shared, 1)
    np.fill_diagonal(mean_sim, 0)
    i, j = np.unravel_index(np.argmax(mean_sim), mean_sim.shape)
    assert mean_sim[i, j] < 0.995, f"{chr(cps[i])!r} and {chr(cps[j])!r} look the same"


def test_rendering_is_deterministic_and_seeded(splits):
    world = splits.world
    owners = np.repeat(np.arange(0, 1000, 100), 3)
    a = render_images(world, owners, seed=7)
    b = render_images(world, owners, seed=7, batch=4)  # batch size must not matter
    c = render_images(world, owners, seed=8)
    assert a.dtype == np.uint8 and a.shape == (30, 32, 32)
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.3
    # images of one class vary (face, pose, weight, noise) but all carry ink
    assert (a[0] != a[1]).mean() > 0.3
    assert (a.reshape(30, -1).max(1) > 120).all()


def test_splits_are_cached_balanced_and_differ(splits, glyph_cache):
    imgs, labels, digest = splits.load("test")
    again, labels2, digest2 = GlyphSplits(glyph_cache, SMALL).load("test")  # from disk
    np.testing.assert_array_equal(imgs, again)
    assert digest == digest2
    assert np.bincount(labels).tolist() == [2] * 1000
    train, _, _ = splits.load("train")
    assert not np.array_equal(train, imgs)
    ood, ood_labels, _ = splits.load("ood")
    assert len(ood) == 200 and ood_labels.max() == 199
    assert set(SPLITS) == {"train", "val", "test", "ood"}


def test_bad_glyph_inputs(glyph_cache, splits):
    with pytest.raises(InvalidInputError, match="unknown glyph split 'tset'.*train, val, test, ood"):
        splits.load("tset")
    with pytest.raises(InvalidInputError, match="test_per_class must be >= 1"):
        GlyphSplits(glyph_cache, GlyphConfig(test_per_class=0))
