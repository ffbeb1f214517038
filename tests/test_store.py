"""The logit store: round trip, content addressing, atomicity, tamper detection, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

import engine.storage.memory as memory_mod
import engine.storage.objects as objects_mod
import engine.storage.stamps as stamps_mod
from engine.errors import IntegrityError, InvalidInputError, NotFoundError
from engine.storage.store import Cache


def test_round_trip_preserves_everything(cache, logits_small):
    F, y = logits_small
    names = [f"c{i}" for i in range(F.shape[1])]
    s = cache.save_store("m1", F, y, names, meta={"model": {"name": "toy"}})
    back = Cache(cache.root).load_store("m1")
    np.testing.assert_array_equal(back.logits, F)
    np.testing.assert_array_equal(back.labels, y)
    assert back.class_names == names
    assert back.manifest["model"] == {"name": "toy"}
    assert back.content_hash == s.content_hash
    assert (cache.objects_dir / f"{s.content_hash}.safetensors").exists()
    for key in ("created", "versions", "sample_fingerprint", "n", "k", "dtype"):
        assert key in back.manifest


def test_float16_on_request(cache, logits_small):
    F, y = logits_small
    s = cache.save_store("half", F, y, dtype="float16")
    assert s.logits.dtype == np.float16
    np.testing.assert_allclose(s.logits.astype(np.float32), F, rtol=1e-3, atol=1e-2)


def test_same_content_is_stored_once(cache, logits_small):
    F, y = logits_small
    a = cache.save_store("a", F, y)
    b = cache.save_store("b", F, y)
    assert a.content_hash == b.content_hash
    assert len(list(cache.objects_dir.glob("*.safetensors"))) == 1


def test_existing_name_not_overwritten_by_accident(cache, logits_small):
    F, y = logits_small
    cache.save_store("m", F, y)
    with pytest.raises(InvalidInputError, match="already exists"):
        cache.save_store("m", F * 2, y)
    np.testing.assert_array_equal(cache.load_store("m").logits, F)
    cache.save_store("m", F * 2, y, overwrite=True)
    np.testing.assert_array_equal(cache.load_store("m").logits, F * 2)


def test_failed_write_leaves_previous_store_intact(cache, logits_small, monkeypatch):
    F, y = logits_small
    cache.save_store("m", F, y)

    def broken_save(arrays, path, metadata=None):
        with open(path, "wb") as fh:
            fh.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(objects_mod, "save_file", broken_save)
    with pytest.raises(OSError):
        cache.save_store("m", F + 1, y, overwrite=True)
    with pytest.raises(OSError):
        cache.save_store("new", F + 1, y)
    monkeypatch.undo()
    np.testing.assert_array_equal(cache.load_store("m").logits, F)
    assert "new" not in cache.store_names()
    leftovers = [p.name for p in cache.root.rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == []


def test_tampered_arrays_detected_and_quarantined(cache, logits_small):
    F, y = logits_small
    s = cache.save_store("m", F, y)
    path = cache.objects_dir / f"{s.content_hash}.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="damaged"):
        cache.load_store("m")
    assert not path.exists()
    assert any((cache.root / "quarantine").iterdir())


def test_truncated_arrays_detected(cache, logits_small):
    F, y = logits_small
    s = cache.save_store("m", F, y)
    path = cache.objects_dir / f"{s.content_hash}.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(IntegrityError):
        cache.load_store("m")


def test_edited_manifest_detected(cache, logits_small):
    F, y = logits_small
    cache.save_store("m", F, y)
    mpath = cache.stores_dir / "m.json"
    manifest = json.loads(mpath.read_text())
    manifest["class_names"][0] = "tampered"
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="edited"):
        cache.load_store("m")


def test_unknown_store_lists_known_ones(cache, logits_small):
    F, y = logits_small
    cache.save_store("alpha-model", F, y)
    with pytest.raises(NotFoundError, match="alpha-model"):
        cache.load_store("beta")
    with pytest.raises(NotFoundError, match="empty"):
        Cache(cache.root / "other").load_store("x")


@pytest.mark.parametrize("name", ["../evil", "a/b", "", " x", ".hidden", "x" * 101, "a\\b", "m.json"])
def test_store_names_cannot_escape_the_cache(cache, logits_small, name):
    F, y = logits_small
    with pytest.raises(InvalidInputError, match="invalid store name"):
        cache.save_store(name, F, y)


BAD_ARRAYS = {
    "logits rank 1": (np.zeros(10, np.float32), np.zeros(10, np.int64), None, "2-D"),
    "logits rank 3": (np.zeros((2, 3, 4), np.float32), np.zeros(2, np.int64), None, "2-D"),
    "integer logits": (np.zeros((4, 3), np.int32), np.zeros(4, np.int64), None, "floating"),
    "empty": (np.zeros((0, 3), np.float32), np.zeros(0, np.int64), None, "at least"),
    "one class": (np.zeros((4, 1), np.float32), np.zeros(4, np.int64), None, "at least"),
    "nan": (np.array([[0, np.nan], [1, 2]], np.float32), np.zeros(2, np.int64), None, "NaN"),
    "inf": (np.array([[0, np.inf], [1, 2]], np.float32), np.zeros(2, np.int64), None, "NaN/Inf"),
    "N mismatch": (np.zeros((4, 3), np.float32), np.zeros(5, np.int64), None, "must match"),
    "labels 2-D": (np.zeros((4, 3), np.float32), np.zeros((4, 1), np.int64), None, "1-D"),
    "float labels": (np.zeros((4, 3), np.float32), np.full(4, 0.5), None, "integers"),
    "label too big": (np.zeros((4, 3), np.float32), np.array([0, 1, 2, 3]), None, r"\[0, 2\]"),
    "negative label": (np.zeros((4, 3), np.float32), np.array([0, -1, 2, 1]), None, "lie in"),
    "K mismatch names": (np.zeros((4, 3), np.float32), np.zeros(4, np.int64), ["a", "b"], "class names"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARRAYS))
def test_bad_arrays_rejected_with_reason(cache, case):
    logits, labels, names, pattern = BAD_ARRAYS[case]
    with pytest.raises(InvalidInputError, match=pattern):
        cache.save_store("m", logits, labels, names)
    assert cache.store_names() == []


def test_float16_overflow_refused(cache):
    F = np.array([[1e6, 0.0], [0.0, 1.0]], np.float32)
    with pytest.raises(InvalidInputError, match="overflow"):
        cache.save_store("m", F, np.array([0, 1]), dtype="float16")


def test_a_store_too_large_for_memory_is_refused_before_loading(cache, logits_small, monkeypatch):
    F, y = logits_small
    cache.save_store("m", F, y)
    monkeypatch.setattr(cache, "get_arrays", lambda *a, **k: pytest.fail("the arrays were read"))
    monkeypatch.setattr(memory_mod, "available_memory", lambda: 1000)
    with pytest.raises(InvalidInputError, match=r"store 'm' \(1,500 samples × 40 categories\) needs 0\.2 MiB "
                                                r"of memory; this machine has 0\.0 MiB available"):
        cache.load_store("m")


def test_an_import_too_large_for_memory_is_refused_before_reading(cache, tmp_path, monkeypatch):
    """The logits' size (from the file's header) and their Gram's, before any array is read."""
    import engine.ingest.importer

    np.savez(tmp_path / "x.npz", logits=np.zeros((100, 300), np.float32), labels=np.zeros(100, np.int64))
    monkeypatch.setattr(memory_mod, "available_memory", lambda: 100_000)
    monkeypatch.setattr(engine.ingest.importer, "_np_load", lambda *a: pytest.fail("the file was read"))
    with pytest.raises(InvalidInputError, match=r"importing x\.npz \(100 samples × 300 categories: the logits "
                                                r"and their 0\.7 MiB Gram\) needs .* MiB of memory"):
        engine.ingest.importer.import_logits(cache, tmp_path / "x.npz", "x")


