"""What the dashboard shows, as pure functions: tables, graph data, summaries, class images.

Arrays in, plain Python / pandas / networkx out. Nothing here imports Streamlit, draws
widgets or solves anything: solutions come from :class:`engine.service.DependencyPath`.
"""

from __future__ import annotations

import io
import json
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd

from engine.analysis import (
    DependencyMetrics,
    Redundancy,
    ScreeningCheck,
    r2_from_error,
    screening_check,
    target_variance,
)
from engine.store import manifest_dataset

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
    for n, (name, coef) in enumerate(zip(frame["name"], frame["coef"])):
        if n == max_terms:
            terms.append(f"… ({len(frame) - max_terms} more)")
            break
        sign = "−" if coef < 0 else "+"
        text = f"{abs(coef):.{digits}f}·{short_name(name)}"
        if n == 0:
            terms.append(text if coef > 0 else f"−{text}")
        else:
            terms.append(f"{sign} {text}")
    return f"{short_name(target_name)} ≈ " + " ".join(terms)


def metrics_markdown(
    model: str, source: str, target_name: str, alpha: float, metrics: DependencyMetrics, formula: str
) -> str:
    """The Table 1 card as a Markdown document (the same rows as the paper's Table 1)."""
    pair = model if model == source else f"{source} → {model}"

    def pct(x: float) -> str:
        return "n/a" if np.isnan(x) else f"{x:.1f}"

    lines = [
        f"### Neural dependency of “{target_name}” ({pair}, α = {alpha:.4g})",
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
    model: str, source: str, alpha: float, target: int, target_name: str, frame: pd.DataFrame,
    metrics: DependencyMetrics | None = None,
) -> str:
    """One target's dependency as JSON, in the shape of the CLI's ``dependencies`` report."""
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
    return json.dumps({"alpha": float(alpha), "model": model, "source": source, "targets": [entry]}, indent=1)


def all_dependencies_frame(
    coef: np.ndarray, target_names: list[str], source_names: list[str]
) -> pd.DataFrame:
    """Every non-zero coefficient of a (P, T) matrix as rows target, source, coef."""
    src, tgt = np.nonzero(coef)
    return pd.DataFrame(
        {
            "target": tgt,
            "target_name": [target_names[t] for t in tgt],
            "source": src,
            "source_name": [source_names[s] for s in src],
            "coef": coef[src, tgt],
        }
    )


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
            frame["name"] = [short_name(source_names[j]) for j in frame["source"]]
        return frame

    return long(keep[:top], True), long(keep[top:], False)


# ----------------------------------------------------------------------------- names


def short_name(name: str, width: int = 28) -> str:
    """A label that fits a graph node: glyph classes keep their character only."""
    if is_glyph_name(name):
        return name[0]
    return name if len(name) <= width else name[: width - 1] + "…"


def read_at_a_glance(names: list[str]) -> np.ndarray:
    """(K,) True for categories a person reads at a glance: glyph classes of Basic Latin and
    Latin-1 (``é LATIN SMALL LETTER E WITH ACUTE``); pages open on one of them when they can."""
    return np.array([is_glyph_name(n) and ord(n[0]) < 0x100 for n in names], dtype=bool)


def is_glyph_name(name: str) -> bool:
    """True for glyph class names, ``"<char> <UNICODE NAME>"`` (engine.glyphs.char_name)."""
    if len(name) < 3 or name[1] != " ":
        return False
    return unicodedata.name(name[0], f"U+{ord(name[0]):04X}") == name[2:]


def search_classes(names: list[str], query: str) -> list[int]:
    """Indices of the classes whose name contains ``query`` (case-insensitive), or is it."""
    q = query.strip().lower()
    if not q:
        return list(range(len(names)))
    exact = [i for i, n in enumerate(names) if short_name(n).lower() == q or n.lower() == q]
    return exact + [i for i, n in enumerate(names) if q in n.lower() and i not in exact]


# ----------------------------------------------------------------------------- many targets


