"""Kill and race campaigns: real processes write to a cache and are SIGKILLed at random moments,
or started together; every outcome is checked against a reference run of the same write.

Shared by tests/test_kill_trials.py, tests/test_concurrency.py and bench/reliability_report.py.

The writers are real processes (``multiprocessing``'s *forkserver*: a server process imports
the engine and torch once, then forks one child per write, so a trial costs a fork rather
than a 10-second interpreter start). Each child runs the same code a user runs — the CLI
(``engine.cli.main``), the service the dashboard calls, or a job's runner — and the parent
kills it with SIGKILL after a random delay drawn over the write's measured duration.

After each kill the cache must be *as before* or *complete*, judged against the cache before
the trial and the cache after an uninterrupted reference run of the same write:

* ``python -m engine verify``'s check passes (every manifest and data file hashes right);
* every store present holds exactly its content from before or from the reference run, and
  no store that existed before is lost; every derived result present (Gram, solution, α
  path) is bit-for-bit the reference run's;
* the same write run again (no kill) completes and leaves the reference state.

Anything else counts as a *torn* cache. Outcomes are classified as ``unchanged``,
``complete`` or ``intermediate`` (a consistent state in between, e.g. a data file written
before its manifest, resumable extraction chunks, a Gram without its solution).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import shutil
import sys
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PRELOAD = ["engine.cli", "engine.service", "engine.extract", "engine.models", "engine.data",
           "engine.jobs.runner", "engine.jobs.extract_job", "engine.verify", "tests.campaign"]
KINDS = ("import", "overwrite", "extract", "solve", "path", "job")


def context():
    """The forkserver context (started once per process, engine and torch preloaded)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _nothing() -> None:
    pass


def warm_up() -> None:
    """Start the forkserver now (it imports the engine and torch: seconds), not in a timing."""
    proc = context().Process(target=_nothing)
    proc.start()
    proc.join()


# ----------------------------------------------------------------------------- child side


