"""Per-sample-centred logits on Explore and Compare (``?logits=centred``), beside the paper's raw
setting — what ``python -m engine dependencies --centred`` solves (:mod:`engine.core.centring`).

Softmax ignores a constant added to every logit of a sample, so each network's per-sample offset
is arbitrary; centring removes it (``f − mean_j f_j``). Nothing is prepared for it: the
centred Grams follow from the raw ones (a dense copy: 8 MB at 1,000 categories), and the page
solves the one target it shows — its best subsets, its α path and their Table 1 metrics on the
centred logits — when first asked (about a second at 1,000 categories), kept in memory. Above
:data:`MAX_CENTRED_K` categories the copy is too large for a page; the toggle says so and stays
off (the CLI still solves it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import streamlit as st

from dashboard.components import state
from dashboard.components.loaders import (
    _pairing,
    _stamp,
    load_sources_curve,
    load_target_path,
    load_top2,
)
from engine.core.analysis import Top2, dependency_metrics
from engine.core.centring import CentredLogits, centred_gramset, centred_top2
from engine.core.covlasso import SolverConfig
from engine.core.gram import GramSet
from engine.core.sparse import SparseColumns
from engine.stages.alpha_paths import DependencyPath, GridRule, PathSpec, solve_targets
from engine.stages.gramsets import load_gramset
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

RAW, CENTRED = "raw", "centred"
MAX_CENTRED_K = 5000  # a dense float64 copy of a K × K Gram: 200 MB here, 3.8 GB at 21,843
LABEL = "Centred logits"


def logits_ui(params: dict, k: int, *, key: str = "nde_centred") -> str:
    """The toggle between the paper's raw logits and per-sample-centred ones, restored from the
    link (``?logits=centred``; raw when absent). Returns RAW or CENTRED."""
    state.restore(key)
    if "logits" in params:
        wanted = params["logits"]
        if wanted in (RAW, CENTRED):
            st.session_state[key] = wanted == CENTRED
        else:
            state.warn(f"logits in the link must be {RAW} or {CENTRED}; got {wanted!r}. Showing raw logits.")
            st.session_state[key] = False
    too_big = k > MAX_CENTRED_K
    if too_big or not isinstance(st.session_state.get(key), bool):
        st.session_state[key] = False
    state.pin(key)
    value = st.toggle(
        LABEL, key=key, disabled=too_big,
        help=(f"Not offered above {MAX_CENTRED_K:,} categories (a dense copy of the Gram); the CLI solves it: "
              "`python -m engine dependencies --centred`.") if too_big else
             ("Each sample's mean logit removed before fitting and measuring (softmax ignores it, so every "
              "network's per-sample offset is arbitrary). Off: the paper's raw logits. Solved for this "
              "category when first shown (about a second), from the same Grams."))
    state.remember(key, value)
    return CENTRED if value else RAW


@dataclass(frozen=True)
class Side:
    """What :func:`dashboard.components.sources_ui.covlasso_view` reads of a store."""

    logits: object  # CentredLogits: columns on demand
    labels: np.ndarray


@dataclass(frozen=True)
class CentredPairing:
    gs: GramSet
    model: Side
    source: Side
    top2: Top2


@st.cache_resource(max_entries=4, show_spinner="Centring the Gram matrices (once)…")
def _centred(root: str, model: str, source: str, stamp: tuple) -> CentredPairing:
    cache, pairing = Cache(root), _pairing(root, model, source)
    raw = load_gramset(cache, pairing, compute=False)
    own = None if pairing.within else load_gramset(cache, _pairing(root, model, model), compute=False)
    gs = centred_gramset(raw, own)
    target_logits = CentredLogits(pairing.model.logits)
    source_logits = target_logits if pairing.within else CentredLogits(pairing.source.logits)
    top2 = centred_top2(load_top2(root, model), target_logits.means)
    return CentredPairing(gs, Side(target_logits, pairing.model.labels), Side(source_logits, pairing.model.labels),
                          top2)


def load_centred(root: str, model: str, source: str | None = None) -> CentredPairing:
    source = source or model
    return _centred(root, model, source, _stamp(root, model, source))


@st.cache_resource(max_entries=64, show_spinner="Solving this category's α path on centred logits (once)…")
def _path(root: str, model: str, source: str, target: int, stamp: tuple) -> DependencyPath:
    c = _centred(root, model, source, stamp)
    rule = GridRule()
    spec = PathSpec(_pairing(root, model, source), rule.alphas(c.gs.alpha_max), SolverConfig(), rule.max_sources)
    return solve_targets(Cache(root), spec, np.array([target]), gs=c.gs)


def load_centred_path(root: str, model: str, source: str | None, target: int) -> DependencyPath:
    """The target's CovLasso α path on centred logits (its own grid, from the centred α_max)."""
    source = source or model
    return _path(root, model, source, int(target), _stamp(root, model, source))


@st.cache_resource(max_entries=64, show_spinner="Finding this category's best few sources on centred logits (once)…")
def _curve(root: str, model: str, source: str, target: int, stamp: tuple) -> SourcesCurve:
    c = _centred(root, model, source, stamp)
    pairing = _pairing(root, model, source)
    M = max(1, min(DEFAULT_MAX_SOURCES, pairing.source.k - (1 if pairing.within else 0)))
    res = best_subsets_of(c.gs, M, None, [target])
    best = []
    for m in range(M):
        src, coef = strongest_first(*res.coef.column(m))
        col = np.zeros(pairing.source.k)
        col[src] = coef
        metrics = dependency_metrics(c.model.logits, c.source.logits, c.model.labels, target, col, c.top2)
        best.append(SparseFit(np.asarray(src), np.asarray(coef), metrics))
    path = _path(root, model, source, target, stamp)
    steps = path.alpha_indices(target)
    lasso = SparseColumns.concat([SparseColumns.from_dense(path.coef_vector(target, a)[:, None]) for a in steps]) \
        if len(steps) else SparseColumns.empty(0, pairing.source.k)
    relaxed = relaxed_fits(c.gs, lasso, np.full(len(steps), target))
    return SourcesCurve(model, source, pairing.within, target, np.arange(1, M + 1), tuple(best),
                        path.alphas[steps], lasso.support_sizes.astype(np.int64), path.r2_of(target).astype(float),
                        relaxed.coef.support_sizes.astype(np.int64),
                        r2_of_residuals(c.gs, np.full(len(steps), target), relaxed.residual))


def load_centred_curve(root: str, model: str, source: str | None, target: int) -> SourcesCurve:
    """The target's :class:`engine.stages.sparsity.SourcesCurve` on centred logits: best subsets
    (m = 1 … 8, Table 1 metrics on the centred logits), the Lasso and the relaxed Lasso."""
    source = source or model
    return _curve(root, model, source, int(target), _stamp(root, model, source))


def with_logits(report_json: str, logits: str) -> str:
    """A dependency JSON export with the CLI's ``"logits"`` field (raw or centred) added."""
    report = json.loads(report_json)
    report["logits"] = logits
    return json.dumps(report, indent=1)


def path_and_curve_loaders(logits: str):
    """The (α path, sources curve) loaders of a target for ``logits`` (RAW: the cache's stages;
    CENTRED: solved here for that target) — what Explore and Compare show."""
    if logits == CENTRED:
        return load_centred_path, load_centred_curve
    return load_target_path, load_sources_curve
