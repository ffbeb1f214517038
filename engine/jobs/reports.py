"""A job's ``report.json`` as titled tables (rows of plain dicts), for the CLI and the dashboard.

Tables 2 and 4 of the paper for ``newclasses``, Table 3 for ``regularizer``. Pure
formatting: the numbers are the report's own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

Table = tuple[str, list[dict[str, Any]]]


def load_report(path: str | Path | None) -> dict[str, Any] | None:
    if not path or not Path(path).exists():
        return None
    return json.loads(Path(path).read_text())


def _r(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


def _newclasses_tables(report: dict) -> list[Table]:
    metrics, delta = report["metrics"], report.get("improvement", {})
    n_base, n_new = report["n_base"], report["n_new"]
    cols = [("acc_all", "all classes (%)"), ("acc_within_base", f"within {n_base} base (%)"),
            ("acc_within_new", f"within {n_new} new (%)")]
    rows = []
    for name, label in (("baseline", "Baseline (all classes)"), ("ours", "Ours (W · f_base)")):
        if name in metrics:
            rows.append({"method": label, **{t: _r(metrics[name].get(k)) for k, t in cols}})
    if delta:
        rows.append({"method": "Improvement", **{t: _r(delta.get(k)) for k, t in cols}})
    tables = [(f"{n_base} → {n_new}: accuracy (Tables 2 and 4)", rows)]
    binary = [(name, metrics[name]["binary"]) for name in ("baseline", "ours")
              if "binary" in metrics.get(name, {})]
    if binary:
        tables.append(("One new class: binary test", [
            {"method": name, "pairs": b.get("pairs"), "binary acc (%)": _r(b.get("binary_acc")),
             "pair ranking acc (%)": _r(b.get("pair_acc"))} for name, b in binary]))
    return tables


def _short(name: str) -> str:
    """A glyph class ("M LATIN CAPITAL LETTER M") by its character; other names in full."""
    head = str(name).split(" ", 1)[0]
    return head if len(head) == 1 else str(name)


def _pm(stat: dict | None, digits: int = 2, scale: float = 1.0) -> str | None:
    """'mean ± sd' of a summary ({'mean', 'sd', 'n'}), or the mean alone from one seed."""
    if not stat:
        return None
    mean, sd = scale * stat["mean"], scale * stat["sd"]
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if stat.get("n", 1) > 1 else f"{mean:.{digits}f}"


def _regularizer_tables(report: dict) -> list[Table]:
    labels = {"before": "Original model", "control": "Fine-tuned, β = 0 (baseline)",
              "after": f"Fine-tuned, β = {report['config']['beta']:g} (ours)"}
    rows = []
    for name in ("before", "control", "after"):
        row = report["metrics"].get(name)
        if row is None:
            continue
        out: dict[str, Any] = {"model": labels[name], "top-1 (%)": _r(row["top1"])}
        for p in row["pairs"]:
            tag = f"{_short(p.get('target_name', p['target']))} ← {_short(p.get('source_name', p['source']))}"
            out[f"θ {tag}"] = _r(p["coef"], 4)
            out[f"C {tag}"] = _r(p["cov"], 3)
        if "ood_aupr" in row:
            out["OOD AUPR (%)"] = _r(row["ood_aupr"])
        rows.append(out)
    tables = [(f"Dependency regulariser, α = {report['config']['alpha']:g} (Table 3)", rows)]
    choice = report.get("pair_choice")
    if choice:
        def pick(label: str, d: dict) -> dict:
            return {"dependency": label, "target ← source": f"{d['target_name']} ← {d['source_name']}",
                    "θ": _r(d["coef"], 4), "peculiarity": _r(d["peculiarity"], 3)}

        what = (f"peculiarity by {choice['measure']}, peculiar at ≥ {choice['min_peculiarity']:g}"
                if choice.get("min_peculiarity") is not None else f"peculiarity: {choice['measure']}")
        tables.append((f"The pair cut: the strongest peculiar dependency ({what})",
                       [pick(f"cut (#{choice['rank_among_all']} of {choice['n_dependencies']} by |θ|)",
                             choice["chosen"]),
                        pick("strongest of all (not cut)", choice["strongest_of_all"])]
                       + [pick("next peculiar", d) for d in choice.get("next_peculiar", [])[:3]]))
    sweep = report.get("sweep") or []
    if sweep and (len(sweep) > 2 or sweep[0]["top1"]["n"] > 1):
        n = max(r["top1"]["n"] for r in sweep)
        tables.append((f"β sweep: mean ± sd over {n} seed{'s' * (n > 1)}; differences against the "
                       "control of the same seed", [{
                           "β": r["beta"], "top-1 (%)": _pm(r["top1"]), "Δ top-1 (pt)": _pm(r.get("top1_vs_control")),
                           "θ (% of before)": _pm(r["pairs"][0]["coef_fraction"], 1, 100) if r["pairs"] else None,
                           "OOD AUPR (%)": _pm(r.get("ood_aupr")), "Δ OOD AUPR (pt)": _pm(r.get("ood_aupr_vs_control")),
                       } for r in sweep]))
    return tables


def sweep_rows(report: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Long-form rows of a regulariser job's β sweep, for the trade-off chart: top-1 and OOD
    AUPR against the control of the same seed (``axis`` 'delta', pt), θ of the first pair as %
    of before (``axis`` 'theta'); ``value`` is the absolute figure as text."""
    if not report or report.get("kind") != "regularizer":
        return []
    out = []
    for r in report.get("sweep") or []:
        stats = [("top-1 vs control (pt)", "delta", r.get("top1_vs_control"), 1.0, r["top1"]),
                 ("OOD AUPR vs control (pt)", "delta", r.get("ood_aupr_vs_control"), 1.0, r.get("ood_aupr"))]
        if r["pairs"]:
            f = r["pairs"][0]["coef_fraction"]
            stats.append(("θ of the cut pair (% of before)", "theta", f, 100.0, r["pairs"][0]["coef"]))
        out += [{"beta": r["beta"], "metric": name, "axis": axis, "mean": scale * s["mean"], "sd": scale * s["sd"],
                 "value": _pm(absolute, 4 if axis == "theta" else 2), "seeds": s["n"]}
                for name, axis, s, scale, absolute in stats if s]
    return out


