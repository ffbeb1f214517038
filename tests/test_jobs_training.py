"""Both training jobs and extraction end to end through the job system: ImageFolder data, a
timm model, checkpoints, stores and reports (learning itself: tests/test_train_*.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import timm
from PIL import Image
from safetensors.torch import save_file

from engine.errors import InvalidInputError
from engine.jobs import (
    cancel_job,
    dispatch,
    get_job,
    jobs_table,
    set_settings,
    submit_job,
    wait_for,
)
from engine.jobs.procs import process_identity
from engine.jobs.reports import load_report, report_stores, report_tables
from engine.storage.store import Cache

ROOT = Path(__file__).resolve().parents[1]
COLOURS = [(230, 40, 40), (40, 200, 40), (40, 60, 230), (220, 220, 40)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _folder(root: Path, per_class: int, seed: int, colours=COLOURS) -> Path:
    rng = np.random.default_rng(seed)
    for c, colour in enumerate(colours):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (24, 24, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / f"class{c}" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("images")
    _folder(root / "world" / "train", 4, 0)
    _folder(root / "world" / "test", 3, 1)
    ood = _folder(root / "ood", 3, 2, colours=[(128, 128, 128), (20, 20, 20)])
    model = timm.create_model("test_resnet", num_classes=len(COLOURS))
    save_file(model.state_dict(), str(root / "model.safetensors"))
    return {"world": root / "world", "ood": ood, "checkpoint": root / "model.safetensors"}


def test_both_training_jobs_run_as_jobs_and_leave_stores_and_reports(tmp_path, data, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two jobs at once on a small CPU
    cache = tmp_path / "cache"
    set_settings(cache, max_running=2)
    common = {"dataset": str(data["world"]), "epochs": 1, "batch_size": 8, "device": "cpu"}
    newclasses = submit_job(cache, "newclasses", {
        **common, "arch": "test_resnet", "num_classes": 0, "n_new": 1, "w_epochs": 3,
        "binary_pairs": 3})
    regularizer = submit_job(cache, "regularizer", {
        **common, "model": "test_resnet", "checkpoint": str(data["checkpoint"]),
        "ood": str(data["ood"]), "pairs": ["class0,class1"], "alpha": 1e-3, "control": False})
    extract = submit_job(cache, "extract", {
        "model": "test_resnet", "checkpoint": str(data["checkpoint"]), "data": str(data["world"]),
        "split": "test", "name": "extracted", "batch_size": 8, "device": "cpu"})
    *done, extracted = wait_for(cache, [newclasses.id, regularizer.id, extract.id], timeout=300)
    assert [j.state for j in done] == ["succeeded", "succeeded"], [j.error for j in done]
    assert extracted.state == "succeeded", extracted.error
    assert report_stores(load_report(extracted.result_path)) == ["extracted"]
    assert Cache(cache).load_store("extracted").n == 12
    store_cache = Cache(cache)
    for job in done:
        report = load_report(job.result_path)
        assert report["config"] == job.config  # the spec is stored with its results
        for name in report_stores(report):
            assert store_cache.load_store(name).n == 12  # 4 classes × 3 test images
        assert report_tables(report) and all(rows for _, rows in report_tables(report))
    nc, reg = (load_report(j.result_path) for j in done)
    assert nc["n_new"] == 1 and nc["metrics"]["ours"]["binary"]["pairs"] == 3
    assert set(reg["metrics"]) == {"before", "after"}
    assert 0 <= reg["metrics"]["after"]["ood_aupr"] <= 100
    # Checkpoints of every phase are in the run folders (what a retry resumes from).
    assert (Path(nc["checkpoints"]) / "backbone" / "last.pt").exists()
    assert (Path(reg["checkpoints"]) / "after" / "last.pt").exists()
    assert json.loads((Path(nc["run_dir"]) / "report.json").read_text())["kind"] == "newclasses"


def test_missing_data_or_models_are_refused_at_submission_and_a_vanished_dataset_fails_the_job(
        tmp_path, data):
    cache = tmp_path / "cache"
    for kind, values, field in [
        ("newclasses", {"dataset": str(tmp_path / "nowhere")}, "dataset"),
        ("newclasses", {"arch": "resnet5O"}, "arch"),
        ("regularizer", {"ood": "imagenet-o"}, "ood"),
        ("regularizer", {"checkpoint": str(tmp_path / "none.pt")}, "checkpoint"),
        ("extract", {"name": "x", "model": "nosuchnet"}, "model"),
    ]:
        with pytest.raises(InvalidInputError, match=f"field '{field}'"):
            submit_job(cache, kind, values)
    assert jobs_table(cache).list() == []  # nothing was queued
    # A dataset that disappears between submission and start: the job fails, saying why.
    folder = shutil.copytree(data["world"], tmp_path / "world")
    job = submit_job(cache, "newclasses", {"dataset": str(folder), "arch": "test_resnet", "device": "cpu"},
                     start=False)
    shutil.rmtree(folder)
    dispatch(cache)
    job = wait_for(cache, [job.id], timeout=120)[0]
    assert job.state == "failed" and "unknown dataset" in job.error


def _group(pgid: int) -> list[int]:
    """The live processes of process group ``pgid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            out.append(int(stat.parent.name))
    return out


