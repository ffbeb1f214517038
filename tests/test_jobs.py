"""The job system with real processes: concurrent submits, the queue, crashes, cancel, restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from engine.errors import InvalidInputError, NotFoundError
from engine.jobs import (
    cancel_job,
    get_job,
    jobs_table,
    read_log,
    reap_stale,
    retry_job,
    set_settings,
    submit_job,
    wait_for,
)
from engine.jobs.procs import is_same_process_alive, process_identity

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _wait_until(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _alive(pid: int) -> bool:
    return process_identity(pid) is not None


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def test_concurrent_submits_from_many_processes_get_distinct_jobs(cache):
    code = f"""
        from engine.jobs import submit_job
        ids = [submit_job({str(cache)!r}, "probe", {{"seconds": 0, "message": f"m{{i}}"}},
                          start=False).id for i in range(5)]
        print(*ids)
    """
    procs = [_python(code) for _ in range(6)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    ids = [int(i) for out, _ in outs for i in out.split()]
    assert len(ids) == 30 and len(set(ids)) == 30
    table = jobs_table(cache)
    assert table.integrity_ok()
    rows = table.list(limit=100)
    assert sorted(r.id for r in rows) == sorted(ids)
    assert all(r.state == "queued" and r.config["message"].startswith("m") for r in rows)


def test_queue_runs_at_most_max_running_and_drains_by_itself(cache):
    set_settings(cache, max_running=2)
    jobs = [submit_job(cache, "probe", {"seconds": 1.0}) for _ in range(4)]
    table = jobs_table(cache)
    most = 0
    deadline = time.monotonic() + 60
    # Watch the table without refreshing it: the jobs must start each other.
    while time.monotonic() < deadline:
        states = [table.get(j.id).state for j in jobs]
        most = max(most, states.count("running"))
        if all(s == "succeeded" for s in states):
            break
        time.sleep(0.05)
    assert [table.get(j.id).state for j in jobs] == ["succeeded"] * 4
    assert most == 2
    done = [table.get(j.id) for j in jobs]
    assert all(Path(j.result_path).exists() and j.progress == 1.0 for j in done)
    # FIFO: the third job started only after one of the first two had finished.
    assert done[2].started >= min(done[0].finished, done[1].finished) - 0.05


def test_a_crashing_job_is_failed_with_its_log_and_the_others_go_on(cache):
    set_settings(cache, max_running=2)
    bad = submit_job(cache, "probe", {"seconds": 0.2, "fail": True, "message": "boom"})
    good = submit_job(cache, "probe", {"seconds": 1.0})
    bad, good = wait_for(cache, [bad.id, good.id], timeout=60)
    assert bad.state == "failed" and "failing on purpose" in bad.error
    assert "Traceback" in read_log(bad) and "boom" in read_log(bad)
    assert good.state == "succeeded"


def test_cancel_stops_the_whole_process_tree(cache):
    job = submit_job(cache, "probe", {"seconds": 120, "children": 2})
    table = jobs_table(cache)
    job = _wait_until(lambda: (j := table.get(job.id)).proc_identity and j.progress > 0 and j,
                      what="the job to run")
    children_file = next((cache / "runs").glob("probe-*/children-*.json"))
    children = json.loads(children_file.read_text())
    assert all(_alive(pid) for pid in [job.pid, *children])
    cancelled = cancel_job(cache, job.id, grace=2.0)
    assert cancelled.state == "cancelled" and cancelled.cancel_requested
    # The children ignore SIGTERM: only the group kill stops them.
    _wait_until(lambda: not any(_alive(p) for p in [job.pid, *children]), what="the tree to die")
    assert get_job(cache, job.id).state == "cancelled"  # the dying job did not overwrite it
    # Cancelling a queued job: it never starts.
    set_settings(cache, max_running=1)
    blocker = submit_job(cache, "probe", {"seconds": 30})
    queued = submit_job(cache, "probe", {"seconds": 0})
    assert cancel_job(cache, queued.id).state == "cancelled"
    cancel_job(cache, blocker.id)
    assert get_job(cache, queued.id).started is None


def test_killing_the_submitting_process_leaves_the_job_running(cache):
    # A stand-in for the dashboard: submits, then is killed with its whole process group.
    dashboard = _python(f"""
        import time
        from engine.jobs import submit_job
        print(submit_job({str(cache)!r}, "probe", {{"seconds": 2.5}}).id, flush=True)
        time.sleep(600)
    """, start_new_session=True)
    job_id = int(dashboard.stdout.readline())
    os.killpg(dashboard.pid, signal.SIGKILL)
    dashboard.wait()
    table = jobs_table(cache)
    _wait_until(lambda: table.get(job_id).proc_identity, what="the job to start")
    assert table.get(job_id).state == "running"
    # A restarted "dashboard" (a fresh look at the table) sees it, and it finishes.
    assert wait_for(cache, [job_id], timeout=60)[0].state == "succeeded"


def test_a_job_killed_hard_is_marked_failed_on_the_next_look_and_can_be_retried(cache):
    job = submit_job(cache, "probe", {"seconds": 120})
    table = jobs_table(cache)
    job = _wait_until(lambda: (j := table.get(job.id)).proc_identity and j, what="the job to run")
    os.killpg(job.pid, signal.SIGKILL)  # a crash, an OOM kill, a power cut...
    _wait_until(lambda: not _alive(job.pid), what="the process to die")
    assert table.get(job.id).state == "running"  # nobody has looked yet
    dead = get_job(cache, job.id)  # looking makes the table truthful
    assert dead.state == "failed" and "ended without reporting" in dead.error
    again = retry_job(cache, job.id)
    assert again.id != job.id and again.config == job.config
    cancel_job(cache, again.id)


def test_pid_reuse_and_reboots_do_not_fool_the_liveness_check(cache):
    table = jobs_table(cache)
    me = os.getpid()
    ids = [table.insert("probe", {"seconds": 1.0}, cache / "logs", "local") for _ in range(3)]
    import socket

    host = socket.gethostname()
    # 1: this very process, recorded correctly: alive, left alone.
    table.update(ids[0], state="running", started=time.time(), pid=me, host=host,
                 proc_identity=process_identity(me))
    # 2: same pid, but another start time (the pid was reused after the job died).
    table.update(ids[1], state="running", started=time.time(), pid=me, host=host,
                 proc_identity="linux:another-boot:12345")
    # 3: claimed long ago, its process never reported a pid.
    table.update(ids[2], state="running", started=time.time() - 3600)
    assert is_same_process_alive(me, process_identity(me))
    assert not is_same_process_alive(me, "linux:another-boot:12345")
    assert sorted(reap_stale(cache)) == [ids[1], ids[2]]
    assert [table.get(i).state for i in ids] == ["running", "failed", "failed"]


def test_invalid_specs_are_rejected_before_anything_is_queued(cache):
    with pytest.raises(InvalidInputError, match=r"'seconds' = -1.*>= 0"):
        submit_job(cache, "probe", {"seconds": -1})
    with pytest.raises(InvalidInputError, match="unknown field.*secs"):
        submit_job(cache, "probe", {"secs": 1})
    with pytest.raises(InvalidInputError, match="'epochs' = 'many'.*integer"):
        submit_job(cache, "newclasses", {"epochs": "many"})
    with pytest.raises(InvalidInputError, match="unknown job kind 'train'.*newclasses"):
        submit_job(cache, "train", {})
    with pytest.raises(InvalidInputError, match="'name'"):
        submit_job(cache, "extract", {"name": "no/slashes"})
    with pytest.raises(InvalidInputError, match="max_running"):
        set_settings(cache, max_running=0)
    assert jobs_table(cache).list() == []
    with pytest.raises(NotFoundError, match="no job with id 7"):
        get_job(cache, 7)


def test_slurm_backend_needs_submitit_or_runs_the_same_job_code(cache):
    try:
        import submitit  # noqa: F401
    except ImportError:
        with pytest.raises(Exception, match="pip install submitit"):
            set_settings(cache, backend="slurm")
        return
    # submitit's "local" cluster runs the job the way a Slurm node would.
    set_settings(cache, backend="slurm", slurm={"cluster": "local", "timeout_min": 5})
    job = submit_job(cache, "probe", {"seconds": 0.2, "message": "via submitit"})
    assert job.backend == "slurm" and job.backend_id
    done = wait_for(cache, [job.id], timeout=120)[0]
    assert done.state == "succeeded" and Path(done.result_path).exists()
    assert "via submitit" in read_log(done)


def _cli(cache: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", "--cache", str(cache), "jobs", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_cli_submit_show_list_and_a_rejected_spec(cache, capsys):
    # Two real `python -m engine` processes (its start-up is slow), then the handlers in-process.
    out = _cli(cache, "submit", "probe", "--seconds", "0.2", "--message", "hello cli", "--wait")
    assert out.returncode == 0, out.stderr
    assert "succeeded" in out.stdout and "report:" in out.stdout
    bad = _cli(cache, "submit", "regularizer", "--beta", "-0.5")
    assert bad.returncode == 2 and "'beta' = -0.5" in bad.stderr
    from engine.cli import main

    capsys.readouterr()
    assert main(["--cache", str(cache), "jobs", "show", "1"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"] == "succeeded" and shown["config"]["message"] == "hello cli"
    assert shown["report"]["steps"] == 2
    assert main(["--cache", str(cache), "jobs", "list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in listing[1:]] == [["1", "probe", "succeeded"]]
    assert main(["--cache", str(cache), "jobs", "logs", "1", "--tail", "5"]) == 0
    assert "hello cli" in capsys.readouterr().out
