"""The cache folder's layout: every path under a cache, named once (see ``cache/README.md``).

:class:`CacheLayout` is the base of :class:`engine.storage.store.Cache`; jobs, training,
extraction and the dashboard ask it for a path (``cache.runs_dir``, ``cache.jobs_table_path``…),
never build one themselves (``tests/test_structure.py`` checks that).
"""

from __future__ import annotations

from pathlib import Path

from engine.storage.atomic import file_lock
from engine.storage.manifests import check_store_name

DEFAULT_CACHE = Path("cache")


class CacheLayout:
    """A cache folder's paths (and its advisory locks); no reading or writing of entries."""

    def __init__(self, root: Path | str = DEFAULT_CACHE):
        self.root = Path(root)

    @classmethod
    def of(cls, cache: CacheLayout | Path | str):
        """``cache`` itself, or the cache at that folder (for callers that hold a path)."""
        return cache if isinstance(cache, cls) else cls(cache)

    def resolved(self):
        """The same cache with an absolute root (for processes started elsewhere)."""
        return type(self)(self.root.resolve())

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, CacheLayout) and self.root.resolve() == other.root.resolve()

    def __hash__(self) -> int:
        return hash(self.root.resolve())

    # -- paths (the layout; nobody else joins names onto the root)
    @property
    def stores_dir(self) -> Path:
        return self.root / "stores"

    @property
    def objects_dir(self) -> Path:
        return self.root / "objects"

    @property
    def derived_dir(self) -> Path:
        return self.root / "derived"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    @property
    def verified_dir(self) -> Path:
        """Verified stamps of large objects (see the module's docstring)."""
        return self.root / "verified"

    def verified_path(self, digest: str) -> Path:
        return self.verified_dir / f"{digest}.json"

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    @property
    def partial_dir(self) -> Path:
        """Unfinished extractions, one folder per extraction key."""
        return self.root / "partial"

    def partial_path(self, key: str) -> Path:
        return self.partial_dir / key

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def run_dir(self, kind: str, spec_hash: str) -> Path:
        """A run's own folder: equal specs share it, so a rerun resumes."""
        return self.runs_dir / f"{kind}-{spec_hash}"

    @property
    def datasets_dir(self) -> Path:
        return self.root / "datasets"

    def dataset_dir(self, name: str) -> Path:
        return self.datasets_dir / name

    @property
    def talk_path(self) -> Path:
        """The cache's talk file (engine.apps.talk.talkfile): what the Talk page and `talk` show."""
        return self.root / "talk.toml"

    @property
    def talk_dir(self) -> Path:
        """Prepared decks (engine.apps.talk.deck), named by the hash of what they show."""
        return self.root / "talk"

    @property
    def jobs_table_path(self) -> Path:
        return self.root / "jobs.sqlite"

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    @property
    def job_logs_dir(self) -> Path:
        return self.jobs_dir / "logs"

    def slurm_dir(self, job_id: int) -> Path:
        return self.jobs_dir / "slurm" / str(job_id)

    def store_manifest_path(self, name: str) -> Path:
        return self._manifest_path(name)

    def store_stamps(self, names) -> tuple[int, ...]:
        """The modification times (ns) of the named stores' manifests, 0 for a store not there:
        what changes when a store is (re-)imported (the dashboard's freshness stamp)."""
        out = []
        for name in names:
            try:
                out.append(self._manifest_path(name).stat().st_mtime_ns)
            except FileNotFoundError:
                out.append(0)
        return tuple(out)

    def derived_path(self, key: str) -> Path:
        return self.derived_dir / f"{key}.json"

    def object_path(self, digest: str) -> Path:
        return self.objects_dir / f"{digest}.safetensors"

    def lock(self, key: str):
        """Exclusive lock for one store name or derived key (two writers never interleave)."""
        return file_lock(self.locks_dir / f"{key}.lock")

    def _manifest_path(self, name: str) -> Path:
        return self.stores_dir / f"{check_store_name(name)}.json"
