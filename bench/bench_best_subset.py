"""How many sources fit: best subset, relaxed Lasso and the paper's Lasso, per pairing and per m.

    python -m bench.bench_best_subset --cache cache            # the demo's stores (after `engine demo`)
    python -m bench.bench_best_subset --cache cache --massive 21843   # + one target at K = 21,843

For every pairing of the demo (within each model, and the four pairs between them) and every
m = 1 … 8, over all 1,000 categories:

* **best subset**: the cached all-target solution (engine.stages.sparsity.solve_best_subsets);
* **Lasso**: along the target's cached α path, the point with at most m sources and the
  highest R² (the Lasso's best dependency with ≤ m sources, over its whole path);
* **relaxed Lasso**: least squares on the Lasso's support at each such point, the best R².

Per method: the share of categories that *fit* (R² ≥ 0.95 and at most 0.5 pt of top-1 lost,
the Table 1 metrics with the replaced logit from the stored logits, computed for the
categories at R² ≥ 0.95 from the Grams), the median R² (from the Grams), the median Pos Acc
lost among the fits, and between the two seeds the share whose strongest source is its own
counterpart (the same category of the other seed).

**Speed**, in the same process: every target × m = 1 … 8 by engine.core.bestsubset (default: 4
starts, chunks of targets in threads, one per core; 4 starts in one thread; and 1 start) against scikit-learn's ``orthogonal_mp_gram`` in a loop over targets
(``return_path=True``: m = 1 … 8 in one call; within a model each call gets the Gram with the
target's row and column removed, a copy). Wall and CPU seconds and the load average are
reported: this machine is shared, so compare ratios. ``--massive K``: per-target solves on a
K-category Gram (engine.core.synthetic's population Gram, a memory map as the cache holds it).

Writes bench/results/best-subset.json and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SEEDS = ("glyph-vgg", "glyph-vgg-seed2")


def _load() -> float:
    return float(os.getloadavg()[0])


def _pairings():
    from engine.commands.demo import DEMO_PAIRS, DEMO_STORES

    between = sorted(DEMO_PAIRS, key=lambda p: set(p) != set(SEEDS))  # the two seeds first
    return [(s, s) for s in DEMO_STORES] + [tuple(p) for p in between]


def _lasso_choices(path, gs, M: int):
    """Per m: (T,) columns of ``path.coef`` (t·A + a) of the Lasso's best R² with ≤ m sources,
    and of the relaxed refits (−1: none), the refits' SparseColumns, and the R² of each choice."""
    from engine.stages.sparsity import r2_of_residuals, relaxed_fits

    T, A = len(path.targets), len(path.alphas)
    sizes = path.support_sizes  # (T, A)
    on_path = np.arange(A)[None, :] < path.n_alphas[:, None]
    cand = on_path & (sizes >= 1) & (sizes <= M)
    tt, aa = np.nonzero(cand)
    relaxed = relaxed_fits(gs, path.coef.select(tt * A + aa), path.targets[tt])
    rel_r2 = np.full((T, A), -np.inf)
    rel_r2[tt, aa] = np.nan_to_num(r2_of_residuals(gs, path.targets[tt], relaxed.residual), nan=-np.inf)
    lasso_r2 = np.where(cand, np.nan_to_num(path.r2, nan=-np.inf), -np.inf)
    where = np.full((T, A), -1)
    where[tt, aa] = np.arange(len(tt))
    out, rows = {}, np.arange(T)
    for m in range(1, M + 1):
        ok = cand & (sizes <= m)
        la = np.argmax(np.where(ok, lasso_r2, -np.inf), 1)
        ra = np.argmax(np.where(ok, rel_r2, -np.inf), 1)
        has = ok.any(1)
        out[m] = {"Lasso": (np.where(has, rows * A + la, -1), np.where(has, lasso_r2[rows, la], np.nan)),
                  "relaxed Lasso": (np.where(has, where[rows, ra], -1), np.where(has, rel_r2[rows, ra], np.nan))}
    return out, relaxed.coef


def _columns(coef, picks: np.ndarray):
    """The columns ``picks`` of ``coef`` (−1: an empty column)."""
    from engine.core.sparse import SparseColumns

    padded = SparseColumns.concat([coef, SparseColumns.empty(1, coef.n_sources)])
    return padded.select(np.where(picks >= 0, picks, coef.n_targets))


