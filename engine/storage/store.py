"""The portable, content-addressed cache of logit stores and derived results.

:class:`Cache` is the one owner of the folder's layout (see ``cache/README.md``); every other
module asks it for a path::

    stores/<name>.json            manifest of a logit store (self-hashed JSON)
    objects/<sha256>.safetensors  arrays, named by the SHA-256 of the file's bytes
    derived/<kind>-<key>.json     Grams, solutions, α paths; key = hash of their config
    partial/<key>/                chunks of an unfinished extraction
    runs/<kind>-<hash>/           a job's or a training run's own folder (checkpoints, report)
    datasets/<name>/              rendered datasets (the glyph world)
    jobs.sqlite  jobs/logs/  jobs/slurm/<id>/   the job table, job logs, submitit folders
    quarantine/                   entries that failed verification (moved aside, never used)
    locks/                        advisory lock files

Every read hashes the bytes it uses and compares them with the manifest, so a truncated,
edited or foreign file is reported (and quarantined), never trusted. Large arrays can be
read as memory maps (``mmap=True``): the file is hashed in full on the first such read in a
process and mapped read-only, so a 3.8 GB Gram costs memory only for the rows a solve
touches. Every write is atomic, and arrays are written by blocks (no second copy of a
store in memory). Arrays are safetensors (no pickle anywhere).

**Verified stamps.** Hashing a 21,843-category store and its Gram (5.2 GB) costs seconds in
every process that opens them. So an object of at least :data:`STAMP_MIN_BYTES` whose bytes
were hashed (when written, or on a read) gets a stamp, ``verified/<sha256>.json``: the file's
device, inode, size, modification and status-change times (ns) at that moment. A later
process that finds the same five values does not hash the file again. Any write through the
file system changes the modification and status-change times, and ``touch`` or ``os.utime``
can set the former but never the latter; a copy (to another folder or machine) is a new inode.
What a stamp does not catch is damage below the file system (a bad disk sector, a byte edited
on the raw device) and a deliberate tamper that also resets the system clock:
``python -m engine verify`` hashes every file whatever its stamp, quarantines what is
damaged (and drops its stamp). Objects below the threshold are hashed on every read.
"""


from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import IntegrityError, InvalidInputError, NotFoundError
from engine.storage.arrays import _Overflow
from engine.storage.atomic import write_json_atomic
from engine.storage.derived import DerivedMixin
from engine.storage.layout import DEFAULT_CACHE, CacheLayout
from engine.storage.manifests import (
    _DTYPES,
    _NAME_RE,
    FORMAT_VERSION,
    _abs_max,
    _versions,
    check_logit_arrays,
    check_store_name,
    labels_fingerprint,
    read_manifest,
    self_hash,
)
from engine.storage.memory import check_memory
from engine.storage.objects import ObjectsMixin
from engine.storage.quarantine import QuarantineMixin
from engine.storage.stamps import _VERIFIED, StampsMixin, file_stamp

__all__ = ["DEFAULT_CACHE", "Cache", "LogitStore"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LogitStore:
    """A verified logit store: read-only arrays plus the manifest that describes them."""

    name: str
    manifest: dict[str, Any]
    logits: np.ndarray  # (N, K) float32 or float16, raw logits (never centred)
    labels: np.ndarray  # (N,) int64, ground-truth category per sample
    cache: Path = field(repr=False)

    @property
    def n(self) -> int:
        return int(self.logits.shape[0])

    @property
    def k(self) -> int:
        return int(self.logits.shape[1])

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["class_names"])

    @property
    def content_hash(self) -> str:
        """SHA-256 of the arrays file: the store's identity for every derived result."""
        return str(self.manifest["arrays_sha256"])

    @property
    def sample_fingerprint(self) -> str:
        """Identifies which samples, in which order, the rows are (pairing needs equality)."""
        return str(self.manifest["sample_fingerprint"])


