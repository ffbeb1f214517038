"""What a page shows of a pairing and of one of its targets, in two calls (issue 22).

The Explore view (:mod:`engine.apps.explore`) enters the stages twice per run:
:func:`pairing_data` (the stores and their stamps, the pairing, its Gram set, the path spec and
the targets the ``paths`` job has solved, the best subsets when that job ran, the model's top-2
and the target the page opens on) and :func:`target_data` (the target's α path and sources
curve, raw or on per-sample-centred logits). What they read or solve is kept in the caller's
:class:`~engine.stages.memo.Memo`, keyed by the stores' stamps (read once per call): a second
call with the same stores reads nothing from disk, a re-imported store is read afresh.

The single-purpose helpers (:func:`target_path`, :func:`target_curve`, :func:`centred_of`,
:func:`top2_of`, :func:`opening_target`) are the same memo entries, one at a time.

The Compare view (:mod:`engine.apps.compare`) enters the stages three times per run:
:func:`pair_data` (two models' pairing, B's categories from A's logits), :func:`target_data`
over it, and :func:`own_data` (the target inside each model, and the overlap's inputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from engine.core.categories import read_at_a_glance, recognised_categories
from engine.errors import EngineError
from engine.stages.alpha_paths import path_progress, path_spec, read_all_paths, target_paths
from engine.stages.centred import centred_curve, centred_pairing, centred_path
from engine.stages.gramsets import check_pairable, load_gram_hint, load_gramset
from engine.stages.memo import Memo, fetch
from engine.stages.pairing import open_pairing, stores_state
from engine.stages.recommend import recommend
from engine.stages.solutions import load_top2
from engine.stages.sparsity import (
    curve_sources,
    has_all_best_subsets,
    opening_sparse_example,
    solve_best_subsets,
    sources_curve,
)
from engine.stages.theory import read_floor


@dataclass(frozen=True)
class PairingData:
    """A model's pairing with itself, as a page needs it before it knows the target.

    ``model`` is None when the cache has no store; ``error``: what went wrong reading it (the
    fields below it are then empty); ``has_gram`` False: its Gram set is not computed yet."""

    cache: object  # the Cache
    names: list[str]  # the cache's stores
    model: str | None
    error: str | None = None
    has_gram: bool = True
    key: tuple = ()  # (cache folder, (model, stamp)): the memo's key of this pairing
    pairing: object = None  # stages.pairing.Pairing
    gs: object = None  # its Gram set
    class_names: list[str] = field(default_factory=list)
    k: int = 0
    manifest: dict = field(default_factory=dict)
    every_path: object = None  # the paths job's result so far (None: nothing solved)
    has_subsets: bool = False  # the best-subsets job's result exists
    subsets: object = None  # that result (None without it)
    top2: object = None  # the model's top-2 (raw logits)
    every_complete: bool = False  # every target's path is solved
    opening: int = 0  # the target the page opens on


@dataclass(frozen=True)
class TargetData:
    """One target's data: its α path and sources curve (raw or centred logits), the fewest
    sources that fit (``sparsest``) and, on centred logits, the centred pairing."""

    target: int
    centred: bool
    path: object  # stages.alpha_paths: the target's α path
    curve: object  # stages.sparsity.SourcesCurve
    sparsest: int | None
    centred_pairing: object = None  # stages.centred.CentredPairing (None on raw logits)
    alpha: TargetAlpha | None = None  # the target's CovLasso path as plain arrays (asked for: the α slider)


@dataclass(frozen=True)
class TargetAlpha:
    """One target's CovLasso path as plain arrays (what the α slider, the card, Fig. 3 and the
    α-path chart read): its α (descending: a prefix of the path's grid, so an index into either
    is the same), α_max, the solution at each α (its sources and coefficients, and the dense
    (A', P) coefficients), and the α recommended along it (-1 / NaN: none)."""

    alphas: np.ndarray
    alpha_max: float
    columns: tuple  # per α: (sources, coefficients)
    coefs: np.ndarray  # (A', P)
    recommended: int
    recommended_alpha: float
    recommended_r2: float
    recommended_sources: int


def pairing_data(cache, candidates: Sequence[str | None], memo: Memo | None = None) -> PairingData:
    """The pairing of the first of ``candidates`` that is a store of ``cache`` (a :class:`Cache`
    or its folder; none: the first store) with itself, and what a page shows of it before its
    target is known. Errors reading the store come back in ``error``."""
    memo = Memo() if memo is None else memo
    state = stores_state(cache)  # the stores and their stamps: one look per call
    cache, names = state.cache, state.names
    if not names:
        return PairingData(cache, names, None)
    model = next((name for name in candidates if name in names), names[0])
    try:
        return _pairing_data(memo, state, model)
    except EngineError as exc:  # the page still offers the other stores
        return PairingData(cache, names, model, error=str(exc))


def _pairing_data(memo: Memo, state, model: str) -> PairingData:
    cache, names = state.cache, state.names
    key = (str(cache.root), (model, state.stamps[model]))
    pairing = fetch(memo, "pairing", key, lambda: open_pairing(cache, model))
    store = pairing.model
    gs = fetch(memo, "gram", key, lambda: load_gramset(cache, pairing, compute=False), keep_none=False)
    if gs is None:
        return PairingData(cache, names, model, has_gram=False)
    class_names = fetch(memo, "names", key, lambda: store.class_names)
    spec = fetch(memo, "spec", key, lambda: path_spec(cache, pairing))
    solved = path_progress(cache, spec).solved  # file checks: the paths job may be running
    every_path = None if solved == 0 else fetch(memo, "all_paths", (*key, solved), lambda: read_all_paths(cache, spec))
    has_subsets = has_all_best_subsets(cache, pairing)  # a file test: the best-subsets job may have run since
    subsets = fetch(memo, "subsets", key, lambda: solve_best_subsets(cache, pairing)) if has_subsets else None
    opening = opening_target(memo, cache, pairing, key, every_path, has_subsets, class_names)
    return PairingData(cache, names, model, key=key, pairing=pairing, gs=gs, class_names=class_names, k=store.k,
                       manifest=store.manifest, every_path=every_path,
                       every_complete=every_path is not None and every_path.complete, has_subsets=has_subsets, subsets=subsets,
                       top2=top2_of(memo, cache, pairing, key), opening=opening)


def target_data(data: PairingData, target: int, centred: bool, memo: Memo | None = None,
                alpha: bool = False) -> TargetData:
    """``target``'s α path and sources curve in ``data``'s pairing (``centred``: on
    per-sample-centred logits, solved in memory), and with ``alpha`` its CovLasso path as plain
    arrays (:func:`target_alpha`), kept in ``memo``."""
    memo = Memo() if memo is None else memo
    cache, pairing, key = data.cache, data.pairing, data.key
    path = target_path(memo, cache, pairing, key, target, centred)
    curve = target_curve(memo, cache, pairing, key, target, centred)
    sparsest = fetch(memo, "sparsest", (*key, int(target), centred), curve.sparsest_fit)
    cp = centred_of(memo, cache, pairing, key) if centred else None
    along = None if not alpha else fetch(memo, "alpha", (*key, int(target), centred), lambda: target_alpha(path, target))
    return TargetData(int(target), bool(centred), path, curve, sparsest, cp, along)


def target_alpha(path, target: int) -> TargetAlpha:
    """``target``'s CovLasso path (:class:`engine.stages.alpha_paths.DependencyPath` holding it)
    as plain arrays, with the α recommended along it."""
    grid = path.alpha_indices(target)
    columns = tuple(tuple(np.asarray(a) for a in path.coef_at(target, int(a))) for a in grid)
    coefs = path.target_path(target) if len(grid) else np.zeros((0, path.n_sources))
    rec = recommend(path.select([target]))
    at = -1 if rec is None else int(rec.alpha_index[target])
    found = at >= 0
    return TargetAlpha(path.alphas[grid], path.alpha_max(target), columns, coefs, at,
                       float(path.alphas[at]) if found else float("nan"),
                       float(rec.r2[target]) if found else float("nan"),
                       int(rec.n_sources[target]) if found else 0)


def target_path(memo, cache, pairing, key, target: int, centred: bool):
    """The target's α path of ``pairing`` (raw: the stage's, cached on disk; centred: solved
    here), kept in ``memo``."""
    tkey = (*key, int(target))
    if centred:
        return fetch(memo, "cpath", tkey, lambda: centred_path(cache, pairing, centred_of(memo, cache, pairing, key),
                                                               target))
    spec = fetch(memo, "spec", key, lambda: path_spec(cache, pairing))
    return fetch(memo, "path", tkey, lambda: target_paths(cache, spec, [target]))


def target_curve(memo, cache, pairing, key, target: int, centred: bool):
    """The target's sources curve of ``pairing`` (best subsets, the Lasso, the relaxed Lasso),
    kept in ``memo``."""
    tkey = (*key, int(target))
    if centred:
        path = target_path(memo, cache, pairing, key, target, True)
        return fetch(memo, "ccurve", tkey, lambda: centred_curve(pairing, centred_of(memo, cache, pairing, key), path,
                                                                 target))
    return fetch(memo, "curve", tkey, lambda: sources_curve(
        cache, pairing, target, max_sources=curve_sources(pairing.source.k, pairing.within)))


def centred_of(memo, cache, pairing, key):
    """The centred pairing of ``pairing``, kept in ``memo``."""
    return fetch(memo, "centred", key, lambda: centred_pairing(cache, pairing, top2_of(memo, cache, pairing, key)))


def top2_of(memo, cache, pairing, key):
    """The model's top-2 of ``pairing``, kept in ``memo``."""
    return fetch(memo, "top2", key, lambda: load_top2(cache, pairing.model))


def default_target(class_names: list[str], rec=None, hint=None, recognised: np.ndarray | None = None) -> int:
    """The clear example of the pairing (few sources, a close fit), categories a person reads at
    a glance first — and among them those the model recognises (``recognised``,
    :func:`engine.core.categories.recognised_categories`), when any — among the targets whose
    paths the ``paths`` job has solved (``rec``); before that, the Gram's guess (``hint``: a
    target two sources fit and one does not); without either, category 0 (a page never solves
    every target to choose where to open)."""
    glance = read_at_a_glance(class_names)
    if recognised is not None and (glance & recognised).any():
        glance = glance & recognised
    elif recognised is not None and not glance.any():
        glance = recognised
    example = None if rec is None else rec.clear_example(prefer=glance)
    if example is None and hint is not None:
        example = hint.clear_example(prefer=glance)
    return 0 if example is None else example


def opening_target(memo, cache, pairing, key, every_path, has_subsets, class_names) -> int:
    """Where a page opens: a category the model recognises (read at a glance first) that 2 … 4
    sources fit at R² ≥ 0.95 with top-1 kept, from the ``best-subsets`` job's result when it
    exists; else the clear example of the ``paths`` job's result; else the Gram's guess."""
    store = pairing.model
    recognised = fetch(memo, "recognised", key, lambda: recognised_categories(
        store.labels, top2_of(memo, cache, pairing, key).pred, store.k))
    glance = read_at_a_glance(class_names)
    prefer = glance & recognised if (glance & recognised).any() else (recognised if not glance.any() else glance)
    if has_subsets:
        found = fetch(memo, "sparse_example", (*key, prefer.tobytes()),
                      lambda: _sparse_example(memo, cache, pairing, key, prefer))
        if found is not None:
            return found[0]
    rec = None if every_path is None else fetch(memo, "recommendation", (*key, len(every_path.targets)),
                                                lambda: recommend(every_path))
    hint = fetch(memo, "hint", key, lambda: load_gram_hint(cache, pairing.source, None if pairing.within else store),
                 keep_none=False)
    return default_target(class_names, rec, hint, recognised)


def _sparse_example(memo, cache, pairing, key, prefer):
    result = fetch(memo, "subsets", key, lambda: solve_best_subsets(cache, pairing))
    gs = fetch(memo, "gram", key, lambda: load_gramset(cache, pairing, compute=False), keep_none=False)
    return None if gs is None else opening_sparse_example(cache, pairing, result, gs, prefer)


@dataclass(frozen=True)
class PairData:
    """Two models' pairing (``model`` B's categories from ``source`` A's logits), as the Compare
    page needs it before it knows the target. ``model``/``source`` None: fewer than two stores;
    equal: nothing to pair; ``error``: what went wrong reading them (the fields below it are then
    empty); ``has_gram`` False: the cross-Gram is not computed yet."""

    cache: object
    names: list[str]
    model: str | None
    source: str | None
    error: str | None = None
    has_gram: bool = True
    key: tuple = ()  # (cache folder, (B, stamp), (A, stamp))
    own_keys: tuple = ()  # ((A, A's key), (B, B's key)): each model's own pairing's key
    pairing: object = None
    gs: object = None
    class_names: list[str] = field(default_factory=list)  # B's
    source_names: list[str] = field(default_factory=list)  # A's
    manifest: dict = field(default_factory=dict)  # B's
    source_manifest: dict = field(default_factory=dict)  # A's
    k: int = 0  # the larger of the two models' categories
    top2: object = None  # B's top-2 (raw logits)
    opening: int = 0
    floor: object = None  # stages.theory: the pair's least-squares floor, once a job made it (None: not yet)


@dataclass(frozen=True)
class OwnData:
    """A category inside each of the two models (A's, then B's own pairing): its coefficient
    vectors, at m sources (best subset) or at the α nearest a value, and, on raw logits, every
    category's sources from the all-target jobs (to overlap) and the jobs they wait for."""

    same_classes: bool = True
    has_grams: bool = True
    vectors: tuple = ()  # A's, B's coefficient vector of the target
    alphas: tuple = ()  # the α of each vector (the CovLasso view)
    every: tuple | None = None  # (A's, B's) core.sparse.SparseColumns over the categories held (None: no overlap)
    reached: np.ndarray | None = None  # which of them reach α in both models (None: all; best subsets)
    held: int = 0
    jobs: tuple = ()  # (kind, model) the overlap waits for


def _first(names: list[str], wanted: Sequence[str | None], preferred: Sequence[str], avoid: str | None) -> str:
    found = next((name for name in wanted if name in names), None)
    if found is not None:
        return found
    return next((name for name in (*preferred, *names) if name in names and name != avoid), names[0])


def pair_data(cache, models: Sequence[str | None], sources: Sequence[str | None], preferred: Sequence[str] = (),
              memo: Memo | None = None) -> PairData:
    """The pairing of model B (the first of ``models`` that is a store of ``cache``, else the
    first of ``preferred``, else the first store) from model A (likewise from ``sources``, the
    default avoiding B) and what the Compare page shows of it before its target is known. Errors
    reading the stores come back in ``error``."""
    memo = Memo() if memo is None else memo
    state = stores_state(cache)
    cache, names = state.cache, state.names
    if len(names) < 2:
        return PairData(cache, names, None, None)
    model = _first(names, models, preferred, None)
    source = _first(names, sources, preferred, model)
    if source == model:
        return PairData(cache, names, model, source)
    try:
        return _pair_data(memo, state, model, source)
    except EngineError as exc:
        return PairData(cache, names, model, source, error=str(exc))


def _pair_data(memo: Memo, state, model: str, source: str) -> PairData:
    cache, names, root = state.cache, state.names, str(state.cache.root)
    key = (root, (model, state.stamps[model]), (source, state.stamps[source]))
    own = ((source, (root, (source, state.stamps[source]))), (model, (root, (model, state.stamps[model]))))
    pairing = fetch(memo, "pairing", key, lambda: open_pairing(cache, model, source))
    store_b, store_a = pairing.model, pairing.source
    check_pairable(store_a, store_b)
    gs = fetch(memo, "gram", key, lambda: load_gramset(cache, pairing, compute=False), keep_none=False)
    if gs is None:
        return PairData(cache, names, model, source, has_gram=False)
    class_names = fetch(memo, "names", own[1][1], lambda: store_b.class_names)
    source_names = fetch(memo, "names", own[0][1], lambda: store_a.class_names)
    spec = fetch(memo, "spec", key, lambda: path_spec(cache, pairing))
    solved = path_progress(cache, spec).solved
    every_path = None if solved == 0 else fetch(memo, "all_paths", (*key, solved), lambda: read_all_paths(cache, spec))
    has_subsets = has_all_best_subsets(cache, pairing)
    opening = opening_target(memo, cache, pairing, key, every_path, has_subsets, class_names)
    # the floor of these two stores never changes once a job made it (looked for until then)
    floor = fetch(memo, "floor", key, lambda: read_floor(cache, pairing), keep_none=False)
    return PairData(cache, names, model, source, key=key, own_keys=own, pairing=pairing, gs=gs,
                    class_names=class_names, source_names=source_names, manifest=store_b.manifest,
                    source_manifest=store_a.manifest, k=max(store_a.k, store_b.k),
                    top2=top2_of(memo, cache, pairing, key), opening=opening, floor=floor)


def own_data(data: PairData, target: int, centred: bool, m: int | None, alpha: float | None,
             memo: Memo | None = None) -> OwnData:
    """``target`` inside each model of ``data`` (A's and B's own paths or best subsets, read or
    solved for that category alone): with at most ``m`` sources, else at the α nearest
    ``alpha``; on raw logits, every category's sources from the jobs' results, to overlap."""
    memo = Memo() if memo is None else memo
    if data.source_names != data.class_names:
        return OwnData(same_classes=False)
    cache, sides = data.cache, []
    for model, key in data.own_keys:
        pairing = fetch(memo, "pairing", key, lambda model=model: open_pairing(cache, model))
        gs = fetch(memo, "gram", key, lambda pairing=pairing: load_gramset(cache, pairing, compute=False),
                   keep_none=False)
        if gs is None:
            return OwnData(has_grams=False)
        sides.append((model, key, pairing))
    alphas: tuple = ()
    if m is not None:  # best subsets with at most m sources inside each model
        vectors = []
        for _, key, pairing in sides:
            fit = target_curve(memo, cache, pairing, key, target, centred).best[m - 1]
            vec = np.zeros(len(data.class_names))
            vec[fit.sources] = fit.coefs
            vectors.append(vec)
    else:
        paths = [target_path(memo, cache, pairing, key, target, centred) for _, key, pairing in sides]
        idx = [p.nearest_alpha_index(alpha, target) for p in paths]
        vectors = [p.coef_vector(target, i) for p, i in zip(paths, idx)]
        alphas = tuple(p.alphas[i] for p, i in zip(paths, idx))
    if centred:
        return OwnData(vectors=tuple(vectors), alphas=alphas)
    every, reached, held, jobs = _every(memo, cache, sides, m, alpha)
    return OwnData(vectors=tuple(vectors), alphas=alphas, every=every, reached=reached, held=held, jobs=tuple(jobs))


def _every(memo, cache, sides, m, alpha):
    """((A's, B's) sources of every category held, which reach α in both, categories held, the
    jobs it waits for): the best subsets with at most ``m`` sources, or the paths at (the grids'
    nearest to) α."""
    jobs, every = [], []
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
        return None, None, 0, jobs
    if m is not None:
        return (a.at(m), b.at(m)), None, int(a.n_targets), jobs
    common = np.intersect1d(a.targets, b.targets)
    if common.size == 0:
        return None, None, 0, jobs
    ia, ib = a.nearest_alpha_index(alpha), b.nearest_alpha_index(alpha)
    sa = fetch(memo, "at_alpha", (*key_a, len(a.targets), ia), lambda: a.at_alpha(ia))
    sb = fetch(memo, "at_alpha", (*key_b, len(b.targets), ib), lambda: b.at_alpha(ib))
    pa, pb = np.searchsorted(a.targets, common), np.searchsorted(b.targets, common)
    reached = a.reached(ia)[pa] & b.reached(ib)[pb]
    return (sa.select(pa), sb.select(pb)), reached, int(common.size), jobs
