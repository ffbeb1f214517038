"""Dataset registry: ImageFolder scanning, ImageNet names, bad folders and images, glyphs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from engine.errors import InvalidInputError, NotFoundError
from engine.ingest.data import (
    ImageFolderDataset,
    collate_skipping,
    create_dataset,
    imagenet_class_names,
    imagenet_readable_names,
    imagenet_subset,
)


def make_folder(root, classes=("cat", "dog", "eel"), per_class=3, size=24, seed=0):
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"img{i}.png")
    return root


def test_imagefolder_order_labels_and_ids(tmp_path):
    root = make_folder(tmp_path / "data", classes=("b", "a", "c"), per_class=2)
    (root / "a" / "notes.txt").write_text("not an image")
    ds = ImageFolderDataset(root)
    assert ds.class_names == ["a", "b", "c"]
    assert ds.sample_ids == ["a/img0.png", "a/img1.png", "b/img0.png", "b/img1.png", "c/img0.png", "c/img1.png"]
    assert ds.labels.tolist() == [0, 0, 1, 1, 2, 2]
    image, label, index = ds[3]
    assert image.size == (28, 24) and label == 1 and index == 3
    assert ds.fingerprint() == ImageFolderDataset(root).fingerprint()
    (root / "c" / "img1.png").write_bytes(b"changed size")
    assert ds.fingerprint() != ImageFolderDataset(root).fingerprint()


def test_split_subfolder_is_used(tmp_path):
    make_folder(tmp_path / "imagenet" / "val", classes=("x", "y"), per_class=1)
    ds = create_dataset(str(tmp_path / "imagenet"), "val")
    assert ds.class_names == ["x", "y"] and len(ds) == 2


def test_imagenet_synsets_get_readable_names(tmp_path):
    assert imagenet_readable_names(["n01440764", "n01443537"]) == ["tench", "goldfish"]
    assert imagenet_readable_names(["n01440764", "cat"]) is None
    root = make_folder(tmp_path / "val", classes=("n01443537", "n01440764"), per_class=1)
    assert ImageFolderDataset(root).class_names == ["tench", "goldfish"]


def test_imagenet_12k_and_22k_synsets_and_heads_get_names():
    # beyond ImageNet-1k: a 12k synset, then one only in 21k/22k ("organism, being")
    assert imagenet_subset(["n01440764", "n00007846"]) == "imagenet-12k"
    assert imagenet_readable_names(["n01440764", "n00007846", "n00004475"]) == ["tench", "person", "organism"]
    assert imagenet_subset(["n99999999"]) is None and imagenet_readable_names(["n99999999"]) is None
    # a first lemma shared by two synsets keeps them apart
    assert imagenet_readable_names(["n02012849", "n03126707"]) == ["crane (n02012849)", "crane (n03126707)"]
    names = imagenet_class_names(1000)
    assert (names[88], names[107], names[132], names[333]) == ("macaw", "jellyfish", "American egret", "hamster")
    assert len(set(names)) == 1000
    assert len(imagenet_class_names(11821)) == 11821 and len(imagenet_class_names(21843)) == 21843
    assert imagenet_class_names(5) is None


def test_unreadable_and_truncated_images_are_marked_not_raised(tmp_path):
    root = make_folder(tmp_path / "d", per_class=2)
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    good = (root / "cat" / "img0.png").read_bytes()
    (root / "cat" / "img0.png").write_bytes(good[: len(good) // 2])  # truncated
    ds = ImageFolderDataset(root)
    items = [ds[i] for i in range(len(ds))]
    bad = [ds.sample_ids[i] for i, (img, _, _) in enumerate(items) if img is None]
    assert sorted(bad) == ["cat/img0.png", "dog/broken.jpg"]
    ds.transform = lambda im: torch.zeros(3, 4, 4)
    images, labels, indices, skipped = collate_skipping([ds[i] for i in range(len(ds))])
    assert images.shape == (5, 3, 4, 4) and len(skipped) == 2
    assert sorted(ds.sample_ids[i] for i in skipped) == bad
    assert indices.tolist() == [i for i in range(7) if i not in skipped]


def test_bad_dataset_inputs(tmp_path):
    with pytest.raises(NotFoundError, match=r"unknown dataset 'imagenett'.*glyphs.*ImageFolder"):
        create_dataset("imagenett")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "cat" / "readme.txt").write_text("x")
    with pytest.raises(InvalidInputError, match="1 class folders but no images"):
        create_dataset(str(tmp_path / "empty"))
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(InvalidInputError, match="no class sub-folders"):
        create_dataset(str(tmp_path / "flat"))
