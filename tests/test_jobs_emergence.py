"""The emergence job end to end: real job processes on a generated ImageFolder with timm's
tiny test models — a kill -9 in the middle resumes to the report of an unbroken run, bad input
is one line with exit 2 and nothing queued or written, a folder of a user's checkpoints."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from engine.cli import main
from engine.jobs import get_job, jobs_table, refresh, retry_job, submit_job, wait_for
from engine.jobs.reports import load_report
from engine.storage.store import Cache
from tests.test_emergence import _independent_figures

COLOURS = [(230, 40, 40), (40, 200, 40), (40, 60, 230), (220, 220, 40), (200, 40, 200), (40, 210, 210)]


def _folder(root: Path, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for c, colour in enumerate(COLOURS):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 60, (16, 16, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / f"class{c}" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("emergence-images")
    _folder(root / "train", 8, 0)
    _folder(root / "test", 5, 1)
    return root


def _spec(world: Path) -> dict:
    return {"model": "test_resnet", "dataset": str(world), "categories": ["2", "4"], "epochs": 2,
            "fractions": ["0.5"], "batch_size": 4, "train_per_class": 8}


def test_a_job_killed_mid_run_resumes_to_the_report_of_an_unbroken_run(tmp_path, world):
    whole = wait_for(tmp_path / "a", [submit_job(tmp_path / "a", "emergence", _spec(world)).id], timeout=300)[0]
    assert whole.state == "succeeded", whole.error
    expected = load_report(whole.result_path)["runs"]
    assert [(r["categories"], r["epoch"]) for r in expected] == [
        (k, e) for k in (2, 4) for e in (0.5, 1.0, 2.0)]

    cache = tmp_path / "b"
    job = submit_job(cache, "emergence", _spec(world))
    deadline = time.monotonic() + 120
    while not list(cache.glob("runs/emergence-recipe-*/data-*/k*/rows/*.json")):  # a checkpoint is measured
        assert time.monotonic() < deadline and get_job(cache, job.id).active, get_job(cache, job.id).error
        time.sleep(0.02)
    os.kill(get_job(cache, job.id).pid, signal.SIGKILL)
    while get_job(cache, job.id).active:
        refresh(cache)
        time.sleep(0.05)
    assert get_job(cache, job.id).state == "failed"  # killed before it finished
    measured = {p: p.stat().st_mtime_ns for p in cache.glob("runs/emergence-recipe-*/data-*/k*/rows/*.json")}
    assert 1 <= len(measured) < len(expected)
    again = wait_for(cache, [retry_job(cache, job.id).id], timeout=300)[0]
    assert again.state == "succeeded", again.error
    assert load_report(again.result_path)["runs"] == expected
    assert all(p.stat().st_mtime_ns == t for p, t in measured.items())  # measured checkpoints not redone
    # every checkpoint's store is in the cache (the Data page lists them)
    assert {r["store"] for r in expected} <= set(Cache(cache).store_names())


def test_bad_input_is_one_line_exit_2_and_nothing_queued_or_written(tmp_path, world, capsys):
    cache = tmp_path / "cache"
    empty = tmp_path / "empty"
    empty.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    save_file(timm.create_model("test_vit", num_classes=len(COLOURS)).state_dict(), str(other / "epoch_1.safetensors"))
    out = tmp_path / "r.json"
    cases = [
        (["--categories", "0"], "categories"),
        (["--categories", "1001"], "at most 1,000"),
        (["--dataset", str(world), "--categories", "7"], "at most 6"),
        (["--dataset", str(world), "--model", "test_resnet", "--checkpoints", str(empty)], "no checkpoint"),
        (["--dataset", str(world), "--model", "test_resnet", "--checkpoints", str(other)],
         "does not fit architecture"),
    ]
    for extra, words in cases:
        code = main(["--cache", str(cache), "emergence", "--json", str(out), *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2, (extra, err)
        assert len(err.splitlines()) == 1 and words in err, (extra, err)
        assert not out.exists()
    assert jobs_table(cache).list() == []


def test_a_folder_of_user_checkpoints_is_measured_and_a_second_run_is_all_cache_hits(tmp_path, world, capsys):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    for epoch in (2, 10):
        torch.manual_seed(epoch)
        model = timm.create_model("test_resnet", num_classes=len(COLOURS))
        save_file(model.state_dict(), str(folder / f"epoch_{epoch}.safetensors"))
    cache, out = tmp_path / "cache", tmp_path / "r.json"
    args = ["--cache", str(cache), "emergence", "--model", "test_resnet", "--dataset", str(world),
            "--checkpoints", str(folder), "--json", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    runs = json.loads(out.read_text())["runs"]
    assert [r["epoch"] for r in runs] == [2, 10] and {r["categories"] for r in runs} == {6}
    for row in runs:
        store = Cache(cache).load_store(row["store"])
        logits, labels = np.asarray(store.logits), np.asarray(store.labels)
        assert store.n == 30 and row["top1"] == pytest.approx(np.mean(logits.argmax(1) == labels))
        ref = _independent_figures(logits, labels)
        for key, value in ref.items():
            assert row[key] == pytest.approx(value, abs=1e-6), key
    first = out.read_text()
    out.unlink()
    t0 = time.monotonic()
    assert main(args) == 0
    assert json.loads(out.read_text())["runs"] == json.loads(first)["runs"]
    assert time.monotonic() - t0 < 60