# ----------------------------------------------------------------------------- verified stamps

# Opens a store in a fresh process, as a later CLI call or dashboard would, with the stamp
# threshold given (0: every object is "large"), and counts the files it hashes and the
# logit-value scans it makes.
_OPEN_ELSEWHERE = """
import sys
import engine.storage.objects as o
import engine.storage.stamps as st
import engine.storage.store as s
st.STAMP_MIN_BYTES = int(sys.argv[3])
hashed, scanned = [], []
real_hash, real_check = o.sha256_file, s.check_logit_arrays
o.sha256_file = lambda p: hashed.append(p) or real_hash(p)
s.check_logit_arrays = lambda *a: scanned.append(1) or real_check(*a)
try:
    s.Cache(sys.argv[1]).load_store(sys.argv[2])
    print("OK", len(hashed), len(scanned))
except s.IntegrityError as exc:
    print("DAMAGED", len(hashed), len(scanned))
"""


def _open_elsewhere(root, name: str, threshold: int = 0) -> tuple[str, int, int]:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _OPEN_ELSEWHERE, str(root), name, str(threshold)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    verdict, hashed, scanned = out.stdout.split()
    return verdict, int(hashed), int(scanned)


@pytest.fixture
def stamped(cache, logits_small, monkeypatch):
    """A store whose object counts as large (threshold 0), written by this process."""
    monkeypatch.setattr(stamps_mod, "STAMP_MIN_BYTES", 0)
    F, y = logits_small
    s = cache.save_store("m", F, y)
    return cache, cache.object_path(s.content_hash)


