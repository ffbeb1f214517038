"""The Explore page's view: everything the page lays out, from one call (issue 22).

The page reads what it is asked — the link's parameters that just arrived, the widgets' current
values — into an :class:`ExploreRequest`, calls :func:`explore_view` once, and lays out the
:class:`ExploreView` it returns: the request resolved (a wrong link falls back, with the
sentence that says so; defaults filled: the model, where the page opens, the recommended α or
number of sources), the options and labels the widgets need, the target card
(:mod:`engine.apps.cards`), the data of its charts, the class images and the exports. No
widget can disagree with the content: both come from the same resolved view.

What the view reads is kept in a :class:`Memo` the caller holds (the dashboard: one per cache,
in memory), keyed by the stores' stamps (their manifests' modification times, read once per
call): moving α or m re-reads nothing from disk, a re-imported store is read afresh. The
target's α path and sources curve are solved for that target alone the first time it is shown
(:mod:`engine.stages.alpha_paths`, :mod:`engine.stages.sparsity`; per-sample-centred logits:
:mod:`engine.stages.centred`, solved in memory).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from engine.apps import cards, views
from engine.apps.controls import (
    PICKER_ALL,
    PICKER_MATCHES,
    PREFERRED_MODELS,
    Memo,
    SourcesChart,
    alpha_digits,
    default_alpha,
    fetch,
    nearest_option,
    parse_alpha,
    parse_m,
    recommended_m,
    scatter_points,
    sources_chart,
)
from engine.core.analysis import covariance_vs_coef
from engine.core.categories import category_ids, find_category, search_categories
from engine.errors import EngineError
from engine.ingest import class_images as images
from engine.stages.centred import MAX_CENTRED_K
from engine.stages.page_data import PairingData, TargetAlpha, pairing_data, target_data
from engine.stages.pairing import PAPER_ALPHAS

BEST, LASSO = cards.BEST, cards.LASSO
METHODS = (BEST, LASSO)
RAW, CENTRED = "raw", "centred"
MAX_GRAPH_SOURCES = 16  # sources drawn in the star graph (the strongest)


@dataclass(frozen=True)
class ExploreRequest:
    """What the page is asked: ``link``, the link's parameters that just arrived (as text, as in
    the URL; they win over the widgets when valid), and the widgets' current values (None: not
    set yet; a value that no longer fits, e.g. an α of another target's grid, is mapped onto
    the new options). ``m_for``: the (model, source, target) the widgets' ``m`` was chosen for
    (a new target opens at its own recommended m)."""

    link: tuple[tuple[str, str], ...] = ()
    model: str | None = None
    target: int | None = None
    query: str = ""  # the picker's search box (above PICKER_ALL categories)
    method: str | None = None
    centred: bool | None = None
    alpha: float | None = None
    m: int | None = None
    m_for: tuple | None = None


@dataclass(frozen=True)
class AlphaControl:
    """The α slider: the target's α below its α_max (ascending), their labels, the value."""

    options: list[float]
    labels: list[str]  # "2.5 · paper", "0.81 ★ recommended"
    value: float
    index: int  # into the path's α grid
    amax: float
    recommended: float | None
    recommended_fit: str  # "R² 0.981, 3 sources"
    paper: float | None
    digits: int


@dataclass(frozen=True)
class SourcesControl:
    """The number of sources m (1 … top), ★ at ``recommended`` (``fits``: it fits)."""

    top: int
    recommended: int
    fits: bool
    value: int
    scope: tuple  # (model, source, target): what ``value`` was chosen for


@dataclass(frozen=True)
class CovLassoCharts:
    """Fig. 3 (covariance against coefficient) and the α path of the strongest sources."""

    scatter: pd.DataFrame  # covariance, coef, name
    scatter_total: int  # sources in all (the scatter may show fewer)
    screened: int  # sources with |C_tj| < α
    broken: int  # of them, non-zero anyway
    path: object  # views.path_frame's frames


@dataclass(frozen=True)
class EveryTarget:
    """The export of every target's dependency (from a job's result), or what it waits for."""

    label: str | None  # the download's label (None: the job has not made anything yet)
    file_name: str | None
    csv: Callable[[], str] | None  # built when asked
    complete: bool


