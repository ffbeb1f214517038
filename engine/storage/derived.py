"""Derived results: Grams, solutions, α paths… cached by kind and by the hash of their config.

``derived/<kind>-<key>.json`` is a manifest (its config, the hash of its arrays object, the
versions that made it); a damaged entry is quarantined and reported absent, since it is the
cache of a deterministic computation.

Each kind is declared once, beside the stage that writes it, with :func:`declare_derived`
(its name, the arrays a reader needs, the version of their layout); the stage passes the
:class:`DerivedKind` to :class:`Cache`'s ``load_derived`` / ``save_derived`` / ``has_derived``,
and ``Cache.derived_kinds()`` lists the kinds declared. Readers of the whole cache (``verify``,
the dashboard) ask the cache for its entries (``derived_manifest_paths``, ``derived_stamp``),
never the folder.
"""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import IntegrityError
from engine.storage.atomic import TEMP_PREFIX, canonical_json, sha256_bytes, write_json_atomic
from engine.storage.manifests import FORMAT_VERSION, _versions, self_hash

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DerivedKind:
    """One kind of derived result: what its manifest's ``kind`` says and what it holds."""

    name: str  # the manifest's "kind" and its file name's prefix (derived/<name>-<key>.json)
    arrays: tuple[str, ...]  # the arrays every entry of this kind holds (a reader needs them)
    version: int | None = None  # the layout of those arrays, in the config as "layout" (None: unversioned)
    doc: str = ""  # one line: what it is, for `Cache.derived_kinds()` readers


_KINDS: dict[str, DerivedKind] = {}


def declare_derived(name: str, arrays: tuple[str, ...], version: int | None = None, doc: str = "") -> DerivedKind:
    """Declare a kind of derived result (once, in the module of the stage that writes it)."""
    kind = DerivedKind(name, tuple(arrays), version, doc)
    if _KINDS.setdefault(name, kind) != kind:
        raise ValueError(f"derived kind {name!r} is declared twice, differently: {_KINDS[name]} and {kind}")
    return kind


def derived_kind(kind: DerivedKind | str) -> DerivedKind:
    """The declared kind ``kind`` names (a declared kind is returned as it is)."""
    if isinstance(kind, DerivedKind):
        return kind
    if kind not in _KINDS:
        raise ValueError(f"undeclared derived kind {kind!r}; declared: {', '.join(sorted(_KINDS))} "
                         "(declare it with engine.storage.derived.declare_derived)")
    return _KINDS[kind]


class DerivedMixin:
    """A cache's derived results (a part of :class:`~engine.storage.store.Cache`)."""

    @staticmethod
    def derived_kinds() -> list[DerivedKind]:
        """The kinds of derived result declared by the stages imported so far, by name."""
        return [_KINDS[name] for name in sorted(_KINDS)]

    def derived_manifest_paths(self) -> list[Path]:
        """The manifests of every derived result in this cache (unverified; temp files left out)."""
        folder = self.derived_dir
        return [p for p in sorted(folder.glob("*.json")) if not p.name.startswith(TEMP_PREFIX)] \
            if folder.is_dir() else []

    def derived_stamp(self) -> int:
        """Changes when a derived result is written (the modification time of their folder, ns)."""
        folder = self.derived_dir
        return folder.stat().st_mtime_ns if folder.exists() else 0

    def derived_key(self, kind: DerivedKind | str, config: dict[str, Any]) -> str:
        return f"{derived_kind(kind).name}-{sha256_bytes(canonical_json(config).encode())[:32]}"

    def load_derived(
        self, kind: DerivedKind | str, config: dict[str, Any], required: tuple[str, ...] | None = None, *,
        mmap: bool = False,
    ) -> tuple[dict[str, np.ndarray], dict] | None:
        """Return (arrays, manifest) of a derived result, or None when absent.

        ``required`` names the arrays the caller will read (None: every array ``kind`` declares);
        an entry without them is foreign.

        A present but damaged entry is quarantined and reported as absent (it is a cache of
        a deterministic computation, so recomputing it loses nothing of the user's).
        """
        declared = derived_kind(kind)
        kind, required = declared.name, declared.arrays if required is None else required
        key = self.derived_key(declared, config)
        path = self.derived_path(key)
        if not path.exists():
            return None
        try:
            manifest = self._read_json_verified(path, f"{kind} result", "derived")
            if manifest.get("config") != config or manifest.get("kind") != kind:
                raise IntegrityError(f"{kind} result {key}: its config does not match its key")
            arrays = self.get_arrays(manifest["arrays_sha256"], f"{kind} result {key}", mmap=mmap)
            missing = sorted(set(required) - set(arrays))
            if missing:
                raise IntegrityError(f"{kind} result {key}: arrays {missing} are missing (a foreign file)")
            return arrays, manifest
        except IntegrityError as exc:
            log.warning("%s; recomputing", exc)
            if path.exists():
                self.quarantine(path)
            return None

    def save_derived(
        self, kind: DerivedKind | str, config: dict[str, Any], arrays: dict[str, np.ndarray], info: dict | None = None
    ) -> dict[str, Any]:
        kind = derived_kind(kind).name
        key = self.derived_key(kind, config)
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "config": config,
            "arrays_sha256": self.put_arrays(arrays),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "versions": _versions(),
            "info": info or {},
        }
        manifest["manifest_sha256"] = self_hash(manifest)
        write_json_atomic(self.derived_path(key), manifest)
        return manifest

    def has_derived(self, kind: DerivedKind | str, config: dict[str, Any]) -> bool:
        """Whether a derived result exists (not verified: a read will)."""
        return self.derived_path(self.derived_key(kind, config)).exists()
