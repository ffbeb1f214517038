"""``python -m engine.jobs --cache DIR ID``: the process of one local job (started by dispatch).

Kept apart from ``python -m engine`` so that a job's process imports only what its kind needs.
When the job ends, the queued jobs that may start now are started from here (the runner
itself never calls the manager).
"""

import argparse
import logging
import sys

from engine.jobs.manager import dispatch
from engine.jobs.runner import run_job
from engine.storage.store import Cache

parser = argparse.ArgumentParser(prog="python -m engine.jobs", description=__doc__)
parser.add_argument("--cache", required=True, help="cache directory holding jobs.sqlite")
parser.add_argument("id", type=int, help="job id")
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s")
cache = Cache(args.cache)
code = run_job(cache, args.id)
dispatch(cache)  # the next queued job takes the freed slot
sys.exit(code)
