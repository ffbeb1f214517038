"""``python -m engine train-classifier``: train a classifier on the glyph world (the demo models)."""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict
from pathlib import Path

from engine.train.classifier import TrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    d = TrainConfig()
    p = sub.add_parser(
        "train-classifier",
        help="train a classifier on the glyph world (reproduces the demo weights)",
        description="Seeded supervised training (AdamW, one-cycle, optional label smoothing); a checkpoint "
        "per epoch; an interrupted run resumes from its --out folder.",
    )
    p.add_argument("--model", default=d.model, help="demo model name or timm architecture")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--train-per-class", type=int, default=d.train_per_class)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--rank", type=int, default=None,
                   help="glyph architectures: logits of rank at most R (a low-rank head; 0 = a plain linear one)")
    p.add_argument("--precision", default=d.precision, choices=["auto", "bf16", "fp32"])
    p.add_argument("--threads", type=int, default=d.threads,
                   help="CPU threads (1 is fastest on a shared, oversubscribed CPU)")
    p.add_argument("--out", default=None, help="run folder (default runs/<model>)")
    p.add_argument("--install", action="store_true",
                   help="copy the final weights + JSON into engine/weights/<model>.* (demo models)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.jobs.context import LogProgress
    from engine.train.classifier import train_classifier

    config = TrainConfig(
        model=args.model, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
        train_per_class=args.train_per_class, seed=args.seed, precision=args.precision,
        threads=args.threads, cache=args.cache, out_dir=args.out or f"runs/{args.model}",
        model_kwargs={} if args.rank is None else {"rank": args.rank},
    )
    result = train_classifier(config, progress=LogProgress(every_s=30))
    print(json.dumps({"weights": str(result.weights), "val_acc": result.val_acc,
                      "test_acc": result.test_acc, "seconds": round(result.seconds, 1),
                      "config": asdict(config)}))
    if args.install:
        from engine.ingest.models import WEIGHTS_DIR

        WEIGHTS_DIR.mkdir(exist_ok=True)
        shutil.copyfile(result.weights, WEIGHTS_DIR / f"{args.model}.safetensors")
        shutil.copyfile(Path(result.weights).with_suffix(".json"), WEIGHTS_DIR / f"{args.model}.json")
        print(f"installed as {WEIGHTS_DIR / args.model}.safetensors")
    return 0
