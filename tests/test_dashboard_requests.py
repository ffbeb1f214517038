"""No page solves every target, or eigendecomposes a Gram, inside a request: on a freshly
imported store (Grams only, no job run yet) every page opens, solves just the category it
shows, and offers the all-target work as a job."""

from __future__ import annotations

import json

import numpy as np
import pytest

import engine.core.covlasso_kernels as kernels
from tests.dashboard_cache import MODEL_A, MODEL_B, build_cache, messages, run_page


@pytest.fixture()
def fresh(tmp_path, monkeypatch):
    root = build_cache(tmp_path / "fresh", jobs=False)
    monkeypatch.setenv("NDE_CACHE", str(root))
    widths: list[int] = []

    def counted(real):  # the solver's two entry points: one α, and an α path
        def solve(design, rhs, *args, **kwargs):
            widths.append(rhs.shape[1])
            return real(design, rhs, *args, **kwargs)
        return solve

    def no_eig(*args, **kwargs):
        raise AssertionError("an eigendecomposition inside a request")

    monkeypatch.setattr(kernels, "solve_chunks", counted(kernels.solve_chunks))
    monkeypatch.setattr(kernels, "solve_path_chunks", counted(kernels.solve_path_chunks))
    monkeypatch.setattr(np.linalg, "eigh", no_eig)
    monkeypatch.setattr(np.linalg, "eigvalsh", no_eig)
    return widths


def _buttons(at) -> list[str]:
    return [b.label for b in at.button]


@pytest.mark.parametrize("page, params", [(None, {}), ("compare", {"model": MODEL_B, "source": MODEL_A}),
                                          ("atlas", {}), ("theory", {})])
def test_pages_solve_only_the_category_they_show(fresh, page, params):
    at = run_page(page, {**params, "target": "3"})
    assert not at.exception, at.exception
    assert all(w == 1 for w in fresh), f"a request solved {max(fresh)} targets at once"
    if page in ("atlas", "theory"):
        assert any(label.startswith("Compute every target's α path") for label in _buttons(at)), _buttons(at)
    if page == "theory":
        assert "Compute redundancy and the spectrum (job)" in _buttons(at)
    if page == "compare":
        assert "Compute the least-squares floor (job)" in _buttons(at)
    assert "Traceback" not in messages(at)


def test_explore_export_of_every_target_waits_for_the_job(fresh):
    at = run_page()
    assert not at.exception
    assert fresh and all(w == 1 for w in fresh)
    assert "Compute every target's best subsets (job)" in _buttons(at)  # the default view: the fewest sources
    at = run_page(params={"method": "covlasso"})
    assert not at.exception
    assert "Compute every target's α path (job)" in _buttons(at)


def test_a_fresh_store_opens_on_the_grams_guess_not_category_0(fresh):
    """Before any α path exists the Gram's hint chooses where Explore and Compare open: within
    a model, the planted é ≈ 0.6·e + 0.6·è (two sources fit it, no single one does); only the
    category shown is solved."""
    import os
    import unicodedata

    from engine.apps.views import read_at_a_glance, recognised_categories
    from engine.stages.gramsets import load_gram_hint
    from engine.storage.store import Cache
    from tests.dashboard_cache import glyph_class_names

    names = glyph_class_names(60)
    at = run_page()
    assert not at.exception, at.exception
    assert next(s for s in at.selectbox if s.label == "Target category").value == names.index(
        f"é {unicodedata.name('é')}")
    assert fresh and all(w == 1 for w in fresh)
    cache = Cache(os.environ["NDE_CACHE"])
    between = load_gram_hint(cache, cache.load_store(MODEL_A), cache.load_store(MODEL_B), compute=False)
    store_b = cache.load_store(MODEL_B)
    recognised = recognised_categories(store_b.labels, store_b.logits.argmax(1), store_b.k)
    expected = between.clear_example(prefer=read_at_a_glance(names) & recognised)
    assert expected not in (None, 0)
    at = run_page("compare", {"model": MODEL_B, "source": MODEL_A})
    assert not at.exception, at.exception
    assert next(s for s in at.selectbox if s.label.startswith("Target category")).value == expected
    assert all(w == 1 for w in fresh)


def _stamps_script():  # run by AppTest: the stamps a page run sees while a writer touches store "a"
    import json
    import os

    import streamlit as st

    from dashboard.components.loaders import _stamp

    root, manifest = st.session_state["root"], st.session_state["manifest"]
    first = _stamp(root, "a", "b")
    later = os.stat(manifest).st_mtime_ns + 10**9
    os.utime(manifest, ns=(later, later))  # "a" re-imported while this run draws the page
    st.text(json.dumps([first, _stamp(root, "a"), _stamp(root, "b", "a")]))


def test_a_page_run_reads_the_stores_stamps_once_and_the_next_run_sees_the_new_ones(tmp_path):
    """Every loader of one run is keyed by the stores as they were when the run began (one look
    at the manifests per run); the next run, and any call outside a run, sees a rewrite."""
    from streamlit.testing.v1 import AppTest

    from dashboard.components.loaders import _stamp
    from engine.storage.store import Cache

    manifest = Cache(tmp_path).store_manifest_path("a")
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text("{}")
    at = AppTest.from_function(_stamps_script)
    at.session_state["root"], at.session_state["manifest"] = str(tmp_path), str(manifest)
    for _ in range(2):
        before = manifest.stat().st_mtime_ns
        at.run()
        assert not at.exception, at.exception
        assert json.loads(at.text[0].value) == [[before, 0], [before], [0, before]]
        assert manifest.stat().st_mtime_ns == before + 10**9
    assert _stamp(str(tmp_path), "a", "b") == (manifest.stat().st_mtime_ns, 0)
