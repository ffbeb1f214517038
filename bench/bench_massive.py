"""A massive-category store, end to end: import, Gram, first category, slider, CLI, all-target job.

    python -m bench.bench_massive --k 1000              # minutes
    python -m bench.bench_massive --k 21843             # ImageNet-21k's size: long, ~12 GB of disk
    python -m bench.bench_massive --k 21843 --job-targets 1024   # the job on its first chunks only

Data: classifier-like logits (``engine.core.synthetic``; rank 64, N = 20,000 by default) written as
one ``.npz`` by blocks (the generator never holds them twice). Every step runs in its own
process, so each peak memory (VmHWM) is that step's alone:

1. ``import``: ``python -m engine import-logits`` (the store, then its Gram, streamed).
2. ``gram``: the Gram of the stored logits (``compute_gramset``: the store's float32 memory
   map in chunks of ``chunk_rows(K)`` rows), timed against a bare float64 GEMM on the same
   chunk shape before and after it — ``bench.gram_figures``, the convention bench_covlasso
   uses too: GEMM-equivalent GFLOP/s (2·N·K² / time) against the GEMM's, and the FLOPs done
   (N·K²) against it; ``syrk_at_gemm_speed_s`` is N·K² at the GEMM's rate, the import's bar.
3. ``dashboard``: the Explore page (Streamlit's AppTest: the real script, in process) on a
   category whose path was never solved: server time of the cold process (stores and Gram
   opened and verified), then of another never-solved category in the warm process, then of
   α-slider moves; the process's peak memory.
4. ``cli``: ``python -m engine dependencies --target`` for two categories (a fresh process).
5. ``job``: every target's α path (the ``paths`` job's function, in the foreground), or its
   first ``--job-targets`` targets and the time scaled to all of them (the report says so).

Writes bench/results/massive-K<k>.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from bench import bare_gemm_gflops, bare_gemm_rates, gram_figures

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def _peak_rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


# ----------------------------------------------------------------------------- data


def write_npz(path: Path, n: int, k: int, rank: int = 64, seed: int = 0, block: int = 1024) -> None:
    """classifier_like_logits' distribution, generated and written by blocks of rows."""
    from engine.core.synthetic import _weights

    rng, protos, W = _weights(k, rank, seed)
    labels = rng.integers(0, k, size=n).astype(np.int64)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open("logits.npy", "w", force_zip64=True) as handle:
            np.lib.format.write_array_header_2_0(handle, {"descr": "<f4", "fortran_order": False, "shape": (n, k)})
            for s in range(0, n, block):
                lab = labels[s : s + block]
                h = protos[lab] * 6.0 + rng.standard_normal((len(lab), rank)) * 0.8
                f = h @ W.T + 0.3 * rng.standard_normal((len(lab), k))
                handle.write(f.astype(np.float32).tobytes())
        with archive.open("labels.npy", "w") as handle:
            np.lib.format.write_array(handle, labels)


# ----------------------------------------------------------------------------- steps (own process)


def step_import(args) -> dict:
    """The import, between two reference GEMMs in the same process (``bench.gram_figures``):
    its time against a syrk of the store's Gram at the GEMM's rate — the bar's ratio — in
    wall-clock time and in CPU time (the GEMM's CPU seconds per FLOP: steadier on a loaded
    machine, where the wall clock measures the other processes too)."""
    import torch  # noqa: F401 - imported before the clock starts, as in step_gram

    from engine.cli import main

    with zipfile.ZipFile(args.npz) as archive, archive.open("logits.npy") as handle:
        fmt = np.lib.format
        read = fmt.read_array_header_1_0 if fmt.read_magic(handle) == (1, 0) else fmt.read_array_header_2_0
        n, k = read(handle)[0]
    before = bare_gemm_rates(k, repeat=1)
    t0, c0 = time.perf_counter(), time.process_time()
    code = main(["--cache", args.cache, "import-logits", args.npz, "--name", args.name])
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    after = bare_gemm_rates(k, repeat=1)
    fig = gram_figures(n, k, seconds, before[0], after[0])
    syrk_cpu = n * k * k / max(before[1], after[1]) / 1e9
    return {"seconds": seconds, "exit": code, "cpu_import_s": cpu, "bare_gemm_gflops": fig["bare_gemm_gflops"],
            "bare_gemm_before_after": fig["bare_gemm_before_after"], "syrk_at_gemm_speed_s": fig["syrk_at_gemm_speed_s"],
            "ratio_to_syrk_at_gemm_speed": seconds / fig["syrk_at_gemm_speed_s"],
            "bare_gemm_gflops_per_cpu_s": [before[1], after[1]], "syrk_at_gemm_speed_cpu_s": syrk_cpu,
            "ratio_to_syrk_at_gemm_speed_cpu": cpu / syrk_cpu}


