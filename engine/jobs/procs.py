"""Processes of local jobs: start them detached, tell whether they still run, stop their tree.

A job's process is identified by its pid **and** its start time, so a pid reused by another
program after a crash or a machine restart is never mistaken for the job (nor killed). On
Linux the identity is the boot id plus the process's start time in clock ticks
(``/proc/<pid>/stat``, field 22); elsewhere psutil's create time when psutil is installed;
otherwise only the pid (then a reused pid can fool the liveness check, which we log once).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

_PROC = Path("/proc")
_warned_no_identity = False

# Started by the launcher below; it starts the real command in a new session and exits, so
# the job is nobody's child: killing the dashboard or the CLI (even its whole process
# group) leaves the job running, and no zombie waits for a parent that never reaps it.
_LAUNCHER = (
    "import subprocess, sys\n"
    "log = open(sys.argv[1], 'ab', buffering=0)\n"
    "p = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, stderr=log,"
    " start_new_session=True, close_fds=True)\n"
    "print(p.pid, flush=True)\n"
)


def _boot_id() -> str:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may contain spaces)."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def process_identity(pid: int) -> str | None:
    """A string that identifies this very process (pid + start time), None if it is gone."""
    global _warned_no_identity
    if pid <= 0:
        return None
    if _PROC.is_dir():
        fields = _proc_stat(pid)
        if fields is None or fields[0] in ("Z", "X"):  # zombies have finished
            return None
        return f"linux:{_boot_id()}:{fields[19]}"  # field 22 of stat = starttime
    try:
        import psutil
    except ImportError:
        if not _warned_no_identity:
            log.warning("neither /proc nor psutil: job liveness checks use the pid alone")
            _warned_no_identity = True
        return "pid" if _pid_exists(pid) else None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return f"psutil:{proc.create_time():.3f}"
    except psutil.Error:
        return None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_same_process_alive(pid: int | None, identity: str | None) -> bool:
    """True when ``pid`` runs and is the process recorded with ``identity``."""
    if not pid:
        return False
    now = process_identity(pid)
    return now is not None and (identity is None or now == identity)


def spawn_detached(argv: list[str], log_path: Path, cwd: Path, env: dict[str, str]) -> int:
    """Start ``argv`` in a new session, detached from this process, output appended to ``log_path``.

    Returns the new process's pid (also its process group id: ``start_new_session``).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, str(log_path), *argv],
        cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=60,
    )
    if out.returncode != 0 or not out.stdout.strip().isdigit():
        raise OSError(f"could not start the job process: {out.stderr.strip() or out.stdout!r}")
    return int(out.stdout.strip())


def kill_process_tree(pid: int, identity: str | None, grace: float = 5.0) -> bool:
    """SIGTERM the job's process group, SIGKILL it after ``grace`` seconds if still there.

    The job is its group's leader (started with ``start_new_session``), so DataLoader
    workers and any other child in the group go too. Returns False when the recorded process
    was already gone (or the pid now belongs to another program, which is left alone).
    """
    if not is_same_process_alive(pid, identity):
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not is_same_process_alive(pid, identity):
            break
        time.sleep(0.05)
    # Whatever is left in the group (the leader, or workers that ignored SIGTERM) is killed.
    _signal_group(pid, signal.SIGKILL)
    return True


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
