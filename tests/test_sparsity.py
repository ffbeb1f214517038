"""The best-subset and relaxed-Lasso stages (engine.stages.sparsity), the CLI's --sources and --relaxed,
and the best-subsets job: cached per pairing and per target subset, metrics that agree with a
recomputation from the stored logits, bad input that leaves the cache as it was."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main
from engine.core.analysis import Top2, r_squared
from engine.core.bestsubset import best_subsets
from engine.core.synthetic import classifier_like_logits
from engine.jobs import foreground_context, spec_from_dict
from engine.jobs.analysis_jobs import run_best_subsets
from engine.stages.pairing import open_pairing
from engine.stages.sparsity import (
    has_all_best_subsets,
    relaxed_dependencies,
    solve_best_subsets,
    sources_curve,
)


@pytest.fixture
def stores(cache):
    F, y = classifier_like_logits(1500, 30, rank=10, seed=3)
    cache.save_store("a", F, y, class_names=[f"c{i}" for i in range(30)])
    G = (F @ np.random.default_rng(2).normal(size=(30, 30)) * 0.3).astype(np.float32)
    cache.save_store("b", G, y)
    return cache, F.astype(np.float64), G.astype(np.float64), y


def _derived(cache, kind: str) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in Path(cache.derived_dir).glob(f"{kind}-*.json")}


def test_best_subsets_are_cached_per_pairing_and_per_subset(stores):
    cache, F, G, y = stores
    pairing = open_pairing(cache, "a")
    some = solve_best_subsets(cache, pairing, 4, [5, 2])
    assert len(_derived(cache, "best-subset-targets")) == 1 and not has_all_best_subsets(cache, pairing)
    again = solve_best_subsets(cache, pairing, 4, [5, 2])
    np.testing.assert_array_equal(again.residual, some.residual)
    assert len(_derived(cache, "best-subset-targets")) == 1
    every = solve_best_subsets(cache, pairing)  # all targets, m = 1 … 8, one entry
    assert has_all_best_subsets(cache, pairing) and every.residual.shape == (30, 8)
    np.testing.assert_allclose(every.residual[[5, 2], :4], some.residual, rtol=1e-10)
    before = _derived(cache, "best-subset")
    solve_best_subsets(cache, pairing, 3, [7])  # read from the all-target entry
    assert _derived(cache, "best-subset") == before and len(_derived(cache, "best-subset-targets")) == 1
    # between models: the pure solve on the pair's Grams
    pair = solve_best_subsets(cache, open_pairing(cache, "b", "a"), 2, [0, 29])
    ref = best_subsets(F.T @ F / len(F), (F.T @ G / len(F))[:, [0, 29]], np.mean(G[:, [0, 29]] ** 2, 0), 8)
    np.testing.assert_allclose(pair.residual, ref.residual[:, :2], rtol=1e-6)


def test_relaxed_lasso_is_least_squares_on_the_lasso_support(stores):
    from engine.stages.solutions import solve_dependencies

    cache, F, *_ = stores
    pairing = open_pairing(cache, "a")
    lasso = solve_dependencies(cache, pairing, 0.5, targets=[4, 11])
    fits = relaxed_dependencies(cache, pairing, 0.5, [4, 11])
    for i, t in enumerate((4, 11)):
        support = np.flatnonzero(lasso.column(i))
        src, coef = fits.coef.column(i)
        assert set(src) <= set(support) and fits.lasso_sources[i] == len(support)
        ref, *_ = np.linalg.lstsq(F[:, support], F[:, t], rcond=None)
        assert fits.residual[i] == pytest.approx(np.mean((F[:, t] - F[:, support] @ ref) ** 2), rel=1e-6)
        assert fits.residual[i] <= np.mean((F[:, t] - F @ lasso.column(i)) ** 2)  # no shrinkage: no worse


def test_sources_curve_is_one_cached_call_for_three_methods(stores):
    cache, F, G, y = stores
    pairing = open_pairing(cache, "a")
    curve = sources_curve(cache, pairing, 6, max_sources=5)
    assert list(curve.m) == [1, 2, 3, 4, 5] and len(curve.best) == 5
    for m, fit in zip(curve.m, curve.best):
        assert len(fit.sources) <= m and 6 not in fit.sources
        assert list(np.abs(fit.coefs)) == sorted(np.abs(fit.coefs), reverse=True)  # strongest first
        assert fit.r2 == pytest.approx(r_squared(F[:, 6], F[:, fit.sources] @ fit.coefs), abs=1e-6)
    assert np.all(np.diff(curve.best_r2) >= -1e-9)
    assert len(curve.alphas) == len(curve.lasso_n) == len(curve.relaxed_r2) > 3
    assert np.all(curve.relaxed_n <= curve.lasso_n)
    ok = ~np.isnan(curve.relaxed_r2)
    assert np.all(curve.relaxed_r2[ok] >= curve.lasso_r2[ok] - 1e-9)  # least squares on the same support
    before = _derived(cache, "sources-curve")
    again = sources_curve(cache, pairing, 6, max_sources=5)
    assert _derived(cache, "sources-curve") == before
    np.testing.assert_array_equal(again.best_r2, curve.best_r2)
    assert again.sparsest_fit() == curve.sparsest_fit()
    given = sources_curve(cache, pairing, 6, max_sources=5, alphas=[0.5, 0.05])
    assert list(given.alphas) == [0.5, 0.05]


def test_best_subsets_job_caches_every_target(stores):
    cache, *_ = stores
    spec = spec_from_dict("best-subsets", {"model": "b", "source": "a", "max_sources": 8})
    run_best_subsets(spec, foreground_context(cache, "best-subsets", spec))
    assert has_all_best_subsets(cache, open_pairing(cache, "b", "a"))
    with pytest.raises(Exception, match="max_sources"):
        spec_from_dict("best-subsets", {"model": "b", "max_sources": 0})


# ----------------------------------------------------------------------------- the CLI


@dataclass
class _Run:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys):
    """The CLI in this process (fast; tests/test_cli.py runs the real `python -m engine`)."""

    def run(cache, *args) -> _Run:
        code = main(["--cache", str(cache.root), *map(str, args)])
        out = capsys.readouterr()
        return _Run(code, out.out, out.err)

    return run


def test_cli_best_subset_json_agrees_with_the_logits(cli, stores, tmp_path):
    """The R² and accuracies of the JSON, recomputed from the stored logits and the returned
    coefficients (to 1e-6); the contract's fields are all there, with method and m."""
    cache, F, G, y = stores
    out = cli(cache, "dependencies", "--model", "b", "--source", "a", "--sources", "3", "--json", tmp_path / "b.json")
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["method"] == "best-subset" and doc["m"] == 3 and doc["alpha"] is None and len(doc["targets"]) == 30
    store_b, store_a = cache.load_store("b"), cache.load_store("a")
    Gb, Fa = np.asarray(store_b.logits, np.float64), np.asarray(store_a.logits, np.float64)
    top = Top2.of(store_b.logits)
    for row in doc["targets"]:
        t = row["target"]
        assert {"sources", "abs_err", "rel_err", "r2", "acc", "ori_acc", "pos_acc", "ori_pos_acc", "n_pos",
                "r2_by_m"} <= set(row) and 1 <= len(row["sources"]) <= 3
        idx = [s["index"] for s in row["sources"]]
        coef = np.array([s["coef"] for s in row["sources"]])
        assert list(np.abs(coef)) == sorted(np.abs(coef), reverse=True)
        rep = Fa[:, idx] @ coef
        assert row["r2"] == pytest.approx(r_squared(Gb[:, t], rep), abs=1e-6)
        assert row["r2_by_m"][-1] == pytest.approx(row["r2"], abs=1e-6)
        assert row["abs_err"] == pytest.approx(np.mean(np.abs(Gb[:, t] - rep)), rel=1e-6)
        replaced = Gb.copy()
        replaced[:, t] = rep
        pred = np.argmax(replaced, 1)
        assert row["acc"] == pytest.approx(100 * np.mean(pred == y), abs=1e-6)
        assert row["ori_acc"] == pytest.approx(100 * np.mean(top.pred == y), abs=1e-6)
        pos = y == t
        if pos.any():
            assert row["pos_acc"] == pytest.approx(100 * np.mean(pred[pos] == t), abs=1e-6)


