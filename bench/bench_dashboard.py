"""How fast the dashboard answers: α-slider re-render of Explore, and time to a usable first page.

    python bench/bench_dashboard.py                  # synthetic 1,000-class store (built once)
    python bench/bench_dashboard.py --cache cache --model glyph-resnet

1. **Slider re-render (server time).** The Explore page is run with Streamlit's AppTest (the
   real script, in process) on a store whose α path is already cached; after a warm-up, the
   α select-slider is moved ``--moves`` times and each rerun is timed (script + element
   serialisation, i.e. everything the server does for a move). Target: ≤ 300 ms.
2. **First page.** With headless Chromium already running (Debian's chromium), ``python -m
   dashboard`` (what ``./run.sh`` starts) is started cold on a loopback port and timed to its
   health check and to the moment the Explore page's graph canvas has drawn (fresh browser
   profile, no network logging: it costs the browser CPU). Target: ≤ 5 s. The server's and
   the browser's CPU time are reported too, and ``machine.cpu_probe_s``, a fixed pure-Python
   loop timed before and after: this machine's speed drifts by a third from hour to hour, so
   compare first-page figures only where the probe agrees.

Prints a JSON report (``--json FILE`` writes it too).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import print_report  # noqa: E402
from engine.stages.alpha_paths import GridRule  # noqa: E402

BENCH_STORE = "bench-1000"
APP_SPAN = GridRule.span  # the app's α grid ends at this fraction of the largest α_max


def use_grid_span(span: float) -> None:
    """Make this process's α grid end at ``span`` × the largest α_max (the app's:
    ``GridRule().span``).

    Only for a quicker set-up: the AppTest runs in this process, so the page reads the same
    (shorter) cached path. Solving the smallest α of a 1,000-class path is what takes long.
    """
    import engine.stages.alpha_paths as paths

    default = paths.default_alpha_grid
    paths.default_alpha_grid = lambda amax, n=paths.GridRule.n, span_=span: default(amax, n, span_)


def build_store(cache_root: Path, k: int, n: int, rank: int) -> str:
    """A synthetic k-class store with its α path cached (built once; reused afterwards)."""
    from engine.core.synthetic import classifier_like_logits
    from engine.stages.alpha_paths import load_or_compute_path
    from engine.stages.pairing import open_pairing
    from engine.storage.store import Cache

    cache = Cache(cache_root)
    name = f"{BENCH_STORE}-k{k}-n{n}-r{rank}"
    if name not in cache.store_names():
        logits, labels = classifier_like_logits(n, k, rank=rank, seed=0)
        cache.save_store(name, logits, labels, [f"class {i:04d}" for i in range(k)])
    t0 = time.perf_counter()
    load_or_compute_path(cache, open_pairing(cache, name))
    print(f"α path of {name}: ready in {time.perf_counter() - t0:.1f} s (cached after the first run)",
          file=sys.stderr)
    return name


def resolve_target(cache_root: Path, model: str, target: str) -> int:
    from engine.storage.store import Cache

    if str(target).isdigit():
        return int(target)
    names = Cache(cache_root).load_store(model).class_names
    return names.index(target) if target in names else 0


def bench_slider(cache_root: Path, model: str, moves: int, target: int) -> dict:
    """Median / p90 / max server time of an Explore rerun after an α-slider move."""
    from streamlit.testing.v1 import AppTest

    from tests.dashboard_cache import coef_rows

    os.environ["NDE_CACHE"] = str(cache_root)
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=600)
    at.query_params["model"] = model
    at.query_params["target"] = str(target)
    at.query_params["method"] = "covlasso"  # the α slider (the page opens on the best subset's m)
    t0 = time.perf_counter()
    at.run()
    first = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(f"the Explore page failed: {at.exception[0].value}")
    from tests.dashboard_cache import alpha_of

    slider = next(s for s in at.select_slider if s.label.startswith("α"))
    options = sorted(alpha_of(o) for o in slider.options)  # the slider's values (labels rounded: nearest)
    # sweep the whole grid down and up (every move lands on a new value, as a user drags)
    sweep = options[::-2] + options[len(options) % 2 :: 2]
    picks = sweep * (moves // len(sweep) + 2)
    at.select_slider[0].set_value(picks[0]).run()  # warm-up: caches, vl templates, class images
    times, cpu, sources = [], [], []
    for value in picks[1 : moves + 1]:
        t0, c0 = time.perf_counter(), time.process_time()
        at.select_slider[0].set_value(value).run()
        times.append(1000 * (time.perf_counter() - t0))
        cpu.append(1000 * (time.process_time() - c0))
        sources.append(len(coef_rows(at)))
        if at.exception:
            raise RuntimeError(f"the Explore page failed: {at.exception[0].value}")
    times.sort()
    return {
        "store": model, "target": target, "moves": len(times),
        "first_run_s": round(first, 2),
        "median_ms": round(statistics.median(times), 1),
        "p90_ms": round(times[int(0.9 * (len(times) - 1))], 1),
        "max_ms": round(times[-1], 1),
        "cpu_median_ms": round(statistics.median(cpu), 1),  # all threads; independent of other load
        "sources_shown": [min(sources), max(sources)],
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_seconds(root: int) -> float:
    """CPU time of ``root`` and all its live descendants (the browser's processes)."""
    parent, cpu = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        parent[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo += [child for child, up in parent.items() if up == pid]
    return total


def _graph_drawn(driver, timeout: float) -> int:
    """Poll every 50 ms until the first graph canvas has ink; its non-blank pixels (or -1)."""
    from selenium.webdriver.common.by import By

    from tests.test_browser import _INK_JS

    deadline = time.time() + timeout
    while time.time() < deadline:
        frames = driver.find_elements(By.CSS_SELECTOR, "iframe")
        if frames:
            try:
                driver.switch_to.frame(frames[0])
                ink = driver.execute_script(_INK_JS)
            except Exception:  # the frame was replaced while we looked: look again
                ink = -1
            finally:
                driver.switch_to.default_content()
            if ink and ink > 0:
                return int(ink)
        time.sleep(0.05)
    return -1


def bench_first_page(cache_root: Path, model: str, query: str = "") -> dict:
    """Cold server start → Explore's graph drawn, in a headless Chromium already running.

    The browser is started first (a speaker's browser is open already); the clock starts with
    the server process (``python -m dashboard``, what ``./run.sh`` runs) and stops when the
    graph canvas has ink (polled every 50 ms). No network logging (the browser test records
    every request; that costs browser CPU). A fresh browser profile each time.
    """
    from tests.test_browser import CHROMIUM, dashboard_server, make_driver

    out: dict = {}
    if not CHROMIUM.exists():
        return {"browser": "skipped: /usr/bin/chromium is not installed (tests/ensure_browser.sh)"}
    info: dict = {}
    with tempfile.TemporaryDirectory() as user_dir:
        driver = make_driver(Path(user_dir), log_requests=False)
        try:
            driver.get("about:blank")
            browser_cpu0 = _tree_cpu_seconds(driver.service.process.pid)
            t0 = time.perf_counter()
            with dashboard_server(cache_root, info=info, poll=0.02) as base:
                out["server_ready_s"] = round(time.perf_counter() - t0, 2)
                out["server_cpu_at_ready_s"] = round(_cpu_seconds(info["pid"]), 2)  # imports + runtime start
                driver.get(f"{base}/?model={model}" + (f"&{query}" if query else ""))  # Explore, the default page
                ink = _graph_drawn(driver, timeout=120)
                out["first_page_usable_s"] = round(time.perf_counter() - t0, 2)
                # the server's own work (start, imports, first run): what a quiet 2-core machine waits for
                out["server_cpu_s"] = round(_cpu_seconds(info["pid"]), 2)
                out["browser_cpu_s"] = round(_tree_cpu_seconds(driver.service.process.pid) - browser_cpu0, 2)
                out["graph_drawn"] = ink > 0
        finally:
            driver.quit()
    return out


def cpu_probe() -> float:
    """Seconds for a fixed pure-Python loop (best of 3): how fast this machine is right now."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        sum(range(10_000_000))
        best = min(best, time.perf_counter() - t0)
    return round(best, 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "nde-bench-dashboard")
    parser.add_argument("--model", help="an existing store (default: build the synthetic one)")
    parser.add_argument("--k", type=int, default=1000, help="categories of the synthetic store")
    parser.add_argument("--n", type=int, default=8000, help="samples of the synthetic store")
    parser.add_argument("--rank", type=int, default=128, help="rank of the synthetic logits")
    parser.add_argument("--moves", type=int, default=20)
    parser.add_argument("--target", default="O LATIN CAPITAL LETTER O",
                        help="index or class name (default: the glyph 'O', else category 0)")
    parser.add_argument("--no-browser", action="store_true", help="skip the cold-start measurement")
    parser.add_argument("--starts", type=int, default=3, help="cold starts measured (the median is reported)")
    parser.add_argument("--span", type=float, default=APP_SPAN,
                        help=f"α grid from the largest α_max down to SPAN times it (the app: {APP_SPAN:g}; a "
                             "larger value solves the path faster; implies --no-browser)")
    parser.add_argument("--query", action="append", default=None, metavar="QUERY",
                        help="more of the first page's link, e.g. 'logits=centred' (repeat: each measured in turn, "
                             "cold starts interleaved; '' is the plain page)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if args.span != APP_SPAN:
        use_grid_span(args.span)
    model = args.model or build_store(args.cache, args.k, args.n, args.rank)
    target = resolve_target(args.cache, model, args.target)
    report = {"machine": {"cpus": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 2),
                          "cpu_probe_s": cpu_probe()},
              "grid_span": args.span,
              "slider": bench_slider(args.cache, model, args.moves, target)}
    if not args.no_browser and args.span == APP_SPAN:
        queries = args.query or [""]
        runs = {q: [] for q in queries}
        for _ in range(args.starts):
            for q in queries:  # interleaved: the machine's drift hits each alike
                runs[q].append(bench_first_page(args.cache, model, q))
        for q, starts in runs.items():
            first = {key: statistics.median(r[key] for r in starts)
                     for key in starts[0] if isinstance(starts[0][key], float)}
            first["each"] = starts
            report["first_page" + (f" ?{q}" if q else "")] = first
        report["machine"]["load_1min_end"] = round(os.getloadavg()[0], 2)
        report["machine"]["cpu_probe_end_s"] = cpu_probe()
    print_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
