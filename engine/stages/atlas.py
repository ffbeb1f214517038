"""The Atlas stage: the dependency graph of every target at one α, and its communities.

Building the graph of all K targets and running Louvain on it is all-target work (seconds
at 1,000 categories, a minute or more at 21,843): the ``atlas`` job computes and caches it;
the Atlas page reads it, and draws only the few targets a user picks
(:func:`engine.core.analysis.dependency_graph`).
"""

from __future__ import annotations

import logging

import networkx as nx
import numpy as np

from engine.core.analysis import top_edges
from engine.stages.alpha_paths import DependencyPath, PathSpec
from engine.stages.pairing import PAPER_ALPHAS
from engine.storage.derived import declare_derived
from engine.storage.store import Cache

log = logging.getLogger(__name__)


def default_alpha_index(path: DependencyPath) -> int:
    """The α the Atlas page opens at: the paper's α when the path's grid holds it, else the
    grid's α nearest a tenth of the median α_max (the page's ``widgets.default_alpha``)."""
    alphas = np.asarray(path.alphas, dtype=float)
    for paper in PAPER_ALPHAS:
        if paper in alphas.tolist():
            return int(alphas.tolist().index(paper))
    wanted = float(np.median(path.alpha_max_held)) / 10
    return int(np.argmin(np.abs(np.log(alphas) - np.log(wanted))))


COMMUNITIES = declare_derived("communities", ("nodes", "sizes"), 3, "the Atlas's communities at one α")


def communities_key(spec: PathSpec, alpha_index: int, top_k: int, min_coef: float) -> dict:
    return {**spec.key(), "alpha_index": int(alpha_index), "top_k": int(top_k), "min_coef": float(min_coef)}


def compute_communities(cache: Cache, spec: PathSpec, path: DependencyPath, alpha_index: int, top_k: int,
                        min_coef: float) -> list[list[int]]:
    """Louvain communities (largest first) of every target's top-k graph at ``alphas[alpha_index]``,
    over the targets the path reaches there; cached."""
    reached = path.reached(alpha_index)
    coef = path.at_alpha(alpha_index)
    src, tgt, val = top_edges(coef.select(np.flatnonzero(reached)), path.targets[reached], top_k, min_coef)
    found = louvain(src, tgt, val)
    nodes = np.concatenate([np.asarray(m, dtype=np.int64) for m in found]) if found else np.zeros(0, np.int64)
    sizes = np.array([len(m) for m in found], dtype=np.int64)
    cache.save_derived(COMMUNITIES, communities_key(spec, alpha_index, top_k, min_coef),
                       {"nodes": nodes, "sizes": sizes}, spec.pairing.names())
    return found


def louvain(src: np.ndarray, tgt: np.ndarray, val: np.ndarray, seed: int = 0) -> list[list[int]]:
    """Louvain communities of the undirected graph with weights |coef| (summed both ways),
    largest first; nodes without an edge are left out."""
    und = nx.Graph()
    for u, v, w in zip(src.tolist(), tgt.tolist(), np.abs(val).tolist()):
        if u == v:
            continue
        if und.has_edge(u, v):
            und[u][v]["weight"] += w
        else:
            und.add_edge(u, v, weight=w)
    if und.number_of_edges() == 0:
        return []
    found = nx.community.louvain_communities(und, weight="weight", seed=seed)
    return sorted((sorted(c) for c in found), key=lambda c: (-len(c), c[0]))


def read_communities(cache: Cache, spec: PathSpec, alpha_index: int, top_k: int, min_coef: float
                     ) -> list[list[int]] | None:
    hit = cache.load_derived(COMMUNITIES, communities_key(spec, alpha_index, top_k, min_coef))
    if hit is None:
        return None
    nodes, sizes = hit[0]["nodes"], hit[0]["sizes"]
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [nodes[bounds[i] : bounds[i + 1]].tolist() for i in range(len(sizes))]