def _strongest(coef) -> np.ndarray:
    out = np.full(coef.n_targets, -1)
    col = coef.column_index()
    order = np.lexsort((-np.abs(coef.values), col))
    has = coef.support_sizes > 0
    out[has] = coef.sources[order[np.searchsorted(col[order], np.arange(coef.n_targets))[has]]]
    return out


def _summary(r2: np.ndarray, coef, metrics: dict, near: np.ndarray, counterpart: bool) -> dict:
    """``r2``: (T,) from the Grams; ``metrics``: table1_many of the ``near`` targets (R² ≥ 0.95)."""
    lost = metrics["ori_acc"] - metrics["acc"]
    fits = (metrics["r2"] >= 0.95) & (lost <= 0.5)
    pos_lost = (metrics["ori_pos_acc"] - metrics["pos_acc"])[fits]
    out = {"fit": float(fits.sum() / len(r2)), "median_r2": float(np.median(np.nan_to_num(r2, nan=-1.0))),
           "r2_at_least_0.95": float(near.mean()),
           "median_pos_acc_lost_fits": float(np.nanmedian(pos_lost)) if fits.any() else None,
           "median_sources": float(np.median(coef.support_sizes))}
    if counterpart:
        out["counterpart_strongest"] = float(np.mean(_strongest(coef) == np.arange(len(r2))))
    return out


def bench_pairing(cache, model: str, source: str, M: int = 8) -> dict:
    """Per m and method: R² of every category from the Grams; Table 1 metrics (Acc, Pos Acc from
    the stored logits) of those at R² ≥ 0.95, the candidates to fit."""
    from engine.stages.alpha_paths import compute_all_paths, path_spec
    from engine.stages.gramsets import load_gramset
    from engine.stages.pairing import open_pairing
    from engine.stages.solutions import load_top2
    from engine.stages.sparsity import (
        logits_by_category,
        r2_of_residuals,
        solve_best_subsets,
        table1_many,
    )

    pairing = open_pairing(cache, model, source)
    gs = load_gramset(cache, pairing)
    top2 = load_top2(cache, pairing.model)
    t0 = time.perf_counter()
    best = solve_best_subsets(cache, pairing, M)
    t_best = time.perf_counter() - t0
    targets = np.arange(pairing.model.k)
    best_r2 = r2_of_residuals(gs, targets, best.residual)
    path = compute_all_paths(cache, path_spec(cache, pairing))
    choices, relaxed = _lasso_choices(path, gs, M)
    counterpart = {model, source} == set(SEEDS)
    own = logits_by_category(pairing.model)
    by_category = (own, own if pairing.within else logits_by_category(pairing.source))
    rows = []
    for m in range(1, M + 1):
        for method, coef, r2 in (("best subset", best.at(m), best_r2[:, m - 1]),
                                 ("relaxed Lasso", _columns(relaxed, choices[m]["relaxed Lasso"][0]),
                                  choices[m]["relaxed Lasso"][1]),
                                 ("Lasso", _columns(path.coef, choices[m]["Lasso"][0]), choices[m]["Lasso"][1])):
            near = np.nan_to_num(r2, nan=-1.0) >= 0.95
            metrics = table1_many(pairing, targets[near], coef.select(np.flatnonzero(near)), top2,
                                  by_category=by_category) if near.any() else \
                {k: np.zeros(0) for k in ("r2", "acc", "ori_acc", "pos_acc", "ori_pos_acc")}
            rows.append({"m": m, "method": method, **_summary(r2, coef, metrics, near, counterpart)})
    return {"model": model, "source": source, "best_subset_seconds": t_best, "rows": rows}


