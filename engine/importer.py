"""Reading logits computed elsewhere: .npz, .npy pairs, .safetensors, .pt (weights_only).

Only array containers are accepted; nothing here can execute code from a file (no pickle:
``np.load(allow_pickle=False)``, safetensors, and ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import numpy as np

from engine.errors import InvalidInputError
from engine.store import Cache, LogitStore

log = logging.getLogger(__name__)

MAX_IMPORT_BYTES = 8 << 30  # 8 GiB: larger files are refused rather than half-read
SUFFIXES = (".npz", ".npy", ".safetensors", ".pt", ".pth")


def _np_load(path: Path):
    """An .npy array or the arrays of an .npz (all read now), never via pickle."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                return {k: loaded[k] for k in loaded.files}
        return loaded
    except ValueError as exc:
        raise InvalidInputError(
            f"{path.name}: not plain numeric arrays (reading it would need pickle, which is "
            "never loaded); save it with np.savez(file, logits=..., labels=...)"
        ) from exc
    except (OSError, EOFError) as exc:
        raise InvalidInputError(f"{path.name}: not a readable NumPy file ({exc})") from exc


def _from_mapping(mapping, path: Path) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    keys = list(mapping.keys())
    if "logits" not in keys:
        raise InvalidInputError(
            f"{path.name}: no array named 'logits' (found: {', '.join(keys) or 'nothing'}); "
            "save it as logits=(N, K) and labels=(N,)"
        )
    logits = np.asarray(mapping["logits"])
    labels = np.asarray(mapping["labels"]) if "labels" in keys else None
    names = None
    if "class_names" in keys:
        raw = np.asarray(mapping["class_names"])
        if raw.dtype.kind not in "US":
            raise InvalidInputError(f"{path.name}: class_names must be an array of strings; got {raw.dtype}")
        names = [str(x) for x in raw.tolist()]
    return logits, labels, names


def _read_pt(path: Path):
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses anything but tensors and plain containers
        raise InvalidInputError(
            f"{path.name}: cannot be read safely as tensors ({type(exc).__name__}); save a dict "
            "of tensors {'logits': ..., 'labels': ...} with torch.save"
        ) from exc
    if not isinstance(obj, dict):
        raise InvalidInputError(f"{path.name}: expected a dict of tensors, got {type(obj).__name__}")
    conv = {}
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            conv[k] = v.numpy()
        elif isinstance(v, list | tuple) and all(isinstance(x, str) for x in v):
            conv[k] = np.asarray(v, dtype=str)
    return conv


def read_logits_file(
    path: Path, labels_path: Path | None = None, class_names_path: Path | None = None
) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """Read (logits, labels, class names or None) from a file; raise with a reason if not logits."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"no such file: {path}")
    size = path.stat().st_size
    if size == 0:
        raise InvalidInputError(f"{path.name}: the file is empty")
    if size > MAX_IMPORT_BYTES:
        raise InvalidInputError(f"{path.name}: {size / 2**30:.1f} GiB exceeds the 8 GiB import limit")
    suffix = path.suffix.lower()
    if suffix == ".npz" and not zipfile.is_zipfile(path):
        raise InvalidInputError(f"{path.name}: not an .npz archive (np.savez(file, logits=..., labels=...))")
    if suffix == ".npz":
        logits, labels, names = _from_mapping(_np_load(path), path)
    elif suffix == ".npy":
        logits, labels, names = _np_load(path), None, None
        labels_path = labels_path or _sibling_labels(path)
    elif suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            logits, labels, names = _from_mapping(load_file(str(path)), path)
        except InvalidInputError:
            raise
        except Exception as exc:
            raise InvalidInputError(f"{path.name}: not a readable safetensors file ({exc})") from exc
    elif suffix in (".pt", ".pth"):
        logits, labels, names = _from_mapping(_read_pt(path), path)
    else:
        raise InvalidInputError(
            f"{path.name}: unsupported file type {suffix!r}; use one of {', '.join(SUFFIXES)}"
        )
    if labels_path is not None:
        labels = _np_load(Path(labels_path)) if Path(labels_path).is_file() else None
        if labels is None:
            raise InvalidInputError(f"labels file not found: {labels_path}")
    if labels is None:
        raise InvalidInputError(
            f"{path.name}: no labels found; add an array 'labels' (N,) or pass --labels FILE.npy"
        )
    if class_names_path is not None:
        names = _read_class_names(Path(class_names_path))
    return logits, labels, names


def _sibling_labels(path: Path) -> Path | None:
    for cand in (path.with_name(path.stem.replace("logits", "labels") + ".npy"), path.with_name("labels.npy")):
        if cand != path and cand.is_file():
            return cand
    return None


def _read_class_names(path: Path) -> list[str]:
    if not path.is_file():
        raise InvalidInputError(f"class names file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        names = json.loads(text)
        if not isinstance(names, list):
            raise InvalidInputError(f"{path.name}: expected a JSON list of class names")
        return [str(n) for n in names]
    return [line.strip() for line in text.splitlines() if line.strip()]


def import_logits(
    cache: Cache,
    path: Path,
    name: str,
    *,
    labels_path: Path | None = None,
    class_names_path: Path | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
) -> LogitStore:
    logits, labels, names = read_logits_file(Path(path), labels_path, class_names_path)
    meta = {"model": {"name": name, "source": "import"}, "imported_from": Path(path).name}
    return cache.save_store(name, logits, labels, names, meta=meta, dtype=dtype, overwrite=overwrite)
