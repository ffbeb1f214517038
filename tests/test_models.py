"""Model registry: timm names, checkpoints (safetensors / weights-only .pth), clear errors."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from engine.errors import InvalidInputError, NotFoundError
from engine.ingest.models import (
    DEMO_MODELS,
    check_model_name,
    create_classifier,
    list_model_names,
    read_state_dict,
)


def _tiny(arch="resnet10t", k=5, seed=0):
    torch.manual_seed(seed)
    return timm.create_model(arch, pretrained=False, num_classes=k).eval()


def test_safetensors_checkpoint_gives_the_same_model(tmp_path):
    ref = _tiny()
    save_file(ref.state_dict(), tmp_path / "m.safetensors")
    loaded = create_classifier("resnet10t", checkpoint=tmp_path / "m.safetensors")
    assert loaded.num_classes == 5 and loaded.arch == "resnet10t" and len(loaded.checkpoint_sha256) == 64
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(x), ref(x), rtol=0, atol=0)


@pytest.mark.parametrize("arch, alias", [("nde_glyph_cnn", "glyph-cnn"), ("nde_glyph_resnet", None),
                                         ("nde_glyph_vit", None)])
def test_low_rank_glyph_head_round_trips_through_a_checkpoint(tmp_path, arch, alias):
    """A rank-8 head's checkpoint rebuilds the same model (rank and classes read off its weights),
    and its logits span at most 8 dimensions plus the bias."""
    torch.manual_seed(0)
    ref = timm.create_model(arch, pretrained=False, num_classes=12, rank=8).eval()
    save_file(ref.state_dict(), tmp_path / "m.safetensors")
    loaded = create_classifier(alias or arch, checkpoint=tmp_path / "m.safetensors")
    assert loaded.num_classes == 12
    x = torch.randn(40, 1, 32, 32)
    with torch.inference_mode():
        out = loaded.model(x)
        torch.testing.assert_close(out, ref(x), rtol=0, atol=0)
    sv = torch.linalg.svdvals((out - out.mean(0)).double())
    assert sv[8] < 1e-5 * sv[0]  # float32 rounding only beyond the 8th direction
    with pytest.raises(ValueError, match="rank must be an integer >= 0"):
        timm.create_model(arch, pretrained=False, rank=-1)
    features = timm.create_model(arch, pretrained=False, num_classes=0, rank=8).eval()  # timm's headless
    assert features(x[:2]).shape == (2, features.num_features)


def test_pth_checkpoint_wrapped_and_ddp_prefixed(tmp_path):
    ref = _tiny(k=7)
    state = {"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}, "epoch": 3}
    torch.save(state, tmp_path / "m.pth")
    loaded = create_classifier("resnet10t", checkpoint=tmp_path / "m.pth")
    assert loaded.num_classes == 7
    x = torch.randn(1, 3, 48, 48)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(x), ref(x), rtol=0, atol=0)


def test_demo_architectures_are_timm_models():
    assert {"glyph-vgg", "glyph-resnet", "glyph-vgg-seed2"} <= set(DEMO_MODELS)
    for demo in DEMO_MODELS.values():
        model = timm.create_model(demo.arch, num_classes=11, **demo.kwargs)
        cfg = timm.data.resolve_data_config(model=model)
        assert cfg["input_size"] == (1, 32, 32)
        assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 11)
    assert list_model_names()[:3] == ["glyph-vgg", "glyph-resnet", "glyph-vgg-seed2"]


def test_checkpoint_of_another_architecture_names_the_keys(tmp_path):
    save_file(_tiny("resnet18").state_dict(), tmp_path / "r18.safetensors")
    with pytest.raises(InvalidInputError, match=r"does not fit architecture 'resnet10t'.*(missing|unexpected): .*layer"):
        create_classifier("resnet10t", checkpoint=tmp_path / "r18.safetensors")
    state = _tiny().state_dict()
    state["conv1.0.weight"] = torch.zeros(24, 3, 5, 5)
    save_file(state, tmp_path / "bad_shape.safetensors")
    with pytest.raises(InvalidInputError, match=r"1 of the wrong shape: conv1.0.weight \(checkpoint \(24, 3, 5, 5\)"):
        create_classifier("resnet10t", checkpoint=tmp_path / "bad_shape.safetensors")


class NotATensor:
    pass


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"model": NotATensor()}, tmp_path / "evil.pth")
    with pytest.raises(InvalidInputError, match="weights_only=True"):
        read_state_dict(tmp_path / "evil.pth")
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(InvalidInputError, match="unknown format '.onnx'"):
        read_state_dict(tmp_path / "m.onnx")
    with pytest.raises(NotFoundError, match="does not exist"):
        read_state_dict(tmp_path / "missing.safetensors")


def test_unknown_names_list_valid_ones():
    with pytest.raises(NotFoundError, match=r"unknown model 'resnet5O'.*glyph-vgg, glyph-resnet, glyph-vgg-seed2"):
        create_classifier("resnet5O")
    with pytest.raises(NotFoundError, match=r"unknown pretrained tag 'resnet10t.nope'.*resnet10t.c3_in1k"):
        create_classifier("resnet10t.nope")


def test_unknown_names_say_the_nearest():
    with pytest.raises(NotFoundError, match=r"unknown model 'resnet5O'.*nearest names: resnet50\b"):
        create_classifier("resnet5O")
    with pytest.raises(NotFoundError, match=r"unknown model 'vit_smal_patch16_224'.*nearest names: vit_small_patch16_224"):
        check_model_name("vit_smal_patch16_224")
    with pytest.raises(NotFoundError, match=r"unknown pretrained tag 'resnet50.a1_inlk'; nearest: resnet50.a1_in1k"):
        check_model_name("resnet50.a1_inlk")
    assert check_model_name("resnet50.a1_inlk", checkpoint="any.safetensors") == "resnet50"
    assert check_model_name("glyph-cnn") == "nde_glyph_cnn"


def test_missing_pretrained_weights_say_how_to_get_them():
    """The suite is offline with an empty Hub cache (tests/conftest.py); tests/test_hub.py has
    the download path itself."""
    with pytest.raises(NotFoundError, match=r"not in the local cache and downloads are off.*--checkpoint FILE"):
        create_classifier("resnet10t.c3_in1k")
