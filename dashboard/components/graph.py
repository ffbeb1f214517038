"""Dependency graphs drawn by vis-network: pyvis builds them, nothing comes from a CDN.

pyvis's own templates link vis-network and Bootstrap from CDNs. Here pyvis only builds the
node, edge and option lists (a :class:`GraphView`), which our template renders in two ways:

- :meth:`GraphView.standalone`: the exported file, with the vis-network script that the pyvis
  package ships (``pyvis/lib/vis-9.1.2``) inlined, so it opens anywhere, offline;
- :meth:`GraphView.embedded`: the dashboard's iframe, which loads that same script from the
  app's static folder (``dashboard/static/vendor``, copied there from pyvis on first use).
  The browser then parses it off its main thread and keeps it between reruns, instead of
  receiving and parsing ~0.5 MB of script with every graph.

vis-network's 220 kB stylesheet styles widgets these graphs do not use (navigation buttons,
the manipulation toolbar, the configurator); the template styles the one element they use,
the tooltip.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import networkx as nx
import numpy as np
import pyvis
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup
from pyvis.network import Network

from dashboard.components.style import NEG, POS, community_color, edge_color
from engine.apps.views import short_name
from engine.storage.atomic import write_bytes_atomic

_VIS_JS = Path(pyvis.__file__).parent / "lib" / "vis-9.1.2" / "vis-network.min.js"
_TEMPLATE_DIR = Path(__file__).parent
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"  # served at app/static/
VIS_STATIC = Path("vendor") / "vis-network-9.1.2.min.js"


@lru_cache(maxsize=1)
def _vis_js() -> str:
    return _VIS_JS.read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def vis_script_url() -> str | None:
    """The app-relative URL of vis-network in the static folder (copied from pyvis once), or
    None when the folder cannot be written (the graph then inlines the script)."""
    target = STATIC_DIR / VIS_STATIC
    data = _VIS_JS.read_bytes()
    try:
        if not target.is_file() or target.read_bytes() != data:
            target.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(target, data)
    except OSError:
        return None
    # relative: an iframe's srcdoc resolves it against the page's URL, base path included
    return f"app/static/{VIS_STATIC.as_posix()}"


@lru_cache(maxsize=1)
def _template():
    env = Environment(loader=FileSystemLoader(str(_TEMPLATE_DIR)), autoescape=True)
    return env.get_template("graph.html.j2")


def _script_json(value) -> Markup:
    """JSON safe inside <script>: no '</script>' can close the tag early."""
    text = json.dumps(value, ensure_ascii=False).replace("</", "<\\/").replace("<!--", "<\\!--")
    return Markup(text)


@dataclass(frozen=True)
class GraphView:
    """A graph ready to draw: vis-network's nodes, edges and options, a title and a legend."""

    title: str
    height: int
    nodes: list
    edges: list
    options: dict
    legend: str = ""

    @classmethod
    def from_pyvis(cls, net: Network, title: str, height: int, legend: str = "") -> GraphView:
        nodes, edges, _heading, _h, _w, options = net.get_network_data()
        opts = json.loads(options) if isinstance(options, str) else options
        return cls(title, height, nodes, edges, opts, legend)

    def standalone(self) -> str:
        """The whole page with vis-network inlined: no request of any kind (the export)."""
        return self._render(None)

    def embedded(self) -> str:
        """The page for the dashboard's iframe: vis-network from the app's static folder."""
        return self._render(vis_script_url())

    def _render(self, script_url: str | None) -> str:
        return _template().render(
            title=self.title,
            height=self.height,
            nodes=_script_json(self.nodes),
            edges=_script_json(self.edges),
            options=_script_json(self.options),
            n_nodes=len(self.nodes),
            n_edges=len(self.edges),
            legend=self.legend,
            pos_color=POS,
            neg_color=NEG,
            vis_url=script_url,
            vis_js=None if script_url else Markup(_vis_js().replace("</script", "<\\/script")),
        )


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _edge_width(coef: float, scale: float) -> float:
    return float(1.5 + 10.0 * min(abs(coef) / scale, 1.0))


def _static_options(font_size: int) -> dict:
    return {
        "physics": {"enabled": False},
        "interaction": {"hover": True, "tooltipDelay": 80, "navigationButtons": False,
                        "zoomView": True, "dragView": True},
        "nodes": {"font": {"size": font_size, "face": "DejaVu Sans, Arial, sans-serif",
                           "color": "#111827", "strokeWidth": 4, "strokeColor": "#ffffff"},
                  "borderWidth": 2},
        "edges": {"smooth": {"enabled": True, "type": "continuous", "roundness": 0.2},
                  "arrows": {"to": {"enabled": True, "scaleFactor": 0.6}},
                  "font": {"size": max(font_size - 4, 10), "align": "top",  # beside its edge, not across it
                           "strokeWidth": 4, "strokeColor": "#ffffff"}},
    }


