"""A model zoo in one command: several models over one dataset, every pairing ready for the pages.

``run_zoo(cache, config)``:

1. checks every model name (unknown names raise with the nearest ones) and store name;
2. opens the dataset once, loads every model (downloading pretrained weights unless offline)
   and checks each head against the dataset's classes — all before any forward pass, so a
   mismatch in the third model is said before the first one runs for an hour;
3. extracts each model in turn (:func:`engine.ingest.extract.extract_logits`, each with its own data
   config) into its own store, over the same samples in the same order; progress per model;
4. checks that the stores pair (same sample fingerprint), then computes the cross-Gram of every
   ordered pair and prepares every pairing — within each model and between every two — as
   the dashboard reads them: the solution at the pairing's α and its α path.

Under ``torchrun`` every extraction is sharded as usual and rank 0 does step 4.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import permutations

from engine.errors import IncompatibleStoresError, InvalidInputError
from engine.ingest.presets import ZooPreset, pair_alpha
from engine.storage.manifests import check_store_name
from engine.storage.store import Cache

log = logging.getLogger(__name__)

DEFAULT_ALPHA = 2.5  # the paper's α for every model but Swin-T (appendix B)

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class ZooEntry:
    """One model of the zoo and the store its logits go to."""

    model: str  # model registry name (timm name with tag, demo model, architecture)
    store: str  # store name
    checkpoint: str | None = None  # local weights for the model's architecture
    alpha: float = DEFAULT_ALPHA  # α of its pairings (a pair takes the smaller of its two)


@dataclass(frozen=True)
class ZooConfig:
    """What ``extract`` with several models (or ``--preset``) does."""

    entries: tuple[ZooEntry, ...]
    data: str  # dataset registry name or ImageFolder path
    split: str = "test"
    prepare: bool = True  # cross-Grams and every pairing's solution and α path (>= 2 models)
    alpha: float | None = None  # one α for every pairing (None: each pair's own, see pair_alpha)
    offline: bool = False  # pretrained weights from the local cache only
    batch_size: int = 256
    workers: int | None = None
    device: str = "auto"
    precision: str = "auto"
    chunk_size: int = 4096
    store_dtype: str = "float32"
    overwrite: bool = False

    def pairings(self) -> list[tuple[ZooEntry, ZooEntry]]:
        """(targets, source) pairs: each model with itself, then every ordered pair."""
        within = [(e, e) for e in self.entries]
        return within + list(permutations(self.entries, 2))

    def alpha_of(self, target: ZooEntry, source: ZooEntry) -> float:
        return self.alpha if self.alpha is not None else pair_alpha(target.alpha, source.alpha)


@dataclass(frozen=True)
class ZooResult:
    """What a zoo run made."""

    stores: tuple[str, ...]
    stats: tuple = ()  # ExtractStats per model (rank 0 under torchrun)
    pairings: tuple[tuple[str, str, float], ...] = ()  # (targets store, source store, α) prepared
    seconds: float = 0.0
    main_process: bool = True  # False on torchrun ranks other than 0 (no stores read, nothing prepared)


def zoo_entries(models: list[str] | None = None, names: list[str] | None = None,
                checkpoints: list[str | None] | None = None, preset: ZooPreset | None = None,
                ) -> tuple[ZooEntry, ...]:
    """Entries from the CLI's lists (``--model``, ``--name``, ``--checkpoint``) or a preset.

    Store names default to the preset's short names, else to the model names; a checkpoint
    given as ``-`` or ``""`` means none for that model.
    """
    if preset is not None:
        if models:
            raise InvalidInputError("give either --model or --preset, not both")
        models = [m.model for m in preset.members]
        default_names = [m.key for m in preset.members]
        alphas = [m.alpha for m in preset.members]
    else:
        if not models:
            raise InvalidInputError("no model given: pass --model NAME [NAME …] or --preset NAME")
        default_names, alphas = list(models), [DEFAULT_ALPHA] * len(models)
    names = list(names) if names else default_names
    if len(names) != len(models):
        raise InvalidInputError(
            f"{len(models)} models but {len(names)} store names (--name): give one name per "
            "model, in the same order, or none to use the default names "
            f"({', '.join(default_names)})")
    ckpts = list(checkpoints) if checkpoints else [None] * len(models)
    if len(ckpts) != len(models):
        raise InvalidInputError(
            f"{len(models)} models but {len(ckpts)} checkpoints: give one per model, '-' for "
            "a model without one")
    for name in names:
        check_store_name(name)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InvalidInputError(f"store name(s) {', '.join(dup)} given to several models; give "
                                "each model its own --name")
    return tuple(ZooEntry(m, n, None if c in (None, "", "-") else c, a)
                 for m, n, c, a in zip(models, names, ckpts, alphas))


def _log_progress(fraction: float, message: str) -> None:
    log.info("[%5.1f%%] %s", 100 * fraction, message)


def run_zoo(cache: Cache, config: ZooConfig, progress: Progress | None = None,
            bars: bool = True) -> ZooResult:
    """Extract every model of ``config`` and prepare every pairing; see the module doc.

    ``progress(fraction, message)`` hears about each model's chunks and each pairing;
    ``bars``: tqdm progress bars in the terminal.
    """
    from engine.ingest.extract import extract_logits

    progress = progress or _log_progress
    t0 = time.perf_counter()
    dataset, loaded = _load_checked(cache, config)  # names, heads: before any forward pass
    entries = config.entries
    steps = len(entries) + (1 if _prepares(config) else 0)
    stats = []
    for i, entry in enumerate(entries):
        n_chunks = max(1, -(-len(dataset) // config.chunk_size))
        done = [0]

        def on_chunk(c: int, i=i, entry=entry, done=done, n_chunks=n_chunks) -> None:
            done[0] += 1
            progress((i + min(1.0, done[0] / n_chunks)) / steps,
                     f"model {i + 1}/{len(entries)} {entry.model} → store {entry.store}: "
                     f"{min(done[0], n_chunks)}/{n_chunks} chunks")

        progress(i / steps, f"model {i + 1}/{len(entries)} {entry.model} → store {entry.store}")
        _, st = extract_logits(
            cache, loaded[entry.store], dataset, entry.store, batch_size=config.batch_size,
            workers=config.workers, device=config.device, precision=config.precision,
            chunk_size=config.chunk_size, store_dtype=config.store_dtype,
            overwrite=config.overwrite, progress=bars, on_chunk=on_chunk)
        stats.append(st)
        loaded.pop(entry.store)  # free its memory before the next model
    if _rank() != 0:
        return ZooResult(tuple(e.store for e in entries), tuple(stats), (), time.perf_counter() - t0, False)
    check_same_samples(cache, [e.store for e in entries])
    pairings = _prepare(cache, config, progress, steps) if _prepares(config) else ()
    progress(1.0, f"{len(entries)} stores ready" + (f", {len(pairings)} pairings prepared" if pairings else ""))
    return ZooResult(tuple(e.store for e in entries), tuple(stats), pairings, time.perf_counter() - t0)


def _prepares(config: ZooConfig) -> bool:
    return config.prepare and len(config.entries) >= 2


def _load_checked(cache: Cache, config: ZooConfig) -> tuple:
    """(dataset, every model loaded keyed by store name); raises before any forward pass when
    a name is unknown or a head does not fit the dataset's classes."""
    from engine.ingest.data import create_dataset
    from engine.ingest.models import check_model_name, create_classifier

    if not config.entries:
        raise InvalidInputError("a zoo needs at least one model")
    for entry in config.entries:  # cheap checks first: nothing is loaded if a name is wrong
        check_model_name(entry.model, entry.checkpoint)
    dataset = create_dataset(config.data, config.split, cache=cache)
    loaded, wrong = {}, []
    for entry in config.entries:
        model = create_classifier(entry.model, checkpoint=entry.checkpoint, offline=config.offline)
        if model.num_classes != dataset.num_classes:
            wrong.append(f"{entry.model!r} has {model.num_classes} outputs")
        loaded[entry.store] = model
    if wrong:
        raise InvalidInputError(
            f"dataset {dataset.name!r} ({dataset.split}) has {dataset.num_classes} classes but "
            f"{'; '.join(wrong)}; nothing was computed. Use checkpoints trained on these classes, "
            "or a dataset with the classes of the models' heads (e.g. ImageNet's 1,000 for "
            "ImageNet-1k models)")
    return dataset, loaded


