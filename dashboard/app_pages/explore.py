"""Explore: one model, one target category, one α — the paper's Figs. 2 and 3 and Table 1.

Everything is read from the cached α path: moving the slider only indexes into it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.components import charts
from dashboard.components.graph import star_graph
from dashboard.components.loaders import (
    class_images,
    load_gramset_for,
    load_path,
    load_recommendation,
    load_store,
    load_top2,
)
from dashboard.components.tables import coef_table_html
from dashboard.components.widgets import (
    after_first_paint,
    alpha_ui,
    default_target,
    download_ui,
    formula_ui,
    guard,
    model_ui,
    store_page,
    table1_card,
    target_ui,
)
from engine import views
from engine.analysis import covariance_vs_coef, dependency_metrics

MAX_GRAPH_SOURCES = 16
CHARTS_HEIGHT = 470  # the charts' row: a 380 px chart, its title and caption


def _exports(model, class_names, target, alpha, alpha_index, path, frame, metrics, formula,
             graph, scatter, path_chart) -> None:
    target_name = class_names[target]
    slug = f"{model}-t{target}-a{alpha:.3g}"
    with st.expander("Export this view", icon=":material/download:"):
        c = st.columns(4)
        with c[0]:
            download_ui("Dependencies (CSV)", lambda: frame.to_csv(index=False),
                        f"{slug}.csv", "text/csv", "x-csv")
            download_ui("Dependencies (JSON)", lambda: views.dependency_json(model, model, alpha, target, target_name,
                                                                             frame, metrics),
                        f"{slug}.json", "application/json", "x-json")
        with c[1]:
            download_ui("Star graph (HTML)", graph.standalone, f"{slug}-graph.html", "text/html", "x-html")
            download_ui("Table 1 card (Markdown)",
                        lambda: views.metrics_markdown(model, model, target_name, alpha, metrics, formula),
                        f"{slug}-table1.md", "text/markdown", "x-md")
        with c[2]:
            download_ui("Fig. 3 scatter (PNG)", lambda: charts.chart_png(scatter), f"{slug}-fig3.png",
                        "image/png", "x-fig3-png")
            download_ui("Fig. 3 scatter (SVG)", lambda: charts.chart_svg(scatter), f"{slug}-fig3.svg",
                        "image/svg+xml", "x-fig3-svg")
        with c[3]:
            download_ui("α path (PNG)", lambda: charts.chart_png(path_chart), f"{slug}-path.png",
                        "image/png", "x-path-png")
            download_ui("α path (SVG)", lambda: charts.chart_svg(path_chart), f"{slug}-path.svg",
                        "image/svg+xml", "x-path-svg")

        def all_targets_csv() -> str:
            coef = path.coef_matrix(alpha_index)
            return views.all_dependencies_frame(coef, class_names, class_names).to_csv(index=False)

        download_ui(f"Every target's dependencies at α = {alpha:.3g} (CSV)", all_targets_csv,
                    f"{model}-all-a{alpha:.3g}.csv", "text/csv", "x-all-csv")


def main() -> None:
    page = store_page("Explore a neural dependency",
                "One category's logit as a sparse linear combination of a few others (CovLasso). "
                "Pick a model, a target and α.")
    root, params = page.root, page.params
    model = model_ui(page.names, params)
    store = guard(load_store, root, model)
    path = guard(load_path, root, model)
    gs = guard(load_gramset_for, root, model)
    class_names = store.class_names

    rec = load_recommendation(root, model)
    left, right = st.columns([1, 1], gap="large")
    with left:
        target = target_ui(class_names, params, default=default_target(class_names, rec))
    with right:
        alpha, a_idx = alpha_ui(path, target, params, rec=rec)
    page.publish(model=model, target=target, alpha=alpha)

    src, vals = path.coef_at(target, a_idx)
    coef = path.coef_vector(target, a_idx)
    target_name = class_names[target]
    frame = views.dependency_frame(src, vals, class_names, gs.rhs[:, target])
    metrics = dependency_metrics(store.logits, store.logits, store.labels, target, coef,
                                 load_top2(root, model))
    formula = views.dependency_formula(target_name, frame)
    formula_ui(formula)

    shown = frame.head(MAX_GRAPH_SOURCES)
    images = class_images(root, model, [*shown["index"], target])
    images["target"] = images.get(target)
    graph = star_graph(
        target_name, list(zip(shown["index"], shown["name"], shown["coef"])), images,
        title=f"{target_name} — {model}, α = {alpha:.3g}",
    )
    g_col, t_col = st.columns([3, 2], gap="large")
    with g_col:
        st.subheader("Star graph")
        st.iframe(graph.embedded(), height=640)
        if len(frame) > MAX_GRAPH_SOURCES:
            st.caption(f"Showing the {MAX_GRAPH_SOURCES} strongest of {len(frame)} sources.")
    with t_col:
        table1_card(metrics)
        st.subheader(f"Coefficients ({len(frame)} sources)")
        if frame.empty:
            st.info("No source at this α: lower α to see the dependency.", icon=":material/block:")
        else:
            st.html(coef_table_html(frame, images))

    scatter, path_chart = _charts(path, gs, class_names, target, coef, alpha)
    _exports(model, class_names, target, alpha, a_idx, path, frame, metrics, formula, graph,
             scatter, path_chart)


def _charts(path, gs, class_names: list[str], target: int, coef: np.ndarray, alpha: float):
    """Fig. 3 and the α path, side by side, below the fold (drawn once the graph is, on a
    session's first visit); returns both charts (for the exports)."""
    fig3 = covariance_vs_coef(gs.rhs[:, target], coef, target)
    scatter_frame = pd.DataFrame({"covariance": fig3["covariance"], "coef": fig3["coef"],
                                  "name": [class_names[j] for j in fig3["source"]]})
    scatter = charts.covariance_scatter(
        scatter_frame, alpha, "Fig. 3 — covariance vs coefficient, band |C_tj| < α")
    pframe = views.path_frame(path.alphas, path.target_path(target), class_names)
    path_chart = charts.alpha_path(pframe, alpha, "α path of the strongest sources")
    inside = np.abs(fig3["covariance"]) < alpha
    broken = int((inside & (fig3["coef"] != 0)).sum())

    def draw() -> None:
        c1, c2 = st.columns(2, gap="large")
        with c1:
            charts.show(scatter)
            st.caption(f"Conjecture 1 (|C_tj| < α ⇒ θ_j = 0) screens {int(inside.sum())} of "
                       f"{len(inside)} sources here; {broken} of them are non-zero anyway.")
        with c2:
            charts.show(path_chart)
            st.caption("Every source that enters the dependency somewhere on the path: the 12 strongest "
                       "in colour, the others in grey; the purple line is the chosen α.")

    after_first_paint("explore-charts", draw, height=CHARTS_HEIGHT)
    return scatter, path_chart


main()
