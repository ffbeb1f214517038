"""The solution stage: a pairing's CovLasso solutions at one α (and each store's top-2 logits).

It reads what is cached, computes only what is missing — for the targets asked, not for every
target — and caches it under the hash of its inputs (store contents, α, solver settings). The
pairing is :mod:`engine.stages.pairing`, its Gram set :mod:`engine.stages.gramsets`, the α
paths :mod:`engine.stages.alpha_paths`; category parsing lives in :mod:`engine.core.categories`,
the CLI's report in :mod:`engine.apps.report`, the demo in :mod:`engine.commands.demo`.
"""

from __future__ import annotations

import logging

import numpy as np

from engine.core.analysis import Top2
from engine.core.covlasso import CovLassoResult, SolverConfig, check_alpha, solve_covlasso
from engine.core.covlasso_types import RESULT_ARRAYS
from engine.core.gram import GramSet
from engine.stages.gramsets import load_gramset
from engine.stages.pairing import Pairing
from engine.storage.derived import declare_derived
from engine.storage.store import Cache, LogitStore

log = logging.getLogger(__name__)

TOP2 = declare_derived("top2", ("idx1", "val1", "idx2", "val2"), doc="each sample's two largest logits, per store")
SOLUTION = declare_derived("solution", RESULT_ARRAYS, 2, "every target's CovLasso at one α")
SOLUTION_TARGETS = declare_derived("solution-targets", RESULT_ARRAYS, 2, "some targets' CovLasso at one α")


def load_top2(cache: Cache, store: LogitStore) -> Top2:
    """Each sample's two largest logits (what Acc and Pos Acc need), cached per store: a pass
    over every logit (a second at 21,843 categories) is paid once, at import or first use."""
    config = {"store": store.content_hash}
    hit = cache.load_derived(TOP2, config)
    if hit is not None:
        a = hit[0]
        return Top2(a["idx1"], a["val1"], a["idx2"], a["val2"], a["idx1"])
    return save_top2(cache, store, Top2.of(store.logits))


def save_top2(cache: Cache, store: LogitStore, top: Top2) -> Top2:
    """Cache ``top`` (computed by whoever holds the logits: the importer has them in memory)."""
    cache.save_derived(TOP2, {"store": store.content_hash},
                       {"idx1": top.idx1, "val1": top.val1, "idx2": top.idx2, "val2": top.val2},
                       {"store": store.name})
    return top


def targets_array(pairing: Pairing, targets) -> np.ndarray:
    """``targets`` as an int64 array, each checked against the pairing's categories."""
    from engine.errors import NotFoundError

    idx = np.asarray(targets, dtype=np.int64).reshape(-1)
    bad = idx[(idx < 0) | (idx >= pairing.model.k)]
    if bad.size:
        raise NotFoundError(f"target {int(bad[0])} is out of range [0, {pairing.model.k - 1}]")
    return idx


def solve_dependencies(
    cache: Cache, pairing: Pairing, alpha: float, config: SolverConfig | None = None, targets=None,
) -> CovLassoResult:
    """Solutions at ``alpha`` for ``targets`` (default: every target), in that order.

    Every target: cached as one entry. A subset: read from that entry when it exists, else
    solved for those targets alone (the cost of len(targets) Lasso problems on the Gram, not
    of K) and cached under the subset.
    """
    alpha = check_alpha(alpha)
    cfg = config or SolverConfig()
    base = {**pairing.key(), "alpha": alpha, "solver": cfg.key(), "layout": SOLUTION.version}
    every = cache.load_derived(SOLUTION, base)
    if targets is None:
        if every is None:
            with cache.lock(cache.derived_key(SOLUTION, base)):
                every = cache.load_derived(SOLUTION, base)
                if every is None:
                    res = _solve(cache, pairing, alpha, cfg, None)
                    cache.save_derived(SOLUTION, base, res.to_arrays(), pairing.names())
                    return res
        return CovLassoResult.from_arrays(every[0], pairing.source.k)
    idx = targets_array(pairing, targets)
    if every is not None:
        return CovLassoResult.from_arrays(every[0], pairing.source.k).select(idx)
    key = {**base, "targets": [int(t) for t in idx]}
    hit = cache.load_derived(SOLUTION_TARGETS, key)
    if hit is not None:
        return CovLassoResult.from_arrays(hit[0], pairing.source.k)
    res = _solve(cache, pairing, alpha, cfg, idx)
    cache.save_derived(SOLUTION_TARGETS, key, res.to_arrays(), pairing.names())
    return res


def _solve(cache: Cache, pairing: Pairing, alpha: float, cfg: SolverConfig, targets) -> CovLassoResult:
    if targets is None:
        log.info("solving all %d targets of %s at α = %g", pairing.model.k, pairing.model.name, alpha)
    return solve_gramset(load_gramset(cache, pairing), alpha, cfg, targets)


def solve_gramset(gs: GramSet, alpha: float, cfg: SolverConfig, targets=None) -> CovLassoResult:
    """The CovLasso at ``alpha`` on a Gram set, for every target or for ``targets`` alone (pure)."""
    if targets is None:
        return solve_covlasso(gs.design, gs.rhs, gs.target_sq, alpha, within=gs.within, config=cfg,
                              check_input=False, design_diag=gs.design_diag)
    return solve_covlasso(gs.design, gs.rhs_columns(targets), gs.target_sq[targets], alpha,
                          forbid=gs.forbid(targets), config=cfg, check_input=False, design_diag=gs.design_diag)
