"""The model zoo: several models over one dataset in one command, every pairing prepared."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from engine.cli import main as cli_main
from engine.commands.demo import prepare_demo_dependencies
from engine.errors import InvalidInputError
from engine.ingest.data import ImageFolderDataset
from engine.ingest.models import check_model_name
from engine.ingest.presets import PRESETS, get_preset
from engine.jobs.context import RunContext
from engine.jobs.kinds import spec_from_dict
from engine.stages.gramsets import gram_config
from engine.storage.store import Cache
from tests.test_data import make_folder

K = 5
# three architectures with three data configs: 1×32×32 grey, 3×176×176 bicubic, 3×160×160 (mean 0.5)
ARCHS = {"glyph-resnet": "nde_glyph_resnet", "resnet10t": "resnet10t", "test_vit": "test_vit"}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo-ckpt")
    out = {}
    for seed, (name, arch) in enumerate(ARCHS.items()):
        torch.manual_seed(seed)
        out[name] = root / f"{name}.safetensors"
        save_file(timm.create_model(arch, num_classes=K).state_dict(), out[name])
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("zoo-data") / "d", classes=tuple("abcde"), per_class=4)


def _zoo_args(cache, folder, checkpoints, names=("za", "zb", "zc")) -> list[str]:
    return ["--cache", str(cache), "extract", "--model", *ARCHS, "--checkpoint",
            *map(str, checkpoints.values()), "--data", str(folder), "--name", *names,
            "--workers", "0", "--no-progress", "--chunk-size", "8"]


def _reference(name: str, checkpoint, folder) -> np.ndarray:
    """One image at a time through the model's own timm data config, built here."""
    import torchvision.transforms as T
    from PIL import Image
    from safetensors.torch import load_file

    model = timm.create_model(ARCHS[name], num_classes=K).eval()
    model.load_state_dict(load_file(checkpoint))
    cfg = timm.data.resolve_data_config(model=model)
    tf = timm.data.create_transform(**cfg)
    if cfg["input_size"][0] == 1:
        tf = T.Compose([T.Grayscale(1), tf])
    ds = ImageFolderDataset(folder)
    with torch.inference_mode():
        return np.stack([model(tf(Image.open(folder / p).convert("RGB"))[None])[0].numpy()
                         for p in ds.sample_ids])


def test_zoo_of_three_models_in_one_command(tmp_path, folder, checkpoints, capsys):
    cache = Cache(tmp_path)
    assert cli_main(_zoo_args(tmp_path, folder, checkpoints)) == 0
    out = capsys.readouterr().out
    stores = {n: cache.load_store(n) for n in ("za", "zb", "zc")}
    ids = ImageFolderDataset(folder).sample_ids
    for (name, ckpt), store in zip(checkpoints.items(), stores.values()):
        assert store.manifest["sample_ids"] == ids  # the dataset's order, for every model
        np.testing.assert_allclose(store.logits, _reference(name, ckpt, folder), rtol=1e-4, atol=1e-4)
    assert len({s.sample_fingerprint for s in stores.values()}) == 1
    sizes = {s.manifest["extract_config"]["data_config"] for s in stores.values()}
    assert len(sizes) == 3, "each model used its own data config"
    # the cross-Gram of every ordered pair, against numpy
    for s_name, t_name in [(a, b) for a in stores for b in stores if a != b]:
        s, t = stores[s_name], stores[t_name]
        hit = cache.load_derived("gram", gram_config(s, t))
        assert hit is not None, (s_name, t_name)
        f, g = s.logits.astype(np.float64), t.logits.astype(np.float64)
        np.testing.assert_allclose(hit[0]["cross_t"].T, f.T @ g / len(f), rtol=1e-10, atol=1e-10)
    # every pairing (3 within + 6 between) was prepared: asking again computes nothing
    pairs = [(a, b) for a in stores for b in stores if a != b]
    assert prepare_demo_dependencies(cache, list(stores), pairs, 2.5) is True
    assert out.count("dependencies ready:") == 9 and "zoo: 3 stores, 9 pairings" in out
    # the same command again: every store and pairing is a cache hit
    assert cli_main(_zoo_args(tmp_path, folder, checkpoints)) == 0
    assert capsys.readouterr().out.count("cache hit") == 3