@dataclass(frozen=True)
class ExploreView:
    """Everything the Explore page lays out (None where the page stops before it)."""

    names: list[str]  # the cache's stores
    messages: tuple[str, ...]  # what the link got wrong, in words
    model: str | None = None
    error: str | None = None  # what went wrong reading the model (the page shows it under the store picker)
    has_gram: bool = True
    class_names: list[str] = field(default_factory=list)
    ids: list[str] | None = None
    k: int = 0
    model_info: dict | None = None  # the store's registry model, for the §3.3 form
    target: int = 0
    target_options: list[int] | None = None  # None: every category
    no_match: bool = False  # the search box matched nothing
    method: str = BEST
    centred: bool = False
    centred_allowed: bool = True
    alpha: AlphaControl | None = None
    no_alpha: float | None = None  # CovLasso: the target's α_max when its path has no α with a dependency
    sources: SourcesControl | None = None
    card: cards.TargetCard | None = None
    line: str = ""  # the view line's words
    sources_chart: SourcesChart | None = None
    covlasso: CovLassoCharts | None = None
    images: dict = field(default_factory=dict)  # class index → PNG (or None), the target under "target"
    graph_labels: dict = field(default_factory=dict)  # the star graph's short labels: source index, "target", "legend"
    every: EveryTarget | None = None


# ----------------------------------------------------------------------------- the view


def explore_view(cache, request: ExploreRequest, memo: Memo | None = None) -> ExploreView:
    """The Explore page's view of ``request`` on ``cache`` (a :class:`Cache` or its folder), the
    stages' results kept in ``memo`` (None: a fresh one, nothing kept). The stages are entered
    twice: once for the pairing's data (:func:`engine.stages.page_data.pairing_data`), once for
    the shown target's (:func:`engine.stages.page_data.target_data`)."""
    memo = Memo() if memo is None else memo
    link, messages = dict(request.link), []
    data = pairing_data(cache, (link.get("model"), request.model, *PREFERRED_MODELS), memo)
    names, model = data.names, data.model
    if not names:
        return ExploreView(names, ())
    if "model" in link and link["model"] not in names:
        messages.append(f"The link names a store {link['model']!r} that is not in this cache; showing "
                        f"{model!r}. Known stores: {', '.join(names)}.")
    if data.error is not None:
        return ExploreView(names, tuple(messages), model=model, error=data.error)
    if not data.has_gram:
        return ExploreView(names, tuple(messages), model=model, has_gram=False)
    try:
        return _explore(memo, data, link, request, messages)
    except EngineError as exc:  # the page still offers the other stores
        return ExploreView(names, tuple(messages), model=model, error=str(exc))


def _explore(memo, data: PairingData, link: dict, request: ExploreRequest, messages: list[str]) -> ExploreView:
    names, model, key, pairing = data.names, data.model, data.key, data.pairing
    class_names, k, manifest = data.class_names, data.k, data.manifest
    ids = category_ids(manifest)
    target, options, no_match = resolve_target(link, request, class_names, ids, messages, lambda: data.opening)
    method, centred, allowed = resolve_method_logits(link, request, k, messages)

    shown_data = target_data(data, target, centred, memo, alpha=method == LASSO)
    tkey = (*key, int(target))
    curve, sparsest, cp = shown_data.curve, shown_data.sparsest, shown_data.centred_pairing
    gs_shown, sides = (cp.gs, (cp.model, cp.source, cp.top2)) if centred else (data.gs, None)
    base = dict(names=names, model=model, class_names=class_names, ids=ids, k=k,
                model_info=manifest.get("model_info"), target=target, target_options=options, no_match=no_match,
                method=method, centred=centred, centred_allowed=allowed)

    alpha = sources = None
    if method == LASSO:
        alpha = alpha_control(shown_data.alpha, link, request.alpha, messages)
        if alpha is None:
            return ExploreView(messages=tuple(messages), no_alpha=shown_data.alpha.alpha_max, **base)
    else:
        sources = sources_control(curve, sparsest, link, request, messages)

    ckey = (*tkey, centred, method, None if sources is None else sources.value, None if alpha is None else alpha.index)
    card = fetch(memo, "card", ckey, lambda: view_card(pairing, lambda: data.top2, class_names, gs_shown, sides, target,
                                                    method, sources, alpha, shown_data.alpha, curve))
    shown = card.frame.head(MAX_GRAPH_SOURCES)
    indices = [*shown["index"], target]
    kind = fetch(memo, "image_kind", key, lambda: images.class_image_source(manifest, class_names))
    pictures = images.class_image_pngs(manifest, class_names, indices, kind=kind)
    pictures["target"] = pictures.get(target)
    target_name = class_names[target]
    target_36, target_40 = (views.short_name(target_name, width) for width in (36, 40))
    labels = {"target": target_36, "legend": target_40,
              **dict(zip((int(j) for j in shown["index"]), views.short_names(shown["name"], 24)))}
    pframe = None if alpha is None else fetch(memo, "path_frame", (*tkey, centred), lambda: views.path_frame(
        shown_data.alpha.alphas, shown_data.alpha.coefs, class_names))
    covlasso = None if alpha is None else _covlasso_charts(shown_data.alpha, card, class_names, target, alpha, pframe)
    every = None if centred else _every_target(data, class_names, model, method, sources, alpha)
    return ExploreView(messages=tuple(messages), alpha=alpha, sources=sources, card=card, line=card.line,
                       sources_chart=sources_chart(curve, card, sparsest), covlasso=covlasso, images=pictures,
                       graph_labels=labels, every=every, **base)


