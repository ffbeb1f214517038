"""Jobs: training and extraction runs as separate processes, tracked in ``<cache>/jobs.sqlite``.

Light to import (no torch): the dashboard and the CLI use it to submit and watch jobs; the
work itself is imported only inside each job's process.

>>> cache = Cache("cache")
>>> job = submit_job(cache, "probe", {"seconds": 1})
>>> wait_for(cache, [job.id])[0].state
'succeeded'
"""

from engine.jobs.context import RunContext, foreground_context
from engine.jobs.kinds import JOB_KINDS, get_kind, spec_from_dict, spec_to_dict
from engine.jobs.manager import (
    JobSettings,
    cancel_job,
    dispatch,
    ensure_job,
    find_job,
    get_job,
    get_settings,
    jobs_table,
    list_jobs,
    read_log,
    reap_stale,
    refresh,
    retry_job,
    set_settings,
    submit_job,
    wait_for,
)
from engine.jobs.table import ACTIVE, FINISHED, STATES, JobRecord

__all__ = [
    "ACTIVE", "FINISHED", "JOB_KINDS", "STATES", "JobRecord", "JobSettings", "RunContext",
    "cancel_job", "dispatch", "ensure_job", "find_job", "foreground_context", "get_job", "get_kind",
    "get_settings",
    "jobs_table", "list_jobs", "read_log", "reap_stale", "refresh", "retry_job",
    "set_settings", "spec_from_dict", "spec_to_dict", "submit_job", "wait_for",
]
