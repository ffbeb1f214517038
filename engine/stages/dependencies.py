"""The dependencies stage: everything the CLI's report shows for the targets asked, in one call.

:func:`dependencies` opens the pairing, reads (or solves, for the targets asked alone) the cached
solution of one method — the paper's CovLasso at α, the relaxed Lasso on its support, or the
best dependency with at most ``m`` sources — and the Table 1 metrics of each target, and returns
them as plain data (:class:`Dependencies`): whoever lays them out (:mod:`engine.apps.report`)
never reaches below this stage. The solutions are the cached stages :mod:`engine.stages.solutions`
and :mod:`engine.stages.sparsity`; the metrics are :func:`engine.core.analysis.dependency_metrics`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from engine.core.analysis import dependency_metrics, sparse_fit
from engine.core.bestsubset import (
    DEFAULT_MAX_SOURCES,
    MAX_SOURCES_LIMIT,
    SubsetConfig,
    check_max_sources,
)
from engine.core.categories import resolve_targets
from engine.core.centring import CentredLogits, centred_gramset, centred_top2
from engine.core.covlasso import SolverConfig, check_alpha
from engine.errors import InvalidInputError
from engine.stages.gramsets import load_gramset, verify_gramset_of
from engine.stages.pairing import open_pairing
from engine.stages.solutions import load_top2, solve_dependencies, solve_gramset
from engine.storage.store import Cache

METHODS = ("covlasso", "relaxed", "best-subset")


@dataclass(frozen=True)
class TargetDependency:
    """One target's dependency: its sources strongest first (index, name, coefficient), its
    Table 1 metrics (``DependencyMetrics.as_json()``) and the method's own fields
    (``duality_gap`` | ``n_sources``, ``r2_by_m`` | ``lasso_n_sources``, ``lasso_r2``)."""

    target: int
    name: str
    sources: tuple[tuple[int, str, float], ...]
    metrics: dict
    extra: dict


@dataclass(frozen=True)
class Dependencies:
    """The dependencies of the targets asked, by one method, as plain data."""

    method: str
    alpha: float | None
    m: int | None
    model: str
    source: str
    centred: bool
    targets: tuple[TargetDependency, ...]


def check_method(alpha, max_sources, relaxed: bool) -> tuple[str, float | None, int | None]:
    """(method, α, m) from the command's options, or one line saying what to give instead.
    Checked before anything is read or written."""
    if max_sources is not None:
        if alpha is not None or relaxed:
            given = f"--alpha {alpha}" if alpha is not None else "--relaxed"
            raise InvalidInputError(
                f"--sources {max_sources} (the best dependency with at most that many sources) takes no α; "
                f"got {given} as well. Drop {given.split()[0]}, or drop --sources for the paper's CovLasso "
                "at --alpha (add --relaxed to refit its support)")
        return "best-subset", None, check_max_sources(max_sources)
    if alpha is None:
        raise InvalidInputError(
            "give --alpha A (the paper's CovLasso, e.g. --alpha 2.5) or --sources M (the best dependency "
            f"with at most M sources, 1 to {MAX_SOURCES_LIMIT}, e.g. --sources 4)"
            + ("; --relaxed refits the CovLasso's support at --alpha" if relaxed else ""))
    return ("relaxed" if relaxed else "covlasso"), check_alpha(alpha), None


def dependencies(
    cache: Cache | str,
    model: str,
    source: str | None,
    alpha: float | None,
    targets: list[str | int] | None = None,
    config: SolverConfig | None = None,
    centred: bool = False,
    *,
    max_sources: int | None = None,
    relaxed: bool = False,
    subset_config: SubsetConfig | None = None,
    tol: float | None = None,
    device: str | None = None,
) -> Dependencies:
    """The dependencies of ``targets`` (indices or class names; None: every target) of
    ``model`` from ``source``'s logits (None: ``model`` itself).

    ``alpha``: the paper's CovLasso (``relaxed``: least squares on its support);
    ``max_sources``: the best dependency with at most that many sources (no ``alpha``).
    ``centred``: every logit minus its sample's mean logit, in the solve and in the metrics
    (:mod:`engine.core.centring`; solved from the raw Grams, not cached). ``config``, or
    ``tol`` / ``device``: the solver's settings. ``cache``: a :class:`Cache` or its folder.
    The method is checked before anything is read."""
    cache = Cache.of(cache)  # a handle: nothing is read before the method is checked
    method, alpha, M = check_method(alpha, max_sources, relaxed)
    if config is None:
        defaults = SolverConfig()
        config = SolverConfig(tol=defaults.tol if tol is None else tol, device=device or defaults.device)
    with ThreadPoolExecutor(1) as pool:  # the Gram's hash is checked while the stores are read
        early = pool.submit(verify_gramset_of, cache, model, source)
        pairing = open_pairing(cache, model, source)
        early.result()
    wanted = resolve_targets(pairing.model, targets)
    subset = None if not targets else wanted
    m, s = pairing.model, pairing.source
    top2 = load_top2(cache, m)
    target_logits, source_logits = m.logits, s.logits
    gs = None
    if centred:
        gs = _centred_gramset(cache, pairing)
        target_logits = CentredLogits(m.logits)
        source_logits = target_logits if pairing.within else CentredLogits(s.logits)
        top2 = centred_top2(top2, target_logits.means)
    columns = _solve(cache, pairing, gs, method, alpha, M, config, subset_config, subset, wanted)
    out = []
    target_names, source_names = m.class_names, s.class_names  # one copy each, not one per name
    labels = m.labels
    for i, t in enumerate(wanted):
        col, extra = columns(i, t)
        idx = np.flatnonzero(col)
        idx = idx[np.argsort(-np.abs(col[idx]), kind="stable")]
        metrics = dependency_metrics(target_logits, source_logits, labels, t, col, top2)
        out.append(TargetDependency(
            target=t, name=target_names[t],
            sources=tuple((int(j), source_names[j], float(col[j])) for j in idx),
            metrics=metrics.as_json(),  # abs_err, rel_err, acc, ori_acc, pos_acc, ori_pos_acc, n_pos, r2
            extra=extra,
        ))
    return Dependencies(method=method, alpha=alpha, m=M, model=m.name, source=s.name, centred=centred,
                        targets=tuple(out))


def _centred_gramset(cache: Cache, pairing):
    raw = load_gramset(cache, pairing)
    own = None if pairing.within else load_gramset(cache, open_pairing(cache, pairing.model.name))
    return centred_gramset(raw, own)


def _solve(cache, pairing, gs, method, alpha, M, config, subset_config, subset, wanted):
    """A function (i, t) -> (dense coefficients, extra JSON fields) for the i-th target asked."""
    from engine.stages.sparsity import (
        best_subsets_of,
        r2_of_residuals,
        relaxed_fits,
        solve_best_subsets,
    )

    pick = (lambda i, t: i) if subset is not None else (lambda i, t: t)
    if method == "best-subset":
        if gs is None:
            res = solve_best_subsets(cache, pairing, M, subset, subset_config)
            gs = load_gramset(cache, pairing)
        else:
            res = best_subsets_of(gs, max(M, DEFAULT_MAX_SOURCES), subset_config, subset).up_to(M)
        r2 = r2_of_residuals(gs, wanted if subset is not None else np.arange(pairing.model.k), res.residual)

        def best(i, t):
            src, val = res.column(pick(i, t), M)
            col = np.zeros(pairing.source.k)
            col[src] = val
            curve = [None if np.isnan(x) else float(x) for x in r2[pick(i, t)]]
            return col, {"n_sources": int(len(src)), "r2_by_m": curve}

        return best
    cfg = config or SolverConfig()
    res = solve_dependencies(cache, pairing, alpha, cfg, subset) if gs is None else \
        solve_gramset(gs, alpha, cfg, subset)
    if method == "covlasso":
        return lambda i, t: (res.column(pick(i, t)), {"duality_gap": float(res.duality_gap[pick(i, t)])})
    gs = gs if gs is not None else load_gramset(cache, pairing)
    held = np.asarray(wanted if subset is not None else np.arange(pairing.model.k))
    fits = relaxed_fits(gs, res.sparse, held)
    lasso_r2 = sparse_fit(gs, res.sparse, held)[1]

    def refit(i, t):
        j = pick(i, t)
        return fits.coef.dense_column(j), {"lasso_n_sources": int(fits.lasso_sources[j]),
                                            "lasso_r2": None if np.isnan(lasso_r2[j]) else float(lasso_r2[j])}

    return refit
