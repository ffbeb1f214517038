"""``*_ui`` helpers: each draws its widgets and returns plain values. Pages stay thin."""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import streamlit as st

from dashboard.components import state
from dashboard.components.loaders import cache_root, store_names
from dashboard.components.style import CSS
from engine.analysis import DependencyMetrics
from engine.categories import search_categories
from engine.errors import EngineError
from engine.paths import DependencyPath
from engine.service import PAPER_ALPHAS

FILL_COMMAND = "python -m engine demo"
PREFERRED_MODELS = ("glyph-resnet", "glyph-vit")
# The demo opens on the design notes' example (O ≈ 0.36·"0" + 0.19·"C" + …); other stores on category 0.
PREFERRED_TARGETS = ("O LATIN CAPITAL LETTER O",)


FIRST_PAINT_DELAY_S = 0.5


def after_first_paint(key: str, draw: Callable[[], None], height: int, note: str = "Drawing the charts…") -> None:
    """Call ``draw`` — except on the session's first run of this page, where a placeholder of
    ``height`` pixels stands in and the browser asks for the real thing once it is idle.

    For heavy elements below the fold: the first vega-lite charts of a session cost the
    browser ~0.8 s of main-thread work, which would otherwise delay the graph at the top of
    the page. The request rides on a fragment's ``run_every`` timer, which the browser fires
    only when it is free; that first tick reruns the whole page, which then draws everything
    and defines no timer, so nothing keeps polling. Any rerun before the tick draws too.
    """
    drawn, ticks = f"_nde_drawn_{key}", f"_nde_ticks_{key}"
    if st.session_state.get(drawn):
        draw()
        return
    st.session_state[drawn] = True
    st.session_state[ticks] = 0

    @st.fragment(run_every=FIRST_PAINT_DELAY_S)
    def placeholder() -> None:
        st.session_state[ticks] = st.session_state.get(ticks, 0) + 1
        if st.session_state[ticks] > 1:  # the browser's first tick: the page above is drawn
            st.rerun()
        with st.container(height=height, border=False):
            st.caption(note)

    placeholder()


def page_header(title: str, caption: str) -> None:
    st.html(CSS)
    st.title(title)
    st.caption(caption)
    state.show_messages()


def formula_ui(formula: str) -> None:
    """The dependency as one line, large (class names escaped: they come from the store)."""
    st.markdown(f'<div class="nde-formula">{html.escape(formula)}</div>', unsafe_allow_html=True)


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


def _default_model(names: list[str], avoid: str | None = None) -> str:
    for name in (*PREFERRED_MODELS, *names):
        if name in names and name != avoid:
            return name
    return names[0]


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
    value = st.sidebar.selectbox(label, names, key=key, help=help)
    state.remember(key, value)
    return value


def _default_target(class_names: list[str]) -> int:
    return next((class_names.index(n) for n in PREFERRED_TARGETS if n in class_names), 0)


# Up to this many categories the picker lists them all (type to filter); above, a search box
# narrows the list first: a select box sends every option to the browser on every rerun.
PICKER_ALL = 2000
PICKER_MATCHES = 200  # options listed for a search


def target_ui(class_names: list[str], params: dict, *, key: str = "nde_target", label: str = "Target category",
              ids: list[str] | None = None) -> int:
    """A searchable picker of the target category: by name, index or dataset id (synset)."""
    state.restore(key)
    if "target" in params:
        parsed = state.parse_target(params["target"], class_names, ids)
        if parsed is not None:
            st.session_state[key] = parsed
    current = st.session_state.get(key)
    if not isinstance(current, int) or not 0 <= current < len(class_names):
        st.session_state[key] = current = _default_target(class_names)
    options: range | list[int] = range(len(class_names))
    if len(class_names) > PICKER_ALL:
        state.restore(f"{key}_q")
        query = st.text_input(f"Search {len(class_names):,} categories", key=f"{key}_q",
                              placeholder="a name, a synset id (n01440764) or an index")
        state.remember(f"{key}_q", query)
        found = search_categories(class_names, query, ids, limit=PICKER_MATCHES)
        options = found if current in found else [current, *found]
        if query and not found:
            st.caption(f"No category matches {query!r}.")
    value = st.selectbox(
        label, options, key=key,
        format_func=lambda i: f"{class_names[i]}  ·  #{i}" + (f"  ·  {ids[i]}" if ids else ""),
        help="Type to search the class names.",
    )
    state.remember(key, value)
    return int(value)


def alpha_options(path: DependencyPath, target: int) -> list[float]:
    """The α of the target's path below its α_max (above it θ = 0), ascending."""
    amax = path.alpha_max(target)
    return [float(a) for a in path.alphas[path.alpha_indices(target)][::-1] if a < amax]


def alpha_digits(options: list[float]) -> int:
    """Significant digits that tell every α of the grid apart (2.5 next to 2.4987…)."""
    for digits in range(3, 10):
        if len({f"{a:.{digits}g}" for a in options}) == len(options):
            return digits
    return 17


