"""The job-kind registry: each kind's spec class, the function that runs it, what it names.

A kind is registered by the layer that owns its work (timm's model registry is the pattern):
the engine's own kinds by :mod:`engine.jobs.specs`, training's by :mod:`engine.train.specs`,
each with :func:`register_kind`. Jobs never import training: the registry imports the modules
named in :data:`engine.JOB_KIND_MODULES` (the package root's table, like a plugin list) the
first time it is read, so a job's process, the CLI and the dashboard all see every kind.

``spec_from_dict`` is the one boundary where user input (CLI strings, JSON, form values) becomes
a spec; a bad value raises :class:`InvalidInputError` naming the field, the value and what is
expected. A spec is plain data (no torch import here).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.errors import InvalidInputError
from engine.storage.atomic import canonical_json, sha256_bytes

_DEVICES = ("auto", "cpu", "cuda")


def _fail(kind: str, name: str, value: Any, expected: str) -> None:
    raise InvalidInputError(f"{kind} job: field '{name}' = {value!r} is invalid: {expected}")


def _positive(kind: str, **values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            _fail(kind, name, value, "expected a finite number > 0")


def _non_negative(kind: str, **values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            _fail(kind, name, value, "expected a finite number >= 0")


def _device(kind: str, device: str) -> None:
    if device not in _DEVICES and not re.fullmatch(r"cuda:\d+", device):
        _fail(kind, "device", device, f"expected one of {', '.join(_DEVICES)} or 'cuda:N'")



def _store_name(kind: str, name: str, value: str, optional: bool = False) -> None:
    from engine.storage.manifests import check_store_name

    if optional and value == "":
        return
    try:
        check_store_name(value)
    except InvalidInputError as exc:
        _fail(kind, name, value, str(exc))



@dataclass(frozen=True)
class JobKind:
    """A registry entry: the spec class and the function that runs it (``module:function``)."""

    name: str
    spec: type
    runner: str  # imported only inside the job's process, so the dashboard never loads torch
    title: str
    rank: int = 100  # where the kind is listed (the CLI's help, the dashboard's menu): ascending
    # fields checked when a job is submitted (check_spec_inputs):
    data_fields: dict[str, tuple[str, ...]] = field(default_factory=dict)  # field -> registry names besides a folder
    model_fields: tuple[str, ...] = ()  # fields naming models of the model registry
    store_fields: tuple[str, ...] = ()  # fields naming stores of the cache
    check: Callable[[Any, Any, Callable], None] | None = None  # (spec, cache, fail): any further check


class _Registry(dict):
    """``JOB_KINDS``: name -> :class:`JobKind`, filled from :data:`engine.JOB_KIND_MODULES` when
    first read, in the kinds' ``rank`` order."""

    _loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        type(self)._loaded = True
        import engine

        for module in engine.JOB_KIND_MODULES:
            importlib.import_module(module)
        ordered = sorted(dict.values(self), key=lambda k: k.rank)
        dict.clear(self)
        dict.update(self, {k.name: k for k in ordered})

    def __getitem__(self, key):
        self._load()
        return dict.__getitem__(self, key)

    def __contains__(self, key):
        self._load()
        return dict.__contains__(self, key)

    def __iter__(self):
        self._load()
        return dict.__iter__(self)

    def __len__(self):
        self._load()
        return dict.__len__(self)

    def keys(self):
        self._load()
        return dict.keys(self)

    def values(self):
        self._load()
        return dict.values(self)

    def items(self):
        self._load()
        return dict.items(self)

    def get(self, key, default=None):
        self._load()
        return dict.get(self, key, default)


JOB_KINDS: dict[str, JobKind] = _Registry()


def register_kind(kind: JobKind) -> JobKind:
    """Add a job kind to the registry (a module registers its kinds when imported)."""
    old = dict.get(JOB_KINDS, kind.name)
    if old is not None and old != kind:
        raise ValueError(f"job kind {kind.name!r} is registered twice: {old.runner} and {kind.runner}")
    dict.__setitem__(JOB_KINDS, kind.name, kind)
    return kind


def get_kind(kind: str) -> JobKind:
    if kind not in JOB_KINDS:
        raise InvalidInputError(
            f"unknown job kind {kind!r}; valid kinds: {', '.join(sorted(JOB_KINDS))}"
        )
    return JOB_KINDS[kind]


def field_types(spec_cls: type) -> dict[str, Any]:
    """Resolved type of every field of a spec class (``tuple[str, ...]`` and friends)."""
    return typing.get_type_hints(spec_cls)


