"""Talk mode (engine/apps/talk, engine/commands/talk.py, the Talk page): the talk file, the slides
on the small test cache (its planted dependency é ≈ 0.6·e + 0.6·è is the reference), the
offline deck's self-containment, the demo's stage results, the page's server time."""

from __future__ import annotations

import re
import time
import unicodedata

import numpy as np
import pytest

from engine.apps.talk.talkfile import (
    SLIDE_KINDS,
    Talk,
    TalkSlide,
    add_slide,
    read_talk,
    talk_toml,
    write_talk,
)
from engine.cli import main as cli
from engine.errors import InvalidInputError, NotFoundError
from engine.storage.store import Cache
from tests.dashboard_cache import MODEL_A, MODEL_B, copy_cache, shared_cache


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Cache:
    """A copy of the dashboard's test cache with its talk prepared (talk.toml, slides)."""
    from engine.apps.talk.deck import prepare_deck

    root = copy_cache(shared_cache(tmp_path_factory.getbasetemp()), tmp_path_factory.mktemp("talk") / "cache")
    prepare_deck(Cache(root))
    return Cache(root)


# ----------------------------------------------------------------------------- the talk file


def test_talk_file_round_trip(tmp_path):
    talk = Talk('A "quoted" title', (
        TalkSlide("question", model="m"),
        TalkSlide("dependency", model="m", target="é LATIN SMALL LETTER E WITH ACUTE", alpha=0.25,
                  note='say "é"\nthen\tpause \\ here'),
        TalkSlide("sources", model="m", target="3", n_sources=4, title="Few"),
        TalkSlide("between", model="b", source="a", target="Ω"),
        TalkSlide("fit", model="m", target="é", sources=4),
    ))
    path = write_talk(talk, tmp_path / "talk.toml")
    assert read_talk(path) == talk
    import tomllib  # an independent reader of what we wrote

    data = tomllib.loads(path.read_text(encoding="utf-8"))
    assert [s["kind"] for s in data["slide"]] == ["question", "dependency", "sources", "between", "fit"]
    assert data["slide"][2]["n_sources"] == 4 and "alpha" not in data["slide"][2]
    assert data["slide"][4]["sources"] == 4 and not {"alpha", "n_sources"} & set(data["slide"][4])
    filled = Talk("t", (TalkSlide("dependency", model="m", target="é", sources=3), TalkSlide("fit"))).resolved()
    assert filled.slides[1].sources == 3 and filled.slides[1].alpha is None  # inherited from the first


@pytest.mark.parametrize("text, words", [
    ('[[slide]]\nkind = "graph"\n', ["graph", "kind"]),
    ('[[slide]]\nkind = "fit"\ncolour = "red"\n', ["colour"]),
    ('title = "x"\n', ["[[slide]]"]),
    ('[[slide]]\nkind = "fit"\nalpha = -1\n', ["alpha", "-1"]),
    ('[[slide]\nkind = "fit"\n', ["TOML"]),
    ('[[slide]]\nkind = "fit"\nsources = 0\n', ["sources", "0", "1 to 8"]),
    ('[[slide]]\nkind = "fit"\nsources = 9999\n', ["sources", "9999", "1 to 8"]),
    ('[[slide]]\nkind = "fit"\nsources = 2.5\n', ["sources", "2.5", "whole number"]),
    ('[[slide]]\nkind = "fit"\nsources = "4"\n', ["sources", "'4'", "whole number"]),
    ('[[slide]]\nkind = "fit"\nsources = true\n', ["sources", "True", "whole number"]),
    ('[[slide]]\nkind = "fit"\nsources = 4\nalpha = 0.5\n', ["sources = 4", "alpha", "one of"]),
    ('[[slide]]\nkind = "fit"\nsources = 4\nn_sources = 3\n', ["sources = 4", "n_sources", "one of"]),
])
def test_a_bad_talk_file_is_one_line_naming_the_problem(tmp_path, text, words):
    path = tmp_path / "talk.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidInputError) as err:
        read_talk(path)
    assert all(w in str(err.value) for w in words) and "\n" not in str(err.value)


