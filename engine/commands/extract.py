"""``python -m engine extract``: logits of a model on a dataset, into a logit store.

Works the same under ``torchrun --nproc_per_node=G python -m engine extract …`` (one shard of
the dataset per process, merged by rank 0 into one store in the original order).
"""

from __future__ import annotations

import argparse
import os

from engine.store import Cache

# kept here (not imported from engine.extract) so that `--help` does not import torch
DEFAULT_CHUNK = 4096
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract",
        help="compute a model's logits on a dataset into a store (resumable, torchrun-aware)",
        description="Logits of --model on --data, written as store --name with its Gram. An "
        "interrupted run resumes when the same command is run again.",
    )
    p.add_argument("--model", required=True,
                   help="demo model (glyph-resnet, glyph-vit) or timm name, e.g. resnet50.a1_in1k")
    p.add_argument("--checkpoint", default=None, help="local weights (.safetensors, .pth/.pt) for --model's architecture")
    p.add_argument("--no-pretrained", action="store_true",
                   help="timm models: random initialisation instead of cached pretrained weights")
    p.add_argument("--data", required=True, help="dataset name (glyphs) or an ImageFolder path")
    p.add_argument("--split", default="test", help="split (glyphs: train/val/test/ood; folders: a sub-folder, if present)")
    p.add_argument("--name", required=True, help="name of the store to write")
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

    from engine.extract import extract_store

    started = _init_distributed(args.device)
    try:
        store, stats = extract_store(
            Cache(args.cache), args.model, args.data, args.name, split=args.split, checkpoint=args.checkpoint,
            pretrained=False if args.no_pretrained else None, batch_size=args.batch_size,
            workers=args.workers, device=args.device, precision=args.precision, chunk_size=args.chunk_size,
            store_dtype=args.dtype, overwrite=args.overwrite, progress=not args.no_progress,
        )
        if store is not None and stats.cache_hit:
            print(f"store {store.name}: {store.n} samples x {store.k} categories "
                  "(cache hit: it already holds these logits)")
        elif store is not None:
            print(f"store {store.name}: {store.n} samples x {store.k} categories "
                  f"({stats.skipped} unreadable skipped; {stats.chunks_resumed} chunks resumed; "
                  f"{stats.images_per_second:.1f} images/s)")
    finally:
        if started:
            torch.distributed.destroy_process_group()
    return 0
