"""CovLasso speed and memory against two references, in one process, on the same data.

    python -m bench.bench_covlasso                 # K = 1,000, N = 50,000 (a few minutes)
    python -m bench.bench_covlasso --k 21843       # ImageNet-21k size (long; needs ~10 GiB)
    python -m bench.bench_covlasso --quick         # K = 300, N = 10,000 (smoke run)

References:
1. the paper's recipe: sklearn ``Lasso(alpha, fit_intercept=False, max_iter=50000)`` on the
   raw N×(K−1) design, one target after another (a sample of targets is timed and the
   time scaled to all targets; the script says so);
2. the compiled anchor: scikit-learn's Gram-form coordinate descent (its Cython
   ``enet_coordinate_descent_gram``, with its gap-safe screening) applied target by target
   to the same Gram, to the same relative gap. Private sklearn API, used here only. It runs
   with its BLAS held to one thread: its calls are level-1 (dot, axpy on K-vectors), which a
   thread pool only slows (measured: 2.7–3.0 s on one thread against 2.4–13.5 s wall, 4.6–8.8
   CPU-s unrestricted on a quiet machine at a median of 200 sources).

Ours runs with ``SolverConfig.threads`` worker threads (``--threads``; the default, 0, is one
per core, at most 4), each solving a chunk of targets on one torch thread; the table gives
× anchor in wall-clock and in CPU time (the CPU ratio is the one-core comparison).

Data: classifier-like synthetic logits (``engine.core.synthetic``); α is chosen so the median
number of sources is ~15, ~60 and ~200 (on small-scale logits α = 2.5 would leave most
targets empty). Ours and the anchor are timed ``--repeat`` times, interleaved (× anchor: the
median; each pair's wall-clock and CPU-time ratio is kept). The Gram is timed three times
against a bare GEMM as ``bench_massive`` times it (``bench.gram_figures``). Prints a
Markdown table and writes bench/results/covlasso-K<k>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import time
from pathlib import Path

import numpy as np

from bench import bare_gemm_gflops, gram_figures
from engine.core.covlasso import SolverConfig, alpha_max, solve_covlasso
from engine.core.gram import accumulate, chunk_rows
from engine.core.synthetic import classifier_like_gram, classifier_like_logits


def _peak_rss_gib() -> float:
    """Peak resident memory since the last reset (Linux VmHWM), else since start."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _reset_peak_rss() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def build_gram(logits: np.ndarray, chunk: int | None = None) -> tuple[np.ndarray, float]:
    """The streamed Gram as an import computes it (``accumulate`` over chunks of
    ``chunk_rows(K)`` rows), timed."""
    n, k = logits.shape
    chunk = chunk or chunk_rows(k)
    t0 = time.perf_counter()
    gs = accumulate(((logits[s : s + chunk], None) for s in range(0, n, chunk)), k)
    return gs.design, time.perf_counter() - t0