# the paper's Table 2 (mean of five runs): accuracy over all classes, ours − baseline (pt)
_TABLE2 = {100: (-0.44, -0.004), 50: (-0.02, 0.088), 1: (-0.01, 0.07)}


def _newclasses_claim(report: dict) -> list[str]:
    """What §3.2 claims against what this run measured (all classes, ours − baseline)."""
    delta = (report.get("improvement") or {}).get("acc_all")
    if delta is None:
        return []
    n_new, n_base = report["n_new"], report["n_base"]
    share = n_new / (n_new + n_base)
    paper_new = min(_TABLE2, key=lambda n: abs(n / 1000 - share))
    r50, swin = _TABLE2[paper_new]
    verdict = "as close as the paper's" if delta >= min(r50, swin) - 0.1 else f"{abs(delta - r50):.2f} pt further than its ResNet-50"
    return [f"The paper (Table 2, {1000 - paper_new} → {paper_new}, mean of five runs): ours − baseline "
            f"{r50:+.2f} pt (ResNet-50), {swin:+.3f} pt (Swin-T) over all classes — 'barely loses accuracy'. "
            f"This run ({n_base} → {n_new}): {delta:+.2f} pt, {verdict}."]


def report_notes(report: dict[str, Any] | None) -> list[str]:
    """Plain sentences a report states beside its tables (the verdict, the paper's claim)."""
    if not report:
        return []
    if report.get("kind") == "newclasses":
        return _newclasses_claim(report)
    return list(report.get("verdict") or [])


def report_tables(report: dict[str, Any] | None) -> list[Table]:
    """Titled tables of a job report (empty for kinds without tables)."""
    if not report:
        return []
    kind = report.get("kind")
    if kind == "newclasses":
        return _newclasses_tables(report)
    if kind == "regularizer":
        return _regularizer_tables(report)
    if kind == "emergence":
        return _emergence_tables(report)
    return []


def _emergence_tables(report: dict) -> list[Table]:
    cols = ("top1", "effective_rank", "fit_4", "fit_6", "median_r2_4", "median_r2_6", "redundancy_median")
    rows = [{"categories": r["categories"], "epoch": r["epoch"], **{c: _r(r.get(c), 4) for c in cols}}
            for r in report.get("runs", [])]
    return [("Emergence: every checkpoint (fractions in 0…1)", rows)]


def report_stores(report: dict[str, Any] | None) -> list[str]:
    """Names of the logit stores a job created (open them in any dashboard page)."""
    if not report:
        return []
    stores = report.get("stores") or {}
    return list(stores.values()) if isinstance(stores, dict) else list(stores)


# which of a kind's stores to put side by side: (targets' store, sources' store)
_PAIRINGS = {"newclasses": ("ours", "baseline"), "regularizer": ("after", "control")}


def report_pairing(report: dict[str, Any] | None) -> tuple[str, str] | None:
    """(store, source store) whose comparison shows what the job changed, when both exist:
    §3.2's new model against the baseline, §3.3's regularised model against its control."""
    if not report or report.get("kind") not in _PAIRINGS:
        return None
    stores = report.get("stores") or {}
    names = [stores.get(k) for k in _PAIRINGS[report["kind"]]] if isinstance(stores, dict) else []
    return (names[0], names[1]) if names and all(names) else None


def markdown_tables(report: dict[str, Any] | None) -> str:
    """The report's tables as Markdown (for a terminal, an issue, the docs)."""
    out = []
    for title, rows in report_tables(report):
        cols = list(dict.fromkeys(k for row in rows for k in row))
        out += [f"**{title}**", "", "| " + " | ".join(cols) + " |",
                "|" + "|".join("---" if i == 0 else "---:" for i in range(len(cols))) + "|"]
        out += ["| " + " | ".join("" if row.get(c) is None else str(row.get(c)) for c in cols) + " |"
                for row in rows]
        out.append("")
    out += [f"- {note}" for note in report_notes(report)]
    return "\n".join(out)