def _child_setup(log_path: str) -> None:
    """In the writer: output to a log file, one torch thread (bit-identical reruns)."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    import torch

    torch.set_num_threads(1)
    # DataLoader workers are this writer's own children (as under `python -m engine …`), so
    # they end with it; started through the forkserver they would outlive a killed writer.
    mp.set_start_method("fork", force=True)


def op_cli(log_path: str, argv: list[str]) -> None:
    _child_setup(log_path)
    from engine.cli import main

    sys.exit(main(argv))


def op_path(log_path: str, root: str, model: str) -> None:
    _child_setup(log_path)
    from engine.paths import load_or_compute_path
    from engine.service import open_pairing
    from engine.store import Cache

    cache = Cache(root)
    load_or_compute_path(cache, open_pairing(cache, model))
    sys.exit(0)


def op_job(log_path: str, root: str, job_id: int) -> None:
    _child_setup(log_path)
    from engine.jobs.runner import run_job

    sys.exit(run_job(root, job_id))


def op_read_stores(log_path: str, root: str, name: str, stop: str, out: str) -> None:
    """A reader: load ``name`` over and over until the file ``stop`` exists; write each
    content hash seen (and every error) to ``out``."""
    _child_setup(log_path)
    from engine.errors import EngineError
    from engine.store import Cache

    seen, errors = [], []
    while not os.path.exists(stop):
        try:
            store = Cache(root).load_store(name)
            seen.append(content_hash(store.logits, store.labels))
        except EngineError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # anything else is a bug the campaign reports
            errors.append(f"CRASH {type(exc).__name__}: {exc}")
    Path(out).write_text("\n".join(["SEEN " + s for s in seen] + ["ERROR " + e for e in errors]))
    sys.exit(0)


def leftover_processes(grace: float = 10.0) -> list[int]:
    """Processes still alive under the forkserver (writers' children that outlived them),
    after ``grace`` seconds; they are killed (they are ours) and their pids returned."""
    from multiprocessing import forkserver

    server = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if not server:
        return []
    deadline = time.monotonic() + grace
    while True:
        kids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _ppid(p) == server]
        if not kids or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for pid in kids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    return kids


def _ppid(proc: Path) -> int | None:
    try:
        stat = (proc / "stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2 :].split()[1])


def op_write_loop(log_path: str, root: str, files: list[str], until: float) -> None:
    """A busy writer: overwrite store ``w`` with each file in turn, add new stores, solve."""
    _child_setup(log_path)
    from engine.importer import import_logits
    from engine.service import open_pairing, solve_dependencies
    from engine.store import Cache

    cache, i = Cache(root), 0
    while time.time() < until:
        import_logits(cache, Path(files[i % len(files)]), "w", overwrite=True)
        import_logits(cache, Path(files[i % len(files)]), f"new-{i}")
        solve_dependencies(cache, open_pairing(cache, "w"), 0.1)
        i += 1
    sys.exit(0)


def content_hash(logits: np.ndarray, labels: np.ndarray) -> str:
    """What op_read_stores records for a store: its logits and labels, as stored."""
    from engine.store import sha256_bytes

    return sha256_bytes(np.ascontiguousarray(logits, np.float32).tobytes() +
                        np.ascontiguousarray(labels, np.int64).tobytes())


# ----------------------------------------------------------------------------- inputs


def glyph_names(k: int) -> list[str]:
    chars = [chr(c) for c in range(0x41, 0x24F) if unicodedata.category(chr(c)).startswith("L")][:k]
    return [f"{c} {unicodedata.name(c)}" for c in chars]


def write_logits(path: Path, n: int, k: int, seed: int) -> Path:
    from engine.synthetic import classifier_like_logits

    F, y = classifier_like_logits(n, k, rank=max(4, k // 3), seed=seed)
    np.savez(path, logits=F, labels=y, class_names=np.array(glyph_names(k)))
    return path


def tiny_checkpoint(path: Path, k: int = 5) -> Path:
    import timm
    import torch
    from safetensors.torch import save_file

    import engine.models  # noqa: F401 - registers the demo architectures with timm

    torch.manual_seed(0)
    save_file(timm.create_model("nde_glyph_resnet", num_classes=k).state_dict(), path)
    return path


def image_folder(root: Path, k: int = 5, per_class: int = 8) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(k):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (24, 28, 3), dtype=np.uint8)).save(root / f"class{c}" / f"{i}.png")
    return root


# ----------------------------------------------------------------------------- observing a cache


def cache_state(root: Path) -> dict[str, str]:
    """Every store and derived entry → the SHA-256 of its data file (from verified manifests)."""
    from engine.store import read_manifest

    out = {}
    for folder, kind in (("stores", "logits"), ("derived", "derived")):
        for path in sorted((root / folder).glob("*.json")) if (root / folder).is_dir() else []:
            out[f"{folder}/{path.stem}"] = read_manifest(path, kind)["arrays_sha256"]
    return out


def _same_gram(root: Path, ref_root: Path | None, entry: str, digest: str, ref_digest: str | None) -> bool:
    """A Gram recomputed from the store (after a kill) may differ from the one the extraction
    accumulated in its last float64 bits (another summation order): same content, to rounding."""
    if ref_root is None or digest is None or ref_digest is None or not entry.startswith("derived/gram-"):
        return False
    from safetensors.numpy import load_file

    mine = load_file(str(root / "objects" / f"{digest}.safetensors"))
    ref = load_file(str(ref_root / "objects" / f"{ref_digest}.safetensors"))
    return mine.keys() == ref.keys() and all(np.allclose(mine[k], ref[k], rtol=1e-12, atol=0) for k in ref)


def torn_reasons(root: Path, before: dict, reference: dict, ref_root: Path | None = None) -> list[str]:
    """Why the cache at ``root`` is neither as before nor complete (empty list: it is fine)."""
    from engine.errors import EngineError
    from engine.store import Cache
    from engine.verify import verify_cache

    report = verify_cache(root, quarantine=False)
    reasons = [f"verify: {f.path}: {f.problem}" for f in report.damaged]
    try:
        state = cache_state(root)
    except EngineError as exc:
        return [*reasons, f"unreadable manifest: {exc}"]
    for entry, digest in state.items():
        if digest not in (before.get(entry), reference.get(entry)) and not _same_gram(
                root, ref_root, entry, digest, reference.get(entry)):
            reasons.append(f"{entry} holds content that is neither the old nor the new one")
    for entry in before:
        if entry.startswith("stores/") and entry not in state:
            reasons.append(f"{entry} existed before and is gone")
    cache = Cache(root)
    for entry in state:
        if entry.startswith("stores/"):
            try:
                cache.load_store(entry.split("/", 1)[1])
            except EngineError as exc:
                reasons.append(f"{entry} does not load: {exc}")
    return reasons


_IGNORED = ("locks", "jobs", "quarantine")


def file_set(root: Path) -> set[str]:
    """Every file of a cache but locks and the job table (which a look at the jobs changes)."""
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and p.relative_to(root).parts[0] not in _IGNORED and not p.name.startswith("jobs.sqlite")}


def classify(root: Path, files_before: set[str], reference: dict, targets: set[str]) -> str:
    """unchanged (no file added or removed), complete (the targets hold the reference's
    content), or intermediate (a consistent state in between: resumable chunks, a data file
    without its manifest yet, a Gram without its solution, a temporary file)."""
    state = cache_state(root)
    if all(state.get(t) == reference.get(t) for t in targets):
        return "complete"
    if file_set(root) == files_before:
        return "unchanged"
    return "intermediate"


# ----------------------------------------------------------------------------- scenarios


@dataclass
class Bench:
    """Inputs and base caches of every scenario, built once under ``workdir``."""

    workdir: Path
    n: int = 10_000
    k: int = 100

    def __post_init__(self) -> None:
        w = self.workdir
        self.inputs = w / "inputs"
        self.inputs.mkdir(parents=True, exist_ok=True)
        self.new = write_logits(self.inputs / "new.npz", self.n, self.k, seed=1)
        self.old = write_logits(self.inputs / "old.npz", self.n, self.k, seed=2)
        self.small = write_logits(self.inputs / "small.npz", 3000, 60, seed=3)
        self.ckpt = tiny_checkpoint(self.inputs / "glyph5.safetensors")
        self.images = image_folder(self.inputs / "images")
        self.bases = {"empty": w / "base-empty", "old": w / "base-old", "small": w / "base-small"}
        self.bases["empty"].mkdir(exist_ok=True)
        from engine.importer import import_logits
        from engine.store import Cache

        import_logits(Cache(self.bases["old"]), self.old, "m")
        import_logits(Cache(self.bases["small"]), self.small, "m")

    def base_of(self, kind: str) -> Path:
        return self.bases[{"overwrite": "old", "solve": "small", "path": "small"}.get(kind, "empty")]

    def targets(self, kind: str, reference: dict, before: dict) -> set[str]:
        return {e for e in reference if reference[e] != before.get(e)}

    def launch(self, kind: str, root: Path, log: Path, job_id: int | None = None):
        """Start one writer of ``kind`` on the cache ``root``; returns the started Process."""
        ctx = context()
        cli = ["--cache", str(root)]
        if kind == "import":
            args = (str(log), [*cli, "import-logits", str(self.new), "--name", "m"])
        elif kind == "overwrite":
            args = (str(log), [*cli, "import-logits", str(self.new), "--name", "m", "--overwrite"])
        elif kind == "extract":
            args = (str(log), [*cli, "extract", "--model", "glyph-resnet", "--checkpoint", str(self.ckpt),
                               "--data", str(self.images), "--name", "x", "--workers", "0",
                               "--chunk-size", "8", "--batch-size", "4", "--device", "cpu", "--no-progress"])
        elif kind == "solve":
            args = (str(log), [*cli, "dependencies", "--model", "m", "--alpha", "0.05",
                               "--json", str(root.parent / f"{root.name}-deps.json")])
        elif kind == "path":
            proc = ctx.Process(target=op_path, args=(str(log), str(root), "m"))
            proc.start()
            return proc
        elif kind == "job":
            proc = ctx.Process(target=op_job, args=(str(log), str(root), job_id))
            proc.start()
            return proc
        else:
            raise ValueError(f"unknown kind {kind!r}; one of {KINDS}")
        proc = ctx.Process(target=op_cli, args=args)
        proc.start()
        return proc

    def job_spec(self) -> dict:
        return {"model": "glyph-resnet", "checkpoint": str(self.ckpt), "data": str(self.images),
                "name": "j", "batch_size": 4, "device": "cpu"}


def _submit(root: Path, spec: dict) -> int:
    from engine.jobs import submit_job

    return submit_job(root, "extract", spec, start=False).id


def _run(bench: Bench, kind: str, root: Path, log: Path, delay: float | None, job_id: int | None = None):
    """Run one writer; kill it with SIGKILL after ``delay`` s (None: let it finish).

    Returns (was_killed, exit code, seconds).
    """
    t0 = time.perf_counter()
    proc = bench.launch(kind, root, log, job_id)
    proc.join(delay)
    killed = proc.is_alive()
    if killed:
        proc.kill()  # SIGKILL
        proc.join()
    return killed, proc.exitcode, time.perf_counter() - t0


# ----------------------------------------------------------------------------- kill campaign


@dataclass
class KillStats:
    kind: str
    trials: int = 0
    killed: int = 0  # the writer was still running when the SIGKILL came
    outcomes: Counter = field(default_factory=Counter)  # unchanged / intermediate / complete
    torn: list[str] = field(default_factory=list)  # one line per torn trial (must stay empty)
    rerun_failed: list[str] = field(default_factory=list)
    seconds: float = 0.0  # the uninterrupted write's duration (kill delays are drawn over it)
    leftover: list[int] = field(default_factory=list)  # processes that outlived their writer


def _job_outcome(root: Path, job_id: int, reference: dict) -> tuple[list[str], str | None]:
    """After a kill: reap the job, check the table and the report; return (problems, state)."""
    import json

    from engine.jobs import jobs_table, reap_stale

    reap_stale(root)
    table = jobs_table(root)
    problems = [] if table.integrity_ok() else ["jobs.sqlite fails its integrity check"]
    job = table.get(job_id)
    if job.state == "running":
        problems.append("a killed job is still 'running' after a look at the table")
    if job.state == "succeeded":
        try:
            report = json.loads(Path(job.result_path).read_text())
            if report.get("stores", {}).get("logits") != "j":
                problems.append(f"job report names the wrong store: {report}")
        except (OSError, ValueError, TypeError) as exc:
            problems.append(f"a succeeded job's report is unreadable: {exc}")
    return problems, job.state


def kill_campaign(bench: Bench, kind: str, trials: int, seed: int = 0, workdir: Path | None = None) -> KillStats:
    """``trials`` writes of ``kind``, each SIGKILLed at a random moment; see the module doc."""
    rng = np.random.default_rng(seed)
    work = Path(workdir or bench.workdir) / f"kill-{kind}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    stats = KillStats(kind)
    ref_root = work / "reference"
    shutil.copytree(bench.base_of(kind), ref_root)
    before = cache_state(ref_root)
    warm_up()
    job_id = _submit(ref_root, bench.job_spec()) if kind == "job" else None
    _, code, stats.seconds = _run(bench, kind, ref_root, work / "reference.log", None, job_id)
    if code != 0:
        raise RuntimeError(f"the reference {kind} run failed (exit {code}); see {work / 'reference.log'}")
    reference = cache_state(ref_root)
    targets = bench.targets(kind, reference, before)
    for i in range(trials):
        root = work / f"t{i}"
        shutil.copytree(bench.base_of(kind), root)
        log = work / f"t{i}.log"
        job_id = _submit(root, bench.job_spec()) if kind == "job" else None
        files_before = file_set(root)
        delay = float(rng.uniform(0.0, 1.05 * stats.seconds))
        killed, _, _ = _run(bench, kind, root, log, delay, job_id)
        stats.trials += 1
        stats.killed += killed
        reasons = torn_reasons(root, before, reference, ref_root)
        job_state = None
        if kind == "job":
            problems, job_state = _job_outcome(root, job_id, reference)
            reasons += problems
        if reasons:
            stats.torn.append(f"trial {i} (kill at {delay:.3f} s): " + "; ".join(reasons))
            continue
        stats.outcomes[classify(root, files_before, reference, targets)] += 1
        # the same write again, not killed: it must complete and give the reference state
        rerun_id = job_id if job_state == "queued" else (_submit(root, bench.job_spec()) if kind == "job" else None)
        _, code, _ = _run(bench, kind, root, log, None, rerun_id)
        state = cache_state(root)
        if code != 0 or any(state.get(t) != reference[t] and not _same_gram(root, ref_root, t, state.get(t), reference[t])
                            for t in targets) or torn_reasons(root, before, reference, ref_root):
            stats.rerun_failed.append(f"trial {i}: rerun exit {code}; see {log}")
            continue
        shutil.rmtree(root, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            log.unlink()
    stats.leftover = leftover_processes()
    return stats


# ----------------------------------------------------------------------------- race campaign


@dataclass
class RaceStats:
    kind: str
    trials: int = 0
    processes: int = 0
    corrupted: list[str] = field(default_factory=list)  # must stay empty


def race_campaign(bench: Bench, kind: str, trials: int, n_procs: int = 3,
                  workdir: Path | None = None) -> RaceStats:
    """``n_procs`` identical writers started together, ``trials`` times: one correct result."""
    work = Path(workdir or bench.workdir) / f"race-{kind}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    stats = RaceStats(kind)
    warm_up()
    ref_root = work / "reference"
    shutil.copytree(bench.base_of(kind), ref_root)
    before = cache_state(ref_root)
    _run(bench, kind, ref_root, work / "reference.log", None, _submit(ref_root, bench.job_spec()) if kind == "job" else None)
    reference = cache_state(ref_root)
    targets = bench.targets(kind, reference, before)
    for i in range(trials):
        root = work / f"t{i}"
        shutil.copytree(bench.base_of(kind), root)
        ids = [_submit(root, bench.job_spec()) for _ in range(n_procs)] if kind == "job" else [None] * n_procs
        procs = [bench.launch(kind, root, work / f"t{i}-{p}.log", ids[p]) for p in range(n_procs)]
        for proc in procs:
            proc.join()
        stats.trials += 1
        stats.processes += n_procs
        codes = [p.exitcode for p in procs]
        problems = torn_reasons(root, before, reference, ref_root)
        state = cache_state(root)
        if any(state.get(t) != reference[t] for t in targets):
            problems.append("the result differs from a single writer's")
        if any(c != 0 for c in codes):
            problems.append(f"writers exited with {codes}")
        derived = [e for e in state if e.startswith("derived/")]
        if len(derived) != len(set(derived)) or len(derived) != len([e for e in reference if e.startswith("derived/")]):
            problems.append(f"derived entries {sorted(derived)} are not the reference's")
        if problems:
            stats.corrupted.append(f"trial {i}: " + "; ".join(problems))
            continue
        shutil.rmtree(root, ignore_errors=True)
    return stats