def measure_gram(logits: np.ndarray, repeat: int = 1) -> tuple[np.ndarray, dict]:
    """The Gram and its figures against a bare GEMM (``bench.gram_figures``), ``repeat``
    times (each between two reference GEMMs); the figures of every run are kept."""
    n, k = logits.shape
    calls = -(-n // chunk_rows(k))
    runs = []
    for _ in range(repeat):
        before, same_before = bare_gemm_gflops(k), bare_gemm_gflops(k, repeat=1, calls=calls)
        C, seconds = build_gram(logits)
        fig = gram_figures(n, k, seconds, before, bare_gemm_gflops(k))
        same = max(same_before, bare_gemm_gflops(k, repeat=1, calls=calls))
        # the same work as a GEMM: N rows in the Gram's chunks, one timed run (as long as the Gram)
        fig.update(bare_gemm_same_work_gflops=same, ratio_same_work=fig["gflops_gemm_equivalent"] / same)
        runs.append(fig)
    return C, {**runs[-1], "runs": runs, "load": os.getloadavg()[0]}


def pick_alpha(C: np.ndarray, median_sources: int, sample: int = 64) -> float:
    """Bisect α (log scale) so the median support over a sample of targets is the wanted one."""
    rng = np.random.default_rng(0)
    k = C.shape[0]
    idx = np.sort(rng.choice(k, size=min(sample, k), replace=False))
    keep = np.ones(k, dtype=bool)
    lo, hi = np.log(alpha_max(C, C, True).min() * 1e-4), np.log(alpha_max(C, C, True).min())
    for _ in range(18):
        mid = (lo + hi) / 2
        sizes = []
        for i in idx[:16]:
            keep[:] = True
            keep[i] = False
            res = solve_covlasso(C[np.ix_(keep, keep)], C[keep][:, [i]], C[[i], [i]], np.exp(mid), within=False)
            sizes.append(int((res.coef != 0).sum()))
        if np.median(sizes) > median_sources:
            lo = mid
        else:
            hi = mid
    return float(np.exp((lo + hi) / 2))


def anchor_gram_cd(C: np.ndarray, alpha: float, tol: float, targets: np.ndarray):
    """sklearn's compiled Gram CD, target by target. Returns (coef (K, T), seconds, copy s,
    CPU seconds of the solves: its per-target sub-Gram copies are left out of both)."""
    from sklearn.linear_model._cd_fast import enet_coordinate_descent_gram
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # its BLAS calls are level-1: threads only cost it (see the docstring)
        return _anchor_targets(enet_coordinate_descent_gram, C, alpha, tol, targets)


def _anchor_targets(enet_coordinate_descent_gram, C: np.ndarray, alpha: float, tol: float, targets: np.ndarray):
    k = C.shape[0]
    coef = np.zeros((k, len(targets)))
    solve_s = copy_s = solve_cpu = 0.0
    rng = np.random.RandomState(0)
    for col, i in enumerate(targets):
        t0 = time.perf_counter()
        keep = np.arange(k) != i
        Q = np.ascontiguousarray(C[np.ix_(keep, keep)])
        q = np.ascontiguousarray(C[keep, i])
        y = np.array([np.sqrt(C[i, i])])  # only ‖y‖² = E[g_i²] is used by the Gram form
        w = np.zeros(k - 1)
        t1, c1 = time.perf_counter(), time.process_time()
        w, gap, tol_abs, n_iter = enet_coordinate_descent_gram(w, alpha, 0.0, Q, q, y, 100000, tol, rng, 0, 0, 1)
        t2 = time.perf_counter()
        solve_cpu += time.process_time() - c1
        coef[keep, col] = w
        copy_s += t1 - t0
        solve_s += t2 - t1
    return coef, solve_s, copy_s, solve_cpu


def paper_recipe(F: np.ndarray, alpha: float, targets: np.ndarray):
    from sklearn.linear_model import Lasso

    coef = np.zeros((F.shape[1], len(targets)))
    t0 = time.perf_counter()
    for col, i in enumerate(targets):
        X = np.delete(F, i, axis=1)
        m = Lasso(alpha=alpha, fit_intercept=False, max_iter=50000).fit(X, F[:, i])
        coef[np.arange(F.shape[1]) != i, col] = m.coef_
    return coef, time.perf_counter() - t0


def objective(C, coef, alpha, targets):
    out = []
    for col, i in enumerate(targets):
        th = coef[:, col]
        out.append(0.5 * (C[i, i] - 2 * th @ C[:, i] + th @ C @ th) + alpha * np.abs(th).sum())
    return np.array(out)


def run_large(k: int, n: int, supports: tuple[int, ...], tol: float, threads: int = 0) -> dict:
    """K ≫ 1,000: the solve from the Gram, timed; the Gram's construction timed on a slice.

    Building E[f fᵀ] for N = 50,000 at K = 21,843 is 4.8·10¹³ flops (tens of minutes on two
    cores), so the solver runs on the generator's exact population Gram and the streaming
    construction is timed on 4,096 real samples and scaled to N (linear in N), saying so.
    """
    rank = 256
    print(f"# CovLasso benchmark (large): K = {k}, N = {n} (Gram time scaled from 4,096 samples)")
    F, _ = classifier_like_logits(4096, k, rank=rank, seed=0)
    before = bare_gemm_gflops(k, repeat=1)
    _, slice_s = build_gram(F)
    fig = gram_figures(4096, k, slice_s, before, bare_gemm_gflops(k, repeat=1))
    del F
    gram_s, rate = slice_s * n / 4096, fig["bare_gemm_gflops"]
    print(f"Gram: {gram_s:.0f} s scaled ({fig['gflops_gemm_equivalent']:.1f} GFLOP/s GEMM-equivalent = "
          f"{100 * fig['ratio']:.0f} % of a bare GEMM, {rate:.1f} GFLOP/s)")
    C = classifier_like_gram(k, rank=rank, seed=0)
    rows = []
    for alpha in supports:
        _reset_peak_rss()  # the solve's peak, Gram (3.8 GB at K = 21,843) included
        t0 = time.perf_counter()
        res = solve_covlasso(C, C, np.diag(C), alpha, within=True, config=SolverConfig(tol=tol, threads=threads))
        row = {
            "alpha": alpha, "ours_s": time.perf_counter() - t0,
            "median_sources": float(np.median(res.support_sizes)), "converged": bool(res.converged.all()),
            "max_rel_gap": float((res.duality_gap / np.diag(C)).max()), "peak_rss_gib": _peak_rss_gib(),
        }
        rows.append(row)
        print(json.dumps(row))
    out = {"k": k, "n": n, "tol": tol, "gram_s_scaled": gram_s, "gemm_gflops": rate, "rows": rows}
    path = Path("bench/results") / f"covlasso-K{k}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return out


def run(k: int, n: int, paper_sample: int, supports: tuple[int, ...], tol: float, repeat: int = 1,
        threads: int = 0) -> dict:
    workers = threads or min(4, os.cpu_count() or 1)
    print(f"# CovLasso benchmark: K = {k}, N = {n}, tol = {tol:g} (relative duality gap); ours in {workers} "
          f"worker thread(s) on {os.cpu_count()} cores, the anchor in one (× anchor in CPU time too)")
    F, _ = classifier_like_logits(n, k, rank=min(256, k // 2), seed=0)
    # measured as bench_massive measures it (bench.gram_figures: what is timed, the reference,
    # the FLOP convention), three times
    C, gram = measure_gram(F, repeat=3)
    gram_s, rate = gram["seconds"], gram["bare_gemm_gflops"]
    for r in gram["runs"]:
        print(f"Gram: {r['seconds']:.2f} s ({r['gflops_gemm_equivalent']:.1f} GFLOP/s GEMM-equivalent = "
              f"{100 * r['ratio']:.0f} % of a bare float64 GEMM, {r['bare_gemm_gflops']:.1f} GFLOP/s; FLOPs done at "
              f"{100 * r['flop_efficiency']:.0f} % of its rate); against a GEMM of the same work, N rows in the same "
              f"chunks, timed once ({r['bare_gemm_same_work_gflops']:.1f} GFLOP/s): {100 * r['ratio_same_work']:.0f} %; "
              f"load {os.getloadavg()[0]:.1f}")
    F64 = F.astype(np.float64)
    rows = []
    for want in supports:
        alpha = pick_alpha(C, want)
        t0, c0 = time.perf_counter(), time.process_time()
        res = solve_covlasso(C, C, np.diag(C), alpha, within=True, config=SolverConfig(tol=tol, threads=threads))
        ours_s, ours_cpu = time.perf_counter() - t0, time.process_time() - c0
        support = (res.coef != 0).sum(0)
        row = {
            "target_median_sources": want, "alpha": alpha, "median_sources": float(np.median(support)),
            "ours_s": ours_s, "gram_s": gram_s, "converged": bool(res.converged.all()),
            "max_rel_gap": float((res.duality_gap / np.diag(C)).max()),
        }
        all_t = np.arange(k)
        if k <= 5000:
            a_coef, a_s, a_copy, a_cpu = anchor_gram_cd(C, alpha, tol, all_t)
            obj_a, obj_o = objective(C, a_coef, alpha, all_t), res.objective
            pairs = [(ours_s, a_s, ours_cpu, a_cpu)]
            for _ in range(repeat - 1):  # ours then the anchor again, same Gram and α: the ratio's spread
                t0, c0 = time.perf_counter(), time.process_time()
                solve_covlasso(C, C, np.diag(C), alpha, within=True, config=SolverConfig(tol=tol, threads=threads))
                o_s, o_cpu = time.perf_counter() - t0, time.process_time() - c0
                _, r_s, _, r_cpu = anchor_gram_cd(C, alpha, tol, all_t)
                pairs.append((o_s, r_s, o_cpu, r_cpu))
            wall = [a / o for o, a, _, _ in pairs]
            cpu = [a / o for _, _, o, a in pairs]
            row.update(
                anchor_s=a_s, anchor_copy_s=a_copy, ratio_anchor=float(np.median(wall)),
                ratio_anchor_runs=wall, ratio_anchor_cpu_runs=cpu, seconds_runs=pairs,
                support_mismatch_vs_anchor=int(((a_coef != 0) != (res.coef != 0)).sum()),
                max_rel_obj_excess_vs_anchor=float(np.max((obj_o - obj_a) / np.abs(obj_a))),
            )
        sample = np.random.default_rng(1).choice(k, size=min(paper_sample, k), replace=False)
        p_coef, p_s = paper_recipe(F64, alpha, sample)
        p_total = p_s * k / len(sample)
        obj_p = objective(C, p_coef, alpha, sample)
        row.update(
            paper_sample_targets=len(sample), paper_s_scaled=p_total, ratio_paper=p_total / ours_s,
            support_mismatch_vs_paper=int(((p_coef != 0) != (res.coef[:, sample] != 0)).sum()),
            max_rel_obj_excess_vs_paper=float(np.max((res.objective[sample] - obj_p) / np.abs(obj_p))),
        )
        rows.append(row)
        print(json.dumps(row))
    out = {"k": k, "n": n, "tol": tol, "gram_s": gram_s, "gemm_gflops": rate, "gram": gram,
           "peak_rss_gib": _peak_rss_gib(), "rows": rows}
    print(f"peak RSS: {out['peak_rss_gib']:.2f} GiB")
    _table(out)
    path = Path("bench/results") / f"covlasso-K{k}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return out


def _table(out: dict) -> None:
    print("\n| α | median sources | ours (s) | anchor Gram-CD (s) | × anchor: median (range) of the repeats, wall "
          "/ CPU time | paper recipe (s, scaled) | × paper | supports ≠ | obj. excess |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in out["rows"]:
        wall, cpu = r.get("ratio_anchor_runs", [float("nan")]), r.get("ratio_anchor_cpu_runs", [float("nan")])
        print(
            f"| {r['alpha']:.4g} | {r['median_sources']:.0f} | {r['ours_s']:.3f} | {r.get('anchor_s', float('nan')):.3f} "
            f"| {np.median(wall):.2f} ({min(wall):.2f}–{max(wall):.2f}) / {np.median(cpu):.2f} ({min(cpu):.2f}–{max(cpu):.2f}) "
            f"| {r['paper_s_scaled']:.0f} | {r['ratio_paper']:.0f} "
            f"| {r.get('support_mismatch_vs_anchor', '-')} / {r['support_mismatch_vs_paper']} "
            f"| {max(r.get('max_rel_obj_excess_vs_anchor', -1), r['max_rel_obj_excess_vs_paper']):.1e} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--paper-sample", type=int, default=8, help="targets timed with the paper's recipe")
    ap.add_argument("--tol", type=float, default=1e-7)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--gram-only", action="store_true", help="only the Gram against the GEMM (three times)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="(ours, anchor) timings per α, interleaved; × anchor is their median (wall)")
    ap.add_argument("--alphas", type=float, nargs="+", help="α values for the large-K run")
    ap.add_argument("--supports", type=int, nargs="+", default=[15, 60, 200],
                    help="median numbers of sources to time (α chosen for each)")
    ap.add_argument("--threads", type=int, default=0,
                    help="our solver's worker threads (SolverConfig.threads; 0, the default: one per core, at most 4)")
    args = ap.parse_args()
    if args.k > 5000:
        run_large(args.k, args.n, tuple(args.alphas or (0.05, 0.02)), args.tol, args.threads)
        return
    if args.quick:
        args.k, args.n, args.paper_sample = 300, 10000, 4
    if args.gram_only:
        F, _ = classifier_like_logits(args.n, args.k, rank=min(256, args.k // 2), seed=0)
        print(json.dumps(measure_gram(F, repeat=3)[1], indent=1))
        return
    run(args.k, args.n, args.paper_sample, tuple(args.supports), args.tol, args.repeat, args.threads)


if __name__ == "__main__":
    main()
