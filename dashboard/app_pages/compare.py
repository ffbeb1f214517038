"""Compare models: a category of model B predicted from model A's logits (between networks),
and which dependencies of that category the two models share or not — with the fewest of A's
sources that fit (best subset, the default) or the paper's CovLasso at α.

The category's paths (B from A, A within, B within) are solved for that category alone when
first shown; the overlap over every category and the least-squares floor are read from jobs.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from dashboard.components import charts
from dashboard.components.centred import (
    CENTRED,
    logits_ui,
    path_and_curve_loaders,
    with_logits,
)
from dashboard.components.graph import star_graph
from dashboard.components.jobs_ui import job_ui
from dashboard.components.loaders import (
    class_images,
    load_all_best_subsets,
    load_all_paths,
    load_at_alpha,
    load_floor,
    load_gramset_for,
    load_hint,
    load_recognised,
    load_recommendation,
    load_store,
    load_target_card,
)
from dashboard.components.sources_ui import (
    BEST,
    fit_note,
    method_ui,
    opening_target,
    sources_chart_ui,
    sources_ui,
)
from dashboard.components.tables import coef_table_html, frame_table_html
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
from engine.core.categories import category_ids
from engine.stages.gramsets import check_pairable


def _pick_models(names: list[str], params: dict) -> tuple[str, str]:
    if len(names) < 2:
        st.info("Comparing needs two logit stores of the same samples (e.g. `glyph-vgg` and "
                "`glyph-resnet` from `python -m engine demo`). Import or extract a second one on the "
                "**Data** page.", icon=":material/compare_arrows:")
        st.stop()
    model_b = model_ui(names, params, key="nde_model", param="model", label="Model B (its targets)",
                       help="The model whose category is predicted.")
    model_a = model_ui(names, params, key="nde_source", param="source", label="Model A (the sources)",
                       avoid=model_b, help="The model whose logits predict it.")
    if model_a == model_b:
        st.info("Pick two different models: A's logits predict B's category. (For one model, use "
                "the **Explore** page.)", icon=":material/compare_arrows:")
        st.stop()
    return model_a, model_b


def _between_section(root, model_a, model_b, store_a, store_b, target, shown, logits) -> dict:
    target_name = shown.target_name
    frame = shown.frame[["index", "name", "coef"]]  # the card's table, without C_tj here
    metrics, formula = shown.metrics, shown.formula
    st.subheader(f"{model_b}’s “{views.short_name(target_name)}” from {model_a}’s logits")
    formula_ui(formula)
    view_caption(f"{model_b}’s {target_name} (#{target}) from {model_a}’s logits · {shown.line}"
                 + (" · centred logits" if logits == CENTRED else ""), model=model_b, source=model_a, target=target,
                 method=shown.method, m=shown.m, alpha=shown.alpha, logits=logits)
    top = frame.head(16)
    images = class_images(root, model_a, top["index"])
    images["target"] = class_images(root, model_b, [target])[target]
    graph = star_graph(target_name, list(zip(top["index"], top["name"], top["coef"])), images,
                       title=f"{target_name} of {model_b} from {model_a}, {shown.label}", height=500)
    g, t = st.columns([3, 2], gap="large")
    with g:
        st.iframe(graph.embedded(), height=580)
        st.caption(f"Around: {model_a}’s categories; in the middle: {model_b}’s “{views.short_name(target_name)}”.")
    with t:
        table1_card(metrics)
        fit_note(shown, target_name)
        if logits == CENTRED:
            st.caption("**Floor**: measured on raw logits only (the `theory` job); switch centred logits off to "
                       "compare with it.")
        else:
            _floor_note(root, model_a, model_b, store_a, store_b, target, metrics)
        if frame.empty:
            st.info("No source at this α: lower α to see the dependency.", icon=":material/block:")
        else:
            st.html(coef_table_html(frame, images, source_label=f"source category of {model_a}", max_height=300))
    return {"frame": frame, "metrics": metrics, "formula": formula, "graph": graph, "target_name": target_name}


def _floor_note(root, model_a, model_b, store_a, store_b, target, metrics) -> None:
    """How far any α can go: the dense least-squares fit on all of A's logits (α → 0), read
    from the ``theory`` job of the pair (an eigendecomposition of A's Gram)."""
    floor = guard(load_floor, root, model_b, model_a)
    if floor is None:
        job_ui(root, "theory", {"model": model_b, "source": model_a}, "the least-squares floor", key="cmp-floor",
               note=f"The floor: {model_b}’s logits fitted on all of {model_a}’s (α → 0), how far any "
                    "dependency between them can go.")
        return
    st.caption(f"**Floor** — {model_b}’s logit fitted by least squares on all {len(store_a.class_names):,} "
               f"of {model_a}’s logits (no sparsity, the limit α → 0; their Gram has rank {floor.rank}): "
               f"Rel Err {floor.rel_err[target]:.2f} %, R² {_r2_text(floor.r2[target])}, Acc {floor.acc[target]:.1f} %. "
               f"No sparse dependency gets the squared error below this fit’s; the one above is at Rel Err "
               f"{metrics.rel_err:.2f} %, R² {_r2_text(metrics.r2)}.")


def _r2_text(r2: float) -> str:
    return "n/a" if np.isnan(r2) else f"{r2:.3f}"


def _within_section(root, model_a, model_b, store_a, store_b, target, alpha, m, logits) -> None:
    st.subheader("Shared and different dependencies")
    if store_a.class_names != store_b.class_names:
        st.info("The two stores have different categories, so their own dependencies cannot be "
                "matched class by class; the between-network view above still applies.", icon=":material/info:")
        return
    names = store_b.class_names
    if guard(load_gramset_for, root, model_a) is None or guard(load_gramset_for, root, model_b) is None:
        st.info("One of the two stores has no Gram yet (open it on **Explore** to compute it).")
        return
    centred = logits == CENTRED
    load_path, load_curve = path_and_curve_loaders(logits)
    if m is not None:  # best subsets with at most m sources inside each model
        within_a, within_b = (_best_vector(guard(load_curve, root, model, None, target), m, len(names))
                              for model in (model_a, model_b))
        where = f"with at most {m} sources (best subset) in each model"
    else:
        path_a = guard(load_path, root, model_a, None, target)
        path_b = guard(load_path, root, model_b, None, target)
        ia, ib = path_a.nearest_alpha_index(alpha, target), path_b.nearest_alpha_index(alpha, target)
        within_a, within_b = path_a.coef_vector(target, ia), path_b.coef_vector(target, ib)
        where = f"at α ≈ {path_a.alphas[ia]:.3g} ({model_a}) and {path_b.alphas[ib]:.3g} ({model_b})"
    if centred:
        where += ", centred logits"
    share = views.share_frame(within_a, within_b, names, model_a, model_b)
    counts = share["kind"].value_counts()
    c = st.columns(4)
    c[0].metric("Shared sources", int(counts.get("shared", 0)))
    c[1].metric(f"Only in {model_a}", int(counts.get(f"only {model_a}", 0)))
    c[2].metric(f"Only in {model_b}", int(counts.get(f"only {model_b}", 0)))
    overlap, held = (None, 0) if centred else \
        _overlap(root, model_a, model_b, alpha) if m is None else _best_overlap(root, model_a, model_b, m)
    if overlap is not None:
        what = "all targets" if held == len(names) else f"{held:,} targets solved"
        c[3].metric(f"Mean overlap, {what}", f"{np.nanmean(overlap):.2f}" if np.isfinite(overlap).any() else "n/a",
                    help="Jaccard index of the source sets of every category in the two models")
    st.caption(f"“{views.short_name(names[target])}” inside each model {where}. "
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
        for model in (model_a, model_b):
            if centred:
                break
            if m is not None:
                if guard(load_all_best_subsets, root, model) is None:
                    job_ui(root, "best-subsets", {"model": model}, f"every best subset of {model}",
                           key=f"cmp-best-{model}",
                           note="The overlap over every category needs every category's best subsets in both models.")
                continue
            if guard(load_all_paths, root, model) is None or not guard(load_all_paths, root, model).complete:
                job_ui(root, "paths", {"model": model}, f"every α path of {model}", key=f"cmp-paths-{model}",
                       note="The overlap over every category needs every category's path in both models.")


def _best_vector(curve, m: int, k: int) -> np.ndarray:
    fit, out = curve.best[m - 1], np.zeros(k)
    out[fit.sources] = fit.coefs
    return out


def _best_overlap(root: str, model_a: str, model_b: str, m: int) -> tuple[np.ndarray | None, int]:
    """Jaccard overlap per target of the best subsets with at most ``m`` sources (or None
    before both ``best-subsets`` jobs ran)."""
    ba, bb = guard(load_all_best_subsets, root, model_a), guard(load_all_best_subsets, root, model_b)
    if ba is None or bb is None:
        return None, 0
    return views.overlap_by_target(ba.at(m), bb.at(m)), int(ba.n_targets)


def _overlap(root: str, model_a: str, model_b: str, alpha: float) -> tuple[np.ndarray | None, int]:
    """Jaccard overlap per target over the targets both ``paths`` jobs have solved (or None)."""
    pa, pb = guard(load_all_paths, root, model_a), guard(load_all_paths, root, model_b)
    if pa is None or pb is None:
        return None, 0
    common = np.intersect1d(pa.targets, pb.targets)
    if common.size == 0:
        return None, 0
    ia, ib = pa.nearest_alpha_index(alpha), pb.nearest_alpha_index(alpha)
    sa = guard(load_at_alpha, root, model_a, None, ia).select(np.searchsorted(pa.targets, common))
    sb = guard(load_at_alpha, root, model_b, None, ib).select(np.searchsorted(pb.targets, common))
    reached = pa.reached(ia)[np.searchsorted(pa.targets, common)] & pb.reached(ib)[np.searchsorted(pb.targets, common)]
    return views.overlap_by_target(sa, sb)[reached], int(common.size)


def main() -> None:
    page = store_page("Compare two models",
                "Neural dependencies between networks: B’s category as a sparse combination of A’s "
                "categories — and where the two models agree.")
    root, params = page.root, page.params
    model_a, model_b = _pick_models(page.names, params)
    store_a, store_b = guard(load_store, root, model_a), guard(load_store, root, model_b)
    guard(check_pairable, store_a, store_b)
    if guard(load_gramset_for, root, model_b, model_a) is None:
        st.info(f"The cross-Gram of {model_a} → {model_b} is not computed yet: one pass over both stores' "
                "logits (a GPU is used when there is one).", icon=":material/info:")
        job_ui(root, "gram", {"model": model_b, "source": model_a}, "the cross-Gram", key="cmp-gram")
        st.stop()
    rec = guard(load_recommendation, root, model_b, model_a)
    fallback = default_target(store_b.class_names, rec, guard(load_hint, root, model_b, model_a),
                              guard(load_recognised, root, model_b))
    # the target picker across the page: a full class name stays whole at 150 % zoom
    target = target_ui(store_b.class_names, params, label=f"Target category of {model_b}",
                       ids=category_ids(store_b.manifest),
                       default=opening_target(root, model_b, model_a, store_b.class_names, fallback))
    left, right = st.columns([3, 2], gap="medium")
    with left:
        method = method_ui(params, key="nde_method_between")
        logits = logits_ui(params, max(store_a.k, store_b.k), key="nde_centred_between")
    load_path, load_curve = path_and_curve_loaders(logits)  # centred: solved for this target now
    path = guard(load_path, root, model_b, model_a, target)
    curve = guard(load_curve, root, model_b, model_a, target)
    with left:  # the controls one above the other, the chart beside them
        if method == BEST:
            m, alpha, a_idx = sources_ui(curve, params, key="nde_m_between"), None, None
        else:
            m, (alpha, a_idx) = None, alpha_ui(path, target, params, key="nde_alpha_between")
    # what the page shows of the dependency: one cached call (issue 22)
    shown = guard(load_target_card, root, model_b, model_a, target, method, m=m, alpha_index=a_idx, logits=logits)
    with right:
        chart = sources_chart_ui(curve, shown, "R² against the number of sources")
    page.publish(model=model_b, source=model_a, target=target, method=method, m=m, alpha=alpha,
                 logits=CENTRED if logits == CENTRED else None)
    between = {**_between_section(root, model_a, model_b, store_a, store_b, target, shown, logits), "chart": chart}
    with st.sidebar:  # this view as a slide of the cache's talk (the Talk page)
        if logits == CENTRED:
            st.caption("Add to talk: the talk's slides show raw logits; switch centred logits off to add this view.")
        else:
            add_to_talk_ui(root, TalkSlide("between", model=model_b, source=model_a, target=between["target_name"],
                                           alpha=alpha, sources=m), key="cx-talk")
    st.divider()
    _within_section(root, model_a, model_b, store_a, store_b, target, alpha, m, logits)
    slug = f"{model_a}-to-{model_b}-t{target}-{shown.slug}" + ("-centred" if logits == CENTRED else "")
    with st.expander("Export this comparison", icon=":material/download:"):
        c = st.columns(3)
        with c[0]:
            download_ui("Dependencies (CSV)", between["frame"].to_csv(index=False), f"{slug}.csv", "text/csv",
                        "cx-csv")
            download_ui("R² vs sources (PNG)", lambda: charts.chart_png(between["chart"]), f"{slug}-sources.png",
                        "image/png", "cx-sources-png")
        with c[1]:
            download_ui("Dependencies (JSON)", with_logits(views.dependency_json(
                model_b, model_a, alpha, target, between["target_name"], between["frame"], between["metrics"],
                method=method, m=m), logits), f"{slug}.json", "application/json", "cx-json")
            download_ui("Star graph (HTML)", between["graph"].standalone, f"{slug}-graph.html", "text/html", "cx-html")
        with c[2]:
            download_ui("Table 1 card (Markdown)", views.metrics_markdown(
                model_b, model_a, between["target_name"], alpha, between["metrics"], between["formula"],
                method=method, m=m), f"{slug}-table1.md", "text/markdown", "cx-md")
            download_ui("R² vs sources (SVG)", lambda: charts.chart_svg(between["chart"]), f"{slug}-sources.svg",
                        "image/svg+xml", "cx-sources-svg")

main()