def bench_disagreement(cache, model: str, source: str, ms=(4, 6), alpha: float = 2.5) -> dict:
    """Where the Lasso and the best subset disagree: per m, the mean share of the best
    subset's sources that are in the Lasso's best ≤ m-source point of its path, and the share
    of categories whose strongest source is the same (against that point, and against the
    Lasso at the paper's α)."""
    from engine.stages.alpha_paths import compute_all_paths, path_spec
    from engine.stages.pairing import open_pairing
    from engine.stages.solutions import solve_dependencies
    from engine.stages.sparsity import solve_best_subsets

    pairing = open_pairing(cache, model, source)
    best = solve_best_subsets(cache, pairing)
    path = compute_all_paths(cache, path_spec(cache, pairing))
    paper = solve_dependencies(cache, pairing, alpha).sparse
    A, sizes = len(path.alphas), path.support_sizes
    out = {"model": model, "source": source}
    for m in ms:
        shared, same, same_paper = [], [], []
        for t in range(pairing.model.k):
            S, c = best.column(t, m)
            ok = (np.arange(A) < path.n_alphas[t]) & (sizes[t] <= m) & (sizes[t] >= 1)
            top = S[np.argmax(np.abs(c))]
            ps, pc = paper.column(t)
            if len(ps):
                same_paper.append(top == ps[np.argmax(np.abs(pc))])
            if ok.any():
                a = int(np.argmax(np.where(ok, np.nan_to_num(path.r2[t], nan=-9.0), -9.0)))
                ls, lc = path.coef.column(t * A + a)
                shared.append(len(set(S.tolist()) & set(ls.tolist())) / len(S))
                same.append(top == ls[np.argmax(np.abs(lc))])
        out[m] = {"sources_shared": float(np.mean(shared)), "same_strongest": float(np.mean(same)),
                  f"same_strongest_as_lasso_at_{alpha:g}": float(np.mean(same_paper))}
    return out


# ----------------------------------------------------------------------------- speed


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def bench_speed(cache, model: str, source: str, M: int = 8) -> dict:
    from sklearn.linear_model import orthogonal_mp_gram

    from engine.core.bestsubset import SubsetConfig
    from engine.stages.gramsets import load_gramset
    from engine.stages.pairing import open_pairing
    from engine.stages.sparsity import best_subsets_of

    gs = load_gramset(cache, open_pairing(cache, model, source))
    G = np.array(gs.design)
    mem = type(gs)(G, gs.target_sq, gs.n, None if gs.within else np.array(gs.cross_t), gs.alpha_max,
                   gs.target_mean, gs.design_diag)
    T = gs.n_targets
    best_subsets_of(mem, M, None, [0, 1])  # warm-up (torch's first call)

    def omp_loop():
        out = np.zeros(T)
        rhs = np.asarray(mem.rhs)
        for t in range(T):
            if gs.within:
                keep = np.arange(T) != t
                coefs = orthogonal_mp_gram(G[np.ix_(keep, keep)], rhs[keep, t], n_nonzero_coefs=M, return_path=True)
                out[t] = coefs[0, -1] if coefs.ndim == 2 else coefs[0]
            else:
                coefs = orthogonal_mp_gram(G, rhs[:, t], n_nonzero_coefs=M, return_path=True)
                out[t] = coefs[0, -1] if coefs.ndim == 2 else coefs[0]
        return out

    out = {"pairing": f"{model} <- {source}", "targets": T, "M": M, "load_before": _load()}
    for name, cfg in (("best subset (4 starts, default)", SubsetConfig()),
                      ("best subset (4 starts, 1 thread)", SubsetConfig(threads=1)),
                      ("best subset (1 start)", SubsetConfig(starts=1))):
        _, wall, cpu = _timed(lambda cfg=cfg: best_subsets_of(mem, M, cfg))
        out[name] = {"wall_s": wall, "cpu_s": cpu}
    _, wall, cpu = _timed(omp_loop)
    out["scikit-learn OMP loop"] = {"wall_s": wall, "cpu_s": cpu}
    out["load_after"] = _load()
    return out


def bench_massive(k: int, targets=(0, 1, 2, 3, 4)) -> dict:
    """Per-target best subsets (m = 1 … 8) on a K-category Gram held as a memory map."""
    from engine.core.bestsubset import best_subsets
    from engine.core.synthetic import classifier_like_gram

    with tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
        path = Path(tmp) / "gram.npy"
        G = classifier_like_gram(k)
        np.save(path, G)
        diag = np.diagonal(G).copy()
        del G
        mapped = np.load(path, mmap_mode="r")
        times = []
        for t in targets:
            t = int(t)
            _, wall, cpu = _timed(lambda t=t: best_subsets(mapped, np.asarray(mapped[t])[:, None].copy(),
                                                           diag[[t]], 8, forbid=np.array([t]), design_diag=diag,
                                                           check_input=False))
            times.append({"target": t, "wall_s": wall, "cpu_s": cpu, "load": _load()})
        return {"k": k, "gram_gib": 8 * k * k / 2**30, "per_target": times}


