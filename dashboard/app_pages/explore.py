"""Explore: one model, one target category, its fewest sources that fit (best subset) or the
paper's CovLasso at α — the paper's Figs. 2 and 3 and Table 1, and R² against the number of
sources for the three methods (issue 25; :mod:`dashboard.components.sources_ui`).

The page reads what it is asked (the link's parameters that just arrived, the widgets' values)
and makes one cached call, :func:`dashboard.components.loaders.load_explore_view` over
:func:`engine.apps.explore.explore_view`, which returns the view resolved (defaults filled, a
wrong link's fallback and its message), the widgets' options, the target card, the charts'
data and the images; the page only lays it out (issue 22). The CovLasso view is read from the
target's own α path, solved for that target alone the first time it is shown and kept in
memory: moving the slider only indexes into it. Nothing here waits for every target; the one
export that covers them all reads a job's result.
"""

from __future__ import annotations

import streamlit as st

from dashboard.components import charts, state
from dashboard.components.centred import CENTRED, logits_toggle, with_logits
from dashboard.components.graph import star_graph
from dashboard.components.jobs_ui import cut_dependency_ui, job_ui
from dashboard.components.loaders import load_explore_view
from dashboard.components.sources_ui import (
    BEST,
    LASSO,
    dependency_control,
    fit_note,
    method_radio,
    sources_chart_of,
)
from dashboard.components.tables import coef_table_html
from dashboard.components.talk_ui import add_to_talk_ui
from dashboard.components.widgets import (
    download_ui,
    fail,
    formula_ui,
    model_select,
    open_view,
    page_header,
    table1_card,
    target_select,
    view_caption,
)
from engine.apps import views
from engine.apps.explore import MAX_GRAPH_SOURCES, ExploreRequest
from engine.apps.talk.talkfile import TalkSlide

KEYS = ("nde_model", "nde_target", "nde_target_q", "nde_method", "nde_centred", "nde_alpha", "nde_m")


def _exports(root, view, graph, chart_files: dict) -> None:
    model, card, method, logits = view.model, view.card, view.method, CENTRED if view.centred else "raw"
    m = None if view.sources is None else view.sources.value
    alpha = None if view.alpha is None else view.alpha.value
    frame, slug = card.frame, f"{model}-t{view.target}-{card.slug}" + ("-centred" if logits == CENTRED else "")
    with st.expander("Export this view", icon=":material/download:"):
        c = st.columns(4)
        with c[0]:
            download_ui("Dependencies (CSV)", lambda: frame.to_csv(index=False),
                        f"{slug}.csv", "text/csv", "x-csv")
            download_ui("Dependencies (JSON)", lambda: with_logits(views.dependency_json(
                model, model, alpha, view.target, card.target_name, frame, card.metrics, method=method, m=m), logits),
                f"{slug}.json", "application/json", "x-json")
        with c[1]:
            download_ui("Star graph (HTML)", graph.standalone, f"{slug}-graph.html", "text/html", "x-html")
            download_ui("Table 1 card (Markdown)",
                        lambda: views.metrics_markdown(model, model, card.target_name, alpha, card.metrics,
                                                       card.formula, method=method, m=m),
                        f"{slug}-table1.md", "text/markdown", "x-md")
        for i, (name, (file, chart)) in enumerate(chart_files.items()):
            with c[2 + i % 2]:
                download_ui(f"{name} (PNG)", lambda chart=chart: charts.chart_png(chart), f"{slug}-{file}.png",
                            "image/png", f"x-{file}-png")
                download_ui(f"{name} (SVG)", lambda chart=chart: charts.chart_svg(chart), f"{slug}-{file}.svg",
                            "image/svg+xml", f"x-{file}-svg")
        if logits == CENTRED:
            st.caption(f"Every target's dependencies on centred logits: `python -m engine dependencies --model {model} "
                       f"{'--sources ' + str(m) if method == BEST else '--alpha ' + format(alpha, '.3g')} --centred --json all.json`.")
        else:
            _every_target_ui(root, view, "x-all-csv")


def _every_target_ui(root: str, view, key: str) -> None:
    """Every target's dependencies at (the path's α nearest to) the α shown, from the ``paths``
    job's result — complete, or the targets solved so far, said so — or with at most the m
    shown, from the ``best-subsets`` job's; else the job's button."""
    every, model = view.every, view.model
    kind, what = ("best-subsets", "every target's best subsets") if view.method == BEST else \
        ("paths", "every target's α path")
    if every is None or every.csv is None:
        note = ("Every target's best dependencies (CSV) need every target's best subsets: a job, not this page."
                if view.method == BEST else
                "Every target's dependencies (CSV) need every target's path: a job, not this page.")
        job_ui(root, kind, {"model": model}, what, key=f"{key}-job", note=note)
        return
    download_ui(every.label, every.csv, every.file_name, "text/csv", key)
    if not every.complete:
        job_ui(root, kind, {"model": model}, what, key=f"{key}-job")