def default_alpha(options: list[float], amax: float) -> float:
    for paper in PAPER_ALPHAS:
        if paper in options:
            return paper
    return _nearest(options, amax / 10)


def _nearest(options: list[float], value: float) -> float:
    logs = np.log(np.asarray(options))
    return options[int(np.argmin(np.abs(logs - math.log(value))))]


def alpha_ui(path: DependencyPath, target: int, params: dict, *, key: str = "nde_alpha") -> tuple[float, int]:
    """α on a log-spaced slider over the cached path, bounded by the target's α_max.

    Returns (α, index into ``path.alphas``). Stops the page when the target has no α with a
    dependency on the grid.
    """
    amax = path.alpha_max(target)
    options = alpha_options(path, target)
    if not options:
        st.info(f"This category has no dependency on the α grid (α_max = {amax:.3g}): its logit is "
                "uncorrelated with every source. Pick another target.", icon=":material/block:")
        st.stop()
    state.restore(key)
    if "alpha" in params:
        wanted = state.parse_alpha(params["alpha"])
        if wanted is not None:
            if wanted >= amax:
                state.warn(f"α = {wanted:g} in the link is at or above this target's α_max = {amax:.4g} "
                           "(every coefficient is zero there); showing the largest α below it.")
                wanted = options[-1]
            st.session_state[key] = _nearest(options, wanted)
    current = st.session_state.get(key)
    if not isinstance(current, float) or current not in options:
        st.session_state[key] = (_nearest(options, current) if isinstance(current, float) and current > 0
                                 else default_alpha(options, amax))
    digits = alpha_digits(options)
    value = st.select_slider(
        f"α (L1 weight; log scale; α_max of this target = {amax:.3g})",
        options=options, key=key, format_func=lambda a: f"{a:.{digits}g}",
        help="Larger α: fewer sources. The paper uses 2.5 (ResNet, ViT) and 0.25 (Swin-T). "
             "Every value is an exact solution read from this category's cached α path (it stops "
             "where the dependency stops being sparse).",
    )
    state.remember(key, value)
    return float(value), path.nearest_alpha_index(value, target)


def _fmt_pct(x: float) -> str:
    return "n/a" if np.isnan(x) else f"{x:.1f} %"


def table1_card(metrics: DependencyMetrics) -> None:
    """The paper's Table 1 for this dependency, as metric tiles."""
    with st.container(border=True):
        st.markdown("**Table 1** · the target’s logit replaced by its dependency")
        c1, c2 = st.columns(2)
        c3, c4 = st.columns(2)
        c1.metric("Abs Err", f"{metrics.abs_err:.3f}", help="mean |f_t − θᵀf| over all samples")
        c2.metric("Rel Err", f"{metrics.rel_err:.2f} %", help="Abs Err / mean |f_t|")
        c3.metric("Acc", _fmt_pct(metrics.acc), delta=_delta(metrics.acc, metrics.ori_acc),
                  help=f"top-1 over all samples; original: {_fmt_pct(metrics.ori_acc)}")
        c4.metric("Pos Acc", _fmt_pct(metrics.pos_acc), delta=_delta(metrics.pos_acc, metrics.ori_pos_acc),
                  help=f"top-1 on the {metrics.n_pos} samples of this class; original: "
                       f"{_fmt_pct(metrics.ori_pos_acc)}")
        st.caption(f"Ori. Acc {_fmt_pct(metrics.ori_acc)} · Ori. Pos Acc {_fmt_pct(metrics.ori_pos_acc)} · "
                   f"{metrics.n_pos} positive samples")


def _delta(value: float, original: float) -> str | None:
    if np.isnan(value) or np.isnan(original):
        return None
    return f"{value - original:+.1f} pt vs Ori."


def download_ui(label: str, data: bytes | str | Callable[[], bytes | str], file_name: str, mime: str,
                key: str) -> None:
    st.download_button(label, data=data, file_name=file_name, mime=mime, key=key,
                       on_click="ignore", width="stretch", icon=":material/download:")


def guard(fn: Callable, *args, **kwargs):
    """Call an engine function; show its error (no traceback) and stop the page if it fails."""
    try:
        return fn(*args, **kwargs)
    except EngineError as exc:
        fail(exc)


def paged_frame_ui(frame, key: str, page_size: int = 100, **dataframe_args) -> None:
    """A table shown ``page_size`` rows at a time (the browser never gets 21,843 rows)."""
    pages = max(1, -(-len(frame) // page_size))
    page = 1
    if pages > 1:
        page = int(st.number_input(f"Page (of {pages:,}; {len(frame):,} rows)", 1, pages, 1, key=key))
    part = frame.iloc[(page - 1) * page_size : page * page_size]
    st.dataframe(part, hide_index=True, width="stretch", **dataframe_args)
