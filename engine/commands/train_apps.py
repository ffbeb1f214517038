"""``python -m engine train-newclasses|train-regularizer``: the paper's applications in the foreground.

The same code as the jobs of the same kinds, without the job table: for a terminal, a
batch script, or several GPUs with ``torchrun --nproc_per_node=G -m engine train-… …``
(DistributedDataParallel, rank 0 writes). Options are the spec's fields, as for
``jobs submit``; the run folder (checkpoints, report) is keyed by the spec, so the same
command after an interruption resumes.
"""

from __future__ import annotations

import json

from engine.commands.jobs import add_spec_options, spec_values
from engine.storage.store import Cache

_APPS = {
    "train-newclasses": ("newclasses", "§3.2: new categories as W · f_base over a frozen backbone"),
    "train-regularizer": ("regularizer", "§3.3: fine-tune with the dependency regulariser"),
}


def register(subparsers) -> None:
    from engine.jobs.kinds import get_kind

    for command, (kind, title) in _APPS.items():
        spec_cls = get_kind(kind).spec
        p = subparsers.add_parser(command, help=title, description=spec_cls.__doc__)
        add_spec_options(p, spec_cls)
        p.set_defaults(func=_run, kind=kind)


def _run(args) -> int:
    from engine.jobs import foreground_context, get_kind, spec_from_dict
    from engine.jobs.runner import load_runner

    spec = spec_from_dict(args.kind, spec_values(args, get_kind(args.kind).spec))
    ctx = foreground_context(Cache(args.cache), args.kind, spec)
    report = load_runner(args.kind)(spec, ctx)
    if report is not None:  # rank 0
        print(f"report: {report}")
        body = json.loads(report.read_text())
        print("stores: " + ", ".join(body.get("stores", {}).values()))
    return 0
