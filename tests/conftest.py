"""Shared fixtures: small seeded logits and a cache in a temporary folder."""

from __future__ import annotations

import numpy as np
import pytest

from engine.store import Cache
from engine.synthetic import classifier_like_logits


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
