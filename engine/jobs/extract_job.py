"""The ``extract`` job: logit extraction run as a job, in the job's own process.

It calls the same function as ``python -m engine extract`` (:func:`engine.ingest.extract.extract_store`),
with the job's progress; the new store is named in the job's report.
"""

from __future__ import annotations

import logging
from pathlib import Path

from engine.jobs.context import RunContext
from engine.jobs.kinds import spec_to_dict
from engine.jobs.specs import ExtractSpec
from engine.storage.atomic import write_json_atomic

log = logging.getLogger(__name__)


def run_job(spec: ExtractSpec, ctx: RunContext) -> Path:
    from engine.ingest.extract import DEFAULT_CHUNK, extract_store

    ctx.progress(0.0, f"extracting {spec.model} on {spec.data}/{spec.split}")
    done: list[int] = []

    def on_chunk(c: int) -> None:
        done.append(c)
        ctx.progress(min(0.99, len(done) * DEFAULT_CHUNK / max(total[0], 1)),
                     f"logits: {len(done)} chunk(s) of {DEFAULT_CHUNK} images written")

    total = [1]
    from engine.ingest.data import create_dataset

    total[0] = len(create_dataset(spec.data, spec.split, cache=ctx.cache))
    store, _ = extract_store(ctx.cache, spec.model, spec.data, spec.name, split=spec.split,
                             checkpoint=spec.checkpoint or None, batch_size=spec.batch_size,
                             device=spec.device, progress=False, on_chunk=on_chunk)
    report = ctx.run_dir / f"report-{ctx.job_id or 'fg'}.json"
    write_json_atomic(report, {"kind": "extract", "config": spec_to_dict(spec),
                               "stores": {"logits": store.name}, "n": store.n, "k": store.k})
    return report
