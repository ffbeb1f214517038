"""AppTest of the Jobs page: the form submits a real job, the list and the report show it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.jobs import jobs_table, submit_job, wait_for
from engine.storage.atomic import write_json_atomic

PAGE = str(Path(__file__).resolve().parents[1] / "dashboard" / "app_pages" / "jobs.py")


@pytest.fixture
def page(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("NDE_CACHE", str(cache))
    at = AppTest.from_file(PAGE, default_timeout=30)
    return at, cache


def test_empty_cache_says_how_to_start(page):
    at, _ = page
    at.run()
    assert not at.exception
    assert at.title[0].value == "Jobs"
    assert any("No jobs yet" in i.value for i in at.info)


def test_submit_from_the_form_runs_a_real_job_and_shows_it(page):
    at, cache = page
    at.run()
    at.selectbox(key="jobs-kind").set_value("probe").run()
    at.number_input(key="jobs-probe-seconds").set_value(0.3)
    at.text_input(key="jobs-probe-message").set_value("from the page")
    at.button[0].click().run()  # the form's submit button
    assert not at.exception
    assert any("Job 1 (probe)" in s.value for s in at.success)
    job = jobs_table(cache).get(1)
    assert job.config["message"] == "from the page" and job.config["seconds"] == 0.3
    assert wait_for(cache, [1], timeout=60)[0].state == "succeeded"
    at.run()
    frame = at.dataframe[0].value
    assert frame.loc[frame["id"] == 1, "state"].item() == "succeeded"
    assert "from the page" in at.code[0].value  # the log tail


def test_an_invalid_value_is_refused_with_its_field(page):
    at, cache = page
    at.run()
    at.selectbox(key="jobs-kind").set_value("newclasses").run()
    at.number_input(key="jobs-newclasses-n_new").set_value(0)
    at.button[0].click().run()
    assert not at.exception
    assert any("'n_new' = 0" in e.value for e in at.error)
    assert jobs_table(cache).list() == []


def test_report_tables_stores_and_cancel(page):
    at, cache = page
    # A finished §3.2 job whose report the page must show as the paper's tables.
    done = submit_job(cache, "probe", {"seconds": 0})
    wait_for(cache, [done.id], timeout=60)
    report = cache / "report.json"
    write_json_atomic(report, {
        "kind": "newclasses", "config": {}, "n_base": 90, "n_new": 10,
        "metrics": {"baseline": {"acc_all": 80.0, "acc_within_base": 81.0, "acc_within_new": 70.0},
                    "ours": {"acc_all": 79.5, "acc_within_base": 81.5, "acc_within_new": 75.0}},
        "improvement": {"acc_all": -0.5, "acc_within_base": 0.5, "acc_within_new": 5.0},
        "stores": {"ours": "newclasses-abc-ours", "baseline": "newclasses-abc-baseline"},
    })
    jobs_table(cache).update(done.id, result_path=str(report))
    running = submit_job(cache, "probe", {"seconds": 60})
    at.run()
    assert at.selectbox(key="jobs-selected").value == running.id  # newest first
    at.selectbox(key="jobs-selected").set_value(done.id).run()
    table = at.dataframe[1].value
    assert list(table["method"]) == ["Baseline (all classes)", "Ours (W · f_base)", "Improvement"]
    assert table["within 10 new (%)"].tolist() == [70.0, 75.0, 5.0]
    links = " ".join(m.value for m in at.markdown)
    assert "(./?model=newclasses-abc-ours)" in links  # Explore (the root) opens the store named in the URL
    assert "(compare?model=newclasses-abc-ours&source=newclasses-abc-baseline)" in links
    at.selectbox(key="jobs-selected").set_value(running.id).run()
    deadline = time.monotonic() + 20
    while jobs_table(cache).get(running.id).pid is None and time.monotonic() < deadline:
        time.sleep(0.05)
    at.button(key=f"cancel-{running.id}").click().run()
    assert not at.exception
    assert jobs_table(cache).get(running.id).state == "cancelled"


def test_a_url_fills_in_the_regulariser_form(page):
    """Explore's "cut this dependency" opens jobs?kind=regularizer&pairs=T,S&model=M."""
    at, cache = page
    at.query_params["kind"] = "regularizer"
    at.query_params["pairs"] = "12,34"
    at.query_params["model"] = "glyph-vgg"
    at.query_params["beta"] = "0.5"
    at.run()
    assert not at.exception
    assert at.selectbox(key="jobs-kind").value == "regularizer"
    assert at.text_area(key="jobs-regularizer-pairs").value == "12,34"
    assert at.text_input(key="jobs-regularizer-model").value == "glyph-vgg"
    assert at.number_input(key="jobs-regularizer-beta").value == 0.5
    assert at.number_input(key="jobs-regularizer-epochs").value == 2  # the rest: defaults


def test_a_sweep_report_gets_its_trade_off_chart(page):
    from tests.test_jobs_reports import SWEEP

    at, cache = page
    done = submit_job(cache, "probe", {"seconds": 0})
    wait_for(cache, [done.id], timeout=60)
    report = cache / "report.json"
    write_json_atomic(report, SWEEP)
    jobs_table(cache).update(done.id, result_path=str(report))
    at.run()
    assert not at.exception
    assert any("does not improve" in m.value for m in at.markdown)
    charts = at.get("vega_lite_chart")
    assert len(charts) == 1
