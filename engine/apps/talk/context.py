"""What every slide is built from: the resolved dependency, the context that caches stores,
images and stages for one deck, and the small HTML pieces the slides share (formula, cards,
star graph, "run this first")."""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

import numpy as np

from engine.apps.talk import svg
from engine.apps.talk.talkfile import TalkSlide
from engine.apps.views import read_at_a_glance, short_name
from engine.core.analysis import DependencyMetrics, dependency_metrics
from engine.core.categories import category_ids, find_category
from engine.errors import NotFoundError
from engine.ingest.class_images import class_image_png, class_image_source
from engine.storage.store import Cache, LogitStore

STAR_SOURCES = 10  # sources drawn around the target
FORMULA_TERMS = 4  # terms written out in the formula
ATLAS_TARGETS, ATLAS_TOP_K, ATLAS_MIN_COEF = 9, 3, 0.05
COMMUNITY_TOP_K = 4  # the communities the demo and the Atlas page compute (top-k 4, |θ| ≥ 0.05)


@dataclass(frozen=True)
class Slide:
    kind: str
    title: str
    html: str  # the slide's body (inside <section class="slide">, after its <h2>)
    note: str = ""  # speaker note
    ready: bool = True  # False: the slide asks for a job to be run before the talk


@dataclass
class Dependency:
    """One resolved dependency: a target of ``model`` from ``source``'s logits at one α."""

    model: LogitStore
    source: LogitStore
    target: int
    alpha: float
    alpha_index: int
    path: object  # engine.stages.alpha_paths.DependencyPath of this target
    coef: np.ndarray  # (P,)
    order: np.ndarray  # sources, strongest first
    metrics: DependencyMetrics
    max_sources: int | None = None  # a best subset with at most this many sources (None: the Lasso at α)

    @property
    def best_subset(self) -> bool:
        return self.max_sources is not None

    @property
    def within(self) -> bool:
        return self.model.name == self.source.name

    @property
    def target_name(self) -> str:
        return self.model.class_names[self.target]


@dataclass
class SlideContext:
    cache: Cache
    stores: dict = field(default_factory=dict)
    images: dict = field(default_factory=dict)
    all_paths: dict = field(default_factory=dict)
    curves: dict = field(default_factory=dict)

    def curve(self, model: str, source: str, target: int):
        """The target's :class:`engine.stages.sparsity.SourcesCurve` (best subsets m = 1 … 8, the
        relaxed Lasso and the Lasso along α; cached in the cache, solved the first time)."""
        key = (model, source, int(target))
        if key not in self.curves:
            from engine.stages.pairing import open_pairing
            from engine.stages.sparsity import sources_curve

            self.curves[key] = sources_curve(self.cache, open_pairing(self.cache, model, source), int(target))
        return self.curves[key]

    def store(self, name: str) -> LogitStore:
        if name not in self.stores:
            self.stores[name] = self.cache.load_store(name)
        return self.stores[name]

    def image(self, store: LogitStore, index: int, size: int = 96) -> str | None:
        key = (store.name, int(index), size)
        if key not in self.images:
            kind = class_image_source(store.manifest, store.class_names)
            png = None if kind is None else class_image_png(store.manifest, store.class_names, int(index), size, kind)
            self.images[key] = svg.data_uri(png)
        return self.images[key]

    def node(self, store: LogitStore, index: int, border: str = svg.INK) -> svg.Node:
        return svg.Node(label(store.class_names[index]), self.image(store, index), border)

    def every_path(self, model: str, source: str):
        """Every target's path of the pairing when the paths job (or the demo) made it, else None."""
        key = (model, source)
        if key not in self.all_paths:
            from engine.stages.alpha_paths import path_progress, path_spec, read_all_paths
            from engine.stages.pairing import open_pairing

            spec = path_spec(self.cache, open_pairing(self.cache, model, source))
            self.all_paths[key] = read_all_paths(self.cache, spec) if path_progress(self.cache, spec).complete else None
        return self.all_paths[key]


def label(name: str) -> str:
    return short_name(name, 24)


# ----------------------------------------------------------------------------- resolving