def _add_node(net: Network, node_id, label: str, title: str, image: bytes | None, *,
              color: str, size: int, font_size: int, bold: bool = False) -> None:
    if image is not None and len(label) == 1:
        label = " "  # a glyph's image is its label
    common = {"label": label, "title": title, "size": size, "font": {"size": font_size,
              **({"bold": True} if bold else {})}}
    if image is not None:
        net.add_node(node_id, shape="image", image=_data_uri(image),
                     shapeProperties={"useBorderWithImage": True},
                     color={"border": color, "background": "#ffffff",
                            "highlight": {"border": color, "background": "#ffffff"}},
                     borderWidth=4 if bold else 2, **common)
    else:
        net.add_node(node_id, shape="dot", color={"background": color, "border": color}, **common)


def star_graph(
    target_name: str,
    sources: list[tuple[int, str, float]],
    images: dict[int | str, bytes | None],
    *,
    title: str,
    height: int = 560,
    labels: dict | None = None,
) -> GraphView:
    """The paper's Fig. 2: the target in the middle, its sources around it.

    sources: (index, name, coef) strongest first; images: class image PNG by source index and
    ``"target"`` (missing or None: a plain dot). Edge width and colour follow |coef| and sign.
    labels: the nodes' short labels by source index, ``"target"`` and ``"legend"`` (missing:
    :func:`engine.apps.views.short_name` of the name).
    """
    labels = labels or {}
    net = Network(height=f"{height}px", width="100%", directed=True, cdn_resources="local")
    net.set_options(json.dumps(_static_options(20)))
    _add_node(net, "target", labels.get("target") or short_name(target_name, 36), target_name, images.get("target"),
              color="#111827", size=46, font_size=24, bold=True)
    scale = max((abs(c) for _, _, c in sources), default=1.0) or 1.0
    n = len(sources)
    radius = 200 + 14 * max(n - 8, 0)
    for k, (j, name, coef) in enumerate(sources):
        angle = -np.pi / 2 + 2 * np.pi * k / max(n, 1)
        _add_node(net, int(j), labels.get(int(j)) or short_name(name, 24), f"{name}\nθ = {coef:+.4f}", images.get(int(j)),
                  color=edge_color(coef), size=30, font_size=20)
        node = net.get_node(int(j))
        node.update({"x": float(radius * np.cos(angle)), "y": float(radius * np.sin(angle))})
        label = f"{coef:+.3f}" if n <= 12 else None  # beyond a dozen, labels only clutter
        net.add_edge(int(j), "target", width=_edge_width(coef, scale), color=edge_color(coef),
                     title=f"θ = {coef:+.5f}", **({"label": label} if label else {}))
    net.get_node("target").update({"x": 0.0, "y": 0.0})
    legend = f"{n} source{'s' if n != 1 else ''} → {labels.get('legend') or short_name(target_name, 40)}."
    return GraphView.from_pyvis(net, title, height, legend)


def atlas_graph(
    graph: nx.DiGraph,
    positions: dict,
    targets: set,
    community_of: dict,
    images: dict,
    *,
    title: str,
    height: int = 720,
) -> GraphView:
    """The paper's Fig. 4: selected targets inside, the categories they depend on around them.

    Node colour: community; edge colour and width: sign and |coef|.
    """
    net = Network(height=f"{height}px", width="100%", directed=True, cdn_resources="local")
    opts = _static_options(16)
    opts["edges"]["font"] = {"size": 0}
    net.set_options(json.dumps(opts))
    coefs = [abs(d["coef"]) for _, _, d in graph.edges(data=True)]
    scale = float(np.percentile(coefs, 95)) if coefs else 1.0
    for node, data in graph.nodes(data=True):
        is_target = node in targets
        color = community_color(community_of.get(node, -1))
        _add_node(net, str(node), short_name(data["name"], 22), data["name"], images.get(node),
                  color=color, size=30 if is_target else 18, font_size=18 if is_target else 14,
                  bold=is_target)
        x, y = positions[node]
        net.get_node(str(node)).update({"x": float(x), "y": float(y)})
    for u, v, data in graph.edges(data=True):
        c = data["coef"]
        net.add_edge(str(u), str(v), width=_edge_width(c, scale) * 0.6, color=edge_color(c),
                     title=f"{graph.nodes[u]['name']} → {graph.nodes[v]['name']}: θ = {c:+.4f}")
    legend = f"{len(targets)} targets (inner ring), {graph.number_of_nodes() - len(targets)} sources; node colour = community."
    return GraphView.from_pyvis(net, title, height, legend)
