"""Jobs: launch the paper's two applications (and extractions), watch them, read their results.

Thin over ``engine.jobs``: this page only reads the job table and submits or cancels jobs.
Every job runs in its own process, so closing or killing the dashboard leaves them running,
and reopening it shows them again.
"""

from __future__ import annotations

import inspect
import re
import statistics
import time
import typing
from functools import cache
from urllib.parse import urlencode

import pandas as pd
import streamlit as st

from dashboard.components import state
from dashboard.components.charts import show, tradeoff_chart
from dashboard.components.loaders import cache_root
from dashboard.components.widgets import page_header
from engine.errors import EngineError
from engine.jobs import (
    JOB_KINDS,
    cancel_job,
    list_jobs,
    read_log,
    retry_job,
    submit_job,
)
from engine.jobs.kinds import field_types
from engine.jobs.reports import (
    load_report,
    report_notes,
    report_pairing,
    report_stores,
    report_tables,
    sweep_rows,
)
from engine.storage.store import Cache

REFRESH_S = 2.0  # the list's refresh while a job runs (never while none does)
LOG_LINES = 40

# Plain labels for the spec fields whose names are terse; the others read as their name.
LABELS = {
    "w_epochs": "Epochs for the coefficient matrix W",
    "w_lr": "Learning rate of W",
    "w_weight_decay": "Weight decay of W",
    "w_batch_size": "Batch size for W",
    "lr": "Learning rate",
    "base_negatives": "Base-class images per class that W also sees",
    "n_new": "New categories",
    "num_classes": "Number of classes",
    "new_classes": "Which classes are new",
    "arch": "Architecture",
    "binary_pairs": "Pairs for the one-new-class test",
    "train_per_class": "Training images per class",
    "side_by_side": "Train the comparison in a second process",
    "ood": "Out-of-distribution dataset",
    "beta": "β, the regulariser's weight",
    "alpha": "α (CovLasso)",
    "top_k": "Sources per target (top-k)",
    "min_coef": "Smallest |coefficient| kept",
    "chunk": "Targets per chunk",
    "workers": "Data-loading processes",
    "threads": "CPU threads",
    "data": "Dataset",
    "name": "Name of the new store",
    "source": "Source store (its logits predict)",
    "model": "Model",
    "pairs": "Pairs (target, source)",
    "control": "Also train the control (β = 0)",
    "baseline": "Also train the all-class baseline",
}


def field_label(name: str) -> str:
    """The form's label of a spec field: a plain phrase, never the raw argument name."""
    return LABELS.get(name) or name.replace("_", " ").capitalize()


@cache
def field_help(spec_cls: type) -> dict[str, str]:
    """Each field's help: the comment beside it in the spec's source (engine/jobs/specs.py, engine/train/specs.py),
    which says what it is, its unit and the paper's value."""
    try:
        source = inspect.getsource(spec_cls)
    except (OSError, TypeError):
        return {}
    found = re.findall(r"^\s+(\w+): [^=#]+=[^#\n]*#\s*(.+)$", source, flags=re.MULTILINE)
    return {name: text.strip() for name, text in found}


def _field_ui(kind: str, name: str, typ, default, help: str | None):
    key = f"jobs-{kind}-{name}"
    label = field_label(name)
    hint = f"{help} (argument `{name}`)" if help else f"Argument `{name}`."
    given = key in st.session_state  # filled in from the URL (``_prefill_from_url``)
    if typ is bool:
        return st.checkbox(label, **({} if given else {"value": default}), key=key, help=hint)
    if typ is int:
        return st.number_input(label, **({} if given else {"value": int(default)}), step=1, key=key, help=hint)
    if typ is float:
        return st.number_input(label, **({} if given else {"value": float(default)}), format="%g", key=key,
                               help=hint)
    if typing.get_origin(typ) is tuple:
        text = st.text_area(label, **({} if given else {"value": "\n".join(default)}), key=key,
                            help=f"{hint} One per line, e.g. 'O,0' (target, source).")
        return [line.strip() for line in text.splitlines() if line.strip()]
    return st.text_input(label, **({} if given else {"value": str(default)}), key=key, help=hint)


