"""Checking a whole cache folder: every store, derived result, data file, job report and table.

``python -m engine verify`` is for a cache copied between machines (or suspected damaged):
it re-hashes every file against the manifests, moves what is damaged to ``quarantine/``
(never deleting anything), and lists what an interrupted write may have left behind
(temporary files, data files no manifest uses, resumable extraction chunks). Its exit code
is 1 when something was damaged, 0 otherwise.

Every data file is hashed, whatever its verified stamp (see :mod:`engine.storage.store`): verify is
the check that also catches damage a stamp cannot see. An intact large file is stamped
again; a damaged one loses its stamp; stamps of files that are gone are removed.

What counts as damaged: a manifest that is unreadable, edited (self-hash), foreign (fields
missing or of the wrong type) or renamed; a data file whose bytes do not hash to its name
or that is not safetensors; a store whose data file is missing (a partial copy); a partial
extraction chunk that is not readable; a job report that is not JSON; a job table that
fails SQLite's integrity check. A damaged *store* keeps its manifest (its name says what
to re-import); a damaged derived result is quarantined whole (it is recomputed on demand).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.errors import IntegrityError
from engine.storage.atomic import TEMP_PREFIX, sha256_file
from engine.storage.manifests import read_manifest
from engine.storage.objects import _HEX_RE
from engine.storage.stamps import file_stamp
from engine.storage.store import Cache

log = logging.getLogger(__name__)

_OBJECT_PROBLEMS = {"damaged": "its bytes do not match its name (truncated or edited)",
                    "not safetensors": "not a safetensors file (foreign)"}


@dataclass(frozen=True)
class Finding:
    """One thing verify has to say about one file."""

    what: str  # store | derived | object | chunk | report | jobs | temp
    path: str  # relative to the cache root
    problem: str  # what is wrong, or what the file is (for notes)
    quarantined_to: str | None = None  # where a damaged file went (relative), if it was moved


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_cache`: counts of healthy entries, damage, and notes."""

    root: str
    checked: dict[str, int] = field(default_factory=dict)  # healthy entries per kind
    damaged: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)  # left-overs that are not damage
    removed_temp: int = 0

    @property
    def ok(self) -> bool:
        return not self.damaged

    def count(self, what: str) -> None:
        self.checked[what] = self.checked.get(what, 0) + 1

    def as_dict(self) -> dict:
        return {"root": self.root, "ok": self.ok, "checked": self.checked,
                "damaged": [asdict(f) for f in self.damaged], "notes": [asdict(f) for f in self.notes],
                "removed_temp": self.removed_temp}


