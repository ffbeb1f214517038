"""Reading logits computed elsewhere: .npz, .npy pairs, .safetensors, .pt (weights_only).

Only array containers are accepted; nothing here can execute code from a file (no pickle:
``np.load(allow_pickle=False)``, safetensors, and ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import json
import logging
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from engine.core.gram import chunk_rows
from engine.errors import InvalidInputError
from engine.storage.manifests import check_store_name
from engine.storage.memory import check_memory, gib
from engine.storage.store import Cache, LogitStore

log = logging.getLogger(__name__)

MAX_IMPORT_BYTES = 8 << 30  # 8 GiB: larger files (or archives that unpack larger) are refused
SUFFIXES = (".npz", ".npy", ".safetensors", ".pt", ".pth")


def _gib(n: int) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"


def _npy_header(handle, what: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from an .npy header, read without reading (or allocating) the data."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(handle)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _fortran, dtype = read(handle, max_header_size=100_000)
    except Exception as exc:  # NumPy parses the header as Python source: it can raise anything
        raise InvalidInputError(f"{what}: not a NumPy array file ({type(exc).__name__}: {exc})") from None
    if dtype.hasobject:
        raise InvalidInputError(
            f"{what}: holds Python objects (dtype {dtype}); reading it would need pickle, which "
            "is never loaded. Save plain numbers with np.savez(file, logits=..., labels=...)"
        )
    return tuple(shape), dtype


def _is_zip(path: Path) -> bool:
    """zipfile.is_zipfile, which raises BadZipFile itself on some damaged archives."""
    try:
        return zipfile.is_zipfile(path)
    except zipfile.BadZipFile:
        return False


def _check_declared_sizes(path: Path, max_bytes: int) -> None:
    """Refuse files whose arrays would unpack beyond ``max_bytes`` or beyond their own data
    (a compressed "zip bomb", or a header that promises more than the file holds), before
    anything is allocated."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        with open(path, "rb") as handle:
            shape, dtype = _npy_header(handle, path.name)
            data = path.stat().st_size - handle.tell()
        need = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if need > data:
            raise InvalidInputError(
                f"{path.name}: truncated or damaged: its header promises an array of shape {shape} "
                f"({_gib(need)}) but only {_gib(data)} of data follow"
            )
        return
    if suffix not in (".npz", ".pt", ".pth") or not _is_zip(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            total = sum(m.file_size for m in members)
            if total > max_bytes:
                raise InvalidInputError(
                    f"{path.name}: unpacks to {_gib(total)}, over the {_gib(max_bytes)} limit for "
                    "one import; import fewer samples at a time"
                )
            if suffix == ".npz":
                for m in members:
                    if m.filename.endswith(".npy"):
                        with archive.open(m) as handle:
                            shape, dtype = _npy_header(handle, f"{path.name}:{m.filename}")
                        if int(np.prod(shape, dtype=object)) * dtype.itemsize > m.file_size:
                            raise InvalidInputError(
                                f"{path.name}: array {m.filename[:-4]!r} claims shape {shape}, more "
                                "data than the archive holds (damaged or forged)"
                            )
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError) as exc:
        raise InvalidInputError(f"{path.name}: damaged archive ({exc})") from None