def step_gram(args) -> dict:
    import torch  # noqa: F401 - imported before the clock starts (the first import takes seconds)

    from engine.stages.gramsets import compute_gramset
    from engine.storage.store import Cache

    store = Cache(args.cache).load_store(args.name)
    n, k = store.n, store.k
    repeat = 3 if k <= 5000 else 1  # at K = 21,843 one reference GEMM of a chunk takes ~8 s
    before = bare_gemm_gflops(k, repeat=repeat)  # bench.gram_figures: the convention of every bench
    t0 = time.perf_counter()
    gs = compute_gramset(store, device="cpu")
    seconds = time.perf_counter() - t0
    del gs
    return gram_figures(n, k, seconds, before, bare_gemm_gflops(k, repeat=repeat))


def step_dashboard(args) -> dict:
    from streamlit.testing.v1 import AppTest

    os.environ["NDE_CACHE"] = args.cache
    app = str(ROOT / "dashboard" / "app.py")
    out = {}
    if args.warm_up:  # what `python -m dashboard` does in the background while the browser loads
        from dashboard.__main__ import _open_first_store

        t0 = time.perf_counter()
        _open_first_store()
        out["launcher_warm_up_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    at = AppTest.from_file(app, default_timeout=600)
    at.query_params.update({"model": args.name, "target": str(args.targets[0])})
    at.run()
    out["cold_first_category_s"] = time.perf_counter() - t0
    _check(at)
    target = next(s for s in at.selectbox if s.label == "Target category")
    t0 = time.perf_counter()
    target.set_value(args.targets[1]).run()
    out["warm_new_category_s"] = time.perf_counter() - t0
    _check(at)
    at.run()  # the charts' deferred draw
    moves = []
    slider = at.select_slider[0]
    options = list(slider.options)
    for i in range(min(8, len(options))):
        t0 = time.perf_counter()
        at.select_slider[0].set_value(float(str(options[(i * 3) % len(options)]).split()[0])).run()
        moves.append(time.perf_counter() - t0)
        _check(at)
    out["slider_median_s"] = float(np.median(moves))
    out["slider_max_s"] = float(np.max(moves))
    return out


def _check(at) -> None:
    if at.exception:
        raise RuntimeError(str(at.exception))


def step_cli(args) -> dict:
    from engine.cli import main

    out = Path(args.cache) / "deps.json"
    t0 = time.perf_counter()
    code = main(["--cache", args.cache, "dependencies", "--model", args.name, "--alpha", str(args.alpha),
                 "--target", *map(str, args.targets), "--json", str(out)])
    seconds = time.perf_counter() - t0
    report = json.loads(out.read_text())
    return {"seconds": seconds, "exit": code, "sources": [len(t["sources"]) for t in report["targets"]]}


def step_job(args) -> dict:
    from engine.stages.alpha_paths import compute_all_paths, path_spec, solve_targets
    from engine.stages.gramsets import load_gramset, resident_gramset
    from engine.stages.pairing import open_pairing
    from engine.storage.store import Cache

    cache = Cache(args.cache)
    pairing = open_pairing(cache, args.name)
    spec = path_spec(cache, pairing)
    k = pairing.model.k
    t0 = time.perf_counter()
    if args.job_targets and args.job_targets < k:  # what compute_all_paths does, on the first chunks
        gs = resident_gramset(load_gramset(cache, pairing))
        done = 0
        for start in range(0, args.job_targets, 256):
            solve_targets(cache, spec, np.arange(start, min(start + 256, args.job_targets)), gs=gs)
            done = min(start + 256, args.job_targets)
        seconds = time.perf_counter() - t0
        return {"targets_solved": done, "seconds": seconds, "scaled_to_all_s": seconds * k / done,
                "alphas": len(spec.alphas)}
    path = compute_all_paths(cache, spec)
    seconds = time.perf_counter() - t0
    return {"targets_solved": k, "seconds": seconds, "alphas": len(spec.alphas),
            "median_sources_at_paper_alpha": _median_at(path, 0.25)}


def _median_at(path, alpha: float) -> float:
    a = path.nearest_alpha_index(alpha)
    sizes = path.support_sizes[:, a][path.reached(a)]
    return float(np.median(sizes)) if sizes.size else float("nan")


STEPS = {"import": step_import, "gram": step_gram, "dashboard": step_dashboard, "cli": step_cli, "job": step_job}


def run_step(args) -> None:
    import resource

    result = STEPS[args.step](args)
    result["peak_rss_gib"] = _peak_rss_gib()
    usage = resource.getrusage(resource.RUSAGE_SELF)  # the whole process: start-up included
    result["cpu_s"] = usage.ru_utime + usage.ru_stime
    result["load_after"] = os.getloadavg()[0]
    print("RESULT " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- driver


def _in_process(step: str, args, extra: list[str] | None = None) -> dict:
    cmd = [sys.executable, "-m", "bench.bench_massive", "--step", step, "--cache", args.cache, "--name", args.name,
           "--npz", args.npz, "--alpha", str(args.alpha), "--targets", *map(str, args.targets),
           "--job-targets", str(args.job_targets), *(["--warm-up"] if args.warm_up else []), *(extra or [])]
    print(f"[{time.strftime('%H:%M:%S')}] {step} …", file=sys.stderr, flush=True)
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"step {step} failed:\n{done.stderr[-4000:]}")
    result = json.loads(lines[-1][7:])
    print(f"    {result}", file=sys.stderr, flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--alpha", type=float, default=0.25, help="α of the CLI step (the paper's Swin-T α)")
    ap.add_argument("--targets", type=int, nargs=2, default=[5, 17], help="the two never-solved categories")
    ap.add_argument("--job-targets", type=int, default=0, help="solve only the first N targets in the job step")
    ap.add_argument("--warm-up", action="store_true",
                    help="dashboard step: run the launcher's background warm-up first (timed apart)")
    ap.add_argument("--dir", help="work folder (default: a temporary one, removed)")
    ap.add_argument("--steps", nargs="*", default=list(STEPS))
    ap.add_argument("--step", choices=list(STEPS), help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    ap.add_argument("--name", default="", help=argparse.SUPPRESS)
    ap.add_argument("--npz", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.step:
        run_step(args)
        return 0
    with tempfile.TemporaryDirectory(prefix="nde-massive-", dir=args.dir) as tmp:
        work = Path(tmp)
        args.cache, args.name, args.npz = str(work / "cache"), f"massive-{args.k}", str(work / "logits.npz")
        t0 = time.perf_counter()
        write_npz(Path(args.npz), args.n, args.k)
        print(f"wrote {args.npz} ({os.path.getsize(args.npz) / 2**30:.2f} GiB) in {time.perf_counter() - t0:.0f} s",
              file=sys.stderr)
        results = {"k": args.k, "n": args.n, "logits_gib": args.n * args.k * 4 / 2**30,
                   "gram_gib": args.k * args.k * 8 / 2**30, "cpu_count": os.cpu_count(),
                   "load": os.getloadavg()[0]}
        for step in [s for s in STEPS if s in args.steps]:
            results[step] = _in_process(step, args)
        results["load_after"] = os.getloadavg()[0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"massive-K{args.k}.json"
    out.write_text(json.dumps(results, indent=1))
    print(markdown(results))
    print(f"(written to {out})", file=sys.stderr)
    return 0


def markdown(r: dict) -> str:
    rows = [f"K = {r['k']:,}, N = {r['n']:,} (logits {r['logits_gib']:.2f} GiB, Gram {r['gram_gib']:.2f} GiB), "
            f"load {r['load']:.1f} → {r.get('load_after', float('nan')):.1f}", "",
            "| step | figure | peak memory |", "|---|---|---|"]
    if "import" in r:
        i = r["import"]
        rows.append(f"| import-logits (store + Gram) | {i['seconds']:.1f} s ({i['cpu_import_s']:.0f} s CPU) | "
                    f"{i['peak_rss_gib']:.2f} GiB |")
        rows.append(f"| import / a syrk of its Gram at the GEMM's rate (same process: GEMM {i['bare_gemm_gflops']:.0f} "
                    f"GFLOP/s) | {i['ratio_to_syrk_at_gemm_speed']:.2f}× wall, {i['ratio_to_syrk_at_gemm_speed_cpu']:.2f}× "
                    "CPU time | |")
    if "gram" in r:
        g = r["gram"]
        rows.append(f"| Gram (streamed, float64) | {g['seconds']:.1f} s = {g['gflops_gemm_equivalent']:.0f} GFLOP/s "
                    f"GEMM-equivalent, {100 * g['ratio']:.0f} % of a bare GEMM ({g['bare_gemm_gflops']:.0f} GFLOP/s; "
                    f"FLOPs done at {100 * g['flop_efficiency']:.0f} % of its rate; a syrk at its rate: "
                    f"{g['syrk_at_gemm_speed_s']:.1f} s) | {g['peak_rss_gib']:.2f} GiB |")

    if "dashboard" in r:
        d = r["dashboard"]
        first = ("first page after the launcher's warm-up" if "launcher_warm_up_s" in d
                 else "cold process (no warm-up)")
        rows.append(f"| Explore, never-solved category: {first} / another one, warm | "
                    f"{d['cold_first_category_s']:.2f} s / {d['warm_new_category_s']:.2f} s | {d['peak_rss_gib']:.2f} GiB |")
        if "launcher_warm_up_s" in d:
            rows.append(f"| the launcher's warm-up (background, while the browser loads the app) | "
                        f"{d['launcher_warm_up_s']:.2f} s | |")
        rows.append(f"| α slider (median / max of 8) | {1000 * d['slider_median_s']:.0f} / "
                    f"{1000 * d['slider_max_s']:.0f} ms | |")
    if "cli" in r:
        rows.append(f"| dependencies --target (2 categories) | {r['cli']['seconds']:.1f} s | {r['cli']['peak_rss_gib']:.2f} GiB |")
    if "job" in r:
        j = r["job"]
        if j["targets_solved"] < r["k"]:
            text = (f"{j['seconds']:.0f} s for {j['targets_solved']:,} targets × {j['alphas']} α; scaled to all: "
                    f"{j['scaled_to_all_s'] / 60:.0f} min")
        else:
            text = f"{j['seconds']:.0f} s ({j['alphas']} α)"
        rows.append(f"| every target's α path (paths job) | {text} | {j['peak_rss_gib']:.2f} GiB |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
