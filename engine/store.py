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
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from engine import __version__
from engine.atomic import (
    canonical_json,
    commit,
    file_lock,
    sha256_bytes,
    sha256_file,
    temp_file,
    write_json_atomic,
)
from engine.errors import IntegrityError, InvalidInputError, NotFoundError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_CACHE = Path("cache")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")
_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
_DTYPES = {"float32": np.float32, "float16": np.float16}
# safetensors' names of numpy dtypes, in the order its writer sorts them (descending)
_ST_DTYPES = {"BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "I16": np.int16, "U16": np.uint16,
              "F16": np.float16, "I32": np.int32, "U32": np.uint32, "F32": np.float32, "F64": np.float64,
              "I64": np.int64, "U64": np.uint64}
_ST_NAME = {np.dtype(v): k for k, v in _ST_DTYPES.items()}
_ST_RANK = {k: i for i, k in enumerate(_ST_DTYPES)}
_BLOCK_BYTES = 64 << 20  # arrays are converted and written by blocks of about this size
# Objects at least this large keep a verified stamp (see the module's docstring): hashing them
# costs more than a stamp's small write; smaller ones are hashed on every read.
STAMP_MIN_BYTES = 64 << 20


# ----------------------------------------------------------------------------- validation


def check_store_name(name: str) -> str:
    """A store name is a plain file name: letters, digits and ``._+-``, never a path."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.endswith(".json"):
        raise InvalidInputError(
            f"invalid store name {name!r}: use 1-100 letters, digits, '.', '_', '+' or '-', "
            "starting with a letter or digit (no '/', no spaces), e.g. 'resnet50-val'"
        )
    return name


def _non_finite(logits: np.ndarray, block: int = 1 << 22) -> tuple[int, tuple[int, int]] | None:
    """(count, first position) of NaN/Inf values, or None; by row blocks (no N×K mask at once)."""
    rows = max(1, block // max(logits.shape[1], 1))
    count, first = 0, None
    for start in range(0, logits.shape[0], rows):
        finite = np.isfinite(logits[start : start + rows])
        if not finite.all():
            count += int((~finite).sum())
            if first is None:
                r, c = np.argwhere(~finite)[0]
                first = (start + int(r), int(c))
    return None if first is None else (count, first)


def check_logit_arrays(
    logits: Any, labels: Any, class_names: list[str] | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Validate and normalise (logits N×K float, labels N int, K class names).

    Raises :class:`InvalidInputError` naming the offending value and what to do.
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 2:
        raise InvalidInputError(
            f"logits must be a 2-D array (samples × categories); got shape {logits.shape}"
        )
    if logits.dtype.kind != "f":
        raise InvalidInputError(
            f"logits must be floating point (float16/32/64); got dtype {logits.dtype}"
        )
    n, k = logits.shape
    if n == 0 or k < 2:
        raise InvalidInputError(
            f"logits must hold at least 1 sample and 2 categories; got shape {logits.shape}"
        )
    bad = _non_finite(logits)
    if bad is not None:
        count, (row, col) = bad
        raise InvalidInputError(
            f"logits contain {count} NaN/Inf values (first at sample {row}, "
            f"category {col}); recompute them or drop those samples before importing"
        )
    if labels.ndim != 1:
        raise InvalidInputError(f"labels must be a 1-D array of N integers; got shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        if labels.dtype.kind == "f" and labels.size and np.all(labels == np.round(labels)):
            labels = labels.astype(np.int64)
        else:
            raise InvalidInputError(f"labels must be integers; got dtype {labels.dtype}")
    if labels.shape[0] != n:
        raise InvalidInputError(
            f"logits have {n} samples but labels have {labels.shape[0]}; they must match"
        )
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise InvalidInputError(
            f"labels must lie in [0, {k - 1}] for {k} categories; got values from "
            f"{labels.min()} to {labels.max()}"
        )
    if class_names is None:
        class_names = [f"class {i}" for i in range(k)]
    class_names = [str(c) for c in class_names]
    if len(class_names) != k:
        raise InvalidInputError(
            f"logits have {k} categories but {len(class_names)} class names were given"
        )
    return logits, labels, class_names


# ----------------------------------------------------------------------------- safetensors


def save_file(arrays: dict[str, np.ndarray], path, metadata: dict[str, str] | None = None,
              dtypes: dict[str, Any] | None = None) -> str:
    """Write ``arrays`` as a safetensors file by blocks; return the SHA-256 of its bytes.

    The bytes are those of ``safetensors.numpy.save`` (same header, same order), so content
    hashes do not depend on which writer made a file. ``dtypes`` converts arrays on the way
    (block by block: a float64 source never has a float32 copy in memory); a conversion that
    overflows raises :class:`InvalidInputError`. Memory: one block (~64 MiB), not the file.
    """
    dtypes = dtypes or {}
    specs = {}
    for name, arr in arrays.items():
        dt = np.dtype(dtypes.get(name, arr.dtype))
        if dt not in _ST_NAME:
            raise InvalidInputError(f"array {name!r}: dtype {dt} cannot be stored")
        specs[name] = (_ST_NAME[dt], dt, tuple(int(x) for x in arr.shape))
    order = sorted(specs, key=lambda n: (-_ST_RANK[specs[n][0]], n))
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name in order:
        st_name, dt, shape = specs[name]
        size = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        header[name] = {"dtype": st_name, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        for block in [struct.pack("<Q", len(text)), text]:
            handle.write(block)
            digest.update(block)
        for name in order:
            for block in _blocks(name, arrays[name], specs[name][1]):
                handle.write(block)
                digest.update(block)
    return digest.hexdigest()


def _blocks(name: str, arr: np.ndarray, dt: np.dtype):
    """The bytes of ``arr`` as ``dt``, C order, by blocks of rows."""
    arr = np.asarray(arr)
    if arr.ndim == 0 or arr.size == 0:
        yield np.ascontiguousarray(arr, dtype=dt).tobytes()
        return
    row_bytes = max(1, arr[0].size * max(arr.dtype.itemsize, dt.itemsize))
    rows = max(1, _BLOCK_BYTES // row_bytes)
    for start in range(0, arr.shape[0], rows):
        part = arr[start : start + rows]
        if part.dtype != dt:
            with np.errstate(over="ignore", invalid="ignore"):
                part = part.astype(dt)
            if dt.kind == "f" and not np.isfinite(part).all():
                raise _Overflow(name, dt)
        yield memoryview(np.ascontiguousarray(part)).cast("B")  # no copy: written and hashed as it is


class _Overflow(InvalidInputError):
    def __init__(self, name: str, dt: np.dtype):
        super().__init__(f"array {name!r} overflows {dt}")
        self.dtype = dt


def map_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file as read-only memory maps (nothing is read now).

    Raises :class:`IntegrityError` when the header is not a safetensors header.
    """
    try:
        with open(path, "rb") as handle:
            (n,) = struct.unpack("<Q", handle.read(8))
            if n > 100_000_000:
                raise ValueError(f"header of {n} bytes")
            header = json.loads(handle.read(n))
        size = Path(path).stat().st_size
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            dt = np.dtype(_ST_DTYPES[info["dtype"]])
            start, end = (int(x) for x in info["data_offsets"])
            shape = tuple(int(x) for x in info["shape"])
            if end - start != int(np.prod(shape, dtype=np.int64)) * dt.itemsize or 8 + n + end > size:
                raise ValueError(f"array {name!r} does not fit the file")
            if end == start:
                out[name] = np.zeros(shape, dt)
            else:
                out[name] = np.memmap(path, dtype=dt, mode="r", offset=8 + n + start, shape=shape)
        return out
    except (OSError, ValueError, KeyError, TypeError, struct.error) as exc:
        raise IntegrityError(f"{Path(path).name} is not a readable safetensors file ({exc})") from None


