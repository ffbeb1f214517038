"""The dashboard's charts: written with altair, rendered as Vega-Lite, exported by vl-convert.

Building and validating an altair chart costs a few hundred milliseconds, too slow for a
slider. So each chart's *shape* is written once with altair over named datasets
(``alt.NamedData``), turned into a Vega-Lite dict and cached; a rerun only fills in the
data and the title (:class:`ChartSpec`). ``st.vega_lite_chart`` shows it, and
:func:`chart_png` / :func:`chart_svg` export it offline.

The built templates are also kept in ``chart_specs.json`` (``python -m
dashboard.components.charts`` rewrites it; a test checks it matches the builders), so a
cold start does not import altair at all.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd

from dashboard.components.style import (
    ACCENT,
    CATEGORY_COLORS,
    NEG,
    POS,
    SIGN_DOMAIN,
    SIGN_RANGE,
    ZERO,
)
from engine.apps import controls as _controls

FONT = "DejaVu Sans"
_AXIS = {"labelFontSize": 15, "titleFontSize": 16, "labelFont": FONT, "titleFont": FONT}


@dataclass(frozen=True)
class ChartSpec:
    """A Vega-Lite spec whose named datasets are DataFrames (what st.vega_lite_chart takes)."""

    spec: dict
    datasets: dict[str, pd.DataFrame]
    height: int

    def for_streamlit(self) -> dict:
        return {**self.spec, "datasets": dict(self.datasets), "height": self.height}

    def standalone(self, width: int = 900) -> dict:
        """Data inlined as records, fixed width: for vl-convert and files."""
        records = {k: _records(v) for k, v in self.datasets.items()}
        return {**copy.deepcopy(self.spec), "datasets": records, "width": width, "height": self.height}


def _records(frame: pd.DataFrame) -> list[dict]:
    return [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}
            for row in frame.to_dict(orient="records")]


def _named(name: str):
    import altair as alt

    return alt.NamedData(name=name)


def _template(chart) -> dict:
    spec = (
        chart.properties(width="container")
        .configure_axis(**_AXIS)
        .configure_legend(labelFontSize=15, titleFontSize=15, labelFont=FONT, titleFont=FONT, labelLimit=240)
        .configure_title(fontSize=16, font=FONT, anchor="start", limit=0)
        .configure_view(strokeWidth=0)
        .to_dict()
    )
    spec.pop("datasets", None)
    return spec


SPECS_FILE = Path(__file__).with_name("chart_specs.json")


@cache
def _spec(name: str) -> dict:
    """The Vega-Lite template ``name``: read from chart_specs.json when the installed altair
    wrote it, else built now (importing altair and building costs ~0.6 s of a cold start)."""
    stored = _stored_specs()
    return stored[name] if name in stored else _BUILDERS[name]()


@lru_cache(maxsize=1)
def _stored_specs() -> dict:
    try:
        data = json.loads(SPECS_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data.get("specs", {}) if data.get("altair") == version("altair") else {}


def build_specs() -> dict:
    """Every chart template, built with altair (what chart_specs.json holds)."""
    return {name: build() for name, build in _BUILDERS.items()}


def write_specs() -> None:
    """Rebuild chart_specs.json: ``python -m dashboard.components.charts`` after changing a chart."""
    data = {"altair": version("altair"), "specs": build_specs()}
    SPECS_FILE.write_text(json.dumps(data, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


def _fill(template: dict, title: str, height: int, **datasets: pd.DataFrame) -> ChartSpec:
    spec = dict(template)
    spec["title"] = title
    return ChartSpec(spec, datasets, height)


# ----------------------------------------------------------------------------- Fig. 3


def _build_scatter() -> dict:
    import altair as alt

    band = alt.Chart(_named("band")).mark_rect(color=ACCENT, opacity=0.10).encode(x="lo:Q", x2="hi:Q")
    edges = alt.Chart(_named("edges")).mark_rule(color=ACCENT, strokeDash=[6, 4], strokeWidth=2).encode(x="x:Q")
    points = alt.Chart(_named("points")).mark_circle(size=70, opacity=0.85).encode(
        x=alt.X("covariance:Q", title="covariance C_tj = E[f_t f_j]"),
        y=alt.Y("coef:Q", title="coefficient θ_j"),
        color=alt.Color("sign:N", title="θ_j", scale=alt.Scale(domain=SIGN_DOMAIN, range=SIGN_RANGE)),
        tooltip=[alt.Tooltip("name:N", title="source"), alt.Tooltip("covariance:Q", format=".4f"),
                 alt.Tooltip("coef:Q", format="+.4f")],
    )
    return _template(band + edges + points)


def covariance_scatter(frame: pd.DataFrame, alpha: float, title: str, height: int = 380) -> ChartSpec:
    """The paper's Fig. 3: C_tj against θ_j for every source j, with the band |C_tj| < α.

    frame: columns covariance, coef, name. Conjecture 1 says no point inside the band is
    off the θ = 0 line.
    """
    coef = frame["coef"].to_numpy()
    points = frame.assign(sign=np.where(coef > 0, "positive", np.where(coef < 0, "negative", "zero")))
    return _fill(_spec("scatter"), title, height, points=points,
                 band=pd.DataFrame({"lo": [-alpha], "hi": [alpha]}), edges=pd.DataFrame({"x": [-alpha, alpha]}))


# ----------------------------------------------------------------------------- α path


def _build_path() -> dict:
    import altair as alt

    lines = alt.Chart(_named("path")).mark_line(strokeWidth=2.5, interpolate="step-after").encode(
        x=alt.X("alpha:Q", title="α (log scale)", scale=alt.Scale(type="log", reverse=True)),
        y=alt.Y("coef:Q", title="coefficient θ_j"),
        color=alt.Color("name:N", title="source", sort=None, legend=alt.Legend(symbolStrokeWidth=4),
                        scale=alt.Scale(range=CATEGORY_COLORS)),  # blue/orange mean signs elsewhere
        tooltip=[alt.Tooltip("name:N", title="source"), alt.Tooltip("alpha:Q", format=".4g"),
                 alt.Tooltip("coef:Q", format="+.4f")],
    )
    others = alt.Chart(_named("others")).mark_line(strokeWidth=1, color=ZERO, opacity=0.5,
                                                  interpolate="step-after").encode(
        x="alpha:Q", y="coef:Q", detail="source:N")
    marker = alt.Chart(_named("marker")).mark_rule(color=ACCENT, strokeWidth=3).encode(x="alpha:Q")
    text = alt.Chart(_named("marker")).mark_text(
        align="left", dx=6, dy=-6, fontSize=15, color=ACCENT, font=FONT).encode(
        x="alpha:Q", y=alt.value(12), text="label:N")
    zero = alt.Chart(_named("zero")).mark_rule(color=ZERO).encode(y="y:Q")
    return _template(zero + others + lines + marker + text)


def alpha_path(frames: tuple[pd.DataFrame, pd.DataFrame], alpha: float, title: str,
               height: int = 380) -> ChartSpec:
    """Every source's coefficient against α (log scale): the strongest in colour, the rest in
    grey, the chosen α marked. ``frames``: :func:`engine.apps.views.path_frame`."""
    top, others = frames
    return _fill(_spec("path"), title, height, path=top, others=others,
                 marker=pd.DataFrame({"alpha": [alpha], "label": [f"α = {alpha:.3g}"]}),
                 zero=pd.DataFrame({"y": [0.0]}))


# ----------------------------------------------------------------------------- theory


def _build_screening() -> dict:
    import altair as alt

    chart = alt.Chart(_named("curve")).mark_line(point=True, strokeWidth=2.5).encode(
        x=alt.X("alpha:Q", title="α (log scale)", scale=alt.Scale(type="log")),
        y=alt.Y("value:Q", title="fraction", scale=alt.Scale(domain=[0, 1.02])),
        color=alt.Color("measure:N", title="", scale=alt.Scale(range=[POS, NEG, ACCENT]),
                        legend=alt.Legend(orient="bottom", columns=1)),
        tooltip=["measure:N", alt.Tooltip("alpha:Q", format=".4g"), alt.Tooltip("value:Q", format=".4f")],
    )
    return _template(chart)


def screening_chart(frame: pd.DataFrame, title: str, height: int = 340) -> ChartSpec:
    """Conjecture 1 precision and recall against α (frame: alpha, measure, value)."""
    return _fill(_spec("screening"), title, height, curve=frame)


def _build_spectrum() -> dict:
    import altair as alt

    chart = alt.Chart(_named("spectrum")).mark_line(color=POS, strokeWidth=2.5).encode(
        x=alt.X("rank:Q", title="rank k"),
        y=alt.Y("eigenvalue:Q", title="λ_k (log scale)", scale=alt.Scale(type="log")),
        tooltip=["rank:Q", alt.Tooltip("eigenvalue:Q", format=".3e")],
    )
    return _template(chart)


def spectrum_chart(eigenvalues: np.ndarray, title: str, height: int = 340) -> ChartSpec:
    """Eigenvalues of the Gram, largest first, on a log scale (tiny ones ⇒ redundancy)."""
    lam = np.asarray(eigenvalues, dtype=float)
    floor = max(float(lam.max()) * 1e-16, 1e-300)
    frame = pd.DataFrame({"rank": np.arange(1, len(lam) + 1), "eigenvalue": np.maximum(lam, floor)})
    return _fill(_spec("spectrum"), title, height, spectrum=frame)


def _build_histogram() -> dict:
    import altair as alt

    chart = alt.Chart(_named("values")).mark_bar(color=POS).encode(
        x=alt.X("value:Q", bin=alt.Bin(maxbins=40), title=None,
                axis=alt.Axis(labelFlush=True, labelOverlap=True)),  # bin edges' labels never pile up past the end
        y=alt.Y("count():Q", title="categories"),
    )
    return _template(chart)


def histogram(values: np.ndarray, field: str, title: str, log_x: bool = False, height: int = 300) -> ChartSpec:
    """A histogram of one quantity (redundancy, overlap...), optionally of its log10."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if log_x:
        v = np.log10(np.maximum(v, 1e-16))
    spec = _fill(_spec("histogram"), title, height, values=pd.DataFrame({"value": v}))
    layer = copy.deepcopy(spec.spec)
    layer["encoding"]["x"]["title"] = f"log10 {field}" if log_x else field
    return ChartSpec(layer, spec.datasets, height)