def test_a_large_object_written_or_hashed_once_is_not_hashed_again_elsewhere(stamped):
    cache, path = stamped
    assert cache.verified_path(path.stem).exists()
    # the writer hashed the bytes it wrote and checked them as logits: nobody does it again
    assert _open_elsewhere(cache.root, "m") == ("OK", 0, 0)
    # without a stamp (a cache written before stamps existed): the first reader hashes, then stamps
    cache.verified_path(path.stem).unlink()
    assert _open_elsewhere(cache.root, "m") == ("OK", 1, 1)
    assert _open_elsewhere(cache.root, "m") == ("OK", 0, 0)
    # objects under the threshold are hashed by every process
    assert _open_elsewhere(cache.root, "m", threshold=1 << 40) == ("OK", 1, 1)


def test_a_stamped_object_edited_in_place_is_hashed_and_quarantined(stamped):
    cache, path = stamped
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))  # same size, same inode
    assert _open_elsewhere(cache.root, "m") == ("DAMAGED", 1, 0)
    assert not path.exists() and any(cache.quarantine_dir.iterdir())
    assert not cache.verified_path(path.stem).exists()


def test_an_edit_that_restores_the_modification_time_is_still_caught(stamped):
    """``touch``/``os.utime`` can set mtime back, never ctime: the stamp no longer matches."""
    import os
    import time

    cache, path = stamped
    before = path.stat()
    time.sleep(0.01)
    with open(path, "r+b") as handle:
        handle.seek(-5, os.SEEK_END)
        handle.write(b"\x00\x01\x02\x03\x04")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_mtime_ns == before.st_mtime_ns and path.stat().st_size == before.st_size
    assert _open_elsewhere(cache.root, "m")[0] == "DAMAGED"


def test_a_copied_cache_is_hashed_once_where_it_lands(stamped, tmp_path):
    import shutil

    cache, path = stamped
    copy = tmp_path / "copied"
    shutil.copytree(cache.root, copy)  # copy2: times kept, the stamps travel, the inodes differ
    assert (copy / "verified" / f"{path.stem}.json").exists()
    assert _open_elsewhere(copy, "m") == ("OK", 1, 0)  # values already checked: bytes alone decide
    assert _open_elsewhere(copy, "m") == ("OK", 0, 0)


def test_an_unreadable_stamp_means_hash_again(stamped):
    cache, path = stamped
    cache.verified_path(path.stem).write_text("{not json")
    assert _open_elsewhere(cache.root, "m") == ("OK", 1, 1)
    assert json.loads(cache.verified_path(path.stem).read_text())["sha256"] == path.stem


def test_the_stamp_trade_off_damage_under_the_file_system_is_caught_by_verify(stamped):
    """What a stamp cannot see (a disk that flips a byte without the file system knowing,
    simulated by stamping the damaged file as it now is) is read as intact; `verify` hashes
    every file whatever its stamp, quarantines it and drops the stamp."""
    from engine.storage.stamps import file_stamp
    from engine.storage.verify import verify_cache

    cache, path = stamped
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    cache.mark_verified(path.stem, file_stamp(path))  # the stale stamp now matches the file
    assert _open_elsewhere(cache.root, "m")[0] == "OK"  # the documented trade-off
    report = verify_cache(cache)
    assert not report.ok and any(f.what == "object" for f in report.damaged)
    assert not path.exists() and not cache.verified_path(path.stem).exists()
    assert _open_elsewhere(cache.root, "m")[0] == "DAMAGED"  # its data file is gone now


def test_verify_stamps_intact_objects_and_removes_orphan_stamps(stamped):
    from engine.storage.verify import verify_cache

    cache, path = stamped
    cache.verified_path(path.stem).unlink()
    orphan = cache.verified_path("0" * 64)
    orphan.write_text("{}")
    assert verify_cache(cache).ok
    assert cache.verified_path(path.stem).exists() and not orphan.exists()
    assert _open_elsewhere(cache.root, "m") == ("OK", 0, 1)
