"""The CLI's ``dependencies`` report: sources, coefficients and Table 1 metrics per target.

Three methods (the JSON's ``"method"``): the paper's CovLasso at ``alpha`` (the default), the
relaxed Lasso (least squares on the CovLasso's support at ``alpha``) and the best dependency
with at most ``max_sources`` sources (:mod:`engine.core.bestsubset`, no α). Solves only the targets
asked for, so ``--target`` costs a few problems on the Gram, whatever the number of categories.
What the report shows comes from one call, :func:`engine.stages.dependencies.dependencies`;
this module only lays it out (the JSON of the CLI contract, the terminal table).
"""

from __future__ import annotations

from engine.stages.dependencies import METHODS, Dependencies, check_method, dependencies
from engine.storage.store import Cache

__all__ = ["METHODS", "check_method", "dependency_report", "format_report", "report_json"]


def dependency_report(cache: Cache | str, *args, **kwargs) -> dict:
    """The JSON of ``python -m engine dependencies`` (see README: the contract is stable), for
    the arguments of :func:`engine.stages.dependencies.dependencies` (model, source, alpha,
    targets, solver config, centred; ``max_sources``, ``relaxed``, ``subset_config``, ``tol``,
    ``device``), whose result it lays out (:func:`report_json`)."""
    return report_json(dependencies(cache, *args, **kwargs))


def report_json(deps: Dependencies) -> dict:
    """The report's JSON (the CLI contract: add fields, never rename or drop them)."""
    out = [{"target": t.target, "target_name": t.name,
            "sources": [{"index": j, "name": name, "coef": coef} for j, name, coef in t.sources],
            **t.metrics, **t.extra} for t in deps.targets]
    report = {"method": deps.method, "alpha": deps.alpha, "model": deps.model, "source": deps.source,
              "targets": out, "logits": "centred" if deps.centred else "raw"}
    if deps.m is not None:
        report["m"] = deps.m
    return report


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
