"""``*_ui`` helpers: each draws its widgets and returns plain values. Pages stay thin."""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import streamlit as st

from dashboard.components import state
from dashboard.components.loaders import cache_root, store_names
from dashboard.components.style import CSS
from engine.apps.controls import (  # noqa: F401  (alpha_digits, default_alpha: the Atlas page's α)
    PICKER_ALL,
    PREFERRED_MODELS,
    alpha_digits,
    default_alpha,
)
from engine.apps.controls import default_model as _default_model
from engine.core.analysis import DependencyMetrics
from engine.errors import EngineError
from engine.stages.recommend import FIT_R2

FILL_COMMAND = "python -m engine demo"


def page_header(title: str, caption: str) -> None:
    st.html(CSS)
    st.title(title)
    st.caption(caption)
    state.show_messages()


def formula_ui(formula: str) -> None:
    """The dependency as one line, large (class names escaped: they come from the store)."""
    st.markdown(f'<div class="nde-formula">{html.escape(formula)}</div>', unsafe_allow_html=True)


def view_caption(text: str, **view) -> None:
    """One line that says what the content below was computed from (model, target, α…), in
    words for the audience and as ``data-view`` JSON for the browser tests, which check that
    the widgets show the same values (bench/bench_desync.py)."""
    st.html(f'<div class="nde-view" data-view="{html.escape(json.dumps(view, ensure_ascii=False))}">'
            f"{html.escape(text)}</div>")


def fail(exc: Exception) -> None:
    """Show an engine error as a message (never a traceback) and stop the page."""
    st.error(str(exc), icon=":material/error:")
    st.stop()


def require_stores(names: list[str], root: str) -> None:
    if not names:
        st.info(
            f"The cache `{root}` holds no logit stores yet. Fill it with the embedded default "
            f"(a few minutes on a laptop CPU, no download):\n\n`{FILL_COMMAND}`\n\n"
            "or import logits computed elsewhere on the **Data** page.",
            icon=":material/inbox:",
        )
        st.stop()


@dataclass(frozen=True)
class StorePage:
    """What a page over the logit stores starts from (:func:`store_page`)."""

    root: str  # the cache
    names: list[str]  # its stores (never empty)
    params: dict[str, str]  # the link's query parameters, if they just arrived
    notes: object  # a slot under the header for what the link got wrong

    def publish(self, **values) -> None:
        """Write the page's state to the URL and show, under the header, what the link got wrong."""
        state.publish(**values)
        with self.notes:
            state.show_messages()


def store_page(title: str, caption: str) -> StorePage:
    """The opening of every page over the stores: the header, the stores (or the one command
    that makes some, and stop), the slot for the link's messages, the link's parameters."""
    root = cache_root()
    names = store_names(root)
    page_header(title, caption)
    require_stores(names, root)
    notes = st.container()
    return StorePage(root, names, state.incoming(), notes)


def model_ui(
    names: list[str],
    params: dict,
    *,
    key: str = "nde_model",
    param: str = "model",
    label: str = "Model",
    avoid: str | None = None,
    help: str | None = None,
) -> str:
    """A store picker in the sidebar, restored from the link (``?model=``) when given."""
    state.restore(key)
    if param in params:
        wanted = params[param]
        if wanted in names:
            st.session_state[key] = wanted
        else:
            fallback = st.session_state.get(key) if st.session_state.get(key) in names else \
                _default_model(names, avoid)
            state.warn(f"The link names a store {wanted!r} that is not in this cache; showing "
                       f"{fallback!r}. Known stores: {', '.join(names)}.")
            st.session_state[key] = fallback
    if st.session_state.get(key) not in names:
        st.session_state[key] = _default_model(names, avoid)
    return model_select(names, st.session_state[key], key=key, label=label, help=help)


def model_select(names: list[str], value: str, *, key: str = "nde_model", label: str = "Model",
                 help: str | None = None) -> str:
    """The store picker in the sidebar, showing ``value`` (pinned: :func:`state.pin`)."""
    st.session_state[key] = value
    value = st.sidebar.selectbox(label, names, key=key, help=help)
    state.remember(key, value)
    return value


