"""Emergence: how neural dependencies appear as a model trains and as its categories grow.

Each figure of ``engine.core.emergence`` (top-1, the share of categories fitting with ≤ 4 / ≤ 6
sources, the median R², the effective rank, redundancy) against the epoch (one line per
number of categories) and against the number of categories (one line per checkpoint). The
embedded default reads the measurements shipped with the project (``engine/weights/
emergence-glyph-vgg.json``: no job, no training); the sweeps of this cache come from
``emergence`` jobs, which this page starts. Nothing is computed here.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.components.jobs_ui import job_ui
from dashboard.components.loaders import cache_root
from dashboard.components.widgets import page_header
from engine.core.emergence import FIGURES, describe_emergence
from engine.jobs import list_jobs
from engine.jobs.reports import load_report
from engine.storage.store import Cache

SHIPPED = Path(__file__).resolve().parents[2] / "engine" / "weights" / "emergence-glyph-vgg.json"
DEFAULT_FIGURES = ["top1", "fit_6", "median_r2_4", "effective_rank"]


@st.cache_data(show_spinner=False)
def _shipped(path: str, mtime: float) -> dict | None:  # noqa: ARG001 - mtime keys the cache
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _sweeps(root: str) -> dict[str, dict]:
    """Label → report: the shipped measurements, then every finished emergence job of the cache."""
    out: dict[str, dict] = {}
    if SHIPPED.exists():
        shipped = _shipped(str(SHIPPED), SHIPPED.stat().st_mtime)
        if shipped and shipped.get("runs"):
            out["Shipped: glyph-vgg's recipe (measured, no job)"] = shipped
    for job in list_jobs(Cache(root)):
        if job.kind == "emergence" and job.state == "succeeded":
            report = load_report(job.result_path)
            if report and report.get("runs"):
                cfg = report.get("config", {})
                what = (f"checkpoints of {cfg.get('checkpoint_dir')}" if cfg.get("checkpoint_dir") else
                        f"{', '.join(str(c) for c in cfg.get('categories', []))} categories, "
                        f"{cfg.get('epochs')} epoch(s), {cfg.get('train_per_class')} per category")
                out[f"Job #{job.id}: {cfg.get('model')}, {what}"] = report
    return out


def _line(frame: pd.DataFrame, x: str, y: str, colour: str, x_title: str, colour_title: str) -> alt.Chart:
    """One line per value of ``colour`` (ordered as numbers), log x (epochs and categories both
    span decades)."""
    return (alt.Chart(frame).mark_line(point=True)
            .encode(x=alt.X(f"{x}:Q", title=x_title, scale=alt.Scale(type="log")),
                    y=alt.Y(f"{y}:Q", title=FIGURES[y]),
                    color=alt.Color(f"{colour}:O", title=colour_title, scale=alt.Scale(scheme="viridis")),
                    tooltip=["categories", "epoch", alt.Tooltip(f"{y}:Q", format=".3f")])
            .properties(height=260))


def _charts(frame: pd.DataFrame, figures: list[str]) -> None:
    several = frame["categories"].nunique() > 1
    for y in figures:
        left, right = st.columns(2, gap="large")
        with left:
            st.altair_chart(_line(frame, "epoch", y, "categories", "epoch", "categories"), width="stretch")
        if several:
            with right:
                st.altair_chart(_line(frame, "categories", y, "epoch", "number of categories", "epoch"),
                                width="stretch")


def _table(frame: pd.DataFrame, root: str) -> None:
    known = set(Cache(root).store_names())
    shown = frame.copy()
    if "store" in shown:
        shown["explore"] = [f"explore?{urlencode({'model': s})}" if s in known else None for s in shown["store"]]
    cols = [c for c in ("categories", "epoch", *FIGURES, "explore") if c in shown]
    st.dataframe(shown[cols], hide_index=True, width="stretch",
                 column_config={"explore": st.column_config.LinkColumn("checkpoint's store", display_text="Explore"),
                                **{f: st.column_config.NumberColumn(FIGURES[f], format="%.3f")
                                   for f in FIGURES if f != "spectrum_rank"}})
    if "explore" in shown and shown["explore"].isna().any():
        st.caption("Checkpoints without a link have no store in this cache (shipped measurements: run the "
                   "command below to make them).")


def _sweep_job(root: str, shipped: dict | None) -> None:
    st.subheader("Run a sweep (a job)")
    d = st.columns(4)
    cats = d[0].text_input("Numbers of categories", "20 50 100", key="em-cats")
    epochs = d[1].number_input("Epochs", 1, 100, 1, key="em-epochs")
    per_class = d[2].number_input("Training images per category", 1, 1000, 50, key="em-per")
    model = d[3].selectbox("Architecture", ["glyph-vgg", "glyph-resnet"], key="em-model")
    values = {"model": model, "categories": cats.split(), "epochs": int(epochs), "train_per_class": int(per_class)}
    timing = (shipped or {}).get("measured", {})
    note = ("Trains from scratch on the first k categories of a fixed order for each k, measures checkpoints at "
            "0.1, 0.25, 0.5 of the first epoch and after each epoch; a killed job resumes where it stopped. "
            + (timing.get("note", "") if timing else ""))
    job_ui(root, "emergence", values, "this sweep", key="em-job", note=note)
    st.caption("The same from a terminal: `python -m engine emergence --model " + model + " --categories " + cats
               + f" --epochs {int(epochs)} --train-per-class {int(per_class)} --json report.json`")


def main() -> None:
    page_header("Emergence", "Do dependencies appear as a model learns, and do they need many categories? "
                             "(the paper's title: dependencies emerging from learning massive categories)")
    root = cache_root()
    sweeps = _sweeps(root)
    shipped = next((r for label, r in sweeps.items() if label.startswith("Shipped")), None)
    if not sweeps:
        st.info("No emergence measured yet: start a sweep below.", icon=":material/info:")
    else:
        label = st.selectbox("Sweep", list(sweeps), key="em-sweep")
        report = sweeps[label]
        frame = pd.DataFrame(report["runs"]).sort_values(["categories", "epoch"])
        st.markdown(describe_emergence(report["runs"]))
        if report.get("command"):
            st.caption(f"Made by `{report['command']}`" + (f" — {report['measured']['note']}"
                                                          if report.get("measured", {}).get("note") else ""))
        figures = st.multiselect("Figures", list(FIGURES), DEFAULT_FIGURES, format_func=FIGURES.get, key="em-fig")
        _charts(frame, figures)
        st.caption("A category *fits* when its logit, replaced by least squares on s ≤ 4 (or 6) other categories' "
                   "logits chosen greedily (forward selection on the Gram), has R² ≥ 0.95 and costs ≤ 0.5 pt "
                   "of top-1. Effective rank: exp(entropy of the Gram's eigenvalues). Redundancy: paper §2.2.")
        _table(frame, root)
    _sweep_job(root, shipped)


main()
