"""Start the dashboard: ``python -m dashboard [streamlit options]``.

The same server as ``streamlit run dashboard/app.py``, started so that the first page comes
sooner (docs/dashboard.md, *Speed*):

- Streamlit scans the metadata of every installed package for custom components at start-up
  (~0.25 s here); this app uses none, so the scan is skipped (``NDE_COMPONENT_SCAN=1`` keeps it).
- Once the server listens, a background thread does the first page's one-off work while the
  browser is still loading Streamlit's frontend (~1 s), instead of after the page was asked
  for: it imports the libraries the pages use, opens the glyph fonts, and runs Streamlit's
  once-per-process check for a REPL, which walks the stack and every loaded module (~0.2 s).
  Then it opens the store the first page shows, with its Gram: when they have no verified
  stamp yet (a cache just copied here) their hashes are checked now (about 3 s for the 5.2 GB
  of a 21,843-category store) rather than in the first request; and, when its α paths are not
  all solved, imports the solver and makes sure its Gram's hint of where to open exists (a
  Gram cached before hints existed: a few seconds at 21,843 categories). ``NDE_WARM_UP=0``
  turns it off.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

APP = Path(__file__).resolve().with_name("app.py")

# What the default page (Explore) imports, heaviest first; the first request finds them loaded.
WARM_MODULES = (
    "pandas",
    "pyarrow",
    "dashboard.components.loaders",
    "dashboard.components.graph",
    "dashboard.components.charts",
    "dashboard.components.widgets",
    "dashboard.components.state",
    "dashboard.components.sources_ui",
    "engine.core.analysis",
    "streamlit.elements.vega_charts",
    "streamlit.elements.arrow",
)


def skip_component_scan() -> bool:
    """Make Streamlit's start-up scan for v2 components find nothing; False if it cannot."""
    if os.environ.get("NDE_COMPONENT_SCAN") == "1":
        return False
    try:
        from streamlit.components.v2 import manifest_scanner
    except ImportError:  # another Streamlit: leave it as it is
        return False
    if not callable(getattr(manifest_scanner, "scan_component_manifests", None)):
        return False
    manifest_scanner.scan_component_manifests = lambda *args, **kwargs: []
    return True


def _first_element_check() -> None:
    """Streamlit's one-time 'are we in a REPL / bare script?' check, done before a page needs it."""
    from streamlit import delta_generator

    check = getattr(delta_generator, "_maybe_print_use_warning", None)
    if callable(check):  # nothing is printed under a running server
        check()


def _open_glyph_fonts() -> None:
    from engine.ingest.class_images import glyph_png

    glyph_png("A")


def _open_first_store() -> None:
    """Open (and so verify) the store the first page shows and its Gram: the page then finds
    them verified in this process. When not every path of it is cached, the first page will
    solve its category: the solver's libraries (torch, ~2 s) are imported here too."""
    from dashboard.components.widgets import PREFERRED_MODELS
    from engine.stages.alpha_paths import path_progress, path_spec
    from engine.stages.gramsets import load_gram_hint, load_gramset
    from engine.stages.pairing import Pairing
    from engine.stages.solutions import load_top2
    from engine.storage.layout import DEFAULT_CACHE
    from engine.storage.store import Cache

    cache = Cache(os.environ.get("NDE_CACHE", str(DEFAULT_CACHE)))
    names = cache.store_names()
    name = next((n for n in (*PREFERRED_MODELS, *names) if n in names), None)
    if name is None:
        return
    store = cache.load_store(name)
    if load_gramset(cache, Pairing.of(store), compute=False) is None:
        return
    load_top2(cache, store)
    if not path_progress(cache, path_spec(cache, Pairing(store, store))).complete:
        import engine.core.covlasso_kernels  # noqa: F401

        load_gram_hint(cache, store, compute=True)  # where the page opens (cached with newer Grams)


def warm_up(modules=WARM_MODULES, timeout: float = 60.0) -> threading.Thread:
    """In a daemon thread, once the Streamlit runtime has started: import ``modules``, open
    the glyph fonts and run Streamlit's first-element check."""

    def run() -> None:
        from streamlit.runtime import Runtime, RuntimeState

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if Runtime.exists() and Runtime.instance().state != RuntimeState.INITIAL:
                break
            time.sleep(0.02)
        else:
            return
        import importlib

        steps = [*(lambda name=name: importlib.import_module(name) for name in modules),
                 _open_glyph_fonts, _first_element_check, _open_first_store, _open_first_sources_curve]
        for step in steps:
            try:
                step()
            except Exception:  # the page meets it again, with context; never crash the server
                return

    thread = threading.Thread(target=run, name="nde-warm-up", daemon=True)
    thread.start()
    return thread


def _open_first_sources_curve() -> None:
    """The Explore page's first view (where it opens: the category 2 … 4 sources fit, from the
    ``best-subsets`` job's result, and that category's curve of R² against the number of
    sources, its card and images), through the page's own cached loader's memo: the first page
    reads them instead of computing (and saving) the curve, which would import torch in its request."""
    from dashboard.components.loaders import _explore_memo
    from engine.apps.explore import ExploreRequest, explore_view
    from engine.storage.layout import DEFAULT_CACHE

    root = str(os.environ.get("NDE_CACHE", str(DEFAULT_CACHE)))  # the key the pages' loaders use
    explore_view(root, ExploreRequest(), _explore_memo(root))


def main(argv: list[str] | None = None) -> None:
    root = str(APP.parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    from streamlit.web import cli

    skip_component_scan()
    if os.environ.get("NDE_WARM_UP", "1") != "0":
        warm_up()
    args = sys.argv[1:] if argv is None else argv
    sys.argv = ["streamlit", "run", str(APP), *args]
    cli.main()


if __name__ == "__main__":
    main()
