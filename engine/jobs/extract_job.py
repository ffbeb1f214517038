"""The ``extract`` job: ``python -m engine extract …`` run as a job, in the job's own process.

It goes through the extraction command's public interface (issue 3's CLI), so the job and
the terminal share one code path; the new store is named in the job's report.
"""

from __future__ import annotations

import logging
from pathlib import Path

from engine.atomic import write_json_atomic
from engine.errors import EngineError
from engine.jobs.context import RunContext
from engine.jobs.specs import ExtractSpec, spec_to_dict
from engine.store import Cache

log = logging.getLogger(__name__)


def extract_argv(spec: ExtractSpec, cache_root: Path) -> list[str]:
    argv = ["--cache", str(cache_root), "extract", "--model", spec.model, "--data", spec.data,
            "--name", spec.name, "--split", spec.split, "--batch-size", str(spec.batch_size),
            "--device", spec.device]
    return argv + (["--checkpoint", spec.checkpoint] if spec.checkpoint else [])


def run_job(spec: ExtractSpec, ctx: RunContext) -> Path:
    from engine.cli import main

    ctx.progress(0.0, f"extracting {spec.model} on {spec.data}/{spec.split}")
    try:
        code = main(extract_argv(spec, ctx.cache_root))
    except SystemExit as exc:  # argparse: an option this installation's extract lacks
        code = exc.code
    if code != 0:
        raise EngineError(f"extraction failed (exit code {code}); the log above says why")
    store = Cache(ctx.cache_root).load_store(spec.name)
    report = ctx.run_dir / f"report-{ctx.job_id or 'fg'}.json"
    write_json_atomic(report, {"kind": "extract", "config": spec_to_dict(spec),
                               "stores": {"logits": store.name}, "n": store.n, "k": store.k})
    return report
