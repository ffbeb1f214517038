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

import streamlit as st

from dashboard.components import state
from dashboard.components.loaders import (
    _pairing,
    _stamp,
    cache_of,
    load_sources_curve,
    load_target_path,
    load_top2,
)
from engine.stages.alpha_paths import DependencyPath
from engine.stages.centred import (  # noqa: F401  (Side, CentredPairing: what the loaders return)
    MAX_CENTRED_K,
    CentredPairing,
    Side,
    centred_curve,
    centred_pairing,
    centred_path,
)
from engine.stages.sparsity import SourcesCurve

RAW, CENTRED = "raw", "centred"
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
    return logits_toggle(st.session_state[key], not too_big, key=key)


def logits_toggle(centred: bool, allowed: bool = True, *, key: str = "nde_centred") -> str:
    """The raw/centred toggle showing ``centred`` (pinned); off and disabled when not ``allowed``
    (above :data:`MAX_CENTRED_K` categories). Returns RAW or CENTRED."""
    st.session_state[key] = centred
    too_big = not allowed
    value = st.toggle(
        LABEL, key=key, disabled=too_big,
        help=(f"Not offered above {MAX_CENTRED_K:,} categories (a dense copy of the Gram); the CLI solves it: "
              "`python -m engine dependencies --centred`.") if too_big else
             ("Each sample's mean logit removed before fitting and measuring (softmax ignores it, so every "
              "network's per-sample offset is arbitrary). Off: the paper's raw logits. Solved for this "
              "category when first shown (about a second), from the same Grams."))
    state.remember(key, value)
    return CENTRED if value else RAW


@st.cache_resource(max_entries=4, show_spinner="Centring the Gram matrices (once)…")
def _centred(root: str, model: str, source: str, stamp: tuple) -> CentredPairing:
    return centred_pairing(cache_of(root), _pairing(root, model, source), load_top2(root, model))


def load_centred(root: str, model: str, source: str | None = None) -> CentredPairing:
    source = source or model
    return _centred(root, model, source, _stamp(root, model, source))


@st.cache_resource(max_entries=64, show_spinner="Solving this category's α path on centred logits (once)…")
def _path(root: str, model: str, source: str, target: int, stamp: tuple) -> DependencyPath:
    return centred_path(cache_of(root), _pairing(root, model, source), _centred(root, model, source, stamp), target)


def load_centred_path(root: str, model: str, source: str | None, target: int) -> DependencyPath:
    """The target's CovLasso α path on centred logits (its own grid, from the centred α_max)."""
    source = source or model
    return _path(root, model, source, int(target), _stamp(root, model, source))


@st.cache_resource(max_entries=64, show_spinner="Finding this category's best few sources on centred logits (once)…")
def _curve(root: str, model: str, source: str, target: int, stamp: tuple) -> SourcesCurve:
    return centred_curve(_pairing(root, model, source), _centred(root, model, source, stamp),
                         _path(root, model, source, target, stamp), target)


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
