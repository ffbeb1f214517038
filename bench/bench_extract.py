"""Extraction speed: logits/s through ``extract_logits`` vs bare forward passes/s (not a test).

    python bench/bench_extract.py                         # resnet50 on a generated JPEG ImageFolder
    python bench/bench_extract.py --model glyph-resnet    # the demo path: glyph test split, tensors
    python bench/bench_extract.py --device cuda           # resnet50, batch 256, channels-last, autocast

*Bare* = the model alone on tensors already in memory (already transformed, on the device),
same batch size, device and precision, in ``inference_mode``. *Extract* = the whole command
path: decoding + transform (DataLoader workers) or per-batch normalisation, forward, progress
bar, chunk files, store writing, Gram accumulation. Ratio = extract / bare (the bar: >= 0.90).
Runs alternate (bare, extract, bare, extract, ...) and the medians are reported, because a
shared machine's speed drifts. Prints one JSON line per setting; --out appends it to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.ingest.data import (  # noqa: E402
    GlyphDataset,
    ImageDataset,
    ImageFolderDataset,
    TensorTransform,
    prepare_transform,
)
from engine.ingest.extract import _forward, extract_logits, resolve_device, resolve_precision  # noqa: E402
from engine.ingest.models import create_classifier  # noqa: E402
from engine.storage.layout import DEFAULT_CACHE  # noqa: E402
from engine.storage.store import Cache  # noqa: E402


def make_jpeg_folder(root: Path, n: int, classes: int = 1000, size=(500, 375)) -> Path:
    """ImageNet-like files: n JPEGs of 500×375 (ImageNet's typical size) over `classes` folders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    for i in range(n):
        d = root / f"c{i % classes:04d}"
        d.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(np.roll(base, i, axis=1)).resize(size, Image.BILINEAR)
        img.save(d / f"{i:06d}.jpg", quality=90)
    for c in range(classes):  # every class folder exists, so K matches the 1000-way head
        (root / f"c{c:04d}").mkdir(parents=True, exist_ok=True)
    return root


def _preloaded(model, dataset: ImageDataset, n: int, device, batch: int) -> list[torch.Tensor]:
    """The first n samples, transformed exactly as extraction does, as device batches."""
    _, file_tf, tensor_tf = prepare_transform(model, dataset)
    if isinstance(tensor_tf, TensorTransform):
        x = tensor_tf(dataset.images[:n].to(device))
    else:
        x = torch.stack([dataset[i][0] for i in range(min(n, batch * 2))]).to(device)
        reps = -(-n // len(x))
        x = x.repeat(reps, 1, 1, 1)[:n]
    return [x[s : s + batch] for s in range(0, n, batch)]


def bare_rate(model, batches, device, precision: str) -> float:
    with torch.inference_mode():
        _forward(model, batches[0], device, precision)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for x in batches:
            out = _forward(model, x, device, precision)
        out.cpu()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return sum(len(x) for x in batches) / (time.perf_counter() - t)


def extract_rate(loaded, dataset, batch: int, workers, device: str, precision: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        store, _ = extract_logits(Cache(tmp), loaded, dataset, "bench", batch_size=batch,
                                  workers=workers, device=device, precision=precision, progress=True)
        return store.n / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet50", help="timm name (random init) or a demo model (glyph-vgg, glyph-resnet, glyph-vgg-seed2)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 256 on CUDA, 32 on CPU")
    ap.add_argument("--n", type=int, default=None, help="images per run (default: 10240 CUDA, 256 CPU)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache", default=str(DEFAULT_CACHE), help="where the glyph world is cached")
    ap.add_argument("--out", default=None, help="append the JSON result to this file")
    args = ap.parse_args(argv)

    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    cuda = device.type == "cuda"
    batch = args.batch_size or (256 if cuda else 32)
    glyph = args.model.startswith("glyph-")
    if glyph:
        loaded = create_classifier(args.model)
        dataset = GlyphDataset("test", args.cache)
        n = args.n or len(dataset)
        dataset.images, dataset.labels = dataset.images[:n], dataset.labels[:n]
        dataset.sample_ids = dataset.sample_ids[:n]
        tmpdir = None
    else:
        loaded = create_classifier(args.model, pretrained=False)
        n = args.n or (10240 if cuda else 256)
        tmpdir = tempfile.TemporaryDirectory()
        dataset = ImageFolderDataset(make_jpeg_folder(Path(tmpdir.name) / "imgs", n))
    model = loaded.model.eval().to(device, memory_format=torch.channels_last)  # as extraction does
    batches = _preloaded(model, dataset, n, device, batch)
    bare, ext = [], []
    for _ in range(args.repeats):
        bare.append(bare_rate(model, batches, device, precision))
        ext.append(extract_rate(loaded, dataset, batch, args.workers, str(device), precision))
    result = {
        "model": args.model, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else f"CPU x{os.cpu_count()}",
        "threads": torch.get_num_threads(), "precision": precision, "batch_size": batch, "n": n,
        "path": "tensor dataset (glyphs)" if glyph else "JPEG ImageFolder 500x375, DataLoader",
        "bare_img_s": round(statistics.median(bare), 1), "extract_img_s": round(statistics.median(ext), 1),
        "ratio": round(statistics.median(ext) / statistics.median(bare), 3),
        "bare_runs": [round(b, 1) for b in bare], "extract_runs": [round(e, 1) for e in ext],
        "load_avg": os.getloadavg()[0],
    }
    line = json.dumps(result)
    print(line)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")
    if tmpdir:
        tmpdir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