def _until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.skipif(not Path("/proc").is_dir() or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux and two cores (helper processes)")
@pytest.mark.parametrize("how", [  # a cancel kills the process group: test_jobs.py covers it already
    pytest.param("cancel", marks=pytest.mark.slow), "kill -9 of the job alone"])
def test_a_stopped_training_job_leaves_no_helper_process_behind(tmp_path, data, how):
    """§3.2 trains its baseline in a helper process beside the backbone: a cancel stops both,
    and so does a hard kill of the job's own process (the helper dies with its parent)."""
    cache = tmp_path / "cache"
    job = submit_job(cache, "newclasses", {
        "dataset": str(data["world"]), "arch": "test_resnet", "num_classes": 0, "n_new": 1,
        "epochs": 10_000, "batch_size": 4, "device": "cpu", "side_by_side": True})
    table = jobs_table(cache)
    job = _until(lambda: (j := table.get(job.id)).proc_identity and "alongside" in j.message and j,
                 120, "the backbone and the baseline to train side by side")
    _until(lambda: list((cache / "runs").glob("newclasses-*/data-*/baseline/last.pt")), 120,
           "the helper to finish an epoch of the baseline")  # it is training, not starting up
    helpers = [p for p in _group(job.pid) if p != job.pid]
    assert helpers, "no helper process in the job's process group"
    if how == "cancel":
        assert cancel_job(cache, job.id, grace=2.0).state == "cancelled"
    else:
        os.kill(job.pid, signal.SIGKILL)
    _until(lambda: not _group(job.pid), 30, "every process of the job to end")
    assert all(process_identity(p) is None for p in helpers)
    assert get_job(cache, job.id).state == ("cancelled" if how == "cancel" else "failed")


@pytest.mark.slow  # two fresh torch processes: about a minute on a busy 2-core CPU
def test_the_same_command_trains_under_torchrun_with_two_processes(tmp_path, data):
    """DDP with no code change: two CPU processes (gloo), rank 0 writes the report and stores."""
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
           str(_free_port()), "-m", "engine", "--cache", str(cache), "train-regularizer",
           "--dataset", str(data["world"]), "--model", "test_resnet",
           "--checkpoint", str(data["checkpoint"]), "--ood", "", "--pairs", "class0,class1",
           "--alpha", "0.001", "--epochs", "1", "--batch-size", "4", "--device", "cpu",
           "--control", "false"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("report: ") == 1  # rank 0 only
    report = load_report(out.stdout.split("report: ")[1].split()[0])
    assert set(report["metrics"]) == {"before", "after"}
    assert "DDP: rank" in out.stderr
    for name in report_stores(report):
        assert Cache(cache).load_store(name).n == 12
