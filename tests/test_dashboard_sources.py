"""AppTest of the fewest sources that fit (issue 25) on Explore and Compare: the default
method, the sources control, the paper's α one click away, the URL round trip, and the chart of
R² against the number of sources checked against least squares and R² recomputed here from the
stored logits (numpy's lstsq, scikit-learn's r2_score) — never against the pages' own numbers."""

from __future__ import annotations

import itertools
import json
import unicodedata

import numpy as np
import pytest

from engine.storage.store import Cache
from tests.dashboard_cache import (
    MODEL_A,
    MODEL_B,
    coef_rows,
    glyph_class_names,
    messages,
    metric_values,
    page_cache,  # noqa: F401 - the pages' `cache` fixture
    run_page,
)

FIT_R2 = 0.95
E_ACUTE = glyph_class_names(60).index(f"é {unicodedata.name('é')}")  # the planted é ≈ 0.6·e + 0.6·è


def _logits(cache, model=MODEL_A):
    store = Cache(cache).load_store(model)
    return store.logits.astype(np.float64), store.labels


def _r2(y, yhat) -> float:
    from sklearn.metrics import r2_score

    return float(r2_score(y, yhat))


def _lstsq_r2(F, y, sources) -> float:
    if len(sources) == 0:
        return _r2(y, np.zeros_like(y))
    theta = np.linalg.lstsq(F[:, list(sources)], y, rcond=None)[0]
    return _r2(y, F[:, list(sources)] @ theta)


def _widget(items, label):
    return next(w for w in items if w.label.startswith(label))


def _chart_frames(at) -> dict:
    """The sources chart's datasets (name -> DataFrame), decoded from the page's Arrow bytes."""
    import pyarrow as pa

    for el in at.get("vega_lite_chart"):
        names = [d.name for d in el.proto.datasets]
        if "curve" in names:
            return {d.name: pa.ipc.open_stream(d.data.data).read_pandas() for d in el.proto.datasets}
    raise AssertionError("no chart of R² against the number of sources")


def test_explore_opens_on_the_fewest_sources_that_fit(cache):
    """Default: the best-subset view of a category the model recognises, at the fewest sources
    that fit (R² ≥ 0.95 by scikit-learn, top-1 kept), where no fewer sources fit (exhaustive)."""
    at = run_page()
    assert not at.exception, at.exception
    assert _widget(at.radio, "Method").value == "best-subset"
    slider = _widget(at.select_slider, "Sources")
    assert "★ fewest that fit" in str(slider.format_func(slider.value))
    target, m = _widget(at.selectbox, "Target category").value, int(slider.value)
    assert target == E_ACUTE and 2 <= m <= 4
    F, labels = _logits(cache)
    rows = coef_rows(at)
    src, coef = [j for j, _ in rows], np.array([c for _, c in rows])
    assert len(src) <= m and target not in src
    assert _r2(F[:, target], F[:, src] @ coef) >= FIT_R2 - 1e-6  # the coefficients shown (6 digits)
    theta = np.linalg.lstsq(F[:, src], F[:, target], rcond=None)[0]  # least squares on those sources
    np.testing.assert_allclose(coef, theta, rtol=1e-4, atol=1e-5)
    others = [j for j in range(F.shape[1]) if j != target]
    assert all(_lstsq_r2(F, F[:, target], s) < FIT_R2 for k in range(1, m) for s in itertools.combinations(others, k))
    assert float(metric_values(at)["R²"]) == pytest.approx(_r2(F[:, target], F[:, src] @ coef), abs=1e-3)
    replaced = F.copy()
    replaced[:, target] = F[:, src] @ coef
    kept = 100 * (np.mean(replaced.argmax(1) == labels) - np.mean(F.argmax(1) == labels))
    assert kept >= -0.5
    assert dict(at.query_params) == {"model": MODEL_A, "target": str(target), "method": "best-subset", "m": str(m)}


def test_sources_control_changes_the_view_and_the_link(cache):
    at = run_page(params={"target": "0"})
    before = metric_values(at)
    _widget(at.select_slider, "Sources").set_value(1).run()
    assert not at.exception
    rows = coef_rows(at)
    assert len(rows) == 1
    F, _ = _logits(cache)
    best_one = max(_lstsq_r2(F, F[:, 0], [j]) for j in range(1, F.shape[1]))
    assert float(metric_values(at)["R²"]) == pytest.approx(best_one, abs=1e-3)  # the best single source
    assert metric_values(at) != before
    assert dict(at.query_params)["m"] == "1" and dict(at.query_params)["target"] == "0"


