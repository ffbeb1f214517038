"""``python -m engine.jobs --cache DIR ID``: the process of one local job (started by dispatch).

Kept apart from ``python -m engine`` so that a job's process imports only what its kind needs.
"""

import argparse
import logging
import sys

from engine.jobs.runner import run_job

parser = argparse.ArgumentParser(prog="python -m engine.jobs", description=__doc__)
parser.add_argument("--cache", required=True, help="cache directory holding jobs.sqlite")
parser.add_argument("id", type=int, help="job id")
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s")
sys.exit(run_job(args.cache, args.id))
