"""What the dashboard shows, as pure functions: tables, graph data, summaries (the classes'
pictures, which read fonts and image files, are :mod:`engine.ingest.class_images`).

Arrays in, plain Python / pandas / networkx out. Nothing here imports Streamlit, draws
widgets or solves anything: solutions come from :class:`engine.stages.alpha_paths.DependencyPath`.
Views over many targets take :class:`~engine.core.sparse.SparseColumns` (never a P × T matrix:
at 21,843 categories one is 3.8 GB) and exports are generated block by block.
"""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pandas as pd

from engine.core.analysis import DependencyMetrics, Redundancy
from engine.core.analysis import (
    sparse_fit as sparse_fit,  # the pages' name for it (moved to the core)
)
from engine.core.categories import glyph_name_mask, is_glyph_name
from engine.core.categories import (
    read_at_a_glance as read_at_a_glance,  # where pages open (re-exported)
)
from engine.core.categories import recognised_categories as recognised_categories
from engine.core.sparse import SparseColumns

# ----------------------------------------------------------------------------- one target


def dependency_frame(
    sources: np.ndarray, coefs: np.ndarray, source_names: list[str], rhs_col: np.ndarray | None = None
) -> pd.DataFrame:
    """One target's dependency, strongest first: index, name, coefficient (and C_tj)."""
    order = np.argsort(-np.abs(coefs), kind="stable")
    idx = np.asarray(sources)[order].astype(int)
    frame = pd.DataFrame(
        {
            "index": idx,
            "name": [source_names[j] for j in idx],
            "coef": np.asarray(coefs, dtype=float)[order],
        }
    )
    if rhs_col is not None:
        frame["covariance"] = np.asarray(rhs_col, dtype=float)[idx]
    return frame


def dependency_formula(target_name: str, frame: pd.DataFrame, digits: int = 3, max_terms: int = 8) -> str:
    """``O ≈ 0.36·"0" + 0.19·"C" …`` (the paper's Eq. 4 style) for captions and Markdown."""
    if frame.empty:
        return f"{short_name(target_name)} has no dependency at this α (θ = 0)"
    terms = []
    target_short, *shorts = short_names([target_name, *frame["name"].iloc[:max_terms]])
    for n, (short, coef) in enumerate(zip(shorts, frame["coef"])):
        sign = "−" if coef < 0 else "+"
        text = f"{abs(coef):.{digits}f}·{short}"
        if n == 0:
            terms.append(text if coef > 0 else f"−{text}")
        else:
            terms.append(f"{sign} {text}")
    if len(frame) > max_terms:
        terms.append(f"… ({len(frame) - max_terms} more)")
    return f"{target_short} ≈ " + " ".join(terms)


def metrics_markdown(
    model: str, source: str, target_name: str, alpha: float | None, metrics: DependencyMetrics, formula: str,
    method: str = "covlasso", m: int | None = None,
) -> str:
    """The Table 1 card as a Markdown document (the same rows as the paper's Table 1); the
    heading names the method (``"best-subset"`` with at most ``m`` sources, else α)."""
    pair = model if model == source else f"{source} → {model}"
    how = f"best subset, at most {m} sources" if method == "best-subset" else f"α = {alpha:.4g}"

    def pct(x: float) -> str:
        return "n/a" if np.isnan(x) else f"{x:.1f}"

    lines = [
        f"### Neural dependency of “{target_name}” ({pair}, {how})",
        "",
        f"`{formula}`",
        "",
        "| Metric | Value |",
        "| --- | --- |",
        f"| Abs Err | {metrics.abs_err:.3f} |",
        f"| Rel Err (%) | {metrics.rel_err:.3f} |",
        f"| R² (explained variance) | {'n/a' if np.isnan(metrics.r2) else f'{metrics.r2:.4f}'} |",
        f"| Acc (Ori. Acc) | {pct(metrics.acc)} ({pct(metrics.ori_acc)}) |",
        f"| Pos Acc (Ori. Pos Acc) | {pct(metrics.pos_acc)} ({pct(metrics.ori_pos_acc)}) |",
        f"| Positive samples | {metrics.n_pos} |",
        "",
    ]
    return "\n".join(lines)


