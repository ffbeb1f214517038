"""Importing logits computed elsewhere, from every supported container; refusing the rest."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from engine.errors import InvalidInputError
from engine.ingest.importer import import_logits


def _arrays(logits_small):
    F, y = logits_small
    return F, y, [f"cls{i}" for i in range(F.shape[1])]


def test_npz_with_class_names(cache, tmp_path, logits_small):
    F, y, names = _arrays(logits_small)
    np.savez(tmp_path / "x.npz", logits=F, labels=y, class_names=np.array(names))
    s = import_logits(cache, tmp_path / "x.npz", "x")
    np.testing.assert_array_equal(s.logits, F)
    assert s.class_names == names


def test_npy_pair(cache, tmp_path, logits_small):
    F, y, _ = _arrays(logits_small)
    np.save(tmp_path / "val_logits.npy", F)
    np.save(tmp_path / "val_labels.npy", y)
    s = import_logits(cache, tmp_path / "val_logits.npy", "v")
    np.testing.assert_array_equal(s.labels, y)
    np.save(tmp_path / "other.npy", F)
    s2 = import_logits(cache, tmp_path / "other.npy", "o", labels_path=tmp_path / "val_labels.npy")
    assert s2.content_hash == s.content_hash


def test_safetensors_and_pt(cache, tmp_path, logits_small):
    F, y, names = _arrays(logits_small)
    save_file({"logits": F, "labels": y}, str(tmp_path / "x.safetensors"))
    a = import_logits(cache, tmp_path / "x.safetensors", "st")
    torch.save({"logits": torch.from_numpy(F), "labels": torch.from_numpy(y), "class_names": names}, tmp_path / "x.pt")
    b = import_logits(cache, tmp_path / "x.pt", "pt")
    assert a.content_hash == b.content_hash
    assert b.class_names == names


def test_class_names_file(cache, tmp_path, logits_small):
    F, y, names = _arrays(logits_small)
    np.savez(tmp_path / "x.npz", logits=F, labels=y)
    (tmp_path / "names.txt").write_text("\n".join(names))
    s = import_logits(cache, tmp_path / "x.npz", "x", class_names_path=tmp_path / "names.txt")
    assert s.class_names == names


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickles_are_never_loaded(cache, tmp_path, logits_small):
    F, y, _ = _arrays(logits_small)
    np.savez(tmp_path / "obj.npz", logits=np.array([_Evil()], dtype=object), labels=y)
    with pytest.raises(InvalidInputError, match="pickle"):
        import_logits(cache, tmp_path / "obj.npz", "x")
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"logits": _Evil()}))
    with pytest.raises(InvalidInputError, match="safely"):
        import_logits(cache, tmp_path / "evil.pt", "x")
    assert cache.store_names() == []


@pytest.mark.parametrize(
    "content, suffix, pattern",
    [
        (b"", ".npz", "empty"),
        (b"not a zip file at all", ".npz", "not an .npz archive"),
        (b"\x93NUMPY garbage", ".npy", "not a NumPy array file"),
        (b"garbage", ".safetensors", "safetensors"),
        (b"x", ".csv", "unsupported"),
    ],
)
def test_unreadable_files_rejected(cache, tmp_path, content, suffix, pattern):
    path = tmp_path / f"f{suffix}"
    path.write_bytes(content)
    with pytest.raises(InvalidInputError, match=pattern):
        import_logits(cache, path, "x")


def test_missing_arrays_named(cache, tmp_path, logits_small):
    F, y, _ = _arrays(logits_small)
    np.savez(tmp_path / "a.npz", scores=F, labels=y)
    with pytest.raises(InvalidInputError, match="no array named 'logits'.*scores"):
        import_logits(cache, tmp_path / "a.npz", "x")
    np.savez(tmp_path / "b.npz", logits=F)
    with pytest.raises(InvalidInputError, match="no labels"):
        import_logits(cache, tmp_path / "b.npz", "x")
    with pytest.raises(InvalidInputError, match="no such file"):
        import_logits(cache, tmp_path / "nothing.npz", "x")
