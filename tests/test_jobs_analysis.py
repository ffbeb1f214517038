"""The all-target jobs (engine.jobs.analysis_jobs): a paths job killed with SIGKILL is
reported failed, leaves chunks a page reads as partial (never as complete), and its retry
solves only what is missing; the theory and atlas jobs make what the pages read."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from engine.core.analysis import LeastSquaresFloor, Top2, dependency_metrics
from engine.core.synthetic import classifier_like_logits
from engine.jobs import foreground_context, get_job, retry_job, spec_from_dict, submit_job, wait_for
from engine.jobs.analysis_jobs import run_atlas, run_theory
from engine.stages.alpha_paths import path_progress, path_spec, read_all_paths
from engine.stages.pairing import open_pairing


def _chunk_files(cache, spec) -> dict[str, int]:
    """Manifest name → modification time of every cached chunk of the path."""
    out = {}
    for a in range(0, spec.pairing.model.k, 4):
        config = {**spec.key(), "start": a, "stop": min(a + 4, spec.pairing.model.k)}
        path = cache.derived_path(cache.derived_key("path-chunk", config))
        if path.exists():
            out[path.name] = path.stat().st_mtime_ns
    return out


def test_a_killed_paths_job_is_reported_read_as_partial_and_resumed(cache):
    F, y = classifier_like_logits(800, 120, rank=20, seed=2)
    cache.save_store("m", F, y)
    spec = path_spec(cache, open_pairing(cache, "m"))
    job = submit_job(cache, "paths", {"model": "m", "chunk": 4})
    deadline = time.monotonic() + 120
    while path_progress(cache, spec).solved < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    job = get_job(cache, job.id)
    assert job.state == "running" and job.pid, (job.state, job.error)
    os.killpg(job.pid, signal.SIGKILL)  # the job's own process group (it leads it)
    while get_job(cache, job.id).state == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    dead = get_job(cache, job.id)
    assert dead.state == "failed" and "retry" in dead.error
    progress = path_progress(cache, spec)
    assert not progress.complete and 8 <= progress.solved < 120
    partial = read_all_paths(cache, spec)
    assert not partial.complete and len(partial.targets) == progress.solved
    before = _chunk_files(cache, spec)
    again = wait_for(cache, [retry_job(cache, job.id).id], timeout=300)[0]
    assert again.state == "succeeded", again.error
    full = read_all_paths(cache, spec)
    assert full.complete and path_progress(cache, spec).complete
    after = _chunk_files(cache, spec)
    assert all(after[name] == mtime for name, mtime in before.items())  # kept, not solved again
    np.testing.assert_array_equal(full.select(partial.targets).coef.values, partial.coef.values)


def test_theory_and_atlas_jobs_make_what_the_pages_read(cache):
    from engine.stages.atlas import read_communities
    from engine.stages.theory import read_floor, read_redundancy

    F, y = classifier_like_logits(800, 30, rank=12, seed=5)
    cache.save_store("a", F, y)
    G = (2 * F + 0.3 * np.random.default_rng(0).standard_normal(F.shape)).astype(np.float32)
    cache.save_store("b", G, y)
    for values in ({"model": "a"}, {"model": "b", "source": "a"}):
        spec = spec_from_dict("theory", values)
        run_theory(spec, foreground_context(cache, "theory", spec))
    red = read_redundancy(cache, open_pairing(cache, "a"))
    assert red is not None and red.redundancy.r.shape == (30,) and red.spectrum[0] >= red.spectrum[-1]
    floor = read_floor(cache, open_pairing(cache, "b", "a"))
    f = F.astype(np.float64)
    ls = LeastSquaresFloor(f.T @ f / len(f), f.T @ G.astype(np.float64) / len(f))
    for t in (0, 17, 29):  # the job's vectorised metrics against Table 1's per-target function
        ref = dependency_metrics(G, F, y, t, ls.coef(t), Top2.of(G))
        assert floor.rel_err[t] == pytest.approx(ref.rel_err, rel=1e-6)
        assert floor.acc[t] == pytest.approx(ref.acc, abs=1e-9) and floor.acc[t] > 50
    spec = spec_from_dict("atlas", {"model": "a", "alpha": 0.05, "top_k": 3, "min_coef": 0.0})
    run_atlas(spec, foreground_context(cache, "atlas", spec))
    pspec = path_spec(cache, open_pairing(cache, "a"))
    path = read_all_paths(cache, pspec)
    found = read_communities(cache, pspec, path.nearest_alpha_index(0.05), 3, 0.0)
    assert found and sum(len(c) for c in found) <= 30
