"""A small cache for the dashboard's tests: two synthetic 'models' over glyph-named classes.

Class names follow the glyph dataset's form ("é LATIN SMALL LETTER E WITH ACUTE") so the
pages draw class images, as they do for the embedded default. What the jobs make (every
α path, redundancy and spectrum, the floor between the two) is made here in the foreground,
(and every target's best subsets) as ``python -m engine demo`` does, so the pages find it; ``build_cache(jobs=False)`` leaves
it out (a freshly imported store).
"""

from __future__ import annotations

import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from engine.core.synthetic import classifier_like_logits
from engine.stages.alpha_paths import compute_all_paths, path_spec
from engine.stages.atlas import compute_communities
from engine.stages.gramsets import load_gramset
from engine.stages.pairing import Pairing, open_pairing
from engine.stages.sparsity import compute_all_best_subsets
from engine.stages.theory import compute_floor, compute_redundancy, compute_screening
from engine.storage.store import Cache

MODEL_A = "syn-cnn"
MODEL_B = "syn-vit"
_CHARS = "OoQ0CcDdEeéèêëAaàâäBb8GgIl1|iíSs5Zz2Uuüù"
_MORE = "FHJKLMNPRTVWXYfhjkmnprtvwxy34679"


def glyph_class_names(k: int) -> list[str]:
    chars = (_CHARS + _MORE)[:k]
    if len(chars) < k:
        raise ValueError(f"at most {len(_CHARS + _MORE)} glyph classes here; asked for {k}")
    return [f"{c} {unicodedata.name(c)}" for c in chars]


def build_cache(root: Path, k: int = 60, n: int = 2000, jobs: bool = True) -> Path:
    """Write two paired stores and their Grams under ``root`` (and, with ``jobs``, what the
    all-target jobs make); return root."""
    cache = Cache(root)
    names = glyph_class_names(k)
    logits, labels = classifier_like_logits(n, k, rank=k + 20, seed=0)
    # one planted sparse dependency, the clear example the pages open on: é ≈ 0.6·e + 0.6·è.
    # An é image looks like an e and like an è: on é's samples both of their logits are high
    # (one above the row's largest), so é — their sum's 1.2 — stays the prediction there and
    # the model recognises é (pages open on categories the model recognises)
    e, e_acute, e_grave = (names.index(f"{c} {unicodedata.name(c)}") for c in "eéè")
    rows = labels == e_acute
    top = logits[rows].max(axis=1) + 1.0
    logits[rows, e] = top
    logits[rows, e_grave] = top + 0.3 * np.random.default_rng(3).standard_normal(int(rows.sum())).astype(np.float32)
    noise = 0.05 * np.random.default_rng(2).standard_normal(n).astype(np.float32)
    logits[:, e_acute] = 0.6 * logits[:, e] + 0.6 * logits[:, e_grave] + noise
    a = cache.save_store(MODEL_A, logits, labels, names, meta={"dataset": {"name": "synthetic-glyph-names"}})
    other = logits + 0.6 * np.random.default_rng(1).standard_normal(logits.shape).astype(np.float32)
    b = cache.save_store(MODEL_B, other, labels, names, meta={"dataset": {"name": "synthetic-glyph-names"}})
    for source, target in ((a, None), (b, None), (a, b)):
        load_gramset(cache, Pairing.of(target if target is not None else source, source))
    if jobs:
        for model, source in ((MODEL_A, None), (MODEL_B, None), (MODEL_B, MODEL_A)):
            pairing = open_pairing(cache, model, source)
            spec = path_spec(cache, pairing)
            path = compute_all_paths(cache, spec)
            compute_all_best_subsets(cache, pairing)
            if pairing.within:
                compute_screening(cache, spec, path)
                compute_redundancy(cache, pairing)
                for a in range(len(path.alphas)):  # the Atlas's default filters, at every α
                    compute_communities(cache, spec, path, a, 4, 0.05)
            else:
                compute_floor(cache, pairing)
    return root


