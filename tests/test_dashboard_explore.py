"""AppTest of the Explore page: widgets, numbers that follow target and α, URL state, bad links."""

from __future__ import annotations

import re

import pytest

from tests.dashboard_cache import (
    MODEL_A,
    MODEL_B,
    alpha_of,
    coef_rows,
    iframe_html,
    messages,
    metric_values,
    other_value,
    page_cache,  # noqa: F401 - the pages' `cache` fixture
    reads_again,
    run_page,
)


def _target(at):
    return next(s for s in at.selectbox if s.label == "Target category")


def test_explore_shows_every_part(cache):
    at = run_page(params={"method": "covlasso"})  # the paper's view (the default one: test_dashboard_sources)
    assert not at.exception
    assert at.title[0].value == "Explore a neural dependency"
    assert len(at.select_slider) == 1
    assert set(metric_values(at)) == {"Abs Err", "Rel Err", "R²", "Acc", "Pos Acc"}
    (html,) = iframe_html(at)
    assert "new vis.Network" in html and "data:image/png;base64," in html  # glyph images as nodes
    assert not re.search(r"(src|href)=[\"']https?:", html), "the graph must not load anything remotely"
    # the charts come in the first run: no rerun after the first paint (issue 20: a second run
    # before the browser had drawn the first left the widgets on their first options)
    assert len(at.get("vega_lite_chart")) == 3  # R² against the sources, Fig. 3 and the α path
    assert len(coef_rows(at)) > 0
    assert len(at.get("download_button")) >= 8
    assert dict(at.query_params)["model"] == MODEL_A


def test_opens_on_a_clear_example_at_its_recommended_alpha(cache):
    """The default target's dependency fits (R² ≥ FIT_R2, recomputed here from the logits with
    scikit-learn's r2_score) with few sources, at the largest α of the path that fits."""
    from sklearn.metrics import r2_score

    from engine.stages.recommend import FIT_R2
    from engine.storage.store import Cache

    at = run_page(params={"method": "covlasso"})
    assert not at.exception
    store = Cache(cache).load_store(MODEL_A)
    F = store.logits.astype("float64")
    target, slider = _target(at).value, at.select_slider[0]
    assert str(slider.format_func(slider.value)).endswith("★ recommended")
    rows = coef_rows(at)
    idx, coef = [j for j, _ in rows], [c for _, c in rows]
    assert 2 <= len(rows) <= 16
    assert r2_score(F[:, target], F[:, idx] @ coef) >= FIT_R2 - 1e-6  # coefficients shown to 6 digits
    assert float(metric_values(at)["R²"]) >= FIT_R2
    grid = sorted(alpha_of(o) for o in slider.options)  # labels are rounded: find the current one by nearness
    here = min(range(len(grid)), key=lambda i: abs(grid[i] - slider.value))
    if here + 1 < len(grid):  # the next larger α of the path no longer fits
        slider.set_value(grid[here + 1]).run()
        assert float(metric_values(at)["R²"]) < FIT_R2
    # one click back to the recommended α, one to the paper's when the grid has it
    back = next(b for b in at.button if "Recommended α" in b.label)
    back.click().run()
    assert str(at.select_slider[0].format_func(at.select_slider[0].value)).endswith("★ recommended")


def test_alpha_changes_the_numbers(cache):
    at = run_page(params={"target": "0", "method": "covlasso"})  # a dense dependency (the default one has 2 sources at any α)
    before = metric_values(at)
    slider = at.select_slider[0]
    rows_before = len(coef_rows(at))
    smallest = min(alpha_of(o) for o in slider.options)
    slider.set_value(smallest).run()
    assert not at.exception
    assert metric_values(at) != before
    assert len(coef_rows(at)) > rows_before  # smaller α, more sources
    assert float(dict(at.query_params)["alpha"]) == pytest.approx(smallest, rel=1e-2)


def test_target_changes_the_numbers(cache):
    at = run_page()
    before = metric_values(at)
    _target(at).set_value(7).run()
    assert not at.exception
    assert metric_values(at) != before
    assert dict(at.query_params)["target"] == "7"


def test_link_restores_the_view(cache):
    at = run_page(params={"model": MODEL_B, "target": "5", "alpha": "0.3"})
    assert not at.exception
    assert not at.warning
    model = next(s for s in at.selectbox if s.label == "Model")
    assert model.value == MODEL_B
    assert _target(at).value == 5
    assert at.select_slider[0].value == pytest.approx(0.3, rel=0.2)  # the nearest α of the path's grid


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"model": "no-such-store"}, "not in this cache"),
        ({"target": "9999"}, "out of range"),
        ({"target": "no such class"}, "No category named"),
        ({"alpha": "-1"}, "(0, ∞)"),
        ({"alpha": "abc"}, "positive number"),
        ({"alpha": "1e9"}, "α_max"),
    ],
)
def test_bad_link_falls_back_with_a_message(cache, params, expected):
    at = run_page(params=params)
    assert not at.exception
    assert expected in messages(at)
    assert set(metric_values(at)) == {"Abs Err", "Rel Err", "R²", "Acc", "Pos Acc"}  # the page still works


def test_empty_cache_says_how_to_fill_it(tmp_path, monkeypatch):
    monkeypatch.setenv("NDE_CACHE", str(tmp_path / "empty"))
    at = run_page()
    assert not at.exception
    assert "python -m engine demo" in messages(at)


