"""The phenomenon on the demo, measured through the public CLI (the README's table; not a test).

    python -m engine demo
    python bench/demo_dependencies.py [--cache DIR] [--alpha 4 --alpha 2 ...] [--out results.jsonl]

For each pairing — within each demo model, and each demo pair's categories predicted from the
other model's logits (``engine.commands.demo``) — and each α, ``python -m engine dependencies --json`` gives every
target's sources, R² and accuracy; this prints, per (pairing, α):

* the median number of sources and the median R² of the replaced logit;
* within a model: the share of categories whose dependency *fits* (R² ≥ 0.95) at ≤ 0.5 pt of
  accuracy lost, and how many fit with ≤ 4 sources;
* between models: the share at R² ≥ 0.90, how many reach it with ≤ 4 sources, and the share of
  categories whose strongest source is the *same* category of the other model (nothing tells
  the solver which categories correspond; the names are only compared here);

then, per pairing, the bar of issue 12 at the best α of those measured whose median target has
≤ 16 sources (within) or ≤ 32 (between), and five dependencies to check by eye.

Without ``--alpha``, each pairing's α are read off its cached α path (the grid the dashboard's
slider shows), so the figures land on the values a user can select.
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
from engine.commands.demo import DEMO_PAIRS, DEMO_STORES  # noqa: E402
from engine.storage.layout import DEFAULT_CACHE  # noqa: E402

MODELS = DEMO_STORES
PAIRINGS = (*((m, None) for m in DEMO_STORES), *DEMO_PAIRS)  # (targets, sources; None: within)
EXAMPLES = ("O", "é", "Q", "ñ", "l", "È", "ö", "0", "e", "1")
FIT_WITHIN, FIT_BETWEEN = 0.95, 0.90
MAX_MEDIAN_SOURCES = {True: 16, False: 32}  # issue 12's sparsity at which the bars are read
COUNTERPART_BAR = 0.75  # between models: the share whose strongest source is the same category


def report(cache: str, model: str, source: str | None, alpha: float) -> dict:
    """The CLI's ``dependencies`` JSON for every target at one α."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        args = ["--cache", cache, "dependencies", "--model", model, "--alpha", repr(alpha), "--json", out.name]
        if source:
            args += ["--source", source]
        if cli_main(args) != 0:
            raise SystemExit(f"dependencies failed for {model} <- {source or model} at α = {alpha}")
        return json.loads(Path(out.name).read_text())


def first_word(name: str) -> str:
    return name.split(" ")[0]


def formula(t: dict, n: int = 4) -> str:
    terms = t["sources"][:n]  # strongest first
    body = " ".join(f"{'−' if s['coef'] < 0 else '+'} {abs(s['coef']):.2f}·\"{first_word(s['name'])}\""
                    for s in terms).lstrip("+ ")
    more = len(t["sources"]) - n
    return f"\"{first_word(t['target_name'])}\" ≈ {body}" + (f" + … ({more} more)" if more > 0 else "")


def summarise(doc: dict) -> dict:
    """The figures of one (pairing, α) from the CLI's JSON."""
    targets = doc["targets"]
    within = doc["model"] == doc["source"]
    sizes = np.array([len(t["sources"]) for t in targets])
    r2 = np.array([np.nan if t["r2"] is None else t["r2"] for t in targets])
    lost = np.array([t["ori_acc"] - t["acc"] for t in targets])
    fit = FIT_WITHIN if within else FIT_BETWEEN
    ok = np.nan_to_num(r2, nan=-np.inf) >= fit
    row = {"model": doc["model"], "source": doc["source"], "alpha": doc["alpha"], "categories": len(targets),
           "median_sources": float(np.median(sizes)), "median_r2": float(np.nanmedian(r2)),
           "fit_r2": fit, "share_fit": float(ok.mean()), "fit_le4_sources": int((ok & (sizes <= 4)).sum()),
           "ori_acc": targets[0]["ori_acc"]}
    if within:
        row["share_fit_and_le_half_pt_lost"] = float((ok & (lost <= 0.5)).mean())
    else:
        row["share_counterpart_strongest"] = float(np.mean(
            [bool(t["sources"]) and t["sources"][0]["name"] == t["target_name"] for t in targets]))
    by_char = {first_word(t["target_name"]): t for t in targets}
    row["examples"] = [{"formula": formula(by_char[c]), "r2": by_char[c]["r2"], "rel_err": by_char[c]["rel_err"],
                        "acc_lost": round(by_char[c]["ori_acc"] - by_char[c]["acc"], 3)}
                       for c in EXAMPLES if c in by_char][:5]
    return row


def path_alphas(cache: str, model: str, source: str | None, every: int = 1) -> list[float]:
    """Every ``every``-th α of the pairing's cached path (the dashboard slider's grid)."""
    from engine.stages.alpha_paths import load_or_compute_path
    from engine.stages.pairing import open_pairing
    from engine.storage.store import Cache

    c = Cache(cache)
    path = load_or_compute_path(c, open_pairing(c, model, source))
    return [float(a) for a in path.alphas[::every]]


def bar(rows: list[dict]) -> dict | None:
    """The best row among those sparse enough for issue 12's bar: within a model, the most
    categories fitting; between models, the highest median R² among the α where the counterpart
    is the strongest source for ≥ 75 % of categories (the bar asks both at one α), else overall."""
    within = rows[0]["model"] == rows[0]["source"]
    sparse = [r for r in rows if r["median_sources"] <= MAX_MEDIAN_SOURCES[within]]
    if not sparse:
        return None
    if within:
        return max(sparse, key=lambda r: r["share_fit_and_le_half_pt_lost"])
    return max(sparse, key=lambda r: (r["share_counterpart_strongest"] >= COUNTERPART_BAR, r["median_r2"]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=str(DEFAULT_CACHE))
    ap.add_argument("--alpha", type=float, action="append", help="repeatable (default: the cached path's grid)")
    ap.add_argument("--out", default=None, help="append JSON lines here")
    ap.add_argument("--pairing", action="append", metavar="TARGETS[<-SOURCE]",
                    help="repeatable, e.g. 'glyph-vgg<-glyph-resnet' (default: every demo pairing)")
    args = ap.parse_args(argv)
    pairings = PAIRINGS
    if args.pairing:
        pairings = [(targets.strip(), source.strip() or None)
                    for targets, _, source in (p.partition("<-") for p in args.pairing)]
    for model, source in pairings:
        alphas = args.alpha or path_alphas(args.cache, model, source)
        rows = []
        for alpha in alphas:
            row = summarise(report(args.cache, model, source, alpha))
            rows.append(row)
            line = json.dumps(row, ensure_ascii=False)
            print(line, flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(line + "\n")
        best = bar(rows)
        print(json.dumps({"bar": f"{model} <- {source or model}",
                          "at": {k: v for k, v in (best or {}).items() if k != "examples"}},
                         ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
