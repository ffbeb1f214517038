"""Content-addressed objects: ``objects/<sha256>.safetensors``, verified by hash when read.

Every read hashes the bytes it uses (unless a verified stamp vouches for them) and a file
whose bytes differ from its name is quarantined, never trusted. Large arrays can be read as
memory maps (``mmap=True``): hashed in full on the first such read in a process.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from engine.errors import IntegrityError
from engine.storage.arrays import map_safetensors, save_file
from engine.storage.atomic import commit, sha256_file, temp_file
from engine.storage.stamps import _VERIFIED, file_stamp

_HEX_RE = re.compile(r"^[0-9a-f]{64}$")


class ObjectsMixin:
    """A cache's arrays, stored once per content (a part of :class:`~engine.storage.store.Cache`)."""

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
