"""Shareable state: model(s), target and α live in the URL (``st.query_params``).

A page reads the link once when it changes (a link opened or pasted), validates every
parameter, and falls back with a message where one is wrong; after drawing its widgets it
writes the current values back, so the address bar is always a link to the current view.
Widget values also survive a switch to another page and back (``_keep_*`` mirrors).
"""

from __future__ import annotations

import math

import streamlit as st

from engine.core.categories import find_category

_LAST = "_nde_qp_written"
_MESSAGES = "_nde_messages"


def incoming() -> dict[str, str]:
    """Query parameters that arrived since this session last wrote them (else empty)."""
    current = {k: st.query_params.get(k) for k in st.query_params}
    if current == st.session_state.get(_LAST):
        return {}
    st.session_state[_LAST] = current
    return current


def publish(**values) -> None:
    """Write the page's state to the URL (None: left out)."""
    clean = {k: _text(v) for k, v in values.items() if v is not None}
    if {k: st.query_params.get(k) for k in st.query_params} != clean:
        st.query_params.from_dict(clean)
    st.session_state[_LAST] = clean


def _text(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def warn(message: str) -> None:
    """Queue a message about the link (shown once, at the top of the page)."""
    st.session_state.setdefault(_MESSAGES, []).append(message)


def show_messages() -> None:
    for message in st.session_state.pop(_MESSAGES, []):
        st.warning(message, icon=":material/link:")


def restore(key: str) -> None:
    """Put back a widget value that Streamlit dropped while another page was shown."""
    keep = f"_keep_{key}"
    if key not in st.session_state and keep in st.session_state:
        st.session_state[key] = st.session_state[keep]


def pin(key: str) -> None:
    """Hand the widget ``key`` its value in this run's message, whatever set it.

    Streamlit sends a keyed widget's value to the browser only in the run where the code set
    it (``set_value``); later runs send the element alone, and the browser keeps what it
    holds. When a second run supersedes the first before the browser has drawn it (a key
    press, a job's progress, a deep link opened while the page is busy), the browser never
    held the value and shows the widget's first option over content computed from another
    one. Re-assigning the value before the widget is drawn makes every run carry it, so the
    widget always shows the state the page was computed from.
    """
    if key in st.session_state:
        st.session_state[key] = st.session_state[key]


def remember(key: str, value) -> None:
    st.session_state[f"_keep_{key}"] = value


def parse_alpha(text: str) -> float | None:
    """α from the URL: a finite positive number, else None (with a message queued)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        warn(f"α in the link must be a positive number; got {text!r}. Showing the default α.")
        return None
    if not math.isfinite(value) or value <= 0:
        warn(f"α in the link must lie in (0, ∞); got {text!r}. Showing the default α.")
        return None
    return value


def parse_target(text: str, names: list[str], ids: list[str] | None = None) -> int | None:
    """A target from the URL (index, exact class name or unique first word, as the CLI takes
    it: :func:`engine.core.categories.find_category`), else None with a message."""
    found = find_category(names, text, ids)
    if isinstance(found, int):
        return found
    warn(f"{found[:1].upper()}{found[1:]} — the link's target; showing another target.")
    return None
