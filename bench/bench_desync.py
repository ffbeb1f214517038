"""Do the widgets show what the page was computed from? Fresh loads of every page under a CPU hog.

    python bench/bench_desync.py --cache cache                 # 20 loads per case, a hog per core
    python bench/bench_desync.py --cache cache --loads 30 --hog 3

Starts ``python -m dashboard`` (what ``./run.sh`` runs) on a loopback port and headless
Chromium (1280 × 800), then, while ``--hog`` processes spin on the CPU, loads each case
``--loads`` times in a new Streamlit session: every page's default view and a deep link to
each (another store, another target, the paper's α, a search, centred logits; Compare: a pair
with its cross-Gram, with and without a target, centred; the Talk page: its first slide and
``?slide=5``, where the slide's counter is the view). Once the page is idle it reads
what the widgets show (the select boxes' text, the sliders' thumbs, the inputs' values) and
the page's ``.nde-view`` line (``widgets.view_caption``: the model, target, α… the content was
computed from, as JSON) and counts a **mismatch** wherever they differ, or where the address
bar or a deep link's values disagree with the content. On Explore each load also presses → on
the slider and checks again (a key press), then goes back in the browser's history; on the
Talk page → moves to the next slide, checked against the address.

Prints a JSON report: loads and mismatches per case (with the first few mismatches spelled
out), the load average and the hog. ``tests/test_browser.py`` runs the same check, fewer loads.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import print_report  # noqa: E402

TITLES = {"explore": "Explore a neural dependency", "compare": "Compare two models",
          "atlas": "Atlas of dependencies", "theory": "Theory", "talk": ""}  # the Talk page: no page title

# What each page's widgets must show, by label prefix: (label, key in the page's view, how to
# read it, the method whose view shows the widget: None for every view). Explore, Compare and
# Atlas show the best subset (a "Sources" slider, ``m``) or the paper's CovLasso (an α slider).
BEST, LASSO = "best-subset", "covlasso"
WIDGETS = {
    "explore": [("Model", "model", "text", None), ("Target category", "target", "target", None),
                ("Method", "method", "method", None), ("Centred logits", "logits", "toggle", None),
                ("Sources", "m", "lead_int", BEST), ("α", "alpha", "alpha", LASSO)],
    "compare": [("Model B", "model", "text", None), ("Model A", "source", "text", None),
                ("Target category", "target", "target", None), ("Method", "method", "method", None),
                ("Centred logits", "logits", "toggle", None), ("Sources", "m", "lead_int", BEST),
                ("α", "alpha", "alpha", LASSO)],
    "atlas": [("Model", "model", "text", None), ("Method", "method", "method", None),
              ("Best subset of each target", "m", "lead_int", BEST), ("α", "alpha", "alpha", LASSO),
              ("Sources per target", "top_k", "int", None), ("Min |coefficient|", "min_coef", "float", None),
              ("Targets shown", "limit", "int", None), ("Find categories", "q", "text", None)],
    "theory": [("Model", "model", "text", None)],
    "talk": [],  # no widgets: the slide shown (its counter, "3 / 8") against the address and the link
}
URL_KEYS = {"explore": ("model", "target", "method", "m", "alpha", "logits"),
            "compare": ("model", "source", "target", "method", "m", "alpha", "logits"),
            "atlas": ("model", "method", "m", "alpha", "q"), "theory": ("model",), "talk": ("slide",)}
METHOD_LABELS = {BEST: "Fewest sources", LASSO: "Paper’s method"}  # how each method's option begins

_READ_JS = """
const out = [];
for (const e of document.querySelectorAll('[data-testid=stSelectbox], [data-testid=stSlider],'
    + ' [data-testid=stTextInput], [data-testid=stNumberInput]')) {
  const label = e.querySelector('[data-testid=stWidgetLabel]');
  const thumb = e.querySelector('[data-testid=stSliderThumbValue]');
  const input = e.querySelector('input');
  out.push([label ? label.innerText.trim() : '', thumb ? thumb.innerText.trim() : (input ? input.value : null)]);
}
for (const e of document.querySelectorAll('[data-testid=stRadio]')) {
  const label = e.querySelector('[data-testid=stWidgetLabel]');
  const on = e.querySelector('input:checked');
  const option = on ? on.closest('label') : null;
  out.push([label ? label.innerText.trim() : '', option ? option.innerText.trim() : null]);
}
for (const e of document.querySelectorAll('[data-testid=stCheckbox]')) {  // st.toggle and st.checkbox
  const label = e.innerText.trim();
  const box = e.querySelector('input[type=checkbox]');
  out.push([label, box ? (box.checked ? 'on' : 'off') : null]);
}
const views = document.querySelectorAll('.nde-view');
const busy = document.querySelectorAll('[data-testid=stStatusWidget] button, [data-testid=stSpinner]').length;
const counter = document.querySelector('.nde-slide .counter');  // the Talk page's slide: "3 / 8"
const view = views.length ? views[views.length - 1].dataset.view
  : (counter ? JSON.stringify({slide: parseInt(counter.textContent)}) : null);
