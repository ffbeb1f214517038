"""Independent trainings side by side: one in this process, the others in helper processes.

Both applications train two networks that do not depend on each other (§3.2: the backbone
and the all-class baseline; §3.3: the regularised fine-tune and its β = 0 control). On a CPU
with spare cores, :func:`fit_tasks` runs the first here and the others in helper processes
(one thread each): two networks on two cores take the wall time of one. Threads inside one
network scale far worse on small models (and collapse when other work shares the CPU, see
``engine.train.loop.use_threads``). The results are the same either way: each training is
seeded and single-threaded, wherever it runs.

Helpers are started with ``spawn`` and die with their parent (Linux ``PR_SET_PDEATHSIG``), so
a job that is killed or cancelled leaves none behind; an error in a helper is raised here.
Under ``torchrun``, on a GPU, or with one core, the tasks simply run one after the other.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.ingest.data import TensorTransform
from engine.train.loop import ExtraLoss, LoopConfig, Progress, Samples, fit, use_threads, world_size

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitTask:
    """One call of :func:`engine.train.loop.fit` (everything picklable, for a helper process)."""

    name: str  # phase name in logs and progress messages
    model: nn.Module  # the starting model (trained in place here, a copy in a helper)
    samples: Samples
    config: LoopConfig
    checkpoint_dir: Path
    extra_loss: ExtraLoss | None = None  # a picklable callable (not a closure)
    evaluate: Callable[[nn.Module], Any] | None = None  # run on the trained model where it trained


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def side_by_side_possible(device: torch.device, threads: int, n_tasks: int) -> bool:
    """Helpers pay off on a CPU with a core per task, in one process (not under torchrun)."""
    return n_tasks > 1 and device.type == "cpu" and world_size() == 1 and _cores() >= n_tasks * max(1, threads)


def fit_tasks(tasks: list[FitTask], *, device: torch.device, transform: TensorTransform | None,
              threads: int, side_by_side: bool, progress: Progress | None = None,
              span: tuple[float, float] = (0.0, 1.0)) -> list[nn.Module]:
    """Run ``tasks``; return their trained models in order. Side by side when asked and possible
    (progress then follows the first task, which the others keep pace with), else in turn.
    More tasks than cores run side by side in groups of as many as there are cores."""
    return [model for model, _ in fit_and_evaluate(tasks, device=device, transform=transform, threads=threads,
                                                   side_by_side=side_by_side, progress=progress, span=span)]


def fit_and_evaluate(tasks: list[FitTask], *, device: torch.device, transform: TensorTransform | None,
                     threads: int, side_by_side: bool, progress: Progress | None = None,
                     span: tuple[float, float] = (0.0, 1.0)) -> list[tuple[nn.Module, Any]]:
    """:func:`fit_tasks`, returning (model, ``task.evaluate(model)`` or None) per task: the
    evaluation runs in the process that trained, so it is side by side too."""
    lo, hi = span
    slots = _cores() // max(1, threads)
    if side_by_side and len(tasks) > slots > 1 and side_by_side_possible(device, threads, slots):
        groups = [tasks[g : g + slots] for g in range(0, len(tasks), slots)]
        step = (hi - lo) / len(groups)
        return [out for n, group in enumerate(groups) for out in fit_and_evaluate(
            group, device=device, transform=transform, threads=threads, side_by_side=True,
            progress=progress, span=(lo + n * step, lo + (n + 1) * step))]
    if not (side_by_side and side_by_side_possible(device, threads, len(tasks))):
        step = (hi - lo) / len(tasks)
        return [_fit(task, device, transform, progress, (lo + n * step, lo + (n + 1) * step), task.name)
                for n, task in enumerate(tasks)]
    others = ", ".join(t.name for t in tasks[1:])
    log.info("training %s here and %s side by side in helper processes", tasks[0].name, others)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(tasks) - 1, mp_context=context, initializer=_init_helper,
                             initargs=(threads, logging.getLogger().level)) as pool:
        futures = [pool.submit(_fit, task, device, transform, None, (0.0, 1.0), task.name) for task in tasks[1:]]
        first = _fit(tasks[0], device, transform, progress, span, f"{tasks[0].name} (+ {others} alongside)")
        return [first] + [future.result() for future in futures]


def _fit(task: FitTask, device, transform, progress, span, phase: str) -> tuple[nn.Module, Any]:
    fit(task.model, task.samples, task.config, task.checkpoint_dir, device=device, transform=transform,
        extra_loss=task.extra_loss, progress=progress, span=span, phase=phase)
    model = task.model.eval()
    return model, (None if task.evaluate is None else task.evaluate(model))


def _init_helper(threads: int, log_level: int) -> None:
    """In a helper: die with the parent, use its threads and log level (stderr: the job's log)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the cancel's process-group kill still applies
        pass
    if os.getppid() == 1:  # the parent died before the line above took effect
        os._exit(1)
    logging.basicConfig(level=log_level or logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s[helper]: %(message)s")
    use_threads(threads)