def test_the_cli_turns_a_bad_talk_into_exit_2(tmp_path, capsys, cache):
    bad = tmp_path / "talk.toml"
    bad.write_text('[[slide]]\nkind = "nope"\n', encoding="utf-8")
    assert cli(["--cache", str(cache.root), "talk", "--export", str(tmp_path / "t.html"), "--talk", str(bad)]) == 2
    assert "nope" in capsys.readouterr().err
    assert cli(["--cache", str(cache.root), "talk"]) == 2
    assert not (tmp_path / "t.html").exists()


def test_default_talk_tells_the_story_on_the_cache_at_hand(cache):
    talk = read_talk(cache.talk_path)  # written by prepare_deck from the recommendations
    assert [s.kind for s in talk.slides] == list(SLIDE_KINDS)
    between = next(s for s in talk.slides if s.kind == "between")
    assert (between.model, between.source) == (MODEL_B, MODEL_A)
    dep = next(s for s in talk.slides if s.kind == "dependency")
    names = cache.load_store(dep.model).class_names
    # the test cache holds every target's best subsets (as the demo does): the best subset's m, else α
    assert dep.target in names and ((dep.alpha or 0) > 0 or 1 <= (dep.sources or 0) <= 8)


def test_default_talk_uses_the_sparsest_best_subset_when_cached(cache, tmp_path):
    """With every target's best subsets cached, the dependency, fit and sources slides name the
    fewest sources whose best subset fits (R² ≥ 0.95 by least squares on them); "why" keeps α."""
    from engine.apps.talk.talkfile import default_talk
    from engine.stages.pairing import open_pairing
    from engine.stages.sparsity import compute_all_best_subsets

    c = Cache(copy_cache(cache.root, tmp_path / "c"))
    for name in (MODEL_A, MODEL_B):
        compute_all_best_subsets(c, open_pairing(c, name, name))
    talk = default_talk(c)
    by_kind = {s.kind: s for s in talk.slides}
    m = by_kind["dependency"].sources
    assert m is not None and 1 <= m <= 8 and by_kind["dependency"].alpha is None
    assert by_kind["fit"].sources == by_kind["sources"].sources == m
    assert by_kind["why"].alpha and by_kind["why"].sources is None
    dep = _planted(c, sources=m) if by_kind["dependency"].target.startswith("é") else None
    from engine.apps.talk.slides import SlideContext, resolve_dependency

    dep = dep or resolve_dependency(SlideContext(c), by_kind["dependency"])
    assert len(dep.order) <= m and _r2_least_squares(dep.model, dep.target, dep.order) >= 0.95


def test_add_slide_appends_to_the_default_talk(cache, tmp_path):
    path = add_slide(cache, TalkSlide("dependency", model=MODEL_A, target="é", alpha=0.1), tmp_path / "t.toml")
    talk = read_talk(path)
    assert talk.slides[-1] == TalkSlide("dependency", model=MODEL_A, target="é", alpha=0.1)
    assert [s.kind for s in talk.slides[:-1]] == list(SLIDE_KINDS)


# ----------------------------------------------------------------------------- the slides


def _planted(cache: Cache, **fields):
    from engine.apps.talk.slides import SlideContext, resolve_dependency

    return resolve_dependency(SlideContext(cache), TalkSlide("dependency", model=MODEL_A, target="é", **fields))


def test_the_planted_dependency_is_what_its_slide_shows(cache):
    from engine.apps.talk.slides import formula_html

    dep = _planted(cache, n_sources=2)
    names = dep.source.class_names
    top = {names[j][0] for j in dep.order[:2]}
    assert top == {"e", "è"}  # é ≈ 0.6·e + 0.6·è, planted by tests/dashboard_cache.py
    assert dep.metrics.r2 > 0.9
    html = formula_html(dep)
    assert "é" in html and "e" in html and "è" in html


def test_n_sources_picks_the_smallest_alpha_with_at_most_that_many(cache):
    for n in (1, 2, 3, 5):
        dep = _planted(cache, n_sources=n)
        i = dep.path.position(dep.target)
        sizes = dep.path.support_sizes[i, : len(dep.path.alpha_indices(dep.target))]
        assert 0 < len(dep.order) <= n
        later = sizes[dep.alpha_index + 1:]
        assert later.size == 0 or later[0] > n  # the next, smaller α has more


