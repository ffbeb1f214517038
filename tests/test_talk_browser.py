"""The talk mode in headless Chromium at 1280 × 720: the offline deck opened from file://
(→ walks every slide, the hash names it, nothing is requested outside the file, no console
error) and the dashboard's Talk page (every slide reached with the keyboard, back with
PageUp, no Streamlit chrome). On both, every slide is checked for clipped text (each
element's scroll width against its client width, the slide's height) and type sizes (body
≥ 24 px, formula ≥ 40 px).

Also a tool: ``python tests/test_talk_browser.py --deck talk.html --out docs/img`` takes
screenshots of a deck's slides.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytest

from tests.test_browser import browser_ready, dashboard_server, make_driver  # noqa: F401 - fixture

WIDTH, HEIGHT = 1280, 720

# Per slide: elements wider inside than their box (clipped), the slide's overflow, the
# smallest font of any element with its own text, the formula's font.
_CHECK_JS = """
const slide = arguments[0];
const clipped = [];
for (const el of slide.querySelectorAll('*')) {
  if (el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1) {
    clipped.push(el.tagName + '.' + el.className + ': ' + el.scrollWidth + ' > ' + el.clientWidth);
  }
}
let smallest = 1e9, where = '';
for (const el of slide.querySelectorAll('*')) {
  const own = Array.from(el.childNodes).some(n => n.nodeType === 3 && n.textContent.trim());
  if (!own || el.getClientRects().length === 0) continue;
  const px = parseFloat(getComputedStyle(el).fontSize);
  if (px < smallest) { smallest = px; where = el.tagName + '.' + el.className + ' ' + el.textContent.slice(0, 30); }
}
const f = slide.querySelector('.formula');
const r = slide.getBoundingClientRect();
return {clipped: clipped, overflow: [slide.scrollWidth - slide.clientWidth, slide.scrollHeight - slide.clientHeight],
        smallest: smallest, where: where, formula: f ? parseFloat(getComputedStyle(f).fontSize) : null,
        box: [r.left, r.top, r.width, r.height], counter: (slide.querySelector('.counter') || {}).textContent};
