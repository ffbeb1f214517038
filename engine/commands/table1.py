"""``python -m engine table1``: the paper's Table 1 from your stores, beside the paper's figures."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.ingest.presets import PRESETS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "table1",
        help="the paper's Table 1 (its Fig. 1-2 categories) from your stores, beside its figures",
        description="Abs Err, Rel Err, Acc and Pos Acc of the dependencies the paper shows (macaw, "
        "jellyfish, egretta albus, basketball, komondor, bustard, hamster), computed from the "
        "stores of `extract --preset paper` on ImageNet's validation set, next to the paper's "
        "own Table 1. Cases whose stores are missing are listed, not computed.",
    )
    p.add_argument("--preset", default="paper", choices=sorted(PRESETS), help="the zoo whose stores to read")
    p.add_argument("--store", nargs="+", default=[], metavar="KEY=NAME",
                   help="your store for a preset model, e.g. resnet50=r50-val (default: the "
                   "preset's names, resnet18 resnet50 swin-t vit-s)")
    p.add_argument("--alpha", type=float, default=None,
                   help="one α for every case (default: the paper's, 2.5, or 0.25 with Swin-T)")
    p.add_argument("--markdown", type=Path, default=None, help="write the table here ('-': stdout, the default)")
    p.add_argument("--json", dest="json_out", type=Path, default=None, help="write every figure as JSON ('-': stdout)")
    p.set_defaults(func=run)


def _store_map(items: list[str]) -> dict[str, str]:
    from engine.errors import InvalidInputError

    out = {}
    for item in items:
        key, sep, name = item.partition("=")
        if not sep or not key or not name:
            raise InvalidInputError(f"--store {item!r}: expected KEY=NAME, e.g. resnet50=r50-val")
        out[key] = name
    return out


def run(args: argparse.Namespace) -> int:
    from engine.apps.table1 import table1_report, to_markdown
    from engine.storage.atomic import write_bytes_atomic, write_json_atomic
    from engine.storage.store import Cache

    report = table1_report(Cache(args.cache), preset=args.preset, stores=_store_map(args.store),
                           alpha=args.alpha)
    text = to_markdown(report)
    if args.json_out is not None:
        if str(args.json_out) == "-":
            json.dump(report.as_dict(), sys.stdout, indent=1, ensure_ascii=False)
            print()
        else:
            write_json_atomic(args.json_out, report.as_dict())
    if args.markdown is None and args.json_out is not None and str(args.json_out) == "-":
        return 0
    if args.markdown is None or str(args.markdown) == "-":
        print(text, end="")
    else:
        write_bytes_atomic(args.markdown, text.encode("utf-8"))
        print(f"Table 1: {len(report.cases)} cases ({len(report.missing)} not computed) -> {args.markdown}")
    return 0
