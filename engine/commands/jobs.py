"""``python -m engine jobs submit|list|show|cancel|logs|retry|worker|settings``.

``jobs submit KIND`` takes one option per field of the kind's spec (``--n-new 50``), or a
JSON file (``--config FILE``) with options overriding it; the spec is validated before the
job is queued. A job's own process runs ``python -m engine.jobs`` (see engine/jobs/__main__.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import typing
from pathlib import Path
from typing import Any

from engine.errors import InvalidInputError
from engine.storage.store import Cache

_STATE_WIDTH = 9


def add_spec_options(parser: argparse.ArgumentParser, spec_cls: type) -> None:
    """One ``--field-name`` option per spec field (default: the spec's own default)."""
    from engine.jobs.kinds import field_types

    defaults = {f.name: f.default for f in spec_cls.__dataclass_fields__.values()}
    for name, typ in field_types(spec_cls).items():
        kw: dict[str, Any] = {"dest": name, "default": None,
                              "help": f"default: {defaults[name]!r}"}
        if typing.get_origin(typ) is tuple:
            kw["nargs"] = "*"
        elif typ is bool:
            kw["metavar"] = "true|false"
        parser.add_argument("--" + name.replace("_", "-"), **kw)
    parser.add_argument("--config", type=Path, help="JSON file with field values (options win)")


def spec_values(args: argparse.Namespace, spec_cls: type) -> dict[str, Any]:
    """Field values from ``--config`` and the options actually given."""
    values: dict[str, Any] = {}
    if args.config is not None:
        try:
            values = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidInputError(f"--config {args.config}: not a readable JSON file ({exc})") from exc
        if not isinstance(values, dict):
            raise InvalidInputError(f"--config {args.config}: expected a JSON object of fields")
    for name in spec_cls.__dataclass_fields__:
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    return values


def register(subparsers) -> None:
    from engine.jobs.kinds import JOB_KINDS

    jobs = subparsers.add_parser("jobs", help="submit, watch and cancel training/extraction jobs")
    sub = jobs.add_subparsers(dest="jobs_command", metavar="ACTION")
    sub.required = True

    submit = sub.add_parser("submit", help="validate a job's config and queue it")
    kinds = submit.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True
    for kind in JOB_KINDS.values():
        p = kinds.add_parser(kind.name, help=kind.title, description=kind.spec.__doc__)
        add_spec_options(p, kind.spec)
        p.add_argument("--no-start", action="store_true", help="only queue (a worker starts it)")
        p.add_argument("--wait", action="store_true", help="wait until it finishes")
        p.set_defaults(func=_submit)

    p = sub.add_parser("list", help="jobs, newest first")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_list)

    p = sub.add_parser("show", help="one job: config, state, error, report")
    p.add_argument("id", type=int)
    p.set_defaults(func=_show)

    p = sub.add_parser("report", help="a finished job's results as Markdown tables")
    p.add_argument("id", type=int)
    p.set_defaults(func=_report)

    p = sub.add_parser("cancel", help="cancel queued or running jobs (their process trees)")
    p.add_argument("ids", type=int, nargs="+")
    p.set_defaults(func=_cancel)

    p = sub.add_parser("logs", help="a job's log")
    p.add_argument("id", type=int)
    p.add_argument("--tail", type=int, default=None, help="only the last N lines")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until it ends")
    p.set_defaults(func=_logs)

    p = sub.add_parser("retry", help="queue a finished job's config again (resumes checkpoints)")
    p.add_argument("id", type=int)
    p.set_defaults(func=_retry)

    p = sub.add_parser("worker", help="keep starting queued jobs until the queue is empty")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between looks")
    p.add_argument("--forever", action="store_true", help="do not stop when the queue is empty")
    p.set_defaults(func=_worker)

    p = sub.add_parser("settings", help="show or change the backend and the concurrency")
    p.add_argument("--backend", choices=("local", "slurm"))
    p.add_argument("--max-running", type=int, help="local jobs running at once")
    p.add_argument("--slurm", nargs="*", metavar="KEY=VALUE",
                   help="submitit parameters, e.g. slurm_partition=gpu gpus_per_node=1")
    p.set_defaults(func=_settings)


