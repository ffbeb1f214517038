"""The inside of a job's process: mark it running, run its spec, record how it ended.

Started as ``python -m engine.jobs --cache DIR ID`` by the local backend, or called as
:func:`run_job` by submitit on a Slurm node: the same code either way. Progress goes to the
job table (throttled); a SIGTERM (cancel) ends the run as ``cancelled``; any exception ends
it as ``failed`` with the traceback in the log. This module knows the table, never the
manager: the local process's entry point (``engine/jobs/__main__.py``) starts the queued
jobs after this one, so manager → slurm → runner has no way back.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

from engine.jobs import procs
from engine.jobs.context import RunContext, run_dir_for
from engine.jobs.kinds import get_kind, spec_from_dict
from engine.jobs.table import ACTIVE, JobTable
from engine.storage.store import Cache

log = logging.getLogger(__name__)

_PROGRESS_EVERY_S = 0.5


class JobCancelled(BaseException):
    """Raised in the job's process by SIGTERM (cancel). A BaseException, so that
    ``except Exception`` blocks in the training code do not swallow it."""


def _on_sigterm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise JobCancelled()


class _Progress:
    """Writes (fraction, message) to the job table at most every half second."""

    def __init__(self, table: JobTable, job_id: int):
        self.table, self.job_id, self._last = table, job_id, 0.0

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        fraction = min(1.0, max(0.0, float(fraction)))
        if now - self._last >= _PROGRESS_EVERY_S or fraction >= 1.0:
            self._last = now
            self.table.update(self.job_id, only_if_state=("running",), progress=fraction,
                              message=message[:500])
        log.debug("[%5.1f%%] %s", 100 * fraction, message)


def load_runner(kind: str):
    module_name, func_name = get_kind(kind).runner.split(":")
    return getattr(importlib.import_module(module_name), func_name)


def run_job(cache: Cache | str | Path, job_id: int, log_to_file: bool = False) -> int:
    """Run job ``job_id`` of ``cache``'s table in this process; returns an exit code.

    (submitit pickles the call, so a Slurm node receives the cache's folder as a string.)
    """
    cache = Cache.of(cache).resolved()
    table = JobTable(cache.jobs_table_path)
    job = table.get(job_id)
    if log_to_file:  # Slurm: submitit captures stdout itself; write our log where the table says
        Path(job.log_path).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(job.log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(min(root.level or logging.INFO, logging.INFO))
    pid = os.getpid()
    claimed = table.update(
        job_id, only_if_state=ACTIVE, state="running", pid=pid, host=socket.gethostname(),
        proc_identity=procs.process_identity(pid), started=job.started or time.time(),
    )
    if not claimed:
        log.info("job %d is %s; nothing to run", job_id, table.get(job_id).state)
        return 0
    signal.signal(signal.SIGTERM, _on_sigterm)
    log.info("job %d (%s) running as pid %d with config %s", job_id, job.kind, pid, job.config)
    return _run_claimed(table, cache, job_id, job.kind, job.config)


def _run_claimed(table: JobTable, cache: Cache, job_id: int, kind: str, config: dict) -> int:
    try:
        spec = spec_from_dict(kind, config)
        ctx = RunContext(cache=cache, run_dir=run_dir_for(cache, kind, spec),
                         progress=_Progress(table, job_id), job_id=job_id)
        result = load_runner(kind)(spec, ctx)
    except JobCancelled:
        log.warning("job %d cancelled", job_id)
        table.update(job_id, only_if_state=ACTIVE, state="cancelled", finished=time.time(),
                     error="cancelled by the user")
        return 143
    except Exception as exc:
        log.error("job %d failed:\n%s", job_id, traceback.format_exc())
        table.update(job_id, only_if_state=ACTIVE, state="failed", finished=time.time(),
                     error=f"{type(exc).__name__}: {exc}"[:2000])
        return 1
    table.update(job_id, only_if_state=ACTIVE, state="succeeded", finished=time.time(),
                 progress=1.0, message="done", result_path=str(result) if result else None)
    log.info("job %d succeeded: %s", job_id, result)
    sys.stdout.flush()
    return 0