# ----------------------------------------------------------------------------- report


def _markdown(results: dict) -> str:
    lines = []
    for p in results["pairings"]:
        lines += [f"\n### {p['model']} ← {p['source']}\n",
                  "| m | method | fit | R² ≥ 0.95 | median R² | median Pos Acc lost (fits) | counterpart strongest |",
                  "|---:|---|---:|---:|---:|---:|---:|"]
        for r in p["rows"]:
            cp = f"{100 * r['counterpart_strongest']:.0f} %" if "counterpart_strongest" in r else "–"
            fits = "–" if r["median_pos_acc_lost_fits"] is None else f"{r['median_pos_acc_lost_fits']:.1f}"
            lines.append(f"| {r['m']} | {r['method']} | {100 * r['fit']:.1f} % | {100 * r['r2_at_least_0.95']:.1f} % | "
                         f"{r['median_r2']:.3f} | {fits} | {cp} |")
    for s in results.get("speed", []):
        lines += [f"\n### speed: {s['pairing']}, {s['targets']} targets × m = 1 … {s['M']} "
                  f"(load {s['load_before']:.1f} → {s['load_after']:.1f})\n",
                  "| solver | wall s | CPU s |", "|---|---:|---:|"]
        for name in ("best subset (4 starts, default)", "best subset (4 starts, 1 thread)", "best subset (1 start)",
                     "scikit-learn OMP loop"):
            if name not in s:  # (results of an earlier version)
                continue
            lines.append(f"| {name} | {s[name]['wall_s']:.2f} | {s[name]['cpu_s']:.2f} |")
    if "massive" in results:
        mm = results["massive"]
        lines += [f"\n### one target at K = {mm['k']:,} (Gram {mm['gram_gib']:.1f} GiB, memory-mapped)\n",
                  "| target | wall s | CPU s | load |", "|---:|---:|---:|---:|"]
        lines += [f"| {t['target']} | {t['wall_s']:.3f} | {t['cpu_s']:.3f} | {t['load']:.1f} |" for t in mm["per_target"]]
    return "\n".join(lines)


def main(argv=None) -> None:
    from engine.storage.store import Cache

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default="cache")
    ap.add_argument("--massive", type=int, default=0, help="also time one target at this many categories")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--only", nargs="*", help="pairings as MODEL:SOURCE (default: the demo's seven)")
    ap.add_argument("--disagreement-only", action="store_true", help="only where the Lasso and best subset disagree")
    args = ap.parse_args(argv)
    cache = Cache(args.cache)
    RESULTS.mkdir(parents=True, exist_ok=True)
    pairs = [tuple(p.split(":")) for p in args.only] if args.only else _pairings()
    if args.disagreement_only:
        for model, source in pairs:
            print(json.dumps(bench_disagreement(cache, model, source)), flush=True)
        return
    results = {"pairings": [], "speed": []}
    if not args.no_speed:
        for model, source in (("glyph-vgg", "glyph-vgg"), ("glyph-vgg", "glyph-vgg-seed2")):
            results["speed"].append(bench_speed(cache, model, source))
            print(json.dumps(results["speed"][-1]), flush=True)
    for model, source in pairs:
        results["pairings"].append(bench_pairing(cache, model, source))
        (RESULTS / "best-subset.json").write_text(json.dumps(results, indent=1))  # as it goes
        print(_markdown({"pairings": results["pairings"][-1:]}), f"\n(load {_load():.1f})", flush=True)
    results["disagreement"] = [bench_disagreement(cache, m, s) for m, s in pairs]
    if args.massive:
        results["massive"] = bench_massive(args.massive)
    (RESULTS / "best-subset.json").write_text(json.dumps(results, indent=1))
    print(_markdown(results))


if __name__ == "__main__":
    main()
