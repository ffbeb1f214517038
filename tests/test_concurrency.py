"""Writers at once: one correct result, never two half ones; readers never see a half write.

Real processes (tests/campaign.py): several writers of the same store, extraction, solution,
α path or job started together; writers of *different* content under one name; readers
loading a store while it is overwritten again and again; and dashboard sessions (AppTest)
reading pages while a writer process imports, overwrites and solves in the same cache.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from engine.storage.store import Cache
from tests.campaign import (
    KINDS,
    Bench,
    content_hash,
    context,
    leftover_processes,
    op_cli,
    op_read_stores,
    op_write_loop,
    race_campaign,
    warm_up,
)
from tests.dashboard_cache import glyph_class_names, html_tables, run_page


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return Bench(tmp_path_factory.mktemp("race"))


@pytest.mark.parametrize("kind", ["import", "extract", "path", "job"])  # -m slow: every kind
def test_writers_of_the_same_result_at_once_give_one_correct_result(bench, kind, tmp_path):
    stats = race_campaign(bench, kind, trials=1, n_procs=3, workdir=tmp_path)
    assert stats.processes == 3
    assert stats.corrupted == [], "\n".join(stats.corrupted)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_many_races(bench, kind, tmp_path):
    stats = race_campaign(bench, kind, trials=20, n_procs=4, workdir=tmp_path)
    assert stats.corrupted == [], "\n".join(stats.corrupted)


def _contents(*files: Path) -> dict[str, Path]:
    out = {}
    for f in files:
        with np.load(f) as z:
            out[content_hash(z["logits"], z["labels"])] = f
    return out


def test_different_contents_under_one_name_one_wins_the_others_are_told(bench, tmp_path):
    files = [bench.new, bench.old, bench.small]
    warm_up()
    procs = [context().Process(target=op_cli, args=(str(tmp_path / f"w{i}.log"), [
        "--cache", str(tmp_path / "c"), "import-logits", str(f), "--name", "m"])) for i, f in enumerate(files)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    codes = sorted(p.exitcode for p in procs)
    assert codes == [0, 2, 2], codes
    winner = files[[p.exitcode for p in procs].index(0)]
    store = Cache(tmp_path / "c").load_store("m")
    assert content_hash(store.logits, store.labels) == next(iter(_contents(winner)))
    losers = [(tmp_path / f"w{i}.log").read_text() for i, p in enumerate(procs) if p.exitcode == 2]
    assert all("already exists" in text and "Traceback" not in text for text in losers)


def test_readers_never_see_a_half_overwritten_store(bench, tmp_path):
    """Two readers load store m in a loop while writers overwrite it, old ↔ new, back to back."""
    import shutil

    root = shutil.copytree(bench.bases["old"], tmp_path / "c")
    known = _contents(bench.old, bench.new)
    warm_up()
    stop = tmp_path / "stop"
    readers = [context().Process(target=op_read_stores, args=(
        str(tmp_path / f"r{i}.log"), str(root), "m", str(stop), str(tmp_path / f"r{i}.out"))) for i in range(2)]
    for r in readers:
        r.start()
    for write in range(6):
        w = context().Process(target=op_cli, args=(str(tmp_path / "w.log"), [
            "--cache", str(root), "import-logits", str([bench.new, bench.old][write % 2]), "--name", "m",
            "--overwrite"]))
        w.start()
        w.join()
        assert w.exitcode == 0, (tmp_path / "w.log").read_text()[-2000:]
    stop.touch()
    for r in readers:
        r.join()
    lines = [line for i in range(2) for line in (tmp_path / f"r{i}.out").read_text().splitlines()]
    seen = [line.split(" ", 1)[1] for line in lines if line.startswith("SEEN")]
    errors = [line for line in lines if line.startswith("ERROR")]
    assert len(seen) >= 6, f"the readers read only {len(seen)} times"
    assert errors == []
    assert set(seen) <= set(known), "a reader saw content that is neither the old nor the new store"
    assert len(set(seen)) == 2, "the readers never saw the store change: the test proved nothing"
    assert leftover_processes(grace=2) == []


def _small_npz(path: Path, seed: int) -> Path:
    from engine.core.synthetic import classifier_like_logits

    F, y = classifier_like_logits(400, 12, rank=6, seed=seed)
    np.savez(path, logits=F, labels=y, class_names=np.array(glyph_class_names(12)))
    return path


def test_dashboard_sessions_stay_correct_while_a_writer_works(tmp_path, monkeypatch):
    """Three sessions (Data, Explore on the store being overwritten, Explore by default) render
    again and again while another process overwrites a store, adds stores and solves."""
    from engine.ingest.importer import import_logits

    files = [_small_npz(tmp_path / f"v{i}.npz", seed=i) for i in range(2)]
    scratch = Cache(tmp_path / "scratch")
    known = {import_logits(scratch, f, f"s{i}").content_hash[:12] for i, f in enumerate(files)}
    root = tmp_path / "cache"
    import_logits(Cache(root), files[0], "w")
    monkeypatch.setenv("NDE_CACHE", str(root))
    warm_up()
    writer = context().Process(target=op_write_loop, args=(
        str(tmp_path / "writer.log"), str(root), [str(f) for f in files], time.time() + 12.0))
    writer.start()
    runs = 0
    try:
        while writer.is_alive() and runs < 9:
            for page, params in (("data", {}), (None, {"model": "w"}), (None, {})):
                at = run_page(page, params)
                assert not at.exception, at.exception
                assert not at.error, [e.value for e in at.error]
                if page == "data":
                    rows = html_tables(at)[0]  # the stores table (plain HTML, unrounded rows)
                    assert "w" in set(rows["name"]), rows
                    shown = json.loads(at.json[0].value)  # the manifest under the table (the first store)
                    if shown["name"].startswith(("w", "new-")):
                        digest = str(shown["arrays_sha256"])[:12]
                        assert digest in known, f"the Data page shows content that was never written: {digest}"
                runs += 1
    finally:
        writer.join(60)
        if writer.is_alive():
            writer.kill()
    assert writer.exitcode == 0, (tmp_path / "writer.log").read_text()[-3000:]
    assert runs >= 3
