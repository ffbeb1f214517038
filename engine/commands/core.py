"""Core commands: import-logits, stores, dependencies, verify."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from engine.atomic import write_json_atomic
from engine.covlasso import SolverConfig
from engine.importer import import_logits
from engine.report import dependency_report
from engine.store import Cache, manifest_model


def register(sub) -> None:
    p = sub.add_parser("import-logits", help="store logits computed elsewhere (.npz/.npy/.safetensors/.pt)")
    p.add_argument("file", type=Path)
    p.add_argument("--name", required=True, help="store name (letters, digits, ._+-)")
    p.add_argument("--labels", type=Path, help="labels .npy (for a .npy logits file)")
    p.add_argument("--class-names", type=Path, help="class names: text (one per line) or JSON list")
    p.add_argument("--float16", action="store_true", help="store logits as float16 (half the size)")
    p.add_argument("--overwrite", action="store_true", help="replace a store of that name")
    p.add_argument("--no-gram", action="store_true",
                   help="do not compute the Gram now (the first solve, or a `gram` job, will)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("stores", help="list the stores in the cache")
    p.add_argument("--json", action="store_true", help="print manifests as JSON")
    p.set_defaults(func=cmd_stores)

    p = sub.add_parser("dependencies", help="solve the CovLasso for every target; write JSON")
    p.add_argument("--model", required=True, help="store whose categories are the targets")
    p.add_argument("--source", help="store whose logits predict them (default: --model itself)")
    p.add_argument("--alpha", required=True, help="L1 weight, sklearn's Lasso alpha (paper: 2.5)")
    p.add_argument("--target", nargs="+", help="target indices or class names (default: all)")
    p.add_argument("--centred", action="store_true",
                   help="per-sample-centred logits (each sample's mean logit removed, as softmax ignores it) "
                        "instead of the paper's raw logits; the JSON says which (\"logits\")")
    p.add_argument("--json", dest="json_out", required=True, type=Path, help="output JSON file ('-': stdout)")
    p.add_argument("--tol", type=float, default=SolverConfig.tol, help="relative duality gap (default 1e-7)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.set_defaults(func=cmd_dependencies)

    p = sub.add_parser(
        "verify", help="check every cache entry by hash; quarantine damaged ones (exit 1 if any)",
        description="Re-hash every store, derived result, data file and job report of the cache "
        "(e.g. after copying it between machines). Damaged files are moved to quarantine/ "
        "(nothing is deleted); the exit code is 1 when something was damaged, 0 otherwise.",
    )
    p.add_argument("--no-quarantine", action="store_true", help="only report; move nothing")
    p.add_argument("--clean", action="store_true",
                   help="also remove temporary files of interrupted writes older than an hour")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_verify)


def cmd_import(args) -> int:
    store = import_logits(
        Cache(args.cache), args.file, args.name, labels_path=args.labels,
        class_names_path=args.class_names, dtype="float16" if args.float16 else "float32",
        overwrite=args.overwrite, gram=not args.no_gram, progress=sys.stderr.isatty(),
    )
    print(f"{store.name}\t{store.n} x {store.k}\t{store.content_hash[:12]}")
    return 0


def cmd_stores(args) -> int:
    manifests = Cache(args.cache).store_manifests()
    if args.json:
        print(json.dumps(manifests, indent=1))
        return 0
    if not manifests:
        print(f"no stores in {args.cache}; run `python -m engine demo` or `python -m engine import-logits FILE --name NAME`")
        return 0
    print(f"{'name':24} {'samples':>8} {'classes':>8} {'dtype':8} {'model':24} created")
    for m in manifests:
        model = manifest_model(m).get("name") or "?"
        print(f"{m['name']:24} {m['n']:>8} {m['k']:>8} {m['dtype']:8} {model:24} {m['created']}")
    return 0


def cmd_dependencies(args) -> int:
    config = SolverConfig(tol=args.tol, device=args.device)
    report = dependency_report(Cache(args.cache), args.model, args.source, args.alpha, args.target, config,
                               centred=args.centred)
    if str(args.json_out) == "-":
        json.dump(report, sys.stdout, indent=1)
        print()
    else:
        write_json_atomic(args.json_out, report)
        n_dep = sum(1 for t in report["targets"] if t["sources"])
        print(f"{len(report['targets'])} targets ({n_dep} with sources) at alpha={report['alpha']} -> {args.json_out}")
    return 0


_LABELS = {"store": "store", "derived": "derived result", "object": "data file",
           "chunk": "extraction chunk", "report": "job report", "jobs table": "job table"}


def cmd_verify(args) -> int:
    from engine.verify import verify_cache

    report = verify_cache(Cache(args.cache), quarantine=not args.no_quarantine,
                          clean_temp_older_than=3600.0 if args.clean else None)
    if args.json:
        print(json.dumps(report.as_dict(), indent=1, ensure_ascii=False))
        return 0 if report.ok else 1
    for f in report.damaged:
        moved = f" -> moved to {f.quarantined_to}" if f.quarantined_to else ""
        print(f"DAMAGED  {f.path}: {f.problem}{moved}")
    for f in report.notes:
        print(f"note     {f.path}: {f.problem}")
    checked = ", ".join(f"{n} {_LABELS.get(what, what)}{'s' if n != 1 else ''}"
                        for what, n in sorted(report.checked.items()))
    removed = f"; removed {report.removed_temp} old temporary files" if report.removed_temp else ""
    verdict = f"{len(report.damaged)} damaged" if report.damaged else "no damage"
    print(f"{args.cache}: {checked or 'nothing to check'} intact; {verdict}{removed}")
    return 0 if report.ok else 1
