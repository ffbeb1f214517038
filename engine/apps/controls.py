"""What the pages' controls open on and show, and the memo of a page's view.

Defaults (the model, the target, α and the number of sources a page opens on), the parsing of a
link's α and m (with the sentence that says what was wrong), the α slider's digits, the chart of
R² against the number of sources, the Fig. 3 scatter's points — shared by the Explore view
(:mod:`engine.apps.explore`) and the dashboard's other pages. The views' in-memory
:class:`~engine.stages.memo.Memo` and the page's opening target
(:func:`~engine.stages.page_data.default_target`) are re-exported from the layers below.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from engine.stages.memo import LIMITS, LOCK
from engine.stages.memo import Memo as Memo  # the views' memo (re-exported)
from engine.stages.page_data import (
    default_target as default_target,  # where a page opens (re-exported)
)
from engine.stages.pairing import PAPER_ALPHAS
from engine.stages.sparsity import FIT_R2  # a dependency "fits" the sources chart at R² ≥ 0.95

PREFERRED_MODELS = ("glyph-vgg", "glyph-vgg-seed2", "glyph-resnet")  # where the pages open
SOURCES_SERIES = ["best subset", "relaxed Lasso", "CovLasso"]  # the R²-against-sources chart's series
CHART_MAX_SOURCES = 16  # the Lasso's and relaxed Lasso's points drawn up to this many sources
MAX_SCATTER = 3000  # points of the Fig. 3 scatter (every non-zero θ_j, then the largest |C_tj|)
# Up to this many categories the picker lists them all (type to filter); above, a search box
# narrows the list first: a select box sends every option to the browser on every rerun.
PICKER_ALL = 2000
PICKER_MATCHES = 200  # options listed for a search


@dataclass(frozen=True)
class SourcesChart:
    """R² against the number of sources: the chart's frame, the point shown, the caption's numbers."""

    frame: pd.DataFrame  # method, sources, r2
    here: tuple[int, float] | None
    fit: int | None  # the fewest sources that fit (best subset)
    lasso: int | None  # the fewest sources with which the Lasso reaches FIT_R2
    max_m: int


# ----------------------------------------------------------------------------- the views' memo entries


def fetch(memo: Memo, kind: str, key: tuple, make: Callable, keep_none: bool = True):
    """:func:`engine.stages.memo.fetch` for the apps' own entries (cards, image kinds, path
    frames): the same tables and lock, kept here so that an apps entry is made in apps (a call
    into the stages' fetch would enter the stages and call back up)."""
    with LOCK:
        table = memo.setdefault(kind, OrderedDict())
        if key in table:
            table.move_to_end(key)
            return table[key]
    value = make()
    if value is None and not keep_none:
        return None
    with LOCK:
        table[key] = value
        while len(table) > LIMITS.get(kind, 8):
            table.popitem(last=False)
    return value


# ----------------------------------------------------------------------------- resolving the request


def default_model(names: list[str], avoid: str | None = None) -> str:
    """The store the pages open on: the demo's preferred ones first, else the first."""
    for name in (*PREFERRED_MODELS, *names):
        if name in names and name != avoid:
            return name
    return names[0]


def parse_alpha(text: str, messages: list[str]) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        messages.append(f"α in the link must be a positive number; got {text!r}. Showing the default α.")
        return None
    if not math.isfinite(value) or value <= 0:
        messages.append(f"α in the link must lie in (0, ∞); got {text!r}. Showing the default α.")
        return None
    return value


def parse_m(text: str, top: int, messages: list[str]) -> int | None:
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = None
    if value is None or not 1 <= value <= top:
        messages.append(f"m in the link must be a whole number of sources in 1 … {top}; got {text!r}. "
                        "Showing the default number of sources.")
        return None
    return value


def nearest_option(options: list[float], value: float) -> float:
    logs = np.log(np.asarray(options))
    return options[int(np.argmin(np.abs(logs - math.log(value))))]


def alpha_digits(options: list[float]) -> int:
    """Significant digits that tell every α of the grid apart (2.5 next to 2.4987…)."""
    for digits in range(3, 10):
        if len({f"{a:.{digits}g}" for a in options}) == len(options):
            return digits
    return 17


def default_alpha(options: list[float], amax: float) -> float:
    for paper in PAPER_ALPHAS:
        if paper in options:
            return paper
    return nearest_option(options, amax / 10)


def recommended_m(curve, sparsest: int | None = ...) -> tuple[int, bool]:
    """(m, fits): the fewest sources that fit (R² ≥ 0.95, ≤ 0.5 pt of top-1 lost; ``sparsest``:
    ``curve.sparsest_fit()`` when known); where no m ≤ 8 fits, the smallest m within 0.01 of
    the best R², and False."""
    found = curve.sparsest_fit() if sparsest is ... else sparsest
    if found is not None:
        return found, True
    r2 = np.nan_to_num(curve.best_r2, nan=-np.inf)
    if not np.isfinite(r2).any():
        return int(curve.m[-1]), False
    return int(curve.m[np.flatnonzero(r2 >= r2.max() - 0.01)[0]]), False


def curve_frame(curve, max_sources: int = CHART_MAX_SOURCES) -> pd.DataFrame:
    """The R²-against-sources chart's three series (method, sources, r2): the best subset at m =
    1 … M (its actual number of sources), and for the Lasso and the relaxed Lasso the best R²
    over the α of the path with that many sources (1 … ``max_sources``)."""
    rows = [(SOURCES_SERIES[0], len(f.sources), f.r2) for f in curve.best if np.isfinite(f.r2)]
    rows = list(dict(((n, name), (name, n, r)) for name, n, r in rows).values())  # one point per size
    for name, n, r2 in ((SOURCES_SERIES[1], curve.relaxed_n, curve.relaxed_r2),
                        (SOURCES_SERIES[2], curve.lasso_n, curve.lasso_r2)):
        n, r2 = np.asarray(n), np.asarray(r2, dtype=float)
        for size in np.unique(n[(n >= 1) & (n <= max_sources) & np.isfinite(r2)]):
            rows.append((name, int(size), float(r2[(n == size) & np.isfinite(r2)].max())))
    return pd.DataFrame(rows, columns=["method", "sources", "r2"])


def fewest_sources(n, r2, fit: float = FIT_R2) -> int | None:
    """The fewest sources (≥ 1) with which R² reaches ``fit``, else None."""
    n, r2 = np.asarray(n), np.nan_to_num(np.asarray(r2, dtype=float), nan=-np.inf)
    ok = (r2 >= fit) & (n >= 1)
    return int(n[ok].min()) if ok.any() else None


def sources_chart(curve, card, sparsest: int | None = ...) -> SourcesChart:
    """The chart of R² against the number of sources, the dependency ``card`` shows circled
    (``sparsest``: ``curve.sparsest_fit()`` when known)."""
    here = (len(card.sources), card.metrics.r2) if np.isfinite(card.metrics.r2) and len(card.sources) else None
    return SourcesChart(curve_frame(curve), here, curve.sparsest_fit() if sparsest is ... else sparsest,
                        fewest_sources(curve.lasso_n, curve.lasso_r2), len(curve.m))


def scatter_points(cov: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """Indices of the scatter's points: all of them up to MAX_SCATTER, else every non-zero
    coefficient and the zeros with the largest |C_tj| (the small ones pile up at 0)."""
    if len(cov) <= MAX_SCATTER:
        return np.arange(len(cov))
    nz = np.flatnonzero(coef)
    zeros = np.flatnonzero(coef == 0)
    room = max(0, MAX_SCATTER - len(nz))
    top = zeros[np.argsort(-np.abs(cov[zeros]), kind="stable")[:room]]
    return np.sort(np.concatenate([nz, top]))
