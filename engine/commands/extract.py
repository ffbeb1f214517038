"""``python -m engine extract``: logits of one model, or of a model zoo, on a dataset.

One model: ``--model NAME --name STORE`` writes one store with its Gram. Several models
(``--model A B C``) or a named preset (``--preset paper``): one store each over the same
samples in the same order, then the cross-Gram of every pair and every pairing's solution and
α path, ready for the Explore and Compare pages (engine/ingest/zoo.py).

Pretrained timm weights are downloaded on first use unless ``--offline`` (or
``HF_HUB_OFFLINE=1``): then only the local cache is read (engine/ingest/hub.py).

Works the same under ``torchrun --nproc_per_node=G python -m engine extract …`` (one shard of
the dataset per process, merged by rank 0 into one store in the original order).
"""

from __future__ import annotations

import argparse
import os

from engine.ingest.presets import PRESETS
from engine.storage.store import Cache

# kept here (not imported from engine.ingest.extract) so that `--help` does not import torch
DEFAULT_CHUNK = 4096
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract",
        help="compute the logits of a model (or a model zoo) on a dataset into stores",
        description="Logits of --model on --data, written as store --name with its Gram. With "
        "several models (or --preset) one store each over the same samples, the cross-Grams of "
        "every pair and every pairing's dependencies, ready for the dashboard. An interrupted "
        "run resumes when the same command is run again.",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", nargs="+",
                       help="demo model (glyph-vgg, glyph-resnet, glyph-vgg-seed2) or timm name, e.g. resnet50.a1_in1k; "
                       "several for a zoo")
    which.add_argument("--preset", choices=sorted(PRESETS),
                       help="a named zoo: " + "; ".join(f"{p.name}: {p.description}" for p in PRESETS.values()))
    p.add_argument("--checkpoint", nargs="+", default=None,
                   help="local weights (.safetensors, .pth/.pt) for --model's architecture; one per "
                   "model in a zoo ('-' for none)")
    p.add_argument("--no-pretrained", action="store_true",
                   help="timm models: random initialisation instead of pretrained weights")
    p.add_argument("--offline", action="store_true",
                   help="never download: pretrained weights from the local cache only "
                   "(as HF_HUB_OFFLINE=1)")
    p.add_argument("--data", required=True, help="dataset name (glyphs) or an ImageFolder path")
    p.add_argument("--split", default="test", help="split (glyphs: train/val/test/ood; folders: a sub-folder, if present)")
    p.add_argument("--name", nargs="+", default=None,
                   help="name of the store to write (one per model in a zoo; default there: the "
                   "preset's short names or the model names)")
    p.add_argument("--alpha", type=float, default=None,
                   help="zoo: α of every pairing's dependencies (default: the paper's, 2.5, or "
                   "the preset's per model — a pair takes the smaller)")
    p.add_argument("--no-prepare", action="store_true",
                   help="zoo: only the stores; no cross-Grams and no dependencies")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: cores - 1)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="autocast dtype (auto: fp32 on CPU, bf16/fp16 on CUDA)")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK, help="samples per resumable chunk")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="stored logits dtype")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store of that name")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _init_distributed(device: str) -> bool:
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.distributed.is_initialized():
        return False
    use_nccl = torch.cuda.is_available() and device != "cpu"
    torch.distributed.init_process_group(backend="nccl" if use_nccl else "gloo")
    return True


def run(args: argparse.Namespace) -> int:
    import torch

    from engine.errors import InvalidInputError

    single = args.model is not None and len(args.model) == 1
    if single and not args.name:
        raise InvalidInputError("--name is required: the name of the store to write, e.g. resnet50-val")
    started = _init_distributed(args.device)
    try:
        if single:
            _run_one(args)
        else:
            _run_zoo(args)
    finally:
        if started:
            torch.distributed.destroy_process_group()
    return 0


def _run_one(args: argparse.Namespace) -> None:
    from engine.errors import InvalidInputError
    from engine.ingest.extract import extract_store

    if len(args.name) != 1 or (args.checkpoint and len(args.checkpoint) != 1):
        raise InvalidInputError("one --model takes one --name and at most one --checkpoint")
    store, stats = extract_store(
        Cache(args.cache), args.model[0], args.data, args.name[0], split=args.split,
        checkpoint=args.checkpoint[0] if args.checkpoint else None,
        pretrained=False if args.no_pretrained else None, offline=args.offline,
        batch_size=args.batch_size, workers=args.workers, device=args.device, precision=args.precision,
        chunk_size=args.chunk_size, store_dtype=args.dtype, overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    if store is not None:
        _print_store(store, stats)


def _print_store(store, stats) -> None:
    if stats.cache_hit:
        print(f"store {store.name}: {store.n} samples x {store.k} categories "
              "(cache hit: it already holds these logits)")
    else:
        print(f"store {store.name}: {store.n} samples x {store.k} categories "
              f"({stats.skipped} unreadable skipped; {stats.chunks_resumed} chunks resumed; "
              f"{stats.images_per_second:.1f} images/s)")


def _run_zoo(args: argparse.Namespace) -> None:
    from engine.errors import InvalidInputError
    from engine.ingest.presets import get_preset
    from engine.ingest.zoo import ZooConfig, run_zoo, zoo_entries

    if args.no_pretrained:
        raise InvalidInputError("--no-pretrained is for one model; a zoo compares trained models")
    preset = get_preset(args.preset) if args.preset else None
    entries = zoo_entries(args.model, args.name, args.checkpoint, preset)
    config = ZooConfig(entries, args.data, args.split, prepare=not args.no_prepare, alpha=args.alpha,
                       offline=args.offline, batch_size=args.batch_size, workers=args.workers,
                       device=args.device, precision=args.precision, chunk_size=args.chunk_size,
                       store_dtype=args.dtype, overwrite=args.overwrite)
    cache = Cache(args.cache)
    result = run_zoo(cache, config, bars=not args.no_progress)
    if not result.main_process:
        return  # a torchrun rank other than 0: rank 0 reports
    for entry, stats in zip(entries, result.stats):
        _print_store(cache.load_store(entry.store), stats)
    for target, source, alpha in result.pairings:
        what = target if target == source else f"{target} <- {source}"
        print(f"dependencies ready: {what} (alpha={alpha:g})")
    print(f"zoo: {len(entries)} stores, {len(result.pairings)} pairings in {result.seconds:.1f} s")
