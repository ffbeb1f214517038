"""AppTest of the Atlas page: the filtered global graph, communities, rankings, search."""

from __future__ import annotations

from tests.dashboard_cache import (
    html_tables,
    iframe_html,
    messages,
    page_cache,  # noqa: F401 - the pages' `cache` fixture
    run_page,
)


def _node_count(at) -> int:
    (html,) = iframe_html(at)
    return int(html.split('data-nodes="', 1)[1].split('"', 1)[0])


def test_atlas_shows_graph_and_tables(cache):
    at = run_page("atlas", {"method": "covlasso"})
    assert not at.exception, at.exception
    assert at.title[0].value == "Atlas of dependencies"
    assert _node_count(at) > 5
    assert {s.value for s in at.subheader} >= {"Communities", "Most depended-on", "Most redundant"}
    assert len(html_tables(at)) == 3 and all(len(t) > 0 for t in html_tables(at))


def test_atlas_filters_change_the_graph(cache):
    at = run_page("atlas")
    before = _node_count(at)
    depended_before = html_tables(at)[1]
    next(s for s in at.slider if s.label == "Targets shown").set_value(2).run()
    assert not at.exception
    assert _node_count(at) < before
    slider = at.select_slider[0]
    slider.set_value(min(float(o) for o in slider.options)).run()
    assert not at.exception
    assert not html_tables(at)[1].equals(depended_before)


def test_atlas_search(cache):
    at = run_page("atlas", {"q": "LATIN SMALL LETTER E"})
    assert not at.exception
    assert at.text_input[0].value == "LATIN SMALL LETTER E"
    at.text_input[0].set_value("no such glyph").run()
    assert not at.exception
    assert "No category matches" in messages(at)


def test_atlas_bad_alpha(cache):
    at = run_page("atlas", {"alpha": "zero"})
    assert not at.exception
    assert "positive number" in messages(at)
    assert _node_count(at) > 0


def test_atlas_best_subsets_by_default_and_in_the_link(cache):
    """With every target's best subsets cached, the atlas opens on them and the link records
    the method and m. At m = 1, "Most depended-on" counts, for each source, the targets whose
    best single source it is — recounted here from the logits (numpy's least squares)."""
    import numpy as np

    from engine.storage.store import Cache
    from tests.dashboard_cache import MODEL_A

    at = run_page("atlas")
    assert not at.exception, at.exception
    assert next(r for r in at.radio if r.label == "Method").value == "best-subset"
    m = next(s for s in at.select_slider if s.label.startswith("Best subset of each target")).value
    assert dict(at.query_params)["method"] == "best-subset" and dict(at.query_params)["m"] == str(m)
    assert _node_count(at) > 5

    at = run_page("atlas", {"method": "best-subset", "m": "1"})
    assert not at.exception
    assert next(s for s in at.select_slider if s.label.startswith("Best subset of each target")).value == 1
    F = Cache(cache).load_store(MODEL_A).logits.astype(np.float64)
    best = []
    for t in range(F.shape[1]):
        err = [np.sum((F[:, t] - F[:, [j]] @ np.linalg.lstsq(F[:, [j]], F[:, t], rcond=None)[0]) ** 2)
               if j != t else np.inf for j in range(F.shape[1])]
        best.append(int(np.argmin(err)))
    counts = np.bincount(best, minlength=F.shape[1])
    table = next(t for t in html_tables(at) if "targets" in t.columns)
    names = Cache(cache).load_store(MODEL_A).class_names
    for name, n in zip(table["name"], table["targets"]):
        assert n == counts[names.index(name)]
    assert table["targets"].max() == counts.max()

    paper = run_page("atlas", {"method": "covlasso"})
    assert not paper.exception and dict(paper.query_params)["method"] == "covlasso"
    assert "alpha" in dict(paper.query_params) and "m" not in dict(paper.query_params)


def test_best_subset_atlas_is_coloured_by_the_covlasso_communities(cache):
    """Issue 20: the atlas's nodes were all grey under "node colour = community" (the
    best-subset view, the default, had no communities). They are the CovLasso graph's at the α
    the CovLasso atlas opens on (what the demo prepares), and the table lists them."""
    from dashboard.components.style import ZERO, community_color

    at = run_page("atlas")
    assert not at.exception, at.exception
    assert next(r for r in at.radio if r.label == "Method").value == "best-subset"
    (graph,) = iframe_html(at)
    coloured = sum(graph.count(community_color(k)) for k in range(12))
    assert coloured > 0 and coloured >= graph.count(ZERO) / 4, "the nodes are (mostly) grey"
    assert any("Louvain communities" in c.value for c in at.caption)
    assert len(html_tables(at)) == 3  # communities, most depended-on, most redundant