return {widgets: out, view: view, busy: busy, url: location.href,
        title: (document.querySelector('h1') || {}).innerText || ''};
"""


@dataclass(frozen=True)
class Case:
    name: str
    page: str  # a key of TITLES
    query: str  # "" or "model=…&target=…"
    link: dict  # what a deep link asks for (checked against the content), {} for a default view


def cases_for(cache: Path) -> list[Case]:
    """Every page's default view and a deep link to each, on the stores of ``cache``. Compare
    opens on a pair named in the link (the first whose cross-Gram is cached: a pair without
    one shows a job's button), once with the page's default target and α and once with others."""
    from engine.stages.gramsets import has_gramset
    from engine.storage.store import Cache

    c = Cache(cache)
    names = c.store_names()
    other = names[-1]
    out = [Case(page, page, "", {}) for page in ("explore", "atlas", "theory")]
    out.append(Case("explore-deep", "explore", f"model={other}&target=2&alpha=2.5", {"model": other, "target": 2}))
    out.append(Case("explore-centred", "explore", f"model={other}&target=4&method=best-subset&m=2&logits=centred",
                    {"model": other, "target": 4, "m": 2, "logits": "centred"}))
    stores = {n: c.load_store(n) for n in names}
    pair = next(((b, a) for b in names for a in names if a != b and has_gramset(c, stores[a], stores[b])), None)
    if pair:
        b, a = pair
        out.append(Case("compare", "compare", f"model={b}&source={a}", {"model": b, "source": a}))
        out.append(Case("compare-deep", "compare", f"model={b}&source={a}&target=3&alpha=2.5",
                        {"model": b, "source": a, "target": 3}))
        out.append(Case("compare-centred", "compare", f"model={b}&source={a}&target=5&method=covlasso&logits=centred",
                        {"model": b, "source": a, "target": 5, "logits": "centred"}))
    out.append(Case("atlas-deep", "atlas", f"model={other}&q=O", {"model": other, "q": "O"}))  # α: the default (2.5 is above a small cache's α_max)
    out.append(Case("theory-deep", "theory", f"model={other}", {"model": other}))
    from engine.apps.talk.deck import newest_prepared

    if newest_prepared(c) is not None:  # the Talk page reads prepared slides (the demo makes them)
        out.append(Case("talk", "talk", "", {}))
        out.append(Case("talk-deep", "talk", "slide=5", {"slide": 5}))
    return out


def _url(base: str, case: Case) -> str:
    path = "/" if case.page == "explore" else f"/{case.page}"
    return f"{base}{path}" + (f"?{case.query}" if case.query else "")


def read_page(driver, title: str, labels: tuple[str, ...] = (), timeout: float = 120) -> dict | None:
    """The widgets' texts and the page's view once the page is idle: three polls in a row that
    read the same, nothing running, its view line present and a widget for each of ``labels``
    (Streamlit loads a widget's code on first use, so a busy browser draws the page's text
    seconds before its widgets). When the widgets never come, the last read (the check then
    reports them missing); None when the page never showed its view within ``timeout``."""
    quiet, deadline, last = 0, time.time() + timeout, None
    while time.time() < deadline:
        got = driver.execute_script(_READ_JS)
        shown = [label for label, _ in got["widgets"]]
        ok = (got["view"] and not got["busy"] and title in got["title"] and got == (last or got)
              and all(any(s.startswith(label) for s in shown) for label in labels))
        quiet = quiet + 1 if ok else 0
        last = got
        if quiet >= 3:
            break
        time.sleep(0.3)
    if not last or not last["view"]:
        return None
    last["view"] = json.loads(last["view"])
    return last


def _sig_equal(text: str, value: float) -> bool:
    """``text`` is ``value`` rounded to the significant digits ``text`` shows."""
    mantissa = text.lower().split("e")[0].lstrip("-+")
    digits = len(mantissa.replace(".", "").lstrip("0")) or 1
    try:
        return float(text) == float(f"{value:.{digits}g}")
    except ValueError:
        return False


def _widget_ok(kind: str, shown: str | None, value) -> bool:
    if shown is None:
        return False
    if kind == "text":
        return shown == ("" if value is None else str(value))
    if kind == "target":  # "Í LATIN CAPITAL LETTER I WITH ACUTE · #137"
        return f"#{value}" in [part.strip() for part in shown.split("·")]
    if kind == "alpha":  # "4.6 ★ recommended"
        return _sig_equal(shown.split()[0], float(value)) if shown else False
    if kind == "int":
        return shown.strip() == str(int(value))
    if kind == "lead_int":  # "3 ★ fewest that fit"
        return value is not None and shown.split()[0] == str(int(value)) if shown.strip() else False
    if kind == "toggle":  # "on" / "off"; the view's logits: "centred" / "raw"
        return shown == ("on" if value == "centred" else "off")
    if kind == "method":  # the radio's option: "Fewest sources (best subset)"
        return shown.startswith(METHOD_LABELS.get(value, "<unknown method>"))
    return _sig_equal(shown.strip(), float(value))  # float inputs: "0.050"


def mismatches(page: str, got: dict, url: str, link: dict) -> list[str]:
    """Where the widgets, the address bar or the deep link disagree with the page's view."""
    view, widgets = got["view"], got["widgets"]
    out = []
    for label, key, kind, method in WIDGETS[page]:
        if method is not None and view.get("method", LASSO) != method:
            continue
        shown = next((text for lab, text in widgets if lab.startswith(label)), "<no widget>")
        if shown == "<no widget>" or not _widget_ok(kind, shown, view.get(key)):
            out.append(f"widget {label!r} shows {shown!r}, the content is {key}={view.get(key)!r}")
    params = {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}
    for key in URL_KEYS[page]:
        value, text = view.get(key), params.get(key)
        if key == "logits" and value == "raw":  # raw logits, the paper's: left out of the link
            value = None
        same = (text is None and value in (None, "")) if text is None else (
            value is not None and _sig_equal(text, float(value)) if key == "alpha" else text == str(value))
        if not same:
            out.append(f"address bar {key}={text!r}, the content is {value!r}")
    for key, wanted in link.items():
        if view.get(key) != wanted:
            out.append(f"the link asked for {key}={wanted!r}, the content shows {view.get(key)!r}")
    return out


def _spin() -> None:
    while True:
        pass


@contextmanager
def cpu_hog(processes: int):
    """``processes`` busy loops, for the duration of the block."""
    procs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(processes)]
    for p in procs:
        p.start()
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join()