def test_a_target_that_does_not_exist_names_itself(cache):
    from engine.apps.talk.slides import SlideContext, resolve_dependency

    with pytest.raises(NotFoundError, match="nosuch"):
        resolve_dependency(SlideContext(cache), TalkSlide("dependency", model=MODEL_A, target="nosuch"))


def _chart_of(html: str) -> str:
    import base64

    return base64.b64decode(re.search(r'src="data:image/svg\+xml;base64,([^"]+)"', html).group(1)).decode()


def _r2_least_squares(store, target: int, sources) -> float:
    """R² of the target's logit refitted by least squares on ``sources``' logits (numpy's
    lstsq on the stored logits, no intercept: the dependencies' model)."""
    y = np.asarray(store.logits[:, target], dtype=np.float64)
    x = np.asarray(store.logits[:, list(sources)], dtype=np.float64)
    theta = np.linalg.lstsq(x, y, rcond=None)[0]
    return 1.0 - float(((y - x @ theta) ** 2).sum()) / float(((y - y.mean()) ** 2).sum())


def test_sources_slide_draws_best_subset_relaxed_lasso_and_lasso(cache):
    """The slide's series are best subset (leading), relaxed Lasso and Lasso; the best subset's
    R² at m is least squares on the best m sources, checked by exhaustive search over pairs on
    the planted é ≈ 0.6·e + 0.6·è; the Lasso's is the R² of the path's own coefficients."""
    from engine.apps.talk import svg
    from engine.apps.talk.slides import SlideContext, slide_sources, sources_series

    ctx = SlideContext(cache)
    dep = _planted(cache, n_sources=2)
    store, t = dep.model, dep.target
    series = sources_series(ctx.curve(store.name, store.name, t))
    assert [s.name for s in series] == ["best subset", "relaxed Lasso", "Lasso (the paper's)"]
    best, relaxed, lasso = series
    assert list(best.n_sources) == list(range(1, 9))
    others = [j for j in range(store.k) if j != t]
    singles = max(_r2_least_squares(store, t, [j]) for j in others)
    e, e_grave = (store.class_names.index(f"{c} {unicodedata.name(c)}") for c in "eè")
    planted = _r2_least_squares(store, t, [e, e_grave])
    assert best.r2[0] == pytest.approx(singles, abs=1e-4)
    assert best.r2[1] == pytest.approx(planted, abs=1e-4)
    pairs = max(_r2_least_squares(store, t, [a, b]) for i, a in enumerate(others) for b in others[i + 1:])
    assert planted == pytest.approx(pairs, abs=1e-9)  # the planted pair is the best pair
    # the Lasso: at each count of sources, the best R² of the path's own coefficients
    n_a = len(dep.path.alpha_indices(t))
    own = {}
    y = np.asarray(store.logits[:, t], dtype=np.float64)
    for a in range(n_a):
        coef = dep.path.coef_vector(t, a)
        n = int((coef != 0).sum())
        if n:
            r2 = 1 - float(((y - np.asarray(store.logits, np.float64) @ coef) ** 2).sum()) / float(((y - y.mean()) ** 2).sum())
            own[n] = max(own.get(n, -np.inf), r2)
    assert list(lasso.n_sources) == sorted(own)
    assert np.allclose(lasso.r2, [own[n] for n in sorted(own)], atol=1e-3)
    # relaxed ≥ Lasso at the same support; best subset ≥ relaxed at the same count
    for n, r in zip(relaxed.n_sources, relaxed.r2):
        if n <= 8:
            assert best.r2[n - 1] >= r - 1e-6
    extra = svg.SourcesSeries("another solver", np.array([1, 2]), np.array([0.5, 0.99]))
    slide = slide_sources(ctx, TalkSlide("sources"), dep, [extra])
    chart = _chart_of(slide.html)
    assert all(name in chart for name in ("best subset", "relaxed Lasso", "the paper", "another solver"))
    assert chart.index("best subset") < chart.index("relaxed Lasso") < chart.index("the paper")
    # the sentence: m sources reach R² r by best subset; the Lasso needs its own count for r
    m = next(m for m in range(1, 9) if best.r2[m - 1] >= 0.95)
    need = [n for n, r in zip(lasso.n_sources, lasso.r2) if r >= best.r2[m - 1] - 1e-9]
    assert f"<b>{m}</b> source" in slide.html and f"R² {best.r2[m - 1]:.2f} by best subset" in slide.html
    assert (f"Lasso needs <b>{min(need)}</b>" if need else "Lasso never reaches it") in slide.html