def _build_redundancy() -> dict:
    import altair as alt

    bars = alt.Chart(_named("values")).mark_bar(orient="vertical").encode(
        x=alt.X("lo:Q", title="log10 r_i", scale=alt.Scale(zero=False, nice=False, domainMax=0)), x2="hi:Q",
        y=alt.Y("count:Q", title="categories (symlog)", stack=True, scale=alt.Scale(type="symlog")),
        color=alt.Color("kind:N", title="", scale=alt.Scale(domain=REDUNDANCY_KINDS, range=[ACCENT, POS]),
                        legend=alt.Legend(orient="bottom", columns=1)),  # one per line: fits a narrow column
    )
    floor = alt.Chart(_named("floor")).mark_rule(color=ZERO, strokeDash=[6, 4], strokeWidth=2).encode(x="x:Q")
    pad = alt.Chart(_named("floor")).mark_point(opacity=0).encode(x="pad:Q")  # room left of ρ
    return _template(floor + pad + bars)


REDUNDANCY_KINDS = ["exact (r_i ≈ 0)", "resolved"]  # short: the legend fits a narrow column


def redundancy_histogram(r: np.ndarray, exact: np.ndarray, floor: float, title: str, height: int = 360) -> ChartSpec:
    """log10 r_i of every category from just below the floor ρ up to 1 (r_i ≤ 1 always), in
    bins of 0.1, exactly redundant ones apart and ρ marked: where the categories sit on the
    whole scale, even when all of them are piled up at the floor."""
    log_r = np.log10(np.clip(np.asarray(r, dtype=float), floor, 1.0))
    lo = np.floor(np.log10(floor) * 2) / 2 - 0.5
    edges = np.arange(lo, 0.0 + 1e-9, 0.1)
    rows = []
    for kind, mask in ((REDUNDANCY_KINDS[0], exact), (REDUNDANCY_KINDS[1], ~exact)):
        counts, _ = np.histogram(log_r[mask], bins=edges)
        rows += [{"lo": a, "hi": b, "count": int(c), "kind": kind}
                 for a, b, c in zip(edges[:-1], edges[1:], counts) if c]
    frame = pd.DataFrame(rows, columns=["lo", "hi", "count", "kind"])
    # ρ is named in the title (text above the chart in the page, which wraps): a label beside
    # the line sat on the y axis's "1,000", one in the axis title was cut at 150 % zoom
    return _fill(_spec("redundancy"), f"{title} (dashed line: the floor ρ = {floor:.0e})", height, values=frame,
                 floor=pd.DataFrame({"x": [np.log10(floor)], "pad": [np.log10(floor) - 1.0]}))


