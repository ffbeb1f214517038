"""The engine's shape, checked from its source: no import cycles, a solver that never reaches
the store, and one owner of the cache's layout."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent


def _import_graph() -> nx.DiGraph:
    """engine module → engine modules it imports (top level or inside functions alike)."""
    mods = {}
    for p in (ROOT / "engine").rglob("*.py"):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = p
    graph = nx.DiGraph()
    graph.add_nodes_from(mods)
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                # a module's own package initialises first: not a dependency
                if target in mods and target != name and not name.startswith(target + "."):
                    graph.add_edge(name, target)
    return graph


def test_no_import_cycles_in_the_engine():
    cycles = list(nx.simple_cycles(_import_graph()))
    assert cycles == [], f"import cycles: {cycles}"


def test_the_solver_and_the_gram_never_reach_the_store():
    graph = _import_graph()
    for core in ("engine.core.covlasso", "engine.core.covlasso_kernels", "engine.core.covlasso_types",
                 "engine.core.gram", "engine.core.sparse"):
        reached = nx.descendants(graph, core)
        assert "engine.storage.store" not in reached, f"{core} reaches the store through {sorted(reached)}"


_LAYOUT = re.compile(r'"jobs\.sqlite"|/ "(?:partial|runs|datasets|derived|quarantine|verified|stores|objects|locks|jobs)"')


def test_only_the_cache_knows_its_layout():
    """Every path under a cache comes from engine.storage.layout (the base of Cache)."""
    offenders = [str(p.relative_to(ROOT)) for folder in ("engine", "dashboard") for p in (ROOT / folder).rglob("*.py")
                 if p.name != "layout.py" and _LAYOUT.search(p.read_text())]
    assert offenders == []


def test_importing_the_engine_asks_torch_for_huge_pages_unless_told_otherwise():
    """``import engine`` sets THP_MEM_ALLOC_ENABLE=1 before torch's first allocation (the
    solver's large batched tensors, README), and a value the user set wins."""
    import os
    import subprocess
    import sys

    code = "import engine, os; print(os.environ['THP_MEM_ALLOC_ENABLE'])"
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    got = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert got.stdout.strip() == "1"
    got = subprocess.run([sys.executable, "-c", code], env={**env, "THP_MEM_ALLOC_ENABLE": "0"}, cwd=ROOT,
                         capture_output=True, text=True, check=True)
    assert got.stdout.strip() == "0"
