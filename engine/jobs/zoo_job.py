"""The ``zoo`` job: ``python -m engine extract --model A B C`` (or ``--preset``) as one job.

It runs :func:`engine.ingest.zoo.run_zoo` in the job's own process with the job's progress, so the
Jobs page shows which model is being extracted and how far, then which pairing is prepared.
"""

from __future__ import annotations

from pathlib import Path

from engine.jobs.context import RunContext
from engine.jobs.kinds import spec_to_dict
from engine.jobs.specs import ZooSpec
from engine.storage.atomic import write_json_atomic


def zoo_config(spec: ZooSpec):
    from engine.ingest.presets import get_preset
    from engine.ingest.zoo import ZooConfig, zoo_entries

    preset = get_preset(spec.preset) if spec.preset else None
    entries = zoo_entries(list(spec.models), list(spec.names), list(spec.checkpoints), preset)
    return ZooConfig(entries, spec.data, spec.split, prepare=spec.prepare,
                     batch_size=spec.batch_size, device=spec.device)


def run_job(spec: ZooSpec, ctx: RunContext) -> Path:
    from engine.ingest.zoo import run_zoo

    result = run_zoo(ctx.cache, zoo_config(spec), progress=ctx.progress, bars=False)
    report = ctx.run_dir / f"report-{ctx.job_id or 'fg'}.json"
    write_json_atomic(report, {
        "kind": "zoo", "config": spec_to_dict(spec),
        "stores": list(result.stores),
        "pairings": [{"model": t, "source": s, "alpha": a} for t, s, a in result.pairings],
        "seconds": result.seconds,
    })
    return report
