"""AppTest of the Theory page: redundancy, Conjecture 1 against α, the Gram spectrum."""

from __future__ import annotations

import pytest

from tests.dashboard_cache import MODEL_B, messages, metric_values, run_page, shared_cache


@pytest.fixture()
def cache(tmp_path_factory, monkeypatch):
    root = shared_cache(tmp_path_factory.getbasetemp())
    monkeypatch.setenv("NDE_CACHE", str(root))
    return root


def test_theory_shows_three_sections(cache):
    at = run_page("theory")
    assert not at.exception, at.exception
    values = metric_values(at)
    assert {"Median r_i", "Relative precision", "Condition number"} <= set(values)
    assert len(at.get("vega_lite_chart")) == 4  # redundancy, Conjecture 1, sparsity, spectrum
    assert any("Conjecture 1" in s.value for s in at.subheader)


def test_theory_follows_the_model(cache):
    at = run_page("theory")
    before = metric_values(at)
    next(s for s in at.selectbox if s.label == "Model").set_value(MODEL_B).run()
    assert not at.exception
    assert metric_values(at) != before
    assert dict(at.query_params)["model"] == MODEL_B


def test_theory_bad_model_in_link(cache):
    at = run_page("theory", {"model": "../etc/passwd"})
    assert not at.exception
    assert "not in this cache" in messages(at)
    assert "Median r_i" in metric_values(at)
