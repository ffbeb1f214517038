"""``python -m engine demo``: prepare the embedded default (glyph world, three models) end to end.

Steps, each skipped when its result is already in the cache (a second run is a cache hit):

1. the glyph world's test split (rendered from matplotlib's fonts, cached by config hash);
2. logits of ``glyph-vgg``, ``glyph-resnet`` and ``glyph-vgg-seed2`` on it, through the same
   extraction code as user models (one store each, named as the model, each with its Gram);
3. the cross-Grams of the demo's pairs (``DEMO_PAIRS``), both ways;
4. every target's α path within each model and between them, the solutions at the
   default α, and every target's best dependency with 1 … 8 sources within each model (the stages of
   engine.stages.alpha_paths, engine.stages.solutions and engine.stages.sparsity, run here in the foreground: the
   dashboard then finds everything it shows already cached);
5. what the pages' first views read from all-target jobs (the ``theory``, ``paths`` and
   ``atlas`` jobs' stages, run here in the foreground): each model's redundancy, spectrum and
   Conjecture 1 check, the Atlas's communities at its default filters, and the least-squares
   floor of each pair — so no page of the default opens on a job button (issue 20);
6. the talk's slides (``engine.apps.talk``: the cache's talk file, written from its
   recommendations the first time, and the slides the Talk page shows).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import dataclass, field

from engine.core.covlasso_types import SolverConfig
from engine.stages.pairing import Pairing
from engine.storage.store import Cache

log = logging.getLogger(__name__)

DEMO_STORES = ("glyph-vgg", "glyph-resnet", "glyph-vgg-seed2")  # store name = model name; the dashboard opens these
# (targets, source): two architectures both ways, and the same architecture trained from another seed
DEMO_PAIRS = (("glyph-vgg", "glyph-resnet"), ("glyph-resnet", "glyph-vgg"),
              ("glyph-vgg", "glyph-vgg-seed2"), ("glyph-vgg-seed2", "glyph-vgg"))
# α of the demo's precomputed solutions: the paper's for ResNet and ViT, where the demo models'
# median category has 17-19 sources at R² >= 0.99 (docs/demo-models.md)
DEMO_ALPHA = 2.5


@dataclass
class DemoReport:
    steps: list[tuple[str, str, float]] = field(default_factory=list)  # (step, "hit"/"computed", s)

    def add(self, step: str, hit: bool, seconds: float) -> None:
        self.steps.append((step, "cache hit" if hit else "computed", seconds))

    @property
    def all_hits(self) -> bool:
        return all(s[1] == "cache hit" for s in self.steps)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="prepare the embedded default: glyph dataset, logits of three models, Grams, dependencies",
        description="Builds everything the dashboard shows on a fresh machine (no GPU, no internet); "
        "idempotent: a second run only checks the cache.",
    )
    p.add_argument("--alpha", type=float, default=DEMO_ALPHA, help=f"α of the demo dependencies (default {DEMO_ALPHA})")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="autocast on CPU (auto: fp32, i.e. exact logits)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def prepare_demo(cache: Cache, *, alpha: float = DEMO_ALPHA, batch_size: int = 500,
                 precision: str = "auto", progress: bool = True) -> DemoReport:
    """Make sure the demo stores, Grams and dependencies exist; return what was done."""
    from engine.ingest.data import GlyphDataset
    from engine.ingest.extract import extract_logits
    from engine.ingest.models import create_classifier
    from engine.stages.gramsets import has_gramset, load_gramset

    report = DemoReport()
    t = time.perf_counter()
    splits_dir_had = any(cache.datasets_dir.glob("glyphs-*/test-*.safetensors"))
    dataset = GlyphDataset("test", cache)
    report.add(f"glyph test split ({len(dataset)} images, {dataset.num_classes} classes)", splits_dir_had,
               time.perf_counter() - t)
    for name in DEMO_STORES:
        t = time.perf_counter()
        loaded = create_classifier(name)
        with cache.lock(f"demo-{name}"):  # extraction itself is a no-op when the store is current
            _, stats = extract_logits(cache, loaded, dataset, name, batch_size=batch_size,
                                      precision=precision, overwrite=True, progress=progress)
        report.add(f"logits + Gram of {name}", stats.cache_hit, time.perf_counter() - t)
    stores = {name: cache.load_store(name) for name in DEMO_STORES}
    for target, source in DEMO_PAIRS:
        t = time.perf_counter()
        hit = has_gramset(cache, stores[source], stores[target])
        load_gramset(cache, Pairing.of(stores[target], stores[source]))
        report.add(f"cross-Gram {source} -> {target}", hit, time.perf_counter() - t)
    _dependencies(cache, alpha, report)
    t = time.perf_counter()
    hit = prepare_stage_results(cache, list(DEMO_STORES), [tuple(p) for p in DEMO_PAIRS])
    report.add("redundancy, spectrum, Conjecture 1, communities and floors (the all-target jobs' results)",
               hit, time.perf_counter() - t)
    t = time.perf_counter()
    from engine.apps.talk.deck import prepare_deck

    _, hit = prepare_deck(cache)
    report.add("the talk's slides (the dashboard's Talk page, `python -m engine talk --export`)", hit,
               time.perf_counter() - t)
    return report


def _dependencies(cache: Cache, alpha: float, report: DemoReport) -> None:
    t = time.perf_counter()
    hit = prepare_demo_dependencies(cache, list(DEMO_STORES), [tuple(p) for p in DEMO_PAIRS], alpha)
    report.add(f"dependencies at alpha={alpha:g} and every α path (within each model and between them)",
               hit, time.perf_counter() - t)
    t = time.perf_counter()
    hit = prepare_demo_best_subsets(cache, list(DEMO_STORES))
    report.add("best dependencies with 1 … 8 sources, every target (within each model)",
               hit, time.perf_counter() - t)


def prepare_demo_best_subsets(cache: Cache, stores: list[str], pairs: list[tuple[str, str]] = ()) -> bool:
    """Every target's best subsets (m = 1 … 8) within each store and for ``pairs`` (the demo
    passes none: between models the pages solve the target shown, a third of a second, and the
    ``best-subsets`` job does every target); True when all were cache hits.

    The pairings are solved two at a time in threads: each search is batched torch work on one
    thread, which releases the GIL, so the two cores of a laptop both work (the demo's 3-minute
    bar)."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from engine.stages.pairing import open_pairing
    from engine.stages.sparsity import compute_all_best_subsets, has_all_best_subsets

    pairings = [open_pairing(cache, model, source) for model, source in
                [(s, s) for s in stores] + [tuple(p) for p in pairs]]
    hits = all(has_all_best_subsets(cache, p) for p in pairings)
    threads = torch.get_num_threads()  # each search sets (and restores) torch's thread count
    try:
        with ThreadPoolExecutor(max(1, min(2, os.cpu_count() or 1))) as pool:
            list(pool.map(lambda p: compute_all_best_subsets(cache, p), pairings))
    finally:
        torch.set_num_threads(threads)
    return hits


