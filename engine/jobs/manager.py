"""Submit, dispatch, watch and cancel jobs: the one API the CLI and the dashboard share.

Every function takes the :class:`~engine.storage.store.Cache` whose job table it uses (a folder path
is accepted too and read as that cache). There is no daemon. Whoever looks at the table (``refresh``: the CLI, the dashboard, a job
that just finished) first marks dead ``running`` jobs as failed, then starts queued jobs
while fewer than ``max_running`` run. A finishing job starts the next one itself, so a
queue drains with nobody watching; ``python -m engine jobs worker`` keeps looking, for
queues fed with ``--no-start``.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import InvalidInputError
from engine.jobs import procs
from engine.jobs.kinds import check_spec_inputs, spec_from_dict, spec_to_dict
from engine.jobs.table import ACTIVE, FINISHED, JobRecord, JobTable
from engine.storage.store import Cache

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0  # a claimed job whose process never reported its pid is dead by then
_REPO_ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ("local", "slurm")


@dataclass(frozen=True)
class JobSettings:
    """How jobs run; stored in the job table's settings so every client agrees."""

    backend: str = "local"  # "local" (subprocesses on this machine) or "slurm" (submitit)
    max_running: int = 1  # local jobs running at once (a 2-core CPU trains one at a time)
    slurm: dict[str, Any] = field(default_factory=dict)  # submitit parameters, e.g. slurm_partition

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise InvalidInputError(
                f"jobs backend {self.backend!r} is unknown; choose one of {', '.join(BACKENDS)}"
            )
        if isinstance(self.max_running, bool) or not isinstance(self.max_running, int) or not (
            1 <= self.max_running <= 64
        ):
            raise InvalidInputError(
                f"max_running = {self.max_running!r} is invalid: expected an integer from 1 to 64"
            )
        if not isinstance(self.slurm, dict):
            raise InvalidInputError(f"slurm parameters must be a mapping; got {self.slurm!r}")


def jobs_table(cache: Cache) -> JobTable:
    return JobTable(Cache.of(cache).jobs_table_path)


def get_settings(cache: Cache) -> JobSettings:
    stored = jobs_table(cache).get_setting("jobs", {}) or {}
    return JobSettings(**{k: v for k, v in stored.items() if k in JobSettings.__dataclass_fields__})


def set_settings(cache: Cache, **changes: Any) -> JobSettings:
    """Change some settings (validated), keep the others; returns the new settings."""
    current = asdict(get_settings(cache))
    current.update({k: v for k, v in changes.items() if v is not None})
    settings = JobSettings(**current)
    if settings.backend == "slurm":
        from engine.jobs.slurm import require_submitit

        require_submitit()
    jobs_table(cache).set_setting("jobs", asdict(settings))
    return settings


# ----------------------------------------------------------------------------- submit


def submit_job(
    cache: Cache, kind: str, values: dict[str, Any] | None = None, *, start: bool = True
) -> JobRecord:
    """Validate a spec and queue it (and start it when a slot is free, unless ``start=False``).

    Raises :class:`InvalidInputError` naming the field and the reason before anything is
    queued. Safe to call from many processes at once: each call gets its own job.
    """
    spec = spec_from_dict(kind, values)
    cache = Cache.of(cache).resolved()
    check_spec_inputs(kind, spec, cache)
    settings = get_settings(cache)
    table = jobs_table(cache)
    job_id = table.insert(kind, spec_to_dict(spec), cache.job_logs_dir, settings.backend)
    log.info("queued job %d (%s)", job_id, kind)
    if settings.backend == "slurm":
        from engine.jobs.slurm import submit_to_slurm

        try:
            slurm_id = submit_to_slurm(cache, table.get(job_id), settings.slurm)
        except Exception as exc:
            table.update(job_id, state="failed", finished=time.time(),
                         error=f"Slurm submission failed: {exc}")
            raise
        table.update(job_id, backend_id=slurm_id)
    elif start:
        dispatch(cache)
    return table.get(job_id)


def retry_job(cache: Cache, job_id: int) -> JobRecord:
    """Queue a finished job's spec again; it resumes from the run's last checkpoint."""
    old = jobs_table(cache).get(job_id)
    if old.state not in FINISHED:
        raise InvalidInputError(f"job {job_id} is {old.state}; only a finished job can be retried")
    return submit_job(cache, old.kind, old.config)


def find_job(cache: Cache, kind: str, values: dict[str, Any] | None = None, limit: int = 500) -> JobRecord | None:
    """The newest job of ``kind`` whose spec equals ``values``' (defaults filled in), or None:
    a page asks it before offering to start the same work twice."""
    wanted = spec_to_dict(spec_from_dict(kind, values))
    for job in jobs_table(cache).list(limit=limit):
        if job.kind == kind and job.config == wanted:
            return job
    return None


def ensure_job(cache: Cache, kind: str, values: dict[str, Any] | None = None) -> JobRecord:
    """The active or succeeded job with this spec, or a new one (failed and cancelled ones
    are retried: their chunks resume)."""
    refresh(cache)
    job = find_job(cache, kind, values)
    if job is not None and job.state in ("queued", "running", "succeeded"):
        return job
    return submit_job(cache, kind, values)


