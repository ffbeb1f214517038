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
    finite = np.isfinite(logits)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        raise InvalidInputError(
            f"logits contain {int((~finite).sum())} NaN/Inf values (first at sample {bad[0]}, "
            f"category {bad[1]}); recompute them or drop those samples before importing"
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
        actual = sha256_file(path)
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

    def quarantine(self, path: Path) -> Path:
        qdir = self.root / "quarantine"
        qdir.mkdir(parents=True, exist_ok=True)
        stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S%f")
        target = qdir / f"{stamp}-{path.name}"
        shutil.move(str(path), target)
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
        stored = logits.astype(_DTYPES[dtype])
        if not np.isfinite(stored).all():
            raise InvalidInputError(
                f"logits overflow {dtype} (largest |value| {np.abs(logits).max():.3g}); "
                "store them as float32"
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
        return self._read_json_verified(path, f"store {name!r}")

    def _read_json_verified(self, path: Path, what: str) -> dict[str, Any]:
        import json

        try:
            manifest = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            moved = self.quarantine(path)
            raise IntegrityError(f"{what}: manifest is unreadable ({exc}); moved to {moved}") from exc
        if not isinstance(manifest, dict) or manifest.get("manifest_sha256") != _self_hash(manifest):
            moved = self.quarantine(path)
            raise IntegrityError(
                f"{what}: manifest was edited or truncated (its self-hash does not match); "
                f"moved to {moved}. Re-import or recompute it."
            )
        return manifest

    def load_store(self, name: str) -> LogitStore:
        """Load a store by name, verifying manifest and arrays; raises if anything is off."""
        manifest = self._read_manifest(name)
        arrays = self.get_arrays(manifest["arrays_sha256"], f"store {name!r}")
        logits, labels = arrays.get("logits"), arrays.get("labels")
        if logits is None or labels is None or logits.shape != (manifest["n"], manifest["k"]):
            raise IntegrityError(f"store {name!r}: arrays do not match the manifest's shape")
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

    def load_derived(self, kind: str, config: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict] | None:
        """Return (arrays, manifest) of a derived result, or None when absent.

        A present but damaged entry is quarantined and reported as absent (it is a cache of
        a deterministic computation, so recomputing it loses nothing of the user's).
        """
        key = self.derived_key(kind, config)
        path = self.derived_dir / f"{key}.json"
        if not path.exists():
            return None
        try:
            manifest = self._read_json_verified(path, f"{kind} result")
            if manifest.get("config") != config:
                raise IntegrityError(f"{kind} result {key}: its config does not match its key")
            return self.get_arrays(manifest["arrays_sha256"], f"{kind} result {key}"), manifest
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
