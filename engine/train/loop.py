"""A short supervised training loop for the paper's applications: checkpoints, resume, DDP.

One function, :func:`fit`, trains a model on a dataset for some epochs with an optional
extra loss term on the logits (the dependency regulariser), and saves a checkpoint at the
end of every epoch. Called again with the same checkpoint folder it resumes after the last
saved epoch (a finished phase costs one file read), so a killed job loses at most one epoch.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the same call trains with
DistributedDataParallel: each rank reads its shard (``DistributedSampler``), rank 0 alone
writes checkpoints and reports. Nothing in the callers changes.

Checkpoints are ``torch.save`` dicts of tensors and numbers, read back with
``torch.load(weights_only=True)`` (no pickle of arbitrary objects), written atomically.
"""

from __future__ import annotations

import logging
import os
import resource
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from engine.atomic import atomic_path
from engine.errors import InvalidInputError

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
ExtraLoss = Callable[[torch.Tensor], torch.Tensor]  # logits (B, K) -> scalar


@dataclass(frozen=True)
class LoopConfig:
    """How :func:`fit` trains (the paper's recipes are the callers' defaults)."""

    epochs: int
    lr: float
    weight_decay: float
    batch_size: int
    optimizer: str = "adamw"  # "adamw" or "sgd"
    momentum: float = 0.9  # SGD only
    schedule: str = "onecycle"  # "onecycle" (warm-up then cosine) or "cosine" (decay from lr)
    label_smoothing: float = 0.0
    seed: int = 0
    workers: int = 0


# ----------------------------------------------------------------------------- devices, DDP


def resolve_device(name: str) -> torch.device:
    """``auto`` → the local GPU when there is one (the rank's own under torchrun), else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InvalidInputError(f"device {name!r} was asked for but CUDA is not available; use 'cpu'")
        if name == "cuda" and world_size() > 1:
            name = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return torch.device(name)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def init_distributed(device: torch.device) -> None:
    """Join the torchrun process group once (no-op in a single process)."""
    if world_size() > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        log.info("DDP: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)


def process_cpu_seconds() -> float:
    """CPU time (user + system) this process has used: wall time on an idle machine is about
    this divided by the cores used, whatever else shares the CPU while we measure."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(state, handle)


def load_checkpoint(path: Path) -> dict | None:
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


# ----------------------------------------------------------------------------- training


def _optimizer(model: nn.Module, cfg: LoopConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise InvalidInputError(f"optimizer {cfg.optimizer!r} is unknown; use 'adamw' or 'sgd'")


def _scheduler(opt: torch.optim.Optimizer, cfg: LoopConfig, steps: int):
    total = max(1, cfg.epochs * steps)
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.15)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    raise InvalidInputError(f"schedule {cfg.schedule!r} is unknown; use 'onecycle' or 'cosine'")


def _loader(dataset: Dataset, cfg: LoopConfig, epoch: int, shuffle: bool = True) -> DataLoader:
    if world_size() > 1 and dist.is_initialized():
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=cfg.seed)
        sampler.set_epoch(epoch)
    else:  # one generator per epoch: a resumed run sees the same order as an unbroken one
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(cfg.seed * 1009 + epoch))
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                      drop_last=len(dataset) > cfg.batch_size)


def _resume_key(cfg: LoopConfig) -> dict:
    """What a checkpoint must match to be resumed (loader workers change nothing computed)."""
    return {k: v for k, v in asdict(cfg).items() if k != "workers"}


def fit(
    model: nn.Module,
    dataset: Dataset,
    cfg: LoopConfig,
    checkpoint_dir: Path,
    *,
    device: torch.device,
    extra_loss: ExtraLoss | None = None,
    progress: Progress | None = None,
    span: tuple[float, float] = (0.0, 1.0),
    phase: str = "train",
) -> dict[str, list[float]]:
    """Train ``model`` in place; return the per-epoch history (mean CE and extra loss).

    ``span`` maps this phase onto a part of the job's progress bar. Checkpoints go to
    ``checkpoint_dir/last.pt``; a finished checkpoint with the same config skips training.
    """
    init_distributed(device)
    model.to(device)
    ckpt_path = Path(checkpoint_dir) / "last.pt"
    opt = _optimizer(model, cfg)
    steps = len(_loader(dataset, cfg, 0))
    sched = _scheduler(opt, cfg, steps)
    history: dict[str, list[float]] = {"ce": [], "extra": []}
    start_epoch = 0
    state = load_checkpoint(ckpt_path)
    if state is not None and state.get("config") == _resume_key(cfg):
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history = {k: list(v) for k, v in state["history"].items()}
        start_epoch = int(state["epoch"]) + 1
        log.info("%s: resuming after epoch %d of %d from %s", phase, start_epoch, cfg.epochs, ckpt_path)
    elif state is not None:
        log.warning("%s: checkpoint %s has another config; starting over", phase, ckpt_path)
    net = model
    if world_size() > 1 and dist.is_initialized():
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    lo, hi = span
    for epoch in range(start_epoch, cfg.epochs):
        torch.manual_seed(cfg.seed * 7919 + epoch)  # dropout / augmentation, resume-stable
        net.train()
        sums = np.zeros(2)
        loader = _loader(dataset, cfg, epoch)
        for step, (x, y) in enumerate(loader):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = net(x)
            logits = logits.float()
            ce = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            extra = extra_loss(logits) if extra_loss is not None else torch.zeros((), device=device)
            opt.zero_grad(set_to_none=True)
            (ce + extra).backward()
            opt.step()
            sched.step()
            sums += (ce.item(), extra.item())
            if progress is not None and is_main_process():
                done = (epoch + (step + 1) / len(loader)) / cfg.epochs
                progress(lo + (hi - lo) * done, f"{phase}: epoch {epoch + 1}/{cfg.epochs}, "
                         f"batch {step + 1}/{len(loader)}, loss {ce.item():.3f}")
        history["ce"].append(float(sums[0] / max(1, len(loader))))
        history["extra"].append(float(sums[1] / max(1, len(loader))))
        log.info("%s: epoch %d/%d  CE %.4f  extra %.4f", phase, epoch + 1, cfg.epochs,
                 history["ce"][-1], history["extra"][-1])
        if is_main_process():
            save_checkpoint(ckpt_path, {
                "config": _resume_key(cfg), "epoch": epoch, "model": model.state_dict(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "history": history,
            })
        barrier()
    return history


@torch.no_grad()
def predict_logits(model: nn.Module, dataset: Dataset, device: torch.device,
                   batch_size: int = 512, workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, K) float32 and labels (N,) int64 of ``dataset`` in its own order."""
    model.eval().to(device)
    out, labels = [], []
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x.to(device, non_blocking=True))
        out.append(logits.float().cpu())
        labels.append(torch.as_tensor(y))
    if not out:
        raise InvalidInputError("cannot compute logits of an empty dataset")
    return torch.cat(out).numpy(), torch.cat(labels).numpy().astype(np.int64)