def _fmt_time(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _row(job) -> str:
    elapsed = job.elapsed()
    took = f"{elapsed:7.1f}s" if elapsed is not None else "       -"
    note = job.error if job.state in ("failed", "cancelled") else job.message
    return (f"{job.id:5d}  {job.kind:<12} {job.state:<{_STATE_WIDTH}} {100 * job.progress:5.1f}%  "
            f"{took}  {_fmt_time(job.created)}  {(note or '')[:60]}")


def _submit(args) -> int:
    from engine.jobs import get_kind, submit_job, wait_for

    values = spec_values(args, get_kind(args.kind).spec)
    job = submit_job(Cache(args.cache), args.kind, values, start=not args.no_start)
    print(f"job {job.id} ({job.kind}) {job.state}; log: {job.log_path}")
    if args.wait:
        job = wait_for(Cache(args.cache), [job.id], timeout=float("inf"))[0]
        print(_row(job))
        if job.result_path:
            _print_result(job)
        return 0 if job.state == "succeeded" else 1
    return 0


def _print_result(job) -> None:
    """The finished job's tables, stores and times (what `jobs report` shows, plus timings)."""
    from engine.jobs.reports import load_report, markdown_tables, report_stores

    report = load_report(job.result_path) or {}
    print(markdown_tables(report))
    if report_stores(report):
        print("stores: " + ", ".join(report_stores(report)))
    timings = report.get("timings") or {}
    if "cpu_s" in timings and job.started and job.finished:
        print(f"time: {job.finished - job.started:.0f} s wall, {timings['cpu_s']:.0f} s CPU "
              "(the job and its helper processes)")
    print(f"report: {job.result_path}")


def _list(args) -> int:
    from engine.jobs import list_jobs

    jobs = list_jobs(Cache(args.cache), limit=args.limit)
    if args.json:
        print(json.dumps([j.__dict__ for j in jobs], indent=1))
        return 0
    if not jobs:
        print("no jobs yet; submit one with `python -m engine jobs submit KIND`")
        return 0
    print(f"{'id':>5}  {'kind':<12} {'state':<{_STATE_WIDTH}} {'prog':>6}  {'time':>8}  "
          f"{'created':<19}  message")
    for job in jobs:
        print(_row(job))
    return 0


def _show(args) -> int:
    from engine.jobs import get_job

    job = get_job(Cache(args.cache), args.id)
    out = dict(job.__dict__)
    if job.result_path and Path(job.result_path).exists():
        out["report"] = json.loads(Path(job.result_path).read_text())
    print(json.dumps(out, indent=1, ensure_ascii=False))
    return 0


def _report(args) -> int:
    from engine.jobs import get_job
    from engine.jobs.reports import load_report, markdown_tables, report_stores

    job = get_job(Cache(args.cache), args.id)
    report = load_report(job.result_path)
    if report is None:
        print(f"job {job.id} is {job.state} and has no report yet")
        return 1
    print(markdown_tables(report))
    stores = report_stores(report)
    if stores:
        print("stores: " + ", ".join(stores))
    return 0


def _cancel(args) -> int:
    from engine.jobs import cancel_job

    for job_id in args.ids:
        job = cancel_job(Cache(args.cache), job_id)
        print(f"job {job.id}: {job.state}")
    return 0


def _logs(args) -> int:
    from engine.jobs import get_job, read_log

    job = get_job(Cache(args.cache), args.id)
    text = read_log(job, args.tail)
    sys.stdout.write(text + ("\n" if text and not text.endswith("\n") else ""))
    if not args.follow:
        return 0
    path, pos = Path(job.log_path), len(Path(job.log_path).read_bytes()) if Path(job.log_path).exists() else 0
    while True:
        if path.exists():
            with open(path, "rb") as handle:
                handle.seek(pos)
                chunk = handle.read()
            pos += len(chunk)
            sys.stdout.write(chunk.decode(errors="replace"))
            sys.stdout.flush()
        if not get_job(Cache(args.cache), args.id).active:
            return 0
        time.sleep(0.5)


def _retry(args) -> int:
    from engine.jobs import retry_job

    job = retry_job(Cache(args.cache), args.id)
    print(f"job {job.id} ({job.kind}) {job.state}: retry of job {args.id}")
    return 0


def _worker(args) -> int:
    from engine.jobs import jobs_table, refresh

    table = jobs_table(Cache(args.cache))
    print(f"worker watching {table.path} (Ctrl-C to stop)")
    while True:
        refresh(Cache(args.cache))
        if not args.forever and not table.list(states=("queued", "running"), limit=1):
            print("queue empty")
            return 0
        time.sleep(args.poll)


def _settings(args) -> int:
    from engine.jobs import get_settings, set_settings

    slurm = None
    if args.slurm is not None:
        slurm = dict(get_settings(Cache(args.cache)).slurm)
        for item in args.slurm:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise InvalidInputError(f"--slurm {item!r}: expected KEY=VALUE, e.g. slurm_partition=gpu")
            slurm[key] = int(value) if value.isdigit() else value
    if args.backend or args.max_running is not None or slurm is not None:
        settings = set_settings(Cache(args.cache), backend=args.backend, max_running=args.max_running,
                                slurm=slurm)
    else:
        settings = get_settings(Cache(args.cache))
    print(json.dumps(settings.__dict__, indent=1))
    return 0

