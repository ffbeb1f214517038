"""AppTest of the Compare page: between-network dependency, shared/different sources, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from engine.storage.store import Cache
from tests.dashboard_cache import (
    MODEL_A,
    MODEL_B,
    alpha_of,
    copy_cache,
    iframe_html,
    messages,
    metric_values,
    page_cache,  # noqa: F401 - the pages' `cache` fixture
    reads_again,
    run_page,
    shared_cache,
)

LINK = {"model": MODEL_B, "source": MODEL_A}


def test_compare_shows_between_and_shared(cache):
    at = run_page("compare", LINK)
    assert not at.exception, at.exception
    assert at.title[0].value == "Compare two models"
    labels = {s.label for s in at.selectbox}
    assert {"Model B (its targets)", "Model A (the sources)", f"Target category of {MODEL_B}"} <= labels
    values = metric_values(at)
    assert {"Abs Err", "Rel Err", "R²", "Acc", "Pos Acc", "Shared sources", f"Only in {MODEL_A}"} <= set(values)
    assert len(iframe_html(at)) == 1
    assert dict(at.query_params)["source"] == MODEL_A
    floor = [c.value for c in at.caption if c.value.startswith("**Floor**")]
    assert len(floor) == 1 and "least squares on all" in floor[0] and "Rel Err" in floor[0] and "R²" in floor[0]


def test_compare_target_and_alpha_change_the_numbers(cache):
    at = run_page("compare", {**LINK, "method": "covlasso"})
    before = metric_values(at)
    target = next(s for s in at.selectbox if s.label.startswith("Target category"))
    target.set_value(3).run()
    assert not at.exception
    after_target = metric_values(at)
    assert after_target != before
    slider = at.select_slider[0]
    slider.set_value(min(alpha_of(o) for o in slider.options)).run()
    assert not at.exception
    assert metric_values(at) != after_target


def test_same_model_twice_asks_for_two(cache):
    at = run_page("compare", {"model": MODEL_A, "source": MODEL_A})
    assert not at.exception
    assert "two different models" in messages(at)


def test_unknown_source_in_link_falls_back(cache):
    at = run_page("compare", {"model": MODEL_B, "source": "nope"})
    assert not at.exception
    assert "'nope'" in messages(at)
    assert "Abs Err" in metric_values(at)


def test_stores_of_other_samples_are_refused(tmp_path_factory, tmp_path, monkeypatch):
    root = copy_cache(shared_cache(tmp_path_factory.getbasetemp()), tmp_path / "cache")
    rng = np.random.default_rng(0)
    Cache(root).save_store("other-samples", rng.standard_normal((500, 60)).astype(np.float32),
                           rng.integers(0, 60, 500))
    monkeypatch.setenv("NDE_CACHE", str(root))
    at = run_page("compare", {"model": "other-samples", "source": MODEL_A})
    assert not at.exception
    assert "same samples" in " ".join(e.value for e in at.error)


def test_one_store_only(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    Cache(tmp_path).save_store("only", rng.standard_normal((200, 10)).astype(np.float32), rng.integers(0, 10, 200))
    monkeypatch.setenv("NDE_CACHE", str(tmp_path))
    at = run_page("compare")
    assert not at.exception
    assert "two logit stores" in messages(at)


@pytest.mark.parametrize(("params", "control"), [({"method": "covlasso"}, "α"), ({}, "Sources")])
def test_a_run_makes_one_call_down_the_layers_and_a_slider_move_reads_nothing(cache, params, control):
    """Issue 22: Compare lays out what one call returns — followed through the real layers
    (bench.layer_trace), a run calls the engine once (apps' compare_view, below it the stages,
    storage, the core, in that order), and moving α or m reads no path, curve or Gram again."""
    from streamlit.testing.v1 import AppTest

    from bench.layer_trace import LayerTrace
    from tests.dashboard_cache import APP

    at = AppTest.from_file(str(APP), default_timeout=120)
    for key, value in {**LINK, **params}.items():
        at.query_params[key] = value
    at.switch_page("app_pages/compare.py")
    runs = []
    for move in (False, True):
        if move:
            slider = next(s for s in at.select_slider if s.label.startswith(control))
            values = [alpha_of(o) for o in slider.options] if control == "α" else \
                [int(str(o).split()[0]) for o in slider.options]
            slider.set_value(next(v for v in values if v != slider.value))
        trace = LayerTrace(root="dashboard")
        with trace.active():
            at.run()
        assert not at.exception, at.exception
        runs.append(trace)
        calls = [(src, dst, fn) for (src, dst, fn), n in trace.calls.items() for _ in range(n)
                 if src == "dashboard" and dst != "dashboard" and fn != "DependencyMetrics.r2_reason"]
        assert calls == [("dashboard", "apps", "compare_view")]
    assert runs[0].first_entries()[:5] == ["dashboard", "apps", "stages", "storage", "core"]
    reads = reads_again(runs[1])
    assert not reads, f"a slider move read {reads} again"


@pytest.mark.parametrize(("params", "control"), [({}, "Sources"), ({"logits": "centred"}, "Sources"),
                                                 ({"method": "covlasso"}, "α"),
                                                 ({"method": "covlasso", "logits": "centred"}, "α")])
def test_a_run_enters_the_stages_three_times_the_pair_the_target_each_model(cache, params, control):
    """Issue 22: below compare_view, the apps enter the stages three times per run — the pair's
    data (stages.page_data.pair_data), the shown target's (target_data), then the target inside
    each model (own_data) — on the page's first run and after a slider move, followed through
    the real layers (bench.layer_trace)."""
    from streamlit.testing.v1 import AppTest

    from tests.dashboard_cache import APP, other_value, stage_calls, stage_order, traced_run

    at = AppTest.from_file(str(APP), default_timeout=120)
    for key, value in {**LINK, **params}.items():
        at.query_params[key] = value
    at.switch_page("app_pages/compare.py")
    first = traced_run(at)
    assert at.title[0].value == "Compare two models"
    assert any(m.label == "Shared sources" for m in at.metric)  # the within-model part was laid out
    wanted = {"pair_data": 1, "target_data": 1, "own_data": 1}
    assert stage_calls(first) == wanted
    order = stage_order(first)
    assert order.index("pair_data") < order.index("target_data") < order.index("own_data")

    slider = next(s for s in at.select_slider if s.label.startswith(control))
    slider.set_value(other_value(slider))
    assert stage_calls(traced_run(at)) == wanted
