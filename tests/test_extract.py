"""Extraction: logits equal a direct forward pass; resume, shards, bad images, full disk."""

from __future__ import annotations

import errno
import io
import os
import socket

import numpy as np
import pytest
import timm
import torch
import torch.multiprocessing as mp
from safetensors.torch import save_file

from engine.cli import main as cli_main
from engine.errors import EngineError, InvalidInputError
from engine.ingest.data import GlyphDataset, ImageFolderDataset
from engine.ingest.extract import extract_logits
from engine.ingest.glyphs import GlyphConfig
from engine.ingest.models import create_classifier
from engine.stages.gramsets import gram_config
from engine.storage.store import Cache
from tests.test_data import make_folder

K = 5


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random-initialised 5-class glyph ResNet (cheap: 1×32×32 inputs)."""
    torch.manual_seed(0)
    model = timm.create_model("nde_glyph_resnet", num_classes=K)
    path = tmp_path_factory.mktemp("ckpt") / "glyph5.safetensors"
    save_file(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("data") / "d", classes=tuple("abcde"), per_class=6)


def _model(checkpoint):
    return create_classifier("glyph-resnet", checkpoint=checkpoint)


def _reference_logits(model, folder_ds: ImageFolderDataset) -> np.ndarray:
    """One image at a time, with the transform built here from timm's data config."""
    import torchvision.transforms as T
    from PIL import Image

    cfg = timm.data.resolve_data_config(model=model)
    tf = T.Compose([T.Grayscale(1), timm.data.create_transform(**cfg)])
    out = []
    with torch.inference_mode():
        for rel in folder_ds.sample_ids:
            img = Image.open(folder_ds.root / rel).convert("RGB")
            out.append(model(tf(img)[None])[0].numpy())
    return np.stack(out)


def test_logits_equal_a_direct_forward_pass(tmp_path, checkpoint, folder):
    loaded = _model(checkpoint)
    ds = ImageFolderDataset(folder)
    store, stats = extract_logits(Cache(tmp_path), loaded, ds, "folder", batch_size=7, workers=0,
                                  chunk_size=8, progress=False)
    ref = _reference_logits(loaded.model, ds)
    np.testing.assert_allclose(store.logits, ref, rtol=1e-5, atol=1e-5)
    assert store.labels.tolist() == ds.labels.tolist()
    assert store.class_names == list("abcde") and stats.skipped == 0
    m = store.manifest
    assert m["model_info"]["checkpoint_sha256"] == loaded.checkpoint_sha256
    assert m["dataset_info"]["fingerprint"] == ds.fingerprint()
    assert m["sample_ids"] == ds.sample_ids and "Grayscale" in m["transform"]
    # the Gram was written in the same pass: E[f fᵀ] of the reference logits
    hit = Cache(tmp_path).load_derived("gram", gram_config(store, None))
    f = ref.astype(np.float64)
    np.testing.assert_allclose(hit[0]["design"], f.T @ f / len(f), rtol=1e-5, atol=1e-6)
    assert not (tmp_path / "partial").exists() or not any((tmp_path / "partial").iterdir())


def test_tensor_dataset_and_a_generic_timm_model(tmp_path, tmp_path_factory, checkpoint, folder):
    cfg = GlyphConfig(train_per_class=1, val_per_class=1, test_per_class=1, ood_per_class=1)
    glyph_root = tmp_path_factory.getbasetemp() / "glyph-cache"  # shared with test_glyphs
    ds = GlyphDataset("test", glyph_root, cfg)
    torch.manual_seed(1)
    model = timm.create_model("nde_glyph_resnet", num_classes=1000)
    save_file(model.state_dict(), tmp_path / "g1000.safetensors")
    loaded = create_classifier("glyph-resnet", checkpoint=tmp_path / "g1000.safetensors")
    store, _ = extract_logits(Cache(tmp_path / "c"), loaded, ds, "g", batch_size=300, progress=False)
    x = (ds.images[:400].float() / 255 - 0.5) / 0.5
    with torch.inference_mode():
        ref = loaded.model(x).numpy()
    np.testing.assert_allclose(store.logits[:400], ref, rtol=1e-5, atol=1e-5)
    # a stock timm architecture with its own (RGB, 176 px) data config on the folder
    torch.manual_seed(2)
    r10 = timm.create_model("resnet10t", num_classes=K)
    save_file(r10.state_dict(), tmp_path / "r10.safetensors")
    loaded = create_classifier("resnet10t", checkpoint=tmp_path / "r10.safetensors")
    small = ImageFolderDataset(folder)
    small.sample_ids, small.labels = small.sample_ids[::6], small.labels[::6]
    store, _ = extract_logits(Cache(tmp_path / "c"), loaded, small, "r10", workers=0, progress=False)
    cfg = timm.data.resolve_data_config(model=loaded.model)
    tf = timm.data.create_transform(**cfg)
    from PIL import Image

    with torch.inference_mode():
        ref = np.stack([loaded.model(tf(Image.open(folder / p).convert("RGB"))[None])[0].numpy()
                        for p in small.sample_ids])
    np.testing.assert_allclose(store.logits, ref, rtol=1e-4, atol=1e-4)


