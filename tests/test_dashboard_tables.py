"""The coefficient table (plain HTML): rows, order, bars, signs, images, and names escaped."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from dashboard.components.style import NEG, POS
from dashboard.components.tables import BAR_EM, coef_table_html
from engine.apps import views
from engine.ingest.class_images import glyph_png

NAMES = ["a", "b", "c", "d", "e"]


def _frame() -> pd.DataFrame:
    # sources 3 (θ = +0.4), 1 (−0.8), 4 (+0.2); covariances from a made-up Gram column
    return views.dependency_frame(np.array([3, 1, 4]), np.array([0.4, -0.8, 0.2]), NAMES,
                                  np.array([0.0, -1.5, 0.1, 0.9, 0.3]))


def _rows(table: str) -> list[tuple[int, float]]:
    return [(int(j), float(c)) for j, c in re.findall(r'<tr data-source="(\d+)" data-coef="([^"]+)">', table)]


def _bars(table: str) -> list[tuple[float, str]]:
    return [(float(w), c) for w, c in re.findall(r'class="bar" style="width:([\d.]+)em;background:(#[0-9a-f]+)"', table)]


def test_rows_follow_the_frame_strongest_first():
    table = coef_table_html(_frame())
    assert _rows(table) == [(1, -0.8), (3, 0.4), (4, 0.2)]
    assert "<th>C_tj</th>" in table and "-1.500" in table and "0.900" in table  # covariances shown


def test_bars_scale_with_the_coefficient_and_carry_its_sign():
    bars = _bars(coef_table_html(_frame()))
    assert bars == [(BAR_EM, NEG), (BAR_EM / 2, POS), (BAR_EM / 4, POS)]


def test_images_only_when_there_are_some():
    frame = _frame()
    assert "<img" not in coef_table_html(frame, {})
    table = coef_table_html(frame, {3: glyph_png("c")})
    assert table.count("<img") == 1 and table.count("<td class=\"img\"></td>") == 2  # the others get an empty cell


def test_names_are_escaped():
    frame = views.dependency_frame(np.array([0]), np.array([1.0]), ['<img src=x onerror="alert(1)">'])
    table = coef_table_html(frame, source_label="<b>A</b>")
    assert "<img src=x" not in table and "&lt;img src=x" in table
    assert "<b>A</b>" not in table


def test_an_empty_dependency_gives_an_empty_body():
    frame = views.dependency_frame(np.array([], dtype=int), np.array([]), NAMES)
    assert _rows(coef_table_html(frame)) == []
