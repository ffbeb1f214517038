"""Cached access to the engine: each store, Gram and α path is read once per server.

Every loader is keyed by plain strings (cache root, store names) plus the store manifests'
modification times, so a re-imported store is picked up and nothing hashes big arrays.
Engine errors propagate; pages show them with :func:`dashboard.components.widgets.fail`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import streamlit as st

from engine import views
from engine.analysis import LeastSquaresFloor, Redundancy, Top2, redundancy
from engine.recommend import Recommendation, recommend
from engine.service import DependencyPath, load_gramset, load_or_compute_path, open_pairing
from engine.store import Cache, LogitStore

DEFAULT_CACHE = "cache"


def cache_root() -> str:
    """The cache this app shows: ``$NDE_CACHE`` or ./cache (the jobs page reads the same key)."""
    root = st.session_state.get("cache_dir") or os.environ.get("NDE_CACHE", DEFAULT_CACHE)
    st.session_state["cache_dir"] = root
    return str(root)


def store_names(root: str) -> list[str]:
    return Cache(root).store_names()


def _stamp(root: str, *names: str | None) -> tuple:
    """Modification times of the stores' manifests: a changed store gets fresh cache entries."""
    out = []
    for name in names:
        if name:
            path = Path(root) / "stores" / f"{name}.json"
            out.append(path.stat().st_mtime_ns if path.exists() else 0)
    return tuple(out)


@st.cache_resource(max_entries=8, show_spinner="Reading the logit store…")
def _store(root: str, name: str, stamp: tuple) -> LogitStore:
    return Cache(root).load_store(name)


def load_store(root: str, name: str) -> LogitStore:
    return _store(root, name, _stamp(root, name))


@st.cache_resource(max_entries=8, show_spinner="Solving every target along the α path (once; cached on disk)…")
def _path(root: str, model: str, source: str, stamp: tuple) -> DependencyPath:
    cache = Cache(root)
    return load_or_compute_path(cache, open_pairing(cache, model, source))


def load_path(root: str, model: str, source: str | None = None) -> DependencyPath:
    source = source or model
    return _path(root, model, source, _stamp(root, model, source))


@st.cache_resource(max_entries=8)
def _recommendation(root: str, model: str, source: str, stamp: tuple) -> Recommendation:
    return recommend(_path(root, model, source, stamp))


def load_recommendation(root: str, model: str, source: str | None = None) -> Recommendation:
    """Every target's recommended α (the largest whose dependency fits) and the clear example."""
    source = source or model
    return _recommendation(root, model, source, _stamp(root, model, source))


@st.cache_resource(max_entries=8, show_spinner="Reading the Gram matrices…")
def _gramset(root: str, model: str, source: str, stamp: tuple):
    cache = Cache(root)
    return load_gramset(cache, open_pairing(cache, model, source))


def load_gramset_for(root: str, model: str, source: str | None = None):
    source = source or model
    return _gramset(root, model, source, _stamp(root, model, source))


@st.cache_resource(max_entries=4, show_spinner="Least-squares floor (eigendecomposition of the Gram)…")
def _ls_floor(root: str, model: str, source: str, stamp: tuple) -> LeastSquaresFloor:
    gs = _gramset(root, model, source, stamp)
    return LeastSquaresFloor(gs.design, gs.rhs)


def load_ls_floor(root: str, model: str, source: str) -> LeastSquaresFloor:
    """The dense least-squares fit of ``model``'s categories from all of ``source``'s logits."""
    return _ls_floor(root, model, source, _stamp(root, model, source))


@st.cache_resource(max_entries=8)
def _top2(root: str, model: str, stamp: tuple) -> Top2:
    return Top2.of(_store(root, model, stamp).logits)


def load_top2(root: str, model: str) -> Top2:
    return _top2(root, model, _stamp(root, model))


@st.cache_resource(max_entries=8, show_spinner="Computing redundancy (eigendecomposition of the Gram)…")
def _redundancy(root: str, model: str, stamp: tuple) -> Redundancy:
    eps = float(np.finfo(_store(root, model, stamp).logits.dtype).eps)  # float16 stores: a coarser floor
    return redundancy(_gramset(root, model, model, stamp).design, data_eps=eps)


def load_redundancy(root: str, model: str) -> Redundancy:
    return _redundancy(root, model, _stamp(root, model))


@st.cache_resource(max_entries=8, show_spinner="Checking Conjecture 1 at every α of the path…")
def _screening(root: str, model: str, source: str, stamp: tuple) -> list[views.ScreeningPoint]:
    path = _path(root, model, source, stamp)
    gs = _gramset(root, model, source, stamp)
    return views.screening_curve(path, gs.rhs)


def load_screening(root: str, model: str, source: str | None = None) -> list[views.ScreeningPoint]:
    source = source or model
    return _screening(root, model, source, _stamp(root, model, source))


@st.cache_resource(max_entries=8)
def _spectrum(root: str, model: str, stamp: tuple) -> np.ndarray:
    return views.gram_spectrum(_gramset(root, model, model, stamp).design)


def load_spectrum(root: str, model: str) -> np.ndarray:
    return _spectrum(root, model, _stamp(root, model))


@st.cache_resource(max_entries=16)
def _coef_matrix(root: str, model: str, source: str, alpha_index: int, stamp: tuple) -> np.ndarray:
    return _path(root, model, source, stamp).coef_matrix(alpha_index)


def load_coef_matrix(root: str, model: str, source: str | None, alpha_index: int) -> np.ndarray:
    """Dense (P, T) coefficients at one α of the path (cached: the Atlas reuses it)."""
    source = source or model
    return _coef_matrix(root, model, source, alpha_index, _stamp(root, model, source))


@st.cache_resource(max_entries=8)
def _image_kind(root: str, model: str, stamp: tuple) -> str | None:
    store = _store(root, model, stamp)
    return views.class_image_source(store.manifest, store.class_names)


def class_images(root: str, model: str, indices) -> dict[int, bytes | None]:
    """PNG per class index where the dataset has images (glyphs: always), else None.

    The images themselves are memoised in :mod:`engine.views`, so a slider move costs a
    dictionary look-up per node.
    """
    stamp = _stamp(root, model)
    kind = _image_kind(root, model, stamp)
    if kind is None:
        return {int(i): None for i in indices}
    store = _store(root, model, stamp)
    return {int(i): views.class_image_png(store.manifest, store.class_names, int(i), kind=kind)
            for i in indices}
