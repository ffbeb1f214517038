"""The Data page: stores and manifests, the upload import (and its refusals), the extraction form."""

from __future__ import annotations

import io

import numpy as np
import pytest

from dashboard.components.uploads import import_upload
from engine.errors import InvalidInputError
from engine.storage.store import Cache
from tests.dashboard_cache import (
    MODEL_A,
    MODEL_B,
    copy_cache,
    html_tables,
    messages,
    page_cache,  # noqa: F401 - the pages' `cache` fixture
    run_page,
    shared_cache,
)


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_data_lists_stores_and_shows_the_extract_command(cache):
    at = run_page("data")
    assert not at.exception, at.exception
    table = html_tables(at)[0]
    assert set(table["name"]) == {MODEL_A, MODEL_B}
    assert at.json, "the manifest is shown"
    assert any("python -m engine" in c.value and " extract " in c.value for c in at.code)
    assert {t.label for t in at.text_input} >= {"Store name"}


def test_data_on_an_empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NDE_CACHE", str(tmp_path / "empty"))
    at = run_page("data")
    assert not at.exception
    assert "python -m engine demo" in messages(at)


def test_upload_import_stores_logits(tmp_path):
    rng = np.random.default_rng(0)
    data = _npz(logits=rng.standard_normal((50, 4)).astype(np.float32), labels=rng.integers(0, 4, 50))
    store = import_upload(tmp_path, "uploaded", ("mine.npz", data))
    assert (store.n, store.k) == (50, 4)
    assert Cache(tmp_path).store_names() == ["uploaded"]


@pytest.mark.parametrize(
    ("upload", "reason"),
    [
        (("notes.safetensors", b"this is not an array file"), "not a readable"),
        (("weights.npz", _npz(weights=np.zeros((3, 3)))), "no array named 'logits'"),
        (("table.csv", b"1,2,3"), "unsupported file type"),
        (None, "choose a logits file"),
    ],
)
def test_upload_that_is_not_logits_says_why(tmp_path, upload, reason):
    with pytest.raises(InvalidInputError, match=reason):
        import_upload(tmp_path, "bad", upload)
    assert Cache(tmp_path).store_names() == []


def test_upload_is_bounded_in_size(tmp_path):
    with pytest.raises(InvalidInputError, match="upload limit"):
        import_upload(tmp_path, "big", ("big.npz", b"x" * (2 * 2**20)), max_mb=1)


def test_extraction_form_reports_a_bad_spec(tmp_path_factory, tmp_path, monkeypatch):
    pytest.importorskip("engine.jobs")
    root = copy_cache(shared_cache(tmp_path_factory.getbasetemp()), tmp_path / "cache")
    monkeypatch.setenv("NDE_CACHE", str(root))
    at = run_page("data")
    next(b for b in at.button if b.label == "Submit extraction job").click().run()
    assert not at.exception
    assert "name" in " ".join(e.value for e in at.error)  # the store name is required


def test_zoo_form_shows_the_command_and_reports_a_bad_spec(tmp_path_factory, tmp_path, monkeypatch):
    pytest.importorskip("engine.jobs")
    root = copy_cache(shared_cache(tmp_path_factory.getbasetemp()), tmp_path / "cache")
    monkeypatch.setenv("NDE_CACHE", str(root))
    at = run_page("data")
    assert any(" extract --preset paper --data DATA " in c.value for c in at.code)
    at.selectbox(key="zoo_preset").set_value("(the models below)")
    next(b for b in at.button if b.label == "Submit zoo job").click().run()  # a form: applied on submit
    assert not at.exception
    assert any(" extract --model MODEL MODEL " in c.value for c in at.code)
    assert "either models or a preset" in " ".join(e.value for e in at.error)  # no models given
