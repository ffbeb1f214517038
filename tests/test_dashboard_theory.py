"""AppTest of the Theory page: redundancy, Conjecture 1 against α, the Gram spectrum."""

from __future__ import annotations

from tests.dashboard_cache import (
    MODEL_B,
    html_tables,
    messages,
    metric_values,
    page_cache,  # noqa: F401 - the pages' `cache` fixture
    run_page,
)


def test_theory_shows_three_sections(cache):
    at = run_page("theory")
    assert not at.exception, at.exception
    values = metric_values(at)
    assert {"Dimensions the logits span", "Exactly redundant (r_i = 0)", "Median r_i, not exact",
            "Floor ρ (precision)", "Condition number"} <= set(values)
    assert values["Exactly redundant (r_i = 0)"] == "0 / 60"  # the test logits have full rank
    assert len(at.get("vega_lite_chart")) == 4  # redundancy, Conjecture 1, sparsity, spectrum
    assert any("Conjecture 1" in s.value for s in at.subheader)


def test_theory_follows_the_model(cache):
    at = run_page("theory")
    before = metric_values(at)
    next(s for s in at.selectbox if s.label == "Model").set_value(MODEL_B).run()
    assert not at.exception
    assert metric_values(at) != before
    assert dict(at.query_params)["model"] == MODEL_B


def test_theory_bad_model_in_link(cache):
    at = run_page("theory", {"model": "../etc/passwd"})
    assert not at.exception
    assert "not in this cache" in messages(at)
    assert "Median r_i, not exact" in metric_values(at)


def test_theory_low_rank_logits_are_exactly_redundant(tmp_path, monkeypatch, cache):
    """Logits of 60 classes spanning 13 dimensions (12 features + a bias), like a real head."""
    import numpy as np

    from engine.stages.gramsets import load_gramset
    from engine.stages.pairing import Pairing, open_pairing
    from engine.stages.theory import compute_redundancy
    from engine.storage.store import Cache
    from tests.dashboard_cache import copy_cache, glyph_class_names

    root = copy_cache(cache, tmp_path / "cache")
    rng = np.random.default_rng(5)
    h = rng.standard_normal((1500, 12))
    logits = (h @ rng.standard_normal((12, 60)) + rng.standard_normal(60)).astype(np.float32)
    store = Cache(root)
    low = store.save_store("low-rank", logits, rng.integers(0, 60, 1500), glyph_class_names(60))
    load_gramset(store, Pairing.of(low))
    compute_redundancy(store, open_pairing(store, "low-rank"))  # what the theory job does
    monkeypatch.setenv("NDE_CACHE", str(root))
    at = run_page("theory", {"model": "low-rank"})
    assert not at.exception, at.exception
    values = metric_values(at)
    assert values["Dimensions the logits span"] == "13 / 60"
    assert values["Exactly redundant (r_i = 0)"] == "60 / 60"
    assert values["Median r_i, not exact"] == "—"
    table = html_tables(at)[0]
    assert table["exact"].all() and table["redundancy"].is_monotonic_increasing
    assert table["redundancy"].nunique() == 60  # ordered by geometry, not tied at zero
    assert any("exact combinations of the others" in c.value for c in at.caption)
