"""One model registry: timm names (with pretrained tags), local checkpoints, the demo models.

* ``create_classifier("resnet50.a1_in1k")`` — a timm model with pretrained weights, downloaded
  on first use as timm does, or read from the local cache only when offline
  (``HF_HUB_OFFLINE=1`` or ``offline=True``; :mod:`engine.ingest.hub`); when they cannot be had the
  error says how to get them.
* ``create_classifier("resnet18", checkpoint="model.safetensors")`` — a timm architecture
  with a local checkpoint (``.safetensors``, or ``.pth`` / ``.pt`` read with
  ``weights_only=True``); the head's size is taken from the checkpoint.
* ``create_classifier("glyph-resnet")`` — a demo model of the embedded glyph world, with the
  weights shipped in ``engine/weights/``.

The glyph architectures live in :mod:`engine.ingest.glyph_models`, registered in timm's own
registry, so they are built by ``timm.create_model`` like any other model.
"""

from __future__ import annotations

import difflib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from engine.errors import InvalidInputError, NotFoundError
from engine.ingest import glyph_models  # noqa: F401  (registers the glyph architectures with timm)
from engine.ingest.hub import hub_mode, is_offline, missing_weights_message, url_weights_cached
from engine.storage.atomic import sha256_file

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


# short names of the glyph architectures (trained from scratch by the applications' jobs)
ARCH_ALIASES = {"glyph-cnn": "nde_glyph_cnn"}


@dataclass(frozen=True)
class DemoModel:
    """A model of the embedded glyph world, shipped with its weights."""

    arch: str  # timm entrypoint
    weights: str  # file in engine/weights/
    dataset: str = "glyphs"  # the dataset (registry name) it was trained on
    kwargs: dict = field(default_factory=dict)  # timm.create_model arguments of its architecture (rank)


DEMO_MODELS: dict[str, DemoModel] = {
    "glyph-vgg": DemoModel("nde_glyph_cnn", "glyph-vgg.safetensors", kwargs={"rank": 64}),
    "glyph-resnet": DemoModel("nde_glyph_resnet", "glyph-resnet.safetensors", kwargs={"rank": 64}),
    "glyph-vgg-seed2": DemoModel("nde_glyph_cnn", "glyph-vgg-seed2.safetensors", kwargs={"rank": 64}),
}


# ----------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference and the facts about it that go into a store's manifest."""

    model: nn.Module
    name: str  # registry name the user gave
    arch: str  # timm architecture
    num_classes: int
    checkpoint: str | None  # path of the weights file, if any
    checkpoint_sha256: str | None
    pretrained: bool

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "arch": self.arch,
            "num_classes": self.num_classes,
            "checkpoint": self.checkpoint,
            "checkpoint_sha256": self.checkpoint_sha256,
            "pretrained": self.pretrained,
        }


def list_model_names(pattern: str = "") -> list[str]:
    """Demo models first, then timm architectures (optionally filtered by a wildcard)."""
    demo = [n for n in (*DEMO_MODELS, *ARCH_ALIASES) if not pattern or pattern in n]
    return demo + timm.list_models(pattern or "", exclude_filters=["nde_glyph_*"])


def resolve_arch(name: str) -> str:
    """The timm architecture of a demo model, an alias (``glyph-cnn``) or a timm name."""
    if name in DEMO_MODELS:
        return DEMO_MODELS[name].arch
    return ARCH_ALIASES.get(name) or _arch_of(name)


def create_architecture(name: str, num_classes: int) -> nn.Module:
    """A freshly initialised model of architecture ``name`` (see :func:`resolve_arch`)."""
    return timm.create_model(resolve_arch(name), pretrained=False, num_classes=num_classes)


def _arch_of(name: str) -> str:
    """The timm architecture of a timm name with or without a pretrained tag; raises if unknown."""
    arch = name.split(".", 1)[0]
    if timm.is_model(arch):
        return arch
    close = nearest_model_names(name)
    hint = f"; nearest names: {', '.join(close)}" if close else ""
    raise NotFoundError(
        f"unknown model {name!r}: not a demo model ({', '.join(DEMO_MODELS)}), a glyph "
        f"architecture ({', '.join(ARCH_ALIASES)}) nor a timm "
        f"architecture{hint}. List them with `python -c \"import timm; print(timm.list_models())\"`"
    )


