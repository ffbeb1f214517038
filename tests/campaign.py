"""Kill and race campaigns: real processes write to a cache and are SIGKILLed at random moments,
or started together; every outcome is checked against a reference run of the same write.

Shared by tests/test_kill_trials.py, tests/test_concurrency.py and bench/reliability_report.py.

The writers are real processes (``multiprocessing``'s *forkserver*: a server process imports
the engine and torch once, then forks one child per write, so a trial costs a fork rather
than a 10-second interpreter start). Each child runs the same code a user runs — the CLI
(``engine.cli.main``), the service the dashboard calls, or a job's runner — and the parent
kills it with SIGKILL after a random delay: a seeded fraction of the write's measured
duration (re-measured as the campaign goes, so that a trial lands at the same phase of the
write under another load). :func:`kill_point_campaign` kills the write instead right after
each of its commits in turn (:class:`KillPoint`: the writer SIGKILLs itself right after its
n-th rename into the cache), which reaches every durable state it passes through, the same
on every run — what a regression test of a failing moment needs.

After each kill the cache must be *as before* or *complete*, judged against the cache before
the trial and the cache after an uninterrupted reference run of the same write:

* ``python -m engine verify``'s check passes (every manifest and data file hashes right);
* every store present holds exactly its content from before or from the reference run, and
  no store that existed before is lost; every derived result present (Gram, solution, α
  path) is bit-for-bit the reference run's;
* the same write run again (no kill) completes and leaves the reference state.

Anything else counts as a *torn* cache (or a *failed rerun*: the rerun did not exit 0, left
an entry missing or other than the reference's, or left resumable chunks behind). Outcomes
are classified as ``unchanged``, ``complete`` or ``intermediate`` (a consistent state in
between, e.g. a data file written before its manifest, resumable extraction chunks, a Gram
without its solution). A failing trial's folder and log are kept, with ``<trial>.json``
(its delay or kill point, seed and fraction), and its line names them; a passing trial's
are removed.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import shutil
import signal
import sys
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PRELOAD = ["engine.cli", "engine.stages.solutions", "engine.ingest.extract", "engine.ingest.models", "engine.ingest.data",
           "engine.jobs.runner", "engine.jobs.extract_job", "engine.storage.verify", "tests.campaign"]
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


@dataclass(frozen=True)
class KillPoint:
    """A moment of a write, by what it has made durable: right after its ``nth`` rename
    (``os.replace``: the commit of every atomic write, :mod:`engine.storage.atomic`) into a path of
    the cache that matches ``pattern`` (``fnmatch``, relative to the cache's folder), the
    writer SIGKILLs itself. The same moment on every run whatever the load, unlike a delay."""

    nth: int = 1
    pattern: str = "*"

    def __str__(self) -> str:
        return f"after rename #{self.nth}" + ("" if self.pattern == "*" else f" into {self.pattern}")


@dataclass(frozen=True)
class Hooks:
    """What a writer is asked to do besides its write: die at a kill point, list its renames."""

    root: str  # the cache's folder
    kill: KillPoint | None = None
    trace: str | None = None  # a file: one line per rename into the cache (its path there)


def _arm(hooks: Hooks) -> None:
    """Wrap ``os.replace`` in this (writer) process: the real rename, then the hooks."""
    import fnmatch
    import signal

    real, root, seen = os.replace, os.path.realpath(hooks.root), [0]

    def replace(src, dst, *args, **kwargs):
        real(src, dst, *args, **kwargs)
        rel = os.path.relpath(os.path.realpath(dst), root)
        if rel.startswith(".."):
            return
        if hooks.trace:
            with open(hooks.trace, "a") as handle:
                handle.write(rel + "\n")
        if hooks.kill and fnmatch.fnmatch(rel, hooks.kill.pattern):
            seen[0] += 1
            if seen[0] == hooks.kill.nth:
                os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace


def _child_setup(log_path: str, hooks: Hooks | None = None) -> None:
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
    if hooks is not None:
        _arm(hooks)


def op_cli(log_path: str, argv: list[str], hooks: Hooks | None = None) -> None:
    _child_setup(log_path, hooks)
    from engine.cli import main

    sys.exit(main(argv))


def op_path(log_path: str, root: str, model: str, hooks: Hooks | None = None) -> None:
    _child_setup(log_path, hooks)
    from engine.stages.alpha_paths import load_or_compute_path
    from engine.stages.pairing import open_pairing
    from engine.storage.store import Cache

    cache = Cache(root)
    load_or_compute_path(cache, open_pairing(cache, model))
    sys.exit(0)


def op_job(log_path: str, root: str, job_id: int, hooks: Hooks | None = None) -> None:
    _child_setup(log_path, hooks)
    from engine.jobs.runner import run_job

    sys.exit(run_job(root, job_id))


def op_read_stores(log_path: str, root: str, name: str, stop: str, out: str) -> None:
    """A reader: load ``name`` over and over until the file ``stop`` exists; write each
    content hash seen (and every error) to ``out``."""
    _child_setup(log_path)
    from engine.errors import EngineError
    from engine.storage.store import Cache

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
    from engine.ingest.importer import import_logits
    from engine.stages.pairing import open_pairing
    from engine.stages.solutions import solve_dependencies
    from engine.storage.store import Cache

    cache, i = Cache(root), 0
    while time.time() < until:
        import_logits(cache, Path(files[i % len(files)]), "w", overwrite=True)
        import_logits(cache, Path(files[i % len(files)]), f"new-{i}")
        solve_dependencies(cache, open_pairing(cache, "w"), 0.1)
        i += 1
    sys.exit(0)


def content_hash(logits: np.ndarray, labels: np.ndarray) -> str:
    """What op_read_stores records for a store: its logits and labels, as stored."""
    from engine.storage.atomic import sha256_bytes

    return sha256_bytes(np.ascontiguousarray(logits, np.float32).tobytes() +
                        np.ascontiguousarray(labels, np.int64).tobytes())


# ----------------------------------------------------------------------------- inputs


def glyph_names(k: int) -> list[str]:
    chars = [chr(c) for c in range(0x41, 0x24F) if unicodedata.category(chr(c)).startswith("L")][:k]
    return [f"{c} {unicodedata.name(c)}" for c in chars]


def write_logits(path: Path, n: int, k: int, seed: int) -> Path:
    from engine.core.synthetic import classifier_like_logits

    F, y = classifier_like_logits(n, k, rank=max(4, k // 3), seed=seed)
    np.savez(path, logits=F, labels=y, class_names=np.array(glyph_names(k)))
    return path


def tiny_checkpoint(path: Path, k: int = 5) -> Path:
    import timm
    import torch
    from safetensors.torch import save_file

    import engine.ingest.models  # noqa: F401 - registers the demo architectures with timm

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
    from engine.storage.manifests import read_manifest

    out = {}
    for folder, kind in (("stores", "logits"), ("derived", "derived")):
        for path in sorted((root / folder).glob("*.json")) if (root / folder).is_dir() else []:
            out[f"{folder}/{path.stem}"] = read_manifest(path, kind)["arrays_sha256"]
    return out


def torn_reasons(root: Path, before: dict, reference: dict) -> list[str]:
    """Why the cache at ``root`` is neither as before nor complete (empty list: it is fine)."""
    from engine.errors import EngineError
    from engine.storage.store import Cache
    from engine.storage.verify import verify_cache

    report = verify_cache(root, quarantine=False)
    reasons = [f"verify: {f.path}: {f.problem}" for f in report.damaged]
    try:
        state = cache_state(root)
    except EngineError as exc:
        return [*reasons, f"unreadable manifest: {exc}"]
    for entry, digest in state.items():
        if digest not in (before.get(entry), reference.get(entry)):
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
        from engine.ingest.importer import import_logits
        from engine.storage.store import Cache

        import_logits(Cache(self.bases["old"]), self.old, "m")
        import_logits(Cache(self.bases["small"]), self.small, "m")

    def base_of(self, kind: str) -> Path:
        return self.bases[{"overwrite": "old", "solve": "small", "path": "small"}.get(kind, "empty")]

    def targets(self, kind: str, reference: dict, before: dict) -> set[str]:
        return {e for e in reference if reference[e] != before.get(e)}

    def launch(self, kind: str, root: Path, log: Path, job_id: int | None = None,
               hooks: Hooks | None = None):
        """Start one writer of ``kind`` on the cache ``root``; returns the started Process."""
        cli = ["--cache", str(root)]
        if kind == "import":
            target, args = op_cli, (str(log), [*cli, "import-logits", str(self.new), "--name", "m"])
        elif kind == "overwrite":
            target, args = op_cli, (str(log), [*cli, "import-logits", str(self.new), "--name", "m", "--overwrite"])
        elif kind == "extract":
            target, args = op_cli, (str(log), [*cli, "extract", "--model", "glyph-resnet", "--checkpoint",
                                               str(self.ckpt), "--data", str(self.images), "--name", "x",
                                               "--workers", "0", "--chunk-size", "8", "--batch-size", "4",
                                               "--device", "cpu", "--no-progress"])
        elif kind == "solve":
            target, args = op_cli, (str(log), [*cli, "dependencies", "--model", "m", "--alpha", "0.05",
                                               "--json", str(root.parent / f"{root.name}-deps.json")])
        elif kind == "path":
            target, args = op_path, (str(log), str(root), "m")
        elif kind == "job":
            target, args = op_job, (str(log), str(root), job_id)
        else:
            raise ValueError(f"unknown kind {kind!r}; one of {KINDS}")
        proc = context().Process(target=target, args=(*args, hooks))
        proc.start()
        return proc

    def job_spec(self) -> dict:
        return {"model": "glyph-resnet", "checkpoint": str(self.ckpt), "data": str(self.images),
                "name": "j", "batch_size": 4, "device": "cpu"}


def _submit(root: Path, spec: dict) -> int:
    from engine.jobs import submit_job

    return submit_job(root, "extract", spec, start=False).id


def _run(bench: Bench, kind: str, root: Path, log: Path, delay: float | None, job_id: int | None = None,
         hooks: Hooks | None = None):
    """Run one writer; kill it with SIGKILL after ``delay`` s (None: let it finish, or die at
    the kill point in ``hooks``).

    Returns (was_killed, exit code, seconds).
    """
    t0 = time.perf_counter()
    proc = bench.launch(kind, root, log, job_id, hooks)
    proc.join(delay)
    killed = proc.is_alive()
    if killed:
        proc.kill()  # SIGKILL
        proc.join()
    killed = killed or proc.exitcode == -signal.SIGKILL  # or it died at its kill point
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
    kept: list[str] = field(default_factory=list)  # folders of failing trials, kept as evidence
    work: Path | None = None  # the campaign's folder (reference run, kept trials and their logs)

    @property
    def failures(self) -> list[str]:
        return self.torn + self.rerun_failed


@dataclass
class Reference:
    """An uninterrupted run of one kind of write, and what it changed."""

    root: Path
    before: dict  # cache_state of the base cache
    state: dict  # cache_state after the write
    targets: set[str]  # the entries the write changes
    seconds: float
    renames: list[str]  # the write's renames into the cache, in order (its commits)


def reference_run(bench: Bench, kind: str, work: Path) -> Reference:
    root = work / "reference"
    shutil.copytree(bench.base_of(kind), root)
    before = cache_state(root)
    warm_up()
    trace = work / "reference-renames.txt"
    job_id = _submit(root, bench.job_spec()) if kind == "job" else None
    _, code, seconds = _run(bench, kind, root, work / "reference.log", None, job_id,
                            Hooks(str(root), trace=str(trace)))
    if code != 0:
        raise RuntimeError(f"the reference {kind} run failed (exit {code}); see {work / 'reference.log'}")
    state = cache_state(root)
    renames = trace.read_text().splitlines() if trace.exists() else []
    return Reference(root, before, state, bench.targets(kind, state, before), seconds, renames)


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


def _differences(root: Path, ref: Reference) -> list[str]:
    """The targets whose content after a rerun is not the reference run's (named, with why)."""
    state, out = cache_state(root), []
    for t in sorted(ref.targets):
        if state.get(t) != ref.state[t]:
            out.append(f"{t} {'is missing' if state.get(t) is None else 'holds other content'}")
    left = sorted(str(p.relative_to(root)) for p in (root / "partial").rglob("*") if p.is_file()) \
        if (root / "partial").is_dir() else []
    if left and not (ref.root / "partial").is_dir():
        out.append(f"a finished write left resumable chunks behind: {left[:3]}")
    return out


def kill_trial(bench: Bench, kind: str, ref: Reference, work: Path, name: str, stats: KillStats, *,
               delay: float | None = None, kill: KillPoint | None = None,
               note: str = "") -> tuple[str | None, float]:
    """One trial: the write on a copy of the base cache, killed after ``delay`` s or at the
    kill point ``kill``; the cache is checked; the write runs again and must complete. Updates
    ``stats``; returns (the outcome after the kill, or None when the trial failed; the
    rerun's duration: that of a whole write after an ``unchanged`` outcome). A failing trial's
    folder and log stay in ``work`` (with ``<name>.json`` saying how to repeat it); a passing
    one's are removed."""
    import json

    root, log = work / name, work / f"{name}.log"
    shutil.copytree(bench.base_of(kind), root)
    job_id = _submit(root, bench.job_spec()) if kind == "job" else None
    files_before = file_set(root)
    killed, _, _ = _run(bench, kind, root, log, delay, job_id, Hooks(str(root), kill) if kill else None)
    stats.trials += 1
    stats.killed += killed
    when = f"kill {kill}" if kill else f"kill at {delay:.3f} s"
    reasons = torn_reasons(root, ref.before, ref.state)
    job_state = None
    if kind == "job":
        problems, job_state = _job_outcome(root, job_id, ref.state)
        reasons += problems
    failure, outcome, seconds = None, None, 0.0
    if reasons:
        failure = stats.torn, f"{name} ({when}{note}): " + "; ".join(reasons)
    else:
        outcome = classify(root, files_before, ref.state, ref.targets)
        stats.outcomes[outcome] += 1
        # the same write again, not killed: it must complete and give the reference state
        rerun_id = job_id if job_state == "queued" else (_submit(root, bench.job_spec()) if kind == "job" else None)
        with open(log, "a") as handle:
            handle.write(f"\n=== {name}: {when}{note}; outcome {outcome}; the rerun follows ===\n")
        _, code, seconds = _run(bench, kind, root, log, None, rerun_id)
        problems = ([] if code == 0 else [f"exit {code}"]) + _differences(root, ref) + \
            torn_reasons(root, ref.before, ref.state)
        if problems:
            failure = stats.rerun_failed, (f"{name} ({when}{note}; after the kill: {outcome}): "
                                           f"rerun {'; '.join(problems)}")
    if failure is None:
        shutil.rmtree(root, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            log.unlink()
        return outcome, seconds
    where, line = failure
    where.append(f"{line}; kept {root} and {log}")
    stats.kept.append(str(root))
    (work / f"{name}.json").write_text(json.dumps(
        {"kind": kind, "trial": name, "delay_s": delay, "kill_point": kill and vars(kill),
         "note": note, "write_seconds": stats.seconds, "failure": line}, indent=1))
    return None, seconds


def kill_campaign(bench: Bench, kind: str, trials: int, seed: int = 0, workdir: Path | None = None) -> KillStats:
    """``trials`` writes of ``kind``, each SIGKILLed at a random moment; see the module doc.

    Trial i is killed at fraction u_i ~ U(0, 1.05) of the write's duration, u_i drawn from
    ``seed``: the same (seed, i) lands at the same phase of the write whatever the load,
    because the duration is re-measured as the campaign goes (the median of the reference
    run and of the reruns that wrote everything again, the latest nine).
    """
    rng = np.random.default_rng(seed)
    work = Path(workdir or bench.workdir) / f"kill-{kind}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ref = reference_run(bench, kind, work)
    stats = KillStats(kind, seconds=ref.seconds, work=work)
    durations = [ref.seconds]
    for i in range(trials):
        fraction = float(rng.uniform(0.0, 1.05))
        write_s = float(np.median(durations[-9:]))
        outcome, seconds = kill_trial(bench, kind, ref, work, f"t{i}", stats, delay=fraction * write_s,
                           note=f", fraction {fraction:.4f} of {write_s:.3f} s, seed {seed}")
        if outcome == "unchanged":  # then its rerun was a whole uninterrupted write
            durations.append(seconds)
    stats.leftover = leftover_processes()
    return stats


def kill_point_campaign(bench: Bench, kind: str, workdir: Path | None = None) -> KillStats:
    """The write killed right after each of its commits in turn (every rename into the cache
    that the reference run made: data files, manifests, chunks, reports), one trial each:
    every durable state the write passes through, deterministically."""
    work = Path(workdir or bench.workdir) / f"points-{kind}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ref = reference_run(bench, kind, work)
    stats = KillStats(kind, seconds=ref.seconds, work=work)
    for n, path in enumerate(ref.renames, start=1):
        kill_trial(bench, kind, ref, work, f"p{n}", stats, kill=KillPoint(n), note=f" ({path})")
    stats.leftover = leftover_processes()
    return stats


def keep_evidence(stats: KillStats) -> Path | None:
    """Copy a failing campaign's folder (its reference run, its failing trials' folders,
    logs and ``<trial>.json`` — passing trials are already gone) to a folder of its own under
    the system's temporary folder, out of reach of pytest's clean-up of old ``tmp_path``
    folders; returns where (None when nothing failed)."""
    if not stats.failures or stats.work is None:
        return None
    import tempfile

    keep = Path(tempfile.mkdtemp(prefix=f"nde-kill-evidence-{stats.kind}-"))
    shutil.copytree(stats.work, keep / stats.work.name, symlinks=True)
    return keep / stats.work.name


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
        problems = torn_reasons(root, before, reference)
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
