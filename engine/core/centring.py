"""Per-sample-centred logits: an explicit option beside the paper's raw setting (pure).

Softmax ignores a constant added to every logit of a sample, so each model's per-sample
offset is arbitrary; a dependency between two models must otherwise rebuild the target
model's offset from the source model's logits. Centring removes it: ``f̃ = f − mean_j f_j``
per sample, i.e. ``f̃ = P f`` with ``P = I − 11ᵀ/K`` — and every Gram quantity the CovLasso
needs follows from the raw Grams, without a pass over the logits:

    E[g̃ f̃ᵀ] = P_B E[g fᵀ] P_A        (each Gram: minus its row and column means, plus its mean)
    E[g̃_t]  = E[g_t] − mean_t' E[g_t']

The raw setting stays the default everywhere (it is the paper's, and its α values); this is
reached by ``python -m engine dependencies --centred`` and :func:`centred_gramset`.
A centred design is a dense copy of the Gram (K² float64: 3.8 GB at 21,843 categories).
"""

from __future__ import annotations

import numpy as np

from engine.core.analysis import Top2
from engine.core.gram import GramSet

_ROWS = 2048  # rows of a memory-mapped Gram read at once


def centre_gram(gram: np.ndarray) -> np.ndarray:
    """``P_rows · gram · P_cols``: the Gram minus its row means and column means plus its mean
    (a new float64 array; ``gram`` may be a read-only memory map, read by blocks of rows)."""
    rows, cols = gram.shape
    out = np.empty((rows, cols), dtype=np.float64)
    for s in range(0, rows, _ROWS):
        out[s : s + _ROWS] = gram[s : s + _ROWS]
    row_mean = out.mean(axis=1)
    col_mean = out.mean(axis=0)
    out -= row_mean[:, None]
    out -= col_mean[None, :]
    out += row_mean.mean()
    return out


def centred_diagonal(gram: np.ndarray) -> np.ndarray:
    """The diagonal of :func:`centre_gram` of a square Gram, without the copy."""
    k = gram.shape[0]
    diag = np.empty(k)
    row_mean = np.empty(k)
    for s in range(0, k, _ROWS):
        block = np.asarray(gram[s : s + _ROWS], dtype=np.float64)
        row_mean[s : s + len(block)] = block.mean(axis=1)
        diag[s : s + len(block)] = block[np.arange(len(block)), np.arange(s, s + len(block))]
    return diag - 2 * row_mean + row_mean.mean()


def centred_gramset(gs: GramSet, target_model: GramSet | None = None) -> GramSet:
    """The Gram set of the same pairing on per-sample-centred logits.

    ``gs``: the pairing's raw set (within one model, or between two); ``target_model``: the
    target model's own (within) set, which a between-model pairing needs for its targets'
    ``E[g̃_t²]`` and means (ignored within one model)."""
    design = centre_gram(gs.design)
    if gs.within:
        return GramSet.of_model(design, gs.n, _centred_mean(gs.target_mean))
    if target_model is None or not target_model.within or target_model.n_sources != gs.n_targets:
        raise ValueError("a between-model pairing needs the target model's own Gram set to be centred")
    return GramSet.of_pair(design, centre_gram(gs.cross_t), centred_diagonal(target_model.design), gs.n,
                           _centred_mean(target_model.target_mean))


def _centred_mean(mean: np.ndarray) -> np.ndarray:
    """``E[f̃_t] = E[f_t] − mean_t' E[f_t']``."""
    mean = np.asarray(mean, dtype=np.float64)
    return mean - mean.mean()


def row_means(logits: np.ndarray, block_bytes: int = 64 << 20) -> np.ndarray:
    """Each sample's mean logit (float64), by blocks of rows of a possibly memory-mapped array."""
    n, k = logits.shape
    step = max(1, block_bytes // max(k * logits.dtype.itemsize, 1))
    out = np.empty(n)
    for s in range(0, n, step):
        out[s : s + step] = np.asarray(logits[s : s + step], dtype=np.float64).mean(axis=1)
    return out


class CentredLogits:
    """A read-only view of ``logits − row mean`` that builds only the columns asked for
    (``view[:, j]`` or ``view[:, idx]``): what :func:`engine.core.analysis.dependency_metrics` reads."""

    def __init__(self, logits: np.ndarray, means: np.ndarray | None = None):
        self.raw = logits
        self.means = row_means(logits) if means is None else means
        self.shape = logits.shape

    def __getitem__(self, key):
        rows, cols = key
        if rows != slice(None):
            raise IndexError("CentredLogits reads whole columns only: view[:, columns]")
        block = np.asarray(self.raw[:, cols], dtype=np.float64)
        return block - (self.means if block.ndim == 1 else self.means[:, None])


def centred_top2(top2: Top2, means: np.ndarray) -> Top2:
    """The two largest centred logits: the same categories, each value minus the row mean."""
    return Top2(top2.idx1, top2.val1 - means, top2.idx2, top2.val2 - means, top2.pred)
