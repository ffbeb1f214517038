"""The CLI's ``dependencies`` report: sources, coefficients and Table 1 metrics per target.

Three methods (the JSON's ``"method"``): the paper's CovLasso at ``alpha`` (the default), the
relaxed Lasso (least squares on the CovLasso's support at ``alpha``) and the best dependency
with at most ``max_sources`` sources (:mod:`engine.core.bestsubset`, no α). Solves only the targets
asked for, so ``--target`` costs a few problems on the Gram, whatever the number of categories.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from engine.core.analysis import dependency_metrics
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


def dependency_report(
    cache: Cache,
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
) -> dict:
    """The JSON of ``python -m engine dependencies`` (see README: the contract is stable).

    ``max_sources``: the best dependency with at most that many sources (no ``alpha``);
    ``relaxed``: least squares on the CovLasso's support at ``alpha``. ``centred``: every
    logit minus its sample's mean logit, in the solve and in the metrics
    (:mod:`engine.core.centring`; solved from the raw Grams, not cached); the default is the
    paper's raw setting."""
    method, alpha, M = check_method(alpha, max_sources, relaxed)
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
    for i, t in enumerate(wanted):
        col, extra = columns(i, t)
        idx = np.flatnonzero(col)
        idx = idx[np.argsort(-np.abs(col[idx]), kind="stable")]
        metrics = dependency_metrics(target_logits, source_logits, m.labels, t, col, top2)
        out.append(
            {
                "target": t,
                "target_name": target_names[t],
                "sources": [{"index": int(j), "name": source_names[j], "coef": float(col[j])} for j in idx],
                **metrics.as_json(),  # abs_err, rel_err, acc, ori_acc, pos_acc, ori_pos_acc, n_pos, r2
                **extra,
            }
        )
    report = {"method": method, "alpha": alpha, "model": m.name, "source": s.name, "targets": out,
              "logits": "centred" if centred else "raw"}
    if M is not None:
        report["m"] = M
    return report


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
    lasso_r2 = _lasso_r2(gs, res.sparse, held)

    def refit(i, t):
        j = pick(i, t)
        return fits.coef.dense_column(j), {"lasso_n_sources": int(fits.lasso_sources[j]),
                                            "lasso_r2": None if np.isnan(lasso_r2[j]) else float(lasso_r2[j])}

    return refit


def _lasso_r2(gs, coef, targets) -> np.ndarray:
    from engine.apps.views import sparse_fit

    return sparse_fit(gs, coef, targets)[1]


# ----------------------------------------------------------------------------- the terminal


def format_report(report: dict, digits: int = 3, max_terms: int = 6) -> str:
    """The report as a terminal table: one line per target, its formula strongest source
    first, R², Acc and Pos Acc against the original (in parentheses)."""
    from engine.apps.views import short_name

    def pct(x) -> str:
        return "  –  " if x is None else f"{x:5.1f}"

    if report["method"] == "best-subset":
        how = f"best subset with at most {report['m']} sources"
    elif report["method"] == "relaxed":
        how = f"relaxed Lasso: least squares on the CovLasso's support at α = {report['alpha']:g}"
    else:
        how = f"CovLasso at α = {report['alpha']:g} (the paper's)"
    names = [short_name(t["target_name"], 18) for t in report["targets"]]
    width = max([len(n) for n in names] + [6])
    lines = [f"{report['model']} ← {report['source']}: {how} ({report['logits']} logits)",
             f"{'target':>{width}}      R²   Acc (orig)  Pos Acc (orig)  formula"]
    for t, name in zip(report["targets"], names):
        terms = [f"{'−' if s['coef'] < 0 else '+'} {abs(s['coef']):.{digits}f}·{short_name(s['name'], 18)}"
                 for s in t["sources"][:max_terms]]
        formula = " ".join(terms).lstrip("+ ") if terms else "0 (no source)"
        if formula.startswith("− "):
            formula = "−" + formula[2:]
        if len(t["sources"]) > max_terms:
            formula += f" … ({len(t['sources']) - max_terms} more)"
        r2 = "   –  " if t.get("r2") is None else f"{t['r2']:6.3f}"
        lines.append(f"{name:>{width}}  {r2}  {pct(t['acc'])} ({pct(t['ori_acc'])})  {pct(t['pos_acc'])} "
                     f"({pct(t['ori_pos_acc'])})    {name} ≈ {formula}")
    return "\n".join(lines)
