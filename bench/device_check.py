"""One device check of the CUDA paths, ready to run on a GPU machine (not a test; ≤ 5 minutes).

    python bench/device_check.py                        # on one or more GPUs
    python bench/device_check.py --device cpu --quick   # the same checks on CPU, small (≤ 2 min;
                                                        # the test suite runs it as a smoke test)

Four checks, each against an independent reference, each with its bar:

1. **extraction** — images/s through ``extract_logits`` (per-batch preprocessing on the device,
   forward, chunk files, float64 Gram, store writing) against a bare forward pass of the same
   model on the same already-preprocessed tensors, fp32 and with autocast (bf16, else fp16);
   runs alternate and medians are kept. Bar: ratio ≥ 0.90 (on CUDA; on CPU the figure is shown,
   the bar is not applied: a small model's fixed costs dominate there).
2. **Gram** — ``GramAccumulator`` on the device (chunks promoted to float64) against numpy's
   float64 product on the CPU: max |Δ| / max |reference| ≤ 1e-10, for ``E[f fᵀ]`` and the
   cross-Gram ``E[f gᵀ]``; its time against one bare float64 GEMM of the same size there.
3. **solver** — ``solve_covlasso`` with ``device=cuda`` against the CPU solve of the same
   Gram: the same support for every target, objectives within 1e-7 (relative); both timed.
4. **torchrun** — ``torchrun -m engine extract`` over G processes (G = the GPUs when there
   are two or more, else 2 CPU processes with gloo) against the single-process store: the
   merged store holds the dataset's samples in their order and the same logits.

Writes ``device_check.json`` (every figure) and ``device_check.md`` (one table) to ``--out``
and prints the table; the exit code is 1 when a bar that applies is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.core.covlasso import SolverConfig, solve_covlasso  # noqa: E402
from engine.core.gram import GramAccumulator  # noqa: E402
from engine.core.synthetic import classifier_like_gram, classifier_like_logits  # noqa: E402
from engine.ingest.data import ArrayDataset, TensorTransform  # noqa: E402
from engine.ingest.extract import _forward, extract_logits, resolve_device  # noqa: E402
from engine.ingest.models import create_classifier  # noqa: E402
from engine.storage.store import Cache  # noqa: E402


@dataclass(frozen=True)
class Sizes:
    """How big each check is: the full run fits 5 minutes on one GPU, --quick 2 on a CPU."""

    model: str  # timm architecture, random-initialised (no download)
    images: int  # images per extraction run
    batch: int
    repeats: int  # alternating bare / extract runs per precision (medians kept)
    gram: tuple[tuple[int, int], ...]  # (N, K) of the Gram checks
    solver_k: int
    solver_alpha: float  # median support ≈ 15 on classifier_like_gram (bench_covlasso's setting)
    torchrun_images: int


FULL = Sizes("resnet50", 16384, 256, 2, ((65536, 1000), (16384, 10000)), 1000, 0.125, 512)
QUICK = Sizes("test_resnet", 128, 32, 1, ((4096, 256),), 200, 0.125, 48)


@dataclass
class Check:
    name: str
    figure: str  # what was measured, in words and numbers
    bar: str
    passed: bool | None  # None: the bar does not apply here (reported only)
    details: dict = field(default_factory=dict)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> tuple[float, object]:
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t, out


# ----------------------------------------------------------------------------- 1. extraction


def _synthetic_images(n: int, shape: tuple[int, int, int], k: int) -> ArrayDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)
    labels = np.arange(n) % k
    return ArrayDataset(images, labels, [f"class {i}" for i in range(k)], "synthetic", "check")


def check_extraction(device: torch.device, sizes: Sizes, bars: bool) -> list[Check]:
    loaded = create_classifier(sizes.model, pretrained=False)
    model = loaded.model.eval().to(device, memory_format=torch.channels_last)
    import timm.data

    cfg = timm.data.resolve_data_config(model=model)
    dataset = _synthetic_images(sizes.images, tuple(cfg["input_size"]), loaded.num_classes)
    tf = TensorTransform(cfg)
    batches = [tf(dataset.images[s : s + sizes.batch].to(device))
               for s in range(0, len(dataset), sizes.batch)]
    autocast = "fp32"
    if device.type == "cuda":
        autocast = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    elif device.type == "cpu":
        autocast = "bf16"
    out = []
    for precision in ("fp32", autocast):
        bare, extract = [], []
        with torch.inference_mode():
            _forward(model, batches[0], device, precision)  # warm-up (cuDNN picks its kernels)
        for _ in range(sizes.repeats):
            bare.append(len(dataset) / _timed(lambda p=precision: _bare(model, batches, device, p), device)[0])
            with tempfile.TemporaryDirectory() as tmp:
                seconds, _ = _timed(lambda p=precision, tmp=tmp: extract_logits(
                    Cache(tmp), loaded, dataset, "check", batch_size=sizes.batch, device=str(device),
                    precision=p, chunk_size=len(dataset), progress=False), device)
            extract.append(len(dataset) / seconds)
        b, e = statistics.median(bare), statistics.median(extract)
        ratio = e / b
        out.append(Check(
            f"extraction {sizes.model} {precision}",
            f"{e:,.0f} img/s vs bare forward {b:,.0f} img/s: ratio {ratio:.2f}",
            "ratio ≥ 0.90", ratio >= 0.90 if bars else None,
            {"model": sizes.model, "precision": precision, "images": len(dataset), "batch": sizes.batch,
             "extract_img_s": extract, "bare_img_s": bare, "ratio": ratio}))
    return out


def _bare(model, batches, device, precision) -> None:
    with torch.inference_mode():
        for x in batches:
            logits = _forward(model, x, device, precision)
        logits.cpu()


# ----------------------------------------------------------------------------- 2. Gram


def check_gram(device: torch.device, sizes: Sizes) -> list[Check]:
    out = []
    for n, k in sizes.gram:
        f, _ = classifier_like_logits(n, k, rank=min(64, k), seed=1)
        g, _ = classifier_like_logits(n, k, rank=min(64, k), seed=2)
        ref_t = time.perf_counter()
        f64, g64 = f.astype(np.float64), g.astype(np.float64)
        ref = f64.T @ f64 / n
        ref_cross = f64.T @ g64 / n
        ref_seconds = time.perf_counter() - ref_t
        fd, gd = torch.from_numpy(f).to(device), torch.from_numpy(g).to(device)

        def accumulate(fd=fd, n=n, k=k):
            acc = GramAccumulator(k, device=device)
            for s in range(0, n, 8192):
                acc.update(fd[s : s + 8192])
            return acc.gram()

        def accumulate_pair(fd=fd, gd=gd, n=n, k=k):
            acc = GramAccumulator(k, k, device=device)
            for s in range(0, n, 8192):
                acc.update(fd[s : s + 8192], gd[s : s + 8192])
            return acc.cross_gram()

        accumulate()  # warm-up
        seconds, gram = _timed(accumulate, device)
        _, cross = _timed(accumulate_pair, device)
        f64d = fd.to(torch.float64)
        _timed(lambda f64d=f64d: f64d.T @ f64d, device)  # warm-up
        gemm_seconds, _ = _timed(lambda f64d=f64d: f64d.T @ f64d, device)
        err = float(np.abs(gram - ref).max() / np.abs(ref).max())
        err_cross = float(np.abs(cross - ref_cross).max() / np.abs(ref_cross).max())
        worst = max(err, err_cross)
        out.append(Check(
            f"Gram N={n:,} K={k:,}",
            f"max rel. diff {worst:.1e} vs float64 CPU; {seconds * 1e3:,.1f} ms vs bare float64 GEMM "
            f"{gemm_seconds * 1e3:,.1f} ms ({gemm_seconds / seconds:.2f}×); CPU reference {ref_seconds:.2f} s",
            "rel. diff ≤ 1e-10", worst <= 1e-10,
            {"n": n, "k": k, "rel_diff_gram": err, "rel_diff_cross": err_cross, "seconds": seconds,
             "bare_gemm_seconds": gemm_seconds, "cpu_reference_seconds": ref_seconds}))
    return out


# ----------------------------------------------------------------------------- 3. solver


def check_solver(device: torch.device, sizes: Sizes) -> Check:
    k = sizes.solver_k
    gram = classifier_like_gram(k, seed=3)
    target_sq = np.diag(gram).copy()

    def solve(dev: str):
        return solve_covlasso(gram, gram, target_sq, sizes.solver_alpha, within=True,
                              config=SolverConfig(device=dev))

    solve(str(device))  # warm-up (CUDA context, kernels)
    t = time.perf_counter()
    ref = solve("cpu")
    cpu_seconds = time.perf_counter() - t
    dev_seconds, res = _timed(lambda: solve(str(device)), device)
    differing = sum(not np.array_equal(ref.sparse.column(i)[0], res.sparse.column(i)[0]) for i in range(k))
    rel = float(np.max(np.abs(res.objective - ref.objective) / np.abs(ref.objective)))
    return Check(
        f"solver K={k:,} α={sizes.solver_alpha:g} on {device.type}",
        f"{differing} targets with another support; objectives within {rel:.1e}; "
        f"{dev_seconds:.2f} s vs CPU {cpu_seconds:.2f} s (median {int(np.median(ref.support_sizes))} sources)",
        "same supports, objectives within 1e-7", differing == 0 and rel <= 1e-7,
        {"k": k, "alpha": sizes.solver_alpha, "targets_with_other_support": differing,
         "objective_rel_diff": rel, "seconds": dev_seconds, "cpu_seconds": cpu_seconds,
         "median_sources": float(np.median(ref.support_sizes))})


# ----------------------------------------------------------------------------- 4. torchrun


def _image_folder(root: Path, classes: int, per_class: int, size: int = 48) -> Path:
    """``root/c<i>/img<j>.png``: random RGB images (ImageFolder layout)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"c{c}" / f"img{j}.png")
    return root


