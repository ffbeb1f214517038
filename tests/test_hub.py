"""Pretrained weights: downloaded on first use (as timm does) unless offline; clear errors.

The download path runs in a process of its own pointed at a local fake hub (HF_ENDPOINT), the
way a user's machine points at the real one: never the network. The suite itself is offline
(tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save

from engine.errors import NotFoundError
from engine.ingest.hub import is_offline
from engine.ingest.models import create_classifier
from engine.storage.store import Cache
from tests.fake_hub import FakeHub

ROOT = Path(__file__).resolve().parents[1]
SERVED = "test_resnet.r160_in1k"  # a 373k-parameter timm test model with pretrained tags
OTHER = "test_efficientnet.r160_in1k"  # served too: only an offline run leaves it alone
MISSING = "test_vit.r160_in1k"  # not on the fake hub

# Four runs of the CLI in one process; the environment is read at each call, as a user's
# shell would set it before a command. Prints one JSON line per run: exit code and stderr.
_RUNS = r"""
import contextlib, io, json, os, sys
from engine.cli import main
cache, data, served, other, missing = sys.argv[1:6]
def run(model, name, *extra):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["--cache", cache, "extract", "--model", model, "--data", data, "--name", name,
                   "--workers", "0", "--no-progress", *extra])
    print(json.dumps({"rc": rc, "err": err.getvalue()[-2000:]}), flush=True)
run(served, "online")
run(served, "offline-flag", "--offline")
os.environ["HF_HUB_OFFLINE"] = "1"
run(other, "offline-env")
del os.environ["HF_HUB_OFFLINE"]
run(missing, "missing")
"""


def _weights(arch: str, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return timm.create_model(arch, num_classes=1000).state_dict()


@pytest.fixture(scope="module")
def thousand_classes(tmp_path_factory):
    """An ImageFolder with the 1,000 classes of an ImageNet head, images in the first two."""
    from tests.test_data import make_folder

    root = tmp_path_factory.mktemp("hub-data") / "d"
    make_folder(root, classes=("c0000", "c0001"), per_class=2, size=40)
    for c in range(2, 1000):
        (root / f"c{c:04d}").mkdir()
    return root


def test_weights_download_on_first_use_unless_offline(tmp_path, thousand_classes):
    served = _weights("test_resnet", 0)
    files = {f"timm/{SERVED}/model.safetensors": save(served),
             f"timm/{OTHER}/model.safetensors": save(_weights("test_efficientnet", 1))}
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    with FakeHub(files) as hub:
        env.update(HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(tmp_path / "hf"), NO_PROXY="127.0.0.1",
                   no_proxy="127.0.0.1", HF_HUB_DISABLE_TELEMETRY="1", PYTHONPATH=str(ROOT))
        proc = subprocess.run([sys.executable, "-c", _RUNS, str(tmp_path / "cache"), str(thousand_classes),
                               SERVED, OTHER, MISSING],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    runs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(runs) == 4, proc.stderr[-3000:]
    online, flag, env_off, missing = runs
    asked = lambda name: [p for _, p in hub.requests if f"/{name}/" in p]  # noqa: E731

    # 1. online: downloaded from the hub into the Hub cache, and these are the weights used
    assert online["rc"] == 0, online["err"]
    assert f"/timm/{SERVED}/resolve/main/model.safetensors" in hub.downloads()
    assert (tmp_path / "hf" / f"models--timm--{SERVED}").is_dir()
    cache = Cache(tmp_path / "cache")
    store = cache.load_store("online")
    model = timm.create_model(SERVED, pretrained=False).eval()
    model.load_state_dict(served)
    assert store.manifest["model_info"]["pretrained"] is True
    np.testing.assert_allclose(store.logits, _reference(model, thousand_classes), rtol=1e-4, atol=1e-4)
    # 2. --offline: the cached copy, and not one request
    assert flag["rc"] == 0, flag["err"]
    assert len(asked(SERVED)) == 2  # the first run's HEAD and GET only
    np.testing.assert_array_equal(cache.load_store("offline-flag").logits, store.logits)
    # 3. HF_HUB_OFFLINE=1 and not cached: today's clear error, and the hub never asked
    assert env_off["rc"] == 2 and asked(OTHER) == []
    assert "not in the local cache and downloads are off (HF_HUB_OFFLINE=1 or --offline" in env_off["err"]
    # 4. online, but the hub does not have them: said, with what to do
    assert missing["rc"] == 2 and asked(MISSING)
    assert "could not be downloaded" in missing["err"] and "--checkpoint FILE" in missing["err"]


def _reference(model, root: Path) -> np.ndarray:
    from PIL import Image

    from engine.ingest.data import ImageFolderDataset

    tf = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    ids = ImageFolderDataset(root).sample_ids
    with torch.inference_mode():
        return np.stack([model(tf(Image.open(root / p).convert("RGB"))[None])[0].numpy() for p in ids])


def test_the_suite_is_offline_and_says_so():
    assert is_offline() and is_offline(offline=True)
    with pytest.raises(NotFoundError, match=r"not in the local cache and downloads are off.*--checkpoint FILE"):
        create_classifier(SERVED)


def test_offline_weights_from_a_url_are_looked_for_in_torchs_cache(tmp_path, monkeypatch):
    """A few timm weights come from a URL through torch.hub, which has no offline switch."""
    url_only = [n for n in timm.list_pretrained("gcvit_xxtiny*")
                if not timm.models.get_pretrained_cfg(n).hf_hub_id]
    if not url_only:
        pytest.skip("this timm version serves every gcvit weight from the Hub")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(NotFoundError, match=r"downloads are off.*is not in torch's cache"):
        create_classifier(url_only[0])
