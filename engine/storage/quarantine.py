"""The quarantine: damaged entries are moved aside (never deleted, never used again)."""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


class QuarantineMixin:
    """Moving a cache's damaged files aside (a part of :class:`~engine.storage.store.Cache`)."""

    def quarantine(self, path: Path) -> Path | None:
        """Move a damaged file to ``quarantine/`` (never deleted); None if it is already gone.

        Several readers may find the same damaged file at once: the first one moves it, the
        others find nothing left to move, which is not an error.
        """
        qdir = self.quarantine_dir
        qdir.mkdir(parents=True, exist_ok=True)
        stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S%f")
        target = qdir / f"{stamp}-{os.getpid()}-{path.name}"
        try:
            os.replace(path, target)  # same file system: atomic, and fails cleanly if gone
        except FileNotFoundError:
            return None
        except OSError:  # quarantine/ on another file system (a symlinked folder)
            try:
                shutil.move(str(path), target)
            except FileNotFoundError:
                return None
        log.warning("quarantined %s -> %s", path, target)
        return target