def check_torchrun(device: torch.device, sizes: Sizes, workdir: Path) -> Check:
    import timm
    from safetensors.torch import save_file

    from engine.ingest.data import ImageFolderDataset

    classes = 8
    folder = _image_folder(workdir / "images", classes, sizes.torchrun_images // classes)
    torch.manual_seed(0)
    ckpt = workdir / "model.safetensors"
    save_file(timm.create_model("nde_glyph_resnet", num_classes=classes).state_dict(), ckpt)
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    ranks, run_device = (gpus, "cuda") if gpus >= 2 else (2, "cpu")
    common = ["extract", "--model", "glyph-resnet", "--checkpoint", str(ckpt), "--data", str(folder),
              "--name", "sharded", "--chunk-size", "8", "--batch-size", "8", "--workers", "0",
              "--precision", "fp32", "--device", run_device, "--no-progress"]
    dataset = ImageFolderDataset(folder)
    single, _ = extract_logits(Cache(workdir / "one"), create_classifier("glyph-resnet", checkpoint=ckpt),
                               dataset, "sharded", batch_size=8, workers=0, chunk_size=8,
                               precision="fp32", device=run_device, progress=False)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
           "-m", "engine", "--cache", str(workdir / "two"), *common]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        return Check(f"torchrun {ranks} × {run_device}", f"torchrun failed (exit {proc.returncode})",
                     "merged in order, same logits", False, {"stderr": proc.stderr[-3000:]})
    merged = Cache(workdir / "two").load_store("sharded")
    in_order = merged.manifest["sample_ids"] == dataset.sample_ids
    diff = float(np.abs(merged.logits - single.logits).max())
    same = merged.content_hash == single.content_hash
    return Check(
        f"torchrun {ranks} × {run_device}",
        f"{merged.n} samples, in the dataset's order: {in_order}; max |Δ logit| vs one process "
        f"{diff:.1e} (identical store: {same}); {seconds:.1f} s",
        "merged in order, same logits (≤ 1e-4)", in_order and diff <= 1e-4,
        {"ranks": ranks, "device": run_device, "in_order": in_order, "max_abs_diff": diff,
         "identical_store": same, "seconds": seconds})