def dependency_json(
    model: str, source: str, alpha: float | None, target: int, target_name: str, frame: pd.DataFrame,
    metrics: DependencyMetrics | None = None, method: str = "covlasso", m: int | None = None,
) -> str:
    """One target's dependency as JSON, in the shape of the CLI's ``dependencies`` report
    (``"method"``: covlasso | best-subset, with ``"m"`` for the best subset, α null then)."""
    entry = {
        "target": int(target),
        "target_name": target_name,
        "sources": [
            {"index": int(i), "name": n, "coef": float(c)}
            for i, n, c in zip(frame["index"], frame["name"], frame["coef"])
        ],
    }
    if metrics is not None:
        entry.update(metrics.as_json())
    report = {"method": method, "alpha": None if alpha is None else float(alpha), "model": model, "source": source,
              "targets": [entry]}
    if m is not None:
        report["m"] = int(m)
    return json.dumps(report, indent=1)


def dependencies_csv(coef: SparseColumns, targets, target_names: list[str], source_names: list[str],
                     block: int = 2048):
    """Every non-zero coefficient as CSV rows ``target,target_name,source,source_name,coef``,
    generated by blocks of targets (``coef``'s columns are ``targets``): an export of 21,843
    targets never holds more than one block's rows as text at once."""
    yield "target,target_name,source,source_name,coef\n"
    targets = np.asarray(targets)
    for start in range(0, coef.n_targets, block):
        part = coef.select(np.arange(start, min(coef.n_targets, start + block)))
        tg = targets[start + part.column_index()]
        frame = pd.DataFrame({"target": tg, "target_name": [target_names[t] for t in tg],
                              "source": part.sources, "source_name": [source_names[j] for j in part.sources],
                              "coef": part.values})
        yield frame.to_csv(index=False, header=False)


def path_frame(
    alphas: np.ndarray, target_path: np.ndarray, source_names: list[str], top: int = 12
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Long-form α path of one target for a line chart: (the ``top`` sources by max |coef|,
    every other source that is non-zero somewhere on the path)."""
    peak = np.abs(target_path).max(0)
    keep = np.flatnonzero(peak > 0)
    keep = keep[np.argsort(-peak[keep], kind="stable")]

    def long(cols: np.ndarray, names: bool) -> pd.DataFrame:
        frame = pd.DataFrame({
            "alpha": np.repeat(alphas, len(cols)),
            "source": np.tile(cols, len(alphas)),
            "coef": target_path[:, cols].ravel(),
        })
        if names:
            short = dict(zip((int(j) for j in cols), short_names([source_names[j] for j in cols])))
            frame["name"] = [short[int(j)] for j in frame["source"]]
        return frame

    return long(keep[:top], True), long(keep[top:], False)


# ----------------------------------------------------------------------------- names


def short_name(name: str, width: int = 28) -> str:
    """A label that fits a graph node: glyph classes keep their character only."""
    if is_glyph_name(name):
        return name[0]
    return name if len(name) <= width else name[: width - 1] + "…"


def short_names(names, width: int = 28) -> list[str]:
    """:func:`short_name` of each name (the glyph test done once for all)."""
    names = list(names)
    glyph = glyph_name_mask(names)
    return [name[0] if g else (name if len(name) <= width else name[: width - 1] + "…") for name, g in zip(names, glyph)]


# ----------------------------------------------------------------------------- many targets


def most_depended_on(coef: SparseColumns, source_names: list[str], top: int = 20) -> pd.DataFrame:
    """Sources used by the most targets (and their summed |coef|)."""
    uses = np.bincount(coef.sources, minlength=coef.n_sources)
    weight = np.bincount(coef.sources, weights=np.abs(coef.values), minlength=coef.n_sources)
    order = np.lexsort((-weight, -uses))[:top]
    order = order[uses[order] > 0]
    return pd.DataFrame(
        {"index": order, "name": [source_names[j] for j in order], "targets": uses[order],
         "sum |coef|": weight[order]}
    )


def most_redundant(red: Redundancy, names: list[str], top: int | None = 20) -> pd.DataFrame:
    """Categories with the smallest redundancy r_i first (the best predicted from the others).

    r_i is computed with a floor (:func:`engine.core.analysis.redundancy`), so exactly redundant
    categories — all of them when the logits span fewer dimensions than there are classes —
    are ordered by the share of their axis in the null space of C, not by rounding noise.
    """
    order = np.argsort(red.r, kind="stable")[:top]
    return pd.DataFrame({"index": order, "name": [names[i] for i in order], "redundancy": red.r[order],
                         "exact": red.exact[order], "null-space share": red.null_share[order]})


def pick_targets(coef: SparseColumns, held, candidates, limit: int, keep_order: bool = False) -> list[int]:
    """Up to ``limit`` of ``candidates`` (target indices) that have a dependency, those with the
    strongest dependency first — or in the candidates' own order with ``keep_order`` (a search's
    best matches first); ``coef``'s columns are the targets ``held`` (ascending)."""
    held = np.asarray(held)
    cand = np.asarray([c for c in candidates], dtype=np.int64)
    if cand.size == 0 or held.size == 0:
        return []
    pos = np.searchsorted(held, cand)
    ok = (pos < len(held)) & (held[np.minimum(pos, len(held) - 1)] == cand)
    cand, pos = cand[ok], pos[ok]
    peak = np.zeros(coef.n_targets)
    np.maximum.at(peak, coef.column_index(), np.abs(coef.values))
    strength = peak[pos]
    order = np.arange(len(cand)) if keep_order else np.argsort(-strength, kind="stable")
    return [int(c) for c in cand[order][strength[order] > 0][:limit]]