def _build_support() -> dict:
    import altair as alt

    chart = alt.Chart(_named("support")).mark_line(point=True, color=NEG, strokeWidth=2.5).encode(
        x=alt.X("alpha:Q", title="α (log scale)", scale=alt.Scale(type="log")),
        y=alt.Y("median_sources:Q", title="median sources per target"),
        tooltip=[alt.Tooltip("alpha:Q", format=".4g"), "median_sources:Q"],
    )
    return _template(chart)


def support_chart(frame: pd.DataFrame, title: str, height: int = 300) -> ChartSpec:
    """Median number of sources per target against α (frame: alpha, median_sources)."""
    return _fill(_spec("support"), title, height, support=frame)


# ----------------------------------------------------------------------------- R² against the number of sources

SOURCES_SERIES = _controls.SOURCES_SERIES  # the series' names, as the view's frame names them
SOURCES_COLORS = ["#059669", NEG, POS]


def _build_sources() -> dict:
    import altair as alt

    x = alt.X("sources:Q", title="sources", scale=alt.Scale(domainMin=0, nice=False),
              axis=alt.Axis(tickMinStep=1, format="d"))
    fit = alt.Chart(_named("fit")).mark_rule(color=ZERO, strokeDash=[5, 4], strokeWidth=1.5).encode(y="y:Q")
    lines = alt.Chart(_named("curve")).mark_line(point=alt.OverlayMarkDef(size=45), strokeWidth=2.5).encode(
        x=x,
        y=alt.Y("r2:Q", title="R²", scale=alt.Scale(domain=[0, 1], clamp=True), axis=alt.Axis(tickCount=5)),
        color=alt.Color("method:N", title=None, sort=SOURCES_SERIES,
                        scale=alt.Scale(domain=SOURCES_SERIES, range=SOURCES_COLORS),
                        legend=alt.Legend(orient="bottom", direction="vertical", columns=1, labelFontSize=13,
                                          symbolStrokeWidth=3, symbolSize=80, columnPadding=8, labelLimit=130)),
        tooltip=["method:N", "sources:Q", alt.Tooltip("r2:Q", title="R²", format=".4f")],
    )
    here = alt.Chart(_named("here")).mark_point(size=260, shape="circle", filled=False, strokeWidth=3,
                                                color=ACCENT).encode(x="sources:Q", y="r2:Q")
    return _template(fit + lines + here)


