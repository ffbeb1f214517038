"""Safetensors files written by blocks and read as memory maps (no pickle, no second copy).

:func:`save_file` writes the same bytes as ``safetensors.numpy.save`` (so a content hash does
not depend on the writer) by blocks of about 64 MiB, converting dtypes on the way;
:func:`map_safetensors` maps a file's arrays read-only without reading them.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import IntegrityError, InvalidInputError

# safetensors' names of numpy dtypes, in the order its writer sorts them (descending)
_ST_DTYPES = {"BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "I16": np.int16, "U16": np.uint16,
              "F16": np.float16, "I32": np.int32, "U32": np.uint32, "F32": np.float32, "F64": np.float64,
              "I64": np.int64, "U64": np.uint64}
_ST_NAME = {np.dtype(v): k for k, v in _ST_DTYPES.items()}
_ST_RANK = {k: i for i, k in enumerate(_ST_DTYPES)}
_BLOCK_BYTES = 64 << 20  # arrays are converted and written by blocks of about this size


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