def _prefill_from_url() -> bool:
    """``jobs?kind=regularizer&pairs=T,S`` (Explore's "cut this dependency"): select the kind and
    fill its form's fields from the query, once per distinct query. True when a form was filled."""
    params = dict(st.query_params)
    kind = params.pop("kind", None)
    if kind not in JOB_KINDS:
        return False
    marker = f"{kind}?{urlencode(sorted(params.items()))}"
    if st.session_state.get("jobs-prefilled") == marker:
        return True
    types = field_types(JOB_KINDS[kind].spec)
    st.session_state["jobs-kind"] = kind
    for name, value in params.items():
        if name not in types:
            continue
        typ = types[name]
        if typing.get_origin(typ) is tuple:
            st.session_state[f"jobs-{kind}-{name}"] = "\n".join(st.query_params.get_all(name))
        elif typ in (int, float):
            try:
                st.session_state[f"jobs-{kind}-{name}"] = typ(value)
            except ValueError:
                continue
        elif typ is bool:
            st.session_state[f"jobs-{kind}-{name}"] = value.lower() in ("1", "true", "yes")
        else:
            st.session_state[f"jobs-{kind}-{name}"] = value
    st.session_state["jobs-prefilled"] = marker
    return True


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def runtime_estimate(jobs, kind: str) -> str:
    """How long a job of ``kind`` took on this machine, from the finished ones in the table."""
    done = [j.elapsed() for j in jobs if j.kind == kind and j.state == "succeeded" and j.elapsed() is not None]
    if not done:
        return "No finished run of this kind on this machine yet: no estimate of its run time."
    if len(done) == 1:
        return f"On this machine one finished run took {_duration(done[0])} (other settings take longer or less)."
    return (f"On this machine {len(done)} finished runs took {_duration(min(done))} to {_duration(max(done))}, "
            f"median {_duration(statistics.median(done))} (with their own settings).")


def _spec_form_ui(kind: str, estimate: str) -> dict | None:
    """A form with one widget per spec field (the spec's defaults), each with a plain label and
    its help; returns values on submit."""
    spec_cls = JOB_KINDS[kind].spec
    defaults = {f.name: f.default for f in spec_cls.__dataclass_fields__.values()}
    helps = field_help(spec_cls)
    with st.form(f"form-{kind}"):
        st.caption((spec_cls.__doc__ or "").strip().split("\n\n")[0])
        st.caption(f"**Run time.** {estimate}")
        columns = st.columns(3)
        values = {}
        for n, (name, typ) in enumerate(field_types(spec_cls).items()):
            with columns[n % 3]:
                values[name] = _field_ui(kind, name, typ, defaults[name], helps.get(name))
        submitted = st.form_submit_button("Submit job", type="primary")
    return values if submitted else None


def _submit_ui(cache: Cache) -> None:
    kind = st.selectbox("Job kind", list(JOB_KINDS), key="jobs-kind",
                        format_func=lambda k: f"{JOB_KINDS[k].title} ({k})")
    values = _spec_form_ui(kind, runtime_estimate(list_jobs(cache, limit=500), kind))
    if values is None:
        return
    try:
        job = submit_job(cache, kind, values)
    except EngineError as exc:
        st.error(str(exc))
        return
    st.session_state["jobs-select-next"] = job.id
    st.success(f"Job {job.id} ({kind}) is {job.state}.")


def _jobs_frame(jobs) -> pd.DataFrame:
    now = time.time()
    return pd.DataFrame([{
        "id": j.id, "kind": j.kind, "state": j.state, "progress": round(100 * j.progress, 1),
        "time (s)": None if j.elapsed(now) is None else round(j.elapsed(now), 1),
        "created": time.strftime("%m-%d %H:%M:%S", time.localtime(j.created)),
        "message": j.error if j.state in ("failed", "cancelled") else j.message,
    } for j in jobs])


