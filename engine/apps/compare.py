"""The Compare page's view: everything the page lays out, from one call (issue 22).

A category of model B predicted from model A's logits (between networks) — the same controls
and card as :mod:`engine.apps.explore`, over the pairing B ← A — and which sources that category
has inside each model, shared or not, with the overlap over every category and the
least-squares floor when a job made them. The page reads its request (the link's parameters,
the widgets' values) into a :class:`CompareRequest`, calls :func:`compare_view` once and lays
out the :class:`CompareView`; what the view reads or solves is kept in the caller's
:class:`~engine.apps.controls.Memo` (the same entries as Explore's for each model's own paths).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from engine.apps import cards, views
from engine.apps.controls import Memo, SourcesChart, default_model, fetch, sources_chart
from engine.apps.explore import (
    LASSO,
    MAX_GRAPH_SOURCES,
    AlphaControl,
    ExploreRequest,
    SourcesControl,
    alpha_control,
    resolve_method_logits,
    resolve_target,
    sources_control,
    view_card,
)
from engine.core.categories import category_ids
from engine.errors import EngineError
from engine.ingest import class_images as images
from engine.stages.alpha_paths import path_progress, path_spec, read_all_paths
from engine.stages.gramsets import check_pairable, load_gramset
from engine.stages.page_data import (
    centred_of,
    opening_target,
    target_alpha,
    target_curve,
    target_path,
    top2_of,
)
from engine.stages.pairing import open_pairing, stores_state
from engine.stages.sparsity import has_all_best_subsets, solve_best_subsets
from engine.stages.theory import read_floor


@dataclass(frozen=True)
class CompareRequest(ExploreRequest):
    """:class:`ExploreRequest` with model A (``source``: the model whose logits predict B's
    category; ``model`` is B)."""

    source: str | None = None


@dataclass(frozen=True)
class Within:
    """The category inside each model: its sources shared or not, the overlap over every category."""

    same_classes: bool = True  # False: the stores' categories differ (nothing to match)
    has_grams: bool = True
    share: pd.DataFrame | None = None
    counts: tuple[int, int, int] = (0, 0, 0)  # shared, only in A, only in B
    where: str = ""  # "with at most 3 sources … in each model" / "at α ≈ 2.5 (A) and 2.4 (B)"
    overlap: np.ndarray | None = None  # Jaccard overlap of every category (held ones), or None
    held: int = 0  # categories in the overlap
    jobs: tuple[tuple[str, str], ...] = ()  # (kind, model): the all-target jobs the overlap waits for
    target_short: str = ""


@dataclass(frozen=True)
class CompareView:
    """Everything the Compare page lays out (None where the page stops before it)."""

    names: list[str]
    messages: tuple[str, ...]
    model: str | None = None  # B
    source: str | None = None  # A
    error: str | None = None  # what went wrong reading the pair (shown under the store pickers)
    has_gram: bool = True  # the cross-Gram
    class_names: list[str] = field(default_factory=list)  # B's
    source_k: int = 0  # A's categories
    ids: list[str] | None = None
    k: int = 0
    target: int = 0
    target_options: list[int] | None = None
    no_match: bool = False
    method: str = cards.BEST
    centred: bool = False
    centred_allowed: bool = True
    alpha: AlphaControl | None = None
    no_alpha: float | None = None
    sources: SourcesControl | None = None
    card: cards.TargetCard | None = None
    line: str = ""
    sources_chart: SourcesChart | None = None
    images: dict = field(default_factory=dict)  # A's source index → PNG, B's target under "target"
    graph_labels: dict = field(default_factory=dict)
    target_short: str = ""
    floor: tuple | None = None  # (rank, Rel Err, R², Acc) of the target's least-squares fit, or None
    within: Within | None = None


def _pick(names: list[str], wanted: str | None, current: str | None, avoid: str | None, param: str,
          messages: list[str]) -> str:
    """A store: the link's (``wanted``), else the widget's, else the default (avoiding ``avoid``)."""
    model = current if current in names else default_model(names, avoid)
    if wanted is not None:
        if wanted in names:
            return wanted
        messages.append(f"The link names a store {wanted!r} that is not in this cache; showing "
                        f"{model!r}. Known stores: {', '.join(names)}.")
    return model


def compare_view(cache, request: CompareRequest, memo: Memo | None = None) -> CompareView:
    """The Compare page's view of ``request`` on ``cache``, the stages' results kept in ``memo``."""
    memo = Memo() if memo is None else memo
    state = stores_state(cache)
    names, link, messages = state.names, dict(request.link), []
    if len(names) < 2:
        return CompareView(names, ())
    model = _pick(names, link.get("model"), request.model, None, "model", messages)
    source = _pick(names, link.get("source"), request.source, model, "source", messages)
    if source == model:
        return CompareView(names, tuple(messages), model=model, source=source)
    try:
        return _compare(memo, state, model, source, link, request, messages)
    except EngineError as exc:
        return CompareView(names, tuple(messages), model=model, source=source, error=str(exc))


def _key(state, *models: str) -> tuple:
    return (str(state.cache.root), *((m, state.stamps[m]) for m in models))


def _compare(memo, state, model: str, source: str, link: dict, request: CompareRequest,
             messages: list[str]) -> CompareView:
    cache, names = state.cache, state.names
    key = _key(state, model, source)
    pairing = fetch(memo, "pairing", key, lambda: open_pairing(cache, model, source))
    store_b, store_a = pairing.model, pairing.source
    check_pairable(store_a, store_b)
    base = dict(names=names, model=model, source=source)
    gs = fetch(memo, "gram", key, lambda: load_gramset(cache, pairing, compute=False), keep_none=False)
    if gs is None:
        return CompareView(messages=tuple(messages), has_gram=False, **base)
    class_names = fetch(memo, "names", _key(state, model), lambda: store_b.class_names)
    source_names = fetch(memo, "names", _key(state, source), lambda: store_a.class_names)
    ids = category_ids(store_b.manifest)
    spec = fetch(memo, "spec", key, lambda: path_spec(cache, pairing))
    solved = path_progress(cache, spec).solved
    every_path = None if solved == 0 else fetch(memo, "all_paths", (*key, solved), lambda: read_all_paths(cache, spec))
    has_subsets = has_all_best_subsets(cache, pairing)
    target, options, no_match = resolve_target(link, request, class_names, ids, messages, lambda: opening_target(
        memo, cache, pairing, key, every_path, has_subsets, class_names))
    k = max(store_a.k, store_b.k)
    method, centred, allowed = resolve_method_logits(link, request, k, messages)
    path = _path(memo, cache, pairing, key, target, centred)
    curve = _curve(memo, cache, pairing, key, target, centred)
    cp = fetch(memo, "centred", key, lambda: centred_of(memo, cache, pairing, key)) if centred else None
    gs_shown, sides = (cp.gs, (cp.model, cp.source, cp.top2)) if centred else (gs, None)
    base.update(class_names=class_names, source_k=len(source_names), ids=ids, k=k, target=target,
                target_options=options, no_match=no_match, method=method, centred=centred, centred_allowed=allowed)
    alpha = sources = along = None
    tkey = (*key, int(target))
    sparsest = fetch(memo, "sparsest", (*tkey, centred), curve.sparsest_fit)
    if method == LASSO:
        along = fetch(memo, "alpha", (*tkey, centred), lambda: target_alpha(path, target))
        alpha = alpha_control(along, link, request.alpha, messages)
        if alpha is None:
            return CompareView(messages=tuple(messages), no_alpha=along.alpha_max, **base)
    else:
        sources = sources_control(curve, sparsest, link, request, messages)
    ckey = (*tkey, centred, method, None if sources is None else sources.value, None if alpha is None else alpha.index)
    top2 = lambda: fetch(memo, "top2", key, lambda: top2_of(memo, cache, pairing, key))  # noqa: E731  (the CovLasso's card on raw logits)
    card = fetch(memo, "card", ckey, lambda: view_card(pairing, top2, class_names, gs_shown, sides, target,
                                                    method, sources, alpha, along, curve, source_names))
    top = card.frame.head(MAX_GRAPH_SOURCES)
    kind_a = fetch(memo, "image_kind", _key(state, source), lambda: images.class_image_source(store_a.manifest,
                                                                                              source_names))
    kind_b = fetch(memo, "image_kind", _key(state, model), lambda: images.class_image_source(store_b.manifest,
                                                                                             class_names))
    pictures = images.class_image_pngs(store_a.manifest, source_names, top["index"], kind=kind_a)
    pictures["target"] = images.class_image_pngs(store_b.manifest, class_names, [target], kind=kind_b)[target]
    target_name = class_names[target]
    labels = {"target": views.short_name(target_name, 36), "legend": views.short_name(target_name, 40),
              **dict(zip((int(j) for j in top["index"]), views.short_names(top["name"], 24)))}
    floor = None
    if not centred:
        # the floor of these two stores never changes once a job made it (looked for until then)
        found = fetch(memo, "floor", key, lambda: read_floor(cache, pairing), keep_none=False)
        floor = None if found is None else (found.rank, float(found.rel_err[target]), float(found.r2[target]),
                                            float(found.acc[target]))
    within = _within(memo, state, model, source, class_names, source_names, target, centred, sources, alpha)
    return CompareView(messages=tuple(messages), alpha=alpha, sources=sources, card=card, line=card.line,
                       sources_chart=sources_chart(curve, card, sparsest), images=pictures, graph_labels=labels,
                       target_short=views.short_name(target_name), floor=floor, within=within, **base)


def _path(memo, cache, pairing, key, target: int, centred: bool):
    """The target's α path (:func:`engine.stages.page_data.target_path`), looked up in ``memo``
    here first: a run that finds it there does not enter the stages."""
    return fetch(memo, "cpath" if centred else "path", (*key, int(target)),
                 lambda: target_path(memo, cache, pairing, key, target, centred))


def _curve(memo, cache, pairing, key, target: int, centred: bool):
    """The target's sources curve (:func:`engine.stages.page_data.target_curve`), looked up in
    ``memo`` here first."""
    return fetch(memo, "ccurve" if centred else "curve", (*key, int(target)),
                 lambda: target_curve(memo, cache, pairing, key, target, centred))


def _within(memo, state, model_b: str, model_a: str, names_b, names_a, target: int, centred: bool, sources,
            alpha) -> Within:
    """The category inside each model (A's and B's own paths or best subsets, read or solved for
    that category alone), and the overlap over every category from the jobs' results."""
    if names_a != names_b:
        return Within(same_classes=False)
    cache, names = state.cache, names_b
    sides = []
    for model in (model_a, model_b):
        key = _key(state, model)
        pairing = fetch(memo, "pairing", key, lambda model=model: open_pairing(cache, model))
        gs = fetch(memo, "gram", key, lambda pairing=pairing: load_gramset(cache, pairing, compute=False),
                   keep_none=False)
        if gs is None:
            return Within(has_grams=False)
        sides.append((model, key, pairing))
    m = None if sources is None else sources.value
    if m is not None:  # best subsets with at most m sources inside each model
        vectors = []
        for _, key, pairing in sides:
            fit = _curve(memo, cache, pairing, key, target, centred).best[m - 1]
            vec = np.zeros(len(names))
            vec[fit.sources] = fit.coefs
            vectors.append(vec)
        where = f"with at most {m} sources (best subset) in each model"
    else:
        paths = [_path(memo, cache, pairing, key, target, centred) for _, key, pairing in sides]
        idx = [p.nearest_alpha_index(alpha.value, target) for p in paths]
        vectors = [p.coef_vector(target, i) for p, i in zip(paths, idx)]
        where = f"at α ≈ {paths[0].alphas[idx[0]]:.3g} ({model_a}) and {paths[1].alphas[idx[1]]:.3g} ({model_b})"
    if centred:
        where += ", centred logits"
    share = views.share_frame(vectors[0], vectors[1], names, model_a, model_b)
    counts = share["kind"].value_counts()
    overlap, held, jobs = None, 0, []
    if not centred:
        overlap, held, jobs = _overlap(memo, state, sides, m, alpha)
    return Within(share=share, counts=(int(counts.get("shared", 0)), int(counts.get(f"only {model_a}", 0)),
                                       int(counts.get(f"only {model_b}", 0))),
                  where=where, overlap=overlap, held=held, jobs=tuple(jobs), target_short=views.short_name(names[target]))


