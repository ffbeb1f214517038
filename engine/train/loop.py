"""The one supervised training loop: the demo models and both of the paper's applications.

:func:`fit` trains a model on some samples of a dataset (:class:`Samples`) for some epochs,
with an optional extra loss term on the logits (the dependency regulariser), and saves a
checkpoint at the end of every epoch. Called again with the same checkpoint folder and
config it resumes after the last saved epoch (a finished run costs one file read), so a
killed job loses at most one epoch, and a resumed run ends with the weights of an unbroken
one: the batch order of epoch e depends only on (seed, e), and the learning rate only on the
step.

The recipe: AdamW (no weight decay on biases, norms and position embeddings) with a
one-cycle schedule (linear warm-up from lr/25, cosine decay to lr/10⁴) for training from
scratch, or SGD with momentum and a cosine decay for fine-tuning; label smoothing; bf16
autocast where it is fast (CUDA, CPUs with AMX or AVX-512-BF16) and channels-last memory,
which oneDNN's and cuDNN's fastest convolutions want (2-4× on this project's CPUs). Data
come from ``engine.ingest.data`` like extraction's: in-memory images are batched by indexing and
normalised per batch, image files through a DataLoader.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the same call trains with DistributedDataParallel:
each rank takes every world-th sample of the epoch's shuffled order, rank 0 alone writes
checkpoints. Nothing in the callers changes.

Checkpoints are ``torch.save`` dicts of tensors, numbers and strings, read back with
``torch.load(weights_only=True)`` (no pickled code), written atomically.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from engine.errors import InvalidInputError
from engine.ingest.data import ImageDataset, TensorTransform, iterate_batches
from engine.storage.atomic import atomic_path

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
ExtraLoss = Callable[[torch.Tensor], torch.Tensor]  # logits (B, K) -> scalar
AfterEpoch = Callable[[nn.Module], dict[str, float]]  # the model after an epoch -> values to log
OnStep = Callable[[int, int, nn.Module], None]  # (steps done, steps per epoch, model) after a step


@dataclass(frozen=True)
class LoopConfig:
    """How :func:`fit` trains (the callers' configs hold the paper's and the demo's recipes)."""

    epochs: int
    lr: float  # peak learning rate
    weight_decay: float
    batch_size: int
    optimizer: str = "adamw"  # "adamw" or "sgd"
    momentum: float = 0.9  # SGD only
    schedule: str = "onecycle"  # "onecycle" (warm-up, then cosine) or "cosine" (decay from lr to 0)
    warmup_frac: float = 0.1  # one-cycle: fraction of the steps spent warming up
    label_smoothing: float = 0.0
    seed: int = 0
    precision: str = "auto"  # "auto" (bf16 where it is fast), "bf16" or "fp32"
    workers: int = 0  # DataLoader workers (image files only)


@dataclass(frozen=True)
class Samples:
    """What to train on: samples ``indices`` of ``dataset``, each labelled ``targets[label]``."""

    dataset: ImageDataset
    indices: np.ndarray  # (N,) positions in the dataset
    targets: np.ndarray | None = None  # dataset label -> training target (None: the label itself)

    @classmethod
    def all_of(cls, dataset: ImageDataset) -> Samples:
        return cls(dataset, np.arange(len(dataset)))

    def __len__(self) -> int:
        return len(self.indices)


# ----------------------------------------------------------------------------- devices, DDP, CPU


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


def _rank() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return _rank()[0] == 0


def init_distributed(device: torch.device) -> None:
    """Join the torchrun process group once (no-op in a single process)."""
    if world_size() > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        log.info("DDP: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def use_threads(threads: int) -> None:
    """CPU threads for torch's operators (0 leaves torch's default: one per core).

    One thread is the fastest on a CPU that other work shares: measured on this project's
    2-core machine under load, a small CNN trains at 544 images per CPU-second with one
    thread and 228 with two (the second spins waiting for a core others hold).
    """
    if threads > 0:
        torch.set_num_threads(threads)


def process_cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished helper processes: wall
    time on an idle machine is about this divided by the cores used, whatever else shares the
    CPU while we measure."""
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with bf16 matrix units (AMX) or AVX-512-BF16 (Linux: /proc/cpuinfo)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether to train under bf16 autocast: ``auto`` where bf16 is fast, else as asked."""
    if precision not in ("auto", "bf16", "fp32"):
        raise InvalidInputError(f"precision must be auto, bf16 or fp32; got {precision!r}")
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_fast_bf16()


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(state, handle)


def load_checkpoint(path: Path) -> dict | None:
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


# ----------------------------------------------------------------------------- the recipe


def one_cycle_lr(step: int, total: int, peak: float, warmup_frac: float) -> float:
    """Linear warm-up from peak/25 to peak, then cosine decay to peak/1e4."""
    warm = max(1, int(total * warmup_frac))
    if step < warm:
        return peak / 25 + (peak - peak / 25) * step / warm
    t = (step - warm) / max(1, total - warm)
    return peak / 1e4 + (peak - peak / 1e4) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def learning_rate(cfg: LoopConfig, step: int, total: int) -> float:
    """The learning rate of step ``step`` of ``total`` (a function of the step alone)."""
    if cfg.schedule == "onecycle":
        return one_cycle_lr(step, total, cfg.lr, cfg.warmup_frac)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(step / max(1, total), 1.0)))
    raise InvalidInputError(f"schedule {cfg.schedule!r} is unknown; use 'onecycle' or 'cosine'")