def _request(params: dict) -> ExploreRequest:
    """What this run is asked: the link's parameters that just arrived, the widgets' values."""
    for key in KEYS:
        state.restore(key)
    ss = st.session_state
    return ExploreRequest(link=tuple(sorted(params.items())), model=ss.get("nde_model"), target=ss.get("nde_target"),
                          query=ss.get("nde_target_q") or "", method=ss.get("nde_method"),
                          centred=ss.get("nde_centred"), alpha=ss.get("nde_alpha"), m=ss.get("nde_m"),
                          m_for=ss.get("_nde_m_for"))


def main() -> None:
    page_header("Explore a neural dependency",
                "One category's logit as a linear combination of a few others: the fewest sources that fit "
                "(best subset), or the paper's CovLasso at α. Pick a model, a target and how many sources.")
    root, view, notes = open_view(load_explore_view, _request(state.incoming()))  # the one call of this run
    model = model_select(view.names, view.model)
    if view.error:
        fail(Exception(view.error))
    if not view.has_gram:
        st.info(f"Store `{model}` has no Gram yet (it was imported before imports made one). Every "
                "dependency is solved from it.", icon=":material/info:")
        job_ui(root, "gram", {"model": model}, f"the Gram of {model}", key="explore-gram")
        st.stop()
    class_names, target = view.class_names, view.target
    # the target picker across the page: a full class name stays whole at 150 % zoom
    target_select(class_names, target, view.target_options, ids=view.ids, no_match=view.no_match)
    left, right = st.columns([3, 2], gap="medium")
    with left:
        method = method_radio(view.method)
        logits = logits_toggle(view.centred, view.centred_allowed)
    target_name = class_names[target]
    with left:  # the controls one above the other, the chart beside them
        m, alpha = dependency_control(view)
    shown = view.card  # what the page shows of the dependency (issue 22)
    with right:
        sources_chart = sources_chart_of(view.sources_chart, "R² against the number of sources")
    state.publish(model=model, target=target, method=method, m=m, alpha=alpha,
                  logits=CENTRED if logits == CENTRED else None)
    with notes:
        state.show_messages()

    frame, formula = shown.frame, shown.formula
    formula_ui(formula)
    view_caption(f"{model} · {target_name} (#{target}) · {view.line}" + (" · centred logits" if logits == CENTRED else ""),
                 model=model, target=target, method=shown.method, m=shown.m, alpha=shown.alpha, logits=logits)

    shown_frame = frame.head(MAX_GRAPH_SOURCES)
    images = view.images
    graph = star_graph(
        target_name, list(zip(shown_frame["index"], shown_frame["name"], shown_frame["coef"])), images,
        title=f"{target_name} — {model}, {shown.label}" + (", centred logits" if logits == CENTRED else ""),
        labels=view.graph_labels,
    )
    g_col, t_col = st.columns([3, 2], gap="large")
    with g_col:
        st.subheader("Star graph")
        st.iframe(graph.embedded(), height=640)
        if len(frame) > MAX_GRAPH_SOURCES:
            st.caption(f"Showing the {MAX_GRAPH_SOURCES} strongest of {len(frame)} sources.")
    with t_col:
        table1_card(shown.metrics)
        fit_note(shown, target_name)
        st.subheader(f"Coefficients ({len(frame)} sources)")
        if frame.empty:
            st.info("No source at this α: lower α to see the dependency.", icon=":material/block:")
        else:
            st.html(coef_table_html(frame, images))
            cut_dependency_ui({"model_info": view.model_info}, target, int(frame["index"].iloc[0]),
                              f"{target_name} ← {frame['name'].iloc[0]}")

    chart_files = {"R² vs sources": ("sources", sources_chart)}
    if method == LASSO:
        scatter, path_chart = _charts(view.covlasso, alpha)
        chart_files = {"Fig. 3 scatter": ("fig3", scatter), "α path": ("path", path_chart), **chart_files}
    _exports(root, view, graph, chart_files)
    with st.sidebar:  # this view as a slide of the cache's talk (the Talk page)
        if logits == CENTRED:
            st.caption("Add to talk: the talk's slides show raw logits; switch centred logits off to add this view.")
        else:
            add_to_talk_ui(root, lambda: TalkSlide("dependency", model=model, target=target_name, alpha=alpha,
                                                   sources=m), key="x-talk")


def _charts(data, alpha: float):
    """Fig. 3 and the α path, side by side, below the fold; returns both charts (for the exports)."""
    title = "Fig. 3 — covariance vs coefficient, band |C_tj| < α"
    if len(data.scatter) < data.scatter_total:
        title += f" ({len(data.scatter):,} of {data.scatter_total:,} sources: every non-zero, the largest |C_tj|)"
    scatter = charts.covariance_scatter(data.scatter, alpha, title)
    path_chart = charts.alpha_path(data.path, alpha, "α path of the strongest sources")

    c1, c2 = st.columns(2, gap="large")
    with c1:
        charts.show(scatter)
        st.caption(f"Conjecture 1 (|C_tj| < α ⇒ θ_j = 0) screens {data.screened} of "
                   f"{data.scatter_total} sources here; {data.broken} of them are non-zero anyway.")
    with c2:
        charts.show(path_chart)
        st.caption("Every source that enters the dependency somewhere on the path: the 12 strongest "
                   "in colour, the others in grey; the purple line is the chosen α.")
    return scatter, path_chart


main()