# ----------------------------------------------------------------------------- look


def refresh(cache: Cache) -> None:
    """Make the table truthful (dead jobs → failed), then start what may start."""
    reap_stale(cache)
    dispatch(cache)


def reap_stale(cache: Cache) -> list[int]:
    """Mark ``running`` jobs whose process is gone as failed; returns their ids.

    Local jobs are checked by pid and start time (a reused pid does not count as alive);
    jobs that run on another host can only be judged by their backend (Slurm).
    """
    table = jobs_table(cache)
    reaped = []
    here = socket.gethostname()
    for job in table.list(states=ACTIVE, limit=10_000):
        reason = None
        if job.backend == "slurm" and job.backend_id:
            from engine.jobs.slurm import slurm_dead_reason

            reason = slurm_dead_reason(Cache.of(cache), job)
        elif job.state == "running" and job.backend == "local":
            if job.pid is None:
                if time.time() - (job.started or job.created) > START_TIMEOUT_S:
                    reason = "its process never started (see the log)"
            elif job.host == here and not procs.is_same_process_alive(job.pid, job.proc_identity):
                reason = (
                    f"its process (pid {job.pid}) ended without reporting a result: it was "
                    "killed, crashed hard, or the machine restarted. See the log; "
                    f"`python -m engine jobs retry {job.id}` resumes from the last checkpoint"
                )
        if reason and table.update(
            job.id, only_if_state=ACTIVE, state="failed", finished=time.time(), error=reason
        ):
            log.warning("job %d marked failed: %s", job.id, reason)
            reaped.append(job.id)
    return reaped


def dispatch(cache: Cache) -> list[int]:
    """Start queued local jobs while fewer than ``max_running`` run; returns the started ids."""
    cache = Cache.of(cache).resolved()
    settings = get_settings(cache)
    table = jobs_table(cache)
    started = []
    for job in table.claim_queued(settings.max_running, backend="local"):
        try:
            pid = procs.spawn_detached(
                [sys.executable, "-m", "engine.jobs", "--cache", str(cache.root), str(job.id)],
                Path(job.log_path), cwd=_REPO_ROOT, env=_job_env(),
            )
        except OSError as exc:
            table.update(job.id, only_if_state=("running",), state="failed",
                         finished=time.time(), error=str(exc))
            continue
        identity = procs.process_identity(pid)
        # The job records the same values itself; whichever writes first, the row is right.
        table.update(job.id, only_if_state=("running",), pid=pid, host=socket.gethostname(),
                     **({"proc_identity": identity} if identity else {}))
        log.info("started job %d (%s) as pid %d", job.id, job.kind, pid)
        started.append(job.id)
    return started


def _job_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p
    )
    env.pop("STREAMLIT_SERVER_PORT", None)
    return env


def list_jobs(cache: Cache, limit: int = 200) -> list[JobRecord]:
    refresh(cache)
    return jobs_table(cache).list(limit=limit)


def get_job(cache: Cache, job_id: int) -> JobRecord:
    refresh(cache)
    return jobs_table(cache).get(job_id)


def read_log(job: JobRecord, tail_lines: int | None = None) -> str:
    path = Path(job.log_path)
    if not path.exists():
        return ""
    if tail_lines is None:
        return path.read_text(errors="replace")
    with open(path, "rb") as handle:  # read only the end of a long log
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 200 * (tail_lines + 1)))
        text = handle.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-tail_lines:])


# ----------------------------------------------------------------------------- cancel / wait


def cancel_job(cache: Cache, job_id: int, grace: float = 5.0) -> JobRecord:
    """Cancel a queued job, or stop a running one with its whole process tree."""
    table = jobs_table(cache)
    job = table.get(job_id)
    if job.state in FINISHED:
        return job
    table.update(job_id, cancel_requested=1)
    if job.backend == "slurm" and job.backend_id:
        from engine.jobs.slurm import cancel_slurm

        cancel_slurm(Cache.of(cache), job)
    elif job.state == "running" and job.pid and job.host == socket.gethostname():
        # Mark it first, so the dying job (and any reaper) sees a cancellation, not a crash.
        table.update(job_id, only_if_state=ACTIVE, state="cancelled", finished=time.time(),
                     error="cancelled by the user")
        procs.kill_process_tree(job.pid, job.proc_identity, grace=grace)
    table.update(job_id, only_if_state=ACTIVE, state="cancelled", finished=time.time(),
                 error="cancelled by the user")
    log.info("cancelled job %d", job_id)
    dispatch(cache)
    return table.get(job_id)


def wait_for(cache: Cache, job_ids: list[int], timeout: float = 600.0,
             poll: float = 0.2) -> list[JobRecord]:
    """Block until all ``job_ids`` are finished (or ``timeout`` seconds pass); return them."""
    deadline = time.monotonic() + timeout
    table = jobs_table(cache)
    while True:
        refresh(cache)
        jobs = [table.get(i) for i in job_ids]
        if all(j.state in FINISHED for j in jobs) or time.monotonic() > deadline:
            return jobs
        time.sleep(poll)
