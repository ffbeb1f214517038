"""Benchmarks: one command per reported figure (see docs/*.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path


def print_report(report: dict, path: Path | None = None) -> None:
    """Print a benchmark's JSON report, and write it to ``path`` when given."""
    text = json.dumps(report, indent=1)
    print(text)
    if path:
        path.write_text(text + "\n")


def bare_gemm_gflops(k: int, rows: int | None = None, repeat: int = 3, calls: int = 1) -> float:
    """:func:`bare_gemm_rates`' wall-clock rate."""
    return bare_gemm_rates(k, rows, repeat, calls)[0]


def bare_gemm_rates(k: int, rows: int | None = None, repeat: int = 3, calls: int = 1) -> tuple[float, float]:
    """The machine's float64 GEMM speed for a Gram of K columns, in GFLOP/s: torch's ``addmm``
    of a (rows, K) block's ``aᵀb`` into a K × K output (two buffers: ``aᵀa`` would be a
    syrk), after a warm-up, the best of ``repeat`` runs. ``rows``: the Gram's own chunk
    (``engine.core.gram.chunk_rows(K)``, 8,192 at K = 1,000, 768 at K = 21,843) unless given.
    ``calls``: GEMMs per timed run (``ceil(N / rows)``: the same work as a full GEMM Gram of N
    samples, timed over as long as the Gram itself — on a loaded machine a best-of-3 of one
    short call catches the quiet moments that a long run cannot).
    Returns (GFLOP/s of wall-clock time, GFLOP per CPU second of the process)."""
    import torch

    from engine.core.gram import chunk_rows

    rows = rows or chunk_rows(k)
    a = torch.randn(rows, k, dtype=torch.float64)
    b = a.clone()
    out = torch.zeros(k, k, dtype=torch.float64)
    out.addmm_(a[:256].T, b[:256])
    best = best_cpu = float("inf")
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(calls):
            out.addmm_(a.T, b)
        best, best_cpu = min(best, time.perf_counter() - t0), min(best_cpu, time.process_time() - c0)
    flops = 2 * rows * k * k * calls
    return flops / best / 1e9, flops / best_cpu / 1e9


def gram_figures(n: int, k: int, seconds: float, gemm_before: float, gemm_after: float) -> dict:
    """A streamed Gram's figures against a bare GEMM, the one convention of every bench.

    What is timed: ``engine.core.gram.accumulate`` (GramAccumulator over float32 chunks of
    ``chunk_rows(K)`` rows, each converted to float64 into one reused buffer, its dsyrk, the
    column sums, the finish: scaling and mirroring the triangle, the diagonal and α_max) —
    what an import or ``compute_gramset`` runs. The reference: :func:`bare_gemm_gflops` on
    the same chunk shape, measured just before and just after the Gram; the faster of the
    two is used (on a loaded machine the stricter one).

    ``ratio`` (the bar's figure): GEMM-equivalent speed, 2·N·K² / time, against the GEMM's
    rate — a syrk does N·K² FLOPs, half a GEMM's, so a Gram at the GEMM's own FLOP rate
    reads 200 %. ``flop_efficiency``: the FLOPs actually done, N·K² / time, against it
    (100 %: a syrk as fast per FLOP as the GEMM)."""
    gemm = max(gemm_before, gemm_after)
    equivalent = 2 * n * k * k / seconds / 1e9
    return {"seconds": seconds, "gflops_gemm_equivalent": equivalent, "bare_gemm_gflops": gemm,
            "bare_gemm_before_after": [gemm_before, gemm_after], "ratio": equivalent / gemm,
            "flop_efficiency": equivalent / 2 / gemm, "syrk_at_gemm_speed_s": n * k * k / gemm / 1e9}
