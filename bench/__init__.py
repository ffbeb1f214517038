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


def bare_gemm_gflops(k: int, rows: int = 2048, repeat: int = 3) -> float:
    """The machine's float64 GEMM speed for a Gram of K columns, in GFLOP/s: torch's ``addmm``
    of a (rows, K) block's ``aᵀb`` into a K × K output (two buffers: ``aᵀa`` would be a
    syrk), after a warm-up, the best of ``repeat`` runs. The reference of every Gram figure
    (``bench_covlasso``, ``bench_massive``): a Gram's rate is 2·N·K² / its time against it."""
    import torch

    a = torch.randn(rows, k, dtype=torch.float64)
    b = a.clone()
    out = torch.zeros(k, k, dtype=torch.float64)
    out.addmm_(a[:256].T, b[:256])
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out.addmm_(a.T, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * rows * k * k / best / 1e9
