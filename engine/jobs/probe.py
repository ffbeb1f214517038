"""The ``probe`` job: counts for a while, reports progress, succeeds or fails on request.

It exercises everything a training job relies on (process start, progress, log, report,
child processes, cancel) in seconds, so a new machine or cluster can be checked before real
work is queued: ``python -m engine jobs submit probe --seconds 5 --wait``.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

from engine.jobs.context import RunContext
from engine.jobs.kinds import spec_to_dict
from engine.jobs.specs import ProbeSpec
from engine.storage.atomic import write_json_atomic

log = logging.getLogger(__name__)

_CHILD = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(86400)"


def _stop(children: list[subprocess.Popen]) -> None:
    for child in children:
        child.kill()
        child.wait()


def run_job(spec: ProbeSpec, ctx: RunContext) -> Path:
    tag = ctx.job_id if ctx.job_id is not None else "fg"
    # Stubborn children (they ignore SIGTERM, and a cancelled probe leaves them behind on
    # purpose): only a kill of the whole process group stops them.
    children = [subprocess.Popen([sys.executable, "-c", _CHILD]) for _ in range(spec.children)]
    if children:  # where a test (or a curious user) can find them
        write_json_atomic(ctx.run_dir / f"children-{tag}.json", [c.pid for c in children])
    steps = max(1, round(spec.seconds / 0.1))
    log.info("%s: %d steps, %d child processes", spec.message, steps, len(children))
    try:
        for step in range(steps):
            time.sleep(spec.seconds / steps)
            ctx.progress((step + 1) / steps, f"{spec.message}: step {step + 1}/{steps}")
        if spec.fail:
            raise RuntimeError(f"{spec.message}: failing on purpose (fail=true)")
    except Exception:
        _stop(children)
        raise
    _stop(children)
    report = ctx.run_dir / f"report-{tag}.json"
    write_json_atomic(report, {"kind": "probe", "config": spec_to_dict(spec), "steps": steps})
    return report
