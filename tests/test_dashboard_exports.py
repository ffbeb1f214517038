"""Exports: charts to PNG/SVG offline (vl-convert), graphs as standalone offline HTML."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from dashboard.components import charts
from dashboard.components.graph import star_graph
from engine.apps import views
from engine.ingest.class_images import glyph_png


def test_chart_exports_png_and_svg():
    frame = pd.DataFrame({"covariance": [-0.5, 0.1, 0.9], "coef": [-0.2, 0.0, 0.4], "name": ["a", "b", "c"]})
    chart = charts.covariance_scatter(frame, 0.3, "Fig. 3")
    png = charts.chart_png(chart)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    svg = charts.chart_svg(chart)
    assert svg.lstrip().startswith("<svg") and "Fig. 3" in svg
    assert chart.for_streamlit()["datasets"]["points"].shape[0] == 3


def test_star_graph_is_standalone_and_offline():
    html = star_graph("O LATIN CAPITAL LETTER O", [(1, "0 DIGIT ZERO", 0.4), (2, "C LATIN CAPITAL LETTER C", -0.1)],
                           {1: glyph_png("0"), "target": glyph_png("O")}, title="O").standalone()
    assert "new vis.Network" in html and 'data-nodes="3"' in html
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", html)
    assert "bootstrap" not in html.lower()
    assert "#1d4ed8" in html and "#ea580c" in html  # positive / negative edge colours


def test_class_names_cannot_break_out_of_the_script():
    html = star_graph("</script><script>alert(1)</script>", [(1, "x", 0.5)], {}, title="t").standalone()
    assert "</script><script>alert(1)" not in html


def test_dependency_formula_and_markdown():
    frame = views.dependency_frame(np.array([3, 1]), np.array([0.2, -0.5]), ["a", "b", "c", "d"])
    assert list(frame["name"]) == ["b", "d"]
    assert views.dependency_formula("t", frame) == "t ≈ −0.500·b + 0.200·d"


def test_stored_chart_specs_match_the_altair_builders():
    """chart_specs.json (read at start instead of importing altair) is what the builders make."""
    import json

    stored = json.loads(charts.SPECS_FILE.read_text(encoding="utf-8"))
    assert stored["specs"] == json.loads(json.dumps(charts.build_specs())), \
        "a chart changed: run `python -m dashboard.components.charts` to rewrite chart_specs.json"


def test_dashboard_start_imports_neither_torch_nor_altair():
    """The first page only reads caches: the engine's solver (torch) and altair stay unloaded."""
    import subprocess
    import sys

    code = ("import sys, dashboard.components.loaders, dashboard.components.widgets, dashboard.components.graph, "
            "dashboard.components.charts as c, pandas as pd; "
            "c.covariance_scatter(pd.DataFrame({'covariance': [0.1], 'coef': [0.2], 'name': ['a']}), 0.3, 't'); "
            "print(sorted(m for m in ('torch', 'altair', 'sklearn', 'timm', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=charts.SPECS_FILE.parents[2])
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
