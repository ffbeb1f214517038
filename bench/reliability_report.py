"""Issue 6's figures, measured in one command: bad inputs, kill -9 trials, races, fuzzing.

    nice -n 10 python -m bench.reliability_report                 # ~10-15 min on 2 cores
    python -m bench.reliability_report --kill-trials 5 --race-trials 1 --fuzz-import 100 \\
        --fuzz-cli 50 --fuzz-pages 2                               # a quick look

What it runs (the machinery is the test suite's own: tests/campaign.py, tests/test_fuzz.py):

* **bad inputs** — a catalogue of hostile inputs (the test suite's lists: invalid arrays,
  path-escaping names, live pickle payloads through three doors, zip bombs, forged headers,
  overflowing or NaN logits, α and solver settings out of range), plus every input the
  import and CLI fuzzers generated that was not accepted. *Handled* means refused with an
  ``EngineError`` whose message is one line (CLI: exit code 2 and one ``error:`` line);
  anything else (a traceback, a crash, a multi-line dump) is counted as *unhandled*.
* **kill -9 trials** — every kind of write (import, overwrite, extraction, solve, α path,
  extraction job) SIGKILLed at random moments (seeded fractions of the write's measured
  duration: ``--seed``, and ``--job-trials`` for the job); a trial is *torn* if the cache
  afterwards is neither as before nor complete, and counts as a *failed rerun* if the same
  write run again does not complete with exactly the uninterrupted run's content.
* **kill -9 at every commit** — every kind of write killed right after each of its renames
  into the cache in turn (data files, manifests, chunks, reports): each durable state it
  passes through, once, whatever the load.
* **concurrent writers** — identical writers started together; *corrupted* if the result
  is not exactly one single writer's.
* **fuzzing** — examples run per target (import, CLI, each page's query parameters).

Prints a Markdown table (and ``--json FILE`` writes the numbers), with wall and CPU time and
the load average, since the machine may be shared. A clean run removes its work folder; a
run with any failure keeps it (``--workdir`` says where it is made) and prints where each
failing trial's folder and log are.

    python -m bench.reliability_report --job-trials 300     # issue 26's bar for the job
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# offline, like the test suite whose fuzzers this runs: a fuzzed `extract --model resnet18`
# must be refused at once, not download weights (or wait a minute for a network that is not there)
os.environ["HF_HUB_OFFLINE"] = "1"


# ----------------------------------------------------------------------------- bad inputs


def _catalogue(work: Path) -> list[tuple[str, object]]:
    """(description, zero-argument callable that must raise a one-line EngineError)."""
    import io

    import numpy as np

    from dashboard.components.uploads import import_upload
    from engine.core.covlasso import SolverConfig, solve_covlasso
    from engine.ingest.importer import import_logits
    from engine.ingest.models import read_state_dict
    from engine.storage.store import Cache
    from tests.test_store import BAD_ARRAYS
    from tests.test_untrusted import ESCAPES, _malicious_files, _zip_bomb

    work.mkdir(parents=True, exist_ok=True)
    cache = Cache(work / "catalogue-cache")
    cases: list[tuple[str, object]] = []
    for name, (logits, labels, names, _) in BAD_ARRAYS.items():
        cases.append((f"arrays: {name}", lambda a=logits, b=labels, c=names: cache.save_store("m", a, b, c)))
    ok = np.zeros((4, 3), np.float32), np.zeros(4, np.int64)
    for name in ESCAPES:
        cases.append((f"store name {name[:20]!r}", lambda n=name: cache.save_store(n, *ok)))
    canary = work / "CANARY"
    for what, path in _malicious_files(work, canary).items():
        cases.append((f"pickle payload ({what}) imported", lambda p=path: import_logits(cache, p, "x")))
        cases.append((f"pickle payload ({what}) uploaded",
                      lambda p=path: import_upload(work / "up", "x", (p.name, p.read_bytes()))))
    (work / "ck").mkdir()
    pt = _malicious_files(work / "ck", canary)
    cases.append(("pickle payload as a model checkpoint", lambda: read_state_dict(pt["raw pickle .pt"])))
    bomb = _zip_bomb(work / "bomb.npz", (1 << 30) + (1 << 24))
    cases.append(("zip bomb upload (1 GiB of zeros in 1 MB)", lambda: import_upload(work / "up", "b", ("b.npz", bomb.read_bytes()))))
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**9, 1000)})
    (work / "forged_logits.npy").write_bytes(header.getvalue() + bytes(64))
    np.save(work / "forged_labels.npy", np.zeros(3, np.int64))
    cases.append(("forged .npy header (4 TB promised)", lambda: import_logits(cache, work / "forged_logits.npy", "f")))
    cases.append(("logits of 1e200 (beyond float32)", lambda: cache.save_store("m", np.full((3, 2), 1e200), np.zeros(3, np.int64))))
    G = np.eye(3) * 1e40
    cases.append(("α below the Gram's resolution", lambda: solve_covlasso(G, G, np.diag(G).copy(), 2.5, within=True)))
    G2 = np.eye(3)
    G2[0, 0] = np.nan
    cases.append(("NaN in a Gram", lambda: solve_covlasso(G2, G2, np.ones(3), 0.1, within=True)))
    for bad in ({"tol": float("nan")}, {"tol": -1.0}, {"max_outer": 0}, {"device": "gpu0"}):
        cases.append((f"solver setting {bad}", lambda b=bad: SolverConfig(**b)))
    for name in ("../../../../tmp/evil.npz", "x.npz\x00.png", "evil.n\x00pz", "/etc/passwd"):
        cases.append((f"upload named {name!r}", lambda n=name: import_upload(work / "up", "u", (n, b"PK\x03\x04"))))
    cases.append(("upload over the size limit", lambda: import_upload(work / "up", "u", ("b.npz", bytes(2**20 + 1)), max_mb=1)))
    return cases


def run_catalogue(work: Path) -> dict:
    from engine.errors import EngineError

    tried, handled, unhandled = 0, 0, []
    for what, call in _catalogue(work):
        tried += 1
        try:
            call()
        except EngineError as exc:
            if str(exc).strip() and "\n" not in str(exc).strip():
                handled += 1
            else:
                unhandled.append(f"{what}: unclear message {str(exc)[:200]!r}")
        except Exception as exc:
            unhandled.append(f"{what}: {type(exc).__name__}: {exc}")
        else:
            unhandled.append(f"{what}: accepted")
    if (work / "CANARY").exists():
        unhandled.append("a pickle payload ran")
    return {"tried": tried, "handled": handled, "unhandled": unhandled}


# ----------------------------------------------------------------------------- campaigns


def _kill_figures(s) -> dict:
    return {"trials": s.trials, "killed_mid_write": s.killed, "torn": len(s.torn),
            "rerun_failed": len(s.rerun_failed), "leftover_processes": len(s.leftover),
            "outcomes": dict(s.outcomes), "write_seconds": round(s.seconds, 3),
            "details": s.torn + s.rerun_failed, "kept": s.kept}


def run_kills(work: Path, trials: int, seed: int, job_trials: int | None = None) -> dict:
    from tests.campaign import KINDS, Bench, kill_campaign

    bench = Bench(work / "kill-bench")
    out = {}
    for i, kind in enumerate(KINDS):
        t0 = time.perf_counter()
        n = job_trials if kind == "job" and job_trials is not None else trials
        s = kill_campaign(bench, kind, n, seed=seed + i, workdir=work)
        out[kind] = {**_kill_figures(s), "wall_s": round(time.perf_counter() - t0, 1)}
        print(f"  kill {kind:9s} {s.trials} trials, {len(s.torn)} torn, {len(s.rerun_failed)} reruns "
              f"failed, outcomes {dict(s.outcomes)}", flush=True)
    return out


def run_kill_points(work: Path) -> dict:
    """Every kind killed right after each of its commits in turn (deterministic)."""
    from tests.campaign import KINDS, Bench, kill_point_campaign

    bench = Bench(work / "points-bench")
    out = {}
    for kind in KINDS:
        t0 = time.perf_counter()
        s = kill_point_campaign(bench, kind, workdir=work)
        out[kind] = {**_kill_figures(s), "wall_s": round(time.perf_counter() - t0, 1)}
        print(f"  kill points {kind:9s} {s.trials} commits, {len(s.torn)} torn, {len(s.rerun_failed)} "
              f"reruns failed", flush=True)
    return out


def run_races(work: Path, trials: int, procs: int) -> dict:
    from tests.campaign import KINDS, Bench, race_campaign

    bench = Bench(work / "race-bench")
    out = {}
    for kind in KINDS:
        s = race_campaign(bench, kind, trials, n_procs=procs, workdir=work)
        out[kind] = {"trials": s.trials, "processes": s.processes, "corrupted": len(s.corrupted),
                     "details": s.corrupted}
        print(f"  race {kind:9s} {s.trials} trials x {procs} writers, {len(s.corrupted)} corrupted", flush=True)
    return out


def run_fuzz(work: Path, n_import: int, n_cli: int, n_pages: int) -> dict:
    from tests.dashboard_cache import shared_cache
    from tests.test_fuzz import (
        PAGES,
        Tally,
        cli_base,
        cli_property,
        import_property,
        page_property,
        run,
    )

    out = {}
    tally = Tally()
    run(import_property(work / "fuzz-import", tally), n_import, derandomize=False)
    out["import"] = tally
    tally = Tally()
    run(cli_property(cli_base(work / "fuzz-cli-files"), work / "fuzz-cli", tally), n_cli, derandomize=False)
    out["cli"] = tally
    os.environ["NDE_CACHE"] = str(shared_cache(work / "fuzz-pages"))
    for page in PAGES:
        tally = Tally()
        run(page_property(page, tally), n_pages, derandomize=False)
        out[f"page {page}"] = tally
    for name, t in out.items():
        print(f"  fuzz {name:13s} {t.examples} examples, {t.accepted} accepted, {t.refused} refused, "
              f"{len(t.failures)} failures", flush=True)
    return {name: {"examples": t.examples, "accepted": t.accepted, "refused": t.refused,
                   "failures": len(t.failures), "details": t.failures[:20]} for name, t in out.items()}


def _forkserver_cpu() -> float:
    """CPU seconds of the writers (children of the forkserver, which reaps them), with its own."""
    from multiprocessing import forkserver

    import psutil

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if not pid:
        return 0.0
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return t.user + t.system + t.children_user + t.children_system


# ----------------------------------------------------------------------------- report


def markdown(r: dict) -> str:
    cat, fz = r["catalogue"], r["fuzz"]
    bad_fuzz = {k: v["refused"] + v["failures"] for k, v in fz.items() if k in ("import", "cli")}
    bad = cat["tried"] + sum(bad_fuzz.values())
    handled = cat["handled"] + sum(fz[k]["refused"] for k in bad_fuzz)
    kills = r["kills"]
    races = r["races"]
    lines = [
        "| what | tried | result (goal) |", "|---|---:|---|",
        f"| bad inputs (catalogue {cat['tried']} + import fuzz {bad_fuzz.get('import', 0)} + CLI fuzz "
        f"{bad_fuzz.get('cli', 0)}) | {bad} | **{handled} handled with a clear one-line error**, "
        f"{bad - handled} not (all) |",
    ]
    for kind, k in kills.items():
        lines.append(f"| kill -9 during {kind} (write {k['write_seconds']:.2f} s) | {k['trials']} | "
                     f"**{k['torn']} torn**, {k['rerun_failed']} reruns failed (zero); outcomes "
                     f"{', '.join(f'{n} {o}' for o, n in sorted(k['outcomes'].items()))} |")
    total = sum(k["trials"] for k in kills.values())
    lines.append(f"| kill -9 trials, all kinds | {total} | **{sum(k['torn'] + k['rerun_failed'] for k in kills.values())} "
                 "torn** (zero) |")
    points = r.get("kill_points") or {}
    for kind, k in points.items():
        lines.append(f"| kill -9 right after each commit of {kind} | {k['trials']} | **{k['torn']} torn**, "
                     f"{k['rerun_failed']} reruns failed (zero) |")
    for kind, c in races.items():
        lines.append(f"| concurrent writers: {kind} | {c['trials']} × {c['processes'] // max(c['trials'], 1)} "
                     f"processes | **{c['corrupted']} corrupted** (zero) |")
    for name, f in fz.items():
        lines.append(f"| fuzz examples: {name} | {f['examples']} | {f['failures']} failures (zero); "
                     f"{f['accepted']} accepted, {f['refused']} refused |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kill-trials", type=int, default=30, help="kill -9 trials per kind of write")
    p.add_argument("--job-trials", type=int, default=None,
                   help="kill -9 trials of the extraction job (default: --kill-trials)")
    p.add_argument("--no-kill-points", action="store_true",
                   help="skip the deterministic kills right after each commit of every kind")
    p.add_argument("--race-trials", type=int, default=5, help="races per kind of write")
    p.add_argument("--race-procs", type=int, default=3, help="writers per race")
    p.add_argument("--fuzz-import", type=int, default=1000)
    p.add_argument("--fuzz-cli", type=int, default=300)
    p.add_argument("--fuzz-pages", type=int, default=10, help="examples per page")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where the work folder is made (default: the system's temporary folder); "
                        "it is removed after a clean run and kept, with every failing trial, otherwise")
    args = p.parse_args(argv)
    import logging
    import warnings

    logging.basicConfig(level=logging.ERROR)
    warnings.simplefilter("ignore")
    t0, load0 = time.perf_counter(), os.getloadavg()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="nde-reliability-", dir=args.workdir))
    print(f"work folder {work}", flush=True)
    try:
        report = _measure(work, args)
    except BaseException:
        print(f"\nstopped by an exception: the work folder {work} is kept", flush=True)
        raise
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    report["timing"] = {"wall_s": round(time.perf_counter() - t0, 1),
                        "cpu_s_this_process": round(own.ru_utime + own.ru_stime, 1),
                        "cpu_s_children": round(kids.ru_utime + kids.ru_stime + _forkserver_cpu(), 1),
                        "loadavg_start": load0, "loadavg_end": os.getloadavg()}
    print()
    print(markdown(report))
    tm = report["timing"]
    print(f"\nwall {tm['wall_s']} s; CPU {tm['cpu_s_this_process']} s here + {tm['cpu_s_children']} s in "
          f"the writer processes and other children; load average "
          f"{tm['loadavg_start'][0]:.2f} at the start, {tm['loadavg_end'][0]:.2f} at the end")
    kills = [*report["kills"].values(), *report.get("kill_points", {}).values()]
    details = report["catalogue"]["unhandled"] + [d for k in kills for d in k["details"]] + \
        [d for c in report["races"].values() for d in c["details"]] + [d for f in report["fuzz"].values() for d in f["details"]]
    for d in details[:30]:
        print("  !", d[:600])
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    if details:  # the evidence stays: every failing trial's folder and log, the reference runs
        (work / "report.json").write_text(json.dumps(report, indent=1, default=str))
        print(f"\n{len(details)} failure(s): the work folder {work} is kept (report.json there; "
              "a failing kill trial's folder and log are named above, <trial>.json says how to repeat it)")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _measure(work: Path, args) -> dict:
    print("bad-input catalogue…", flush=True)
    report = {"catalogue": run_catalogue(work / "catalogue")}
    print("kill -9 trials…", flush=True)
    report["kills"] = run_kills(work / "kills", args.kill_trials, args.seed, args.job_trials)
    if not args.no_kill_points:
        print("kill -9 right after each commit…", flush=True)
        report["kill_points"] = run_kill_points(work / "points")
    print("concurrent writers…", flush=True)
    report["races"] = run_races(work / "races", args.race_trials, args.race_procs)
    print("fuzzing…", flush=True)
    report["fuzz"] = run_fuzz(work / "fuzz", args.fuzz_import, args.fuzz_cli, args.fuzz_pages)
    return report


if __name__ == "__main__":
    sys.exit(main())
