"""Classifier-like synthetic logits, for tests and benchmarks (never for the product's figures).

Real classifiers' logits are approximately low-rank (the penultimate layer has far fewer
dimensions than there are classes, plus a bias) and each sample's true class stands out.
This generator reproduces both: ``f(x) = W h(x) + ε`` with ``h`` of dimension ``rank`` and a
boost on the label's direction, so the logit Gram is nearly singular, as the paper observes.
"""

from __future__ import annotations

import numpy as np


def _weights(k: int, rank: int, seed: int):
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((k, rank)) / np.sqrt(rank)
    W = protos + 0.1 * rng.standard_normal((k, rank)) / np.sqrt(rank)
    return rng, protos, W


def classifier_like_logits(
    n: int, k: int, *, rank: int = 64, noise: float = 0.3, boost: float = 6.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Return (logits (n, k) float32, labels (n,) int64)."""
    rng, protos, W = _weights(k, rank, seed)
    labels = rng.integers(0, k, size=n)
    h = protos[labels] * boost + rng.standard_normal((n, rank)) * 0.8
    logits = h @ W.T + noise * rng.standard_normal((n, k))
    return logits.astype(np.float32), labels.astype(np.int64)


def classifier_like_gram(
    k: int, *, rank: int = 64, noise: float = 0.3, boost: float = 6.0, seed: int = 0
) -> np.ndarray:
    """The population Gram ``E[f fᵀ]`` of :func:`classifier_like_logits` (its N → ∞ limit).

    ``E[h hᵀ] = boost² · protosᵀprotos / k + 0.64 I`` (uniform labels), so
    ``E[f fᵀ] = W E[h hᵀ] Wᵀ + noise² I``: exact, and far cheaper than N·K² at large K.
    """
    _, protos, W = _weights(k, rank, seed)
    hh = boost**2 * (protos.T @ protos) / k + 0.64 * np.eye(rank)
    gram = W @ hh @ W.T
    gram[np.diag_indices(k)] += noise**2
    return gram