class Cache(CacheLayout, ObjectsMixin, StampsMixin, QuarantineMixin, DerivedMixin):
    """A cache folder: logit stores by name, derived results by configuration key.

    The one owner of the folder's layout (:class:`~engine.storage.layout.CacheLayout`): jobs,
    training, extraction and the dashboard ask it for every path and are given a
    :class:`Cache`, never a path they would extend themselves.
    """

    # -- stores
    def save_store(
        self,
        name: str,
        logits: Any,
        labels: Any,
        class_names: list[str] | None = None,
        *,
        meta: dict[str, Any] | None = None,
        sample_fingerprint: str | None = None,
        dtype: str = "float32",
        overwrite: bool = False,
    ) -> LogitStore:
        """Validate and write a logit store atomically; return it, verified.

        ``meta`` goes into the manifest (model, checkpoint hash, dataset, transform...).
        Saving identical content under an existing name is a no-op; different content
        under an existing name needs ``overwrite=True`` (the old arrays stay until removed).
        """
        check_store_name(name)
        if dtype not in _DTYPES:
            raise InvalidInputError(f"dtype must be one of {sorted(_DTYPES)}; got {dtype!r}")
        logits, labels, class_names = check_logit_arrays(logits, labels, class_names)
        target = np.dtype(_DTYPES[dtype])
        with self.lock(f"store-{name}"):
            try:  # converted block by block while written: no second copy of the logits
                digest = self.put_arrays({"logits": logits, "labels": labels},
                                         dtypes={"logits": target} if logits.dtype != target else None)
            except _Overflow:
                limit = float(np.finfo(target).max)
                hint = ("store them as float32 (drop --float16)" if dtype == "float16" else
                        "rescale them (logits of a classifier are rarely above 1e4) and import again")
                raise InvalidInputError(
                    f"logits overflow {dtype} (largest |value| {_abs_max(logits):.3g}, {dtype} "
                    f"holds at most {limit:.3g}); {hint}"
                ) from None
            path = self._manifest_path(name)
            if path.exists():
                old = self._read_manifest(name)
                if old["arrays_sha256"] == digest and old["class_names"] == class_names:
                    return self.load_store(name)
                if not overwrite:
                    raise InvalidInputError(
                        f"a store named {name!r} already exists with other content; choose "
                        "another name, or overwrite it on purpose (--overwrite)"
                    )
            manifest: dict[str, Any] = {
                "format_version": FORMAT_VERSION,
                "kind": "logits",
                "name": name,
                "arrays_sha256": digest,
                "n": int(logits.shape[0]),
                "k": int(logits.shape[1]),
                "dtype": dtype,
                "class_names": class_names,
                "sample_fingerprint": sample_fingerprint or labels_fingerprint(labels),
                "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                "versions": _versions(),
                **(meta or {}),
            }
            manifest["manifest_sha256"] = self_hash(manifest)
            write_json_atomic(path, manifest)
        # the bytes just written are the arrays just checked: reading the store back neither
        # hashes them again nor scans them (a scan of a memory map would make every page of
        # the file resident while the caller still holds the logits)
        _VERIFIED[digest] = file_stamp(self.object_path(digest))
        self._note_logits_checked(digest)
        log.info("stored %s: %d samples x %d categories", name, *logits.shape)
        return self.load_store(name)

    def store_manifest(self, name: str) -> dict[str, Any]:
        """A store's verified manifest (its arrays are not read)."""
        return self._read_manifest(name)

    def _read_manifest(self, name: str) -> dict[str, Any]:
        path = self._manifest_path(name)
        if not path.exists():
            known = self.store_names()
            hint = f"known stores: {', '.join(known)}" if known else "the cache is empty"
            raise NotFoundError(
                f"no store named {name!r} in {self.root} ({hint}). Create one with "
                "`python -m engine import-logits FILE --name NAME` or `python -m engine demo`"
            )
        manifest = self._read_json_verified(path, f"store {name!r}", "logits")
        if manifest["name"] != name:
            moved = self.quarantine(path)
            raise IntegrityError(
                f"store {name!r}: its manifest belongs to store {manifest['name']!r} (the file was "
                f"renamed or copied over); moved to {moved}. Import the data again under {name!r}"
            )
        return manifest

    def _read_json_verified(self, path: Path, what: str, kind: str | None = None) -> dict[str, Any]:
        """A manifest whose self-hash (and, for ``kind``, layout) checks out; else quarantine it."""
        try:
            manifest = read_manifest(path, kind)
        except FileNotFoundError:
            raise IntegrityError(
                f"{what}: its manifest {path.name} was just moved away by another process "
                "(it is damaged); look in the quarantine folder"
            ) from None
        except IntegrityError as exc:
            moved = self.quarantine(path)
            raise IntegrityError(f"{what}: {exc}; moved to {moved}. Re-import or recompute it.") from None
        return manifest

    def load_store(self, name: str, *, mmap: bool = True) -> LogitStore:
        """Load a store by name, verifying manifest and arrays; raises if anything is off.

        The logits are a read-only memory map by default (``mmap=False``: read into memory).
        A store larger than the memory available is refused before anything is read, with
        the size it needs.
        """
        manifest = self._read_manifest(name)
        need = int(manifest["n"]) * int(manifest["k"]) * np.dtype(_DTYPES[manifest["dtype"]]).itemsize
        check_memory(need, f"store {name!r} ({manifest['n']:,} samples × {manifest['k']:,} categories)",
                     "Free memory (close other programs), or open the store on a machine with more; "
                     "its Gram and dependencies need less than its logits")
        arrays = self.get_arrays(manifest["arrays_sha256"], f"store {name!r}", mmap=mmap)
        logits, labels = arrays.get("logits"), arrays.get("labels")
        if logits is None or labels is None or logits.shape != (manifest["n"], manifest["k"]):
            raise IntegrityError(f"store {name!r}: arrays do not match the manifest's shape")
        if logits.dtype != _DTYPES[manifest["dtype"]] or labels.dtype != np.int64:
            raise IntegrityError(
                f"store {name!r}: arrays are {logits.dtype}/{labels.dtype}, the manifest says "
                f"{manifest['dtype']}/int64 (a foreign file)"
            )
        digest = manifest["arrays_sha256"]
        if not self._logits_checked(digest):
            try:  # content that no import would have written: refuse it before any page uses it
                check_logit_arrays(logits, labels, manifest["class_names"])
            except InvalidInputError as exc:
                raise IntegrityError(f"store {name!r}: the stored arrays are not valid logits ({exc})") from None
            self._note_logits_checked(digest)
        if mmap:
            labels = np.array(labels)  # small; a plain array for every consumer
        return LogitStore(name=name, manifest=manifest, logits=logits, labels=labels, cache=self.root)

    def store_names(self) -> list[str]:
        if not self.stores_dir.exists():
            return []
        return sorted(p.stem for p in self.stores_dir.glob("*.json") if _NAME_RE.match(p.stem))

    def store_manifests(self) -> list[dict[str, Any]]:
        """Manifests of every store (self-hash verified; damaged ones are reported, skipped)."""
        out = []
        for name in self.store_names():
            try:
                out.append(self._read_manifest(name))
            except IntegrityError as exc:
                log.warning("%s", exc)
        return out
