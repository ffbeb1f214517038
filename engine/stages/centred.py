"""Per-sample-centred logits for one target (``?logits=centred`` on Explore and Compare): the
centred Gram set of a pairing, and one target's α path and sources curve solved on it.

Nothing is prepared for it: the centred Grams follow from the raw ones (a dense copy: 8 MB at
1,000 categories, :func:`engine.core.centring.centred_gramset`), and a page solves the one target
it shows when first asked (about a second at 1,000 categories); the caller keeps the results in
memory. Above :data:`MAX_CENTRED_K` categories the copy is too large for a page (the CLI's
``dependencies --centred`` still solves it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.core.analysis import Top2, dependency_metrics
from engine.core.centring import CentredLogits, centred_gramset, centred_top2
from engine.core.covlasso import SolverConfig
from engine.core.gram import GramSet
from engine.core.sparse import SparseColumns
from engine.stages.alpha_paths import DependencyPath, GridRule, PathSpec, solve_targets
from engine.stages.gramsets import load_gramset
from engine.stages.pairing import Pairing
from engine.stages.sparsity import (
    DEFAULT_MAX_SOURCES,
    SourcesCurve,
    SparseFit,
    best_subsets_of,
    r2_of_residuals,
    relaxed_fits,
    strongest_first,
)
from engine.storage.store import Cache

MAX_CENTRED_K = 5000  # a dense float64 copy of a K × K Gram: 200 MB here, 3.8 GB at 21,843


@dataclass(frozen=True)
class Side:
    """What a Table 1 card reads of a store: its logits (centred: columns on demand), its labels."""

    logits: object  # CentredLogits
    labels: np.ndarray


@dataclass(frozen=True)
class CentredPairing:
    """A pairing's Gram set and logits with each sample's mean logit removed."""

    gs: GramSet
    model: Side
    source: Side
    top2: Top2


def centred_pairing(cache: Cache, pairing: Pairing, top2: Top2) -> CentredPairing:
    """The centred Gram set of ``pairing`` (from its raw one; between two models also the
    model's own) and its centred logits; ``top2``: the model's raw top-2 (centred here)."""
    raw = load_gramset(cache, pairing, compute=False)
    own = None if pairing.within else load_gramset(cache, Pairing(pairing.model, pairing.model), compute=False)
    gs = centred_gramset(raw, own)
    target_logits = CentredLogits(pairing.model.logits)
    source_logits = target_logits if pairing.within else CentredLogits(pairing.source.logits)
    return CentredPairing(gs, Side(target_logits, pairing.model.labels), Side(source_logits, pairing.model.labels),
                          centred_top2(top2, target_logits.means))


def centred_path(cache: Cache, pairing: Pairing, centred: CentredPairing, target: int) -> DependencyPath:
    """The target's CovLasso α path on centred logits (its own grid, from the centred α_max)."""
    rule = GridRule()
    spec = PathSpec(pairing, rule.alphas(centred.gs.alpha_max), SolverConfig(), rule.max_sources)
    return solve_targets(cache, spec, np.array([int(target)]), gs=centred.gs)


def centred_curve(pairing: Pairing, centred: CentredPairing, path: DependencyPath, target: int) -> SourcesCurve:
    """The target's sources curve on centred logits: best subsets (m = 1 … 8, Table 1 metrics on
    the centred logits), and the Lasso and the relaxed Lasso along ``path`` (its centred α path)."""
    c = centred
    M = max(1, min(DEFAULT_MAX_SOURCES, pairing.source.k - (1 if pairing.within else 0)))
    res = best_subsets_of(c.gs, M, None, [target])
    best = []
    for m in range(M):
        src, coef = strongest_first(*res.coef.column(m))
        col = np.zeros(pairing.source.k)
        col[src] = coef
        metrics = dependency_metrics(c.model.logits, c.source.logits, c.model.labels, target, col, c.top2)
        best.append(SparseFit(np.asarray(src), np.asarray(coef), metrics))
    steps = path.alpha_indices(target)
    lasso = SparseColumns.concat([SparseColumns.from_dense(path.coef_vector(target, a)[:, None]) for a in steps]) \
        if len(steps) else SparseColumns.empty(0, pairing.source.k)
    relaxed = relaxed_fits(c.gs, lasso, np.full(len(steps), target))
    return SourcesCurve(pairing.model.name, pairing.source.name, pairing.within, target, np.arange(1, M + 1),
                        tuple(best), path.alphas[steps], lasso.support_sizes.astype(np.int64),
                        path.r2_of(target).astype(float), relaxed.coef.support_sizes.astype(np.int64),
                        r2_of_residuals(c.gs, np.full(len(steps), target), relaxed.residual))