def test_cli_methods_and_table(cli, stores, tmp_path):
    cache, *_ = stores
    lasso = cli(cache, "dependencies", "--model", "a", "--alpha", "0.5", "--target", "3", "--json", "-")
    doc = json.loads(lasso.stdout)
    assert doc["method"] == "covlasso" and "duality_gap" in doc["targets"][0] and "m" not in doc
    relaxed = json.loads(cli(cache, "dependencies", "--model", "a", "--alpha", "0.5", "--relaxed",
                              "--target", "3", "--json", "-").stdout)
    assert relaxed["method"] == "relaxed" and relaxed["alpha"] == 0.5
    row = relaxed["targets"][0]
    assert row["lasso_n_sources"] == len(doc["targets"][0]["sources"]) and row["r2"] >= doc["targets"][0]["r2"] - 1e-9
    table = cli(cache, "dependencies", "--model", "a", "--sources", "2", "--target", "c3", "c4")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert "best subset with at most 2 sources" in lines[0] and len(lines) == 4
    assert "c3 ≈" in lines[2] and "R²" in lines[1] and "Pos Acc" in lines[1]


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["--sources", "0"], "got '0'"),
        (["--sources", "10000"], "got '10000'"),
        (["--sources", "2.5"], "got '2.5'"),
        (["--sources", "four"], "got 'four'"),
        (["--sources", "4", "--alpha", "2.5"], "takes no α"),
        (["--sources", "4", "--relaxed"], "takes no α"),
        (["--relaxed"], "give --alpha"),
        ([], "give --alpha A"),
    ],
)
def test_cli_bad_method_input_is_one_line_and_leaves_the_cache_alone(cli, stores, args, pattern):
    cache, *_ = stores
    files = sorted(p for p in Path(cache.root).rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in files}
    out = cli(cache, "dependencies", "--model", "a", *args, "--json", "-")
    assert out.returncode == 2 and pattern in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    after = {p: p.stat().st_mtime_ns for p in sorted(p for p in Path(cache.root).rglob("*") if p.is_file())}
    assert after == before


