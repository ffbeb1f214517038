"""Classifier-like synthetic logits, for tests and benchmarks (never for the product's figures).

Real classifiers' logits are approximately low-rank (the penultimate layer has far fewer
dimensions than there are classes, plus a bias) and each sample's true class stands out.
This generator reproduces both: ``f(x) = W h(x) + ε`` with ``h`` of dimension ``rank`` and a
boost on the label's logit, so the logit Gram is nearly singular, as the paper observes.
"""

from __future__ import annotations

import numpy as np


def classifier_like_logits(
    n: int, k: int, *, rank: int = 64, noise: float = 0.3, boost: float = 6.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Return (logits (n, k) float32, labels (n,) int64)."""
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((k, rank)) / np.sqrt(rank)
    labels = rng.integers(0, k, size=n)
    h = protos[labels] * boost + rng.standard_normal((n, rank)) * 0.8
    W = protos + 0.1 * rng.standard_normal((k, rank)) / np.sqrt(rank)
    logits = h @ W.T + noise * rng.standard_normal((n, k))
    return logits.astype(np.float32), labels.astype(np.int64)
