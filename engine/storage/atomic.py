"""Atomic file writes, content hashes and advisory locks: the cache's three safety primitives.

A write goes to a temporary file in the destination folder, is flushed and fsync'ed, then
renamed over the destination (``os.replace`` is atomic on POSIX), and the folder is fsync'ed
so the rename survives a power cut. A process killed at any moment therefore leaves either
the old file or the complete new one, plus at most a stray ``.tmp-*`` file that readers ignore.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_CHUNK = 1 << 22
TEMP_PREFIX = ".tmp-"  # every temporary file starts so; readers and verify skip them


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal bytes (and hashes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def temp_file(folder: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a fresh temporary path in ``folder``; whatever is left there afterwards is removed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix, dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def commit(tmp: Path, destination: Path) -> None:
    """fsync ``tmp``, rename it over ``destination`` (atomic), fsync the folder."""
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, destination)
    _fsync_dir(destination.parent)


@contextlib.contextmanager
def atomic_path(destination: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; on success it replaces ``destination``.

    On any exception (a full disk included) the temporary file is removed and the
    destination is untouched.
    """
    destination = Path(destination)
    with temp_file(destination.parent) as tmp:
        yield tmp
        commit(tmp, destination)


def write_bytes_atomic(destination: Path, data: bytes) -> None:
    with atomic_path(destination) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(destination: Path, value: Any) -> None:
    write_bytes_atomic(destination, (json.dumps(value, indent=1, ensure_ascii=False) + "\n").encode())


@contextlib.contextmanager
def file_lock(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock (``flock``), released when the block ends or the process dies."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
