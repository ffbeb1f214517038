"""The public CLI contract: import-logits, stores, dependencies (JSON schema, errors)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import Lasso
from sklearn.metrics import r2_score

from engine.cli import COMMANDS, build_parser, main
from engine.core.synthetic import classifier_like_logits

ROOT = Path(__file__).resolve().parents[1]


class _Run:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def run_cli(capsys):
    """The CLI in this process (fast); test_module_entry_point runs the real `python -m engine`."""

    def run(cache, *args):
        code = main(["--cache", str(cache), *map(str, args)])
        out = capsys.readouterr()
        return _Run(code, out.out, out.err)

    return run


def test_module_entry_point(tmp_path, files):
    d, *_ = files
    out = subprocess.run(
        [sys.executable, "-m", "engine", "--cache", str(tmp_path), "import-logits", str(d / "a.npz"), "--name", "a"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("a\t1200 x 25")
    bad = subprocess.run(
        [sys.executable, "-m", "engine", "--cache", str(tmp_path), "dependencies", "--model", "zz", "--alpha", "1", "--json", "-"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert bad.returncode == 2 and "no store named 'zz'" in bad.stderr and "Traceback" not in bad.stderr


def test_command_table_matches_the_modules():
    """cli.COMMANDS names what each module registers, so a command can import its module alone."""
    import argparse
    import importlib

    for module, names in COMMANDS.items():
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module).register(sub)
        assert tuple(sub.choices) == names, module
    every = build_parser()._subparsers._group_actions[0].choices
    assert sorted(every) == sorted(n for names in COMMANDS.values() for n in names)


def test_dependencies_never_imports_the_training_stack(tmp_path, files):
    """`dependencies` imports its own command module only: timm and torchvision (seconds at
    start-up, the larger part of a fresh process's time at 21,843 categories) stay out."""
    d, *_ = files
    assert main(["--cache", str(tmp_path), "import-logits", str(d / "a.npz"), "--name", "a"]) == 0
    script = ("import sys; from engine.cli import main; "
              f"code = main(['--cache', {str(tmp_path)!r}, 'dependencies', '--model', 'a', '--alpha', '0.05', "
              "'--target', '3', '--json', '-']); "
              "print('LOADED', code, sorted(m for m in ('timm', 'torchvision', 'engine.train.classifier') "
              "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "LOADED 0 []"
    assert json.loads("\n".join(out.stdout.splitlines()[:-1]))["targets"][0]["target"] == 3


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    F, y = classifier_like_logits(1200, 25, rank=8, seed=5)
    names = np.array([f"class-{i}" for i in range(25)])
    np.savez(d / "a.npz", logits=F, labels=y, class_names=names)
    G = F @ np.random.default_rng(1).normal(size=(25, 25)) * 0.3
    np.savez(d / "b.npz", logits=G.astype(np.float32), labels=y)
    np.savez(d / "shuffled.npz", logits=F[::-1].copy(), labels=y[::-1].copy())
    return d, F, G, y


def test_import_prints_name_and_shape(run_cli, tmp_path, files):
    d, *_ = files
    out = run_cli(tmp_path, "import-logits", d / "a.npz", "--name", "a")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\t")[:2] == ["a", "1200 x 25"]
    listing = run_cli(tmp_path, "stores")
    assert "a" in listing.stdout and "1200" in listing.stdout


def test_dependencies_json_within_and_between(run_cli, tmp_path, files):
    d, F, G, y = files
    run_cli(tmp_path, "import-logits", d / "a.npz", "--name", "a")
    run_cli(tmp_path, "import-logits", d / "b.npz", "--name", "b")
    out = run_cli(tmp_path, "dependencies", "--model", "a", "--alpha", "0.05", "--json", tmp_path / "w.json")
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "w.json").read_text())
    assert doc["alpha"] == 0.05 and doc["model"] == "a" and doc["source"] == "a"
    assert len(doc["targets"]) == 25
    t3 = doc["targets"][3]
    assert set(t3) >= {"target", "target_name", "sources", "abs_err", "rel_err", "acc", "ori_acc",
                       "pos_acc", "ori_pos_acc", "duality_gap"}
    assert t3["target_name"] == "class-3"
    ref = Lasso(alpha=0.05, fit_intercept=False, tol=1e-12, max_iter=100000).fit(
        np.delete(F.astype(np.float64), 3, 1), F[:, 3].astype(np.float64))
    ref_full = np.insert(ref.coef_, 3, 0.0)
    got = {s["index"]: s["coef"] for s in t3["sources"]}
    assert set(got) == set(np.flatnonzero(ref_full).tolist())
    for j, v in got.items():
        assert v == pytest.approx(ref_full[j], abs=1e-6)
    # R² of the replaced logit, against scikit-learn's r2_score of the reference fit
    pred = np.delete(F.astype(np.float64), 3, 1) @ ref.coef_
    assert t3["r2"] == pytest.approx(r2_score(F[:, 3].astype(np.float64), pred), abs=1e-6)
    assert "r2_reason" not in t3
    # between networks, selected targets given by index and by name
    out = run_cli(tmp_path, "dependencies", "--model", "b", "--source", "a", "--alpha", "0.05",
                  "--target", "2", "7", "--json", "-")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert [t["target"] for t in doc["targets"]] == [2, 7] and doc["source"] == "a"
    m = Lasso(alpha=0.05, fit_intercept=False, tol=1e-12, max_iter=100000).fit(
        F.astype(np.float64), G[:, 7].astype(np.float32).astype(np.float64))
    got = {s["index"]: s["coef"] for s in doc["targets"][1]["sources"]}
    assert set(got) == set(np.flatnonzero(m.coef_).tolist())
    named = run_cli(tmp_path, "dependencies", "--model", "a", "--alpha", "0.05", "--target", "class-4", "--json", "-")
    assert json.loads(named.stdout)["targets"][0]["target"] == 4


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["dependencies", "--model", "nope", "--alpha", "1", "--json", "-"], "no store named 'nope'"),
        (["dependencies", "--model", "a", "--alpha", "0", "--json", "-"], "alpha must be finite and > 0"),
        (["dependencies", "--model", "a", "--alpha", "-2", "--json", "-"], "alpha"),
        (["dependencies", "--model", "a", "--alpha", "nan", "--json", "-"], "alpha"),
        (["dependencies", "--model", "a", "--alpha", "inf", "--json", "-"], "alpha"),
        (["dependencies", "--model", "a", "--alpha", "1", "--target", "99", "--json", "-"], "out of range"),
        (["dependencies", "--model", "a", "--alpha", "1", "--target", "zebra", "--json", "-"], "no category named"),
        (["dependencies", "--model", "a", "--source", "shuffled", "--alpha", "1", "--json", "-"], "same samples"),
        (["import-logits", "missing.npz", "--name", "x"], "no such file"),
        (["import-logits", "a.npz", "--name", "../x"], "invalid store name"),
    ],
)
def test_bad_input_gives_one_line_error(run_cli, tmp_path, files, args, pattern):
    d, *_ = files
    run_cli(tmp_path, "import-logits", d / "a.npz", "--name", "a")
    run_cli(tmp_path, "import-logits", d / "shuffled.npz", "--name", "shuffled")
    args = [str(d / a) if a.endswith(".npz") else a for a in args]
    out = run_cli(tmp_path, *args)
    assert out.returncode == 2
    assert pattern in out.stderr
    assert "Traceback" not in out.stderr


def test_second_request_is_a_cache_hit(run_cli, tmp_path, files):
    d, *_ = files
    run_cli(tmp_path, "import-logits", d / "a.npz", "--name", "a")
    run_cli(tmp_path, "dependencies", "--model", "a", "--alpha", "0.1", "--json", tmp_path / "1.json")
    solutions = sorted((tmp_path / "derived").glob("solution-*.json"))
    assert len(solutions) == 1
    before = solutions[0].stat().st_mtime_ns
    run_cli(tmp_path, "dependencies", "--model", "a", "--alpha", "0.1", "--json", tmp_path / "2.json")
    assert solutions[0].stat().st_mtime_ns == before
    assert (tmp_path / "1.json").read_text() == (tmp_path / "2.json").read_text()