def _job_detail_ui(cache: Cache, job) -> None:
    st.subheader(f"Job {job.id}: {JOB_KINDS[job.kind].title}")
    st.progress(min(1.0, job.progress), text=" · ".join(t for t in (job.state, job.message) if t))
    if job.error:
        (st.warning if job.state == "cancelled" else st.error)(job.error)
    left, right = st.columns(2)
    if job.active and left.button("Cancel", key=f"cancel-{job.id}"):
        cancel_job(cache, job.id)
        st.rerun()
    if not job.active and right.button("Retry (resumes checkpoints)", key=f"retry-{job.id}"):
        st.session_state["jobs-select-next"] = retry_job(cache, job.id).id
        st.rerun()
    report = load_report(job.result_path)
    for title, rows in report_tables(report):
        st.markdown(f"**{title}**")
        st.dataframe(pd.DataFrame(rows), hide_index=True)
    for note in report_notes(report):
        st.markdown(f"- {note}")
    sweep = sweep_rows(report)
    if len({r["beta"] for r in sweep}) > 2:
        show(tradeoff_chart(pd.DataFrame(sweep), "The regulariser's trade-off: top-1, θ of the cut pair, "
                                                 "OOD AUPR against β"))
    stores = report_stores(report)
    if stores:  # relative links: the other pages read their store from the URL
        st.markdown("New logit stores, to explore: "
                    + ", ".join(f"[`{s}`](./?{urlencode({'model': s})})" for s in stores))
    pair = report_pairing(report)
    if pair:
        st.markdown(f"[Compare `{pair[0]}` with `{pair[1]}`]"
                    f"(compare?{urlencode({'model': pair[0], 'source': pair[1]})})")
    with st.expander("Configuration (JSON)"):
        st.json(job.config)
    st.markdown(f"Log (last {LOG_LINES} lines) · `{job.log_path}`")
    st.code(read_log(job, LOG_LINES) or "(empty)", language=None)


def _jobs_list_ui(cache: Cache) -> None:
    """The job table and the chosen job; refreshed every REFRESH_S while a job is queued or
    running, and not at all while none is (a full rerun stops the timer when the last ends)."""
    running = any(j.active for j in list_jobs(cache, limit=100))
    st.fragment(run_every=REFRESH_S if running else None)(_jobs_list_body)(cache, running)


def _jobs_list_body(cache: Cache, polling: bool) -> None:
    jobs = list_jobs(cache, limit=100)
    if polling and not any(j.active for j in jobs):
        st.rerun()  # the last job ended: redraw the page without the timer
    if not jobs:
        st.info("No jobs yet: submit one above, or with `python -m engine jobs submit KIND`.")
        return
    st.dataframe(_jobs_frame(jobs), hide_index=True,
                 column_config={"progress": st.column_config.ProgressColumn(
                     "progress", min_value=0, max_value=100, format="%.0f%%")})
    ids = [j.id for j in jobs]
    wanted = st.session_state.pop("jobs-select-next", None)  # a job just submitted or retried
    if wanted in ids or st.session_state.get("jobs-selected") not in ids:
        running = [j.id for j in jobs if j.state == "running"]
        st.session_state["jobs-selected"] = wanted if wanted in ids else (running or ids)[0]
    state.pin("jobs-selected")
    selected = st.selectbox("Show job", ids, key="jobs-selected",
                            format_func=lambda i: f"{i} · {next(j for j in jobs if j.id == i).kind}")
    _job_detail_ui(cache, next(j for j in jobs if j.id == selected))


def main() -> None:
    root = Cache(cache_root())
    page_header("Jobs", "Training and extraction runs, each in its own process: they keep "
                "running when the dashboard is closed, and show up here again when it reopens.")
    prefilled = _prefill_from_url()
    with st.expander("New job", expanded=prefilled):
        _submit_ui(root)
    _jobs_list_ui(root)


main()