def copy_cache(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


_BUILT: dict[str, Path] = {}


def shared_cache(base: Path) -> Path:
    """The test cache, built once per test process (solving the paths takes a few seconds)."""
    if "root" not in _BUILT:
        _BUILT["root"] = build_cache(base / "dashboard-cache")
    return _BUILT["root"]


APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"



@pytest.fixture(name="cache")
def page_cache(tmp_path_factory, monkeypatch) -> Path:
    """The ``cache`` fixture of the dashboard's page tests: the shared test cache, named to the
    pages by ``NDE_CACHE`` for the test. Import it into a test module to use it."""
    root = shared_cache(tmp_path_factory.getbasetemp())
    monkeypatch.setenv("NDE_CACHE", str(root))
    return root


def run_page(page: str | None = None, params: dict | None = None, timeout: float = 120):
    """AppTest of the real entry script (navigation, sidebar), switched to ``app_pages/<page>.py``.

    The cache is taken from $NDE_CACHE (set it with monkeypatch).
    """
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=timeout)
    for key, value in (params or {}).items():
        at.query_params[key] = value
    if page:
        at.switch_page(f"app_pages/{page}.py")
    return at.run()


def iframe_html(at) -> list[str]:
    """The HTML of every st.iframe on the page."""
    return [el.proto.srcdoc for el in at.get("iframe")]


def coef_rows(at) -> list[tuple[int, float]]:
    """(source index, θ_j) of every row of the page's coefficient tables (``.nde-coefs``)."""
    import re

    rows = []
    for el in at.get("html"):
        if 'class="nde-coefs"' in el.proto.body:
            rows += [(int(j), float(c)) for j, c in
                     re.findall(r'<tr data-source="(\d+)" data-coef="([^"]+)">', el.proto.body)]
    return rows


def html_tables(at) -> list:
    """The page's plain HTML tables (``tables.frame_table_html``) as DataFrames of their
    unrounded rows (each ``<tr data-row=…>``), in the page's order."""
    import html
    import json
    import re

    import pandas as pd

    return [pd.DataFrame([json.loads(html.unescape(row)) for row in re.findall(r'<tr data-row="([^"]*)">', body)])
            for body in (el.proto.body for el in at.get("html")) if 'class="nde-coefs nde-table"' in body]


def alpha_of(option) -> float:
    """The α of an α-slider option's label ("0.0123 ★ recommended" -> 0.0123)."""
    return float(str(option).split()[0])


def metric_values(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def messages(at) -> str:
    return " | ".join([w.value for w in at.warning] + [i.value for i in at.info] + [e.value for e in at.error])


def traced_run(at):
    """``at.run()`` followed through the real layers (``bench.layer_trace.LayerTrace``, rooted
    at the dashboard); the run must raise nothing. Returns the trace."""
    from bench.layer_trace import LayerTrace

    trace = LayerTrace(root="dashboard")
    with trace.active():
        at.run()
    assert not at.exception, at.exception
    return trace


def stage_calls(trace) -> dict[str, int]:
    """The apps' calls into the stages in one traced run (reads of a stage object's property,
    e.g. ``SparseFit.r2``, not counted: they read data already handed back)."""
    import importlib
    import pkgutil

    import engine.stages

    classes = {}
    for info in pkgutil.iter_modules(engine.stages.__path__):
        module = importlib.import_module(f"engine.stages.{info.name}")
        classes.update({name: obj for name, obj in vars(module).items() if isinstance(obj, type)})

    def is_property(qualname: str) -> bool:
        owner, _, attr = qualname.rpartition(".")
        return owner in classes and isinstance(getattr(classes[owner], attr, None), property)

    return {fn: n for (src, dst, fn), n in trace.calls.items()
            if src == "apps" and dst == "stages" and not is_property(fn)}


def stage_order(trace) -> list[str]:
    """The apps' calls into the stages, in the order made."""
    return [fn for (src, dst, fn) in trace.calls if src == "apps" and dst == "stages"]


# What a slider move must not read again: the stores, the Gram, the stored solutions and paths.
_READS = frozenset({"DerivedMixin.load_derived", "target_paths", "sources_curve", "load_gramset",
                    "Cache.load_store", "open_pairing"})


def reads_again(trace) -> set[str]:
    """The reads of :data:`_READS` a traced run made (a slider move should make none)."""
    return {fn for _, _, fn in trace.calls} & _READS


def other_value(slider):
    """Another value of an α or sources slider than the one it shows."""
    values = [alpha_of(o) for o in slider.options] if slider.label.startswith("α") else \
        [int(str(o).split()[0]) for o in slider.options]
    return next(v for v in values if v != slider.value)
