"""What a page shows for work that covers every target: the job's progress while it runs, a
button to start it otherwise. The work itself always runs in a job's own process."""

from __future__ import annotations

import streamlit as st

from engine.errors import EngineError
from engine.jobs import ensure_job, find_job, refresh
from engine.jobs.table import JobRecord
from engine.storage.store import Cache

REFRESH_S = 2.0


def job_ui(root: str, kind: str, values: dict, what: str, *, key: str, note: str = "") -> JobRecord | None:
    """Progress of the job of ``kind`` with spec ``values`` (it makes ``what``), or a button
    that starts it. Returns the job (None when none was ever started)."""
    cache = Cache(root)
    job = find_job(cache, kind, values)
    if job is not None and job.active:
        _watch(root, kind, values, what, key)
        return job
    with st.container(border=True):
        if job is not None and job.state in ("failed", "cancelled"):
            st.warning(f"The job that computes {what} (#{job.id}) {job.state}: {job.error or ''}".strip(),
                       icon=":material/warning:")
            label = f"Resume {what} (job; finished chunks are kept)"
        else:
            label = f"Compute {what} (job)"
        if note:
            st.caption(note)
        if st.button(label, key=f"job-{key}", icon=":material/play_arrow:"):
            try:
                ensure_job(cache, kind, values)
            except EngineError as exc:
                st.error(str(exc), icon=":material/error:")
                return job
            st.rerun()
    return job


def _watch(root: str, kind: str, values: dict, what: str, key: str) -> None:
    @st.fragment(run_every=REFRESH_S)
    def progress() -> None:
        cache = Cache(root)
        refresh(cache)  # a job whose process died is marked failed, queued ones start
        job = find_job(cache, kind, values)
        if job is None or not job.active:
            st.rerun()  # done (or failed): the whole page reads the result
            return
        text = f"Job #{job.id} computes {what}: {job.state}" + (f" · {job.message}" if job.message else "")
        st.progress(min(1.0, max(0.0, job.progress)), text=text)
        st.caption("It runs in its own process (the **Jobs** page has its log); this page shows what "
                   "exists so far and updates itself.")

    progress()


def cut_dependency_ui(manifest: dict, target: int, source: int, label: str) -> None:
    """A link to the Jobs page's §3.3 form with ``target ← source`` filled in (and the model,
    when the store was extracted from a registry model), e.g. from Explore."""
    from urllib.parse import urlencode

    info = manifest.get("model_info") or {}
    params = {"kind": "regularizer", "pairs": f"{target},{source}"}
    if isinstance(info, dict) and info.get("model"):
        params["model"] = info["model"]
    st.link_button(f"Cut {label} (§3.3 regulariser job)", f"jobs?{urlencode(params)}",
                   icon=":material/content_cut:",
                   help="Opens the Jobs page's regulariser form with this pair filled in")
