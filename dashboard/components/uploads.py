"""Importing an uploaded logits file: bounded in size, written to a temporary file, read by
:mod:`engine.ingest.importer` (which never unpickles), stored in the cache.

The uploaded file's name is only shown, never used as a path: the temporary copy is named
``logits<suffix>`` with the suffix checked against the formats the importer reads.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from engine.errors import InvalidInputError
from engine.ingest.importer import SUFFIXES, import_logits
from engine.storage.store import Cache, LogitStore

MAX_UPLOAD_MB = 200  # also .streamlit/config.toml's server.maxUploadSize
# An upload's arrays may unpack (.npz is a zip) to at most this: a 200 MB file of compressed
# logits unpacks to a few hundred MB; a "zip bomb" would unpack to far more.
MAX_UNPACKED_BYTES = 1 << 30

Upload = tuple[str, bytes]  # (file name, contents)
_EXTRA_SUFFIXES = {"labels": (".npy",), "names": (".txt", ".json")}


def _shown(name: str) -> str:
    """A file name safe to put in a message: printable, one line, not too long."""
    text = "".join(c if c.isprintable() else "?" for c in str(name))
    return text if len(text) <= 80 else text[:60] + "…" + text[-16:]


def _suffix(upload: Upload, allowed: tuple[str, ...]) -> str:
    suffix = Path(_shown(upload[0])).suffix.lower()
    if suffix not in allowed:
        raise InvalidInputError(
            f"{_shown(upload[0])}: unsupported file type {suffix!r}; use one of {', '.join(allowed)}")
    return suffix


def import_upload(
    root: str | Path, name: str, logits: Upload | None, labels: Upload | None = None,
    class_names: Upload | None = None, max_mb: int = MAX_UPLOAD_MB,
) -> LogitStore:
    """Store an uploaded logits file as ``name``; raise InvalidInputError saying why not."""
    if logits is None:
        raise InvalidInputError("choose a logits file to import")
    if not name.strip():
        raise InvalidInputError("give the new store a name (letters, digits, '.', '_', '+', '-')")
    for upload in (logits, labels, class_names):
        if upload is not None and len(upload[1]) > max_mb * 2**20:
            raise InvalidInputError(
                f"{_shown(upload[0])} is {len(upload[1]) / 2**20:.0f} MB, over the {max_mb} MB upload "
                "limit; use `python -m engine import-logits FILE --name NAME` instead")
    kinds = (("logits", logits, SUFFIXES), ("labels", labels, _EXTRA_SUFFIXES["labels"]),
             ("names", class_names, _EXTRA_SUFFIXES["names"]))
    suffixes = {stem: _suffix(up, allowed) for stem, up, allowed in kinds if up is not None}
    with tempfile.TemporaryDirectory(prefix="nde-upload-") as tmp:
        def save(upload: Upload | None, stem: str) -> Path | None:
            if upload is None:
                return None
            path = Path(tmp) / f"{stem}{suffixes[stem]}"
            path.write_bytes(upload[1])
            return path

        try:
            return import_logits(Cache(root), save(logits, "logits"), name.strip(),
                                 labels_path=save(labels, "labels"), class_names_path=save(class_names, "names"),
                                 max_bytes=MAX_UNPACKED_BYTES, gram=False)  # the Gram: a job (see Data)
        except InvalidInputError as exc:  # name the user's file, not our temporary copy
            raise InvalidInputError(str(exc).replace(f"logits{suffixes['logits']}", _shown(logits[0]))) from exc
