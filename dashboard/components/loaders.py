"""Cached access to the engine's stages: what a page shows is read, or solved for the one
target it shows; what covers every target is read if a job made it, never computed here.

Every loader is keyed by plain strings (cache root, store names, a target) plus the store
manifests' modification times (read once per script run: one run shows one state of the
stores), so a re-imported store is picked up by the next run and nothing hashes big arrays. Stores and Grams are memory maps: a 21,843-category Gram (3.8 GB) costs the server
the rows a solve touches. Engine errors propagate; pages show them with
:func:`dashboard.components.widgets.fail`.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from engine.apps import views
from engine.apps.compare import CompareRequest, CompareView, compare_view
from engine.apps.explore import ExploreRequest, ExploreView, Memo, explore_view
from engine.core.analysis import Top2
from engine.core.gram import GramSet
from engine.ingest import class_images as images
from engine.stages.alpha_paths import (
    DependencyPath,
    PathProgress,
    PathSpec,
    path_progress,
    path_spec,
    read_all_paths,
    target_paths,
)
from engine.stages.atlas import read_communities
from engine.stages.gramsets import load_gram_hint, load_gramset
from engine.stages.pairing import Pairing
from engine.stages.recommend import SOURCES_FIT_LOST, GramHint, Recommendation, recommend
from engine.stages.solutions import load_top2 as _cached_top2
from engine.stages.theory import (
    FloorMetrics,
    ScreeningPoint,
    StoreTheory,
    read_floor,
    read_redundancy,
    read_screening,
)
from engine.storage.layout import DEFAULT_CACHE
from engine.storage.store import Cache, LogitStore


def cache_root() -> str:
    """The cache this app shows: ``$NDE_CACHE`` or ./cache (the jobs page reads the same key)."""
    root = st.session_state.get("cache_dir") or os.environ.get("NDE_CACHE", str(DEFAULT_CACHE))
    st.session_state["cache_dir"] = root
    return str(root)


@functools.lru_cache(maxsize=8)
def cache_of(root: str) -> Cache:
    """The cache at ``root`` (one object per folder: a :class:`Cache` holds nothing but its root)."""
    return Cache(root)


def store_names(root: str) -> list[str]:
    return cache_of(root).store_names()


_RUN_STAMPS: dict[str, tuple[object, str, dict[str, int]]] = {}  # session → (its run, root, store → stamp)
_MAX_SESSIONS = 64


def _run_stamps(root: str) -> dict[str, int]:
    """This script run's table of store stamps: filled once per store per run, so a page's many
    loaders cost one look at the manifests, and everything a run shows comes from one state of
    the stores. A new run (a rerun, a fragment's run) starts a new table; outside a run
    (bare calls, tests) every call looks afresh."""
    ctx = get_script_run_ctx(suppress_warning=True)
    run = getattr(ctx, "parallel_coordinator", None)  # Streamlit makes a new one at the start of every run
    if run is None:
        return {}
    entry = _RUN_STAMPS.get(ctx.session_id)
    if entry is None or entry[0] is not run or entry[1] != root:
        while len(_RUN_STAMPS) >= _MAX_SESSIONS:  # sessions that ended
            del _RUN_STAMPS[next(iter(_RUN_STAMPS))]
        entry = _RUN_STAMPS[ctx.session_id] = (run, root, {})
    return entry[2]


def _stamp(root: str, *names: str | None) -> tuple:
    """Modification times of the stores' manifests: a changed store gets fresh cache entries
    (read once per store per script run: :func:`_run_stamps`)."""
    table = _run_stamps(root)
    missing = list(dict.fromkeys(n for n in names if n and n not in table))
    if missing:
        table.update(zip(missing, cache_of(root).store_stamps(missing)))
    return tuple(table[n] for n in names if n)


@st.cache_resource(max_entries=8, show_spinner="Reading the logit store…")
def _store(root: str, name: str, stamp: tuple) -> LogitStore:
    return cache_of(root).load_store(name)


def load_store(root: str, name: str) -> LogitStore:
    return _store(root, name, _stamp(root, name))


def _pairing(root: str, model: str, source: str) -> Pairing:
    m = load_store(root, model)
    return Pairing(m, m if source == model else load_store(root, source))


# ----------------------------------------------------------------------------- Grams


@st.cache_resource(max_entries=8, show_spinner="Reading the Gram matrices…")
def _gramset(root: str, model: str, source: str, stamp: tuple) -> GramSet | None:
    return load_gramset(cache_of(root), _pairing(root, model, source), compute=False)


def load_gramset_for(root: str, model: str, source: str | None = None) -> GramSet | None:
    """The pairing's Gram set, or None when no import, extraction or job made it yet."""
    source = source or model
    stamp = _stamp(root, model, source)
    found = _gramset(root, model, source, stamp)
    if found is None:  # do not remember the absence: a job may be writing it now
        _gramset.clear()
    return found


# ----------------------------------------------------------------------------- paths


@st.cache_resource(max_entries=16)
def _spec(root: str, model: str, source: str, stamp: tuple) -> PathSpec:
    cache = cache_of(root)
    return path_spec(cache, _pairing(root, model, source))


def load_spec(root: str, model: str, source: str | None = None) -> PathSpec:
    """The default α path's grid and key (needs the Gram set: check it first)."""
    source = source or model
    return _spec(root, model, source, _stamp(root, model, source))


@st.cache_resource(max_entries=128, show_spinner="Solving this category's α path (once; cached on disk)…")
def _target_path(root: str, model: str, source: str, target: int, stamp: tuple) -> DependencyPath:
    return target_paths(cache_of(root), _spec(root, model, source, stamp), [target])


def load_target_path(root: str, model: str, source: str | None, target: int) -> DependencyPath:
    """One target's α path: read (from its own entry or the all-target job's), or solved now
    for that target alone — the cost of one Lasso path on the Gram."""
    source = source or model
    return _target_path(root, model, source, int(target), _stamp(root, model, source))


def paths_status(root: str, model: str, source: str | None = None) -> PathProgress:
    """How much of every target's path exists (file checks only)."""
    return path_progress(cache_of(root), load_spec(root, model, source))


@st.cache_resource(max_entries=8, show_spinner="Reading every target's α path…")
def _all_paths(root: str, model: str, source: str, solved: int, stamp: tuple) -> DependencyPath | None:
    return read_all_paths(cache_of(root), _spec(root, model, source, stamp))


def load_all_paths(root: str, model: str, source: str | None = None) -> DependencyPath | None:
    """Every target's path as far as the ``paths`` job got (``complete`` says whether it is
    all of them), or None; never solves anything."""
    source = source or model
    status = paths_status(root, model, source)
    if status.solved == 0:
        return None
    return _all_paths(root, model, source, status.solved, _stamp(root, model, source))


@st.cache_resource(max_entries=8)
def _recommendation(root: str, model: str, source: str, solved: int, stamp: tuple) -> Recommendation | None:
    path = _all_paths(root, model, source, solved, stamp)
    return None if path is None else recommend(path)


def load_recommendation(root: str, model: str, source: str | None = None) -> Recommendation | None:
    """The recommended α of every target the ``paths`` job has solved (None before it ran):
    where the clear example the pages open on comes from. Never solves anything."""
    source = source or model
    if load_gramset_for(root, model, source) is None:
        return None
    status = paths_status(root, model, source)
    if status.solved == 0:
        return None
    return _recommendation(root, model, source, status.solved, _stamp(root, model, source))


@st.cache_resource(max_entries=8)
def _hint(root: str, model: str, source: str, stamp: tuple) -> GramHint | None:
    pairing = _pairing(root, model, source)
    return load_gram_hint(cache_of(root), pairing.source, None if pairing.within else pairing.model)


def load_hint(root: str, model: str, source: str | None = None) -> GramHint | None:
    """Where a page opens before the ``paths`` job ran: the best one- and two-source fits of
    every target from the Gram (cached with it; computed here only for a small Gram made
    before hints existed). Never solves anything."""
    source = source or model
    found = _hint(root, model, source, _stamp(root, model, source))
    if found is None:  # do not remember the absence: the warm-up or a job may write it now
        _hint.clear()
    return found


@st.cache_resource(max_entries=16)
def _at_alpha(root: str, model: str, source: str, solved: int, alpha_index: int, stamp: tuple):
    path = _all_paths(root, model, source, solved, stamp)
    return path.at_alpha(alpha_index)


def load_at_alpha(root: str, model: str, source: str | None, alpha_index: int):
    """The held targets' sparse coefficients at one α of the all-target path (cached)."""
    source = source or model
    status = paths_status(root, model, source)
    return _at_alpha(root, model, source, status.solved, alpha_index, _stamp(root, model, source))


# ----------------------------------------------------------------------------- job results


def load_theory(root: str, model: str) -> StoreTheory | None:
    return _read_theory(root, model, _stamp(root, model), _derived_stamp(root))


def load_floor(root: str, model: str, source: str) -> FloorMetrics | None:
    return _read_floor(root, model, source, _stamp(root, model, source), _derived_stamp(root))


def load_screening(root: str, model: str) -> list[ScreeningPoint] | None:
    return _read_screening(root, model, _stamp(root, model), _derived_stamp(root))


def load_communities(root: str, model: str, alpha_index: int, top_k: int, min_coef: float) -> list[list[int]] | None:
    return _read_communities(root, model, alpha_index, top_k, float(min_coef), _stamp(root, model),
                             _derived_stamp(root))


def _derived_stamp(root: str) -> int:
    """Changes when a job writes a derived result (the folder's modification time)."""
    return cache_of(root).derived_stamp()


@st.cache_resource(max_entries=8)
def _read_theory(root: str, model: str, stamp: tuple, derived: int) -> StoreTheory | None:
    return read_redundancy(cache_of(root), _pairing(root, model, model))


@st.cache_resource(max_entries=8)
def _read_floor(root: str, model: str, source: str, stamp: tuple, derived: int) -> FloorMetrics | None:
    return read_floor(cache_of(root), _pairing(root, model, source))


@st.cache_resource(max_entries=8)
def _read_screening(root: str, model: str, stamp: tuple, derived: int) -> list[ScreeningPoint] | None:
    return read_screening(cache_of(root), _spec(root, model, model, _stamp(root, model, model)))


@st.cache_resource(max_entries=16)
def _read_communities(root: str, model: str, alpha_index: int, top_k: int, min_coef: float, stamp: tuple,
                      derived: int) -> list[list[int]] | None:
    return read_communities(cache_of(root), _spec(root, model, model, _stamp(root, model, model)), alpha_index, top_k, min_coef)


# ----------------------------------------------------------------------------- per sample, images


@st.cache_resource(max_entries=8)
def _top2(root: str, model: str, stamp: tuple) -> Top2:
    return _cached_top2(cache_of(root), _store(root, model, stamp))


def load_top2(root: str, model: str) -> Top2:
    return _top2(root, model, _stamp(root, model))


@st.cache_resource(max_entries=8)
def _recognised(root: str, model: str, stamp: tuple) -> np.ndarray:
    store = _store(root, model, stamp)
    return views.recognised_categories(store.labels, _top2(root, model, stamp).pred, store.k)


def load_recognised(root: str, model: str) -> np.ndarray:
    """(K,) the categories ``model`` recognises (≥ 90 % of their samples): where pages may open."""
    return _recognised(root, model, _stamp(root, model))


@st.cache_resource(max_entries=8)
def _image_kind(root: str, model: str, stamp: tuple) -> str | None:
    store = _store(root, model, stamp)
    return images.class_image_source(store.manifest, store.class_names)


def class_images(root: str, model: str, indices) -> dict[int, bytes | None]:
    """PNG per class index where the dataset has images (glyphs: always), else None.

    The images themselves are memoised in :mod:`engine.ingest.class_images`, so a slider move costs a
    dictionary look-up per node.
    """
    stamp = _stamp(root, model)
    kind = _image_kind(root, model, stamp)
    if kind is None:
        return {int(i): None for i in indices}
    store = _store(root, model, stamp)
    return {int(i): images.class_image_png(store.manifest, store.class_names, int(i), kind=kind)
            for i in indices}



# ----------------------------------------------------------------------------- fewest sources (best subsets)


@st.cache_resource(max_entries=128, show_spinner="Finding this category's best few sources (once; cached on disk)…")
def _sources_curve(root: str, model: str, source: str, target: int, stamp: tuple):
    from engine.stages.sparsity import DEFAULT_MAX_SOURCES, sources_curve

    pairing = _pairing(root, model, source)
    allowed = pairing.source.k - (1 if pairing.within else 0)  # a store of a few categories has fewer
    return sources_curve(cache_of(root), pairing, target, max_sources=max(1, min(DEFAULT_MAX_SOURCES, allowed)))


def load_sources_curve(root: str, model: str, source: str | None, target: int):
    """One target's :class:`engine.stages.sparsity.SourcesCurve`: its best subsets (m = 1 … 8, Table 1
    metrics) and the Lasso's and relaxed Lasso's R² along its α path; read, or solved now for
    that target alone."""
    source = source or model
    return _sources_curve(root, model, source, int(target), _stamp(root, model, source))


def has_all_best_subsets(root: str, model: str, source: str | None = None) -> bool:
    """Whether the ``best-subsets`` job's result (every target, m ≤ 8) is cached (a file test)."""
    from engine.stages.sparsity import has_all_best_subsets as _has

    return _has(cache_of(root), _pairing(root, model, source or model))


@st.cache_resource(max_entries=8, show_spinner="Reading every target's best subsets…")
def _all_best_subsets(root: str, model: str, source: str, stamp: tuple):
    from engine.stages.sparsity import solve_best_subsets

    return solve_best_subsets(cache_of(root), _pairing(root, model, source))


def load_all_best_subsets(root: str, model: str, source: str | None = None):
    """Every target's best subsets (:class:`engine.core.bestsubset.BestSubsetResult`, m ≤ 8) when the
    ``best-subsets`` job made them, else None; never solves them here."""
    source = source or model
    if not has_all_best_subsets(root, model, source):
        return None
    return _all_best_subsets(root, model, source, _stamp(root, model, source))


@st.cache_resource(max_entries=8, show_spinner=False)
def _sparse_example(root: str, model: str, source: str, prefer_key: bytes, stamp: tuple) -> tuple[int, int] | None:
    from engine.stages.recommend import clear_sparse_example, recommend_sources
    from engine.stages.sparsity import subset_metrics

    result = _all_best_subsets(root, model, source, stamp)
    gs = load_gramset_for(root, model, source)
    if gs is None:
        return None
    rec = recommend_sources(result.residual, gs.target_sq, gs.target_mean)
    pairing = _pairing(root, model, source)
    prefer = np.frombuffer(prefer_key, dtype=bool) if prefer_key else None

    def keeps_accuracy(target: int, m: int) -> bool:
        (metrics,) = subset_metrics(cache_of(root), pairing, [target], result.select([target]).at(m))
        return metrics.ori_acc - metrics.acc <= SOURCES_FIT_LOST

    return clear_sparse_example(rec, keeps_accuracy, prefer)


def load_sparse_example(root: str, model: str, source: str | None = None,
                        prefer: np.ndarray | None = None) -> tuple[int, int] | None:
    """(target, m) where the pages open on the best-subset view: a category (``prefer`` first)
    that 2 … 4 sources fit at R² ≥ 0.95 with top-1 accuracy kept
    (:func:`engine.stages.recommend.clear_sparse_example`) — from the ``best-subsets`` job's result
    when it exists (cheap: read once, a few targets checked on the logits), else None."""
    source = source or model
    if not has_all_best_subsets(root, model, source):
        return None
    key = b"" if prefer is None else np.asarray(prefer, dtype=bool).tobytes()
    return _sparse_example(root, model, source, key, _stamp(root, model, source))


# ----------------------------------------------------------------------------- one target's card (issue 22)


@st.cache_data(max_entries=256, show_spinner=False)
def _target_card(root: str, model: str, source: str, target: int, method: str, m: int | None,
                 alpha_index: int | None, logits: str, stamp: tuple):
    """The card from the target's curve or path the page already holds (raw: the cached
    resources above, under the same stamp, so nothing is read or stat-ed twice; centred:
    :mod:`dashboard.components.centred`'s loaders)."""
    from engine.apps import cards

    mstore, sstore = _store(root, model, stamp[:1]), _store(root, source, stamp[1:])
    names = (model, source, mstore.class_names[target], sstore.class_names)
    centred = logits == "centred"  # solved in memory for this target by dashboard.components.centred
    if centred:
        from dashboard.components.centred import load_centred, load_centred_curve, load_centred_path

        c = load_centred(root, model, source)
        gs, sides = c.gs, (c.model, c.source, c.top2)
    else:
        gs, sides = _gramset(root, model, source, stamp), (mstore, sstore, _top2(root, model, stamp[:1]))
    covariance = None if gs is None else gs.rhs_columns([target])[:, 0]
    if method == cards.LASSO:
        path = load_centred_path(root, model, source, target) if centred else \
            _target_path(root, model, source, target, stamp)
        return cards.covlasso_card(*names, target, path, alpha_index, *sides, covariance)
    curve = load_centred_curve(root, model, source, target) if centred else \
        _sources_curve(root, model, source, target, stamp)
    return cards.best_subset_card(*names, target, curve, m, covariance)


def load_target_card(root: str, model: str, source: str | None, target: int, method: str, *,
                     m: int | None = None, alpha_index: int | None = None, logits: str = "raw"):
    """What a page shows of one target's dependency (:class:`engine.apps.cards.TargetCard`:
    sources, coefficients, Table 1 metrics, the table of sources, the formula), from one
    cached call (``method``: ``"best-subset"`` or ``"covlasso"``): the best subset with at most ``m`` sources, or the CovLasso at the
    ``alpha_index``-th α of the target's path — on raw logits (:func:`engine.apps.cards.target_card`
    reads the same from a cache) or ``"centred"`` ones (:mod:`dashboard.components.centred`)."""
    source = source or model
    return _target_card(root, model, source, int(target), method, None if m is None else int(m),
                        None if alpha_index is None else int(alpha_index), logits, _stamp(root, model, source))


# ----------------------------------------------------------------------------- the Explore page's view (issue 22)


@st.cache_resource(max_entries=8, show_spinner=False)
def _explore_memo(root: str) -> Memo:
    """What Explore's views read or solved in this process (one per cache; the stores' stamps key
    its entries, so a re-imported store is read afresh)."""
    return Memo()


def load_explore_view(root: str, request: ExploreRequest) -> ExploreView:
    """Everything the Explore page lays out, from one call (:func:`engine.apps.explore.explore_view`):
    the request resolved, the widgets' options, the target card, its charts' data, the images.
    Moving α or m re-reads nothing: the stores, the Gram, the target's path and curve are kept
    in memory (:func:`_explore_memo`)."""
    with st.spinner("Reading this view (a category's α path and best subsets are solved once, then cached)…"):
        return explore_view(root, request, _explore_memo(root))


def load_compare_view(root: str, request: CompareRequest) -> CompareView:
    """Everything the Compare page lays out, from one call (:func:`engine.apps.compare.compare_view`),
    with Explore's memo (each model's own paths and curves are shared)."""
    with st.spinner("Reading this comparison (a category's paths and best subsets are solved once, then cached)…"):
        return compare_view(root, request, _explore_memo(root))
