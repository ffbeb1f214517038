"""How long the demo's α paths take to compute: within each model and between them.

    python -m bench.bench_paths                      # the demo cache (python -m engine demo first)
    python -m bench.bench_paths --full               # also the whole grid, without the sparsity stop

For each (model, source) pairing of the demo, the path the dashboard reads is computed from
the cached Grams — not read from the cache — in this process, one pairing after another,
exactly as ``python -m engine demo`` computes it (engine.stages.alpha_paths.GridRule: each target's path
stops after its first α with more than 64 sources), and timed: wall time, this process's CPU
time (what a quiet machine waits for), number of α values, the median number of sources at
the paper's α. ``--threads 1 0`` times one worker thread against the default (one per core),
interleaved per pairing. Prints JSON (``--json FILE`` writes it too).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import print_report  # noqa: E402
from engine.commands.demo import DEMO_PAIRS, DEMO_STORES  # noqa: E402

PAIRINGS = (*((m, m) for m in DEMO_STORES), *DEMO_PAIRS)  # (targets, sources)


def time_path(cache, model: str, source: str, stop: bool, threads: int = 0) -> dict:
    from engine.core.covlasso import SolverConfig
    from engine.stages.alpha_paths import GridRule, path_spec, solve_targets
    from engine.stages.pairing import open_pairing

    pairing = open_pairing(cache, model, source)
    spec = path_spec(cache, pairing, rule=GridRule(max_sources=GridRule.max_sources if stop else 10**9),
                     config=SolverConfig(threads=threads))
    t0, c0 = time.perf_counter(), time.process_time()
    path = solve_targets(cache, spec, np.arange(pairing.model.k))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    a = path.nearest_alpha_index(0.25)
    return {"targets": model, "sources": source, "stop": stop, "threads": threads, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "alphas": len(path.alphas), "last_alpha": float(path.alphas[-1]),
            "median_alphas_per_target": float(np.median(path.n_alphas)),
            "median_sources_at_0.25": float(np.median(path.support_sizes[path.reached(a), a]))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=ROOT / "cache")
    ap.add_argument("--full", action="store_true", help="also time the whole grid (no sparsity stop)")
    ap.add_argument("--json", type=Path, help="also write the report here")
    ap.add_argument("--threads", type=int, nargs="+", default=[0],
                    help="the solver's worker threads (SolverConfig.threads; 0, the default: one per core); "
                         "several values are timed interleaved, e.g. --threads 1 0")
    args = ap.parse_args(argv)
    import torch  # imported once, outside the timings (the first solve would import it)

    from engine.storage.store import Cache

    torch.zeros(1)
    cache = Cache(args.cache)
    rows = []
    for model, source in PAIRINGS:
        for stop in (True, False) if args.full else (True,):
            for threads in args.threads:
                rows.append(time_path(cache, model, source, stop, threads))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    totals = {str(t): {"wall_s": round(sum(r["wall_s"] for r in rows if r["stop"] and r["threads"] == t), 1),
                       "cpu_s": round(sum(r["cpu_s"] for r in rows if r["stop"] and r["threads"] == t), 1)}
              for t in args.threads}
    report = {"machine": {"cpus": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 2)},
              "total_cpu_s_with_stop": round(sum(r["cpu_s"] for r in rows if r["stop"] and r["threads"] == args.threads[0]), 1),
              "totals_with_stop_by_threads": totals, "paths": rows}
    print_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