def test_cut_this_dependency_links_to_the_regulariser_form(cache):
    """The strongest source of the target shown, as the Jobs page's form reads it from the URL."""
    from urllib.parse import parse_qs, urlparse

    at = run_page()
    (link,) = [b for b in at.get("link_button") if "Cut" in b.proto.label]
    query = parse_qs(urlparse(link.proto.url).query)
    assert urlparse(link.proto.url).path == "jobs" and query["kind"] == ["regularizer"]
    target, source = (int(v) for v in query["pairs"][0].split(","))
    assert target != source and coef_rows(at)


def _engine_calls(trace) -> list[tuple[str, str, str]]:
    """The page's calls into the engine in one traced run (callbacks of Streamlit's not counted)."""
    return [(src, dst, fn) for (src, dst, fn), n in trace.calls.items() for _ in range(n)
            if src == "dashboard" and dst != "dashboard"]


@pytest.mark.parametrize(("params", "control"), [({"method": "covlasso"}, "α"), ({}, "Sources")])
def test_a_run_makes_one_call_down_the_layers_and_a_slider_move_reads_nothing(cache, params, control):
    """Issue 22: Explore lays out what one call returns. Followed through the real layers
    (bench.layer_trace: every call from a function of one layer into another's), a run calls
    the engine once — apps' explore_view, below it the stages, storage, the core, in that order
    — and moving α or m calls it once again and reads no path, curve or Gram from disk."""
    from streamlit.testing.v1 import AppTest

    from bench.layer_trace import LayerTrace
    from tests.dashboard_cache import APP

    at = AppTest.from_file(str(APP), default_timeout=120)
    for key, value in params.items():
        at.query_params[key] = value
    first = LayerTrace(root="dashboard")
    with first.active():
        at.run()
    assert not at.exception, at.exception
    calls = [c for c in _engine_calls(first) if c[2] != "DependencyMetrics.r2_reason"]  # a field read (a property)
    assert calls == [("dashboard", "apps", "explore_view")]
    assert first.down_calls["dashboard"] == 1
    assert first.first_entries()[:5] == ["dashboard", "apps", "stages", "storage", "core"]

    slider = next(s for s in at.select_slider if s.label.startswith(control))
    wanted = other_value(slider)
    slider.set_value(wanted)
    moved = LayerTrace(root="dashboard")
    with moved.active():
        at.run()
    assert not at.exception, at.exception
    assert next(s for s in at.select_slider if s.label.startswith(control)).value == pytest.approx(wanted, rel=1e-2)
    assert [c for c in _engine_calls(moved) if c[2] != "DependencyMetrics.r2_reason"] == \
        [("dashboard", "apps", "explore_view")]
    reads = reads_again(moved)
    assert not reads, f"a slider move read {reads} again"


@pytest.mark.parametrize(("params", "control"), [({}, "Sources"), ({"logits": "centred"}, "Sources"),
                                                 ({"method": "covlasso"}, "α"),
                                                 ({"method": "covlasso", "logits": "centred"}, "α")])
def test_a_run_enters_the_stages_twice_once_for_the_pairing_once_for_the_target(cache, params, control):
    """Issue 22: below explore_view, the apps enter the stages twice per run — the pairing's data
    (stages.page_data.pairing_data), then the shown target's (target_data) — on the page's first
    run and after a slider move, followed through the real layers (bench.layer_trace)."""
    from streamlit.testing.v1 import AppTest

    from tests.dashboard_cache import APP, stage_calls, stage_order, traced_run

    at = AppTest.from_file(str(APP), default_timeout=120)
    for key, value in params.items():
        at.query_params[key] = value
    first = traced_run(at)
    assert stage_calls(first) == {"pairing_data": 1, "target_data": 1}
    order = stage_order(first)
    assert order.index("pairing_data") < order.index("target_data")

    slider = next(s for s in at.select_slider if s.label.startswith(control))
    slider.set_value(other_value(slider))
    assert stage_calls(traced_run(at)) == {"pairing_data": 1, "target_data": 1}


def test_the_sources_chart_counts_the_lassos_sources_at_the_charts_fit_bar():
    """The chart of R² against the number of sources says how many sources the Lasso needs to
    fit: the fewest with R² ≥ 0.95 along its path (the chart's bar, not the α recommendation's
    0.99), and circles the dependency shown."""
    import numpy as np

    from engine.apps import cards
    from engine.apps.controls import sources_chart
    from engine.core.analysis import DependencyMetrics
    from engine.stages.sparsity import SourcesCurve, SparseFit

    metrics = DependencyMetrics(abs_err=0.1, rel_err=1.0, acc=90.0, ori_acc=90.0, pos_acc=90.0, ori_pos_acc=90.0,
                                n_pos=10, r2=0.97)
    curve = SourcesCurve("a", "a", True, 0, np.arange(1, 2), (SparseFit(np.array([1]), np.array([0.5]), metrics),),
                         alphas=np.array([3.0, 2.0, 1.0, 0.5]), lasso_n=np.array([1, 3, 5, 7]),
                         lasso_r2=np.array([0.5, 0.96, 0.98, 0.995]), relaxed_n=np.array([1, 3, 5, 7]),
                         relaxed_r2=np.array([0.6, 0.97, 0.99, 0.996]))
    card = cards.best_subset_card("a", "a", "t", ["t", "s"], 0, curve, 1)
    data = sources_chart(curve, card)
    assert data.lasso == 3  # R² 0.96 with 3 sources (the 0.99 bar: 7)
    assert data.fit == 1 and data.here == (1, 0.97) and data.max_m == 1