def _np_load(path: Path):
    """An .npy array or the arrays of an .npz (all read now), never via pickle."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                return {k: loaded[k] for k in loaded.files}
        return loaded
    except ValueError as exc:
        if "pickle" not in str(exc):
            raise InvalidInputError(f"{path.name}: damaged NumPy file ({exc})") from exc
        raise InvalidInputError(
            f"{path.name}: not plain numeric arrays (reading it would need pickle, which is "
            "never loaded); save it with np.savez(file, logits=..., labels=...)"
        ) from exc
    except (OSError, EOFError, zipfile.BadZipFile, KeyError, zlib.error, NotImplementedError,
            SyntaxError, tokenize.TokenError) as exc:
        raise InvalidInputError(f"{path.name}: not a readable NumPy file ({exc})") from exc


def _from_mapping(mapping, path: Path) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    keys = list(mapping.keys())
    if "logits" not in keys:
        found = ", ".join(repr(k) for k in keys[:20]) or "nothing"
        raise InvalidInputError(
            f"{path.name}: no array named 'logits' (found: {found}); "
            "save it as logits=(N, K) and labels=(N,)"
        )
    logits = np.asarray(mapping["logits"])
    labels = np.asarray(mapping["labels"]) if "labels" in keys else None
    names = None
    if "class_names" in keys:
        raw = np.asarray(mapping["class_names"])
        if raw.dtype.kind not in "US" or raw.ndim != 1:
            raise InvalidInputError(
                f"{path.name}: class_names must be a 1-D array of strings; got {raw.dtype} {raw.shape}"
            )
        names = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in raw.tolist()]
    return logits, labels, names


def _to_numpy(value, what: str) -> np.ndarray:
    """A torch tensor as a NumPy array (bfloat16, which NumPy lacks, becomes float32)."""
    import torch

    if value.layout != torch.strided or value.is_quantized:
        raise InvalidInputError(f"{what}: a {value.layout} / quantized tensor; save a plain dense tensor")
    if value.dtype == torch.bfloat16:
        value = value.float()
    try:
        return value.detach().cpu().numpy()
    except (TypeError, RuntimeError) as exc:
        raise InvalidInputError(f"{what}: tensor of dtype {value.dtype} cannot be read ({exc})") from None


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
            conv[k] = _to_numpy(v, f"{path.name}: {k!r}")
        elif isinstance(v, list | tuple) and v and all(isinstance(x, str) for x in v):
            conv[k] = np.asarray(v, dtype=str)
    return conv


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InvalidInputError(f"{path.name}: not a readable safetensors file ({exc})") from None
    except TypeError:  # a dtype NumPy lacks (bfloat16): read the tensors with torch instead
        from safetensors.torch import load_file as load_torch

        return {k: _to_numpy(v, f"{path.name}: {k!r}") for k, v in load_torch(str(path)).items()}


def _checked_file(path: Path, what: str, max_bytes: int) -> Path:
    """An existing, non-empty regular file within the size limit (declared sizes included)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{what} not found (no such file): {path}")
    size = path.stat().st_size
    if size == 0:
        raise InvalidInputError(f"{path.name}: the file is empty")
    if size > max_bytes:
        raise InvalidInputError(f"{path.name}: {_gib(size)} exceeds the {_gib(max_bytes)} import limit")
    _check_declared_sizes(path, max_bytes)
    return path


def read_logits_file(
    path: Path, labels_path: Path | None = None, class_names_path: Path | None = None,
    *, max_bytes: int = MAX_IMPORT_BYTES,
) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """Read (logits, labels, class names or None) from a file; raise with a reason if not logits.

    Files larger than ``max_bytes``, or whose arrays would unpack larger, are refused before
    they are read. Any file that cannot be read raises :class:`InvalidInputError`.
    """
    try:
        return _read_logits_file(Path(path), labels_path, class_names_path, max_bytes)
    except PermissionError as exc:
        raise InvalidInputError(f"{exc.filename}: permission denied; make the file readable") from None
    except IsADirectoryError as exc:
        raise InvalidInputError(f"{exc.filename}: is a folder, not a file") from None