def prepare_demo_dependencies(
    cache: Cache, stores: list[str], pairs: list[tuple[str, str]], alpha: float
) -> bool:
    """Solutions at ``alpha`` and every target's α path (what the pages read) for every store
    (within) and every (model, source) pair (between). Returns True when all were cache hits."""
    from engine.stages.alpha_paths import compute_all_paths, path_progress, path_spec
    from engine.stages.pairing import open_pairing
    from engine.stages.solutions import SOLUTION, solve_dependencies

    hits = True
    for model, source in [(s, s) for s in stores] + [tuple(p) for p in pairs]:
        pairing = open_pairing(cache, model, source)
        hits &= cache.has_derived(SOLUTION, {**pairing.key(), "alpha": float(alpha),
                                             "solver": SolverConfig().key(), "layout": SOLUTION.version})
        solve_dependencies(cache, pairing, alpha)
        spec = path_spec(cache, pairing)
        hits &= path_progress(cache, spec).complete
        compute_all_paths(cache, spec)
        log.info("dependencies ready: %s from %s", model, source)
    return hits


# The Atlas page's default filters (its top-k slider and minimum |θ| box)
ATLAS_TOP_K, ATLAS_MIN_COEF = 4, 0.05


def prepare_stage_results(cache: Cache, stores: list[str], pairs: list[tuple[str, str]]) -> bool:
    """What the all-target jobs would make for the pages' first views: every store's redundancy
    and spectrum (``theory``), Conjecture 1 (``paths``) and communities at the Atlas's default α
    and filters (``atlas``); every pair's least-squares floor (``theory`` of the pair). Needs
    every path (:func:`prepare_demo_dependencies` first). Returns True when all were cached."""
    from engine.stages.alpha_paths import compute_all_paths, path_spec
    from engine.stages.atlas import compute_communities, default_alpha_index, read_communities
    from engine.stages.pairing import open_pairing
    from engine.stages.theory import (
        compute_floor,
        compute_redundancy,
        compute_screening,
        read_floor,
        read_redundancy,
        read_screening,
    )

    hits = True
    for name in stores:
        pairing = open_pairing(cache, name, name)
        if read_redundancy(cache, pairing) is None:
            hits = False
            compute_redundancy(cache, pairing)
        spec = path_spec(cache, pairing)
        path = compute_all_paths(cache, spec)  # a cache hit after the dependencies step
        if read_screening(cache, spec) is None:
            hits = False
            compute_screening(cache, spec, path)
        a = default_alpha_index(path)
        if read_communities(cache, spec, a, ATLAS_TOP_K, ATLAS_MIN_COEF) is None:
            hits = False
            compute_communities(cache, spec, path, a, ATLAS_TOP_K, ATLAS_MIN_COEF)
    for model, source in pairs:
        pairing = open_pairing(cache, model, source)
        if read_floor(cache, pairing) is None:
            hits = False
            compute_floor(cache, pairing)
    return hits


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    report = prepare_demo(Cache(args.cache), alpha=args.alpha, batch_size=args.batch_size,
                          precision=args.precision, progress=not args.no_progress)
    for step, status, seconds in report.steps:
        print(f"  {status:>9}  {seconds:6.1f} s  {step}")
    total = time.perf_counter() - t0
    if report.all_hits:
        print(f"demo: everything was already in {args.cache} (cache hit), checked in {total:.1f} s")
    else:
        print(f"demo: prepared in {total:.1f} s; stores {', '.join(DEMO_STORES)} are ready in {args.cache}")
    return 0
