"""``python -m engine emergence``: dependencies over training and over categories, as a job.

Submits an ``emergence`` job (``engine/train/emergence.py``) and waits for it, printing its
progress, then writes ``{"runs": [{"categories", "epoch", "top1", "effective_rank", "fit_4",
"fit_6", "median_r2_4", …}, …]}`` to ``--json``. The same spec submitted again resumes: what
is measured is never redone (a finished sweep takes seconds).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from engine.errors import InvalidInputError
from engine.storage.store import Cache

_FIELDS = ("categories", "epoch", "top1", "effective_rank", "spectrum_rank", "fit_4", "fit_6",
           "median_r2_4", "median_r2_6", "redundancy_median")


def register(sub: argparse._SubParsersAction) -> None:
    from engine.train.specs import EmergenceSpec

    d = EmergenceSpec()
    p = sub.add_parser(
        "emergence", help="watch dependencies appear as a model trains and as its categories grow (a job)",
        description="Train the architecture on nested subsets of the categories (or measure a folder of your "
                    "own checkpoints), and measure every checkpoint: top-1, effective rank, the share of "
                    "categories fitting with <= 4 / <= 6 sources, median R², redundancy. Runs as a job "
                    "(resumable; see `jobs list`) and waits for it.")
    p.add_argument("--model", default=d.model, help=f"architecture to train, or of --checkpoints (default {d.model})")
    p.add_argument("--dataset", default=d.dataset,
                   help="'glyphs' or an ImageFolder root (train/ and test/; with --checkpoints: any ImageFolder)")
    p.add_argument("--categories", nargs="+", default=list(d.categories), help="numbers of categories (nested)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--fractions", nargs="*", default=list(d.fractions),
                   help="checkpoints inside the first epoch, as fractions of it")
    p.add_argument("--train-per-class", type=int, default=d.train_per_class)
    p.add_argument("--rank", type=int, default=d.rank, help="glyph architectures: rank of the head (0 = plain)")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--order-seed", type=int, default=d.order_seed, help="order in which categories join")
    p.add_argument("--checkpoints", default="", metavar="DIR",
                   help="a folder of your checkpoints of --model: measure them on --dataset (nothing trained)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the report here ('-': stdout)")
    p.add_argument("--no-wait", action="store_true", help="submit and return")
    p.set_defaults(func=run)


def _values(args: argparse.Namespace) -> dict:
    values = {"model": args.model, "dataset": args.dataset, "epochs": args.epochs, "fractions": args.fractions,
              "train_per_class": args.train_per_class, "rank": args.rank, "label_smoothing": args.label_smoothing,
              "lr": args.lr, "batch_size": args.batch_size, "seed": args.seed, "order_seed": args.order_seed,
              "checkpoint_dir": args.checkpoints}
    if not args.checkpoints:
        values["categories"] = args.categories
    return values


def run(args: argparse.Namespace) -> int:
    from engine.jobs import submit_job
    from engine.jobs.reports import load_report
    from engine.storage.atomic import write_json_atomic

    out = None if args.json in (None, "-") else Path(args.json).expanduser()
    if out is not None and not out.parent.is_dir():
        raise InvalidInputError(f"--json {args.json}: the folder {str(out.parent)!r} does not exist; create it "
                                "or write the report elsewhere")
    cache = Cache(args.cache)
    job = reused = _finished(cache, _values(args))
    if job is not None:
        print(f"job {job.id} (emergence) already measured this sweep; its report and every store are in the "
              "cache", file=sys.stderr)
    else:
        job = submit_job(cache, "emergence", _values(args))
        print(f"job {job.id} (emergence) {job.state}; log: {job.log_path}", file=sys.stderr)
        if args.no_wait:
            return 0
        job = _wait(cache, job.id)
    if job.state != "succeeded":
        print(f"error: job {job.id} {job.state}: {job.error or ''} (log: {job.log_path}; "
              f"resume with `python -m engine jobs retry {job.id}`)", file=sys.stderr)
        return 1
    report = {**(load_report(job.result_path) or {}), "command": _command(args),
              "job": {"id": job.id, "wall_s": (job.finished or 0) - (job.started or 0)}}
    _print_table(report.get("runs", []))
    if job.started and job.finished:
        took = f"{job.finished - job.started:.1f} s wall"
        print((f"measured by job {job.id} in {took}" if reused else f"time: {took} (job {job.id})")
              + f"; report: {job.result_path}", file=sys.stderr)
    if args.json == "-":
        import json

        print(json.dumps(report, indent=1, ensure_ascii=False))
    elif out is not None:
        write_json_atomic(out, report)
    return 0


def _finished(cache: Cache, values: dict):
    """The succeeded job of this very spec whose report and stores are all still in the cache
    (then nothing is left to compute: not even a job process is started), or None."""
    from engine.jobs import find_job
    from engine.jobs.reports import load_report, report_stores

    if not cache.root.is_dir():
        return None
    job = find_job(cache, "emergence", values)
    if job is None or job.state != "succeeded":
        return None
    report = load_report(job.result_path)
    stores = set(cache.store_names())
    return job if report and all(s in stores for s in report_stores(report)) else None


def _command(args: argparse.Namespace) -> str:
    """The command that made the report (for a shipped copy of it)."""
    import shlex

    words = ["python", "-m", "engine", "emergence", "--model", args.model]
    if args.dataset != "glyphs":
        words += ["--dataset", args.dataset]
    if args.checkpoints:
        words += ["--checkpoints", args.checkpoints]
    else:
        words += ["--categories", *args.categories, "--epochs", str(args.epochs),
                  "--train-per-class", str(args.train_per_class)]
    return shlex.join(words)


def _wait(cache: Cache, job_id: int):
    """Wait for the job, echoing its progress message when it changes (at most every 5 s)."""
    from engine.jobs import get_job, refresh

    last, shown = "", 0.0
    while True:
        refresh(cache)
        job = get_job(cache, job_id)
        if not job.active:
            return job
        if job.message and job.message != last and time.monotonic() - shown >= 5:
            print(f"[{100 * job.progress:5.1f}%] {job.message}", file=sys.stderr)
            last, shown = job.message, time.monotonic()
        time.sleep(0.3)


def _print_table(rows: list[dict]) -> None:
    cols = [c for c in _FIELDS if any(c in r for r in rows)]
    print(" ".join(f"{c:>17}" for c in cols))
    for r in rows:
        print(" ".join(f"{r.get(c):>17.4g}" if isinstance(r.get(c), int | float) else f"{'':>17}" for c in cols))
