"""A dependency's coefficient table as plain HTML: quick for the browser, readable on a projector.

One row per source, strongest first: the class image (glyphs always), the name, θ_j as a
signed number beside a bar whose length is |θ_j| relative to the strongest source (blue
positive, orange negative, as in every chart and graph), and the covariance C_tj. The page's
first paint waits for it (a data-grid would load ~1 MB of script for a few dozen rows); the
CSV/JSON exports carry the same rows for sorting elsewhere. Names come from the store and
are escaped. The styles are the page's (``style.CSS``, ``.nde-coefs``).
"""

from __future__ import annotations

import base64
import html
import json

import numpy as np
import pandas as pd

from dashboard.components.style import edge_color

BAR_EM = 4.0  # the strongest source's bar, in em


def _image_cell(png: bytes | None) -> str:
    if not png:
        return '<td class="img"></td>'
    return f'<td class="img"><img alt="" src="data:image/png;base64,{base64.b64encode(png).decode()}"></td>'


def coef_table_html(frame: pd.DataFrame, images: dict | None = None, *,
                    source_label: str = "source category", max_height: int = 420) -> str:
    """The table for ``frame`` (columns index, name, coef and optionally covariance, strongest
    first: :func:`engine.apps.views.dependency_frame`); ``images``: class PNG by source index."""
    images = images or {}
    with_images = any(images.get(int(j)) for j in frame["index"])
    with_cov = "covariance" in frame.columns
    scale = float(np.abs(frame["coef"]).max()) if len(frame) else 1.0
    head = ('<th class="img"></th>' if with_images else "") + f"<th>{html.escape(source_label)}</th><th>θ_j</th>" + \
        ("<th>C_tj</th>" if with_cov else "")
    rows = []
    covariances = frame["covariance"] if with_cov else [None] * len(frame)
    for j, name, coef, cov in zip(frame["index"], frame["name"], frame["coef"], covariances):
        j, coef = int(j), float(coef)
        width = BAR_EM * abs(coef) / scale if scale > 0 else 0.0
        cells = [
            _image_cell(images.get(j)) if with_images else "",
            f'<td class="name" title="{html.escape(str(name))}">{html.escape(str(name))}</td>',
            f'<td class="num"><span class="bar" style="width:{width:.2f}em;background:{edge_color(coef)}">'
            f'</span>{coef:+.4f}</td>',
            f'<td class="num">{float(cov):.3f}</td>' if with_cov else "",
        ]
        rows.append(f'<tr data-source="{j}" data-coef="{coef!r}">{"".join(cells)}</tr>')
    return (f'<div class="nde-coefs" style="max-height:{int(max_height)}px"><table>'
            f'<thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def _plain(value):
    """A cell's value as JSON takes it (NaN as null, numpy scalars as Python's)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return str(value)


def frame_table_html(frame: pd.DataFrame, columns: list[tuple[str, str, str]], *, max_height: int = 420,
                     signed: tuple[str, ...] = ()) -> str:
    """A small table of ``frame`` as plain HTML in the coefficient table's style: text columns
    wrap (never clipped, the full text in a tooltip), numbers stay whole on one line.

    ``columns``: (column, title, format) with format ``"text"``, ``"check"`` (✓ or nothing) or
    a ``str.format`` pattern such as ``"{:.3f}"``; NaN shows as "—". ``signed``: numeric
    columns coloured by sign (blue positive, orange negative)."""
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in columns)
    rows = []
    for record in frame.to_dict(orient="records"):
        cells = []
        for n, (column, _, fmt) in enumerate(columns):
            value = record[column]
            if fmt == "text":  # the first text column is the name (wraps anywhere), the others at spaces
                text = html.escape(str(value))
                cells.append(f'<td class="{"name" if n == 0 else "label"}" title="{text}">{text}</td>')
                continue
            if fmt == "check":
                cells.append(f'<td class="num">{"✓" if value else ""}</td>')
                continue
            number = float(value)
            shown = "—" if not np.isfinite(number) else fmt.format(number)
            colour = f' style="color:{edge_color(number)}"' if column in signed and np.isfinite(number) and number else ""
            cells.append(f'<td class="num"{colour}>{html.escape(shown)}</td>')
        raw = {column: _plain(record[column]) for column, _, _ in columns}  # the unrounded row, for tests and tools
        rows.append(f'<tr data-row="{html.escape(json.dumps(raw, ensure_ascii=False))}">{"".join(cells)}</tr>')
    return (f'<div class="nde-coefs nde-table" style="max-height:{int(max_height)}px"><table>'
            f'<thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')
