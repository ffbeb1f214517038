"""Verified stamps: which large objects were hashed, so later processes need not hash them again.

An object of at least :data:`STAMP_MIN_BYTES` whose bytes hashed to their name gets
``verified/<sha256>.json``: the file's device, inode, size and modification and status-change
times (ns) at that moment (:func:`file_stamp`). A process that finds the same five values does
not hash the file again (see :mod:`engine.storage.store` for what a stamp does not catch).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from engine.storage.atomic import temp_file

log = logging.getLogger(__name__)

# Objects at least this large keep a verified stamp: hashing them costs more than a stamp's
# small write; smaller ones are hashed on every read.
STAMP_MIN_BYTES = 64 << 20
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



class StampsMixin:
    """The verified stamps of a cache's objects (a part of :class:`~engine.storage.store.Cache`)."""

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
