"""The Slurm backend, through ``submitit`` (an optional dependency: ``pip install submitit``).

The job's Python function is the same :func:`engine.jobs.runner.run_job` as for local jobs;
submitit pickles the call, Slurm starts it on a node that sees the same cache folder (a
shared filesystem), and the job writes its state to the same table. The table's job stays
``queued`` until the node starts it.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

from engine.errors import EngineError
from engine.jobs.table import JobRecord
from engine.storage.store import Cache

log = logging.getLogger(__name__)

_DEAD_STATES = ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
                "BOOT_FAIL", "DEADLINE", "COMPLETED", "FINISHED", "INTERRUPTED")


def require_submitit():
    try:
        import submitit
    except ImportError as exc:
        raise EngineError(
            "the Slurm backend needs the optional package submitit, which is not installed: "
            "run `pip install submitit` in this environment, or keep the local backend "
            "(`python -m engine jobs settings --backend local`)"
        ) from exc
    return submitit


def submit_to_slurm(cache: Cache, job: JobRecord, params: dict[str, Any]) -> str:
    """Submit ``job`` through submitit with ``params`` (e.g. slurm_partition, timeout_min,
    gpus_per_node, cpus_per_task; ``cluster`` picks submitit's executor: slurm, or local
    to try the path without a cluster). Returns the backend's job id."""
    submitit = require_submitit()
    from engine.jobs.runner import run_job

    params = dict(params)
    cache = Cache.of(cache).resolved()
    executor = submitit.AutoExecutor(folder=cache.slurm_dir(job.id), cluster=params.pop("cluster", None))
    params.setdefault("timeout_min", 24 * 60)
    executor.update_parameters(name=f"nde-{job.kind}-{job.id}", **params)
    submitted = executor.submit(run_job, str(cache.root), job.id, True)
    log.info("job %d submitted to %s as %s", job.id, executor.cluster, submitted.job_id)
    return str(submitted.job_id)


def _handle(cache: Cache, job: JobRecord):
    submitit = require_submitit()
    try:
        return submitit.SlurmJob(folder=Cache.of(cache).resolved().slurm_dir(job.id), job_id=str(job.backend_id))
    except Exception:  # pragma: no cover - depends on the cluster
        return None


def slurm_dead_reason(cache: Cache, job: JobRecord) -> str | None:
    """Why an active job is in fact over, according to Slurm (None when it is not, or unknown)."""
    if shutil.which("sacct") is None:  # not on a Slurm host: we cannot tell, so we do not guess
        return None
    handle = _handle(cache, job)
    if handle is None:
        return None
    try:
        state = str(handle.state).upper()
    except Exception:  # sacct unavailable: we cannot tell, so we do not guess
        return None
    if state.split()[0] in _DEAD_STATES:
        return f"Slurm reports the job {state} before it recorded a result; see the log"
    return None


def cancel_slurm(cache: Cache, job: JobRecord) -> None:
    handle = _handle(cache, job)
    if handle is None:
        return
    try:
        handle.cancel(check=False)
    except OSError as exc:  # no scancel on this machine
        log.warning("could not cancel Slurm job %s: %s", job.backend_id, exc)
