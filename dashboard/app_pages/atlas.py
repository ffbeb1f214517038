"""Atlas: the global dependency graph of one model (the paper's Fig. 4), filtered so that it
stays readable at 1,000 categories and beyond: a few targets, their top-k sources.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.components import state
from dashboard.components.graph import atlas_graph
from dashboard.components.loaders import (
    _stamp,
    class_images,
    load_coef_matrix,
    load_gramset_for,
    load_path,
    load_redundancy,
    load_store,
)
from dashboard.components.widgets import (
    alpha_digits,
    default_alpha,
    download_ui,
    guard,
    model_ui,
    store_page,
)
from engine import views
from engine.analysis import dependency_graph


@st.cache_resource(max_entries=16, show_spinner="Finding communities of the whole graph…")
def _communities(root: str, model: str, alpha_index: int, min_coef: float, top_k: int, stamp: tuple):
    store = load_store(root, model)
    coef = load_coef_matrix(root, model, None, alpha_index)
    graph = dependency_graph(coef, store.class_names, store.class_names, min_abs_coef=min_coef, top_k=top_k)
    graph.remove_nodes_from([n for n in list(graph.nodes) if graph.degree(n) == 0])
    found = views.communities(graph)
    return found, {node: k for k, members in enumerate(found) for node in members}


def _alpha_ui(path, params) -> tuple[float, int]:
    options = [float(a) for a in path.alphas[::-1]]
    key = "nde_alpha_atlas"
    state.restore(key)
    if "alpha" in params:
        wanted = state.parse_alpha(params["alpha"])
        if wanted is not None:
            st.session_state[key] = options[::-1][path.nearest_alpha_index(wanted)]
    if st.session_state.get(key) not in options:
        st.session_state[key] = default_alpha(options, float(np.median(path.alpha_max)))
    digits = alpha_digits(options)
    value = st.select_slider("α (log scale)", options=options, key=key, format_func=lambda a: f"{a:.{digits}g}")
    state.remember(key, value)
    return float(value), path.nearest_alpha_index(value)


def _controls(path, coef, params) -> dict:
    c = st.columns([2, 1, 1, 1], gap="medium")
    with c[0]:
        alpha, a_idx = _alpha_ui(path, params)
    with c[1]:
        top_k = st.slider("Sources per target (top-k)", 1, 10, 4, key="atlas_topk")
    with c[2]:
        biggest = float(np.abs(coef).max()) if coef.size else 1.0
        min_coef = st.number_input("Min |coefficient|", 0.0, max(biggest, 1e-6), 0.05 if biggest > 0.05 else 0.0,
                                   step=0.01, format="%.3f", key="atlas_min")
    with c[3]:
        limit = st.slider("Targets shown", 1, 60, 12, key="atlas_limit")
    state.restore("atlas_q")
    if "q" in params:
        st.session_state["atlas_q"] = params["q"]
    search, community = st.columns(2, gap="medium")
    with search:
        query = st.text_input("Find categories by name (empty: the strongest dependencies)", key="atlas_q",
                              placeholder="e.g. LATIN SMALL LETTER E, or a single character")
    state.remember("atlas_q", query)
    return {"alpha": alpha, "a_idx": a_idx, "top_k": top_k, "min_coef": float(min_coef), "limit": limit,
            "query": query, "community_slot": community}


def main() -> None:
    page = store_page("Atlas of dependencies",
                "The global graph (the paper’s Fig. 4): chosen targets in the middle, the categories they "
                "depend on around them. Filter to keep it readable.")
    root, params = page.root, page.params
    model = model_ui(page.names, params)
    store = guard(load_store, root, model)
    path = guard(load_path, root, model)
    class_names = store.class_names
    coef0 = load_coef_matrix(root, model, None, path.nearest_alpha_index(float(np.median(path.alpha_max))))
    ctl = _controls(path, coef0, params)
    page.publish(model=model, alpha=ctl["alpha"], q=ctl["query"] or None)
    coef = load_coef_matrix(root, model, None, ctl["a_idx"])
    found, community_of = _communities(root, model, ctl["a_idx"], ctl["min_coef"], ctl["top_k"],
                                       _stamp(root, model))

    community_labels = ["(none)"] + [
        f"#{k + 1} · {len(m)} categories: {', '.join(views.short_name(class_names[i], 12) for i in m[:8])}"
        for k, m in enumerate(found) if len(m) > 1]
    with ctl["community_slot"]:
        pick = st.selectbox("…or show one community", community_labels, key="atlas_comm")
    if pick != "(none)":
        members = found[int(pick.split(" ", 1)[0][1:]) - 1]
        candidates = [int(i) for i in members]
    else:
        candidates = views.search_classes(class_names, ctl["query"])
        if ctl["query"] and not candidates:
            st.info(f"No category matches {ctl['query']!r}.", icon=":material/search:")
            st.stop()
    targets = views.pick_targets(coef, candidates, ctl["limit"])
    if not targets:
        st.info("None of these categories has a dependency at this α; lower α or the minimum "
                "coefficient.", icon=":material/block:")
        st.stop()
    graph = dependency_graph(coef, class_names, class_names, targets=targets,
                             min_abs_coef=ctl["min_coef"], top_k=ctl["top_k"])
    images = class_images(root, model, list(graph.nodes))
    view = atlas_graph(graph, views.atlas_layout(graph, targets), set(targets), community_of, images,
                       title=f"{model} atlas, α = {ctl['alpha']:.3g}")
    st.iframe(view.embedded(), height=800)
    _tables(root, model, coef, class_names, found, path.within, ctl["alpha"])
    _exports(model, ctl, coef, class_names, view, graph)


def _tables(root, model, coef, class_names, found, within, alpha) -> None:
    st.subheader("Communities")
    rows = [{"#": k + 1, "size": len(m), "members": " ".join(views.short_name(class_names[i], 16) for i in m[:40])}
            for k, m in enumerate(found) if len(m) > 1][:30]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", height=min(38 + 35 * len(rows), 320),
                 column_config={"#": st.column_config.NumberColumn(width=40),
                                "size": st.column_config.NumberColumn(width=60),
                                "members": st.column_config.TextColumn(width=1100)})
    c1, c2 = st.columns(2, gap="large")
    with c1:
        st.subheader("Most depended-on")
        st.dataframe(views.most_depended_on(coef, class_names, 30), hide_index=True, width="stretch",
                     height=420, column_config={"index": None,
                                                "name": st.column_config.TextColumn("category", width=320),
                                                "targets": st.column_config.NumberColumn(width=80),
                                                "sum |coef|": st.column_config.NumberColumn(format="%.3f",
                                                                                           width=100)})
        st.caption(f"Sources used by the most targets at α = {alpha:.3g}.")
    with c2:
        st.subheader("Most redundant")
        if within:
            red = guard(load_redundancy, root, model)
            gs = guard(load_gramset_for, root, model)
            err = views.sparse_relative_error(gs.design, gs.rhs, gs.target_sq, coef)
            r2 = views.sparse_r2(gs.design, gs.rhs, gs.target_sq, load_store(root, model).logits.mean(0), coef)
            st.dataframe(views.most_redundant(red, class_names, 30, err, r2), hide_index=True, width="stretch",
                         height=420, column_config={
                             "index": None, "null-space share": None,
                             "name": st.column_config.TextColumn("category", width=230),
                             "redundancy": st.column_config.NumberColumn("r_i", format="%.3e", width=95),
                             "exact": st.column_config.CheckboxColumn("exact", width=60),
                             "rel. error at α": st.column_config.NumberColumn(format="%.2e", width=120),
                             "R² at α": st.column_config.NumberColumn(format="%.4f", width=90)})
            st.caption(f"r_i: smallest relative error from all other categories (exact: 0 at the data's "
                       f"precision; those are ordered by how much of their axis lies in the null space of C, "
                       f"see Theory). Rel. error at α: the sparse dependency's squared error over E[f_t²], and R² its share of "
                       f"f_t's variance explained, at α = {alpha:.3g}.")
        else:
            st.info("Redundancy is defined within one model.")


def _exports(model, ctl, coef, class_names, view, graph) -> None:
    slug = f"{model}-atlas-a{ctl['alpha']:.3g}"
    edges = pd.DataFrame([{"source": u, "source_name": graph.nodes[u]["name"], "target": v,
                           "target_name": graph.nodes[v]["name"], "coef": d["coef"]}
                          for u, v, d in graph.edges(data=True)])
    with st.expander("Export", icon=":material/download:"):
        c = st.columns(3)
        with c[0]:
            download_ui("Graph (HTML)", view.standalone, f"{slug}.html", "text/html", "ax-html")
        with c[1]:
            download_ui("Shown edges (CSV)", edges.to_csv(index=False), f"{slug}-edges.csv", "text/csv", "ax-csv")
        with c[2]:
            download_ui("Every dependency at this α (CSV)",
                        lambda: views.all_dependencies_frame(coef, class_names, class_names).to_csv(index=False),
                        f"{slug}-all.csv", "text/csv", "ax-all")


main()