def test_the_papers_alpha_is_one_click_away(cache):
    at = run_page()
    target = _widget(at.selectbox, "Target category").value
    radio = _widget(at.radio, "Method")
    assert "CovLasso" in str(radio.format_func("covlasso")) and "Paper" in str(radio.format_func("covlasso"))
    radio.set_value("covlasso").run()
    assert not at.exception
    assert _widget(at.select_slider, "α").value > 0
    link = dict(at.query_params)
    assert link["method"] == "covlasso" and "alpha" in link and "m" not in link
    assert _widget(at.selectbox, "Target category").value == target  # same category, the other method
    F, _ = _logits(cache)
    rows = coef_rows(at)
    shown = F[:, [j for j, _ in rows]] @ np.array([c for _, c in rows])
    assert float(metric_values(at)["R²"]) == pytest.approx(_r2(F[:, target], shown), abs=1e-3)
    at.run()  # the Fig. 3 and α-path charts, below the fold, beside the sources chart
    assert len(at.get("vega_lite_chart")) == 3
    _widget(at.radio, "Method").set_value("best-subset").run()
    assert "alpha" not in dict(at.query_params) and dict(at.query_params)["method"] == "best-subset"


@pytest.mark.parametrize("params, method, control", [
    ({"target": "7", "method": "best-subset", "m": "3"}, "best-subset", ("Sources", 3)),
    ({"target": "7", "method": "covlasso", "alpha": "0.3"}, "covlasso", ("α", 0.3)),
    ({"target": "7", "alpha": "0.3"}, "covlasso", ("α", 0.3)),  # a link made before methods existed
])
def test_link_round_trip(cache, params, method, control):
    at = run_page(params=params)
    assert not at.exception and not at.warning
    assert _widget(at.selectbox, "Target category").value == 7
    assert _widget(at.radio, "Method").value == method
    label, value = control
    assert _widget(at.select_slider, label).value == pytest.approx(value, rel=0.2)
    link = dict(at.query_params)
    again = run_page(params=link)  # the link the page wrote opens the same view
    assert dict(again.query_params) == link and metric_values(again) == metric_values(at)


@pytest.mark.parametrize("params, expected", [
    ({"method": "ridge"}, "method in the link"),
    ({"m": "0"}, "m in the link"),
    ({"m": "9"}, "m in the link"),
    ({"m": "two"}, "m in the link"),
])
def test_bad_method_or_m_falls_back_with_a_message(cache, params, expected):
    at = run_page(params=params)
    assert not at.exception
    assert expected in messages(at) and repr(next(iter(params.values()))) in messages(at)
    assert _widget(at.radio, "Method").value == "best-subset"
    assert "★" in str(_widget(at.select_slider, "Sources").format_func(_widget(at.select_slider, "Sources").value))


def test_sources_chart_series_are_the_three_methods(cache):
    """Best subset at m = 1 … 8 (its R² ≥ that of every support of the Lasso of the same size,
    and equal to least squares on its sources); the Lasso's R² of its path's coefficients and
    the relaxed Lasso's (least squares on the Lasso's support), best over α per size — every
    one recomputed here from the logits."""
    from engine.stages.alpha_paths import path_spec, target_paths
    from engine.stages.pairing import open_pairing

    at = run_page(params={"target": "0"})
    frames = _chart_frames(at)
    curve = frames["curve"]
    assert set(curve["method"]) == {"best subset", "relaxed Lasso", "CovLasso"}
    F, _ = _logits(cache)
    y = F[:, 0]
    c = Cache(cache)
    pairing = open_pairing(c, MODEL_A)
    path = target_paths(c, path_spec(c, pairing), [0])
    lasso, relaxed = {}, {}
    for a in path.alpha_indices(0):
        theta = path.coef_vector(0, a)
        support = np.flatnonzero(theta)
        n = len(support)
        if 1 <= n <= 16:
            lasso[n] = max(lasso.get(n, -np.inf), _r2(y, F @ theta))
            relaxed[n] = max(relaxed.get(n, -np.inf), _lstsq_r2(F, y, support))
    got = {name: dict(zip(part["sources"], part["r2"])) for name, part in curve.groupby("method")}
    assert got["CovLasso"].keys() == lasso.keys()
    for n, r2 in lasso.items():
        assert got["CovLasso"][n] == pytest.approx(r2, abs=1e-4)
        assert got["relaxed Lasso"][n] == pytest.approx(relaxed[n], abs=1e-4)
    best = got["best subset"]
    assert sorted(best) == list(range(1, 9))
    for n, r2 in best.items():
        if n in relaxed:
            assert r2 >= relaxed[n] - 1e-6  # no support of that size does better than the best subset
    assert best[1] == pytest.approx(max(_lstsq_r2(F, y, [j]) for j in range(1, 60)), abs=1e-4)
    assert best[2] == pytest.approx(max(_lstsq_r2(F, y, s) for s in itertools.combinations(range(1, 60), 2)),
                                    abs=1e-4)
    (here,) = frames["here"].itertuples()
    assert best[int(here.sources)] == pytest.approx(here.r2, abs=1e-4)  # the shown dependency is circled


