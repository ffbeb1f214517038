"""The all-target jobs: a store's Gram, every target's path, every target's best subsets, the
Atlas's communities, the Theory page's eigendecompositions. Each is a thin runner over a cached stage; progress (with
an estimate of the time left where there are chunks) goes to the job table."""

from __future__ import annotations

import logging
from pathlib import Path

from engine.jobs.context import RunContext
from engine.jobs.kinds import spec_to_dict
from engine.jobs.specs import AtlasSpec, BestSubsetsSpec, GramSpec, PathsSpec, TheorySpec
from engine.storage.atomic import write_json_atomic

log = logging.getLogger(__name__)


def _report(ctx: RunContext, kind: str, spec, **body) -> Path:
    path = ctx.run_dir / f"report-{ctx.job_id or 'fg'}.json"
    write_json_atomic(path, {"kind": kind, "config": spec_to_dict(spec), **body})
    return path


def _pairing(ctx: RunContext, model: str, source: str):
    from engine.stages.pairing import open_pairing

    return open_pairing(ctx.cache, model, source or None)


def run_gram(spec: GramSpec, ctx: RunContext) -> Path:
    from engine.stages.gramsets import load_gramset

    pairing = _pairing(ctx, spec.model, spec.source)
    device = None if spec.device == "auto" else spec.device
    gs = load_gramset(ctx.cache, pairing, device=device, progress=ctx.progress)
    return _report(ctx, "gram", spec, n=gs.n, k=gs.n_sources)


def _scaled(ctx: RunContext, lo: float, hi: float):
    return lambda fraction, message: ctx.progress(lo + (hi - lo) * fraction, message)


def run_paths(spec: PathsSpec, ctx: RunContext) -> Path:
    from engine.core.covlasso import SolverConfig
    from engine.stages.alpha_paths import compute_all_paths, path_spec
    from engine.stages.theory import compute_screening, read_screening

    pairing = _pairing(ctx, spec.model, spec.source)
    pspec = path_spec(ctx.cache, pairing, config=SolverConfig(device=spec.device))  # the device is not in its key
    path = compute_all_paths(ctx.cache, pspec, progress=_scaled(ctx, 0.0, 0.95), chunk=spec.chunk)
    if read_screening(ctx.cache, pspec) is None:
        ctx.progress(0.95, "Conjecture 1 at every α, over every target")
        compute_screening(ctx.cache, pspec, path)
    return _report(ctx, "paths", spec, targets=int(len(path.targets)), alphas=int(len(path.alphas)))


def run_best_subsets(spec: BestSubsetsSpec, ctx: RunContext) -> Path:
    from engine.core.bestsubset import SubsetConfig
    from engine.stages.sparsity import compute_all_best_subsets

    pairing = _pairing(ctx, spec.model, spec.source)
    res = compute_all_best_subsets(ctx.cache, pairing, spec.max_sources, SubsetConfig(device=spec.device),
                                   progress=ctx.progress)
    return _report(ctx, "best-subsets", spec, targets=int(res.n_targets), max_sources=int(res.max_sources))


def run_atlas(spec: AtlasSpec, ctx: RunContext) -> Path:
    from engine.stages.alpha_paths import compute_all_paths, path_spec
    from engine.stages.atlas import compute_communities

    pairing = _pairing(ctx, spec.model, "")
    pspec = path_spec(ctx.cache, pairing)
    path = compute_all_paths(ctx.cache, pspec, progress=_scaled(ctx, 0.0, 0.9))
    a = path.nearest_alpha_index(spec.alpha)
    ctx.progress(0.9, f"communities at α = {path.alphas[a]:.4g}")
    found = compute_communities(ctx.cache, pspec, path, a, spec.top_k, spec.min_coef)
    return _report(ctx, "atlas", spec, alpha=float(path.alphas[a]), communities=len(found))


def run_theory(spec: TheorySpec, ctx: RunContext) -> Path:
    from engine.stages.theory import compute_floor, compute_redundancy

    pairing = _pairing(ctx, spec.model, spec.source)
    if pairing.within:
        theory = compute_redundancy(ctx.cache, pairing, ctx.progress)
        return _report(ctx, "theory", spec, rank=theory.redundancy.rank)
    floor = compute_floor(ctx.cache, pairing, ctx.progress)
    return _report(ctx, "theory", spec, rank=floor.rank)