def _optimizer(model: nn.Module, cfg: LoopConfig) -> torch.optim.Optimizer:
    """Weight decay on weight matrices and kernels only (not biases, norms, position embeddings)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in named if p.ndim > 1 and "pos_embed" not in n]
    no_decay = [p for n, p in named if not (p.ndim > 1 and "pos_embed" not in n)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise InvalidInputError(f"optimizer {cfg.optimizer!r} is unknown; use 'adamw' or 'sgd'")


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of epoch ``epoch``: a function of (seed, epoch) alone (resume-stable)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def _steps_per_epoch(n: int, cfg: LoopConfig) -> int:
    """Whole batches of this rank's share (one smaller batch when there is less than one)."""
    return max(1, n // _rank()[1] // cfg.batch_size)


def _rank_order(n: int, cfg: LoopConfig, epoch: int) -> np.ndarray:
    """This rank's samples of the epoch (positions in 0..n-1), in the epoch's shuffled order."""
    rank, world = _rank()
    order = epoch_order(n, cfg.seed, epoch).numpy()[rank::world][: n // world]
    return order[: _steps_per_epoch(n, cfg) * cfg.batch_size]


def _resume_key(cfg: LoopConfig) -> dict:
    """What a checkpoint must match to be resumed (loader workers change nothing computed)."""
    return {k: v for k, v in asdict(cfg).items() if k != "workers"}


# ----------------------------------------------------------------------------- training


def fit(
    model: nn.Module,
    samples: Samples,
    cfg: LoopConfig,
    checkpoint_dir: Path,
    *,
    device: torch.device,
    transform: TensorTransform | None,
    extra_loss: ExtraLoss | None = None,
    progress: Progress | None = None,
    span: tuple[float, float] = (0.0, 1.0),
    phase: str = "train",
    after_epoch: AfterEpoch | None = None,
    on_step: OnStep | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place; return the history, one dict per epoch (mean CE, extra loss,
    seconds and whatever ``after_epoch`` measured).

    ``transform`` prepares batches of in-memory images (``engine.ingest.data.prepare_transform``);
    ``span`` maps this phase onto a part of the job's progress bar. Checkpoints go to
    ``checkpoint_dir/last.pt``; a finished checkpoint with the same config skips training.
    ``on_step(done, steps_per_epoch, model)`` is called after every optimiser step (main process
    only), e.g. to keep snapshots inside an epoch (``engine.train.emergence``); a resumed run
    calls it again for the steps it redoes, with the same weights.
    """
    if len(samples) == 0:
        raise InvalidInputError(f"{phase}: nothing to train on (no samples selected)")
    init_distributed(device)
    model.to(device, memory_format=torch.channels_last)
    ckpt_path = Path(checkpoint_dir) / "last.pt"
    opt = _optimizer(model, cfg)
    bf16 = use_bf16(cfg.precision, device)
    steps = _steps_per_epoch(len(samples), cfg)
    total = steps * cfg.epochs
    history: list[dict[str, float]] = []
    state = load_checkpoint(ckpt_path)
    if state is not None and state.get("config") == _resume_key(cfg):
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        history = [dict(h) for h in state["history"]]
        log.info("%s: resuming after epoch %d of %d from %s", phase, len(history), cfg.epochs, ckpt_path)
    elif state is not None:
        log.warning("%s: checkpoint %s has another config; starting over", phase, ckpt_path)
    net = model
    if world_size() > 1 and dist.is_initialized():
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    targets = None if samples.targets is None else torch.as_tensor(samples.targets)
    lo, hi = span
    for epoch in range(len(history), cfg.epochs):
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed * 7919 + epoch)  # dropout / augmentation, resume-stable
        net.train()
        sums = np.zeros(2)
        order = samples.indices[_rank_order(len(samples), cfg, epoch)]
        batches = iterate_batches(samples.dataset, order, cfg.batch_size, device, transform, cfg.workers)
        for step, (x, labels, _, _) in enumerate(batches):
            if x is None:  # every image of the batch was unreadable (counted by iterate_batches)
                continue
            y = (labels if targets is None else targets[labels]).to(device, non_blocking=True)
            lr = learning_rate(cfg, epoch * steps + step, total)
            for group in opt.param_groups:
                group["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = net(x.contiguous(memory_format=torch.channels_last))
            logits = logits.float()
            ce = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            extra = None if extra_loss is None else extra_loss(logits)
            opt.zero_grad(set_to_none=True)
            (ce if extra is None else ce + extra).backward()
            opt.step()
            sums += (ce.item(), 0.0 if extra is None else extra.item())
            if on_step is not None and is_main_process():
                on_step(epoch * steps + step + 1, steps, model)
            if progress is not None and is_main_process():
                done = (epoch + (step + 1) / steps) / cfg.epochs
                progress(lo + (hi - lo) * done, f"{phase}: epoch {epoch + 1}/{cfg.epochs}, "
                         f"batch {step + 1}/{steps}, loss {ce.item():.3f}")
        entry = {"epoch": epoch + 1, "ce": float(sums[0] / steps), "extra": float(sums[1] / steps)}
        if after_epoch is not None and is_main_process():
            entry.update(after_epoch(model))
        entry["seconds"] = time.perf_counter() - t0
        history.append(entry)
        log.info("%s: epoch %d/%d %s", phase, epoch + 1, cfg.epochs,
                 "  ".join(f"{k} {v:.4g}" for k, v in entry.items() if k != "epoch"))
        if is_main_process():
            save_checkpoint(ckpt_path, {"config": _resume_key(cfg), "model": model.state_dict(),
                                        "optimizer": opt.state_dict(), "history": history})
        barrier()
    return history


# ----------------------------------------------------------------------------- inference


@torch.inference_mode()
def predict_logits(model: nn.Module, dataset: ImageDataset, indices: np.ndarray | None, device: torch.device,
                   transform: TensorTransform | None, batch_size: int = 500,
                   bf16: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits (N, K) float32, labels (N,) and dataset positions (N,) of the samples ``indices``
    (all when None) that could be read, in order. fp32 unless ``bf16`` (exact logits on CPU)."""
    model.eval().to(device, memory_format=torch.channels_last)
    indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)
    out, labels, kept = [], [], []
    for x, y, idx, _ in iterate_batches(dataset, indices, batch_size, device, transform):
        if x is None:
            continue
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out.append(model(x.contiguous(memory_format=torch.channels_last)).float().cpu())
        labels.append(torch.as_tensor(y))
        kept.append(torch.as_tensor(idx))
    if not out:
        raise InvalidInputError(f"cannot compute logits: none of the {len(indices)} selected images could be read")
    return (torch.cat(out).numpy(), torch.cat(labels).numpy().astype(np.int64),
            torch.cat(kept).numpy().astype(np.int64))


def accuracy(model: nn.Module, dataset: ImageDataset, device: torch.device, transform: TensorTransform | None,
             bf16: bool = False) -> float:
    """Top-1 accuracy of ``model`` on ``dataset`` (fraction)."""
    logits, labels, _ = predict_logits(model, dataset, None, device, transform, bf16=bf16)
    return float((logits.argmax(1) == labels).mean())
