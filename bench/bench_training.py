"""The applications' jobs, timed and summarised over seeds (the figures of docs/jobs-and-training.md).

    python bench/bench_training.py newclasses --seeds 0 1 2
    python bench/bench_training.py newclasses --seeds 0 1 2 --set n_new=1
    python bench/bench_training.py regularizer --seeds 0 1 2

Each seed is one job submitted through the job system (``python -m engine jobs submit KIND
--seed S``, plus the ``--set FIELD=VALUE`` overrides), one after the other, each from a clean
run folder (no checkpoint resumed). Per job: wall time (from the job table: started →
finished), the job process's CPU time (user + system, imports and data loading included),
the load average sampled while it ran, and its metrics. Then the Table 2/3/4-style metrics as
mean ± standard deviation over the seeds. Results go to ``bench/results/<kind>-….json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.jobs import get_job, spec_from_dict, submit_job, wait_for  # noqa: E402
from engine.jobs.context import run_dir_for  # noqa: E402
from engine.jobs.reports import load_report, report_tables  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


class LoadSampler(threading.Thread):
    """The 1-minute load average every few seconds while a job runs."""

    def __init__(self, every_s: float = 5.0):
        super().__init__(daemon=True)
        self.every_s, self.samples, self._done = every_s, [], threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.samples.append(os.getloadavg()[0])
            self._done.wait(self.every_s)

    def stop(self) -> dict[str, float]:
        self._done.set()
        self.join()
        return {"mean": float(np.mean(self.samples)), "max": float(np.max(self.samples))}


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run_one(cache: Path, kind: str, values: dict, timeout: float) -> dict:
    """Submit one job from a clean run folder, wait for it, return its timings and report."""
    spec = spec_from_dict(kind, values)
    shutil.rmtree(run_dir_for(cache, kind, spec), ignore_errors=True)
    sampler = LoadSampler()
    sampler.start()
    job = submit_job(cache, kind, values)
    job = wait_for(cache, [job.id], timeout=timeout)[0]
    load = sampler.stop()
    if job.state != "succeeded":
        raise SystemExit(f"job {job.id} {job.state}: {job.error} (log: {job.log_path})")
    job = get_job(cache, job.id)
    report = load_report(job.result_path)
    return {"job": job.id, "seed": values.get("seed"), "wall_s": job.finished - job.started,
            "cpu_s": report["timings"]["cpu_s"], "timings": report["timings"], "load": load,
            "report": report}


def _numbers(report: dict) -> dict[str, float]:
    """The report's headline metrics as flat name → value."""
    out: dict[str, float] = {}
    for title, rows in report_tables(report):
        for row in rows:
            label = row.get("method") or row.get("model")
            for key, value in row.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    out[f"{title} | {label} | {key}"] = float(value)
    return out


def summarise(runs: list[dict]) -> str:
    """Markdown: the tables' cells as mean ± sd over the runs, then the per-run timings."""
    numbers = [_numbers(r["report"]) for r in runs]
    lines = []
    for title, rows in report_tables(runs[0]["report"]):
        lines += [f"\n**{title}** (mean ± sd over {len(runs)} seed(s))\n"]
        keys = [k for k in rows[0] if k not in ("method", "model")]
        lines.append("| | " + " | ".join(keys) + " |")
        lines.append("|---|" + "---:|" * len(keys))
        for row in rows:
            label = row.get("method") or row.get("model")
            cells = []
            for key in keys:
                values = [n.get(f"{title} | {label} | {key}") for n in numbers]
                values = [v for v in values if v is not None]
                cells.append("" if not values else f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"
                             if len(values) > 1 else f"{values[0]:.2f}")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("\n| job | seed | wall (s) | CPU (s) | load avg (mean / max) | phases (s) |")
    lines.append("|---|---:|---:|---:|---|---|")
    for r in runs:
        phases = ", ".join(f"{k[:-2]} {v:.0f}" for k, v in r["timings"].items()
                           if k.endswith("_s") and k not in ("cpu_s", "total_s"))
        lines.append(f"| {r['job']} | {r['seed']} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | "
                     f"{r['load']['mean']:.1f} / {r['load']['max']:.1f} | {phases} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["newclasses", "regularizer"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="spec fields, e.g. n_new=1 epochs=6 (JSON values)")
    parser.add_argument("--cache", type=Path, default=Path("cache"))
    parser.add_argument("--timeout", type=float, default=3 * 3600)
    args = parser.parse_args(argv)
    overrides = {k: _value(v) for k, v in (item.split("=", 1) for item in args.set)}
    runs = []
    for seed in args.seeds:
        run = run_one(args.cache.resolve(), args.kind, {**overrides, "seed": seed}, args.timeout)
        print(f"seed {seed}: job {run['job']}, wall {run['wall_s']:.0f} s, CPU {run['cpu_s']:.0f} s, "
              f"load {run['load']['mean']:.1f}", flush=True)
        runs.append(run)
    text = summarise(runs)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    tag = "-".join([args.kind, *(s.replace("=", "") for s in args.set), "seeds" + "".join(map(str, args.seeds))])
    out = RESULTS / f"{tag}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"argv": sys.argv, "overrides": overrides, "runs": runs, "summary": text},
                              indent=1, default=str))
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