def resolve_target(link: dict, request, class_names: list[str], ids, messages: list[str],
                   opening: Callable[[], int]) -> tuple[int, list[int] | None, bool]:
    """(target, the picker's options above PICKER_ALL categories (None: all), its search matched
    nothing): the link's target, else the picker's, else ``opening()``, where the page opens."""
    k = len(class_names)
    target = None
    if "target" in link:
        found = find_category(class_names, link["target"], ids)
        if isinstance(found, int):
            target = found
        else:
            messages.append(f"{found[:1].upper()}{found[1:]} — the link's target; showing another target.")
    if target is None:
        current = request.target
        target = current if isinstance(current, int) and 0 <= current < k else opening()
    options, no_match = None, False
    if k > PICKER_ALL:
        found = search_categories(class_names, request.query, ids, limit=PICKER_MATCHES)
        options = found if target in found else [target, *found]
        no_match = bool(request.query) and not found
    return target, options, no_match


def resolve_method_logits(link: dict, request, k: int, messages: list[str]) -> tuple[str, bool, bool]:
    """(method, centred, centred allowed: at most MAX_CENTRED_K categories): the link's, else the widgets'."""
    method = request.method if request.method in METHODS else BEST
    if "method" in link:
        if link["method"] in METHODS:
            method = link["method"]
        else:
            messages.append(f"method in the link must be one of {', '.join(METHODS)}; got {link['method']!r}. "
                            f"Showing {request.method or BEST!r}.")
    elif "alpha" in link:
        method = LASSO
    centred = request.centred
    if "logits" in link:
        if link["logits"] in (RAW, CENTRED):
            centred = link["logits"] == CENTRED
        else:
            messages.append(f"logits in the link must be {RAW} or {CENTRED}; got {link['logits']!r}. "
                            "Showing raw logits.")
            centred = False
    allowed = k <= MAX_CENTRED_K
    return method, bool(centred) if allowed and isinstance(centred, bool) else False, allowed


def nearest_index(grid: np.ndarray, alpha: float) -> int:
    """The index of the α of ``grid`` nearest to ``alpha`` (on a log scale), as
    :meth:`engine.stages.alpha_paths.DependencyPath.nearest_alpha_index`."""
    return int(np.argmin(np.abs(np.log(grid) - np.log(alpha))))


