"""Compare models: a category of model B predicted from model A's logits (between networks),
and which dependencies of that category the two models share or not — with the fewest of A's
sources that fit (best subset, the default) or the paper's CovLasso at α.

The page reads what it is asked (the link's parameters that just arrived, the widgets' values)
and makes one cached call, :func:`dashboard.components.loaders.load_compare_view` over
:func:`engine.apps.compare.compare_view`, and lays out what it returns (issue 22). The
category's paths (B from A, A within, B within) are solved for that category alone when first
shown; the overlap over every category and the least-squares floor are read from jobs.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from dashboard.components import charts, state
from dashboard.components.centred import CENTRED, logits_toggle, with_logits
from dashboard.components.graph import star_graph
from dashboard.components.jobs_ui import job_ui
from dashboard.components.loaders import cache_root, load_compare_view
from dashboard.components.sources_ui import (
    dependency_control,
    fit_note,
    method_radio,
    sources_chart_of,
)
from dashboard.components.tables import coef_table_html, frame_table_html
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
from engine.apps.compare import CompareRequest
from engine.apps.talk.talkfile import TalkSlide

KEYS = ("nde_model", "nde_source", "nde_target", "nde_target_q", "nde_method_between", "nde_centred_between",
        "nde_alpha_between", "nde_m_between")


def _request(params: dict) -> CompareRequest:
    """What this run is asked: the link's parameters that just arrived, the widgets' values."""
    for key in KEYS:
        state.restore(key)
    ss = st.session_state
    return CompareRequest(link=tuple(sorted(params.items())), model=ss.get("nde_model"), source=ss.get("nde_source"),
                          target=ss.get("nde_target"), query=ss.get("nde_target_q") or "",
                          method=ss.get("nde_method_between"), centred=ss.get("nde_centred_between"),
                          alpha=ss.get("nde_alpha_between"), m=ss.get("nde_m_between"),
                          m_for=ss.get("_nde_m_between_for"))


def _pick_models(view) -> tuple[str, str]:
    if len(view.names) < 2:
        st.info("Comparing needs two logit stores of the same samples (e.g. `glyph-vgg` and "
                "`glyph-resnet` from `python -m engine demo`). Import or extract a second one on the "
                "**Data** page.", icon=":material/compare_arrows:")
        st.stop()
    model_b = model_select(view.names, view.model, key="nde_model", label="Model B (its targets)",
                           help="The model whose category is predicted.")
    model_a = model_select(view.names, view.source, key="nde_source", label="Model A (the sources)",
                           help="The model whose logits predict it.")
    if model_a == model_b:
        st.info("Pick two different models: A's logits predict B's category. (For one model, use "
                "the **Explore** page.)", icon=":material/compare_arrows:")
        st.stop()
    return model_a, model_b


def _between_section(view, logits) -> dict:
    model_a, model_b, target, shown = view.source, view.model, view.target, view.card
    target_name = shown.target_name
    frame = shown.frame[["index", "name", "coef"]]  # the card's table, without C_tj here
    metrics, formula = shown.metrics, shown.formula
    st.subheader(f"{model_b}’s “{view.target_short}” from {model_a}’s logits")
    formula_ui(formula)
    view_caption(f"{model_b}’s {target_name} (#{target}) from {model_a}’s logits · {view.line}"
                 + (" · centred logits" if logits == CENTRED else ""), model=model_b, source=model_a, target=target,
                 method=shown.method, m=shown.m, alpha=shown.alpha, logits=logits)
    top = frame.head(16)
    images = view.images
    graph = star_graph(target_name, list(zip(top["index"], top["name"], top["coef"])), images,
                       title=f"{target_name} of {model_b} from {model_a}, {shown.label}", height=500,
                       labels=view.graph_labels)
    g, t = st.columns([3, 2], gap="large")
    with g:
        st.iframe(graph.embedded(), height=580)
        st.caption(f"Around: {model_a}’s categories; in the middle: {model_b}’s “{view.target_short}”.")
    with t:
        table1_card(metrics)
        fit_note(shown, target_name)
        if logits == CENTRED:
            st.caption("**Floor**: measured on raw logits only (the `theory` job); switch centred logits off to "
                       "compare with it.")
        else:
            _floor_note(view, metrics)
        if frame.empty:
            st.info("No source at this α: lower α to see the dependency.", icon=":material/block:")
        else:
            st.html(coef_table_html(frame, images, source_label=f"source category of {model_a}", max_height=300))
    return {"frame": frame, "metrics": metrics, "formula": formula, "graph": graph, "target_name": target_name}


def _floor_note(view, metrics) -> None:
    """How far any α can go: the dense least-squares fit on all of A's logits (α → 0), read
    from the ``theory`` job of the pair (an eigendecomposition of A's Gram)."""
    model_a, model_b = view.source, view.model
    if view.floor is None:
        job_ui(cache_root(), "theory", {"model": model_b, "source": model_a}, "the least-squares floor",
               key="cmp-floor",
               note=f"The floor: {model_b}’s logits fitted on all of {model_a}’s (α → 0), how far any "
                    "dependency between them can go.")
        return
    rank, rel_err, r2, acc = view.floor
    st.caption(f"**Floor** — {model_b}’s logit fitted by least squares on all {view.source_k:,} "
               f"of {model_a}’s logits (no sparsity, the limit α → 0; their Gram has rank {rank}): "
               f"Rel Err {rel_err:.2f} %, R² {_r2_text(r2)}, Acc {acc:.1f} %. "
               f"No sparse dependency gets the squared error below this fit’s; the one above is at Rel Err "
               f"{metrics.rel_err:.2f} %, R² {_r2_text(metrics.r2)}.")


def _r2_text(r2: float) -> str:
    return "n/a" if np.isnan(r2) else f"{r2:.3f}"


JOB_WHAT = {"best-subsets": ("every best subset of {}", "cmp-best-{}",
                             "The overlap over every category needs every category's best subsets in both models."),
            "paths": ("every α path of {}", "cmp-paths-{}",
                      "The overlap over every category needs every category's path in both models.")}


def _within_section(root, view, logits) -> None:
    st.subheader("Shared and different dependencies")
    w, model_a, model_b = view.within, view.source, view.model
    if not w.same_classes:
        st.info("The two stores have different categories, so their own dependencies cannot be "
                "matched class by class; the between-network view above still applies.", icon=":material/info:")
        return
    if not w.has_grams:
        st.info("One of the two stores has no Gram yet (open it on **Explore** to compute it).")
        return
    centred = logits == CENTRED
    share, names = w.share, view.class_names
    c = st.columns(4)
    c[0].metric("Shared sources", w.counts[0])
    c[1].metric(f"Only in {model_a}", w.counts[1])
    c[2].metric(f"Only in {model_b}", w.counts[2])
    overlap, held = w.overlap, w.held
    if overlap is not None:
        what = "all targets" if held == len(names) else f"{held:,} targets solved"
        c[3].metric(f"Mean overlap, {what}", f"{np.nanmean(overlap):.2f}" if np.isfinite(overlap).any() else "n/a",
                    help="Jaccard index of the source sets of every category in the two models")
    st.caption(f"“{w.target_short}” inside each model {w.where}. "
               f'<span class="nde-pos">blue</span> / <span class="nde-neg">orange</span> = positive / '
               "negative coefficient everywhere.", unsafe_allow_html=True)
    left, right = st.columns([3, 2], gap="large")
    with left:
        if share.empty:
            st.info("Neither model has a dependency for this category at this α.", icon=":material/block:")
        else:
            st.html(frame_table_html(share, [("name", "source category", "text"), ("kind", "kind", "text"),
                                             (f"coef {model_a}", f"θ in {model_a}", "{:+.4f}"),
                                             (f"coef {model_b}", f"θ in {model_b}", "{:+.4f}")],
                                     signed=(f"coef {model_a}", f"coef {model_b}")))
    with right:
        if overlap is not None:
            charts.show(charts.histogram(overlap, "overlap", "Overlap of source sets, every category"
                                         + ("" if held == len(names) else f" solved so far ({held:,})")))
        if centred:
            st.caption("The overlap over every category: raw logits only (the jobs' results).")
        for kind, model in w.jobs:
            what, key, note = JOB_WHAT[kind]
            job_ui(root, kind, {"model": model}, what.format(model), key=key.format(model), note=note)


def main() -> None:
    page_header("Compare two models",
                "Neural dependencies between networks: B’s category as a sparse combination of A’s "
                "categories — and where the two models agree.")
    root, view, notes = open_view(load_compare_view, _request(state.incoming()))  # the one call of this run
    model_a, model_b = _pick_models(view)
    if view.error:
        fail(Exception(view.error))
    if not view.has_gram:
        st.info(f"The cross-Gram of {model_a} → {model_b} is not computed yet: one pass over both stores' "
                "logits (a GPU is used when there is one).", icon=":material/info:")
        job_ui(root, "gram", {"model": model_b, "source": model_a}, "the cross-Gram", key="cmp-gram")
        st.stop()
    target = view.target
    # the target picker across the page: a full class name stays whole at 150 % zoom
    target_select(view.class_names, target, view.target_options, ids=view.ids, no_match=view.no_match,
                  label=f"Target category of {model_b}")
    left, right = st.columns([3, 2], gap="medium")
    with left:
        method = method_radio(view.method, key="nde_method_between")
        logits = logits_toggle(view.centred, view.centred_allowed, key="nde_centred_between")
    with left:  # the controls one above the other, the chart beside them
        m, alpha = dependency_control(view, m_key="nde_m_between", alpha_key="nde_alpha_between")
    shown = view.card  # what the page shows of the dependency (issue 22)
    with right:
        chart = sources_chart_of(view.sources_chart, "R² against the number of sources")
    state.publish(model=model_b, source=model_a, target=target, method=method, m=m, alpha=alpha,
                  logits=CENTRED if logits == CENTRED else None)
    with notes:
        state.show_messages()
    between = {**_between_section(view, logits), "chart": chart}
    with st.sidebar:  # this view as a slide of the cache's talk (the Talk page)
        if logits == CENTRED:
            st.caption("Add to talk: the talk's slides show raw logits; switch centred logits off to add this view.")
        else:
            add_to_talk_ui(root, lambda: TalkSlide("between", model=model_b, source=model_a,
                                                   target=between["target_name"], alpha=alpha, sources=m),
                           key="cx-talk")
    st.divider()
    _within_section(root, view, logits)
    slug = f"{model_a}-to-{model_b}-t{target}-{shown.slug}" + ("-centred" if logits == CENTRED else "")
    with st.expander("Export this comparison", icon=":material/download:"):
        c = st.columns(3)
        with c[0]:
            download_ui("Dependencies (CSV)", between["frame"].to_csv(index=False), f"{slug}.csv", "text/csv",
                        "cx-csv")
            download_ui("R² vs sources (PNG)", lambda: charts.chart_png(between["chart"]), f"{slug}-sources.png",
                        "image/png", "cx-sources-png")
        with c[1]:
            download_ui("Dependencies (JSON)", lambda: with_logits(views.dependency_json(
                model_b, model_a, alpha, target, between["target_name"], between["frame"], between["metrics"],
                method=method, m=m), logits), f"{slug}.json", "application/json", "cx-json")
            download_ui("Star graph (HTML)", between["graph"].standalone, f"{slug}-graph.html", "text/html", "cx-html")
        with c[2]:
            download_ui("Table 1 card (Markdown)", lambda: views.metrics_markdown(
                model_b, model_a, between["target_name"], alpha, between["metrics"], between["formula"],
                method=method, m=m), f"{slug}-table1.md", "text/markdown", "cx-md")
            download_ui("R² vs sources (SVG)", lambda: charts.chart_svg(between["chart"]), f"{slug}-sources.svg",
                        "image/svg+xml", "cx-sources-svg")

main()
