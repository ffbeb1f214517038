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
from engine.apps.controls import PREFERRED_MODELS, Memo, SourcesChart, fetch, sources_chart
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
from engine.stages.page_data import OwnData, PairData, own_data, pair_data, target_data


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


def _link_messages(names: list[str], link: dict, data: PairData, messages: list[str]) -> None:
    """A message for each store the link names that is not in the cache (B's first, then A's)."""
    for param, shown in (("model", data.model), ("source", data.source)):
        wanted = link.get(param)
        if wanted is not None and wanted not in names:
            messages.append(f"The link names a store {wanted!r} that is not in this cache; showing "
                            f"{shown!r}. Known stores: {', '.join(names)}.")


def compare_view(cache, request: CompareRequest, memo: Memo | None = None) -> CompareView:
    """The Compare page's view of ``request`` on ``cache``, the stages' results kept in ``memo``.
    The stages are entered at most three times: the pair's data
    (:func:`engine.stages.page_data.pair_data`), the shown target's (``target_data``) and the
    target inside each model (``own_data``)."""
    memo = Memo() if memo is None else memo
    link, messages = dict(request.link), []
    data = pair_data(cache, (link.get("model"), request.model), (link.get("source"), request.source),
                     PREFERRED_MODELS, memo)
    names, model, source = data.names, data.model, data.source
    if len(names) < 2:
        return CompareView(names, ())
    _link_messages(names, link, data, messages)
    if source == model:
        return CompareView(names, tuple(messages), model=model, source=source)
    if data.error is not None:
        return CompareView(names, tuple(messages), model=model, source=source, error=data.error)
    if not data.has_gram:
        return CompareView(names, tuple(messages), model=model, source=source, has_gram=False)
    try:
        return _compare(memo, data, link, request, messages)
    except EngineError as exc:
        return CompareView(names, tuple(messages), model=model, source=source, error=str(exc))


def _compare(memo, data: PairData, link: dict, request: CompareRequest, messages: list[str]) -> CompareView:
    names, model, source, key, pairing = data.names, data.model, data.source, data.key, data.pairing
    class_names, source_names = data.class_names, data.source_names
    base = dict(names=names, model=model, source=source)
    ids = category_ids(data.manifest)
    target, options, no_match = resolve_target(link, request, class_names, ids, messages, lambda: data.opening)
    k = data.k
    method, centred, allowed = resolve_method_logits(link, request, k, messages)
    shown_data = target_data(data, target, centred, memo, alpha=method == LASSO)
    curve, sparsest, cp = shown_data.curve, shown_data.sparsest, shown_data.centred_pairing
    gs_shown, sides = (cp.gs, (cp.model, cp.source, cp.top2)) if centred else (data.gs, None)
    base.update(class_names=class_names, source_k=len(source_names), ids=ids, k=k, target=target,
                target_options=options, no_match=no_match, method=method, centred=centred, centred_allowed=allowed)
    alpha = sources = None
    along = shown_data.alpha
    tkey = (*key, int(target))
    if method == LASSO:
        alpha = alpha_control(along, link, request.alpha, messages)
        if alpha is None:
            return CompareView(messages=tuple(messages), no_alpha=along.alpha_max, **base)
    else:
        sources = sources_control(curve, sparsest, link, request, messages)
    ckey = (*tkey, centred, method, None if sources is None else sources.value, None if alpha is None else alpha.index)
    card = fetch(memo, "card", ckey, lambda: view_card(pairing, lambda: data.top2, class_names, gs_shown, sides, target,
                                                    method, sources, alpha, along, curve, source_names))
    top = card.frame.head(MAX_GRAPH_SOURCES)
    (_, key_a), (_, key_b) = data.own_keys
    kind_a = fetch(memo, "image_kind", key_a, lambda: images.class_image_source(data.source_manifest, source_names))
    kind_b = fetch(memo, "image_kind", key_b, lambda: images.class_image_source(data.manifest, class_names))
    pictures = images.class_image_pngs(data.source_manifest, source_names, top["index"], kind=kind_a)
    pictures["target"] = images.class_image_pngs(data.manifest, class_names, [target], kind=kind_b)[target]
    target_name = class_names[target]
    labels = {"target": views.short_name(target_name, 36), "legend": views.short_name(target_name, 40),
              **dict(zip((int(j) for j in top["index"]), views.short_names(top["name"], 24)))}
    floor = None
    if not centred and data.floor is not None:
        found = data.floor
        floor = (found.rank, float(found.rel_err[target]), float(found.r2[target]), float(found.acc[target]))
    m = None if sources is None else sources.value
    own = own_data(data, target, centred, m, None if alpha is None else alpha.value, memo)
    within = _within(own, model, source, class_names, target, centred, m)
    return CompareView(messages=tuple(messages), alpha=alpha, sources=sources, card=card, line=card.line,
                       sources_chart=sources_chart(curve, card, sparsest), images=pictures, graph_labels=labels,
                       target_short=views.short_name(target_name), floor=floor, within=within, **base)


def _within(own: OwnData, model_b: str, model_a: str, names, target: int, centred: bool, m: int | None) -> Within:
    """The category inside each model (A's and B's own sources, shared or not), and the overlap
    over every category from the jobs' results (:func:`engine.stages.page_data.own_data`)."""
    if not own.same_classes:
        return Within(same_classes=False)
    if not own.has_grams:
        return Within(has_grams=False)
    if m is not None:
        where = f"with at most {m} sources (best subset) in each model"
    else:
        where = f"at α ≈ {own.alphas[0]:.3g} ({model_a}) and {own.alphas[1]:.3g} ({model_b})"
    if centred:
        where += ", centred logits"
    share = views.share_frame(own.vectors[0], own.vectors[1], names, model_a, model_b)
    counts = share["kind"].value_counts()
    overlap = None
    if own.every is not None:
        overlap = views.overlap_by_target(*own.every)
        if own.reached is not None:
            overlap = overlap[own.reached]
    return Within(share=share, counts=(int(counts.get("shared", 0)), int(counts.get(f"only {model_a}", 0)),
                                       int(counts.get(f"only {model_b}", 0))),
                  where=where, overlap=overlap, held=own.held, jobs=own.jobs,
                  target_short=views.short_name(names[target]))
