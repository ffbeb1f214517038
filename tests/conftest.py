"""Shared fixtures: small seeded logits and a cache in a temporary folder.

The suite runs offline: the Hugging Face Hub client is switched off before anything imports it,
and its cache is an empty folder of the session's own, so that neither the network nor weights
a developer downloaded earlier change a result. Tests of the download path start their own
processes against a local fake hub (tests/fake_hub.py).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
_HF_CACHE = tempfile.mkdtemp(prefix="nde-test-hf-")
os.environ["HF_HUB_CACHE"] = _HF_CACHE
atexit.register(shutil.rmtree, _HF_CACHE, True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from engine.core.synthetic import classifier_like_logits  # noqa: E402
from engine.storage.store import Cache  # noqa: E402


@pytest.fixture
def logits_small():
    """(logits (1500, 40) float32, labels) — classifier-like, nearly low-rank."""
    return classifier_like_logits(1500, 40, rank=12, seed=3)


@pytest.fixture
def cache(tmp_path) -> Cache:
    return Cache(tmp_path / "cache")


def gram_of(logits: np.ndarray) -> np.ndarray:
    f = logits.astype(np.float64)
    return f.T @ f / len(f)
