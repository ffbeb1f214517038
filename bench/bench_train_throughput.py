"""Training throughput of the applications' networks on this CPU: threads × memory format.

    python bench/bench_train_throughput.py [--arch glyph-cnn glyph-resnet] [--steps 20]

One process per setting (torch's thread pool is fixed at start-up). Each times ``--steps``
AdamW steps on random 1×32×32 batches after a warm-up and prints images per second of wall
time and per CPU-second (user + system): the second is what a loaded machine leaves you.
Why the jobs default to one thread, channels-last, and two networks side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import json, resource, sys, time
import torch, torch.nn.functional as F
from engine.ingest.models import create_architecture
arch, threads, channels_last, steps, batch, classes = sys.argv[1:7]
threads, steps, batch, classes = int(threads), int(steps), int(batch), int(classes)
torch.set_num_threads(threads)
fmt = torch.channels_last if channels_last == "1" else torch.contiguous_format
model = create_architecture(arch, classes).to(memory_format=fmt).train()
opt = torch.optim.AdamW(model.parameters(), 1e-3)
x = torch.randn(batch, 1, 32, 32).contiguous(memory_format=fmt)
y = torch.randint(0, classes, (batch,))
def step():
    loss = F.cross_entropy(model(x), y); opt.zero_grad(); loss.backward(); opt.step()
def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF); return u.ru_utime + u.ru_stime
for _ in range(3):
    step()
t, c = time.perf_counter(), cpu()
for _ in range(steps):
    step()
wall, used = time.perf_counter() - t, cpu() - c
print(json.dumps({"images_per_s": steps * batch / wall, "images_per_cpu_s": steps * batch / used}))
"""


def measure(arch: str, threads: int, channels_last: bool, steps: int, batch: int, classes: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _CHILD, arch, str(threads), "1" if channels_last else "0",
                          str(steps), str(batch), str(classes)], env=env, cwd=ROOT, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=["glyph-cnn", "glyph-resnet"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--classes", type=int, default=200)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    print("| arch | threads | memory format | images/s (wall) | images per CPU-second |")
    print("|---|---:|---|---:|---:|")
    for arch in args.arch:
        for threads in (1, 2):
            for channels_last in (True, False):
                r = measure(arch, threads, channels_last, args.steps, args.batch, args.classes)
                print(f"| {arch} | {threads} | {'channels-last' if channels_last else 'contiguous'} | "
                      f"{r['images_per_s']:.0f} | {r['images_per_cpu_s']:.0f} |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