def target_select(class_names: list[str], value: int, options: list[int] | None = None, *,
                  ids: list[str] | None = None, key: str = "nde_target", label: str = "Target category",
                  no_match: bool = False) -> int:
    """The target picker showing ``value`` (pinned); above :data:`PICKER_ALL` categories a search
    box first (``options``: its matches, ``value`` among them; ``no_match``: it matched nothing)."""
    st.session_state[key] = value
    if len(class_names) > PICKER_ALL:
        query = st.text_input(f"Search {len(class_names):,} categories", key=f"{key}_q",
                              placeholder="a name, a synset id (n01440764) or an index")
        state.remember(f"{key}_q", query)
        if query and no_match:
            st.caption(f"No category matches {query!r}.")
    value = st.selectbox(
        label, range(len(class_names)) if options is None else options, key=key,
        format_func=lambda i: f"{class_names[i]} · #{i}" + (f" · {ids[i]}" if ids else ""),
        help="Type to search the class names.",
    )
    state.remember(key, value)
    return int(value)


def alpha_slider(options: list[float], labels: list[str], value: float, amax: float, recommended: float | None,
                 paper: float | None, fit: str, digits: int, *, key: str = "nde_alpha") -> float:
    """The α slider over ``options`` (ascending, labelled ``labels``) showing ``value`` (pinned),
    with one click back to the recommended α (``fit``: its R² and sources, in words) and to the paper's."""
    st.session_state[key] = value
    label_of = dict(zip(options, labels))

    def label(a: float) -> str:
        return label_of.get(a) or f"{a:.{digits}g}"

    value = st.select_slider(
        f"α (L1 weight; log scale; α_max of this target = {amax:.3g})",
        options=options, key=key, format_func=label,
        help="Larger α: fewer sources. ★ recommended: the largest α whose dependency still explains "
             f"≥ {FIT_R2:.0%} of the logit's variance (R²). The paper uses 2.5 (ResNet, ViT) and 0.25 "
             "(Swin-T). Every value is an exact solution read from this category's cached α path (it stops "
             "where the dependency stops being sparse).",
    )
    _alpha_buttons(key, recommended, paper, value, fit, digits)
    state.remember(key, value)
    return float(value)


def _alpha_buttons(key: str, recommended: float | None, paper: float | None, value: float, fit: str,
                   digits: int) -> None:
    """One click back to the recommended α and to the paper's."""
    def go(alpha: float) -> None:
        st.session_state[key] = alpha

    left, right = st.columns(2)
    if recommended is not None:
        left.button(f"★ Recommended α = {recommended:.{digits}g}", key=f"{key}_rec", on_click=go,
                    args=(recommended,), disabled=value == recommended, width="stretch",
                    help=f"The largest α on the path whose dependency fits best for its sparsity ({fit}).")
    if paper is not None:
        right.button(f"Paper’s α = {paper:g}", key=f"{key}_paper", on_click=go, args=(paper,),
                     disabled=value == paper, width="stretch",
                     help="The α of the paper's Table 1 (2.5 for ResNet and ViT, 0.25 for Swin-T).")


def _fmt_pct(x: float) -> str:
    return "n/a" if np.isnan(x) else f"{x:.1f} %"


