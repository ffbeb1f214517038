"""The dashboard server at a conference: loopback only, no telemetry, no code from a form.

The real ``streamlit run dashboard/app.py`` is started the way ``./run.sh`` starts it (the
project's ``.streamlit/config.toml``, no address on the command line) and its listening
sockets are read from the kernel. Form fields that end up in a job (the Data page's
extraction form) are filled with shell and Python injections; the job runs for real and
no injected command ever executes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.dashboard_cache import run_page

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())


def test_config_binds_loopback_and_sends_nothing():
    server, browser = CONFIG["server"], CONFIG["browser"]
    assert server["address"] == "127.0.0.1"
    assert browser["gatherUsageStats"] is False
    assert browser.get("serverAddress", "127.0.0.1") == "127.0.0.1"
    assert server.get("enableXsrfProtection", True) is True  # never switched off
    assert server.get("enableCORS", True) is True
    assert "0.0.0.0" not in (ROOT / "run.sh").read_text().split("# Extra arguments")[1].split("case")[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _other_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback (where a conference Wi-Fi would reach it)."""
    return [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family == socket.AF_INET and not a.address.startswith("127.")]


def test_the_real_server_listens_on_loopback_only(tmp_path):
    port = _free_port()
    env = {**os.environ, "NDE_CACHE": str(tmp_path / "empty"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(  # as ./run.sh does: no --server.address; the config decides
        [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.port", str(port),
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    assert r.read() == b"ok"
                    break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    pytest.fail("the dashboard server did not start")
                time.sleep(0.5)
        listening = [c.laddr for c in psutil.Process(proc.pid).net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN]
        assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening
        for address in _other_addresses():
            with socket.socket() as s, pytest.raises(OSError):
                s.settimeout(2)
                s.connect((address, port))
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


INJECTIONS = {
    "model": "glyph-resnet; touch {canary}",
    "data": "$(touch {canary})",
    "split": "test`touch {canary}`",
    "checkpoint": "__import__('os').system('touch {canary}')",
}


def test_form_fields_never_reach_a_shell_or_an_interpreter(tmp_path, monkeypatch):
    """The extraction form, filled with injections, is refused at submission with the field
    named and its text quoted verbatim; no job is queued, nothing was executed, and the CLI
    command the page shows quotes every value."""
    from engine.jobs import jobs_table

    canary = tmp_path / "CANARY"
    root = tmp_path / "cache"
    monkeypatch.setenv("NDE_CACHE", str(root))
    at = run_page("data")
    values = {k: v.format(canary=canary) for k, v in INJECTIONS.items()}
    keys = {"model": "ex_model", "data": "ex_data", "split": "ex_split", "checkpoint": "ex_ckpt"}
    for field, value in values.items():
        at.text_input(key=keys[field]).set_value(value)
    at.text_input(key="ex_name").set_value("injected")
    next(b for b in at.button if b.label == "Submit extraction job").click().run()
    assert not at.exception
    assert not any("Submitted extraction job" in s.value for s in at.success)
    errors = [e.value for e in at.error]
    assert any("field '" in e and "is invalid" in e for e in errors), errors
    assert any(str(canary) in e for e in errors), errors  # the value quoted verbatim, not run
    assert jobs_table(root).list() == []
    assert not canary.exists(), "an injected command ran"
    code = next(c.value for c in at.code if "engine" in c.value)
    assert "touch" in code and canary.name in code
    import shlex

    assert shlex.split(code)[:3] == ["python", "-m", "engine"]  # the shown command quotes each value
    assert not canary.exists()