def press_right(driver, page: str, title: str) -> dict | None:
    """→ on the α slider's thumb (one step of the grid; the Talk page: the next slide); the
    page once it is idle again."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    thumbs = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSlider"] input[type="range"]')
    if not thumbs and page != "talk":
        return None
    before = driver.execute_script(_READ_JS)["view"]
    if thumbs and page != "talk":
        driver.execute_script("arguments[0].focus();", thumbs[0])  # the range input is visually hidden
    ActionChains(driver).send_keys(Keys.ARROW_RIGHT).perform()
    deadline = time.time() + 60
    while time.time() < deadline:  # wait for the rerun to replace the view
        if driver.execute_script(_READ_JS)["view"] != before:
            break
        time.sleep(0.2)
    return read_page(driver, title, _labels(page))


def _labels(page: str) -> tuple[str, ...]:
    """The widgets every view of ``page`` shows (the read waits for them)."""
    return tuple(label for label, _, _, method in WIDGETS[page] if method is None)


def run_case(driver, base: str, case: Case, loads: int, keys: bool = True) -> dict:
    """``loads`` fresh sessions of ``case``; mismatches counted after the load, and on Explore
    after a → key press and a step back in the history."""
    title = TITLES[case.page]
    found: list[str] = []
    timeouts, checks, seconds, view = 0, 0, [], None
    for _ in range(loads):
        driver.get("about:blank")  # a new page, a new Streamlit session
        t0 = time.perf_counter()
        driver.get(_url(base, case))
        got = read_page(driver, title, _labels(case.page))
        seconds.append(time.perf_counter() - t0)
        steps = [("load", got, case.link)]
        view = got["view"] if got else view
        if keys and case.page in ("explore", "talk") and got is not None:
            got = press_right(driver, case.page, title)
            steps.append(("→ key", got, {}))
            if got is not None and case.page == "explore":
                driver.back()  # the address before the key press
                steps.append(("back", read_page(driver, title, _labels(case.page)), {}))
        for step, got, link in steps:
            if got is None:
                timeouts += 1
                continue
            checks += 1
            found += [f"{step}: {m}" for m in mismatches(case.page, got, got["url"], link)]
    return {"loads": loads, "checks": checks, "mismatches": len(found), "timeouts": timeouts,
            "median_load_s": round(statistics.median(seconds), 2), "examples": found[:4], "view": view}


def run(cache: Path, loads: int, hog: int, cases: list[Case] | None = None, port: int | None = None,
        keys: bool = True) -> dict:
    from tests.test_browser import dashboard_server, make_driver

    cases = cases or cases_for(cache)
    report = {"loads_per_case": loads, "hog_processes": hog, "cpus": os.cpu_count(),
              "load_1min_start": round(os.getloadavg()[0], 2), "cases": {}}
    with tempfile.TemporaryDirectory() as profile, dashboard_server(cache, port=port) as base:
        driver = make_driver(Path(profile), 1280, 800, log_requests=False)
        try:
            with cpu_hog(hog):
                for case in cases:
                    report["cases"][case.name] = run_case(driver, base, case, loads, keys)
                    report["load_1min_end"] = round(os.getloadavg()[0], 2)
        finally:
            driver.quit()
    report["mismatches"] = sum(c["mismatches"] for c in report["cases"].values())
    report["timeouts"] = sum(c["timeouts"] for c in report["cases"].values())
    report["checks"] = sum(c["checks"] for c in report["cases"].values())
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=ROOT / "cache")
    parser.add_argument("--loads", type=int, default=20, help="fresh loads per case (page or deep link)")
    parser.add_argument("--hog", type=int, default=os.cpu_count() or 2, help="busy processes while loading")
    parser.add_argument("--only", action="append", help="run only these cases (names as in the report)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    cases = [c for c in cases_for(args.cache.resolve()) if not args.only or c.name in args.only]
    report = run(args.cache.resolve(), args.loads, args.hog, cases)
    print_report(report, args.json)
    return 0 if report["mismatches"] == 0 and report["timeouts"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