_CHECKED: dict[str, bool] = {}  # store arrays (by digest) whose values were checked in this process
_VERIFIED: dict[str, tuple] = {}  # digest -> file_stamp of the file hashed in full in this process
_STAMP_FIELDS = ("dev", "ino", "size", "mtime_ns", "ctime_ns")


def file_stamp(path: Path) -> tuple | None:
    """(device, inode, size, mtime_ns, ctime_ns): changes with any write, rename or copy."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


# ----------------------------------------------------------------------------- the store


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



def manifest_model(manifest: dict[str, Any]) -> dict[str, Any]:
    """What made a store's logits, whichever writer made it: ``{"name": …, …}`` or ``{}``.

    Imports record ``model`` (``{"name", "source"}``), extraction ``model_info`` (name, arch,
    checkpoint…), training jobs ``source`` (``{"job_kind", "model", …}``).
    """
    model = manifest.get("model")
    if isinstance(model, dict):
        return dict(model)
    if isinstance(model, str):
        return {"name": model}
    info = manifest.get("model_info")
    if isinstance(info, dict):
        return {"name": str(info.get("model", "")), **info}
    source = manifest.get("source")
    if isinstance(source, dict) and "job_kind" in source:
        return {"name": f"{source['job_kind']} job: {source.get('model', '?')}"}
    return {}


def manifest_dataset(manifest: dict[str, Any]) -> dict[str, Any]:
    """The dataset a store's logits were computed on, as recorded: ``{"name", "split", …}`` or ``{}``.

    Extraction records ``dataset_info`` (name, split, and for image folders their ``root`` and
    ``folder_names``); other writers may record ``dataset``.
    """
    for key in ("dataset", "dataset_info"):
        value = manifest.get(key)
        if isinstance(value, dict):
            out = dict(value)
            out.setdefault("name", str(value.get("dataset", "")))
            return out
        if isinstance(value, str):
            return {"name": value}
    return {}


def labels_fingerprint(labels: np.ndarray) -> str:
    """Sample fingerprint of imported logits, which carry no sample ids: N and the label order."""
    return "labels:" + sha256_bytes(np.ascontiguousarray(labels, dtype=np.int64).tobytes())


def _versions() -> dict[str, str]:
    import numpy

    out = {"engine": __version__, "numpy": numpy.__version__, "python": platform.python_version()}
    try:
        import torch

        out["torch"] = torch.__version__
    except ImportError:  # pragma: no cover - torch is a requirement
        pass
    return out


def _abs_max(arr: np.ndarray, block: int = 1 << 22) -> float:
    rows = max(1, block // max(arr.shape[1], 1))
    return max(float(np.abs(arr[s : s + rows]).max(initial=0.0)) for s in range(0, arr.shape[0], rows))


def _self_hash(manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return sha256_bytes(canonical_json(body).encode())


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _layout_problem(manifest: dict[str, Any], kind: str) -> str | None:
    """What is wrong with a self-consistent manifest's fields (a foreign file), or None."""
    if not isinstance(manifest.get("arrays_sha256"), str) or not _HEX_RE.match(manifest["arrays_sha256"]):
        return "its content hash 'arrays_sha256' is missing or malformed"
    if kind == "derived":
        if not isinstance(manifest.get("kind"), str) or not isinstance(manifest.get("config"), dict):
            return "'kind' or 'config' is missing"
        return None
    if manifest.get("kind") != "logits" or not isinstance(manifest.get("name"), str):
        return f"it is not a logit store manifest (kind {manifest.get('kind')!r})"
    if not _is_int(manifest.get("n"), 1) or not _is_int(manifest.get("k"), 2):
        return f"n = {manifest.get('n')!r} and k = {manifest.get('k')!r} are not valid sizes"
    if manifest.get("dtype") not in _DTYPES:
        return f"dtype {manifest.get('dtype')!r} is not one of {sorted(_DTYPES)}"
    names = manifest.get("class_names")
    if not isinstance(names, list) or len(names) != manifest["k"] or not all(isinstance(c, str) for c in names):
        return f"'class_names' is not a list of {manifest['k']} strings"
    if not isinstance(manifest.get("sample_fingerprint"), str):
        return "'sample_fingerprint' is missing"
    return None