def _coerce(kind: str, name: str, value: Any, typ: Any) -> Any:
    """Turn a JSON / CLI / form value into the field's type, or raise naming the field."""
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        _fail(kind, name, value, "expected true or false")
    if typ is int:
        if isinstance(value, bool):
            _fail(kind, name, value, "expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            return int(value)
        _fail(kind, name, value, "expected an integer")
    if typ is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        _fail(kind, name, value, "expected a number")
    if typ is str:
        if isinstance(value, str):
            return value
        _fail(kind, name, value, "expected a string")
    if typing.get_origin(typ) is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(";") if v.strip()]
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(v.strip() for v in value)
        _fail(kind, name, value, "expected a list of strings")
    raise TypeError(f"unsupported spec field type {typ!r}")  # a programming error, not input


def spec_from_dict(kind: str, values: dict[str, Any] | None = None) -> Any:
    """Build a validated spec of ``kind`` from user values (defaults for the rest)."""
    entry = get_kind(kind)
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise InvalidInputError(
            f"{kind} job: the config must be a JSON object; got {type(values).__name__}"
        )
    types = field_types(entry.spec)
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise InvalidInputError(
            f"{kind} job: unknown field(s) {', '.join(unknown)}; valid fields: {', '.join(types)}"
        )
    coerced = {name: _coerce(kind, name, v, types[name]) for name, v in values.items()}
    return entry.spec(**coerced)



def check_spec_inputs(kind: str, spec: Any, cache=None) -> None:
    """The data, models and checkpoints a spec names exist, or :class:`InvalidInputError`
    naming the field: run when a job is submitted, so that a typo fails at once rather than
    minutes later in the job. Model names are looked up in the model registry (it imports
    timm, a second or two), which is why this is not part of the spec's own validation."""
    from pathlib import Path

    entry = get_kind(kind)
    for name, registry in entry.data_fields.items():
        value = getattr(spec, name)
        if value not in registry and not Path(value).expanduser().is_dir():
            names = " or ".join(repr(r) for r in registry)
            _fail(kind, name, value, f"expected {names} or an existing ImageFolder folder")
    peculiar = getattr(spec, "peculiar", "auto")
    if peculiar not in ("auto", "shapes", "names", "none") and not Path(peculiar).expanduser().is_file():
        _fail(kind, "peculiar", peculiar, "expected auto, shapes, names, none or an existing file of "
              "'TARGET,SOURCE' lines (pairs marked peculiar)")
    checkpoint = getattr(spec, "checkpoint", "")
    if checkpoint and not Path(checkpoint).expanduser().is_file():
        _fail(kind, "checkpoint", checkpoint, "expected an existing weights file (.safetensors, .pt, .pth)")
    if cache is not None:
        known = cache.store_names()
        for name in entry.store_fields:
            value = getattr(spec, name)
            if value and value not in known:
                _fail(kind, name, value, f"no such store in {cache.root}; known stores: "
                      f"{', '.join(known) or 'none (import or extract one first)'}")
    for path in getattr(spec, "checkpoints", ()):
        if path not in ("", "-") and not Path(path).expanduser().is_file():
            _fail(kind, "checkpoints", path, "expected an existing weights file, or '-' for none")
    for name in entry.model_fields:
        from engine.errors import NotFoundError
        from engine.ingest.models import check_model_name

        value = getattr(spec, name)
        models = value if isinstance(value, tuple) else (value,)
        ckpts = getattr(spec, "checkpoints", ()) or (checkpoint,) * len(models)
        for model, ckpt in zip(models, ckpts):
            try:
                check_model_name(model, None if ckpt in ("", "-") else ckpt)
            except NotFoundError as exc:
                _fail(kind, name, model, str(exc))
    if entry.check is not None:
        entry.check(spec, cache, _fail)


def spec_to_dict(spec: Any) -> dict[str, Any]:
    """JSON-ready values of a spec (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(spec).items()}


def spec_hash(kind: str, spec: Any,
              ignore: tuple[str, ...] = ("device", "workers", "threads", "side_by_side")) -> str:
    """Key of a spec's results: equal configs share a run folder (and resume each other).

    Fields that change where, not what, is computed (device, loader workers, threads, helper
    processes) are left out.
    """
    body = {k: v for k, v in spec_to_dict(spec).items() if k not in ignore}
    return sha256_bytes(canonical_json({"kind": kind, "spec": body}).encode())[:16]
