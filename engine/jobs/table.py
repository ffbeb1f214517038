"""The persistent job table: ``<cache>/jobs.sqlite``, shared by the dashboard, the CLI and the jobs.

SQLite in WAL mode (readers never block the writer), a busy timeout (writers wait for each
other instead of failing) and one transaction per change, taken with ``BEGIN IMMEDIATE`` so
a read-then-write (claiming a queued job, say) cannot interleave with another writer. Many
processes submitting at once therefore get distinct ids and an intact table.

States: ``queued → running → succeeded | failed | cancelled`` (a queued job can be
cancelled too). A finished state is final: later updates that expect ``running`` do nothing.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import NotFoundError

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    config TEXT NOT NULL,            -- the spec as JSON
    state TEXT NOT NULL CHECK (state IN ('queued','running','succeeded','failed','cancelled')),
    progress REAL NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    backend TEXT NOT NULL DEFAULT 'local',
    backend_id TEXT,                 -- e.g. the Slurm job id
    host TEXT,
    pid INTEGER,
    proc_identity TEXT,              -- pid + start time (see engine.jobs.procs)
    log_path TEXT NOT NULL,
    result_path TEXT,
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class JobRecord:
    """One row of the job table."""

    id: int
    kind: str
    config: dict[str, Any]
    state: str
    progress: float  # 0..1
    message: str  # the latest progress message
    created: float  # UNIX times
    started: float | None
    finished: float | None
    backend: str
    backend_id: str | None
    host: str | None
    pid: int | None
    proc_identity: str | None
    log_path: str
    result_path: str | None  # the job's report.json once it succeeded
    error: str | None
    cancel_requested: bool

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def elapsed(self, now: float | None = None) -> float | None:
        if self.started is None:
            return None
        return (self.finished or now or time.time()) - self.started


def _record(row: sqlite3.Row) -> JobRecord:
    values = dict(row)
    values["config"] = json.loads(values["config"])
    values["cancel_requested"] = bool(values["cancel_requested"])
    return JobRecord(**values)


class JobTable:
    """Access to ``jobs.sqlite``; each method is one short transaction (safe across processes)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An immediate (write-locked) transaction, committed on success, rolled back on error."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    # -- writes
    def insert(self, kind: str, config: dict[str, Any], log_dir: Path, backend: str) -> int:
        """Add a queued job; its log goes to ``log_dir/<id>.log``. Returns the new id."""
        with self.transaction() as con:
            cur = con.execute(
                "INSERT INTO jobs (kind, config, state, created, backend, log_path) "
                "VALUES (?, ?, 'queued', ?, ?, '')",
                (kind, json.dumps(config, sort_keys=True), time.time(), backend),
            )
            job_id = int(cur.lastrowid)
            con.execute(
                "UPDATE jobs SET log_path = ? WHERE id = ?", (str(log_dir / f"{job_id}.log"), job_id)
            )
        return job_id

    def update(self, job_id: int, *, only_if_state: tuple[str, ...] | None = None, **values: Any) -> bool:
        """Set columns of a job; with ``only_if_state`` only when its state is one of those.

        Returns whether a row changed (a finished job is never moved back by a late writer).
        """
        if not values:
            return False
        bad = set(values) - set(JobRecord.__dataclass_fields__)
        if bad or "id" in values:
            raise KeyError(f"not updatable job columns: {sorted(bad | ({'id'} & set(values)))}")
        cols = ", ".join(f"{k} = ?" for k in values)
        sql = f"UPDATE jobs SET {cols} WHERE id = ?"
        args: list[Any] = [*values.values(), job_id]
        if only_if_state:
            sql += f" AND state IN ({', '.join('?' * len(only_if_state))})"
            args += list(only_if_state)
        with self.transaction() as con:
            return con.execute(sql, args).rowcount > 0

    def claim_queued(self, limit: int, backend: str) -> list[JobRecord]:
        """Move up to ``limit - running`` of the oldest queued jobs to running; return them.

        One transaction: two dispatchers at once never start the same job twice, nor more
        than ``limit`` jobs in all.
        """
        with self.transaction() as con:
            running = con.execute(
                "SELECT COUNT(*) FROM jobs WHERE state = 'running' AND backend = ?", (backend,)
            ).fetchone()[0]
            free = max(0, limit - running)
            rows = con.execute(
                "SELECT * FROM jobs WHERE state = 'queued' AND backend = ? ORDER BY id LIMIT ?",
                (backend, free),
            ).fetchall()
            now = time.time()
            for row in rows:
                con.execute(
                    "UPDATE jobs SET state = 'running', started = ?, message = 'starting' "
                    "WHERE id = ?",
                    (now, row["id"]),
                )
        return [self.get(int(row["id"])) for row in rows]

    # -- reads
    def get(self, job_id: int) -> JobRecord:
        row = None
        if -(2**63) <= int(job_id) < 2**63:  # SQLite's integer range; other ids exist nowhere
            with self._connect() as con:
                row = con.execute("SELECT * FROM jobs WHERE id = ?", (int(job_id),)).fetchone()
        if row is None:
            raise NotFoundError(
                f"no job with id {job_id} in {self.path}; `python -m engine jobs list` shows them"
            )
        return _record(row)

    def list(self, states: tuple[str, ...] | None = None, limit: int = 200) -> list[JobRecord]:
        """Newest first."""
        sql, args = "SELECT * FROM jobs", []
        if states:
            sql += f" WHERE state IN ({', '.join('?' * len(states))})"
            args = list(states)
        sql += " ORDER BY id DESC LIMIT ?"
        with self._connect() as con:
            rows = con.execute(sql, [*args, min(int(limit), 2**62)]).fetchall()
        return [_record(r) for r in rows]

    def integrity_ok(self) -> bool:
        with self._connect() as con:
            return con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # -- settings (a key → JSON value map)
    def get_setting(self, key: str, default: Any = None) -> Any:
        with self._connect() as con:
            row = con.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_setting(self, key: str, value: Any) -> None:
        with self.transaction() as con:
            con.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )
