"""The fewest sources that fit (issue 25): the method picker, the "sources" control, the chart
of R² against the number of sources, and the view of a best-subset dependency.

Two ways to show a dependency, recorded in the URL as ``?method=``:

* ``best-subset`` (the default): the best dependency with at most m sources, m = 1 … 8
  (:mod:`engine.stages.sparsity`, least squares on the best few sources); ``?m=`` records m;
* ``covlasso``: the paper's CovLasso at α (``?alpha=``), one click away. A link with an α and
  no method (made before the method existed) opens the CovLasso view.

Every widget here is keyed by the URL's state and pinned (its value re-assigned before it is
drawn), so it shows exactly the state the content was computed from.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from dashboard.components import charts, state
from dashboard.components.widgets import alpha_slider
from engine.apps.controls import SourcesChart
from engine.stages.sparsity import FIT_LOST, FIT_R2

BEST = "best-subset"
LASSO = "covlasso"
METHODS = (BEST, LASSO)
METHOD_LABELS = {BEST: "Fewest sources (best subset)", LASSO: "Paper’s method: CovLasso at α"}
MAX_M = 8
POS_ACC_NOTE = 5.0  # points of Pos Acc lost above which the card says so in words




def method_ui(params: dict, *, key: str = "nde_method", default: str = BEST) -> str:
    """Best subset or the paper's CovLasso, restored from the link (``?method=``; a link with
    ``alpha`` and no method is the CovLasso view); ``default`` without either."""
    state.restore(key)
    if "method" in params:
        wanted = params["method"]
        if wanted in METHODS:
            st.session_state[key] = wanted
        else:
            state.warn(f"method in the link must be one of {', '.join(METHODS)}; got {wanted!r}. "
                       f"Showing {st.session_state.get(key, default)!r}.")
    elif "alpha" in params:
        st.session_state[key] = LASSO
    if st.session_state.get(key) not in METHODS:
        st.session_state[key] = default
    return method_radio(st.session_state[key], key=key)


def method_radio(value: str, *, key: str = "nde_method") -> str:
    """Best subset or the paper's CovLasso, showing ``value`` (pinned)."""
    st.session_state[key] = value
    value = st.radio("Method", METHODS, key=key, format_func=METHOD_LABELS.get, horizontal=True,
                     help="Fewest sources: for each number of sources m, the best dependency with at most m of "
                          "them (least squares on the best few, found from the Gram). The paper's CovLasso: the "
                          "L1-penalised fit at α, which shrinks its coefficients and, at the α where it keeps a few "
                          "sources, often picks worse ones.")
    state.remember(key, value)
    return str(value)


def _parse_m(text: str, top: int) -> int | None:
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = None
    if value is None or not 1 <= value <= top:
        state.warn(f"m in the link must be a whole number of sources in 1 … {top}; got {text!r}. "
                   "Showing the default number of sources.")
        return None
    return value


def sources_slider(top: int, recommended: int, fits: bool, value: int, scope: tuple, *, key: str = "nde_m") -> int:
    """The number of sources m (1 … ``top``) showing ``value`` (pinned), ★ at ``recommended``
    (``fits``: it fits); ``scope``: the (model, source, target) it was chosen for."""
    st.session_state[key] = value
    st.session_state[f"_{key}_for"] = scope
    star = " ★ fewest that fit" if fits else " ★ best for its size"

    def label(m: int) -> str:
        return f"{m}{star if m == recommended else ''}"

    value = st.select_slider(
        "Sources (m: at most this many)", options=list(range(1, top + 1)), key=key, format_func=label,
        help=f"The best dependency with at most m sources. ★: the fewest sources that fit (R² ≥ {FIT_R2:.2f} "
             f"and at most {FIT_LOST:g} pt of top-1 accuracy lost with the replaced logit)"
             + ("." if fits else "; none does up to 8 here, so ★ marks the smallest m within 0.01 of the best R²."),
    )
    state.remember(key, value)
    return int(value)


def dependency_control(view, *, m_key: str = "nde_m", alpha_key: str = "nde_alpha") -> tuple[int | None, float | None]:
    """The control of the view's method, showing the view's value: the sources slider (best
    subset) or the α slider (the CovLasso). Returns (m, α), the other one None. A target with
    no dependency on the α grid gets a sentence saying so, and the page stops."""
    if view.sources is not None:
        s = view.sources
        return sources_slider(s.top, s.recommended, s.fits, s.value, s.scope, key=m_key), None
    if view.alpha is not None:
        a = view.alpha
        return None, alpha_slider(a.options, a.labels, a.value, a.amax, a.recommended, a.paper, a.recommended_fit,
                                  a.digits, key=alpha_key)
    st.info(f"This category has no dependency on the α grid (α_max = {view.no_alpha:.3g}): its logit is "
            "uncorrelated with every source. Pick another target.", icon=":material/block:")
    st.stop()


def sources_chart_of(data: SourcesChart, title: str) -> charts.ChartSpec:
    """The chart of :func:`engine.apps.explore.sources_chart`'s data, and its caption; returns the chart."""
    chart = charts.sources_chart(data.frame, data.here, FIT_R2, title)
    charts.show(chart)
    fit, lasso = data.fit, data.lasso
    said = (f"{fit} source{'s' if fit != 1 else ''} fit (R² ≥ {FIT_R2:.2f}, top-1 kept)" if fit else
            f"no subset of ≤ {data.max_m} sources fits (R² ≥ {FIT_R2:.2f}, top-1 kept)")
    lasso_said = (f"the Lasso needs {lasso} sources to reach R² {FIT_R2:.2f}" if lasso else
                  f"no α of the Lasso's path reaches R² {FIT_R2:.2f}")
    st.caption(f"Best subset: {said}; {lasso_said}. Relaxed: least squares on the Lasso's sources (its choice "
               f"without its shrinkage). Dashed: R² = {FIT_R2:.2f}; circled: the dependency shown.")
    return chart


def fit_note(shown, target_name: str) -> None:
    """Under the Table 1 card: which method made it, and Pos Acc in words when it costs the
    category its own positives while top-1 holds."""
    mt = shown.metrics
    text = f"Shown: {shown.label}."
    lost = mt.ori_pos_acc - mt.pos_acc
    if np.isfinite(lost) and lost > POS_ACC_NOTE:
        kept = mt.ori_acc - mt.acc <= FIT_LOST
        text += (f" {'Keeps top-1 but costs' if kept else 'Costs'} “{target_name}” {lost:.1f} pt of its own "
                 f"positives (Pos Acc {mt.pos_acc:.1f} % vs {mt.ori_pos_acc:.1f} %).")
    st.caption(text)


def plain_sources_ui(params: dict, *, key: str, top: int = MAX_M) -> int:
    """The number of sources m (1 … ``top``) for a view of every target (no one target's ★),
    restored from the link (``?m=``); opens at 4 (the paper's "3 or 4")."""
    state.restore(key)
    wanted = _parse_m(params["m"], top) if "m" in params else None
    if wanted is not None:
        st.session_state[key] = wanted
    if st.session_state.get(key) not in range(1, top + 1):
        st.session_state[key] = min(4, top)
    state.pin(key)
    value = st.select_slider("Best subset of each target: at most m sources", options=list(range(1, top + 1)),
                             key=key)
    state.remember(key, value)
    return int(value)