def atlas_layout(graph: nx.DiGraph, targets: list, radius: float = 420.0) -> dict:
    """The paper's Fig. 4 layout: targets on an inner circle, their sources around them.

    Each outer node sits at the mean angle of the targets it feeds, so arcs stay short.
    Returns node -> (x, y).
    """
    pos: dict = {}
    n_t = max(len(targets), 1)
    inner = 0.0 if n_t == 1 else max(120.0, 26.0 * n_t)
    n_outer = graph.number_of_nodes() - len(targets)
    radius = max(radius, inner + 230.0, 16.0 * n_outer)
    angle_of = {}
    for k, t in enumerate(targets):
        a = 2 * np.pi * k / n_t
        angle_of[t] = a
        pos[t] = (inner * np.cos(a), inner * np.sin(a))
    outer = [n for n in graph.nodes if n not in pos]

    def mean_angle(node) -> float:
        angles = [angle_of[t] for t in graph.successors(node) if t in angle_of]
        if not angles:
            return 0.0
        return float(np.arctan2(np.mean(np.sin(angles)), np.mean(np.cos(angles))) % (2 * np.pi))

    outer.sort(key=mean_angle)
    for k, node in enumerate(outer):
        a = 2 * np.pi * k / max(len(outer), 1)
        pos[node] = (radius * np.cos(a), radius * np.sin(a))
    return pos


def share_frame(
    within_a: np.ndarray, within_b: np.ndarray, names: list[str], name_a: str, name_b: str
) -> pd.DataFrame:
    """Sources of the same target in two models: shared, only in A, only in B."""
    union = np.flatnonzero((within_a != 0) | (within_b != 0))
    kind = np.where(
        (within_a[union] != 0) & (within_b[union] != 0), "shared",
        np.where(within_a[union] != 0, f"only {name_a}", f"only {name_b}"),
    )
    frame = pd.DataFrame(
        {"index": union, "name": [names[j] for j in union], f"coef {name_a}": within_a[union],
         f"coef {name_b}": within_b[union], "kind": kind}
    )
    strength = np.maximum(np.abs(within_a[union]), np.abs(within_b[union]))
    return frame.iloc[np.argsort(-strength, kind="stable")].reset_index(drop=True)


def overlap_by_target(a: SparseColumns, b: SparseColumns) -> np.ndarray:
    """Jaccard index of the source sets of every column of two sets of dependencies over the
    same columns (nan where both are empty)."""
    P = a.n_sources
    ka = a.column_index() * P + a.sources
    kb = b.column_index() * P + b.sources
    inter = np.bincount(np.intersect1d(ka, kb, assume_unique=True) // P, minlength=a.n_targets)
    union = a.support_sizes + b.support_sizes - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)