def test_a_slide_with_sources_shows_the_best_subset_labelled_as_such(cache):
    from engine.apps.talk.slides import SlideContext, slide_dependency

    for m in (1, 2, 3):
        dep = _planted(cache, sources=m)
        assert dep.best_subset and 0 < len(dep.order) <= m
        assert dep.metrics.r2 == pytest.approx(_r2_least_squares(dep.model, dep.target, dep.order), abs=1e-4)
    names = dep.source.class_names
    assert {names[j][0] for j in _planted(cache, sources=2).order} == {"e", "è"}
    html = slide_dependency(SlideContext(cache), TalkSlide("dependency"), _planted(cache, sources=2)).html
    assert "best subset" in html and "α of the CovLasso" not in html
    lasso = slide_dependency(SlideContext(cache), TalkSlide("dependency"), _planted(cache, alpha=0.1)).html
    assert "α of the CovLasso" in lasso and "best subset" not in lasso
    from engine.apps.talk.deck import (
        deck_key,  # the prepared slides' key follows the number of sources
    )

    talks = [Talk("t", (TalkSlide("dependency", model=MODEL_A, target="é", **how),))
             for how in ({"sources": 3}, {"sources": 4}, {"n_sources": 3})]
    assert len({deck_key(cache, t) for t in talks}) == 3


def test_applications_ask_for_their_jobs_before_the_talk(cache):
    from engine.apps.talk.slides import SlideContext, slide_applications

    slide = slide_applications(SlideContext(cache), TalkSlide("applications"))
    assert not slide.ready
    assert "python -m engine jobs submit newclasses --wait" in slide.html
    assert "python -m engine jobs submit regularizer --wait" in slide.html


# ----------------------------------------------------------------------------- the deck


def test_the_deck_is_one_self_contained_file(cache, tmp_path):
    out = tmp_path / "talk.html"
    t = time.perf_counter()
    assert cli(["--cache", str(cache.root), "talk", "--export", str(out)]) == 0
    seconds = time.perf_counter() - t
    html = out.read_text(encoding="utf-8")
    assert html.count('<section class="slide"') == len(SLIDE_KINDS)
    # nothing fetched: every src/href is a data URI or a fragment; no stylesheet, font or import
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), [r[:60] for r in refs if not r.startswith("data:")]
    assert not re.search(r"<link|@import|url\(|https?://(?!www\.w3\.org/2000/svg)", html)
    assert '<aside class="notes">' in html
    assert out.stat().st_size < 15e6 and seconds < 60


# ----------------------------------------------------------------------------- the demo's stage results


def test_demo_prepares_what_the_pages_first_views_read(tmp_path):
    from engine.commands.demo import (
        ATLAS_MIN_COEF,
        ATLAS_TOP_K,
        prepare_demo_dependencies,
        prepare_stage_results,
    )
    from engine.stages.alpha_paths import path_spec, read_all_paths
    from engine.stages.atlas import default_alpha_index, read_communities
    from engine.stages.pairing import open_pairing
    from engine.stages.theory import read_floor, read_redundancy, read_screening
    from tests.dashboard_cache import build_cache

    c = Cache(build_cache(tmp_path / "c", jobs=False))
    stores, pairs = [MODEL_A, MODEL_B], [(MODEL_B, MODEL_A)]
    prepare_demo_dependencies(c, stores, pairs, 0.25)
    assert prepare_stage_results(c, stores, pairs) is False
    for name in stores:
        pairing = open_pairing(c, name)
        spec = path_spec(c, pairing)
        path = read_all_paths(c, spec)
        assert read_redundancy(c, pairing) is not None and read_screening(c, spec) is not None
        assert read_communities(c, spec, default_alpha_index(path), ATLAS_TOP_K, ATLAS_MIN_COEF) is not None
    assert read_floor(c, open_pairing(c, MODEL_B, MODEL_A)) is not None
    assert prepare_stage_results(c, stores, pairs) is True  # the second run is all cache hits


