"""Explore: one model, one target category, its fewest sources that fit (best subset) or the
paper's CovLasso at α — the paper's Figs. 2 and 3 and Table 1, and R² against the number of
sources for the three methods (issue 25; :mod:`dashboard.components.sources_ui`).

The CovLasso view is read from the target's own α path, solved for that target alone the first time
it is shown (a Lasso path on the Gram: milliseconds to a second, whatever the number of
categories) and cached: moving the slider only indexes into it. Nothing here waits for
every target; the one export that covers them all reads the ``paths`` job's result.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.components import charts
from dashboard.components.centred import (
    CENTRED,
    logits_ui,
    path_and_curve_loaders,
    with_logits,
)
from dashboard.components.graph import star_graph
from dashboard.components.jobs_ui import cut_dependency_ui, job_ui
from dashboard.components.loaders import (
    class_images,
    load_all_best_subsets,
    load_all_paths,
    load_gramset_for,
    load_hint,
    load_recognised,
    load_recommendation,
    load_store,
    load_target_card,
)
from dashboard.components.sources_ui import (
    BEST,
    LASSO,
    fit_note,
    method_ui,
    opening_target,
    sources_chart_ui,
    sources_ui,
)
from dashboard.components.tables import coef_table_html
from dashboard.components.talk_ui import add_to_talk_ui
from dashboard.components.widgets import (
    alpha_ui,
    default_target,
    download_ui,
    formula_ui,
    guard,
    model_ui,
    store_page,
    table1_card,
    target_ui,
    view_caption,
)
from engine.apps import views
from engine.apps.talk.talkfile import TalkSlide
from engine.core.analysis import covariance_vs_coef
from engine.core.categories import category_ids

MAX_GRAPH_SOURCES = 16


def _exports(root, model, class_names, target, shown, method, m, alpha, frame, formula, graph,
             chart_files: dict, logits: str) -> None:
    target_name = class_names[target]
    slug = f"{model}-t{target}-{shown.slug}" + ("-centred" if logits == CENTRED else "")
    with st.expander("Export this view", icon=":material/download:"):
        c = st.columns(4)
        with c[0]:
            download_ui("Dependencies (CSV)", lambda: frame.to_csv(index=False),
                        f"{slug}.csv", "text/csv", "x-csv")
            download_ui("Dependencies (JSON)", lambda: with_logits(views.dependency_json(
                model, model, alpha, target, target_name, frame, shown.metrics, method=method, m=m), logits),
                f"{slug}.json", "application/json", "x-json")
        with c[1]:
            download_ui("Star graph (HTML)", graph.standalone, f"{slug}-graph.html", "text/html", "x-html")
            download_ui("Table 1 card (Markdown)",
                        lambda: views.metrics_markdown(model, model, target_name, alpha, shown.metrics, formula,
                                                       method=method, m=m),
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
        elif method == BEST:
            every_best_subset_export_ui(root, model, class_names, m, "x-all-csv")
        else:
            every_target_export_ui(root, model, class_names, alpha, "x-all-csv")


def every_target_export_ui(root: str, model: str, class_names: list[str], alpha: float, key: str) -> None:
    """Every target's dependencies at (the path's α nearest to) ``alpha``, from the ``paths``
    job's result — complete, or the targets solved so far, said so — or the job's button."""
    every = guard(load_all_paths, root, model)
    if every is None:
        job_ui(root, "paths", {"model": model}, "every target's α path", key=f"{key}-job",
               note="Every target's dependencies (CSV) need every target's path: a job, not this page.")
        return
    a = every.nearest_alpha_index(alpha)
    what = "Every target's" if every.complete else f"The {len(every.targets):,} targets solved so far:"

    def csv() -> str:
        return "".join(views.dependencies_csv(every.at_alpha(a), every.targets, class_names, class_names))

    download_ui(f"{what} dependencies at α = {every.alphas[a]:.3g} (CSV)", csv,
                f"{model}-all-a{every.alphas[a]:.3g}.csv", "text/csv", key)
    if not every.complete:
        job_ui(root, "paths", {"model": model}, "every target's α path", key=f"{key}-job")


def every_best_subset_export_ui(root: str, model: str, class_names: list[str], m: int, key: str) -> None:
    """Every target's best dependency with at most ``m`` sources, from the ``best-subsets``
    job's result, or the job's button."""
    every = guard(load_all_best_subsets, root, model)
    if every is None:
        job_ui(root, "best-subsets", {"model": model}, "every target's best subsets", key=f"{key}-job",
               note="Every target's best dependencies (CSV) need every target's best subsets: a job, not this page.")
        return
    targets = np.arange(every.n_targets)
    download_ui(f"Every target's best dependency with at most {m} sources (CSV)",
                lambda: "".join(views.dependencies_csv(every.at(m), targets, class_names, class_names)),
                f"{model}-all-m{m}.csv", "text/csv", key)


def main() -> None:
    page = store_page("Explore a neural dependency",
                "One category's logit as a linear combination of a few others: the fewest sources that fit "
                "(best subset), or the paper's CovLasso at α. Pick a model, a target and how many sources.")
    root, params = page.root, page.params
    model = model_ui(page.names, params)
    store = guard(load_store, root, model)
    gs = guard(load_gramset_for, root, model)
    if gs is None:
        st.info(f"Store `{model}` has no Gram yet (it was imported before imports made one). Every "
                "dependency is solved from it.", icon=":material/info:")
        job_ui(root, "gram", {"model": model}, f"the Gram of {model}", key="explore-gram")
        st.stop()
    class_names = store.class_names

    rec = guard(load_recommendation, root, model)
    fallback = default_target(class_names, rec, guard(load_hint, root, model), guard(load_recognised, root, model))
    # the target picker across the page: a full class name stays whole at 150 % zoom
    target = target_ui(class_names, params, ids=category_ids(store.manifest),
                       default=opening_target(root, model, None, class_names, fallback))
    left, right = st.columns([3, 2], gap="medium")
    with left:
        method = method_ui(params)
        logits = logits_ui(params, store.k)
    load_path, load_curve = path_and_curve_loaders(logits)  # centred: solved for this target now
    path = guard(load_path, root, model, None, target)
    curve = guard(load_curve, root, model, None, target)
    target_name = class_names[target]
    with left:  # the controls one above the other, the chart beside them
        if method == BEST:
            m, alpha, a_idx = sources_ui(curve, params), None, None
        else:
            m, (alpha, a_idx) = None, alpha_ui(path, target, params)
    # what the page shows of the dependency: one cached call (issue 22)
    shown = guard(load_target_card, root, model, None, target, method, m=m, alpha_index=a_idx, logits=logits)
    with right:
        sources_chart = sources_chart_ui(curve, shown, "R² against the number of sources")
    page.publish(model=model, target=target, method=method, m=m, alpha=alpha,
                 logits=CENTRED if logits == CENTRED else None)

    frame, formula, rhs_col = shown.frame, shown.formula, shown.covariance
    formula_ui(formula)
    view_caption(f"{model} · {target_name} (#{target}) · {shown.line}" + (" · centred logits" if logits == CENTRED else ""),
                 model=model, target=target, method=shown.method, m=shown.m, alpha=shown.alpha, logits=logits)

    shown_frame = frame.head(MAX_GRAPH_SOURCES)
    images = class_images(root, model, [*shown_frame["index"], target])
    images["target"] = images.get(target)
    graph = star_graph(
        target_name, list(zip(shown_frame["index"], shown_frame["name"], shown_frame["coef"])), images,
        title=f"{target_name} — {model}, {shown.label}" + (", centred logits" if logits == CENTRED else ""),
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
            cut_dependency_ui(store.manifest, target, int(frame["index"].iloc[0]),
                              f"{target_name} ← {frame['name'].iloc[0]}")

    chart_files = {"R² vs sources": ("sources", sources_chart)}
    if method == LASSO:
        scatter, path_chart = _charts(path, rhs_col, class_names, target, path.coef_vector(target, a_idx), alpha)
        chart_files = {"Fig. 3 scatter": ("fig3", scatter), "α path": ("path", path_chart), **chart_files}
    _exports(root, model, class_names, target, shown, method, m, alpha, frame, formula, graph, chart_files, logits)
    with st.sidebar:  # this view as a slide of the cache's talk (the Talk page)
        if logits == CENTRED:
            st.caption("Add to talk: the talk's slides show raw logits; switch centred logits off to add this view.")
        else:
            add_to_talk_ui(root, TalkSlide("dependency", model=model, target=target_name, alpha=alpha, sources=m),
                           key="x-talk")


MAX_SCATTER = 3000  # points of the Fig. 3 scatter (every non-zero θ_j, then the largest |C_tj|)


def _scatter_points(cov: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """Indices of the scatter's points: all of them up to MAX_SCATTER, else every non-zero
    coefficient and the zeros with the largest |C_tj| (the small ones pile up at 0)."""
    if len(cov) <= MAX_SCATTER:
        return np.arange(len(cov))
    nz = np.flatnonzero(coef)
    zeros = np.flatnonzero(coef == 0)
    room = max(0, MAX_SCATTER - len(nz))
    top = zeros[np.argsort(-np.abs(cov[zeros]), kind="stable")[:room]]
    return np.sort(np.concatenate([nz, top]))


def _charts(path, rhs_col: np.ndarray, class_names: list[str], target: int, coef: np.ndarray, alpha: float):
    """Fig. 3 and the α path, side by side, below the fold; returns both charts (for the exports)."""
    fig3 = covariance_vs_coef(rhs_col, coef, target)
    shown = _scatter_points(fig3["covariance"], fig3["coef"])
    scatter_frame = pd.DataFrame({"covariance": fig3["covariance"][shown], "coef": fig3["coef"][shown],
                                  "name": [class_names[j] for j in fig3["source"][shown]]})
    title = "Fig. 3 — covariance vs coefficient, band |C_tj| < α"
    if len(shown) < len(fig3["source"]):
        title += f" ({len(shown):,} of {len(fig3['source']):,} sources: every non-zero, the largest |C_tj|)"
    scatter = charts.covariance_scatter(scatter_frame, alpha, title)
    pframe = views.path_frame(path.alphas[path.alpha_indices(target)], path.target_path(target), class_names)
    path_chart = charts.alpha_path(pframe, alpha, "α path of the strongest sources")
    inside = np.abs(fig3["covariance"]) < alpha
    broken = int((inside & (fig3["coef"] != 0)).sum())

    c1, c2 = st.columns(2, gap="large")
    with c1:
        charts.show(scatter)
        st.caption(f"Conjecture 1 (|C_tj| < α ⇒ θ_j = 0) screens {int(inside.sum())} of "
                   f"{len(inside)} sources here; {broken} of them are non-zero anyway.")
    with c2:
        charts.show(path_chart)
        st.caption("Every source that enters the dependency somewhere on the path: the 12 strongest "
                   "in colour, the others in grey; the purple line is the chosen α.")
    return scatter, path_chart


main()
