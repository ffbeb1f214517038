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
from engine.stages.centred import (  # noqa: F401  (Side, CentredPairing: what the loaders return)
    MAX_CENTRED_K,
    CentredPairing,
    Side,
    centred_curve,
    centred_pairing,
    centred_path,
)

RAW, CENTRED = "raw", "centred"
LABEL = "Centred logits"


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


def with_logits(report_json: str, logits: str) -> str:
    """A dependency JSON export with the CLI's ``"logits"`` field (raw or centred) added."""
    report = json.loads(report_json)
    report["logits"] = logits
    return json.dumps(report, indent=1)
