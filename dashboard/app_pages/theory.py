"""Theory: why dependencies exist (redundancy r_i, the Gram's spectrum) and why they are sparse
(Conjecture 1's screening rule, checked against the exact solutions at every α).

All three cover every category: they are read from the ``theory`` job (eigendecompositions
of the Gram) and the ``paths`` job (every path, then Conjecture 1); the page starts the jobs
and shows their progress, and computes nothing itself.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.components import charts
from dashboard.components.jobs_ui import job_ui
from dashboard.components.loaders import (
    load_gramset_for,
    load_screening,
    load_store,
    load_theory,
    paths_status,
)
from dashboard.components.widgets import (
    download_ui,
    guard,
    model_ui,
    paged_table_ui,
    store_page,
    view_caption,
)
from engine.apps import views


def _chart_downloads(chart, slug: str, key: str) -> None:
    with st.container(horizontal=True):  # each button as wide as its label ("P/N/G" in a narrow column)
        download_ui("PNG", lambda: charts.chart_png(chart), f"{slug}.png", "image/png", f"{key}-png", width="content")
        download_ui("SVG", lambda: charts.chart_svg(chart), f"{slug}.svg", "image/svg+xml", f"{key}-svg",
                    width="content")


def _redundancy_section(root: str, model: str, names: list[str], red) -> None:
    st.subheader("Redundancy r_i — what brings dependencies")
    k, n_exact = len(red.r), int(red.exact.sum())
    resolved = red.r[~red.exact]
    c = st.columns(4)
    c[0].metric("Dimensions the logits span", f"{red.rank} / {k}",
                help="Eigenvalues of the scaled Gram above the floor ρ: the numerical rank of C")
    c[1].metric("Exactly redundant (r_i = 0)", f"{n_exact} / {k}",
                help="A linear combination of the other categories up to the data's rounding")
    c[2].metric("Median r_i, not exact", f"{np.median(resolved):.2e}" if resolved.size else "—",
                help="Over the categories that are not exact combinations of the others")
    c[3].metric("Floor ρ (precision)", f"{red.floor:.0e} (±{100 * red.rel_precision:.2g} %)",
                help="Eigenvalues of the scaled Gram below ρ cannot be told from 0 (rounding of the Gram and "
                     "of the logits); every r_i is accurate to the relative precision in brackets")
    st.caption(
        "r_i = 1 / (C_ii (C⁻¹)_ii) is the smallest relative error of predicting category i from all the "
        "others (paper §2.2): small r_i ⇒ i is redundant ⇒ it has neural dependencies. Computed from the "
        "float64 eigendecomposition of the scaled Gram, eigenvalues below ρ raised to ρ."
        + (f" The logits span {red.rank} dimensions for {k} categories (the penultimate layer's width, "
           f"plus the bias): {n_exact} categories are exact combinations of the others, r_i = 0 at the data's "
           "precision. Their value here, ≈ ρ / null share (the share of the category's axis in the null space "
           "of C), orders them by the paper's geometric view instead of by rounding noise." if n_exact else ""))
    st.markdown(redundancy_in_words(k, n_exact, red.rank, resolved))
    left, right = st.columns(2, gap="large")
    with left:
        chart = charts.redundancy_histogram(red.r, red.exact, red.floor, "Redundancy of every category")
        charts.show(chart)
        _chart_downloads(chart, f"{model}-redundancy", "th-r")
    with right:
        paged_table_ui(views.most_redundant(red, names, None), "th-red-page",
                       [("name", "category", "text"), ("redundancy", "r_i", "{:.2e}"), ("exact", "exact", "check"),
                        ("null-space share", "null share", "{:.3f}")], page_size=100)


def redundancy_in_words(k: int, n_exact: int, rank: int, resolved: np.ndarray) -> str:
    """What the redundancy numbers mean for these models, in one plain sentence or two."""
    if n_exact == k:
        return (f"**In plain words:** every one of the {k:,} categories is an exact linear combination of the "
                f"others — the logits span only {rank:,} dimensions, so any category's logit can be rebuilt "
                "from the rest without error. That is why dependencies exist here at all; which few sources "
                "suffice is the sparse question the other pages answer.")
    if n_exact:
        return (f"**In plain words:** {n_exact:,} of the {k:,} categories are exact combinations of the others "
                f"(the logits span {rank:,} dimensions); the other {k - n_exact:,} can be predicted from the rest "
                f"with a median relative error of {np.median(resolved):.1e}.")
    return (f"**In plain words:** no category is an exact combination of the others; predicted from all the "
            f"rest, a category's logit keeps a median relative error of {np.median(resolved):.1e} — the "
            "smaller, the more redundant.")


def _screening_section(root: str, model: str) -> None:
    st.subheader("Conjecture 1 — what brings sparsity")
    points = guard(load_screening, root, model)
    if points is None:
        status = guard(paths_status, root, model)
        if status.solved >= status.total:  # the paths are done: only the check is left (the same job ends with it)
            job_ui(root, "paths", {"model": model}, "the check of Conjecture 1", key="th-paths",
                   note=f"Every target's α path is solved ({status.total:,} of {status.total:,}); what is left is "
                        "checking the rule on every (target, source) pair at every α of the paths (the end of the "
                        "`paths` job; the solved paths are kept).")
        else:
            job_ui(root, "paths", {"model": model}, "every target's α path and Conjecture 1", key="th-paths",
                   note=f"Checked on every (target, source) pair at every α of the path, once every target's path "
                        f"is solved ({status.solved:,} of {status.total:,} so far).")
        return
    rows = []
    for p in points:
        rows += [{"alpha": p.alpha, "measure": "precision", "value": p.check.precision},  # short: the legend
                 {"alpha": p.alpha, "measure": "recall", "value": p.check.recall}]          # fits 150 % zoom
    frame = pd.DataFrame(rows)
    table = pd.DataFrame([{"α": p.alpha, "screened": p.check.screened, "violations": p.check.violations,
                           "precision": p.check.precision, "recall": p.check.recall,
                           "median sources": p.median_sources} for p in points])
    held = sum(p.check.violations == 0 for p in points)
    st.caption(f"The rule |C_tj| < α ⇒ θ_j = 0 is not guaranteed (paper §2.3). Checked on every "
               f"(target, source) pair at each α of the path: it never fails at {held} of the "
               f"{len(points)} α values; precision is the share of screened pairs that really are zero, recall the share "
               f"of the zero coefficients that the rule screens.")
    left, right = st.columns(2, gap="large")
    with left:
        chart = charts.screening_chart(frame, "Conjecture 1 against the exact solutions")
        charts.show(chart)
        _chart_downloads(chart, f"{model}-conjecture1", "th-c")
    with right:
        support = charts.support_chart(pd.DataFrame({"alpha": [p.alpha for p in points],
                                                     "median_sources": [p.median_sources for p in points]}),
                                       "Sparsity: median sources per target", height=340)
        charts.show(support)
    with st.expander("Numbers per α"):
        st.dataframe(table, hide_index=True, width="stretch",
                     column_config={"α": st.column_config.NumberColumn(format="%.4g"),
                                    "precision": st.column_config.NumberColumn(format="%.5f"),
                                    "recall": st.column_config.NumberColumn(format="%.4f")})


def _spectrum_section(model: str, lam) -> None:
    st.subheader("The Gram’s spectrum")
    positive = lam[lam > 0]
    c = st.columns(3)
    c[0].metric("Largest eigenvalue", f"{lam[0]:.3g}")
    c[1].metric("Smallest eigenvalue", f"{lam[-1]:.3g}")
    c[2].metric("Condition number", f"{lam[0] / positive[-1]:.2e}" if positive.size else "∞")
    st.caption("Tiny eigenvalues are why C⁻¹ is numerically fragile (the paper’s Remark 2) and why "
               "categories near their eigenvectors are redundant.")
    chart = charts.spectrum_chart(lam, "Eigenvalues of C = E[f fᵀ]")
    charts.show(chart)
    _chart_downloads(chart, f"{model}-spectrum", "th-s")


def main() -> None:
    page = store_page("Theory", "Redundancy brings dependencies; low covariance brings sparsity (paper §2.2–2.3).")
    root = page.root
    model = model_ui(page.names, page.params)
    page.publish(model=model)
    store = guard(load_store, root, model)
    view_caption(f"{model} · {store.k:,} categories", model=model)
    if guard(load_gramset_for, root, model) is None:
        st.info(f"Store `{model}` has no Gram yet.", icon=":material/info:")
        job_ui(root, "gram", {"model": model}, f"the Gram of {model}", key="th-gram")
        st.stop()
    theory = guard(load_theory, root, model)
    if theory is None:
        st.subheader("Redundancy r_i and the Gram’s spectrum")
        job_ui(root, "theory", {"model": model}, "redundancy and the spectrum", key="th-theory",
               note=f"Two eigendecompositions of the {store.k:,} × {store.k:,} Gram (K³ work: about a second at "
                    "1,000 categories, most of an hour on two cores at 21,843; minutes on a GPU machine).")
    else:
        _redundancy_section(root, model, store.class_names, theory.redundancy)
    st.divider()
    _screening_section(root, model)
    if theory is not None:
        st.divider()
        _spectrum_section(model, theory.spectrum)


main()
