"""Manifests: self-hashed JSON that describes a logit store or a derived result.

A manifest's ``manifest_sha256`` is the hash of its other fields (:func:`self_hash`), so an
edited or truncated file is detected; :func:`read_manifest` checks it and, for a store or a
derived result, that its fields are those such a manifest has. Also here: the checks a
store's name and arrays pass before anything is written, and what a manifest records of the
model and dataset behind a store.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path
from typing import Any

import numpy as np

from engine import __version__
from engine.errors import IntegrityError, InvalidInputError
from engine.storage.atomic import canonical_json, sha256_bytes

FORMAT_VERSION = 1
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


def self_hash(manifest: dict[str, Any]) -> str:
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
    if not isinstance(manifest, dict) or manifest.get("manifest_sha256") != self_hash(manifest):
        raise IntegrityError(
            f"manifest {Path(path).name} was edited or truncated (its self-hash does not match)"
        )
    problem = _layout_problem(manifest, kind) if kind else None
    if problem:
        raise IntegrityError(f"manifest {Path(path).name} is foreign: {problem}")
    return manifest