def _read_logits_file(path: Path, labels_path, class_names_path, max_bytes: int):
    path = _checked_file(path, "logits file", max_bytes)
    suffix = path.suffix.lower()
    if suffix == ".npz" and not _is_zip(path):
        raise InvalidInputError(f"{path.name}: not an .npz archive (np.savez(file, logits=..., labels=...))")
    if suffix == ".npz":
        logits, labels, names = _from_mapping(_np_load(path), path)
    elif suffix == ".npy":
        logits, labels, names = _np_load(path), None, None
        labels_path = labels_path or _sibling_labels(path)
    elif suffix == ".safetensors":
        logits, labels, names = _from_mapping(_read_safetensors(path), path)
    elif suffix in (".pt", ".pth"):
        logits, labels, names = _from_mapping(_read_pt(path), path)
    else:
        raise InvalidInputError(
            f"{path.name}: unsupported file type {suffix!r}; use one of {', '.join(SUFFIXES)}"
        )
    if labels_path is not None:
        labels_file = _checked_file(Path(labels_path), "labels file", max_bytes)
        if labels_file.suffix.lower() != ".npy":
            raise InvalidInputError(f"{labels_file.name}: labels must be a .npy file of N integers")
        labels = _np_load(labels_file)
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
    if path.stat().st_size > 64 << 20:
        raise InvalidInputError(f"{path.name}: over 64 MiB; a class names file is one short line per class")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path.name}: class names must be UTF-8 text ({exc})") from None
    if path.suffix.lower() == ".json":
        try:
            names = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise InvalidInputError(f"{path.name}: not valid JSON ({exc})") from None
        if not isinstance(names, list) or not all(isinstance(n, str | int | float) for n in names):
            raise InvalidInputError(f"{path.name}: expected a JSON list of class names (strings)")
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
    max_bytes: int = MAX_IMPORT_BYTES,
    gram: bool = True,
    progress: bool = False,
) -> LogitStore:
    """Read a logits file (see :func:`read_logits_file`), save it as store ``name`` and, with
    ``gram``, its Gram set: one streamed pass over the logits already in memory (float64, on
    the GPU when there is one), so every later solve reads the Gram alone.

    Memory: the logits once, plus the Gram (K² float64) and one chunk; a file whose logits and
    Gram would not fit in the memory available is refused before it is read.
    """
    check_store_name(name)  # before reading a large file, not after
    path = Path(path)
    _check_import_memory(path, gram, max_bytes)
    logits, labels, names = read_logits_file(path, labels_path, class_names_path, max_bytes=max_bytes)
    meta = {"model": {"name": name, "source": "import"}, "imported_from": path.name}
    store = cache.save_store(name, logits, labels, names, meta=meta, dtype=dtype, overwrite=overwrite)
    if gram:
        _save_gram(cache, store, logits, progress)
        from engine.core.analysis import Top2
        from engine.stages.solutions import save_top2

        # each sample's top two logits (Table 1's accuracies), from the logits in memory
        save_top2(cache, store, Top2.of(logits if logits.dtype == store.logits.dtype else store.logits))
    return store


def _check_import_memory(path: Path, gram: bool, max_bytes: int) -> None:
    """Refuse a file whose logits (and Gram) need more memory than is available (after the
    checks that its sizes are what it holds: a forged header is damage, not a big file)."""
    try:
        _checked_file(path, "logits file", max_bytes)
    except OSError:  # unreadable: read_logits_file reports it the usual way
        return
    shape, itemsize = _declared_logits(path)
    if shape is None:
        return
    n, k = shape
    need = n * k * itemsize + (8 * k * k + 8 * k * chunk_rows(k) if gram else 0)
    check_memory(need, f"importing {path.name} ({n:,} samples × {k:,} categories: the logits"
                 + (f" and their {gib(8 * k * k)} Gram)" if gram else ")"),
                 "Import it on a machine with more memory (the cache is portable), or split the samples")


def _declared_logits(path: Path) -> tuple[tuple[int, int] | None, int]:
    """(shape, item size) of the file's 'logits' array from its header, without reading it."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            with open(path, "rb") as handle:
                shape, dtype = _npy_header(handle, path.name)
            return (tuple(shape) if len(shape) == 2 else None), dtype.itemsize
        if suffix == ".npz" and _is_zip(path):
            with zipfile.ZipFile(path) as archive, archive.open("logits.npy") as handle:
                shape, dtype = _npy_header(handle, path.name)
            return (tuple(shape) if len(shape) == 2 else None), dtype.itemsize
    except (KeyError, OSError, zipfile.BadZipFile, InvalidInputError):
        return None, 0
    return None, 0


def _save_gram(cache: Cache, store: LogitStore, logits: np.ndarray, progress: bool) -> None:
    """The store's Gram set from the logits in memory, rounded as stored (float16 stores),
    by chunks; cached like any Gram set."""
    from tqdm.auto import tqdm

    from engine.core.gram import accumulate, default_device
    from engine.stages.gramsets import gram_config, has_gramset, save_gramset

    if has_gramset(cache, store):
        return
    stored = store.logits.dtype
    rows = chunk_rows(store.k)
    bar = tqdm(total=store.n, unit="sample", desc="Gram", disable=not progress)

    def chunks():
        for start in range(0, store.n, rows):
            part = logits[start : start + rows]
            bar.update(len(part))
            yield (part if part.dtype == stored else part.astype(stored)), None

    gs = accumulate(chunks(), store.k, device=default_device())
    bar.close()
    save_gramset(cache, gram_config(store, None), gs)
