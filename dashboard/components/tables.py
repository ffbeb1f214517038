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

import numpy as np
import pandas as pd

from dashboard.components.style import edge_color

BAR_EM = 4.0  # the strongest source's bar, in em


def _image_cell(png: bytes | None) -> str:
    if not png:
        return "<td></td>"
    return f'<td><img alt="" src="data:image/png;base64,{base64.b64encode(png).decode()}"></td>'


def coef_table_html(frame: pd.DataFrame, images: dict | None = None, *,
                    source_label: str = "source category", max_height: int = 420) -> str:
    """The table for ``frame`` (columns index, name, coef and optionally covariance, strongest
    first: :func:`engine.views.dependency_frame`); ``images``: class PNG by source index."""
    images = images or {}
    with_images = any(images.get(int(j)) for j in frame["index"])
    with_cov = "covariance" in frame.columns
    scale = float(np.abs(frame["coef"]).max()) if len(frame) else 1.0
    head = ("<th></th>" if with_images else "") + f"<th>{html.escape(source_label)}</th><th>θ_j</th>" + \
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
