"""Logits of a model over a dataset: batched, resumable, sharded, written as one logit store.

``extract_logits(cache, loaded, dataset, name)`` runs the model in eval mode over the dataset
in its original order and writes a store (see :mod:`engine.storage.store`) plus its Gram (so later
solves are a cache hit). How:

* **Preprocessing** comes from the model's own data config (``timm.data.resolve_data_config``):
  ``create_transform`` for image files; for tensor datasets (the glyph world) the same
  resize / channel / normalisation steps are applied per batch on the device.
* **Chunks.** The samples are cut into chunks of ``chunk_size``; each finished chunk is
  written atomically to ``<cache>/partial/<key>/chunk-<c>.safetensors``, where ``key`` hashes
  the :class:`ExtractConfig` (model, checkpoint hash, dataset fingerprint, transform,
  precision). A run that is interrupted keeps its finished chunks; the same command resumes.
* **Sharding.** Under ``torchrun --nproc_per_node=G`` (a process group initialised), rank r
  computes the chunks c with c % G == r — the dataset's order, no sample twice and no
  padding duplicates (unlike ``DistributedSampler``) — and rank 0 merges all chunks, in
  order, into one store. gloo on CPU, NCCL on GPUs; the partial folder must be shared.
* **Devices.** CUDA when present (autocast fp16/bf16 by default), CPU otherwise (fp32 by
  default, so logits equal a plain forward pass to float rounding); channels-last on both.
* **Bad images** are skipped and counted (their ids go into the manifest); the sample
  fingerprint covers the samples actually kept, in order.
* **Gram** ``E[f fᵀ]`` is accumulated in float64 chunk by chunk in chunk order, so a resumed
  or sharded run gives the same Gram bit for bit.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import timm
import torch
from safetensors.numpy import load_file, save_file

from engine.core.gram import GramAccumulator, default_device
from engine.errors import EngineError, InvalidInputError
from engine.ingest.data import (
    ImageDataset,
    iterate_batches,
    prepare_transform,
    sample_fingerprint,
)
from engine.ingest.models import LoadedModel
from engine.stages.gramsets import gram_config, has_gramset, load_gramset, save_gramset
from engine.stages.pairing import Pairing
from engine.storage.atomic import canonical_json, commit, sha256_bytes, temp_file, write_json_atomic
from engine.storage.manifests import check_store_name
from engine.storage.store import Cache, LogitStore

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 4096
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class ExtractConfig:
    """What determines the logits (and so the partial chunks' folder); stored in the manifest."""

    model: str  # registry name
    arch: str  # timm architecture
    checkpoint_sha256: str | None  # weights file, when one was given
    pretrained: bool  # timm pretrained weights from the local cache
    dataset: str  # registry name or folder
    split: str
    dataset_fingerprint: str
    n_samples: int
    data_config: str  # the model's resolved data config, canonical JSON
    transform: str  # the preprocessing actually applied
    precision: str  # fp32 | bf16 | fp16 (autocast)
    chunk_size: int

    def key(self) -> str:
        return sha256_bytes(canonical_json(asdict(self)).encode())[:24]


@dataclass(frozen=True)
class ExtractStats:
    """What a run did; the CLI prints it and the benchmark reads it."""

    store: str
    n: int
    k: int
    skipped: int
    chunks_computed: int
    chunks_resumed: int
    seconds: float
    images_per_second: float
    cache_hit: bool = False  # the store already held exactly these logits; nothing was computed


# ----------------------------------------------------------------------------- preprocessing


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InvalidInputError(f"invalid device {device!r}: use cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {device!r} asked for, but no CUDA device is available; use --device cpu")
    return dev


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"  # on CPU: exact logits, equal to a plain forward pass


# ----------------------------------------------------------------------------- chunks


def _chunk_path(folder: Path, c: int) -> Path:
    return folder / f"chunk-{c:06d}.safetensors"


def _write_chunk(folder: Path, c: int, logits: np.ndarray, labels: np.ndarray, indices: np.ndarray,
                 skipped: np.ndarray) -> None:
    with temp_file(folder, ".safetensors") as tmp:
        save_file({"logits": logits, "labels": labels, "indices": indices, "skipped": skipped}, str(tmp))
        commit(tmp, _chunk_path(folder, c))


def _read_chunk(folder: Path, c: int) -> dict[str, np.ndarray] | None:
    path = _chunk_path(folder, c)
    if not path.exists():
        return None
    try:
        return load_file(str(path))
    except Exception as exc:  # written atomically, so only outside damage gets here
        log.warning("partial chunk %s unreadable (%s); recomputing it", path, exc)
        path.unlink(missing_ok=True)
        return None


@dataclass
class _ChunkBuffer:
    expected: int
    logits: list[np.ndarray]
    labels: list[np.ndarray]
    indices: list[np.ndarray]
    skipped: list[int]

    @property
    def seen(self) -> int:
        return sum(len(i) for i in self.indices) + len(self.skipped)


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


# ----------------------------------------------------------------------------- the pass


def _forward(model: torch.nn.Module, x: torch.Tensor, device: torch.device, precision: str) -> torch.Tensor:
    if x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        return model(x).float()


def default_workers(dataset: ImageDataset) -> int:
    if dataset.yields_tensors:
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def extract_logits(cache: Cache, loaded: LoadedModel, dataset: ImageDataset, name: str, **options):
    """Compute and store the logits of ``loaded.model`` on ``dataset``; see the module doc and
    :func:`_extract_logits` for the options.

    Two processes extracting the same store at once do not interleave: the second waits for
    the first (a lock per store name) and then finds the store done. Under torchrun the ranks
    share the work by design and take no lock.
    """
    check_store_name(name)
    if _dist_info()[1] > 1:
        return _extract_logits(cache, loaded, dataset, name, **options)
    with cache.lock(f"extract-{name}"):
        return _extract_logits(cache, loaded, dataset, name, **options)


def _extract_logits(
    cache: Cache,
    loaded: LoadedModel,
    dataset: ImageDataset,
    name: str,
    *,
    batch_size: int = 256,
    workers: int | None = None,
    device: str | None = None,
    precision: str = "auto",
    chunk_size: int = DEFAULT_CHUNK,
    store_dtype: str = "float32",
    overwrite: bool = False,
    progress: bool = True,
    on_chunk: Callable[[int], None] | None = None,
) -> tuple[LogitStore | None, ExtractStats]:
    """Compute and store the logits of ``loaded.model`` on ``dataset``; see the module doc.

    Returns (store, stats); under a process group only rank 0 returns the store (others None).
    ``on_chunk(c)`` is called after chunk ``c`` is safely on disk (progress, tests).
    """
    check_store_name(name)
    if batch_size < 1 or chunk_size < 1:
        raise InvalidInputError(f"batch size and chunk size must be >= 1; got {batch_size}, {chunk_size}")
    if loaded.num_classes != dataset.num_classes:
        raise InvalidInputError(
            f"model {loaded.name!r} has {loaded.num_classes} outputs but dataset {dataset.name!r} "
            f"({dataset.split}) has {dataset.num_classes} classes; use a checkpoint trained on "
            "these classes, or a dataset with the classes of the model's head"
        )
    rank, world = _dist_info()
    dev = resolve_device(device)
    if world > 1 and dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    prec = resolve_precision(precision, dev)
    # channels-last: what cuDNN's and oneDNN's fastest convolutions want (2x on CPU measured)
    model = loaded.model.eval().to(dev, memory_format=torch.channels_last)
    data_config, file_tf, tensor_tf = prepare_transform(model, dataset)
    config = ExtractConfig(
        model=loaded.name, arch=loaded.arch, checkpoint_sha256=loaded.checkpoint_sha256,
        pretrained=loaded.pretrained, dataset=dataset.name, split=dataset.split,
        dataset_fingerprint=dataset.fingerprint(), n_samples=len(dataset),
        data_config=canonical_json({k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()}),
        transform=repr(file_tf or tensor_tf), precision=prec, chunk_size=chunk_size,
    )
    existing = _existing_store(cache, name, config, overwrite)
    folder = cache.partial_path(config.key())
    if existing is not None and (has_gramset(cache, existing) or not folder.is_dir()):
        # done, or a run killed while it removed its chunks: what is left of them goes; with no
        # chunks left, a missing Gram is computed from the store (equal to float64 rounding)
        shutil.rmtree(folder, ignore_errors=True)
        load_gramset(cache, Pairing.of(existing))
        return existing, ExtractStats(name, existing.n, existing.k,
                                      existing.manifest["dataset_info"]["n_skipped"], 0, 0, 0.0, 0.0, True)
    # A store without its Gram set whose chunks are still here (a run killed between the
    # store's manifest and the Gram's) resumes like any run: every chunk is done, the Gram is
    # accumulated from them in chunk order — bit for bit the uninterrupted run's — and saving
    # the identical store again changes nothing.
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "config.json", asdict(config))

    n = len(dataset)
    n_chunks = (n + chunk_size - 1) // chunk_size
    mine = [c for c in range(n_chunks) if c % world == rank]
    done = {c for c in mine if _chunk_path(folder, c).exists()}
    todo = [c for c in mine if c not in done]
    if done:
        log.info("resuming: %d of %d chunks already computed in %s", len(done), len(mine), folder)
    t0 = time.perf_counter()
    gram = GramAccumulator(loaded.num_classes, device=default_device()) if world == 1 else None
    results: dict[int, dict[str, np.ndarray]] = {}
    next_gram = 0

    def _advance_gram() -> None:
        nonlocal next_gram
        while gram is not None and next_gram < n_chunks:
            part = results.get(next_gram) or _read_chunk(folder, next_gram)
            if part is None:
                return
            results[next_gram] = part
            if len(part["logits"]):
                gram.update(part["logits"])
            next_gram += 1

    _advance_gram()
    computed = _run_chunks(model, dataset, todo, folder, n, chunk_size, batch_size,
                           default_workers(dataset) if workers is None else workers, dev, prec,
                           tensor_tf, progress, results, _advance_gram, on_chunk, loaded.num_classes)
    seconds = time.perf_counter() - t0
    if world > 1:
        torch.distributed.barrier()
        if rank != 0:
            torch.distributed.barrier()  # wait for rank 0's merge, then leave together
            return None, ExtractStats(name, 0, loaded.num_classes, 0, len(todo), len(done), seconds,
                                      computed / max(seconds, 1e-9))
    try:
        store, n_skipped = _merge(cache, folder, n_chunks, name, dataset, loaded, config, results,
                                  gram, store_dtype, overwrite, prec, dev)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise EngineError(
                f"disk full while writing store {name!r}: nothing was written; the computed chunks "
                f"stay in {folder} — free some space and run the same command to finish"
            ) from exc
        raise
    finally:
        if world > 1:
            torch.distributed.barrier()
    shutil.rmtree(folder, ignore_errors=True)
    stats = ExtractStats(name, store.n, store.k, n_skipped, len(todo), len(done), seconds,
                         computed / max(seconds, 1e-9))
    return store, stats