def sources_chart(curve: pd.DataFrame, here: tuple[float, float] | None, fit: float, title: str,
                  height: int = 290) -> ChartSpec:
    """R² against the number of sources, one line per method (frame: method, sources, r2),
    the dependency shown circled (``here``: sources, R²) and the fit line at ``fit``; R² below
    0 (a Lasso that shrinks its few coefficients hard) is drawn at 0."""
    here_frame = pd.DataFrame({"sources": [here[0]] if here else [], "r2": [here[1]] if here else []})
    return _fill(_spec("sources"), title, height, curve=curve, here=here_frame, fit=pd.DataFrame({"y": [fit]}))


# ----------------------------------------------------------------------------- §3.3 β sweep


def _build_tradeoff() -> dict:
    import altair as alt

    base = alt.Chart(_named("tradeoff"))
    x = alt.X("beta:Q", title="β (0 = the control; symlog scale)",
              scale=alt.Scale(type="symlog", constant=0.05),
              axis=alt.Axis(values=[0, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20], format="g"))
    color = alt.Color("metric:N", title=None, sort=None, scale=alt.Scale(range=CATEGORY_COLORS),
                      legend=alt.Legend(orient="bottom", columns=1))
    tooltip = [alt.Tooltip("metric:N"), alt.Tooltip("beta:Q", format="g"), alt.Tooltip("mean:Q", format="+.2f"),
               alt.Tooltip("sd:Q", format=".2f"), alt.Tooltip("value:N", title="absolute"), alt.Tooltip("seeds:Q")]

    def layer(axis: str, title: str, orient: str):
        part = base.transform_filter(alt.datum.axis == axis)
        y = alt.Y("mean:Q", title=title, axis=alt.Axis(orient=orient))
        return (part.mark_line(point=alt.OverlayMarkDef(size=80), strokeWidth=2.5).encode(
                    x=x, y=y, color=color, tooltip=tooltip)
                + part.mark_rule(strokeWidth=2).encode(x=x, y="lo:Q", y2="hi:Q", color=color))

    deltas = layer("delta", "against the control (pt, mean ± sd over seeds)", "left")
    theta = layer("theta", "θ of the cut pair (% of before)", "right")
    return _template(alt.layer(deltas, theta).resolve_scale(y="independent"))