def resolve_dependency(ctx: SlideContext, slide: TalkSlide) -> Dependency:
    """The slide's target, α (or number of sources) and coefficients, its Table 1 metrics.
    ``sources = m``: the best subset with at most m sources (its α: the Lasso path's largest
    with at most that many, for the slides that show the Lasso's picture beside it)."""
    from engine.stages.alpha_paths import path_spec, target_paths
    from engine.stages.pairing import open_pairing
    from engine.stages.recommend import recommended_index
    from engine.stages.solutions import load_top2

    model = ctx.store(slide.model)
    source = ctx.store(slide.source or slide.model) if slide.kind == "between" else model
    pairing = open_pairing(ctx.cache, model.name, source.name)
    if slide.target:
        found = find_category(model.class_names, slide.target, category_ids(model.manifest))
        if isinstance(found, str):
            raise NotFoundError(f"talk slide {slide.kind!r}: target {slide.target!r} of {model.name}: {found}; "
                                "fix the talk file's `target`")
        target = found
    else:
        target = _clear_example(ctx, model.name, source.name)
    path = target_paths(ctx.cache, path_spec(ctx.cache, pairing), [target])
    n_alphas = len(path.alpha_indices(target))
    if slide.n_sources or slide.sources:
        sizes = path.support_sizes[path.position(target), :n_alphas]
        fits = np.flatnonzero((sizes > 0) & (sizes <= (slide.n_sources or slide.sources)))
        a = int(fits[-1]) if fits.size else 0
    elif slide.alpha:
        a = path.nearest_alpha_index(slide.alpha, target)
    else:
        a = recommended_index(path.r2_of(target))
        a = 0 if a is None else a
    if slide.sources:
        fit = ctx.curve(model.name, source.name, target).best[slide.sources - 1]
        coef = np.zeros(source.k)
        coef[fit.sources] = fit.coefs
        return Dependency(model, source, target, float(path.alphas[a]), a, path, coef,
                          np.asarray(fit.sources, dtype=np.int64), fit.metrics, slide.sources)
    coef = path.coef_vector(target, a)
    nz = np.flatnonzero(coef)
    order = nz[np.argsort(-np.abs(coef[nz]), kind="stable")]
    metrics = dependency_metrics(model.logits, source.logits, model.labels, target, coef,
                                 load_top2(ctx.cache, model))
    return Dependency(model, source, target, float(path.alphas[a]), a, path, coef, order, metrics)


def _clear_example(ctx: SlideContext, model: str, source: str) -> int:
    from engine.stages.recommend import recommend

    path = ctx.every_path(model, source)
    found = None if path is None else recommend(path).clear_example(
        prefer=read_at_a_glance(ctx.store(model).class_names))
    return 0 if found is None else found


# ----------------------------------------------------------------------------- pieces


def fmt_r2(r2: float) -> str:
    return "n/a" if not np.isfinite(r2) else f"{r2:.3f}"


def card(value: str, caption: str, cls: str = "") -> str:
    return f'<div class="card {cls}"><div class="value">{escape(value)}</div><div class="caption">{caption}</div></div>'


def img(uri: str | None, alt: str, cls: str = "glyph") -> str:
    if uri is None:
        return f'<span class="{cls} noimg">{escape(alt)}</span>'
    return f'<img class="{cls}" src="{uri}" alt="{escape(alt)}" title="{escape(alt)}">'


def formula_html(dep: Dependency, terms: int = FORMULA_TERMS) -> str:
    """``Í ≈ 0.27·Ó + 0.23·Ĭ + …`` in big type, terms in the sign's colour."""
    names = dep.source.class_names
    parts = [f'<span class="term-target">{escape(label(dep.target_name))}</span> <span class="op">≈</span>']
    for n, j in enumerate(dep.order[:terms]):
        c = dep.coef[j]
        sign = "−" if c < 0 else ("+" if n else "")
        cls = "neg" if c < 0 else "pos"
        parts.append(f'<span class="{cls}">{sign}{"&#8202;" if sign else ""}{abs(c):.2f}·{escape(label(names[j]))}</span>')
    if len(dep.order) > terms:
        parts.append(f'<span class="more">+ {len(dep.order) - terms} more</span>')
    if not len(dep.order):
        parts.append('<span class="more">0 (no source at this α)</span>')
    return f'<div class="formula">{" ".join(parts)}</div>'


def star_html(ctx: SlideContext, dep: Dependency, highlight_counterpart: bool = False) -> str:
    shown = dep.order[:STAR_SOURCES]
    sources = [(ctx.node(dep.source, j), float(dep.coef[j])) for j in shown]
    ring = None
    if highlight_counterpart and dep.model.class_names == dep.source.class_names:
        ring = {k for k, j in enumerate(shown) if j == dep.target}
    return svg.svg_img(svg.star_svg(ctx.node(dep.model, dep.target), sources, highlight=ring,
                                    more=max(len(dep.order) - len(shown), 0)),
                       f"star graph of {dep.target_name}")


def run_first(command: str, why: str) -> str:
    return (f'<div class="todo"><div class="caption">Run this before the talk — {why}:</div>'
            f'<code>{escape(command)}</code></div>')


def model_line(store: LogitStore, top1: float | None) -> str:
    acc = "" if top1 is None else f", top-1 {top1:.1f} %"
    return f"<b>{escape(store.name)}</b>: {store.k:,} categories, {store.n:,} test images{acc}"


def top1_of(ctx: SlideContext, store: LogitStore) -> float | None:
    from engine.stages.solutions import load_top2

    if store.labels is None:
        return None
    return float(100.0 * np.mean(load_top2(ctx.cache, store).pred == store.labels))
