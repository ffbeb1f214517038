"""Theory: why dependencies exist (redundancy r_i, the Gram's spectrum) and why they are sparse
(Conjecture 1's screening rule, checked against the exact solutions at every α).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.components import charts, state
from dashboard.components.loaders import (
    cache_root,
    load_path,
    load_redundancy,
    load_screening,
    load_spectrum,
    load_store,
    store_names,
)
from dashboard.components.shell import require_shell
from dashboard.components.widgets import download_ui, guard, model_ui, page_header, require_stores
from engine import views


def _chart_downloads(chart, slug: str, key: str) -> None:
    a, b, _ = st.columns([1, 1, 3])
    with a:
        download_ui("PNG", lambda: charts.chart_png(chart), f"{slug}.png", "image/png", f"{key}-png")
    with b:
        download_ui("SVG", lambda: charts.chart_svg(chart), f"{slug}.svg", "image/svg+xml", f"{key}-svg")


def _redundancy_section(root: str, model: str, names: list[str]) -> None:
    st.subheader("Redundancy r_i — what brings dependencies")
    r, precision = guard(load_redundancy, root, model)
    c = st.columns(4)
    c[0].metric("Median r_i", f"{np.median(r):.2e}")
    c[1].metric("Categories with r_i < 1 %", f"{int((r < 0.01).sum())} / {len(r)}")
    c[2].metric("Exactly predictable (r_i = 0)", int((r == 0).sum()))
    c[3].metric("Relative precision", f"{precision:.1e}", help="≈ machine ε × condition number of the "
                "scaled Gram: r_i below this is indistinguishable from 0")
    st.caption("r_i = 1 / (C_ii (C⁻¹)_ii) is the smallest relative error of predicting category i "
               "from all the others (paper §2.2); small r_i ⇒ i is redundant ⇒ it has neural "
               "dependencies. Computed stably from the eigendecomposition of the scaled Gram.")
    left, right = st.columns([3, 2], gap="large")
    with left:
        chart = charts.histogram(r, "r_i", "Redundancy of every category", log_x=True)
        charts.show(chart)
        _chart_downloads(chart, f"{model}-redundancy", "th-r")
    with right:
        st.dataframe(views.most_redundant(r, names, len(r)), hide_index=True, width="stretch", height=380,
                     column_config={"redundancy": st.column_config.NumberColumn("r_i", format="%.3e")})


def _screening_section(root: str, model: str) -> None:
    st.subheader("Conjecture 1 — what brings sparsity")
    points = guard(load_screening, root, model)
    rows = []
    for p in points:
        rows += [{"alpha": p.alpha, "measure": "precision (screened ⇒ zero)", "value": p.check.precision},
                 {"alpha": p.alpha, "measure": "recall (zeros screened)", "value": p.check.recall}]
    frame = pd.DataFrame(rows)
    table = pd.DataFrame([{"α": p.alpha, "screened": p.check.screened, "violations": p.check.violations,
                           "precision": p.check.precision, "recall": p.check.recall,
                           "median sources": p.median_sources} for p in points])
    held = sum(p.check.violations == 0 for p in points)
    st.caption(f"The rule |C_tj| < α ⇒ θ_j = 0 is not guaranteed (paper §2.3). Checked on every "
               f"(target, source) pair at each α of the path: it never fails at {held} of the "
               f"{len(points)} α values; precision is the share of screened pairs that really are zero.")
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


def _spectrum_section(root: str, model: str) -> None:
    st.subheader("The Gram’s spectrum")
    lam = guard(load_spectrum, root, model)
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
    require_shell()
    root = cache_root()
    names = store_names(root)
    page_header("Theory", "Redundancy brings dependencies; low covariance brings sparsity (paper §2.2–2.3).")
    require_stores(names, root)
    notes = st.container()
    params = state.incoming()
    model = model_ui(names, params)
    state.publish(model=model)
    with notes:
        state.show_messages()
    store = guard(load_store, root, model)
    guard(load_path, root, model)
    _redundancy_section(root, model, store.class_names)
    st.divider()
    _screening_section(root, model)
    st.divider()
    _spectrum_section(root, model)


main()
