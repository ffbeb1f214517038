"""AppTest of per-sample-centred logits on Explore and Compare (issue 20: ``--centred`` in the UI)
and of the view line: checked against least squares and R² recomputed here from the stored
logits, centred with numpy (scikit-learn's r2_score), never against the pages' own numbers."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pytest

from engine.storage.store import Cache
from tests.dashboard_cache import (
    MODEL_A,
    MODEL_B,
    coef_rows,
    messages,
    metric_values,
    page_cache,  # noqa: F401 - the pages' `cache` fixture
    run_page,
)


def _centred(cache, model):
    store = Cache(cache).load_store(model)
    f = store.logits.astype(np.float64)
    return f - f.mean(axis=1, keepdims=True)


def _r2(y, yhat) -> float:
    from sklearn.metrics import r2_score

    return float(r2_score(y, yhat))


def _view(at) -> tuple[str, dict]:
    """The view line's text and its data-view JSON."""
    for el in at.get("html"):
        found = re.search(r'class="nde-view" data-view="([^"]*)">([^<]*)<', el.proto.body)
        if found:
            return html.unescape(found.group(2)), json.loads(html.unescape(found.group(1)))
    raise AssertionError("no view line")


def _widget(items, label):
    return next(w for w in items if w.label.startswith(label))


def test_explore_centred_best_subset_fits_the_centred_logits(cache):
    """With the toggle on (from the link), m = 1 is the best single source on the centred logits
    (exhaustive), its coefficient their least squares, R² theirs; the link, the toggle and the
    view line say centred."""
    at = run_page(params={"target": "5", "method": "best-subset", "m": "1", "logits": "centred"})
    assert not at.exception, at.exception
    assert _widget(at.toggle, "Centred logits").value is True
    F = _centred(cache, MODEL_A)
    y = F[:, 5]
    r2 = [(_r2(y, F[:, [j]] @ np.linalg.lstsq(F[:, [j]], y, rcond=None)[0]), j) for j in range(F.shape[1]) if j != 5]
    best_r2, best_j = max(r2)
    (j, coef), = coef_rows(at)
    assert j == best_j
    theta = np.linalg.lstsq(F[:, [j]], y, rcond=None)[0][0]
    assert coef == pytest.approx(theta, rel=1e-4)
    assert float(metric_values(at)["R²"]) == pytest.approx(best_r2, abs=1e-3)
    text, view = _view(at)
    assert view["logits"] == "centred" and "centred logits" in text
    assert dict(at.query_params)["logits"] == "centred"


def test_toggle_round_trips_and_raw_leaves_the_link_clean(cache):
    at = run_page(params={"target": "7", "method": "covlasso"})
    assert "logits" not in dict(at.query_params) and _view(at)[1]["logits"] == "raw"
    raw_r2 = metric_values(at)["R²"]
    _widget(at.toggle, "Centred logits").set_value(True).run()
    assert not at.exception, at.exception
    link = dict(at.query_params)
    assert link["logits"] == "centred" and link["method"] == "covlasso" and link["target"] == "7"
    F = _centred(cache, MODEL_A)
    rows = coef_rows(at)
    shown = F[:, [j for j, _ in rows]] @ np.array([c for _, c in rows])
    assert float(metric_values(at)["R²"]) == pytest.approx(_r2(F[:, 7], shown), abs=1e-3)
    again = run_page(params=link)  # the link the page wrote opens the same view
    assert dict(again.query_params) == link and metric_values(again) == metric_values(at)
    assert _widget(again.toggle, "Centred logits").value is True
    _widget(again.toggle, "Centred logits").set_value(False).run()
    assert "logits" not in dict(again.query_params) and metric_values(again)["R²"] == raw_r2


def test_a_bad_logits_value_falls_back_with_a_message(cache):
    at = run_page(params={"logits": "scaled"})
    assert not at.exception
    assert "logits in the link" in messages(at) and "'scaled'" in messages(at)
    assert _widget(at.toggle, "Centred logits").value is False


def test_compare_centred_fits_b_from_a_on_centred_logits(cache):
    at = run_page("compare", params={"model": MODEL_B, "source": MODEL_A, "target": "3", "method": "best-subset",
                                     "m": "2", "logits": "centred"})
    assert not at.exception, at.exception
    A, B = _centred(cache, MODEL_A), _centred(cache, MODEL_B)
    rows = coef_rows(at)[:2]  # the between table comes first
    src = [j for j, _ in rows]
    theta = np.linalg.lstsq(A[:, src], B[:, 3], rcond=None)[0]
    np.testing.assert_allclose([c for _, c in rows], theta, rtol=1e-4, atol=1e-6)
    assert float(metric_values(at)["R²"]) == pytest.approx(_r2(B[:, 3], A[:, src] @ theta), abs=1e-3)
    assert _view(at)[1] == {"model": MODEL_B, "source": MODEL_A, "target": 3, "method": "best-subset", "m": 2,
                            "alpha": None, "logits": "centred"}


@pytest.mark.parametrize("page", [None, "compare"])
def test_view_line_says_the_number_of_sources_once(cache, page):
    """Issue 20: the best-subset view read "best subset, 4 sources · 4 sources"."""
    params = {"model": MODEL_B, "source": MODEL_A} if page else {}
    at = run_page(page, params={**params, "target": "3", "method": "best-subset", "m": "3"})
    text, _ = _view(at)
    assert len(re.findall(r"\d+ sources?\b", text)) == 1, text
    at = run_page(page, params={**params, "target": "3", "method": "covlasso"})
    text, view = _view(at)
    counts = re.findall(r"(\d+) sources?\b", text)
    assert view["method"] == "covlasso" and counts == [str(len(coef_rows(at)))], text