def test_stores_columns_line_up_for_long_names(cli, cache):
    F, y = classifier_like_logits(50, 4, rank=2, seed=0)
    cache.save_store("a-store-with-a-name-far-longer-than-twenty-four", F, y)
    cache.save_store("b", F, y)
    lines = cli(cache, "stores").stdout.splitlines()
    starts = [line.index(" " * 2 + str(50)) if str(50) in line else None for line in lines[1:]]
    assert len(set(starts)) == 1 and lines[0].index("samples") < lines[1].index("50") + 2


def test_table1_many_is_table1_target_by_target(stores):
    from engine.core.analysis import dependency_metrics
    from engine.stages.sparsity import table1_many

    cache, *_ = stores
    pairing = open_pairing(cache, "b", "a")
    res = solve_best_subsets(cache, pairing, 3, [0, 9, 21])
    coef = res.at(3)
    top = Top2.of(pairing.model.logits)
    many = table1_many(pairing, [0, 9, 21], coef, top, block=2)
    for i, t in enumerate((0, 9, 21)):
        one = dependency_metrics(pairing.model.logits, pairing.source.logits, pairing.model.labels, t,
                                 coef.dense_column(i), top)
        for name in ("r2", "acc", "ori_acc", "pos_acc", "ori_pos_acc", "abs_err", "rel_err"):
            assert many[name][i] == pytest.approx(getattr(one, name), rel=1e-6, abs=1e-6, nan_ok=True), name