# ----------------------------------------------------------------------------- the page


def test_talk_page_shows_each_slide_within_a_second(cache, monkeypatch):
    from tests.dashboard_cache import run_page

    monkeypatch.setenv("NDE_CACHE", str(cache.root))
    at = run_page("talk", {"slide": "1"})
    assert not at.exception
    times = []  # the server's CPU seconds per slide (AppTest runs the page in this process): the
    # machine's load does not count against a slide, its own work does
    for n in range(2, len(SLIDE_KINDS) + 1):
        t = time.process_time()
        at.button(key="talk_next").click().run()
        times.append(time.process_time() - t)
        bodies = " ".join(h.proto.body for h in at.get("html"))
        assert f'<div class="counter">{n} / {len(SLIDE_KINDS)}</div>' in bodies, n
        assert at.query_params["slide"] == [str(n)] or at.query_params["slide"] == str(n)
    assert max(times) <= 1.0, times
    at.button(key="talk_prev").click().run()
    assert f"{len(SLIDE_KINDS) - 1} / {len(SLIDE_KINDS)}" in " ".join(h.proto.body for h in at.get("html"))


def test_talk_page_before_anything_is_prepared_says_how(tmp_path, monkeypatch):
    from tests.dashboard_cache import build_cache, run_page

    monkeypatch.setenv("NDE_CACHE", str(build_cache(tmp_path / "c", k=20, n=300)))
    at = run_page("talk")
    assert not at.exception
    assert "talk --prepare" in " ".join(m.value for m in at.markdown)
    assert at.button(key="talk_prepare")


def test_every_slide_kind_has_a_default_note():
    from engine.apps.talk.talkfile import _NOTES

    assert set(_NOTES) == set(SLIDE_KINDS)
    assert talk_toml(Talk()).startswith("#")


@pytest.mark.parametrize("page, key, kind", [("explore", "x-talk", "dependency"), ("compare", "cx-talk", "between")])
def test_add_to_talk_appends_the_view_shown(tmp_path, monkeypatch, cache, page, key, kind):
    from tests.dashboard_cache import run_page

    root = copy_cache(cache.root, tmp_path / "c")
    monkeypatch.setenv("NDE_CACHE", str(root))
    params = {"model": MODEL_A, "target": "é", "alpha": "0.05"} if page == "explore" else \
        {"model": MODEL_B, "source": MODEL_A, "target": "é", "alpha": "0.05"}
    at = run_page(page, params)
    assert not at.exception
    before = len(read_talk(Cache(root).talk_path).slides)
    at.button(key=key).click().run()
    talk = read_talk(Cache(root).talk_path)
    assert len(talk.slides) == before + 1
    last = talk.slides[-1]
    names = Cache(root).load_store(params["model"]).class_names
    assert (last.kind, last.model, last.target) == (kind, params["model"], names[[n[0] for n in names].index("é")])
    assert last.source == (MODEL_A if kind == "between" else "")
    shown = float(at.query_params["alpha"][0] if isinstance(at.query_params["alpha"], list) else at.query_params["alpha"])
    assert last.alpha == pytest.approx(shown, rel=1e-5)


@pytest.mark.parametrize("value, shown", [("abc", 1), ("99", len(SLIDE_KINDS))])
def test_a_bad_slide_in_the_link_falls_back(cache, monkeypatch, value, shown):
    from tests.dashboard_cache import run_page

    monkeypatch.setenv("NDE_CACHE", str(cache.root))
    at = run_page("talk", {"slide": value})
    assert not at.exception
    assert f'<div class="counter">{shown} / {len(SLIDE_KINDS)}</div>' in " ".join(h.proto.body for h in at.get("html"))