# ----------------------------------------------------------------------------- report


def markdown(report: dict) -> str:
    lines = [f"Device check on {report['device_name']} ({report['device']}{', quick' if report['quick'] else ''}), "
             f"torch {report['torch']}, {report['seconds']:.0f} s", "",
             "| check | figure | bar | result |", "|---|---|---|---|"]
    for c in report["checks"]:
        result = {True: "pass", False: "**FAIL**", None: "(not applied here)"}[c["passed"]]
        lines.append(f"| {c['name']} | {c['figure']} | {c['bar']} | {result} |")
    return "\n".join(lines) + "\n"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def _guarded(name: str, check) -> list[Check]:
    """A check's results, or one failed check with the error: a path that breaks on a new
    machine must not cost the figures of the others."""
    import traceback

    try:
        return check()
    except Exception as exc:  # reported, not raised: the report is the point
        return [Check(name, f"error: {type(exc).__name__}: {str(exc)[:300]}", "runs", False,
                      {"traceback": traceback.format_exc()[-4000:]})]


def run(device: torch.device, quick: bool, out: Path) -> dict:
    sizes = QUICK if quick else FULL
    bars = device.type == "cuda" and not quick
    t0 = time.perf_counter()
    checks: list[Check] = []
    checks += _guarded("extraction", lambda: check_extraction(device, sizes, bars))
    checks += _guarded("Gram", lambda: check_gram(device, sizes))
    checks += _guarded("solver", lambda: [check_solver(device, sizes)])
    with tempfile.TemporaryDirectory() as tmp:
        checks += _guarded("torchrun", lambda: [check_torchrun(device, sizes, Path(tmp))])
    report = {
        "device": str(device), "device_name": _device_name(device), "quick": quick,
        "torch": torch.__version__, "cuda": torch.version.cuda, "gpus": torch.cuda.device_count(),
        "cpu_threads": torch.get_num_threads(), "seconds": time.perf_counter() - t0,
        "passed": all(c.passed is not False for c in checks),
        "checks": [asdict(c) for c in checks],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "device_check.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    (out / "device_check.md").write_text(markdown(report))
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--quick", action="store_true", help="small sizes (the CPU smoke test)")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for device_check.json and .md (default: bench/results/device-check-<device>)")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    out = args.out or ROOT / "bench" / "results" / f"device-check-{device.type}{'-quick' if args.quick else ''}"
    report = run(device, args.quick, out)
    print(markdown(report), end="")
    print(f"written: {out / 'device_check.json'}, {out / 'device_check.md'}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