def check_same_samples(cache: Cache, stores: list[str]) -> None:
    """Every store holds the same samples in the same order, or :class:`IncompatibleStoresError`."""
    from engine.stages.gramsets import check_pairable

    first = cache.load_store(stores[0])
    for name in stores[1:]:
        try:
            check_pairable(first, cache.load_store(name))
        except IncompatibleStoresError as exc:
            raise IncompatibleStoresError(f"the zoo's stores cannot be compared: {exc}") from None


def _prepare(cache: Cache, config: ZooConfig, progress: Progress, steps: int) -> tuple:
    """Cross-Grams of every ordered pair, then each pairing's solution and every target's α
    path (the paths job's function, run here: a zoo is prepared in one go)."""
    from engine.stages.alpha_paths import load_or_compute_path
    from engine.stages.gramsets import load_gramset
    from engine.stages.pairing import open_pairing
    from engine.stages.solutions import solve_dependencies

    device = "cuda" if _uses_cuda(config.device) else "cpu"
    pairs = config.pairings()
    done = []
    start = (steps - 1) / steps
    for n, (target, source) in enumerate(pairs):
        alpha = config.alpha_of(target, source)
        label = (f"{target.store}" if target is source else f"{target.store} ← {source.store}")
        progress(start + n / len(pairs) / steps, f"pairing {n + 1}/{len(pairs)}: {label} (α = {alpha:g})")
        pairing = open_pairing(cache, target.store, source.store)
        if not pairing.within:
            load_gramset(cache, pairing, device=device)
        solve_dependencies(cache, pairing, alpha)
        load_or_compute_path(cache, pairing)
        done.append((target.store, source.store, alpha))
        log.info("pairing ready: %s (α = %g)", label, alpha)
    return tuple(done)


def _rank() -> int:
    """This process's rank under torchrun (0 otherwise)."""
    import torch

    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _uses_cuda(device: str) -> bool:
    import torch

    if device in ("auto", "", None):
        return torch.cuda.is_available()
    return str(device).startswith("cuda")


__all__ = ["ZooConfig", "ZooEntry", "ZooResult", "check_same_samples", "pair_alpha", "run_zoo",
           "zoo_entries"]