def _existing_store(cache: Cache, name: str, config: ExtractConfig, overwrite: bool) -> LogitStore | None:
    """The store ``name`` if it already holds these logits; raise if it holds others (no overwrite)."""
    if name not in cache.store_names():
        return None
    store = cache.load_store(name)
    if store.manifest.get("extract_config") == asdict(config):
        log.info("store %s already holds these logits (same model, data and transform)", name)
        return store
    if not overwrite:
        raise InvalidInputError(
            f"a store named {name!r} already exists with other logits; choose another --name, "
            "or replace it on purpose with --overwrite"
        )
    return None


def _run_chunks(model, dataset, todo, folder, n, chunk_size, batch_size, workers, dev, prec,
                tensor_tf, progress, results, advance_gram, on_chunk, k) -> int:
    """Compute the chunks in ``todo`` (ascending), writing each as soon as it is complete."""
    from tqdm.auto import tqdm

    if not todo:
        return 0
    indices = np.concatenate([np.arange(c * chunk_size, min(n, (c + 1) * chunk_size)) for c in todo])
    buffers = {c: _ChunkBuffer(min(n, (c + 1) * chunk_size) - c * chunk_size, [], [], [], []) for c in todo}
    bar = tqdm(total=len(indices), unit="img", desc="logits", disable=not progress, smoothing=0.1)
    computed = 0
    with torch.inference_mode():
        for images, labels, idx, skipped in iterate_batches(dataset, indices, batch_size, dev, tensor_tf, workers):
            if images is not None and len(idx):
                logits = _forward(model, images, dev, prec).cpu().numpy()
                if logits.shape[1] != k:
                    raise InvalidInputError(f"the model returned {logits.shape[1]} logits per image, expected {k}")
                idx_np = idx.numpy()
                for c in np.unique(idx_np // chunk_size):
                    sel = idx_np // chunk_size == c
                    buf = buffers[int(c)]
                    buf.logits.append(logits[sel])
                    buf.labels.append(labels.numpy()[sel])
                    buf.indices.append(idx_np[sel])
                computed += len(idx_np)
            for s in skipped:
                buffers[s // chunk_size].skipped.append(s)
            bar.update((0 if images is None else len(idx)) + len(skipped))
            for c in sorted(c for c, b in buffers.items() if b.seen == b.expected):
                _flush(folder, c, buffers.pop(c), k, results)
                advance_gram()
                if on_chunk:
                    on_chunk(c)
    bar.close()
    return computed


def _flush(folder: Path, c: int, buf: _ChunkBuffer, k: int, results: dict) -> None:
    cat = lambda xs, dt, shape=(0,): np.concatenate(xs).astype(dt) if xs else np.zeros(shape, dt)  # noqa: E731
    part = {
        "logits": cat(buf.logits, np.float32, (0, k)),
        "labels": cat(buf.labels, np.int64),
        "indices": cat(buf.indices, np.int64),
        "skipped": np.asarray(sorted(buf.skipped), np.int64),
    }
    _write_chunk(folder, c, part["logits"], part["labels"], part["indices"], part["skipped"])
    results[c] = part


def _merge(cache, folder, n_chunks, name, dataset, loaded, config, results, gram, store_dtype,
           overwrite, prec, dev) -> tuple[LogitStore, int]:
    """Concatenate every chunk in order, write the store and its Gram."""
    parts = []
    for c in range(n_chunks):
        part = results.get(c) or _read_chunk(folder, c)
        if part is None:
            raise EngineError(f"chunk {c} of {n_chunks} is missing from {folder}; run the command again")
        parts.append(part)
    logits = np.concatenate([p["logits"] for p in parts])
    labels = np.concatenate([p["labels"] for p in parts])
    kept = np.concatenate([p["indices"] for p in parts])
    skipped = np.concatenate([p["skipped"] for p in parts]).tolist()
    if len(kept) == 0:
        raise InvalidInputError(f"none of the {len(dataset)} images of {dataset.name!r} could be read")
    ids = [dataset.sample_ids[i] for i in kept.tolist()]
    sample_fp = sample_fingerprint(ids)
    if skipped:
        log.warning("%d unreadable image(s) skipped, e.g. %s", len(skipped), dataset.sample_ids[skipped[0]])
    meta = {
        "source": "extract",
        "model_info": loaded.describe(),
        "dataset_info": {**dataset.describe(), "n_read": len(kept), "n_skipped": len(skipped),
                         "skipped_ids": [dataset.sample_ids[i] for i in skipped[:1000]]},
        "sample_ids": ids,
        "transform": config.transform,
        "extract_config": asdict(config),
        "device": dev.type,
        "timm_version": timm.__version__,
    }
    store = cache.save_store(name, logits, labels, dataset.class_names, meta=meta,
                             sample_fingerprint=sample_fp, dtype=store_dtype, overwrite=overwrite)
    if gram is None or store_dtype != "float32":  # sharded, or rounded storage: sum the stored values
        gram, start = GramAccumulator(store.k, device=default_device()), 0  # chunk by chunk, in chunk order
        for p in parts:
            if len(p["logits"]):
                gram.update(store.logits[start : start + len(p["logits"])])
            start += len(p["logits"])
    save_gramset(cache, gram_config(store, None), gram.gramset())
    return store, len(skipped)


def extract_store(cache: Cache, model: str, data: str, name: str, *, split: str = "test",
                  checkpoint: str | None = None, pretrained: bool | None = None, offline: bool = False,
                  **options):
    """Logits of registry model ``model`` on dataset ``data`` (a registry name or an
    ImageFolder path) into store ``name``: what ``python -m engine extract`` (one model) and
    the extract job both run. ``options`` are :func:`extract_logits`'s. Returns (store, stats)."""
    from engine.ingest.data import create_dataset
    from engine.ingest.models import create_classifier

    dataset = create_dataset(data, split, cache=cache)
    loaded = create_classifier(model, checkpoint=checkpoint or None, pretrained=pretrained, offline=offline)
    return extract_logits(cache, loaded, dataset, name, **options)


def describe_stats(stats: ExtractStats) -> str:
    return json.dumps(asdict(stats))
