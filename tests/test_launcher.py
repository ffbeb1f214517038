"""``python -m dashboard``: what it changes in Streamlit's start-up, and that the hooks still exist.

The launcher leans on two Streamlit internals (the v2-component scan, the first-element
check); these tests fail on a Streamlit upgrade that moves them, instead of the start-up
silently getting slower. The launcher itself runs in tests/test_browser.py (every page).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(code: str, **env) -> str:
    import os

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **env}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_the_component_scan_is_skipped_unless_asked_for():
    code = ("import dashboard.__main__ as m; from streamlit.components.v2 import manifest_scanner as s; "
            "print(m.skip_component_scan(), s.scan_component_manifests())")
    assert _run(code, NDE_COMPONENT_SCAN="0") == "True []"
    kept = _run(code.replace("print(m.skip_component_scan(), s.scan_component_manifests())",
                             "print(m.skip_component_scan(), callable(s.scan_component_manifests))"),
                NDE_COMPONENT_SCAN="1")
    assert kept == "False True"


def test_the_streamlit_internals_it_uses_still_exist():
    from streamlit import delta_generator
    from streamlit.components.v2 import manifest_scanner
    from streamlit.runtime import Runtime, RuntimeState

    assert callable(manifest_scanner.scan_component_manifests)
    assert callable(delta_generator._maybe_print_use_warning)
    assert callable(Runtime.exists) and RuntimeState.INITIAL


def test_the_warm_up_loads_the_first_page_libraries_and_nothing_heavy(tmp_path):
    """Every warm-up step runs; torch, altair and the rest of the engine stay unloaded. On an
    empty cache: on a filled one the warm-up also computes and caches the opening category's
    sources curve when it is missing (saving it imports torch, off the first request)."""
    code = ("import sys, dashboard.__main__ as m\n"
            "from unittest import mock\n"
            "from streamlit.runtime import Runtime, RuntimeState\n"
            "rt = mock.Mock(state=RuntimeState.NO_SESSIONS_CONNECTED)\n"
            "with mock.patch.object(Runtime, 'exists', return_value=True), "
            "mock.patch.object(Runtime, 'instance', return_value=rt):\n"
            "    m.warm_up().join(120)\n"
            "from engine.ingest.class_images import glyph_png\n"
            "print(all(n in sys.modules for n in m.WARM_MODULES), glyph_png.cache_info().currsize,\n"
            "      sorted(n for n in ('torch', 'altair', 'sklearn', 'timm') if n in sys.modules))")
    assert _run(code, NDE_CACHE=str(tmp_path / "cache")) == "True 1 []"


def test_the_warm_up_waits_for_the_server():
    """Before the runtime exists nothing is imported (the server's own start comes first)."""
    code = ("import sys, dashboard.__main__ as m\n"
            "m.warm_up(modules=('pandas',), timeout=0.3).join(5)\n"
            "print('pandas' in sys.modules)")
    assert _run(code) == "False"