class _Interrupt(Exception):
    pass


def test_resume_after_an_interruption_gives_the_identical_store(tmp_path, checkpoint, folder):
    ds = ImageFolderDataset(folder)
    ref, _ = extract_logits(Cache(tmp_path / "ref"), _model(checkpoint), ds, "s", batch_size=5,
                            workers=0, chunk_size=8, progress=False)
    cache = Cache(tmp_path / "run")

    def stop_after_two(c: int) -> None:
        if c == 1:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        extract_logits(cache, _model(checkpoint), ds, "s", batch_size=5, workers=0, chunk_size=8,
                       progress=False, on_chunk=stop_after_two)
    assert cache.store_names() == []
    assert len(list((cache.root / "partial").glob("*/chunk-*.safetensors"))) == 2
    store, stats = extract_logits(cache, _model(checkpoint), ds, "s", batch_size=5, workers=0,
                                  chunk_size=8, progress=False)
    assert stats.chunks_resumed == 2 and stats.chunks_computed == 2
    assert store.content_hash == ref.content_hash
    assert store.sample_fingerprint == ref.sample_fingerprint
    g_ref = Cache(tmp_path / "ref").load_derived("gram", gram_config(ref, None))[0]["design"]
    g_run = cache.load_derived("gram", gram_config(store, None))[0]["design"]
    np.testing.assert_array_equal(g_ref, g_run)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shard_worker(rank: int, world: int, port: int, cache_root: str, ckpt: str, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        extract_logits(Cache(cache_root), create_classifier("glyph-resnet", checkpoint=ckpt),
                       ImageFolderDataset(folder), "sharded", batch_size=4, workers=0, chunk_size=4,
                       progress=False)
    finally:
        torch.distributed.destroy_process_group()


def test_sharded_extraction_equals_the_single_process_store(tmp_path, checkpoint, folder):
    ds = ImageFolderDataset(folder)
    single, _ = extract_logits(Cache(tmp_path / "one"), _model(checkpoint), ds, "sharded",
                               batch_size=4, workers=0, chunk_size=4, progress=False)
    mp.spawn(_shard_worker, args=(2, _free_port(), str(tmp_path / "two"), str(checkpoint), str(folder)),
             nprocs=2, join=True)
    cache = Cache(tmp_path / "two")
    sharded = cache.load_store("sharded")
    assert sharded.content_hash == single.content_hash
    assert sharded.manifest["sample_ids"] == ds.sample_ids
    g_one = Cache(tmp_path / "one").load_derived("gram", gram_config(single, None))[0]["design"]
    np.testing.assert_array_equal(cache.load_derived("gram", gram_config(sharded, None))[0]["design"], g_one)


def test_unreadable_images_are_skipped_and_counted(tmp_path, checkpoint, folder):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(folder, root)
    (root / "b" / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    data = (root / "c" / "img0.png").read_bytes()
    (root / "c" / "img0.png").write_bytes(data[: len(data) // 3])
    ds = ImageFolderDataset(root)
    store, stats = extract_logits(Cache(tmp_path / "c"), _model(checkpoint), ds, "s", batch_size=4,
                                  workers=1, chunk_size=8, progress=False)
    assert stats.skipped == 2 and store.n == len(ds) - 2
    info = store.manifest["dataset_info"]
    assert info["n_skipped"] == 2 and sorted(info["skipped_ids"]) == ["b/zz-broken.png", "c/img0.png"]
    assert "c/img0.png" not in store.manifest["sample_ids"]
    good = ImageFolderDataset(folder)  # the same good images, in the same order
    ref = _reference_logits(_model(checkpoint).model, good)
    keep = [i for i, p in enumerate(good.sample_ids) if p != "c/img0.png"]
    np.testing.assert_allclose(store.logits, ref[keep], rtol=1e-5, atol=1e-5)


def test_class_count_must_match_the_head(tmp_path, checkpoint):
    ds = ImageFolderDataset(make_folder(tmp_path / "three", classes=("a", "b", "c"), per_class=1))
    with pytest.raises(InvalidInputError, match="has 5 outputs but dataset .* has 3 classes"):
        extract_logits(Cache(tmp_path), _model(checkpoint), ds, "s", progress=False)


def test_nothing_readable_is_an_error(tmp_path, checkpoint):
    root = tmp_path / "bad"
    for c in "abcde":
        (root / c).mkdir(parents=True)
        (root / c / "x.jpg").write_bytes(b"nope")
    with pytest.raises(InvalidInputError, match="none of the 5 images"):
        extract_logits(Cache(tmp_path), _model(checkpoint), ImageFolderDataset(root), "s",
                       workers=0, progress=False)


def test_full_disk_leaves_no_half_store_and_resumes(tmp_path, checkpoint, folder, monkeypatch):
    import engine.storage.objects

    cache = Cache(tmp_path)
    real = engine.storage.objects.save_file

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(engine.storage.objects, "save_file", no_space)
    with pytest.raises(EngineError, match="disk full while writing store 's'.*run the same command"):
        extract_logits(cache, _model(checkpoint), ImageFolderDataset(folder), "s", workers=0,
                       chunk_size=8, progress=False)
    assert cache.store_names() == []
    assert not list((tmp_path / "objects").glob("*.safetensors"))
    monkeypatch.setattr(engine.storage.objects, "save_file", real)
    store, stats = extract_logits(cache, _model(checkpoint), ImageFolderDataset(folder), "s",
                                  workers=0, chunk_size=8, progress=False)
    assert stats.chunks_computed == 0 and stats.chunks_resumed == 4 and store.n == 30


def test_cli_extract(tmp_path, checkpoint, folder, capsys):
    args = ["--cache", str(tmp_path), "extract", "--model", "glyph-resnet", "--checkpoint",
            str(checkpoint), "--data", str(folder), "--name", "cli", "--workers", "0", "--no-progress"]
    assert cli_main(args) == 0
    assert "store cli: 30 samples x 5 categories" in capsys.readouterr().out
    assert cli_main(args) == 0  # the same command again: nothing to compute
    assert "cache hit" in capsys.readouterr().out
    torch.manual_seed(9)
    other = tmp_path / "other.safetensors"
    save_file(timm.create_model("nde_glyph_resnet", num_classes=K).state_dict(), other)
    args[args.index(str(checkpoint))] = str(other)
    assert cli_main(args) == 2  # other logits under an existing name: refused before computing
    assert "already exists with other logits" in capsys.readouterr().err
    assert cli_main([*args, "--overwrite"]) == 0
    assert cli_main(["--cache", str(tmp_path), "extract", "--model", "resnet5O", "--data",
                     str(folder), "--name", "x"]) == 2
    assert "unknown model 'resnet5O'" in capsys.readouterr().err
    assert cli_main(["--cache", str(tmp_path), "extract", "--model", "glyph-resnet", "--data",
                     "imagenett", "--name", "x"]) == 2
    assert "unknown dataset 'imagenett'" in capsys.readouterr().err


def test_store_records_where_class_images_are(tmp_path, checkpoint, capsys):
    """ImageNet-style synset folders: the store's readable class names differ from the folder
    names, yet the dashboard's sample image of each class is that class folder's first image."""
    from PIL import Image

    from engine.ingest import class_images

    synsets = ("n01440764", "n01443537", "n01484850", "n01491361", "n01494475")
    root = make_folder(tmp_path / "val", classes=synsets, per_class=2)
    store, _ = extract_logits(Cache(tmp_path / "c"), _model(checkpoint), ImageFolderDataset(root),
                              "synsets", workers=0, progress=False)
    assert store.class_names[:2] == ["tench", "goldfish"]
    assert class_images.class_image_source(store.manifest, store.class_names) == "folder"
    for i, synset in enumerate(synsets):
        png = class_images.class_image_png(store.manifest, store.class_names, i, size=64)
        shown = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        first = Image.open(root / synset / "img0.png").convert("RGB")
        first.thumbnail((64, 64))
        assert np.array_equal(shown, np.asarray(first)), synset
    assert cli_main(["--cache", str(tmp_path / "c"), "stores"]) == 0
    assert "glyph-resnet" in capsys.readouterr().out.splitlines()[1]