def test_a_head_that_does_not_fit_is_said_before_any_forward_pass(tmp_path, folder, checkpoints, capsys):
    torch.manual_seed(5)
    seven = tmp_path / "seven.safetensors"
    save_file(timm.create_model("test_vit", num_classes=7).state_dict(), seven)
    ckpts = dict(checkpoints, test_vit=seven)
    assert cli_main(_zoo_args(tmp_path / "c", folder, ckpts)) == 2
    err = capsys.readouterr().err
    assert "has 5 classes but 'test_vit' has 7 outputs; nothing was computed" in err
    assert Cache(tmp_path / "c").store_names() == []  # not even the first model ran


def test_unknown_model_names_the_nearest_before_loading_anything(tmp_path, folder, capsys):
    args = ["--cache", str(tmp_path), "extract", "--model", "glyph-resnet", "resnet5O",
            "--data", str(folder)]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "unknown model 'resnet5O'" in err and "nearest names: resnet50" in err
    assert cli_main([*args[:4], "glyph-resnet", "resnet10t.c3_inlk", *args[6:]]) == 2
    assert "nearest: resnet10t.c3_in1k" in capsys.readouterr().err
    assert cli_main([*args[:4], "glyph-resnet", "glyph-vgg", *args[6:], "--name", "x"]) == 2
    assert "2 models but 1 store names" in capsys.readouterr().err


def test_the_papers_preset_names_valid_timm_weights():
    preset = get_preset("paper")
    assert [m.title for m in preset.members] == ["ResNet-18", "ResNet-50", "Swin-T", "ViT-S"]
    for m in preset.members:
        arch = check_model_name(m.model)
        assert timm.is_model(arch) and m.model in timm.list_pretrained(m.model)
        cfg = timm.models.get_pretrained_cfg(m.model)
        assert cfg.num_classes == 1000 and cfg.hf_hub_id  # ImageNet-1k heads, from the Hub
    assert {m.key: m.alpha for m in preset.members} == {
        "resnet18": 2.5, "resnet50": 2.5, "swin-t": 0.25, "vit-s": 2.5}  # the paper's appendix B
    with pytest.raises(Exception, match="unknown preset 'papr'; did you mean paper"):
        get_preset("papr")
    assert set(PRESETS) == {"paper"}


def test_the_zoo_job_reports_progress_per_model(tmp_path, folder, checkpoints):
    """The Data page's zoo job: the same run, its progress naming each model in turn."""
    from engine.jobs.kinds import check_spec_inputs
    from engine.jobs.zoo_job import run_job

    values = {"models": ["glyph-resnet", "test_vit"], "data": str(folder), "names": ["ja", "jb"],
              "checkpoints": [str(checkpoints["glyph-resnet"]), str(checkpoints["test_vit"])],
              "batch_size": 8}
    spec = spec_from_dict("zoo", values)
    check_spec_inputs("zoo", spec)
    seen: list[tuple[float, str]] = []
    ctx = RunContext(Cache(tmp_path), tmp_path / "run", progress=lambda f, m: seen.append((f, m)))
    report = json.loads(run_job(spec, ctx).read_text())
    assert report["stores"] == ["ja", "jb"] and len(report["pairings"]) == 4
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    messages = " | ".join(m for _, m in seen)
    assert "model 1/2 glyph-resnet → store ja" in messages and "model 2/2 test_vit → store jb" in messages
    assert "pairing 4/4" in messages
    with pytest.raises(InvalidInputError, match="'checkpoints'.*expected 2 entries"):
        spec_from_dict("zoo", {**values, "checkpoints": ["-"]})
    with pytest.raises(InvalidInputError, match="either models or a preset"):
        spec_from_dict("zoo", {**values, "preset": "paper"})
    with pytest.raises(InvalidInputError, match="'models' = 'resnet5O'.*nearest names: resnet50"):
        check_spec_inputs("zoo", spec_from_dict("zoo", {**values, "models": ["resnet5O", "test_vit"]}))
