"""AppTest of the Emergence page: the shipped measurements drawn without a job, the sentence,
the two charts per figure, and the sweep offered as a job."""

from __future__ import annotations

import json

import pytest

from engine.core.emergence import describe_emergence
from tests.dashboard_cache import run_page

SHIPPED = "engine/weights/emergence-glyph-vgg.json"


@pytest.fixture()
def empty_cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    root.mkdir()
    monkeypatch.setenv("NDE_CACHE", str(root))
    return root


def test_the_shipped_emergence_is_drawn_without_a_job(empty_cache):
    from pathlib import Path

    shipped = json.loads((Path(__file__).resolve().parents[1] / SHIPPED).read_text())
    at = run_page("emergence")
    assert not at.exception, at.exception
    assert describe_emergence(shipped["runs"]) in [m.value for m in at.markdown]
    several = len({r["categories"] for r in shipped["runs"]}) > 1
    assert len(at.get("vega_lite_chart")) == 4 * (2 if several else 1)  # 4 figures by default
    assert any("Compute this sweep (job)" in b.label for b in at.button)
    from engine.jobs import list_jobs

    assert list_jobs(empty_cache) == []  # reading the page never submits a job