def read_manifest(path: Path, kind: str | None = None) -> dict[str, Any]:
    """Read a manifest and check its self-hash (and, for ``kind`` "logits" or "derived", its
    fields). Raises :class:`IntegrityError` saying what is wrong (nothing is moved here);
    FileNotFoundError when the file is not there."""
    import json

    try:
        manifest = json.loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise IntegrityError(f"manifest {Path(path).name} is unreadable ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("manifest_sha256") != _self_hash(manifest):
        raise IntegrityError(
            f"manifest {Path(path).name} was edited or truncated (its self-hash does not match)"
        )
    problem = _layout_problem(manifest, kind) if kind else None
    if problem:
        raise IntegrityError(f"manifest {Path(path).name} is foreign: {problem}")
    return manifest


def available_memory() -> int:
    """Bytes of memory this machine can give a process now (MemAvailable), or a large number."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # psutil missing or unusable: do not refuse on a guess
        return 1 << 62


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def check_memory(needed: int, what: str, hint: str) -> None:
    """Refuse, before anything is allocated, work that needs more memory than is available."""
    free = available_memory()
    if needed > free:
        raise InvalidInputError(
            f"{what} needs {gib(needed)} of memory; this machine has {gib(free)} available. {hint}")


class Cache:
    """A cache folder: logit stores by name, derived results by configuration key.

    The one owner of the folder's layout: jobs, training, extraction and the dashboard ask
    it for every path (``cache.runs_dir``, ``cache.jobs_table_path``…) and are given a
    :class:`Cache`, never a path they would extend themselves.
    """

    def __init__(self, root: Path | str = DEFAULT_CACHE):
        self.root = Path(root)

    @classmethod
    def of(cls, cache: Cache | Path | str) -> Cache:
        """``cache`` itself, or the cache at that folder (for callers that hold a path)."""
        return cache if isinstance(cache, Cache) else cls(cache)

    def resolved(self) -> Cache:
        """The same cache with an absolute root (for processes started elsewhere)."""
        return Cache(self.root.resolve())

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Cache) and self.root.resolve() == other.root.resolve()

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
        """The cache's talk file (engine.talk.talkfile): what the Talk page and `talk` show."""
        return self.root / "talk.toml"

    @property
    def talk_dir(self) -> Path:
        """Prepared decks (engine.talk.deck), named by the hash of what they show."""
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

    def derived_path(self, key: str) -> Path:
        return self.derived_dir / f"{key}.json"

    def object_path(self, digest: str) -> Path:
        return self.objects_dir / f"{digest}.safetensors"

    def lock(self, key: str):
        """Exclusive lock for one store name or derived key (two writers never interleave)."""
        return file_lock(self.locks_dir / f"{key}.lock")

    def _manifest_path(self, name: str) -> Path:
        return self.stores_dir / f"{check_store_name(name)}.json"

    # -- objects
    def put_arrays(self, arrays: dict[str, np.ndarray], metadata: dict[str, str] | None = None,
                   dtypes: dict[str, Any] | None = None) -> str:
        """Write arrays as one safetensors object, by blocks; return its SHA-256 (its name)."""
        with temp_file(self.objects_dir, ".safetensors") as tmp:
            digest = save_file(arrays, str(tmp), metadata, dtypes) if dtypes else \
                save_file(arrays, str(tmp), metadata)
            digest = digest or sha256_file(tmp)
            final = self.object_path(digest)
            found = file_stamp(final)
            if found is not None and sha256_file(final) == digest:
                stamp = found if file_stamp(final) == found else None
            else:
                commit(tmp, final)
                stamp = file_stamp(final)
        if stamp is not None:  # the bytes there hash to their name: no process hashes them again
            self.mark_verified(digest, stamp)
        return digest

    def get_arrays(self, digest: str, what: str, *, mmap: bool = False) -> dict[str, np.ndarray]:
        """Read an object, verifying its bytes against ``digest``; quarantine it if they differ.

        ``mmap=True`` returns read-only memory maps; the file is hashed in full the first
        time this process maps it (and again if it changed on disk since).
        """
        if not isinstance(digest, str) or not _HEX_RE.match(digest):
            raise IntegrityError(f"{what}: the recorded content hash {digest!r} is malformed")
        path = self.object_path(digest)
        if not path.exists():
            raise IntegrityError(
                f"{what}: its data file objects/{digest}.safetensors is missing; "
                "copy the whole cache folder, or recompute the entry"
            )
        stamp = file_stamp(path)
        trusted = stamp is not None and (
            (mmap and _VERIFIED.get(digest) == stamp) or self._stamped(digest, stamp) is not None)
        if not trusted:
            self._verify_object(path, digest, what)
            _VERIFIED[digest] = stamp
            if stamp is not None and stamp == file_stamp(path):  # unchanged while it was hashed
                self.mark_verified(digest, stamp)
        if mmap:
            return map_safetensors(path)
        try:
            return load_file(str(path))
        except Exception as exc:  # a file with the right hash but not safetensors: foreign
            raise IntegrityError(f"{what}: data file is not a readable safetensors file ({exc})") from exc

    def _verify_object(self, path: Path, digest: str, what: str) -> None:
        try:
            actual = sha256_file(path)
        except FileNotFoundError:  # another reader quarantined it a moment ago
            raise IntegrityError(
                f"{what}: its data file objects/{digest[:12]}… was just moved to quarantine "
                "by another process (it is damaged); recompute or re-import it"
            ) from None
        if actual != digest:
            _VERIFIED.pop(digest, None)
            self.forget_verified(digest)
            moved = self.quarantine(path)
            raise IntegrityError(
                f"{what}: data file objects/{digest[:12]}… is damaged (hash {actual[:12]}… "
                f"does not match); moved to {moved}. Recompute or re-import it."
            )

    # -- verified stamps
    def _stamped(self, digest: str, stamp: tuple) -> dict | None:
        """The object's verified stamp when it matches ``stamp`` (the file now), else None."""
        if stamp[2] < STAMP_MIN_BYTES:
            return None
        try:
            record = json.loads(self.verified_path(digest).read_bytes())
            same = tuple(record[f] for f in _STAMP_FIELDS) == stamp
        except (OSError, ValueError, TypeError, KeyError, UnicodeDecodeError, RecursionError):
            return None  # missing or unreadable: hash the file (and stamp it again)
        return record if same and record.get("sha256") == digest else None

    def mark_verified(self, digest: str, stamp: tuple, *, logits_checked: bool = False) -> None:
        """Record that objects/<digest> hashed to its name when it was ``stamp``
        (:func:`file_stamp`, taken *before* hashing and unchanged after) — for objects of at
        least :data:`STAMP_MIN_BYTES`. ``logits_checked``: its arrays were also checked as
        logits (finite, labels in range); that depends on the bytes alone, so it is kept
        when the object is stamped again."""
        if stamp is None or stamp[2] < STAMP_MIN_BYTES:
            return
        path = self.verified_path(digest)
        try:
            old = json.loads(path.read_bytes())
            logits_checked = logits_checked or (old.get("sha256") == digest and old.get("logits_checked") is True)
        except (OSError, ValueError, AttributeError, UnicodeDecodeError, RecursionError):
            pass
        record = {"sha256": digest, **dict(zip(_STAMP_FIELDS, stamp)), "logits_checked": logits_checked}
        try:  # no fsync: a stamp lost in a crash only costs one hash
            with temp_file(self.verified_dir, ".json") as tmp:
                tmp.write_bytes(json.dumps(record).encode())
                os.replace(tmp, path)
        except OSError as exc:  # a read-only cache: hashed again next time, nothing else
            log.debug("no verified stamp for %s: %s", digest[:12], exc)

    def forget_verified(self, digest: str) -> None:
        """Drop an object's stamp (it was found damaged, or moved away)."""
        self.verified_path(digest).unlink(missing_ok=True)

    def _logits_checked(self, digest: str) -> bool:
        """Whether the store arrays objects/<digest> were checked as logits (this process, or
        any process, by its stamp)."""
        if _CHECKED.get(digest):
            return True
        stamp = file_stamp(self.object_path(digest))
        record = None if stamp is None else self._stamped(digest, stamp)
        return bool(record and record.get("logits_checked") is True)

    def _note_logits_checked(self, digest: str) -> None:
        """Add 'checked as logits' to the object's stamp, when it has one for the file as it is."""
        _CHECKED[digest] = True
        stamp = file_stamp(self.object_path(digest))
        if stamp is not None and self._stamped(digest, stamp) is not None:
            self.mark_verified(digest, stamp, logits_checked=True)

    def quarantine(self, path: Path) -> Path | None:
        """Move a damaged file to ``quarantine/`` (never deleted); None if it is already gone.

        Several readers may find the same damaged file at once: the first one moves it, the
        others find nothing left to move, which is not an error.
        """
        qdir = self.quarantine_dir
        qdir.mkdir(parents=True, exist_ok=True)
        stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S%f")
        target = qdir / f"{stamp}-{os.getpid()}-{path.name}"
        try:
            os.replace(path, target)  # same file system: atomic, and fails cleanly if gone
        except FileNotFoundError:
            return None
        except OSError:  # quarantine/ on another file system (a symlinked folder)
            try:
                shutil.move(str(path), target)
            except FileNotFoundError:
                return None
        log.warning("quarantined %s -> %s", path, target)
        return target

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
            manifest["manifest_sha256"] = _self_hash(manifest)
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

    # -- derived results (Grams, solutions, paths)
    def derived_key(self, kind: str, config: dict[str, Any]) -> str:
        return f"{kind}-{sha256_bytes(canonical_json(config).encode())[:32]}"

    def load_derived(
        self, kind: str, config: dict[str, Any], required: tuple[str, ...] = (), *, mmap: bool = False
    ) -> tuple[dict[str, np.ndarray], dict] | None:
        """Return (arrays, manifest) of a derived result, or None when absent.

        ``required`` names the arrays the caller will read; an entry without them is foreign.

        A present but damaged entry is quarantined and reported as absent (it is a cache of
        a deterministic computation, so recomputing it loses nothing of the user's).
        """
        key = self.derived_key(kind, config)
        path = self.derived_path(key)
        if not path.exists():
            return None
        try:
            manifest = self._read_json_verified(path, f"{kind} result", "derived")
            if manifest.get("config") != config or manifest.get("kind") != kind:
                raise IntegrityError(f"{kind} result {key}: its config does not match its key")
            arrays = self.get_arrays(manifest["arrays_sha256"], f"{kind} result {key}", mmap=mmap)
            missing = sorted(set(required) - set(arrays))
            if missing:
                raise IntegrityError(f"{kind} result {key}: arrays {missing} are missing (a foreign file)")
            return arrays, manifest
        except IntegrityError as exc:
            log.warning("%s; recomputing", exc)
            if path.exists():
                self.quarantine(path)
            return None

    def save_derived(
        self, kind: str, config: dict[str, Any], arrays: dict[str, np.ndarray], info: dict | None = None
    ) -> dict[str, Any]:
        key = self.derived_key(kind, config)
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "config": config,
            "arrays_sha256": self.put_arrays(arrays),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "versions": _versions(),
            "info": info or {},
        }
        manifest["manifest_sha256"] = _self_hash(manifest)
        write_json_atomic(self.derived_path(key), manifest)
        return manifest

    def has_derived(self, kind: str, config: dict[str, Any]) -> bool:
        """Whether a derived result exists (not verified: a read will)."""
        return self.derived_path(self.derived_key(kind, config)).exists()