def table1_card(metrics: DependencyMetrics, key: str = "nde-table1") -> None:
    """The paper's Table 1 for this dependency, as metric tiles (``key``: the card's container,
    one per page; a second card on a page names another, starting with ``nde-table1``)."""
    with st.container(border=True, key=key):
        st.markdown("**Table 1** · the target’s logit replaced by its dependency")
        c1, c2, c5 = st.columns(3)
        c3, c4 = st.columns(2)
        c1.metric("Abs Err", f"{metrics.abs_err:.3f}", help="mean |f_t − θᵀf| over all samples")
        c2.metric("Rel Err", f"{metrics.rel_err:.2f} %", help="Abs Err / mean |f_t| (the paper's measure)")
        c5.metric("R²", "n/a" if np.isnan(metrics.r2) else f"{metrics.r2:.3f}",
                  help=metrics.r2_reason or "share of the logit's variance over the samples that the dependency "
                  "explains: 1 − Σ(f_t − θᵀf)² / Σ(f_t − mean f_t)². Unlike Rel Err it does not depend on "
                  "where the logit sits (softmax ignores a per-sample offset, so each network's is arbitrary)")
        c3.metric("Acc", _fmt_pct(metrics.acc), **_delta(metrics.acc, metrics.ori_acc),
                  help=f"top-1 over all samples; original: {_fmt_pct(metrics.ori_acc)}")
        c4.metric("Pos Acc", _fmt_pct(metrics.pos_acc), **_delta(metrics.pos_acc, metrics.ori_pos_acc),
                  help=f"top-1 on the {metrics.n_pos} samples of this class; original: "
                       f"{_fmt_pct(metrics.ori_pos_acc)}")
        st.caption(f"Ori. Acc {_fmt_pct(metrics.ori_acc)} · Ori. Pos Acc {_fmt_pct(metrics.ori_pos_acc)} · "
                   f"{metrics.n_pos} positive samples")


def _delta(value: float, original: float) -> dict:
    """``st.metric``'s delta against the original: red ↓ / green ↑ for a change, grey and no
    arrow for none (an accuracy kept to 0.1 pt is no change, never "↓ -0.0")."""
    if np.isnan(value) or np.isnan(original):
        return {}
    change = round(value - original, 1)
    if change == 0:
        return {"delta": "±0.0 pt vs Ori.", "delta_color": "off", "delta_arrow": "off"}
    return {"delta": f"{change:+.1f} pt vs Ori."}


def download_ui(label: str, data: bytes | str | Callable[[], bytes | str], file_name: str, mime: str,
                key: str, width: str = "stretch") -> None:
    st.download_button(label, data=data, file_name=file_name, mime=mime, key=key,
                       on_click="ignore", width=width, icon=":material/download:")


def guard(fn: Callable, *args, **kwargs):
    """Call an engine function; show its error (no traceback) and stop the page if it fails."""
    try:
        return fn(*args, **kwargs)
    except EngineError as exc:
        fail(exc)



def open_view(load: Callable, request):
    """A page's one call of this run: ``load(root, request)`` under :func:`guard`, the link's
    complaints warned, the page stopped when the cache has no store. Returns (root, view, a
    container for notes shown once the page is drawn)."""
    root = cache_root()
    view = guard(load, root, request)
    for message in view.messages:
        state.warn(message)
    require_stores(view.names, root)
    return root, view, st.container()

def paged_frame_ui(frame, key: str, page_size: int = 100, **dataframe_args) -> None:
    """A table shown ``page_size`` rows at a time (the browser never gets 21,843 rows)."""
    pages = max(1, -(-len(frame) // page_size))
    page = 1
    if pages > 1:
        page = int(st.number_input(f"Page (of {pages:,}; {len(frame):,} rows)", 1, pages, 1, key=key))
    part = frame.iloc[(page - 1) * page_size : page * page_size]
    st.dataframe(part, hide_index=True, width="stretch", **dataframe_args)


def paged_table_ui(frame, key: str, columns: list[tuple[str, str, str]], page_size: int = 100,
                   max_height: int = 420) -> None:
    """:func:`paged_frame_ui` as a plain HTML table (:func:`tables.frame_table_html`): names
    wrap instead of being cut, every column stays in view at any width."""
    from dashboard.components.tables import frame_table_html

    pages = max(1, -(-len(frame) // page_size))
    page = 1
    if pages > 1:
        page = int(st.number_input(f"Page (of {pages:,}; {len(frame):,} rows)", 1, pages, 1, key=key))
    st.html(frame_table_html(frame.iloc[(page - 1) * page_size : page * page_size], columns, max_height=max_height))