def nearest_model_names(name: str, n: int = 6) -> list[str]:
    """The registry's names closest to ``name`` (a typo's likely meaning), best first.

    With a pretrained tag (``resnet50.a1_inlk``) the candidates are timm's pretrained names,
    otherwise the demo models, glyph architectures and timm architectures.
    """
    if "." in name:
        candidates = timm.list_pretrained()
    else:
        candidates = [*DEMO_MODELS, *ARCH_ALIASES, *timm.list_models(exclude_filters=["nde_glyph_*"])]
    return difflib.get_close_matches(name, candidates, n=n, cutoff=0.6)


def check_model_name(name: str, checkpoint: Path | str | None = None) -> str:
    """Check a model name (and its pretrained tag, when it has one) without building anything;
    return its timm architecture. Raises :class:`NotFoundError` naming the nearest names."""
    if name in DEMO_MODELS or name in ARCH_ALIASES:
        return resolve_arch(name)
    arch = _arch_of(name)
    if "." in name and checkpoint is None:
        _pretrained_tags(name, arch)
    return arch


def _pretrained_tags(name: str, arch: str) -> list[str]:
    """timm's pretrained tags of ``arch``; raises when ``name`` asks for weights timm lacks."""
    tags = timm.list_pretrained(f"{arch}.*")
    if not tags:
        raise NotFoundError(
            f"timm has no pretrained weights for {name!r}; pass --checkpoint FILE, or pick a "
            "name listed by `timm.list_pretrained()`"
        )
    if "." in name and name not in tags:
        close = difflib.get_close_matches(name, tags, n=3, cutoff=0.6)
        nearest = f"nearest: {', '.join(close)}; " if close else ""
        raise NotFoundError(f"unknown pretrained tag {name!r}; {nearest}valid tags: {', '.join(tags)}")
    return tags


def read_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """Read a checkpoint's tensors without unpickling code: safetensors, or torch weights_only."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"checkpoint {str(path)!r} does not exist or is not a file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        elif suffix in (".pth", ".pt", ".bin", ".ckpt"):
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise InvalidInputError(
                f"checkpoint {path.name!r}: unknown format {suffix!r}; use .safetensors or .pth/.pt"
            )
    except InvalidInputError:
        raise
    except Exception as exc:
        first = str(exc).strip().split("\n", 1)[0][:300]  # torch's messages run to many lines
        raise InvalidInputError(
            f"checkpoint {path.name!r} could not be read ({type(exc).__name__}: {first}). "
            "Only tensors are loaded (weights_only=True): save it with "
            "`torch.save(model.state_dict(), path)` or as .safetensors"
        ) from exc
    return _unwrap(state, path.name)


def _unwrap(state: Any, what: str) -> dict[str, torch.Tensor]:
    """Accept {'state_dict': ...}, {'model': ...}, {'model_ema': ...}; strip 'module.'."""
    for key in ("state_dict", "model", "model_ema", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InvalidInputError(
            f"checkpoint {what!r} does not hold a state dict (a mapping of names to tensors)"
        )
    return {k.removeprefix("module."): v for k, v in state.items()}


def _head_kwargs(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, int]:
    """The head a checkpoint needs, read off its classifier's weights (located through the
    model's ``pretrained_cfg``): ``num_classes``, and ``rank`` for a low-rank glyph head
    (:class:`engine.ingest.glyph_models.LowRankHead`: ``<classifier>.proj`` then ``<classifier>.fc``;
    0 for a plain linear one, whatever rank the demo model's entry names)."""
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier")
    names = classifier if isinstance(classifier, (list, tuple)) else [classifier]
    for name in filter(None, names):
        weight, proj = state.get(f"{name}.weight"), None
        if weight is None:
            weight, proj = state.get(f"{name}.fc.weight"), state.get(f"{name}.proj.weight")
        if weight is not None and weight.ndim >= 1:
            out = {"num_classes": int(weight.shape[0])}
            out["rank"] = int(proj.shape[0]) if proj is not None and proj.ndim == 2 else 0
            return out
    return {}


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], what: str, arch: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    if missing or unexpected or wrong:
        def _few(keys: list[str]) -> str:
            return ", ".join(keys[:6]) + (f" … (+{len(keys) - 6} more)" if len(keys) > 6 else "")

        parts = [f"{len(missing)} missing: {_few(missing)}" if missing else "",
                 f"{len(unexpected)} unexpected: {_few(unexpected)}" if unexpected else "",
                 f"{len(wrong)} of the wrong shape: {_few(wrong)}" if wrong else ""]
        raise InvalidInputError(
            f"checkpoint {what!r} does not fit architecture {arch!r}: "
            + "; ".join(p for p in parts if p)
            + ". Pass the --model architecture the checkpoint was trained with"
        )
    model.load_state_dict(state, strict=True)