def tradeoff_chart(frame: pd.DataFrame, title: str, height: int = 360) -> ChartSpec:
    """§3.3's trade-off against β: top-1 and OOD AUPR against the control (pt, left axis) and θ
    of the cut pair as % of before (right axis).

    frame: columns beta, metric, axis ('delta' or 'theta'), mean, sd, value, seeds
    (``engine.jobs.reports.sweep_rows``)."""
    frame = frame.assign(lo=frame["mean"] - frame["sd"], hi=frame["mean"] + frame["sd"])
    return _fill(_spec("tradeoff"), title, height, tradeoff=frame)


_BUILDERS = {"scatter": _build_scatter, "path": _build_path, "screening": _build_screening, "spectrum": _build_spectrum, "histogram": _build_histogram, "redundancy": _build_redundancy,
             "support": _build_support, "tradeoff": _build_tradeoff, "sources": _build_sources}


# ----------------------------------------------------------------------------- export


def chart_png(chart: ChartSpec) -> bytes:
    import vl_convert as vlc

    return vlc.vegalite_to_png(chart.standalone(), scale=2)


def chart_svg(chart: ChartSpec) -> str:
    import vl_convert as vlc

    return vlc.vegalite_to_svg(chart.standalone())


def show(chart: ChartSpec) -> None:
    """Draw a chart in the page (full width), its title as a line of text above it: Vega cuts a
    title longer than the chart with "…" ("R² against the number of sour…" in a 1280 px
    window), where text in the page wraps. The exports keep the title in the chart."""
    import html

    import streamlit as st

    spec = chart.for_streamlit()
    title = spec.pop("title", None)
    if title:
        st.html(f'<div class="nde-chart-title">{html.escape(str(title))}</div>')
    st.vega_lite_chart(spec=spec, width="stretch")


if __name__ == "__main__":
    write_specs()
