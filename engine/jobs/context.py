"""What a running job gets from whoever runs it: where to write, and how to report progress.

The training code takes a :class:`RunContext` and nothing else from the job system, so the
same function runs as a queued job (progress goes to the job table), in the foreground from
the CLI, or under ``torchrun`` (progress goes to the log).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.storage.store import Cache

log = logging.getLogger(__name__)


class LogProgress:
    """Progress to the log, at most every ``every_s`` seconds (and always at 100 %)."""

    def __init__(self, every_s: float = 10.0):
        self.every_s, self._last = every_s, float("-inf")

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - self._last >= self.every_s or fraction >= 1.0:
            self._last = now
            log.info("[%5.1f%%] %s", 100 * fraction, message)


@dataclass(frozen=True)
class RunContext:
    """Where a run writes and whom it tells how far it got."""

    cache: Cache  # the cache whose stores the run reads and writes
    run_dir: Path  # the run's own folder: config, checkpoints, report (keyed by the spec)
    # (fraction in [0, 1], message) -> None
    progress: Callable[[float, str], None] = field(default_factory=LogProgress)
    job_id: int | None = None  # the job-table row, when run as a job

    def __post_init__(self) -> None:  # a folder given for the cache is read as that cache
        object.__setattr__(self, "cache", Cache.of(self.cache))

    @property
    def cache_root(self) -> Path:
        """The cache's folder (for code that passes it on to another process)."""
        return self.cache.root


def run_dir_for(cache: Cache, kind: str, spec: object) -> Path:
    """The cache's folder for this spec's run: equal specs share it, so a rerun resumes."""
    from engine.jobs.kinds import spec_hash

    return Cache.of(cache).run_dir(kind, spec_hash(kind, spec))


def foreground_context(cache: Cache, kind: str, spec: object) -> RunContext:
    """A context for running a spec in this process (CLI, torchrun): progress goes to the log."""
    cache = Cache.of(cache)
    return RunContext(cache=cache, run_dir=run_dir_for(cache, kind, spec))
