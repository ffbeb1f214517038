"""`python -m engine verify`: every kind of damage a copied cache can carry is found, reported,
quarantined (never deleted), and the exit code says so; healthy caches pass untouched."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3

import numpy as np
import pytest

from engine.cli import main
from engine.core.synthetic import classifier_like_logits
from engine.errors import IntegrityError
from engine.jobs.table import JobTable
from engine.stages.alpha_paths import load_or_compute_path
from engine.stages.pairing import open_pairing
from engine.stages.solutions import solve_dependencies
from engine.storage.manifests import self_hash
from engine.storage.store import Cache
from engine.storage.verify import verify_cache


def _fill(root) -> Cache:
    cache = Cache(root)
    F, y = classifier_like_logits(300, 8, rank=5, seed=1)
    cache.save_store("a", F, y)
    cache.save_store("b", F[:, ::-1].copy(), y)
    pairing = open_pairing(cache, "a")
    solve_dependencies(cache, pairing, 0.05)
    load_or_compute_path(cache, pairing, np.array([0.2, 0.05]))
    JobTable(cache.jobs_table_path)
    report = cache.root / "runs" / "probe-x" / "report-1.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"kind": "probe"}))
    return cache


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return _fill(tmp_path_factory.mktemp("verify") / "cache").root


@pytest.fixture
def cache(pristine, tmp_path) -> Cache:
    return Cache(shutil.copytree(pristine, tmp_path / "copy"))


def _verify(cache, *extra, capsys):
    code = main(["--cache", str(cache.root), "verify", *extra])
    return code, capsys.readouterr().out


def _files(cache) -> dict[str, bytes]:
    return {str(p.relative_to(cache.root)): p.read_bytes() for p in sorted(cache.root.rglob("*"))
            if p.is_file() and "locks" not in p.parts and not p.name.startswith("jobs.sqlite")}


def test_a_healthy_cache_passes_and_nothing_moves(cache, capsys):
    before = _files(cache)
    code, out = _verify(cache, capsys=capsys)
    assert code == 0, out
    # derived: the Gram set and its hint, the solution, the path's chunk, index and whole
    assert "2 stores" in out and "6 derived results" in out and "1 job report" in out and "no damage" in out
    assert _files(cache) == before
    assert not (cache.root / "quarantine").exists()


def test_damaged_store_data_is_quarantined_and_the_store_named(cache, capsys):
    digest = cache.load_store("a").content_hash
    obj = cache.objects_dir / f"{digest}.safetensors"
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    obj.write_bytes(bytes(data))
    code, out = _verify(cache, capsys=capsys)
    assert code == 1
    assert "DAMAGED  stores/a.json" in out and "quarantine/" in out
    assert not obj.exists() and len(list((cache.root / "quarantine").iterdir())) == 1
    assert (cache.stores_dir / "a.json").exists(), "the store's manifest stays: it names what to re-import"
    with pytest.raises(IntegrityError, match="missing"):
        cache.load_store("a")
    code, out = _verify(cache, capsys=capsys)
    assert code == 1 and "missing" in out  # still damaged until the user re-imports it
    F, y = classifier_like_logits(300, 8, rank=5, seed=1)
    cache.save_store("a", F, y)  # the same content again: the data file comes back
    assert _verify(cache, capsys=capsys)[0] == 0


def test_edited_truncated_and_foreign_manifests_are_found(cache, capsys):
    derived = sorted(cache.derived_dir.glob("solution-*.json"))[0]
    doc = json.loads(derived.read_text())
    doc["info"]["model"] = "edited"
    derived.write_text(json.dumps(doc))
    path = sorted(cache.derived_dir.glob("path-*.json"))[0]
    path.write_bytes(path.read_bytes()[:40])
    foreign = {"name": "b", "kind": "logits", "arrays_sha256": "0" * 64}  # self-hashed, fields missing
    foreign["manifest_sha256"] = self_hash(foreign)
    (cache.stores_dir / "b.json").write_text(json.dumps(foreign))
    code, out = _verify(cache, capsys=capsys)
    assert code == 1
    assert "edited or truncated" in out and "unreadable" in out and "foreign" in out
    assert len(list((cache.root / "quarantine").iterdir())) == 3
    # derived results are recomputed when asked for; the store must be re-imported
    pairing = open_pairing(cache, "a")
    solve_dependencies(cache, pairing, 0.05)
    load_or_compute_path(cache, pairing, np.array([0.2, 0.05]))
    code, out = _verify(cache, capsys=capsys)
    assert code == 0, out


def test_a_foreign_manifest_is_an_integrity_error_not_a_crash(cache):
    foreign = {"name": "a", "kind": "logits", "arrays_sha256": cache.load_store("a").content_hash,
               "n": "300", "k": 8, "dtype": "float32", "class_names": [], "sample_fingerprint": "x"}
    foreign["manifest_sha256"] = self_hash(foreign)
    (cache.stores_dir / "a.json").write_text(json.dumps(foreign))
    with pytest.raises(IntegrityError, match="foreign"):
        cache.load_store("a")


def test_a_renamed_manifest_is_found(cache, capsys):
    shutil.copy(cache.stores_dir / "a.json", cache.stores_dir / "c.json")
    with pytest.raises(IntegrityError, match="belongs to store 'a'"):
        Cache(cache.root).load_store("c")
    shutil.rmtree(cache.root / "quarantine", ignore_errors=True)
    shutil.copy(cache.stores_dir / "a.json", cache.stores_dir / "c.json")
    code, out = _verify(cache, "--no-quarantine", capsys=capsys)
    assert code == 1 and "renamed" in out
    assert (cache.stores_dir / "c.json").exists() and not (cache.root / "quarantine").exists()


def test_leftovers_of_interrupted_writes_are_notes_not_damage(cache, capsys):
    stray = cache.objects_dir / ".tmp-abc.safetensors"
    stray.write_bytes(b"half a write")
    old = cache.derived_dir / ".tmp-old"
    old.write_bytes(b"{")
    os.utime(old, (0, 0))
    orphan = cache.put_arrays({"x": np.arange(3.0)})
    code, out = _verify(cache, capsys=capsys)
    assert code == 0
    assert "note     objects/.tmp-abc.safetensors" in out and f"objects/{orphan}.safetensors" in out
    code, out = _verify(cache, "--clean", capsys=capsys)
    assert code == 0 and "removed 1 old temporary files" in out
    assert stray.exists() and not old.exists(), "a young temporary file may be a running write's"


def test_a_damaged_unreferenced_data_file_is_still_found(cache, capsys):
    orphan = cache.objects_dir / f"{cache.put_arrays({'x': np.arange(3.0)})}.safetensors"
    orphan.write_bytes(orphan.read_bytes()[:-1])
    (cache.objects_dir / "not-a-hash.safetensors").write_bytes(b"x")
    code, out = _verify(cache, capsys=capsys)
    assert code == 1
    assert out.count("DAMAGED") == 2


def test_job_reports_chunks_and_the_job_table(cache, capsys):
    (cache.root / "runs" / "probe-x" / "report-1.json").write_text('{"kind": "pro')
    chunk = cache.root / "partial" / "k1" / "chunk-000000.safetensors"
    chunk.parent.mkdir(parents=True)
    chunk.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    db = cache.root / "jobs.sqlite"
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = bytearray(db.read_bytes())
    raw[4096:8192] = os.urandom(4096)  # a page of the table overwritten
    db.write_bytes(bytes(raw))
    code, out = _verify(cache, "--json", capsys=capsys)
    doc = json.loads(out)
    assert code == 1 and not doc["ok"]
    assert {f["what"] for f in doc["damaged"]} == {"report", "chunk", "jobs"}
    assert db.exists(), "the job table is reported, never moved"


def test_a_partially_copied_cache_is_caught_file_by_file(pristine, tmp_path, capsys):
    """Copy the cache with random files truncated (an interrupted scp): verify names each one."""
    rng = np.random.default_rng(0)
    copy = Cache(shutil.copytree(pristine, tmp_path / "copied"))
    files = [p for p in copy.root.rglob("*.*") if p.suffix in (".json", ".safetensors") and p.stat().st_size > 64]
    cut = [files[i] for i in rng.choice(len(files), size=4, replace=False)]
    for p in cut:
        p.write_bytes(p.read_bytes()[: int(rng.integers(1, p.stat().st_size))])
    report = verify_cache(copy)
    assert not report.ok
    flagged = {f.path for f in report.damaged}
    for p in cut:
        rel = str(p.relative_to(copy.root))
        owners = {rel} | {str(m.relative_to(copy.root)) for m in copy.root.glob("*/*.json")
                          if p.suffix == ".safetensors" and p.stem in m.read_text(errors="replace")}
        assert flagged & owners, f"{rel} was truncated but not reported"


def test_damage_is_reported_in_the_dashboard_too(cache, monkeypatch):
    """A damaged store is moved aside when the Data page lists the stores: the page says so."""
    from tests.dashboard_cache import html_tables, messages, run_page

    manifest = cache.stores_dir / "b.json"
    manifest.write_text(manifest.read_text().replace('"b"', '"B"', 1))
    monkeypatch.setenv("NDE_CACHE", str(cache.root))
    at = run_page("data")
    assert not at.exception
    assert "moved to" in messages(at) and "verify" in messages(at)
    assert list(html_tables(at)[0]["name"]) == ["a"]
    at = run_page(params={"model": "b"})  # a link to the damaged store falls back, with a message
    assert not at.exception and "not in this cache" in messages(at)
