"""The portable, content-addressed cache of logit stores and derived results.

Layout under the cache root (see ``cache/README.md``)::

    stores/<name>.json            manifest of a logit store (self-hashed JSON)
    objects/<sha256>.safetensors  arrays, named by the SHA-256 of the file's bytes
    derived/<kind>-<key>.json     Grams, solutions, α paths; key = hash of their config
    quarantine/                   entries that failed verification (moved aside, never used)
    locks/                        advisory lock files

Every read re-hashes the bytes it uses and compares them with the manifest, so a truncated,
edited or foreign file is reported (and quarantined), never trusted. Every write is atomic.
Arrays are safetensors (no pickle anywhere).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import re
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

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

    @cached_property
    def logits64(self) -> np.ndarray:
        return self.logits.astype(np.float64)


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


class Cache:
    """A cache folder: logit stores by name, derived results by configuration key."""

    def __init__(self, root: Path | str = DEFAULT_CACHE):
        self.root = Path(root)

    # -- paths
    @property
    def stores_dir(self) -> Path:
        return self.root / "stores"

    @property
    def objects_dir(self) -> Path:
        return self.root / "objects"

    @property
    def derived_dir(self) -> Path:
        return self.root / "derived"

    def lock(self, key: str):
        """Exclusive lock for one store name or derived key (two writers never interleave)."""
        return file_lock(self.root / "locks" / f"{key}.lock")

    def _manifest_path(self, name: str) -> Path:
        return self.stores_dir / f"{check_store_name(name)}.json"

    # -- objects
    def put_arrays(self, arrays: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> str:
        """Write arrays as one safetensors object; return its SHA-256 (its name)."""
        with temp_file(self.objects_dir, ".safetensors") as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp), metadata)
            digest = sha256_file(tmp)
            final = self.objects_dir / f"{digest}.safetensors"
            if not (final.exists() and sha256_file(final) == digest):
                commit(tmp, final)
        return digest

    def get_arrays(self, digest: str, what: str) -> dict[str, np.ndarray]:
        """Read an object, verifying its bytes against ``digest``; quarantine it if they differ."""
        if not isinstance(digest, str) or not _HEX_RE.match(digest):
            raise IntegrityError(f"{what}: the recorded content hash {digest!r} is malformed")
        path = self.objects_dir / f"{digest}.safetensors"
        if not path.exists():
            raise IntegrityError(
                f"{what}: its data file objects/{digest}.safetensors is missing; "
                "copy the whole cache folder, or recompute the entry"
            )
        try:
            actual = sha256_file(path)
        except FileNotFoundError:  # another reader quarantined it a moment ago
            raise IntegrityError(
                f"{what}: its data file objects/{digest[:12]}… was just moved to quarantine "
                "by another process (it is damaged); recompute or re-import it"
            ) from None
        if actual != digest:
            moved = self.quarantine(path)
            raise IntegrityError(
                f"{what}: data file objects/{digest[:12]}… is damaged (hash {actual[:12]}… "
                f"does not match); moved to {moved}. Recompute or re-import it."
            )
        try:
            return load_file(str(path))
        except Exception as exc:  # a file with the right hash but not safetensors: foreign
            raise IntegrityError(f"{what}: data file is not a readable safetensors file ({exc})") from exc

    def quarantine(self, path: Path) -> Path | None:
        """Move a damaged file to ``quarantine/`` (never deleted); None if it is already gone.

        Several readers may find the same damaged file at once: the first one moves it, the
        others find nothing left to move, which is not an error.
        """
        qdir = self.root / "quarantine"
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
        with np.errstate(over="ignore"):
            stored = logits.astype(_DTYPES[dtype])
        if not np.isfinite(stored).all():
            limit = float(np.finfo(_DTYPES[dtype]).max)
            hint = ("store them as float32 (drop --float16)" if dtype == "float16" else
                    "rescale them (logits of a classifier are rarely above 1e4) and import again")
            raise InvalidInputError(
                f"logits overflow {dtype} (largest |value| {np.abs(logits).max():.3g}, {dtype} "
                f"holds at most {limit:.3g}); {hint}"
            )
        with self.lock(f"store-{name}"):
            digest = self.put_arrays({"logits": stored, "labels": labels})
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
        log.info("stored %s: %d samples x %d categories", name, *logits.shape)
        return self.load_store(name)

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

    def load_store(self, name: str) -> LogitStore:
        """Load a store by name, verifying manifest and arrays; raises if anything is off."""
        manifest = self._read_manifest(name)
        arrays = self.get_arrays(manifest["arrays_sha256"], f"store {name!r}")
        logits, labels = arrays.get("logits"), arrays.get("labels")
        if logits is None or labels is None or logits.shape != (manifest["n"], manifest["k"]):
            raise IntegrityError(f"store {name!r}: arrays do not match the manifest's shape")
        if logits.dtype != _DTYPES[manifest["dtype"]] or labels.dtype != np.int64:
            raise IntegrityError(
                f"store {name!r}: arrays are {logits.dtype}/{labels.dtype}, the manifest says "
                f"{manifest['dtype']}/int64 (a foreign file)"
            )
        try:  # content that no import would have written: refuse it before any page uses it
            check_logit_arrays(logits, labels, manifest["class_names"])
        except InvalidInputError as exc:
            raise IntegrityError(f"store {name!r}: the stored arrays are not valid logits ({exc})") from None
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
        self, kind: str, config: dict[str, Any], required: tuple[str, ...] = ()
    ) -> tuple[dict[str, np.ndarray], dict] | None:
        """Return (arrays, manifest) of a derived result, or None when absent.

        ``required`` names the arrays the caller will read; an entry without them is foreign.

        A present but damaged entry is quarantined and reported as absent (it is a cache of
        a deterministic computation, so recomputing it loses nothing of the user's).
        """
        key = self.derived_key(kind, config)
        path = self.derived_dir / f"{key}.json"
        if not path.exists():
            return None
        try:
            manifest = self._read_json_verified(path, f"{kind} result", "derived")
            if manifest.get("config") != config or manifest.get("kind") != kind:
                raise IntegrityError(f"{kind} result {key}: its config does not match its key")
            arrays = self.get_arrays(manifest["arrays_sha256"], f"{kind} result {key}")
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
        write_json_atomic(self.derived_dir / f"{key}.json", manifest)
        return manifest
