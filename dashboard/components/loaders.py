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

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from engine.apps.compare import CompareRequest, CompareView, compare_view
from engine.apps.explore import ExploreRequest, ExploreView, Memo, explore_view
from engine.core.gram import GramSet
from engine.ingest import class_images as images
from engine.stages.alpha_paths import (
    DependencyPath,
    PathProgress,
    PathSpec,
    path_progress,
    path_spec,
    read_all_paths,
)
from engine.stages.atlas import read_communities
from engine.stages.gramsets import load_gramset
from engine.stages.pairing import Pairing
from engine.stages.theory import (
    ScreeningPoint,
    StoreTheory,
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
def _read_screening(root: str, model: str, stamp: tuple, derived: int) -> list[ScreeningPoint] | None:
    return read_screening(cache_of(root), _spec(root, model, model, _stamp(root, model, model)))


@st.cache_resource(max_entries=16)
def _read_communities(root: str, model: str, alpha_index: int, top_k: int, min_coef: float, stamp: tuple,
                      derived: int) -> list[list[int]] | None:
    return read_communities(cache_of(root), _spec(root, model, model, _stamp(root, model, model)), alpha_index, top_k, min_coef)


# ----------------------------------------------------------------------------- per sample, images


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
