"""Atlas: the global dependency graph of one model (the paper's Fig. 4), filtered so that it
stays readable at 1,000 categories and beyond: a few targets, their top-k sources — never
every node. Its edges are every target's best subset with at most m sources (the
``best-subsets`` job's result; the default when it exists) or the paper's CovLasso at α. It reads every target's path from the ``paths`` job (the targets solved so far
while it runs, said so) and the communities from the ``atlas`` job; it solves nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.components import state
from dashboard.components.graph import atlas_graph
from dashboard.components.jobs_ui import job_ui
from dashboard.components.loaders import (
    class_images,
    load_all_best_subsets,
    load_all_paths,
    load_at_alpha,
    load_communities,
    load_gramset_for,
    load_store,
    load_theory,
    paths_status,
)
from dashboard.components.sources_ui import BEST, LASSO, method_ui, plain_sources_ui
from dashboard.components.tables import frame_table_html
from dashboard.components.widgets import (
    alpha_digits,
    default_alpha,
    download_ui,
    guard,
    model_ui,
    paged_table_ui,
    store_page,
    view_caption,
)
from engine.apps import views
from engine.core.analysis import dependency_graph
from engine.core.categories import category_ids, search_categories

MAX_TARGETS = 60  # targets drawn at most (each with its top-k sources)


def _alpha_ui(path, params) -> tuple[float, int]:
    options = [float(a) for a in path.alphas[::-1]]
    key = "nde_alpha_atlas"
    state.restore(key)
    if "alpha" in params:
        wanted = state.parse_alpha(params["alpha"])
        if wanted is not None:
            st.session_state[key] = options[::-1][path.nearest_alpha_index(wanted)]
    if st.session_state.get(key) not in options:
        st.session_state[key] = default_alpha(options, float(np.median(path.alpha_max_held)))
    state.pin(key)
    digits = alpha_digits(options)
    value = st.select_slider("α (log scale)", options=options, key=key, format_func=lambda a: f"{a:.{digits}g}")
    state.remember(key, value)
    return float(value), path.nearest_alpha_index(value)


def _controls(params, scale_ui) -> dict:
    """The filters; ``scale_ui`` draws the first one (α, or the number of sources) and returns
    its entries (alpha, a_idx, m, at: the words for it, slug: for file names)."""
    c = st.columns([2, 1, 1, 1], gap="medium")
    with c[0]:
        scale = scale_ui()
    with c[1]:
        top_k = st.slider("Sources per target (top-k)", 1, 10, 4, key="atlas_topk")
    with c[2]:
        min_coef = st.number_input("Min |coefficient|", 0.0, 10.0, 0.05, step=0.01, format="%.3f", key="atlas_min")
    with c[3]:
        limit = st.slider("Targets shown", 1, MAX_TARGETS, 12, key="atlas_limit")
    state.restore("atlas_q")
    if "q" in params:
        st.session_state["atlas_q"] = params["q"]
    state.pin("atlas_q")
    search, community = st.columns(2, gap="medium")
    with search:
        query = st.text_input("Find categories by name or id (empty: the strongest dependencies)", key="atlas_q",
                              placeholder="e.g. LATIN SMALL LETTER E, a single character, or n01440764")
    state.remember("atlas_q", query)
    return {**scale, "top_k": top_k, "min_coef": float(min_coef), "limit": limit,
            "query": query, "community_slot": community}


def _paths_or_job(root: str, model: str):
    """Every target's path as far as the job got; the job's progress or button otherwise."""
    if guard(load_gramset_for, root, model) is None:
        st.info(f"Store `{model}` has no Gram yet.", icon=":material/info:")
        job_ui(root, "gram", {"model": model}, f"the Gram of {model}", key="atlas-gram")
        st.stop()
    path = guard(load_all_paths, root, model)
    if path is None or not path.complete:
        status = guard(paths_status, root, model)
        if path is not None:
            st.warning(f"Partial atlas: {status.solved:,} of {status.total:,} categories solved so far "
                       "(the job is still going, or was stopped); everything below is over those.",
                       icon=":material/hourglass_top:")
        job_ui(root, "paths", {"model": model}, "every target's α path", key="atlas-paths",
               note="The atlas is built from every category's dependency at each α: one job, in chunks of "
                    "categories (a killed job resumes; this page uses the chunks done so far).")
        if path is None:
            st.stop()
    return path


@dataclass(frozen=True)
class _EveryTarget:
    """Every target held (the ``best-subsets`` job's result), read as the page reads a path's."""

    n: int
    within: bool
    complete: bool = True

    @property
    def targets(self) -> np.ndarray:
        return np.arange(self.n)

    def has(self, target: int) -> bool:
        return 0 <= target < self.n

    def position(self, target: int) -> int:
        return int(target)

    def reached(self, _index) -> np.ndarray:
        return np.ones(self.n, dtype=bool)


def _alpha_scale(path, params) -> dict:
    alpha, a_idx = _alpha_ui(path, params)
    return {"alpha": alpha, "a_idx": a_idx, "m": None, "at": f"at α = {alpha:.3g}", "slug": f"a{alpha:.3g}"}


def _sources_scale(params) -> dict:
    m = plain_sources_ui(params, key="nde_m_atlas")
    return {"alpha": None, "a_idx": None, "m": m, "at": f"with at most {m} sources (best subset)", "slug": f"m{m}"}


def _method_and_data(root: str, model: str, params: dict):
    """The method (best subset when every target's best subsets exist, else the paper's
    CovLasso), the targets held (a path, or every target), and the filters."""
    if guard(load_gramset_for, root, model) is None:
        _paths_or_job(root, model)  # says so and stops
    best = guard(load_all_best_subsets, root, model)
    method = method_ui(params, key="nde_method_atlas", default=BEST if best is not None else LASSO)
    if method == BEST:
        if best is None:
            job_ui(root, "best-subsets", {"model": model}, "every target's best subsets", key="atlas-best",
                   note="The best-subset atlas is built from every category's best few sources: one job "
                        "(seconds at 1,000 categories). The paper's CovLasso atlas is one click above.")
            st.stop()
        held = _EveryTarget(best.n_targets, within=True)
        return method, best, held, _controls(params, lambda: _sources_scale(params))
    path = _paths_or_job(root, model)
    return method, None, path, _controls(params, lambda: _alpha_scale(path, params))


def main() -> None:
    page = store_page("Atlas of dependencies",
                      "The global graph (the paper’s Fig. 4): chosen targets in the middle, the categories they "
                      "depend on around them. Filter to keep it readable.")
    root, params = page.root, page.params
    model = model_ui(page.names, params)
    store = guard(load_store, root, model)
    class_names = store.class_names
    method, best, path, ctl = _method_and_data(root, model, params)
    page.publish(model=model, method=method, m=ctl["m"], alpha=ctl["alpha"], q=ctl["query"] or None)
    if method == BEST:  # coloured by the CovLasso graph's communities (the demo or the atlas job made them)
        coef, found = best.at(ctl["m"]), _lasso_communities(root, model)
    else:
        coef = guard(load_at_alpha, root, model, None, ctl["a_idx"])
        found = load_communities(root, model, ctl["a_idx"], ctl["top_k"], ctl["min_coef"]) if path.complete else None
    reached = path.reached(ctl["a_idx"])
    community_of = {node: k for k, members in enumerate(found or []) for node in members}
    candidates, searched = _candidates(ctl, found, class_names, category_ids(store.manifest))
    candidates = [t for t in candidates if path.has(t) and reached[path.position(t)]]
    targets = views.pick_targets(coef, path.targets, candidates, ctl["limit"], keep_order=searched)
    if not targets:
        st.info(f"None of these categories has a dependency {ctl['at']}; lower α or the minimum "
                "coefficient.", icon=":material/block:")
        st.stop()
    graph = dependency_graph(coef, class_names, class_names, held=path.targets, targets=targets,
                             min_abs_coef=ctl["min_coef"], top_k=ctl["top_k"])
    images = class_images(root, model, list(graph.nodes))
    view = atlas_graph(graph, views.atlas_layout(graph, targets), set(targets), community_of, images,
                       title=f"{model} atlas, {ctl['at']}")
    view_caption(f"{model} · {ctl['at']} · top {ctl['top_k']} sources per target · |θ| ≥ "
                 f"{ctl['min_coef']:g} · {len(targets)} targets" + (f" · search {ctl['query']!r}" if ctl["query"] else ""),
                 model=model, method=method, m=ctl["m"], alpha=ctl["alpha"], top_k=ctl["top_k"],
                 min_coef=ctl["min_coef"], limit=ctl["limit"], q=ctl["query"])
    st.iframe(view.embedded(), height=800)
    _communities_section(root, model, path, found, class_names, ctl)
    _tables(root, model, coef, path, class_names, ctl["at"], ctl["a_idx"])
    _exports(model, ctl, coef, path, class_names, view, graph)


def _candidates(ctl: dict, found, class_names: list[str], ids) -> tuple[list[int], bool]:
    """The categories to draw, and whether they are a search's matches (best first: the graph
    keeps that order) rather than a community or every category (strongest first)."""
    if found:
        labels = ["(none)"] + [
            f"#{k + 1} · {len(m)} categories: {', '.join(views.short_name(class_names[i], 12) for i in m[:8])}"
            for k, m in enumerate(found[:200]) if len(m) > 1]
        with ctl["community_slot"]:
            pick = st.selectbox("…or show one community", labels, key="atlas_comm")
        if pick != "(none)":
            return [int(i) for i in found[int(pick.split(" ", 1)[0][1:]) - 1]], False
    if not ctl["query"]:
        return list(range(len(class_names))), False
    candidates = search_categories(class_names, ctl["query"], ids)
    if not candidates:
        st.info(f"No category matches {ctl['query']!r}.", icon=":material/search:")
        st.stop()
    return candidates, True


# The CovLasso graph whose communities colour the best-subset atlas: the page's own defaults,
# at the α it opens on (what ``python -m engine demo`` prepares)
COMMUNITY_TOP_K, COMMUNITY_MIN_COEF = 4, 0.05


def _lasso_communities(root: str, model: str) -> list[list[int]] | None:
    """The Louvain communities of the paper's CovLasso graph at the α the CovLasso atlas opens
    on and its default filters, when the demo or the ``atlas`` job made them; else None."""
    from engine.stages.atlas import default_alpha_index

    every = guard(load_all_paths, root, model)
    if every is None or not every.complete:
        return None
    return load_communities(root, model, default_alpha_index(every), COMMUNITY_TOP_K, COMMUNITY_MIN_COEF)


def _communities_section(root, model, path, found, class_names, ctl) -> None:
    st.subheader("Communities")
    if ctl["m"] is not None:
        if found is None:
            st.caption("Communities are found on the paper's CovLasso graph at α (the Method above): the `atlas` "
                       "job, or `python -m engine demo` for the embedded default.")
            return
        st.caption(f"Louvain communities of the paper's CovLasso graph at its opening α (top {COMMUNITY_TOP_K} "
                   f"sources per target, |θ| ≥ {COMMUNITY_MIN_COEF:g}): the node colours above. The best "
                   "subsets draw the edges.")
    if found is None:
        if path.complete:
            job_ui(root, "atlas", {"model": model, "alpha": ctl["alpha"], "top_k": ctl["top_k"],
                                   "min_coef": ctl["min_coef"]},
                   f"the communities at α = {ctl['alpha']:.3g}", key="atlas-comm",
                   note="Louvain communities of every category's top-k graph at this α (all-target work).")
        else:
            st.caption("Communities are found once every category's path is solved.")
        return
    rows = [{"#": k + 1, "size": len(m), "members": " ".join(views.short_name(class_names[i], 16) for i in m[:40])
             + (f" … (+{len(m) - 40})" if len(m) > 40 else "")}
            for k, m in enumerate(found) if len(m) > 1]
    paged_table_ui(pd.DataFrame(rows), "atlas-comm-page", [("#", "#", "{:.0f}"), ("size", "size", "{:.0f}"),
                                                           ("members", "members", "text")],
                   page_size=30, max_height=320)


def _tables(root, model, coef, path, class_names, at: str, a_idx) -> None:
    # one below the other: side by side, five columns of the redundancy table did not fit 150 % zoom
    st.subheader("Most depended-on")
    st.html(frame_table_html(views.most_depended_on(coef, class_names, 30),
                             [("name", "category", "text"), ("targets", "targets", "{:.0f}"),
                              ("sum |coef|", "sum |θ|", "{:.3f}")]))
    st.caption(f"Sources used by the most targets {at}"
               + ("." if path.complete else f" (over the {len(path.targets):,} targets solved so far)."))
    st.subheader("Most redundant")
    if not path.within:
        st.info("Redundancy is defined within one model.")
        return
    theory = guard(load_theory, root, model)
    if theory is None:
        job_ui(root, "theory", {"model": model}, "redundancy and spectrum", key="atlas-theory",
               note="r_i needs an eigendecomposition of the Gram (all-target work).")
        return
    frame = views.most_redundant(theory.redundancy, class_names, 30)
    gs = guard(load_gramset_for, root, model)
    held = np.array([path.has(int(t)) and path.reached(a_idx)[path.position(int(t))] for t in frame["index"]])
    err, r2 = np.full(len(frame), np.nan), np.full(len(frame), np.nan)
    if held.any():
        rows = frame["index"].to_numpy()[held]
        err[held], r2[held] = views.sparse_fit(gs, coef.select(np.searchsorted(path.targets, rows)), rows)
    frame["rel. error"] = err
    frame["R²"] = r2
    st.html(frame_table_html(frame, [("name", "category", "text"), ("redundancy", "r_i", "{:.2e}"),
                                     ("exact", "exact", "check"), ("rel. error", "rel. error", "{:.2e}"),
                                     ("R²", "R²", "{:.4f}")]))
    st.caption(f"r_i: smallest relative error from all other categories (exact: 0 at the data's "
               f"precision; those are ordered by how much of their axis lies in the null space of C, "
               f"see Theory). Rel. error: the sparse dependency's squared error over E[f_t²], and R² its "
               f"share of f_t's variance explained, {at}.")


def _exports(model, ctl, coef, path, class_names, view, graph) -> None:
    slug = f"{model}-atlas-{ctl['slug']}"
    edges = pd.DataFrame([{"source": u, "source_name": graph.nodes[u]["name"], "target": v,
                           "target_name": graph.nodes[v]["name"], "coef": d["coef"]}
                          for u, v, d in graph.edges(data=True)])
    every = "Every dependency" if path.complete else f"The {len(path.targets):,} targets solved so far:"
    with st.expander("Export", icon=":material/download:"):
        c = st.columns(3)
        with c[0]:
            download_ui("Graph (HTML)", view.standalone, f"{slug}.html", "text/html", "ax-html")
        with c[1]:
            download_ui("Shown edges (CSV)", edges.to_csv(index=False), f"{slug}-edges.csv", "text/csv", "ax-csv")
        with c[2]:
            download_ui(f"{every} {ctl['at']} (CSV)",
                        lambda: "".join(views.dependencies_csv(coef, path.targets, class_names, class_names)),
                        f"{slug}-all.csv", "text/csv", "ax-all")


main()
