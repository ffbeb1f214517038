"""Core commands: import-logits, stores, dependencies, verify."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from engine.apps.report import dependency_report
from engine.core.covlasso import SolverConfig
from engine.ingest.importer import import_logits
from engine.storage.atomic import write_json_atomic
from engine.storage.manifests import manifest_model
from engine.storage.store import Cache


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

    p = sub.add_parser(
        "dependencies", help="each target's dependency: the paper's CovLasso at --alpha, or the best with --sources M",
        description="Per target: its sources, coefficients and Table 1 metrics (R², Acc and Pos Acc with the "
        "replaced logit). --alpha A: the paper's CovLasso; --alpha A --relaxed: least squares on its support; "
        "--sources M: the best dependency with at most M sources (no α). Without --json, a table.")
    p.add_argument("--model", required=True, help="store whose categories are the targets")
    p.add_argument("--source", help="store whose logits predict them (default: --model itself)")
    p.add_argument("--alpha", help="L1 weight, sklearn's Lasso alpha (paper: 2.5)")
    p.add_argument("--sources", dest="max_sources", metavar="M",
                   help="the best dependency with at most M sources (1-32; no --alpha)")
    p.add_argument("--relaxed", action="store_true",
                   help="with --alpha: least squares on the CovLasso's support (the relaxed Lasso)")
    p.add_argument("--target", nargs="+", help="target indices or class names (default: all)")
    p.add_argument("--centred", action="store_true",
                   help="per-sample-centred logits (each sample's mean logit removed, as softmax ignores it) "
                        "instead of the paper's raw logits; the JSON says which (\"logits\")")
    p.add_argument("--json", dest="json_out", type=Path,
                   help="output JSON file ('-': stdout); without it, a table in the terminal")
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
    rows = [(m["name"], str(m["n"]), str(m["k"]), str(m["dtype"]), manifest_model(m).get("name") or "?",
             str(m["created"])) for m in manifests]
    head = ("name", "samples", "classes", "dtype", "model", "created")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    right = (False, True, True, False, False, False)
    for r in [head, *rows]:
        print("  ".join(c.rjust(w) if ar else c.ljust(w) for c, w, ar in zip(r, widths, right)).rstrip())
    return 0


def cmd_dependencies(args) -> int:
    from engine.apps.report import format_report

    # one call down the layers: the method is checked before anything is read or written
    report = dependency_report(args.cache, args.model, args.source, args.alpha, args.target, centred=args.centred,
                               max_sources=args.max_sources, relaxed=args.relaxed, tol=args.tol, device=args.device)
    if args.json_out is None:
        print(format_report(report))
    elif str(args.json_out) == "-":
        json.dump(report, sys.stdout, indent=1)
        print()
    else:
        write_json_atomic(args.json_out, report)
        n_dep = sum(1 for t in report["targets"] if t["sources"])
        how = f"with at most {report['m']} sources" if report["method"] == "best-subset" else \
            f"at alpha={report['alpha']}" + (" (relaxed)" if report["method"] == "relaxed" else "")
        print(f"{len(report['targets'])} targets ({n_dep} with sources) {how} -> {args.json_out}")
    return 0


_LABELS = {"store": "store", "derived": "derived result", "object": "data file",
           "chunk": "extraction chunk", "report": "job report", "jobs table": "job table"}


def cmd_verify(args) -> int:
    from engine.storage.verify import verify_cache

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
