"""Static pictures for the slides: star and atlas graphs as SVG, charts as SVG (Vega-Lite
rendered by vl-convert), class images as data URIs. Static and self-contained: a slide needs no
script, no font and no request to draw them, on a projector or from a USB stick.

Colours follow the dashboard's palette (blue = positive coefficient, orange = negative).
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from html import escape

import numpy as np

POS, NEG, ZERO, INK, ACCENT, GOLD = "#1d4ed8", "#c2410c", "#6b7280", "#111827", "#6d28d9", "#eab308"
COMMUNITY = ("#059669", "#7c3aed", "#db2777", "#0891b2", "#65a30d", "#b45309", "#4b5563",
             "#dc2626", "#0d9488", "#9333ea", "#ca8a04", "#be185d")
FONT = "DejaVu Sans, Arial, sans-serif"


def data_uri(png: bytes | None) -> str | None:
    return None if png is None else "data:image/png;base64," + base64.b64encode(png).decode()


def svg_img(svg: str, alt: str) -> str:
    """An SVG as an ``<img>`` with a data URI: survives HTML sanitisers (the dashboard's
    ``st.html`` drops inline ``<svg>``), and its own data-URI images still draw inside it."""
    if not svg:
        return ""
    m = re.search(r'<svg[^>]*?width="([\d.]+)(?:px)?"[^>]*?height="([\d.]+)(?:px)?"', svg)
    size = f' width="{float(m.group(1)):.0f}" height="{float(m.group(2)):.0f}"' if m else ""
    if 'xmlns="http://www.w3.org/2000/svg"' not in svg[:400]:
        svg = svg.replace("<svg", '<svg xmlns="http://www.w3.org/2000/svg"', 1)
    uri = "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode()
    return f'<img class="svg" src="{uri}" alt="{escape(alt)}"{size}>'


def sign_color(coef: float) -> str:
    return POS if coef > 0 else NEG if coef < 0 else ZERO


@dataclass(frozen=True)
class Node:
    """A node of a drawn graph: a class image (or its label in a circle when there is none)."""

    label: str  # short label (a glyph's character) drawn under the image, or inside the circle
    image: str | None  # data URI
    border: str = INK


def _node(x: float, y: float, size: float, node: Node, stroke: float, label_size: int) -> str:
    half = size / 2
    out = [f'<rect x="{x - half:.1f}" y="{y - half:.1f}" width="{size:.1f}" height="{size:.1f}" rx="10" '
           f'fill="#ffffff" stroke="{node.border}" stroke-width="{stroke}"/>']
    if node.image:
        pad = size * 0.1
        out.append(f'<image href="{node.image}" x="{x - half + pad:.1f}" y="{y - half + pad:.1f}" '
                   f'width="{size - 2 * pad:.1f}" height="{size - 2 * pad:.1f}"/>')
    else:
        out.append(f'<text x="{x:.1f}" y="{y + label_size * 0.35:.1f}" font-size="{label_size}" '
                   f'text-anchor="middle" fill="{INK}">{escape(node.label[:10])}</text>')
    return "".join(out)


def star_svg(target: Node, sources: list[tuple[Node, float]], *, width: int = 600, height: int = 540,
             highlight: set[int] | None = None, more: int = 0) -> str:
    """The paper's Fig. 2 as SVG: the target in the middle, its sources on a circle, edge width
    = |θ|, colour = sign, each coefficient printed beside its source. ``highlight``: positions
    of sources ringed in gold (e.g. the other model's counterpart)."""
    cx, cy = width / 2, height / 2
    n = len(sources)
    radius = min(width, height) / 2 - 74
    scale = max((abs(c) for _, c in sources), default=1.0) or 1.0
    edges, nodes, labels = [], [], []
    for k, (node, coef) in enumerate(sources):
        angle = -math.pi / 2 + 2 * math.pi * k / max(n, 1)
        x, y = cx + radius * math.cos(angle), cy + radius * math.sin(angle)
        w = 2 + 12 * min(abs(coef) / scale, 1.0)
        edges.append(f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{cx:.1f}" y2="{cy:.1f}" stroke="{sign_color(coef)}" '
                     f'stroke-width="{w:.1f}" stroke-linecap="round" opacity="0.85"/>')
        ring = highlight is not None and k in highlight
        nodes.append(_node(x, y, 74, Node(node.label, node.image, GOLD if ring else sign_color(coef)),
                           7 if ring else 4, 26))
        # the coefficient outside the node, along its ray: never on an edge
        lx, ly = cx + (radius + 0) * math.cos(angle), cy + (radius + 0) * math.sin(angle)
        dy = 60 if math.sin(angle) >= -0.2 else -44
        labels.append(f'<text x="{lx:.1f}" y="{ly + dy:.1f}" font-size="24" font-weight="600" text-anchor="middle" '
                      f'fill="{sign_color(coef)}" stroke="#ffffff" stroke-width="6" paint-order="stroke">'
                      f'{coef:+.2f}</text>')
    centre = _node(cx, cy, 124, target, 6, 34)
    extra = (f'<text x="{width - 8}" y="{height - 10}" font-size="22" text-anchor="end" fill="{ZERO}">'
             f'+ {more} smaller</text>') if more else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" font-family="{FONT}" role="img">{"".join(edges)}{centre}{"".join(nodes)}'
            f'{"".join(labels)}{extra}</svg>')