def _overlap(memo, state, sides, m, alpha):
    """(Jaccard overlap per category, categories held, the jobs it waits for): of the best
    subsets with at most ``m`` sources, or of the paths at (the grids' nearest to) α."""
    cache, jobs, every = state.cache, [], []
    for model, key, pairing in sides:
        if m is not None:
            found = fetch(memo, "subsets", key, lambda pairing=pairing: solve_best_subsets(cache, pairing)) \
                if has_all_best_subsets(cache, pairing) else None
            if found is None:
                jobs.append(("best-subsets", model))
        else:
            spec = fetch(memo, "spec", key, lambda pairing=pairing: path_spec(cache, pairing))
            solved = path_progress(cache, spec).solved
            found = None if solved == 0 else fetch(memo, "all_paths", (*key, solved),
                                                   lambda spec=spec: read_all_paths(cache, spec))
            if found is None or not found.complete:
                jobs.append(("paths", model))
        every.append((key, found))
    (key_a, a), (key_b, b) = every
    if a is None or b is None:
        return None, 0, jobs
    if m is not None:
        return views.overlap_by_target(a.at(m), b.at(m)), int(a.n_targets), jobs
    common = np.intersect1d(a.targets, b.targets)
    if common.size == 0:
        return None, 0, jobs
    ia, ib = a.nearest_alpha_index(alpha.value), b.nearest_alpha_index(alpha.value)
    sa = fetch(memo, "at_alpha", (*key_a, len(a.targets), ia), lambda: a.at_alpha(ia))
    sb = fetch(memo, "at_alpha", (*key_b, len(b.targets), ib), lambda: b.at_alpha(ib))
    pa, pb = np.searchsorted(a.targets, common), np.searchsorted(b.targets, common)
    reached = a.reached(ia)[pa] & b.reached(ib)[pb]
    return views.overlap_by_target(sa.select(pa), sb.select(pb))[reached], int(common.size), jobs