def most_depended_on(coef: np.ndarray, source_names: list[str], top: int = 20) -> pd.DataFrame:
    """Sources used by the most targets (and their summed |coef|), from a (P, T) matrix."""
    nz = coef != 0
    uses = nz.sum(1)
    weight = np.abs(coef).sum(1)
    order = np.lexsort((-weight, -uses))[:top]
    order = order[uses[order] > 0]
    return pd.DataFrame(
        {"index": order, "name": [source_names[j] for j in order], "targets": uses[order],
         "sum |coef|": weight[order]}
    )


def sparse_relative_error(design: np.ndarray, rhs: np.ndarray, target_sq: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """``e_t(α) / E[g_t²]`` of every target's sparse dependency, from the Grams alone (T,)."""
    err = target_sq - 2 * np.einsum("pt,pt->t", coef, rhs) + np.einsum("pt,pt->t", coef, design @ coef)
    return np.clip(err, 0.0, None) / np.maximum(target_sq, 1e-300)


def sparse_r2(design: np.ndarray, rhs: np.ndarray, target_sq: np.ndarray, target_mean: np.ndarray,
              coef: np.ndarray) -> np.ndarray:
    """R² of every target's sparse dependency from the Grams and the targets' means (T,);
    nan where the target's logit is constant."""
    err = target_sq - 2 * np.einsum("pt,pt->t", coef, rhs) + np.einsum("pt,pt->t", coef, design @ coef)
    return r2_from_error(err, target_variance(target_sq, target_mean), target_sq)


def most_redundant(red: Redundancy, names: list[str], top: int = 20,
                   sparse_err: np.ndarray | None = None, sparse_r2: np.ndarray | None = None) -> pd.DataFrame:
    """Categories with the smallest redundancy r_i first (the best predicted from the others).

    r_i is computed with a floor (:func:`engine.analysis.redundancy`), so exactly redundant
    categories — all of them when the logits span fewer dimensions than there are classes —
    are ordered by the share of their axis in the null space of C, not by rounding noise.
    ``sparse_err`` (the relative error of the sparse dependency at the chosen α) is shown
    alongside: how much of that redundancy a few sources capture.
    """
    order = np.argsort(red.r, kind="stable")[:top]
    frame = pd.DataFrame({"index": order, "name": [names[i] for i in order], "redundancy": red.r[order],
                          "exact": red.exact[order], "null-space share": red.null_share[order]})
    if sparse_err is not None:
        frame["rel. error at α"] = sparse_err[order]
    if sparse_r2 is not None:
        frame["R² at α"] = sparse_r2[order]
    return frame


def pick_targets(
    coef: np.ndarray, candidates: list[int], limit: int
) -> list[int]:
    """Up to ``limit`` of ``candidates``, those with the strongest dependency first."""
    if not candidates:
        return []
    cand = np.asarray(candidates)
    strength = np.abs(coef[:, cand]).max(0)
    order = np.argsort(-strength, kind="stable")
    return [int(c) for c in cand[order][strength[order] > 0][:limit]]


def communities(graph: nx.DiGraph, seed: int = 0) -> list[list]:
    """Louvain communities of a dependency graph (undirected, weights |coef|), largest first."""
    und = nx.Graph()
    und.add_nodes_from(graph.nodes)
    for u, v, data in graph.edges(data=True):
        w = abs(data.get("coef", 1.0))
        if und.has_edge(u, v):
            und[u][v]["weight"] += w
        else:
            und.add_edge(u, v, weight=w)
    if und.number_of_edges() == 0:
        return [[n] for n in und.nodes]
    found = nx.community.louvain_communities(und, weight="weight", seed=seed)
    return sorted((sorted(c, key=str) for c in found), key=len, reverse=True)


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


def overlap_by_target(coef_a: np.ndarray, coef_b: np.ndarray) -> np.ndarray:
    """Jaccard index of the source sets of every target in two (P, T) matrices (nan: both empty)."""
    a, b = coef_a != 0, coef_b != 0
    inter = (a & b).sum(0)
    union = (a | b).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


# ----------------------------------------------------------------------------- theory


@dataclass(frozen=True)
class ScreeningPoint:
    alpha: float
    check: ScreeningCheck
    median_sources: float


def screening_curve(path, rhs: np.ndarray) -> list[ScreeningPoint]:
    """Conjecture 1 (|C_tj| < α ⇒ θ_j = 0) checked at every α of a dependency path."""
    out = []
    for a, alpha in enumerate(path.alphas):
        coef = path.coef_matrix(a)
        check = screening_check(rhs, coef, float(alpha), path.within)
        out.append(ScreeningPoint(float(alpha), check, float(np.median(path.support_sizes[a]))))
    return out


def gram_spectrum(design: np.ndarray) -> np.ndarray:
    """Eigenvalues of the logit Gram, largest first (float64, clipped at 0 for the log plot)."""
    lam = np.linalg.eigvalsh((design + design.T) / 2)[::-1]
    return np.clip(lam, 0.0, None)


# ----------------------------------------------------------------------------- class images


def class_image_source(manifest: dict, class_names: list[str]) -> str | None:
    """How images of this store's classes can be shown: 'glyph', 'folder' or None."""
    dataset = manifest_dataset(manifest)
    if str(dataset.get("name", "")).lower().startswith("glyph") or (class_names and all(is_glyph_name(n) for n in class_names[:50])):
        return "glyph"
    if _image_folder_root(manifest) is not None:
        return "folder"
    return None


def class_image_png(
    manifest: dict, class_names: list[str], index: int, size: int = 64, kind: str | None = "detect"
) -> bytes | None:
    """A PNG of class ``index`` (dark ink on white for glyphs), or None when there is none.

    Glyph classes are drawn cleanly from matplotlib's own fonts (the face that covers the
    character); ImageFolder datasets give the first image of the class folder when that
    folder exists on this machine.
    """
    if kind == "detect":
        kind = class_image_source(manifest, class_names)
    if kind == "glyph" and is_glyph_name(class_names[index]):
        return glyph_png(class_names[index][0], size)
    if kind == "folder":
        root = _image_folder_root(manifest)
        folders = manifest_dataset(manifest).get("folder_names")
        folder = folders[index] if isinstance(folders, list) and len(folders) == len(class_names) else class_names[index]
        return None if root is None else _folder_png(root, str(folder), size)
    return None


_GLYPH_FACES = ("DejaVuSans.ttf", "STIXGeneral.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf")


def _font_dir() -> Path:
    """matplotlib's TrueType folder, found without importing matplotlib (or engine.glyphs/torch)."""
    from importlib.util import find_spec

    spec = find_spec("matplotlib")
    return Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf"


@lru_cache(maxsize=8)
def _face_cmap(face: str) -> frozenset[int]:
    from fontTools.ttLib import TTFont

    return frozenset(TTFont(_font_dir() / face, lazy=True).getBestCmap())


@lru_cache(maxsize=4096)
def glyph_png(char: str, size: int = 64) -> bytes:
    """The character drawn dark on white, centred, with the first matplotlib face covering it."""
    from PIL import Image, ImageDraw, ImageFont

    face = next((f for f in _GLYPH_FACES if ord(char) in _face_cmap(f)), _GLYPH_FACES[0])
    font = ImageFont.truetype(str(_font_dir() / face), int(size * 0.62))
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = draw.textbbox((0, 0), char, font=font)
    x = (size - (right - left)) / 2 - left
    y = (size - (bottom - top)) / 2 - top
    draw.text((x, y), char, fill=(17, 24, 39), font=font)
    return _png(img)


def _image_folder_root(manifest: dict) -> Path | None:
    dataset = manifest_dataset(manifest)
    for key in ("root", "path", "folder"):
        value = dataset.get(key)
        if isinstance(value, str) and Path(value).is_dir():
            return Path(value)
    return None


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")


@lru_cache(maxsize=4096)
def _folder_png(root: Path, class_name: str, size: int) -> bytes | None:
    from PIL import Image

    if class_name in ("", ".", "..") or "/" in class_name or "\\" in class_name:
        return None  # a class is one folder directly under the root, never a path elsewhere
    folder = root / class_name
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    for path in files[:3]:
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                img.thumbnail((size, size))
                return _png(img)
        except OSError:
            continue
    return None


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