def atlas_svg(nodes: dict, positions: dict, edges: list[tuple], targets: set, community_of: dict, *,
              width: int = 760, height: int = 560) -> str:
    """The paper's Fig. 4 as SVG: ``nodes`` id -> :class:`Node`, ``positions`` id -> (x, y) in
    any units (fitted to the box), ``edges`` (u, v, coef); node border = community."""
    if not positions:
        return ""
    xy = np.array([positions[k] for k in nodes], dtype=float)
    lo, hi = xy.min(0), xy.max(0)
    span = np.maximum(hi - lo, 1e-9)
    margin = 40
    scale = min((width - 2 * margin) / span[0], (height - 2 * margin) / span[1])
    off = np.array([width, height]) / 2 - (lo + hi) / 2 * scale

    def at(k):
        p = np.asarray(positions[k], dtype=float) * scale + off
        return float(p[0]), float(p[1])

    strongest = max((abs(c) for _, _, c in edges), default=1.0) or 1.0
    lines = []
    for u, v, c in edges:
        (x1, y1), (x2, y2) = at(u), at(v)
        lines.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{sign_color(c)}" '
                     f'stroke-width="{1 + 5 * min(abs(c) / strongest, 1):.1f}" opacity="0.6"/>')
    drawn = []
    for k, node in nodes.items():
        x, y = at(k)
        k_comm = community_of.get(k, -1)
        color = ZERO if k_comm < 0 else COMMUNITY[k_comm % len(COMMUNITY)]
        big = k in targets
        drawn.append(_node(x, y, 58 if big else 40, Node(node.label, node.image, color), 5 if big else 3,
                           22 if big else 16))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" font-family="{FONT}" role="img">{"".join(lines)}{"".join(drawn)}</svg>')


# ----------------------------------------------------------------------------- charts

_AXIS = {"labelFontSize": 22, "titleFontSize": 24, "labelFont": "DejaVu Sans", "titleFont": "DejaVu Sans",
         "labelColor": INK, "titleColor": INK, "gridColor": "#e5e7eb"}
_CONFIG = {"axis": _AXIS, "view": {"stroke": None},
           "legend": {"labelFontSize": 22, "titleFontSize": 22, "labelFont": "DejaVu Sans", "labelLimit": 420,
                      "labelColor": INK, "symbolStrokeWidth": 4, "orient": "bottom", "direction": "vertical"},
           "title": {"fontSize": 22, "font": "DejaVu Sans", "color": INK, "anchor": "start"},
           "background": "#ffffff"}


def vega_svg(spec: dict) -> str:
    """A Vega-Lite spec (data inlined) as an SVG string (vl-convert: no browser, no network)."""
    import vl_convert as vlc

    svg = vlc.vegalite_to_svg({"$schema": "https://vega.github.io/schema/vega-lite/v5.json",
                               "config": _CONFIG, **spec})
    return _strip_xml_header(svg)


def _strip_xml_header(svg: str) -> str:
    return svg[svg.find("<svg"):] if "<svg" in svg else svg


def fit_chart(original: np.ndarray, replaced: np.ndarray, positive: np.ndarray, *, width: int = 560,
              height: int = 460) -> str:
    """Replaced against original logit, one dot per test image (its category's own images in
    orange), the line y = x."""
    lo = float(min(original.min(), replaced.min()))
    hi = float(max(original.max(), replaced.max()))
    rows = [{"o": round(float(o), 3), "r": round(float(r), 3), "kind": "its own images" if p else "other images"}
            for o, r, p in zip(original, replaced, positive)]
    rows.sort(key=lambda d: d["kind"] == "its own images")  # its own on top
    return vega_svg({
        "width": width, "height": height,
        "layer": [
            {"data": {"values": [{"x": lo, "y": lo}, {"x": hi, "y": hi}]}, "mark": {"type": "line", "color": ZERO,
                                                                                  "strokeDash": [6, 4], "strokeWidth": 2},
             "encoding": {"x": {"field": "x", "type": "quantitative"}, "y": {"field": "y", "type": "quantitative"}}},
            {"data": {"values": rows}, "mark": {"type": "circle", "size": 22, "opacity": 0.55},
             "encoding": {"x": {"field": "o", "type": "quantitative", "title": "original logit"},
                          "y": {"field": "r", "type": "quantitative", "title": "rebuilt from the sources"},
                          "color": {"field": "kind", "type": "nominal", "title": None,
                                    "scale": {"domain": ["other images", "its own images"], "range": [POS, NEG]}}}},
        ]})


@dataclass(frozen=True)
class SourcesSeries:
    """One curve of the "how few sources" chart: R² against the number of sources.

    A solver other than the Lasso (e.g. a best-subset search) adds its own series."""

    name: str
    n_sources: np.ndarray
    r2: np.ndarray
    dash: bool = False