class _Checker:
    def __init__(self, cache: Cache, quarantine: bool, report: VerifyReport):
        self.cache, self.move, self.report = cache, quarantine, report
        self.good_objects: set[str] = set()  # digests already hashed and found intact
        self.referenced: set[str] = set()

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.cache.root))

    def damage(self, what: str, path: Path, problem: str, move: bool = True) -> None:
        moved = None
        if move and self.move:
            target = self.cache.quarantine(path)
            moved = self.rel(target) if target is not None else None
        self.report.damaged.append(Finding(what, self.rel(path), problem, moved))

    def object_problem(self, digest: str) -> str | None:
        """None if objects/<digest>.safetensors is intact; else what is wrong (and it is moved)."""
        self.referenced.add(digest)
        if digest in self.good_objects:
            return None
        path = self.cache.object_path(digest)
        if not path.is_file():
            return f"its data file objects/{digest[:12]}… is missing (a partial copy?)"
        problem = self.hash_problem(path, digest)
        if problem:
            self.damage("object", path, _OBJECT_PROBLEMS[problem])
            return f"its data file objects/{digest[:12]}… is {problem}"
        self.good_objects.add(digest)
        self.report.count("object")
        return None

    def hash_problem(self, path: Path, digest: str) -> str | None:
        """Hash the file (whatever its stamp) and parse its header: None when intact (it is
        stamped), else a key of _OBJECT_PROBLEMS (its stamp is forgotten)."""
        stamp = file_stamp(path)
        if sha256_file(path) != digest:
            self.cache.forget_verified(digest)
            return "damaged"
        if not _is_safetensors(path):
            self.cache.forget_verified(digest)
            return "not safetensors"
        if stamp is not None and file_stamp(path) == stamp:
            self.cache.mark_verified(digest, stamp)
        return None

    def stamps(self) -> None:
        """Verified stamps whose data file is gone (quarantined, removed) are removed."""
        folder = self.cache.verified_dir
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            digest = path.stem
            if not path.name.startswith(TEMP_PREFIX) and not self.cache.object_path(digest).exists():
                path.unlink(missing_ok=True)

    def stores(self) -> None:
        for path in sorted(self.cache.stores_dir.glob("*.json")) if self.cache.stores_dir.is_dir() else []:
            if path.name.startswith(TEMP_PREFIX):
                continue
            try:
                manifest = read_manifest(path, "logits")
                if manifest["name"] != path.stem:
                    raise IntegrityError(f"it is the manifest of store {manifest['name']!r} (renamed)")
            except IntegrityError as exc:
                self.damage("store", path, str(exc))
                continue
            except FileNotFoundError:
                continue
            problem = self.object_problem(manifest["arrays_sha256"])
            if problem:  # keep the manifest: its name tells the user what to re-import
                self.damage("store", path, f"store {path.stem!r}: {problem}", move=False)
            else:
                self.report.count("store")

    def derived(self) -> None:
        for path in self.cache.derived_manifest_paths():
            try:
                manifest = read_manifest(path, "derived")
                if self.cache.derived_key(manifest["kind"], manifest["config"]) != path.stem:
                    raise IntegrityError("its name is not the hash of its configuration (foreign)")
            except IntegrityError as exc:
                self.damage("derived", path, str(exc))
                continue
            except FileNotFoundError:
                continue
            problem = self.object_problem(manifest["arrays_sha256"])
            if problem:
                self.damage("derived", path, f"{problem}; it will be recomputed when needed")
            else:
                self.report.count("derived")

    def objects(self) -> None:
        """Data files no manifest uses: verify them too (a damaged one is never trusted)."""
        folder = self.cache.objects_dir
        for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
            digest = path.name.removesuffix(".safetensors")
            if path.name.startswith(TEMP_PREFIX) or digest in self.referenced:
                continue
            if not _HEX_RE.match(digest):
                self.damage("object", path, "not named by a SHA-256 (foreign file)")
                continue
            problem = self.hash_problem(path, digest)
            if problem:
                self.damage("object", path, _OBJECT_PROBLEMS[problem])
                continue
            self.report.count("object")
            self.report.notes.append(Finding(
                "object", self.rel(path),
                f"intact but used by no manifest ({path.stat().st_size / 2**20:.1f} MiB): an "
                "overwritten store's old data, or a write interrupted before its manifest"))

    def chunks(self) -> None:
        """Resumable extraction chunks (``partial/<key>/chunk-*.safetensors``)."""
        folder = self.cache.partial_dir
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
            n = 0
            for path in sorted(sub.glob("chunk-*.safetensors")):
                if _is_safetensors(path):
                    n += 1
                    self.report.count("chunk")
                else:
                    self.damage("chunk", path, "unreadable extraction chunk; it will be recomputed")
            self.report.notes.append(Finding(
                "chunk", self.rel(sub), f"an unfinished extraction ({n} chunks kept); the same "
                "`python -m engine extract` command resumes it, or delete the folder"))

    def reports(self) -> None:
        folder = self.cache.runs_dir
        for path in sorted(folder.glob("*/report*.json")) if folder.is_dir() else []:
            try:
                json.loads(path.read_bytes())
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                self.damage("report", path, f"job report is not JSON ({exc})")
                continue
            self.report.count("report")

    def jobs(self) -> None:
        path = self.cache.jobs_table_path
        if not path.is_file():
            return
        try:
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
            try:
                result = con.execute("PRAGMA integrity_check").fetchone()[0]
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            result = str(exc)
        if result == "ok":
            self.report.count("jobs table")
        else:  # never moved: the running jobs write to it; the user decides
            self.damage("jobs", path, f"SQLite integrity check failed ({result}); move it aside "
                        "to start a new job table", move=False)

    def temp_files(self, clean_older_than: float | None) -> None:
        now = time.time()
        for path in sorted(self.cache.root.rglob(f"{TEMP_PREFIX}*")):
            if not path.is_file():
                continue
            age = now - path.stat().st_mtime
            if clean_older_than is not None and age > clean_older_than:
                path.unlink(missing_ok=True)
                self.report.removed_temp += 1
                continue
            self.report.notes.append(Finding(
                "temp", self.rel(path), f"temporary file of an interrupted (or running) write, "
                f"{age / 60:.0f} min old; never read. `verify --clean` removes old ones"))


def _is_safetensors(path: Path) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            handle.keys()
        return True
    except Exception:  # any failure to parse the header means: not a safetensors file
        return False


def verify_cache(
    cache: Cache | str | Path, *, quarantine: bool = True, clean_temp_older_than: float | None = None
) -> VerifyReport:
    """Check every entry of ``cache``; move damaged files to quarantine (unless told not to).

    ``clean_temp_older_than`` (seconds): remove temporary files left by interrupted writes
    that are older than this (a running write's own temporary file is younger).
    """
    cache = cache if isinstance(cache, Cache) else Cache(cache)
    report = VerifyReport(str(cache.root))
    checker = _Checker(cache, quarantine, report)
    checker.stores()
    checker.derived()
    checker.objects()
    checker.chunks()
    checker.reports()
    checker.jobs()
    checker.stamps()
    checker.temp_files(clean_temp_older_than)
    if report.damaged:
        log.warning("%d damaged entr%s in %s", len(report.damaged),
                    "y" if len(report.damaged) == 1 else "ies", cache.root)
    return report