"""


def _viewport(driver) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})


def _press(driver, key) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(key).perform()


def _check(driver, slide) -> dict:
    got = driver.execute_script(_CHECK_JS, slide)
    assert got["clipped"] == [], f"slide {got['counter']}: clipped text {got['clipped']}"
    assert max(got["overflow"]) <= 1, f"slide {got['counter']}: content overflows the slide by {got['overflow']}"
    assert got["smallest"] >= 24, f"slide {got['counter']}: text at {got['smallest']} px ({got['where']})"
    if got["formula"] is not None:
        assert got["formula"] >= 40, f"slide {got['counter']}: formula at {got['formula']} px"
    return got


def _errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


@pytest.fixture(scope="module")
def talk_cache(tmp_path_factory):
    from engine.apps.talk.deck import prepare_deck
    from engine.storage.store import Cache
    from tests.dashboard_cache import copy_cache, shared_cache

    root = copy_cache(shared_cache(tmp_path_factory.getbasetemp()), tmp_path_factory.mktemp("talkb") / "cache")
    prepare_deck(Cache(root))
    return root


def test_the_deck_walks_offline_from_a_file(browser_ready, talk_cache, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from engine.cli import main as cli
    from tests.test_browser import requested_urls

    deck = tmp_path / "talk.html"
    assert cli(["--cache", str(talk_cache), "talk", "--export", str(deck)]) == 0
    driver = make_driver(tmp_path / "profile", WIDTH, HEIGHT)
    try:
        _viewport(driver)
        driver.get(deck.as_uri())
        sections = driver.find_elements(By.CSS_SELECTOR, "section.slide")
        assert len(sections) >= 8
        for n in range(1, len(sections) + 1):
            assert driver.execute_script("return location.hash") == f"#{n}"
            shown = [s for s in sections if s.is_displayed()]
            assert len(shown) == 1 and shown[0].get_attribute("id") == f"slide-{n}"
            got = _check(driver, shown[0].find_element(By.CSS_SELECTOR, ".nde-slide"))
            assert got["box"] == [0, 0, WIDTH, HEIGHT], got["box"]  # zoomed to fill 1280 × 720 exactly
            _press(driver, [Keys.ARROW_RIGHT, Keys.SPACE, Keys.PAGE_DOWN][n % 3])
        assert driver.execute_script("return location.hash") == f"#{len(sections)}"  # stays on the last
        _press(driver, Keys.PAGE_UP)
        assert driver.execute_script("return location.hash") == f"#{len(sections) - 1}"
        _press(driver, Keys.ARROW_LEFT)
        assert driver.execute_script("return location.hash") == f"#{len(sections) - 2}"
        driver.get("about:blank")
        driver.get(deck.as_uri() + "#3")  # a slide's address opens that slide
        assert driver.find_element(By.CSS_SELECTOR, "section.slide.current").get_attribute("id") == "slide-3"
        urls = requested_urls(driver)
        outside = [u[:80] for u in urls if not u.startswith(("file://", "data:", "about:", "chrome://", "chrome-untrusted://"))]
        assert urls and outside == [], outside  # chrome:// is the browser's own new-tab page
        assert _errors(driver) == []
    finally:
        driver.quit()


def _counter(driver) -> str | None:
    return driver.execute_script("const c = document.querySelector('.nde-slide .counter'); return c ? c.textContent : null")


def _wait_counter(driver, text: str, timeout: float = 30) -> float:
    t = time.perf_counter()
    while time.perf_counter() - t < timeout:
        if _counter(driver) == text:
            return time.perf_counter() - t
        time.sleep(0.05)
    raise AssertionError(f"the Talk page did not reach slide {text!r} (shows {_counter(driver)!r})")


def _wait_search(driver, want: str, timeout: float = 10) -> None:
    """The address follows the slide: Streamlit sends the query string after the slide's
    elements, so under load it can lag the counter by a moment."""
    t = time.perf_counter()
    while time.perf_counter() - t < timeout:
        if driver.execute_script("return location.search") == want:
            return
        time.sleep(0.05)
    got = driver.execute_script("return location.search")
    raise AssertionError(f"the address says {got!r} on the slide that wants {want!r}")


def test_talk_page_by_keyboard_no_chrome_no_clipping(browser_ready, talk_cache, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from tests.test_browser import foreign, requested_urls

    with dashboard_server(talk_cache) as base:
        driver = make_driver(tmp_path / "profile", WIDTH, HEIGHT)
        try:
            _viewport(driver)
            driver.get(f"{base}/talk?slide=1")
            _wait_counter(driver, "1 / 8", 90)
            time.sleep(1.0)
            for sel in ('[data-testid="stSidebar"]', '[data-testid="stHeader"]', '[data-testid="stToolbar"]'):
                assert all(not e.is_displayed() for e in driver.find_elements(By.CSS_SELECTOR, sel)), sel
            keys = [Keys.ARROW_RIGHT, Keys.SPACE, Keys.PAGE_DOWN]
            for n in range(1, 9):
                got = _check(driver, driver.find_element(By.CSS_SELECTOR, ".nde-slide"))
                assert got["box"][2:] == [WIDTH, HEIGHT], got["box"]
                _wait_search(driver, f"?slide={n}")
                if n < 8:
                    _press(driver, keys[n % 3])
                    _wait_counter(driver, f"{n + 1} / 8")
            _press(driver, Keys.PAGE_UP)
            _wait_counter(driver, "7 / 8")
            _press(driver, Keys.HOME)
            _wait_counter(driver, "1 / 8")
            for _ in range(3):  # presses faster than reruns are neither lost nor doubled
                _press(driver, Keys.ARROW_RIGHT)
            _wait_counter(driver, "4 / 8")
            time.sleep(1.5)
            assert _counter(driver) == "4 / 8"
            assert not foreign(requested_urls(driver), base)
            assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
        finally:
            driver.quit()


# ----------------------------------------------------------------------------- screenshots tool


def main(argv: list[str] | None = None) -> int:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    parser = argparse.ArgumentParser(description="Screenshots of a deck's slides at 1280 × 720.")
    parser.add_argument("--deck", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--slides", default="", help="comma-separated slide numbers (default: all)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    driver = make_driver(args.out / ".profile", WIDTH, HEIGHT, log_requests=False)
    try:
        _viewport(driver)
        driver.get(args.deck.resolve().as_uri())
        total = len(driver.find_elements(By.CSS_SELECTOR, "section.slide"))
        wanted = {int(s) for s in args.slides.split(",") if s} or set(range(1, total + 1))
        for n in range(1, total + 1):
            if n in wanted:
                time.sleep(0.3)
                driver.save_screenshot(str(args.out / f"talk-slide-{n}.png"))
            _press(driver, Keys.ARROW_RIGHT)
    finally:
        driver.quit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