def sources_chart(series: list[SourcesSeries], *, width: int = 640, height: int = 420,
                  mark_at: int | None = None) -> str:
    """R² against the number of sources, one line per series (log x)."""
    rows = []
    for s in series:
        for n, r in zip(np.asarray(s.n_sources), np.asarray(s.r2)):
            if n > 0 and np.isfinite(r):
                rows.append({"n": int(n), "r2": round(float(max(r, 0.0)), 4), "series": s.name})
    names = [s.name for s in series]
    colors = [POS, ACCENT, NEG, "#059669"][: len(names)]
    layers = [{"data": {"values": rows}, "mark": {"type": "line", "point": {"size": 90}, "strokeWidth": 4},
               "encoding": {"x": {"field": "n", "type": "quantitative", "title": "number of sources",
                                  "scale": {"type": "log"}, "axis": {"values": [1, 2, 4, 8, 16, 32, 64]}},
                            "y": {"field": "r2", "type": "quantitative", "title": "R² of the rebuilt logit",
                                  "scale": {"domain": [0, 1]}},
                            "color": {"field": "series", "type": "nominal", "title": None,
                                      "scale": {"domain": names, "range": colors}}}}]
    if mark_at:
        layers.append({"data": {"values": [{"n": int(mark_at)}]},
                       "mark": {"type": "rule", "color": ZERO, "strokeWidth": 3, "strokeDash": [6, 4]},
                       "encoding": {"x": {"field": "n", "type": "quantitative"}}})
    return vega_svg({"width": width, "height": height, "layer": layers})


def covariance_chart(cov: np.ndarray, coef: np.ndarray, alpha: float, *, width: int = 540, height: int = 400) -> str:
    """The paper's Fig. 3: C_tj against θ_j, the band |C_tj| < α (where θ_j is zero)."""
    keep = np.flatnonzero(coef != 0)
    zeros = np.flatnonzero(coef == 0)
    zeros = zeros[np.argsort(-np.abs(cov[zeros]), kind="stable")[:1500]]
    idx = np.concatenate([zeros, keep])
    rows = [{"c": round(float(cov[j]), 4), "t": round(float(coef[j]), 4),
             "sign": "positive" if coef[j] > 0 else "negative" if coef[j] < 0 else "zero"} for j in idx]
    return vega_svg({
        "width": width, "height": height,
        "layer": [
            {"data": {"values": [{"lo": -alpha, "hi": alpha}]}, "mark": {"type": "rect", "color": ACCENT, "opacity": 0.12},
             "encoding": {"x": {"field": "lo", "type": "quantitative"}, "x2": {"field": "hi"}}},
            {"data": {"values": rows}, "mark": {"type": "circle", "size": 60, "opacity": 0.8},
             "encoding": {"x": {"field": "c", "type": "quantitative", "title": "covariance C_tj"},
                          "y": {"field": "t", "type": "quantitative", "title": "coefficient θ_j"},
                          "color": {"field": "sign", "type": "nominal", "title": None, "legend": None,
                                    "scale": {"domain": ["positive", "negative", "zero"], "range": [POS, NEG, ZERO]}}}},
        ]})


def spectrum_chart(eigenvalues: np.ndarray, rank: int | None, *, width: int = 540, height: int = 400) -> str:
    """Eigenvalues of the Gram, largest first, log scale; the numerical rank marked (the cliff)."""
    lam = np.asarray(eigenvalues, dtype=float)
    floor = max(float(lam.max()) * 1e-16, 1e-300)
    step = max(1, len(lam) // 400)
    ks = np.unique(np.concatenate([np.arange(0, len(lam), step), [len(lam) - 1],
                                   [] if rank is None else [max(rank - 1, 0), min(rank, len(lam) - 1)]]).astype(int))
    rows = [{"k": int(k) + 1, "lam": float(max(lam[k], floor))} for k in ks]
    layers = [{"data": {"values": rows}, "mark": {"type": "line", "color": POS, "strokeWidth": 4},
               "encoding": {"x": {"field": "k", "type": "quantitative", "title": "rank k"},
                            "y": {"field": "lam", "type": "quantitative", "title": "eigenvalue λ_k (log)",
                                  "scale": {"type": "log"}, "axis": {"format": ".0e"}}}}]
    if rank:
        layers.append({"data": {"values": [{"k": int(rank), "label": f"rank {rank}"}]},
                       "layer": [{"mark": {"type": "rule", "color": NEG, "strokeWidth": 3, "strokeDash": [6, 4]},
                                  "encoding": {"x": {"field": "k", "type": "quantitative"}}},
                                 {"mark": {"type": "text", "align": "left", "dx": 8, "dy": 0, "fontSize": 22,
                                           "color": NEG, "fontWeight": "bold"},
                                  "encoding": {"x": {"field": "k", "type": "quantitative"}, "y": {"value": 30},
                                               "text": {"field": "label"}}}]})
    return vega_svg({"width": width, "height": height, "layer": layers})