def create_classifier(
    name: str,
    *,
    checkpoint: Path | str | None = None,
    pretrained: bool | None = None,
    num_classes: int | None = None,
    offline: bool = False,
) -> LoadedModel:
    """Build a model from the registry, in eval mode on CPU.

    ``pretrained`` defaults to True for timm names with a tag (``resnet50.a1_in1k``) and for
    bare timm names without a checkpoint; a checkpoint always wins over pretrained weights.
    Pretrained weights missing from the local cache are downloaded unless ``offline`` (or
    ``HF_HUB_OFFLINE=1`` in the environment): see :mod:`engine.ingest.hub`.
    """
    arch_kwargs: dict = {}
    if name in DEMO_MODELS and checkpoint is None:
        demo = DEMO_MODELS[name]
        checkpoint, arch, arch_kwargs = WEIGHTS_DIR / demo.weights, demo.arch, demo.kwargs
        if not Path(checkpoint).exists():
            raise NotFoundError(
                f"the demo weights {checkpoint} are missing; reinstall the project or train "
                f"them with `python -m engine train-classifier --model {name}`"
            )
    else:
        arch = resolve_arch(name)
    if checkpoint is not None:
        state = read_state_dict(checkpoint)
        model = timm.create_model(arch, pretrained=False, **arch_kwargs)
        head = {"num_classes": num_classes} if num_classes is not None else {}
        head.update(_head_kwargs(model, state))
        if arch not in glyph_models.RANKED_ARCHS:
            head.pop("rank", None)
        built = {"num_classes": model.num_classes, "rank": arch_kwargs.get("rank", 0)}
        if any(built[key] != value for key, value in head.items()):  # the checkpoint's head differs
            model = timm.create_model(arch, pretrained=False, **{**arch_kwargs, **head})
        _load_into(model, state, Path(checkpoint).name, arch)
        digest = sha256_file(Path(checkpoint))
        loaded = LoadedModel(model.eval(), name, arch, model.num_classes, str(checkpoint), digest, False)
    else:
        use_pretrained = True if pretrained is None else pretrained
        model = _create_timm(name, use_pretrained, num_classes, offline)
        loaded = LoadedModel(model.eval(), name, arch, model.num_classes, None, None, use_pretrained)
    log.info("model %s (%s): %d classes", name, arch, loaded.num_classes)
    return loaded


def _create_timm(name: str, pretrained: bool, num_classes: int | None, offline: bool = False) -> nn.Module:
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if not pretrained:
        return timm.create_model(ARCH_ALIASES.get(name, name), pretrained=False, **kwargs)
    tags = _pretrained_tags(name, name.split(".", 1)[0])
    off = is_offline(offline)
    if off:  # weights timm takes from a URL go through torch.hub, which knows no offline switch
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name if "." in name else tags[0])
        if cfg is not None and not cfg.hf_hub_id and cfg.url and not url_weights_cached(cfg.url):
            raise NotFoundError(missing_weights_message(name, True, f"{cfg.url} is not in torch's cache"))
    try:
        with hub_mode(off):
            return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as exc:
        # offline, the Hub client's own text ("check your connection") would mislead
        text = "" if off or not str(exc).strip() else f": {str(exc).strip().splitlines()[0][:200]}"
        raise NotFoundError(missing_weights_message(name, off, type(exc).__name__ + text)) from exc


def demo_weights_info(name: str) -> dict[str, Any]:
    """The JSON written beside a demo model's weights (its training config and accuracy)."""
    path = WEIGHTS_DIR / DEMO_MODELS[name].weights.replace(".safetensors", ".json")
    return json.loads(path.read_text()) if path.exists() else {}
