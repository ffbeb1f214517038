"""The engine's architecture, checked: the layers contract fails on a planted violation, the
modules loaded by name obey the same layers, each derived kind is declared once, and a cache
written before the engine moved into layers opens unchanged (docs/architecture.md)."""

from __future__ import annotations

import ast
import importlib
import json
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.run import LINT_IMPORTS

ROOT = Path(__file__).resolve().parent.parent
PREMOVE = ROOT / "tests" / "data" / "cache-premove"  # written by the engine of commit d063449
REPORTS = ROOT / "tests" / "data" / "premove-reports"  # its `dependencies --json` outputs


def _contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def layer_of(module: str) -> int | None:
    """The layer of ``module``, counted from the top (0: the CLI), as pyproject.toml lists them."""
    for rank, layer in enumerate(_contracts()["layers"]["layers"]):
        for package in (p.strip() for p in layer.split("|")):
            if module == package or module.startswith(package + "."):
                return rank
    return None


def _lint(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*LINT_IMPORTS, "--no-cache", "--no-logo"], cwd=tree, capture_output=True,
                          text=True, timeout=120)


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "engine", tree / "engine", ignore=shutil.ignore_patterns("__pycache__", "weights"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


@pytest.mark.parametrize("module, line, contract", [
    # the core reaching the cache (inside a function, where only a real import graph sees it)
    ("core/sparse.py", "def _planted():\n    from engine.storage.store import Cache\n    return Cache\n",
     "the core never imports the cache"),
    # training importing the stages' front door
    ("train/loop.py", "from engine.stages.solutions import solve_dependencies  # noqa\n",
     "training never imports the stages' front door"),
    # jobs importing the CLI
    ("jobs/table.py", "import engine.commands.jobs  # noqa\n", "jobs never import the CLI"),
    # the engine importing Streamlit
    ("apps/views.py", "import streamlit  # noqa\n", "the engine never imports Streamlit"),
])
def test_the_layers_contract_fails_on_a_planted_violation(tmp_path, module, line, contract):
    tree = _copy(tmp_path)
    clean = _lint(tree)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    path = tree / "engine" / module
    path.write_text(path.read_text() + "\n\n" + line)
    broken = _lint(tree)
    assert broken.returncode != 0
    out = " ".join(broken.stdout.split())
    assert f"{contract}" in out and "BROKEN" in out, out


def test_modules_loaded_by_name_obey_the_layers():
    """The CLI's command table, the job kinds' runners and the modules that register kinds are
    imported by name (importlib), which import-linter cannot see: check them here."""
    import engine
    from engine.cli import COMMANDS
    from engine.jobs.kinds import JOB_KINDS

    cli = layer_of("engine.cli")
    for module in COMMANDS:
        assert layer_of(module) == cli + 1, f"the CLI loads {module}, which is not a command module"
        assert importlib.util.find_spec(module) is not None
    jobs = layer_of("engine.jobs")
    for module in engine.JOB_KIND_MODULES:  # each registers into jobs, so it may import jobs
        assert layer_of(module) is not None and layer_of(module) <= jobs, module
    for kind in JOB_KINDS.values():
        owner = kind.spec.__module__  # who registered the kind owns its work
        assert owner in engine.JOB_KIND_MODULES, (kind.name, owner)
        module, function = kind.runner.split(":")
        assert layer_of(module) >= layer_of(owner), f"{kind.name}: {owner} runs {module}, a layer above it"
        assert layer_of(module) <= jobs or module.startswith("engine.train."), (kind.name, module)
        source = ast.parse(Path(importlib.util.find_spec(module).origin).read_text())
        assert function in {n.name for n in source.body if isinstance(n, ast.FunctionDef)}, kind.runner


def test_the_job_registry_has_every_kind_in_order():
    from engine.jobs.kinds import JOB_KINDS, get_kind

    assert list(JOB_KINDS) == ["newclasses", "regularizer", "extract", "gram", "paths", "best-subsets",
                               "atlas", "theory", "emergence", "zoo", "probe"]
    assert get_kind("emergence").spec.__module__ == "engine.train.specs"
    assert get_kind("paths").spec.__module__ == "engine.jobs.specs"


def test_each_derived_kind_is_declared_once_and_listed_by_the_cache(tmp_path):
    from engine.storage.store import Cache

    for module in ("engine.stages.solutions", "engine.stages.gramsets", "engine.stages.alpha_paths",
                   "engine.stages.sparsity", "engine.stages.theory", "engine.stages.atlas",
                   "engine.train.peculiarity"):
        importlib.import_module(module)
    declared = []
    for path in (ROOT / "engine").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "declare_derived":
                declared.append(node.args[0].value)
    assert len(declared) == len(set(declared)), sorted(declared)
    listed = {k.name: k for k in Cache(tmp_path).derived_kinds()}
    assert set(listed) == set(declared)
    # every kind the cache written before the move holds is a declared kind, with its arrays
    kinds = {json.loads(p.read_text())["kind"] for p in Cache(PREMOVE).derived_manifest_paths()}
    assert kinds <= set(listed), kinds - set(listed)


def test_a_cache_written_before_the_move_opens_unchanged(tmp_path):
    """The engine before the layers (commit d063449) wrote tests/data/cache-premove: two
    imported stores, their Grams, solutions at α = 0.05 within and between, best subsets and a
    paths job. Today's engine reads every entry from it: nothing is recomputed, nothing
    quarantined, and the CLI's answers are those the old engine gave."""
    from engine.cli import main
    from engine.jobs.manager import list_jobs
    from engine.storage.store import Cache

    root = tmp_path / "cache"
    shutil.copytree(PREMOVE, root)
    before = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert {p.split("/")[0] for p in before} == {"stores", "objects", "derived", "runs", "jobs", "jobs.sqlite"}
    cache = Cache(root)
    assert cache.store_names() == ["tiny-a", "tiny-b"]
    assert [j.kind for j in list_jobs(cache)] == ["paths"]
    for name, args in (("within", ["--model", "tiny-a", "--alpha", "0.05"]),
                       ("between", ["--model", "tiny-b", "--source", "tiny-a", "--alpha", "0.05"]),
                       ("best", ["--model", "tiny-a", "--sources", "3"])):
        out = tmp_path / f"{name}.json"
        assert main(["--cache", str(root), "dependencies", *args, "--json", str(out)]) == 0
        assert json.loads(out.read_text()) == json.loads((REPORTS / f"i22-old-{name}.json").read_text()), name
    assert main(["--cache", str(root), "verify"]) == 0
    after = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")  # less locks and sqlite's WAL
                   if p.is_file() and p.parts[len(root.parts)] not in ("locks", "verified")
                   and not p.name.startswith("jobs.sqlite-"))
    assert after == before  # every answer came from the old entries: none written, none moved