def test_compare_defaults_to_best_subsets_and_keeps_the_link(cache):
    link = {"model": MODEL_B, "source": MODEL_A, "target": "5", "method": "best-subset", "m": "2"}
    at = run_page("compare", link)
    assert not at.exception, at.exception
    assert _widget(at.radio, "Method").value == "best-subset"
    assert _widget(at.select_slider, "Sources").value == 2
    assert dict(at.query_params) == link
    A, _ = _logits(cache, MODEL_A)
    B, _ = _logits(cache, MODEL_B)
    best_two = max(_lstsq_r2(A, B[:, 5], s) for s in itertools.combinations(range(60), 2))  # every source allowed
    assert float(metric_values(at)["R²"]) == pytest.approx(best_two, abs=1e-3)
    assert "Shared sources" in metric_values(at)
    _widget(at.radio, "Method").set_value("covlasso").run()
    assert not at.exception
    assert dict(at.query_params)["method"] == "covlasso" and "alpha" in dict(at.query_params)
    assert _widget(at.select_slider, "α").value > 0


def test_compare_opens_on_best_subsets_by_default(cache):
    at = run_page("compare", {"model": MODEL_B, "source": MODEL_A})
    assert not at.exception
    assert _widget(at.radio, "Method").value == "best-subset"
    assert dict(at.query_params)["method"] == "best-subset"


def test_json_export_names_the_method():
    from engine.apps import views
    from engine.core.analysis import DependencyMetrics

    frame = views.dependency_frame(np.array([3, 1]), np.array([0.2, -0.5]), ["a", "b", "c", "d"])
    metrics = DependencyMetrics(0.1, 1.0, 90.0, 90.5, 80.0, 95.0, 10, 0.97)
    best = json.loads(views.dependency_json("m", "m", None, 0, "a", frame, metrics, method="best-subset", m=2))
    assert best["method"] == "best-subset" and best["m"] == 2 and best["alpha"] is None
    assert [s["index"] for s in best["targets"][0]["sources"]] == [1, 3]
    lasso = json.loads(views.dependency_json("m", "m", 0.5, 0, "a", frame, metrics))
    assert lasso["method"] == "covlasso" and lasso["alpha"] == 0.5 and "m" not in lasso
    assert "best subset, at most 2 sources" in views.metrics_markdown("m", "m", "a", None, metrics, "f",
                                                                       method="best-subset", m=2)


def test_a_new_target_opens_at_its_own_fewest_sources(cache):
    """m moved by hand stays while the target does; another target opens at its own ★, and the
    slider, the link and the content agree (the content has at most the slider's m sources)."""
    at = run_page()
    _widget(at.select_slider, "Sources").set_value(6).run()
    assert dict(at.query_params)["m"] == "6" and len(coef_rows(at)) <= 6
    _widget(at.select_slider, "Sources").set_value(5).run()  # same target: the hand-set m stays
    assert _widget(at.select_slider, "Sources").value == 5
    _widget(at.selectbox, "Target category").set_value(0).run()
    assert not at.exception
    slider = _widget(at.select_slider, "Sources")
    assert "★" in str(slider.format_func(slider.value))
    assert dict(at.query_params)["m"] == str(slider.value) and dict(at.query_params)["target"] == "0"
    assert 1 <= len(coef_rows(at)) <= slider.value


def test_every_target_export_follows_the_method(cache):
    at = run_page(params={"m": "3"})
    labels = [b.label for b in at.get("download_button")]
    assert "Every target's best dependency with at most 3 sources (CSV)" in labels
    assert any(label.startswith("R² vs sources") for label in labels)
    at = run_page(params={"method": "covlasso"})
    labels = [b.label for b in at.get("download_button")]
    assert any(label.startswith("Every target's dependencies at α =") for label in labels)



def test_add_to_talk_on_the_best_subset_view_adds_the_best_subset(tmp_path, monkeypatch, cache):
    """The slide added from the best-subset view is that view: the best subset with at most m
    sources (the talk file's ``sources``), no α."""
    from engine.apps.talk.talkfile import read_talk
    from tests.dashboard_cache import copy_cache

    root = copy_cache(cache, tmp_path / "c")
    monkeypatch.setenv("NDE_CACHE", str(root))
    at = run_page(params={"target": "7", "m": "3"})
    at.button(key="x-talk").click().run()  # the first one writes the cache's default talk, then appends
    assert not at.exception
    last = read_talk(Cache(root).talk_path).slides[-1]
    assert (last.kind, last.target, last.sources, last.alpha, last.n_sources) == \
        ("dependency", glyph_class_names(60)[7], 3, None, None)
