"""Talk mode figures: preparing the slides and exporting the deck on a cache (fresh: its
prepared slides removed first), and the Talk page's server time per slide (AppTest, the
whole script run per key press).

    python -m bench.bench_talk --cache /tmp/democache
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache", default="cache", type=Path)
    args = parser.parse_args(argv)
    from engine.apps.talk.deck import export_deck
    from engine.storage.store import Cache

    cache = Cache(args.cache)
    print(f"load before: {Path('/proc/loadavg').read_text().split()[:3]}")
    shutil.rmtree(cache.talk_dir, ignore_errors=True)
    out = Path(tempfile.mkdtemp()) / "talk.html"
    t = time.perf_counter()
    _, n = export_deck(cache, out)
    fresh = time.perf_counter() - t
    t = time.perf_counter()
    export_deck(cache, out)
    again = time.perf_counter() - t
    print(f"deck: {n} slides, {out.stat().st_size / 1e6:.2f} MB; export with the slides built {fresh:.1f} s, "
          f"from the prepared slides {again:.2f} s")

    from streamlit.testing.v1 import AppTest

    os.environ["NDE_CACHE"] = str(cache.root)
    app = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
    at = AppTest.from_file(str(app), default_timeout=120)
    at.query_params["slide"] = "1"
    at.switch_page("app_pages/talk.py")
    t = time.perf_counter()
    at.run()
    first = time.perf_counter() - t
    times = []
    for _ in range(n - 1):
        t = time.perf_counter()
        at.button(key="talk_next").click().run()
        times.append(time.perf_counter() - t)
    print(f"Talk page server time: first run {first:.2f} s; next slide median {statistics.median(times) * 1000:.0f} ms, "
          f"max {max(times) * 1000:.0f} ms over {len(times)} key presses")
    print(f"load after: {Path('/proc/loadavg').read_text().split()[:3]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
