"""The phenomenon on the demo, measured (the figures of docs/extract-and-demo.md; not a test).

    python -m engine demo
    python bench/demo_dependencies.py --alpha 0.25 [--alpha 0.5 ...]

For each pairing (within glyph-resnet, within glyph-vit, each model's categories predicted from
the other's logits) and each α, through the public ``python -m engine dependencies`` command:
how many categories have a dependency with Rel Err < 5 % whose replaced logit costs ≤ 0.5
points of accuracy, the median number of sources, and example dependencies.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.cli import main as cli_main  # noqa: E402
from engine.store import DEFAULT_CACHE  # noqa: E402

PAIRINGS = (("glyph-resnet", None), ("glyph-vit", None), ("glyph-vit", "glyph-resnet"),
            ("glyph-resnet", "glyph-vit"))
EXAMPLES = ("O", "0", "é", "e", "Q", "ñ", "l", "1", "È", "ö")


def _report(cache: str, model: str, source: str | None, alpha: float) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        args = ["--cache", cache, "dependencies", "--model", model, "--alpha", str(alpha), "--json", out.name]
        if source:
            args += ["--source", source]
        if cli_main(args) != 0:
            raise SystemExit(f"dependencies failed for {model} <- {source or model}")
        return json.loads(Path(out.name).read_text())


def _formula(t: dict, n: int = 4) -> str:
    terms = sorted(t["sources"], key=lambda s: -abs(s["coef"]))[:n]
    body = " + ".join(f"{s['coef']:.2f}·\"{s['name'].split(' ')[0]}\"" for s in terms)
    more = len(t["sources"]) - n
    return f"\"{t['target_name'].split(' ')[0]}\" ≈ {body}" + (f" + … ({more} more)" if more > 0 else "")


def summarise(report: dict) -> dict:
    targets = report["targets"]
    good = [t for t in targets if t["sources"] and t["rel_err"] is not None and t["rel_err"] < 5.0
            and t["ori_acc"] - t["acc"] <= 0.5]
    by_char = {t["target_name"].split(" ")[0]: t for t in targets}
    return {
        "alpha": report["alpha"], "model": report["model"], "source": report["source"],
        "categories": len(targets),
        "good": len(good),
        "median_sources": float(np.median([len(t["sources"]) for t in targets])),
        "median_rel_err": float(np.median([t["rel_err"] for t in targets if t["rel_err"] is not None])),
        "ori_acc": targets[0]["ori_acc"],
        "examples": [
            {"formula": _formula(by_char[c]), "rel_err": round(by_char[c]["rel_err"], 2),
             "acc_drop": round(by_char[c]["ori_acc"] - by_char[c]["acc"], 3)}
            for c in EXAMPLES if c in by_char
        ],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=str(DEFAULT_CACHE))
    ap.add_argument("--alpha", type=float, action="append", help="repeatable (default 0.25)")
    ap.add_argument("--out", default=None, help="append JSON lines here")
    args = ap.parse_args(argv)
    for alpha in args.alpha or [0.25]:
        for model, source in PAIRINGS:
            line = json.dumps(summarise(_report(args.cache, model, source, alpha)), ensure_ascii=False)
            print(line)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
