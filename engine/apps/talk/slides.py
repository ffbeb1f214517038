"""Each slide of the talk as HTML, built from the cache's stages (no Streamlit).

:func:`build_slides` reads what the demo or the jobs prepared — every target's α path, the
redundancy and spectrum, the communities, the floor, finished job reports — and solves at
most one target's path per dependency slide (a Lasso path on the Gram) and, for the "how few
sources" slide and a slide with ``sources = m``, the target's best subsets m = 1 … 8
(:func:`engine.stages.sparsity.sources_curve`: read from every target's best subsets when cached,
else solved for that target alone). A slide whose data a job has not made yet says so, with
the command to run before the talk.

The HTML uses the classes of :data:`engine.apps.talk.deck.SLIDE_CSS`; text is never smaller than
24 px at 1280 × 720 and the formula is 44 px.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from html import escape

import numpy as np

from engine.apps.talk import svg
from engine.apps.talk.context import (  # noqa: F401  (re-exported: the deck and tests import them from here)
    ATLAS_MIN_COEF,
    ATLAS_TARGETS,
    ATLAS_TOP_K,
    COMMUNITY_TOP_K,
    FORMULA_TERMS,
    STAR_SOURCES,
    Dependency,
    Slide,
    SlideContext,
    card,
    fmt_r2,
    formula_html,
    img,
    label,
    model_line,
    resolve_dependency,
    run_first,
    star_html,
    top1_of,
)
from engine.apps.talk.talkfile import Talk, TalkSlide
from engine.apps.views import read_at_a_glance
from engine.storage.store import Cache

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- the slides


def slide_question(ctx: SlideContext, s: TalkSlide, dep: Dependency) -> Slide:
    model = dep.model
    sources = "".join(img(ctx.image(dep.source, j), dep.source.class_names[j]) for j in dep.order[:6])
    body = (
        f'<p class="lead">{model_line(model, top1_of(ctx, model))}. For every image it outputs one logit per '
        f"category.</p>"
        f'<div class="question"><div class="hidden-logit">{img(ctx.image(model, dep.target, 128), dep.target_name, "glyph big")}'
        f'<span class="qmark">?</span></div><span class="op">=</span><div class="pool">{sources}'
        f'<span class="more">… a few of the other {model.k - 1:,}?</span></div></div>'
        '<p>Hide one category\'s logit. Can a <b>fixed</b> weighted sum of a few other categories\' logits '
        "rebuild it — on every image?</p>"
        '<p class="cite">Feng et al., <i>Neural Dependencies Emerging from Learning Massive Categories</i>, '
        "arXiv 2211.12339 — shown live on this machine's cache.</p>")
    return Slide("question", s.title or "Can one category's logit be read off a few others?", body, s.note)


def slide_dependency(ctx: SlideContext, s: TalkSlide, dep: Dependency) -> Slide:
    m = dep.metrics
    how = (card("best subset", f"the best {dep.max_sources} or fewer sources, least squares (not the Lasso)")
           if dep.best_subset else card(f"{dep.alpha:.3g}", "α of the CovLasso"))
    found = ("Found by a search for the best few sources (best subset)" if dep.best_subset
             else "Found by one Lasso on the logits' covariance")
    cards = (card(f"{len(dep.order)}", f"sources of {dep.source.k - (1 if dep.within else 0):,}")
             + card(fmt_r2(m.r2), "R² (variance of the logit explained)")
             + how)
    body = (formula_html(dep)
            + f'<div class="row"><div class="col graph">{star_html(ctx, dep)}</div>'
              f'<div class="col side">{cards}<p>Edge width = weight; <span class="pos">blue</span> adds, '
              f'<span class="neg">orange</span> subtracts. {found}: '
              f"nobody chose these categories.</p></div></div>")
    where = dep.model.name
    return Slide("dependency", s.title or f"One dependency: “{label(dep.target_name)}” in {where}", body, s.note)


def _fit_sample(dep: Dependency, limit: int = 2500, seed: int = 0) -> np.ndarray:
    n = dep.model.n
    rng = np.random.default_rng(seed)
    pos = np.flatnonzero(dep.model.labels == dep.target) if dep.model.labels is not None else np.zeros(0, int)
    rest = rng.choice(n, size=min(n, limit), replace=False)
    return np.unique(np.concatenate([pos[:400], rest]))


def slide_fit(ctx: SlideContext, s: TalkSlide, dep: Dependency) -> Slide:
    m = dep.metrics
    rows = _fit_sample(dep)
    original = np.asarray(dep.model.logits[rows, dep.target], dtype=np.float64)
    nz = dep.order
    replaced = np.asarray(dep.source.logits[rows][:, nz], dtype=np.float64) @ dep.coef[nz]
    positive = (dep.model.labels[rows] == dep.target) if dep.model.labels is not None else np.zeros(len(rows), bool)
    chart = svg.svg_img(svg.fit_chart(original, replaced, positive), "rebuilt against original logit")
    pos = ("" if not np.isfinite(m.pos_acc) else
           card(f"{m.pos_acc:.0f} %", f"of its own images still recognised (was {m.ori_pos_acc:.0f} %)"))
    how = f" (best subset, at most {dep.max_sources} sources)" if dep.best_subset else ""
    cards = (card(fmt_r2(m.r2), f"R² over every test image{how}")
             + card(f"{m.acc:.2f} %", f"top-1 with the rebuilt logit (was {m.ori_acc:.2f} %)")
             + pos)
    body = (f'<div class="row"><div class="col chart">{chart}</div><div class="col side">{cards}'
            f"<p>{len(rows):,} of {dep.model.n:,} test images shown; the dashed line is a perfect rebuild.</p>"
            "</div></div>")
    return Slide("fit", s.title or f"The rebuilt “{label(dep.target_name)}” does the category's job", body, s.note)


def _best_per_count(n_sources, r2) -> tuple[np.ndarray, np.ndarray]:
    """Along an α path several α keep the same number of sources: the best R² of each count
    (what the method reaches with that many), counts ascending."""
    n, r = np.asarray(n_sources, dtype=np.int64), np.asarray(r2, dtype=np.float64)
    ok = (n > 0) & np.isfinite(r)
    counts = np.unique(n[ok])
    return counts, np.array([r[ok & (n == c)].max() for c in counts])


def sources_series(curve) -> list[svg.SourcesSeries]:
    """R² against the number of sources of one target (an :class:`engine.stages.sparsity.SourcesCurve`):
    the best subset with at most m sources (m = 1 … 8), and along the Lasso's α path the relaxed
    Lasso (least squares on the Lasso's sources) and the paper's Lasso — best first."""
    return [svg.SourcesSeries("best subset", np.asarray(curve.m), curve.best_r2),
            svg.SourcesSeries("relaxed Lasso", *_best_per_count(curve.relaxed_n, curve.relaxed_r2)),
            svg.SourcesSeries("Lasso (the paper's)", *_best_per_count(curve.lasso_n, curve.lasso_r2))]


def _needs(series: svg.SourcesSeries, r2: float) -> int | None:
    """The fewest sources with which ``series`` reaches ``r2`` (None: never along it)."""
    n, r = np.asarray(series.n_sources), np.asarray(series.r2)
    ok = n[(n > 0) & np.isfinite(r) & (r >= r2 - 1e-9)]
    return int(ok.min()) if ok.size else None


def sources_finding(curve) -> str:
    """The slide's sentence (HTML): the fewest sources whose best subset fits, its R², and how
    many the relaxed Lasso and the paper's Lasso need to reach the same R²."""
    best, relaxed, lasso = sources_series(curve)
    m = curve.sparsest_fit()
    if m is None:
        m = int(curve.m[-1])
        lead = f"Even <b>{m}</b> sources reach only R² {curve.best_r2[m - 1]:.2f} by best subset"
    else:
        lead = f"<b>{m}</b> source{'s' if m > 1 else ''} reach R² {curve.best_r2[m - 1]:.2f} by best subset"
    r2 = float(curve.best_r2[m - 1])
    need, need_relaxed = _needs(lasso, r2), _needs(relaxed, r2)
    if need is None:
        top = int(np.argmax(lasso.r2)) if len(lasso.r2) else None
        rest = ("the paper's Lasso never reaches it along its path" if top is None else
                f"the paper's Lasso never reaches it (R² {lasso.r2[top]:.2f} at most, with {int(lasso.n_sources[top])})")
    else:
        rest = f"the paper's Lasso needs <b>{need}</b>"
    if need_relaxed is not None and need_relaxed != need:
        rest += f", the relaxed Lasso {need_relaxed}"
    return f"{lead}; {rest}."


def slide_sources(ctx: SlideContext, s: TalkSlide, dep: Dependency, extra: list[svg.SourcesSeries] = ()) -> Slide:
    curve = ctx.curve(dep.model.name, dep.source.name, dep.target)
    series = sources_series(curve) + list(extra)
    chart = svg.svg_img(svg.sources_chart(series, mark_at=len(dep.order) or None), "R² against the number of sources")
    body = (f'<div class="row"><div class="col chart">{chart}</div><div class="col side">'
            f"<p>“{escape(label(dep.target_name))}”: {sources_finding(curve)}</p>"
            "<p>Best subset: the best few sources, least squares. Relaxed Lasso: the Lasso's sources "
            "refitted. The Lasso also shrinks its weights, so it needs more sources for the same fit.</p>"
            "</div></div>")
    return Slide("sources", s.title or "How few sources does it take?", body, s.note)


def _counterpart_share(ctx: SlideContext, dep: Dependency) -> tuple[float, float] | None:
    """(share of categories whose strongest source is their counterpart, α) at the slide's α."""
    every = ctx.every_path(dep.model.name, dep.source.name)
    if every is None or dep.model.class_names != dep.source.class_names:
        return None
    a = every.nearest_alpha_index(dep.alpha)
    coef = every.at_alpha(a)
    reached = every.reached(a)
    cols, src, val = coef.column_index(), coef.sources, np.abs(coef.values)
    order = np.lexsort((-val, cols))
    first = np.ones(len(order), bool)
    first[1:] = cols[order][1:] != cols[order][:-1]
    strongest = np.full(coef.n_targets, -1)
    strongest[cols[order][first]] = src[order][first]
    hit = strongest[reached] == every.targets[reached]
    return (float(100 * hit.mean()) if hit.size else float("nan")), float(every.alphas[a])


def slide_between(ctx: SlideContext, s: TalkSlide, dep: Dependency) -> Slide:
    from engine.stages.pairing import open_pairing
    from engine.stages.theory import read_floor

    m = dep.metrics
    cards = card(fmt_r2(m.r2), f"R² from {len(dep.order)} of {dep.source.name}'s logits")
    share = _counterpart_share(ctx, dep)
    if share is not None and np.isfinite(share[0]):
        cards += card(f"{share[0]:.0f} %", "of categories: the strongest source is their own counterpart")
    floor = read_floor(ctx.cache, open_pairing(ctx.cache, dep.model.name, dep.source.name))
    floor_text = ("" if floor is None else
                  f"<p>Least squares on all {dep.source.k:,} logits: R² {fmt_r2(float(floor.r2[dep.target]))} — "
                  "no dependency between the two can beat that.</p>")
    body = (f'<p class="sub">{escape(dep.model.name)}\'s category predicted from <b>{escape(dep.source.name)}</b>\'s '
            "logits only</p>" + formula_html(dep)
            + f'<div class="row"><div class="col graph small">{star_html(ctx, dep, highlight_counterpart=True)}</div>'
              f'<div class="col side">{cards}<p>Around: <b>{escape(dep.source.name)}</b>\'s categories '
              f'(gold ring: the same category). Nothing told the solver which one corresponds.</p>{floor_text}'
              "</div></div>")
    return Slide("between", s.title or f"Between two models: “{label(dep.target_name)}”", body, s.note)


def slide_why(ctx: SlideContext, s: TalkSlide, dep: Dependency) -> Slide:
    from engine.stages.gramsets import load_gramset
    from engine.stages.pairing import open_pairing
    from engine.stages.theory import read_redundancy

    pairing = open_pairing(ctx.cache, dep.model.name, dep.model.name)
    theory = read_redundancy(ctx.cache, pairing)
    gs = load_gramset(ctx.cache, pairing, compute=False)
    cov = np.asarray(gs.rhs_columns([dep.target])[:, 0], dtype=np.float64) if gs is not None else None
    inside = None if cov is None else np.abs(cov) < dep.alpha
    # the band is the Lasso's: a best-subset slide shows the Lasso at the α with as many sources
    lasso_coef = dep.path.coef_vector(dep.target, dep.alpha_index) if dep.best_subset else dep.coef
    left = ""
    if cov is not None:
        zero_inside = int((inside & (lasso_coef == 0)).sum())
        left = (f'<div class="col chart half">{svg.svg_img(svg.covariance_chart(cov, lasso_coef, dep.alpha, height=330), "covariance against coefficient")}'
                f"<p>Sparse: a source whose covariance with “{escape(label(dep.target_name))}” is under α "
                f"(shaded) gets weight 0: {zero_inside:,} of the {int(inside.sum()):,} in the band here.</p></div>")
    if theory is None:
        right = ('<div class="col half">'
                 + run_first(f"python -m engine jobs submit theory --model {dep.model.name} --wait",
                              "the Gram's spectrum and redundancy") + "</div>")
        ready = False
    else:
        red = theory.redundancy
        k, n_exact = len(red.r), int(red.exact.sum())
        words = (f"{k:,} categories, but their logits span only <b>{red.rank}</b> dimensions: "
                 f"{n_exact:,} categories are exact combinations of the others."
                 if n_exact else
                 f"{k:,} categories; median redundancy r = {np.median(red.r):.1e}: each is nearly a "
                 "combination of the others.")
        right = (f'<div class="col chart half">{svg.svg_img(svg.spectrum_chart(theory.spectrum, red.rank if n_exact else None, height=330), "spectrum")}'
                 f"<p>Redundant: {words}</p></div>")
        ready = True
    body = f'<div class="row">{right}{left}</div>'
    return Slide("why", s.title or "Why: redundant logits, sparse weights", body, s.note, ready)


def slide_atlas(ctx: SlideContext, s: TalkSlide, model_name: str) -> Slide:
    from engine.apps.views import atlas_layout, pick_targets, recognised_categories
    from engine.core.analysis import dependency_graph
    from engine.stages.alpha_paths import path_spec
    from engine.stages.atlas import default_alpha_index, read_communities
    from engine.stages.pairing import open_pairing
    from engine.stages.solutions import load_top2

    title = s.title or "The atlas: every category leans on a few others"
    store = ctx.store(model_name)
    every = ctx.every_path(model_name, model_name)
    if every is None:
        body = run_first(f"python -m engine jobs submit paths --model {model_name} --wait",
                          "the atlas needs every category's dependencies")
        return Slide("atlas", title, body, s.note, False)
    a = default_alpha_index(every)
    coef = every.at_alpha(a)
    spec = path_spec(ctx.cache, open_pairing(ctx.cache, model_name, model_name))
    found = read_communities(ctx.cache, spec, a, COMMUNITY_TOP_K, ATLAS_MIN_COEF)
    community_of = {node: k for k, members in enumerate(found or []) for node in members}
    names = store.class_names
    glance = read_at_a_glance(names)
    if store.labels is not None:
        glance &= recognised_categories(store.labels, load_top2(ctx.cache, store).pred, store.k)
    candidates = np.flatnonzero(glance) if glance.any() else np.arange(store.k)
    reached = every.reached(a)
    candidates = [int(t) for t in candidates if every.has(int(t)) and reached[every.position(int(t))]]
    if found:  # targets from the largest communities, so the colours tell a story
        big = [set(m) for m in found[:3]]
        ranked = sorted(candidates, key=lambda t: next((i for i, m in enumerate(big) if t in m), 9))
        candidates = ranked
    targets = pick_targets(coef, every.targets, candidates, ATLAS_TARGETS * 4)
    if found:
        per = {}
        for t in targets:
            per.setdefault(community_of.get(t, -1), []).append(t)
        targets = [t for group in per.values() for t in group[:3]][:ATLAS_TARGETS]
    else:
        targets = targets[:ATLAS_TARGETS]
    graph = dependency_graph(coef, names, names, held=every.targets, targets=targets,
                             min_abs_coef=ATLAS_MIN_COEF, top_k=ATLAS_TOP_K)
    nodes = {n: ctx.node(store, int(n)) for n in graph.nodes}
    edges = [(u, v, float(d["coef"])) for u, v, d in graph.edges(data=True)]
    picture = svg.svg_img(svg.atlas_svg(nodes, atlas_layout(graph, targets, radius=300.0), edges, set(targets),
                                        community_of, width=720, height=560), "atlas")
    if found is None:
        side = run_first(f"python -m engine jobs submit atlas --model {model_name} --alpha {every.alphas[a]:.4g} --wait",
                          "the communities that colour the atlas")
        ready = False
    else:
        sizes = [len(m) for m in found if len(m) > 1]
        rows = "".join(
            f'<li><span class="swatch" style="background:{svg.COMMUNITY[k % len(svg.COMMUNITY)]}"></span>'
            f'{escape(" ".join(label(names[i]) for i in m[:8]))}</li>' for k, m in enumerate(found[:4]) if len(m) > 1)
        side = (card(f"{len(sizes):,}", f"communities of {store.k:,} categories at α = {every.alphas[a]:.3g}")
                + f'<ul class="communities">{rows}</ul>')
        ready = True
    body = (f'<div class="row"><div class="col graph">{picture}</div><div class="col side">{side}'
            f"<p>Inner ring: {len(targets)} categories; around them the {ATLAS_TOP_K} strongest sources of each. "
            "Border colour: community.</p></div></div>")
    return Slide("atlas", title, body, s.note, ready)


_APPLICATIONS = (
    ("newclasses", "New categories from old ones (§3.2)",
     "python -m engine jobs submit newclasses --wait", "≈ 3.5 min on 2 CPU cores"),
    ("regularizer", "A regulariser that cuts a dependency (§3.3)",
     "python -m engine jobs submit regularizer --wait", "≈ 2 min on 2 CPU cores"),
)


def _finished_report(cache: Cache, kind: str) -> dict | None:
    """The newest succeeded job's report of ``kind`` (None when there is none)."""
    if not cache.jobs_table_path.exists():
        return None
    from engine.jobs.manager import jobs_table
    from engine.jobs.reports import load_report

    for job in jobs_table(cache).list(limit=500):
        if job.kind == kind and job.state == "succeeded" and job.result_path:
            report = load_report(job.result_path)
            if report:
                return report
    return None


def _table_html(title: str, rows: list[dict]) -> str:
    cols = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{escape(_cell(row.get(c)))}</td>" for c in cols) + "</tr>" for row in rows)
    return f'<p class="caption">{escape(title)}</p><table class="report"><tr>{head}</tr>{body}</table>'


def _cell(value) -> str:
    if value is None:
        return "—"
    return f"{value:g}" if isinstance(value, float) else str(value)


def slide_applications(ctx: SlideContext, s: TalkSlide) -> Slide:
    from engine.jobs.reports import report_tables

    cols, ready = [], True
    for kind, heading, command, cost in _APPLICATIONS:
        report = _finished_report(ctx.cache, kind)
        if report is None:
            ready = False
            inner = run_first(command, f"its results are not in this cache yet ({cost})")
        else:
            tables = report_tables(report)
            inner = _table_html(*tables[0]) if tables else "<p>Finished; no table in its report.</p>"
        cols.append(f'<div class="col half"><h3>{escape(heading)}</h3>{inner}</div>')
    body = f'<div class="row">{"".join(cols)}</div>'
    return Slide("applications", s.title or "What dependencies are good for", body, s.note, ready)


# ----------------------------------------------------------------------------- the deck


def build_slides(cache: Cache, talk: Talk,
                 extra_sources: Callable[[Dependency], list[svg.SourcesSeries]] | None = None) -> list[Slide]:
    """Every slide of ``talk``, in order. ``extra_sources(dep)``: more curves of R² against
    the number of sources for the "how few sources" slide's dependency (``dep.model`` /
    ``dep.source`` / ``dep.target``), drawn after the best subset's, the relaxed Lasso's and
    the Lasso's (:func:`sources_series`)."""
    ctx = SlideContext(Cache.of(cache))
    talk = talk.resolved()
    first = next((s for s in talk.slides if s.kind == "dependency"), None)
    first_dep = None
    out = []
    for s in talk.slides:
        log.info("talk: slide %d (%s)", len(out) + 1, s.kind)
        if s.kind in ("question", "atlas", "applications"):
            if s.kind == "question":
                if first_dep is None:
                    first_dep = resolve_dependency(ctx, first or TalkSlide("dependency", model=s.model))
                out.append(slide_question(ctx, s, first_dep))
            elif s.kind == "atlas":
                out.append(slide_atlas(ctx, s, s.model))
            else:
                out.append(slide_applications(ctx, s))
            continue
        dep = resolve_dependency(ctx, s)
        if s.kind == "dependency" and first_dep is None:
            first_dep = dep
        builder = {"dependency": slide_dependency, "fit": slide_fit, "between": slide_between,
                   "why": slide_why}.get(s.kind)
        if s.kind == "sources":
            out.append(slide_sources(ctx, s, dep, list(extra_sources(dep)) if extra_sources else []))
        else:
            out.append(builder(ctx, s, dep))
    return out
