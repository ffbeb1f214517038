"""Importing an uploaded logits file: bounded in size, written to a temporary file, read by
:mod:`engine.importer` (which never unpickles), stored in the cache."""

from __future__ import annotations

import tempfile
from pathlib import Path

from engine.errors import InvalidInputError
from engine.importer import import_logits
from engine.store import Cache, LogitStore

MAX_UPLOAD_MB = 200  # also .streamlit/config.toml's server.maxUploadSize

Upload = tuple[str, bytes]  # (file name, contents)


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
                f"{upload[0]} is {len(upload[1]) / 2**20:.0f} MB, over the {max_mb} MB upload limit; "
                "use `python -m engine import-logits FILE --name NAME` instead")
    with tempfile.TemporaryDirectory(prefix="nde-upload-") as tmp:
        def save(upload: Upload | None, stem: str) -> Path | None:
            if upload is None:
                return None
            path = Path(tmp) / f"{stem}{Path(upload[0]).suffix.lower()}"
            path.write_bytes(upload[1])
            return path

        try:
            return import_logits(Cache(root), save(logits, "logits"), name.strip(),
                                 labels_path=save(labels, "labels"), class_names_path=save(class_names, "names"))
        except InvalidInputError as exc:  # name the user's file, not our temporary copy
            raise InvalidInputError(str(exc).replace(f"logits{Path(logits[0]).suffix.lower()}", logits[0])) from exc