def alpha_control(along: TargetAlpha, link: dict, current, messages: list[str]) -> AlphaControl | None:
    """The α slider over the target's path ``along`` (:func:`engine.stages.page_data.target_alpha`)."""
    amax = along.alpha_max
    options = [float(a) for a in along.alphas[::-1] if a < amax]
    if not options:
        return None
    recommended = None
    if along.recommended >= 0:
        a = along.recommended_alpha
        recommended = a if a in options else None
    paper = next((a for a in PAPER_ALPHAS if a in options), None)
    value = None
    if "alpha" in link:
        wanted = parse_alpha(link["alpha"], messages)
        if wanted is not None:
            if wanted >= amax:
                messages.append(f"α = {wanted:g} in the link is at or above this target's α_max = {amax:.4g} "
                                "(every coefficient is zero there); showing the largest α below it.")
                wanted = options[-1]
            value = nearest_option(options, wanted)
    if value is None:
        value = current if isinstance(current, float) and current in options else \
            nearest_option(options, current) if isinstance(current, float) and current > 0 else \
            recommended or default_alpha(options, amax)
    digits = alpha_digits(options)
    labels = [f"{a:.{digits}g}" + (" ★ recommended" if a == recommended else (" · paper" if a == paper else ""))
              for a in options]
    fit = "" if recommended is None else f"R² {along.recommended_r2:.3f}, {along.recommended_sources} sources"
    return AlphaControl(options, labels, value, nearest_index(along.alphas, value), amax, recommended, fit,
                        paper, digits)


def sources_control(curve, sparsest, link: dict, request: ExploreRequest, messages: list[str]) -> SourcesControl:
    top = len(curve.m)
    recommended, fits = recommended_m(curve, sparsest)
    scope = (curve.model, curve.source, curve.target)
    wanted = parse_m(link["m"], top, messages) if "m" in link else None
    if wanted is not None:
        value = wanted
    elif request.m_for != scope or request.m not in range(1, top + 1):
        value = recommended
    else:
        value = request.m
    return SourcesControl(top, recommended, fits, int(value), scope)


def view_card(pairing, top2: Callable, class_names, gs, sides, target, method, sources, alpha, along, curve,
              source_names=None) -> cards.TargetCard:
    """The target card (``class_names``: the model's; ``source_names``: the source's, None: the
    same; ``top2()``: the model's raw top-2, asked for by the CovLasso's card on raw logits)."""
    covariance = np.asarray(gs.rhs_columns([target])[:, 0])
    names = (pairing.model.name, pairing.source.name, class_names[target], source_names or class_names)
    if method == LASSO:
        sides = sides or (pairing.model, pairing.source, top2())
        i = alpha.index
        return cards.covlasso_card_at(*names, target, float(along.alphas[i]), *along.columns[i], along.coefs[i],
                                      *sides, covariance)
    return cards.best_subset_card(*names, target, curve, sources.value, covariance)


def _covlasso_charts(along: TargetAlpha, card, class_names, target, alpha: AlphaControl, pframe) -> CovLassoCharts:
    fig3 = covariance_vs_coef(card.covariance, along.coefs[alpha.index], target)
    shown = scatter_points(fig3["covariance"], fig3["coef"])
    scatter = pd.DataFrame({"covariance": fig3["covariance"][shown], "coef": fig3["coef"][shown],
                            "name": [class_names[j] for j in fig3["source"][shown]]})
    inside = np.abs(fig3["covariance"]) < alpha.value
    return CovLassoCharts(scatter, len(fig3["source"]), int(inside.sum()), int((inside & (fig3["coef"] != 0)).sum()),
                          pframe)


def _every_target(data: PairingData, class_names, model, method, sources, alpha) -> EveryTarget:
    """Every target's dependencies at the α shown (from the ``paths`` job's result, complete or
    the targets solved so far) or with at most the m shown (the ``best-subsets`` job's)."""
    every_path = data.every_path
    if method == BEST:
        if not data.has_subsets:
            return EveryTarget(None, None, None, False)
        every = data.subsets
        m, targets = sources.value, np.arange(every.n_targets)
        return EveryTarget(f"Every target's best dependency with at most {m} sources (CSV)", f"{model}-all-m{m}.csv",
                           lambda: "".join(views.dependencies_csv(every.at(m), targets, class_names, class_names)),
                           True)
    if every_path is None:
        return EveryTarget(None, None, None, False)
    a = nearest_index(every_path.alphas, alpha.value)
    what = "Every target's" if data.every_complete else f"The {len(every_path.targets):,} targets solved so far:"
    return EveryTarget(f"{what} dependencies at α = {every_path.alphas[a]:.3g} (CSV)",
                       f"{model}-all-a{every_path.alphas[a]:.3g}.csv",
                       lambda: "".join(views.dependencies_csv(every_path.at_alpha(a), every_path.targets, class_names,
                                                              class_names)),
                       data.every_complete)
