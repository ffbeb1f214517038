"""Supervised training of an image classifier on in-memory uint8 images (the glyph world).

One flat loop: AdamW, a one-cycle learning rate (linear warm-up, cosine decay), label
smoothing, bf16 autocast + channels-last where it pays (CPUs with AMX/AVX-512-BF16, and
CUDA). Seeded: the same config on the same machine gives the same weights. A checkpoint
(model + optimizer, safetensors; schedule position in JSON) is written after every epoch,
and a run started again with the same output folder resumes from the last one.

    >>> from engine.train.classifier import TrainConfig, train_classifier
    >>> result = train_classifier(TrainConfig(model="glyph-resnet", epochs=8, out_dir="runs/r"))
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from engine.atomic import commit, sha256_file, temp_file, write_json_atomic
from engine.errors import InvalidInputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """One training run; stored beside its checkpoints and final weights."""

    model: str = "glyph-resnet"  # demo model name (engine.models.DEMO_MODELS) or timm architecture
    dataset: str = "glyphs"  # dataset registry name (tensor datasets only)
    train_per_class: int = 48  # glyph world: training images per class
    epochs: int = 8
    batch_size: int = 128
    lr: float = 2e-3  # peak learning rate of the one-cycle schedule
    weight_decay: float = 0.05
    warmup_frac: float = 0.1  # fraction of the steps spent warming up
    label_smoothing: float = 0.1
    seed: int = 0
    precision: str = "auto"  # auto (bf16 where it is fast) | bf16 | fp32
    threads: int = 1  # CPU threads; 1 is fastest when the cores are shared (oversubscription)
    cache: str = "cache"  # where the glyph world's rendered splits are cached
    out_dir: str = "runs/glyph-resnet"
    model_kwargs: dict = field(default_factory=dict)  # extra timm.create_model arguments

    def __hash__(self) -> int:  # model_kwargs is a dict; hash the canonical JSON instead
        return hash(json.dumps(asdict(self), sort_keys=True))


@dataclass(frozen=True)
class TrainResult:
    weights: Path  # final weights (safetensors)
    val_acc: float
    test_acc: float
    seconds: float
    epochs_run: int


@dataclass(frozen=True)
class TensorData:
    """Images (N, C, H, W) uint8, labels (N,) int64 and the normalisation of the model."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != torch.uint8:
            raise InvalidInputError(f"images must be (N, C, H, W) uint8; got {tuple(self.images.shape)} "
                                    f"{self.images.dtype}")
        if self.labels.shape != (self.images.shape[0],):
            raise InvalidInputError("labels must be (N,) with one label per image")


def one_cycle_lr(step: int, total: int, peak: float, warmup_frac: float) -> float:
    """Linear warm-up from peak/25 to peak, then cosine decay to peak/1e4."""
    warm = max(1, int(total * warmup_frac))
    if step < warm:
        return peak / 25 + (peak - peak / 25) * step / warm
    t = (step - warm) / max(1, total - warm)
    return peak / 1e4 + (peak - peak / 1e4) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def _use_bf16(precision: str, device: torch.device) -> bool:
    if precision not in ("auto", "bf16", "fp32"):
        raise InvalidInputError(f"precision must be auto, bf16 or fp32; got {precision!r}")
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_fast_bf16()


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with bf16 matrix units (AMX) or AVX-512-BF16 (Linux: /proc/cpuinfo)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def normalise(images: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float, normalised by the model's data config."""
    x = images.float().div_(255)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


@torch.inference_mode()
def evaluate(model: nn.Module, data: TensorData, mean: tuple, std: tuple, batch: int = 512,
             bf16: bool = False) -> float:
    """Top-1 accuracy of ``model`` on ``data``."""
    model.eval()
    correct = 0
    for s in range(0, len(data.labels), batch):
        x = normalise(data.images[s : s + batch], mean, std).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            pred = model(x).argmax(1)
        correct += int((pred == data.labels[s : s + batch]).sum())
    return correct / max(1, len(data.labels))


def _save_checkpoint(out: Path, model: nn.Module, opt: torch.optim.Optimizer, epoch: int, step: int,
                     history: list) -> None:
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    for i, state in opt.state_dict()["state"].items():  # i: parameter index in the groups
        for key, value in state.items():
            tensors[f"opt.{i}.{key}"] = torch.as_tensor(value).contiguous()
    with temp_file(out, ".safetensors") as tmp:
        save_file(tensors, str(tmp))
        commit(tmp, out / "checkpoint.safetensors")
    write_json_atomic(out / "checkpoint.json", {"epoch": epoch, "step": step, "history": history,
                                                "sha256": sha256_file(out / "checkpoint.safetensors")})


def _load_checkpoint(out: Path, model: nn.Module, opt: torch.optim.Optimizer) -> tuple[int, int, list]:
    meta_path = out / "checkpoint.json"
    if not meta_path.exists():
        return 0, 0, []
    meta = json.loads(meta_path.read_text())
    path = out / "checkpoint.safetensors"
    if sha256_file(path) != meta["sha256"]:
        log.warning("checkpoint %s does not match its hash; starting over", path)
        return 0, 0, []
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state = opt.state_dict()
    for pid in (p for g in state["param_groups"] for p in g["params"]):
        keys = [k for k in tensors if k.startswith(f"opt.{pid}.")]
        if keys:
            state["state"][pid] = {k.split(".", 2)[2]: tensors[k] for k in keys}
    opt.load_state_dict(state)
    log.info("resumed from %s after epoch %d", path, meta["epoch"])
    return int(meta["epoch"]), int(meta["step"]), list(meta["history"])


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen)


def train_classifier(
    config: TrainConfig,
    train: TensorData | None = None,
    val: TensorData | None = None,
    test: TensorData | None = None,
    num_classes: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``config.model`` and write ``<out_dir>/weights.safetensors`` + ``weights.json``.

    Data defaults to the glyph world's train / val / test splits (``config.dataset``); pass
    :class:`TensorData` to train on something else (e.g. a subset of the classes).
    """
    from engine.models import DEMO_MODELS

    if train is None:
        train, val, test, num_classes = _glyph_data(config)
    if num_classes is None:
        num_classes = int(train.labels.max()) + 1
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    arch = DEMO_MODELS[config.model].arch if config.model in DEMO_MODELS else config.model
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, **config.model_kwargs)
    model = model.to(memory_format=torch.channels_last)
    data_cfg = timm.data.resolve_data_config(model=model)
    mean, std = data_cfg["mean"], data_cfg["std"]
    bf16 = _use_bf16(config.precision, torch.device("cpu"))
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim > 1 and "pos_embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "config.json", asdict(config))
    start_epoch, step, history = _load_checkpoint(out, model, opt)
    n = len(train.labels)
    steps_per_epoch = n // config.batch_size
    total = steps_per_epoch * config.epochs
    t0 = time.time() - sum(h.get("seconds", 0) for h in history)
    for epoch in range(start_epoch, config.epochs):
        model.train()
        te, loss_sum = time.time(), 0.0
        order = _epoch_order(n, config.seed, epoch)
        for b in range(steps_per_epoch):
            idx = order[b * config.batch_size : (b + 1) * config.batch_size]
            x = normalise(train.images[idx], mean, std).contiguous(memory_format=torch.channels_last)
            lr = one_cycle_lr(step, total, config.lr, config.warmup_frac)
            for group in opt.param_groups:
                group["lr"] = lr
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), train.labels[idx], label_smoothing=config.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_sum += float(loss.detach())
            if progress and b % 50 == 0:
                progress(f"epoch {epoch + 1}/{config.epochs} step {b}/{steps_per_epoch} loss {loss:.3f} lr {lr:.2e}")
        val_acc = evaluate(model, val, mean, std, bf16=bf16) if val is not None else float("nan")
        entry = {"epoch": epoch + 1, "loss": loss_sum / max(1, steps_per_epoch), "val_acc": val_acc,
                 "seconds": time.time() - te}
        history.append(entry)
        log.info("epoch %d/%d: loss %.3f, val top-1 %.4f, %.0f s", epoch + 1, config.epochs,
                 entry["loss"], val_acc, entry["seconds"])
        if progress:
            progress(json.dumps(entry))
        _save_checkpoint(out, model, opt, epoch + 1, step, history)
    return _finish(config, model, out, val, test, mean, std, history, time.time() - t0)


def _finish(config: TrainConfig, model: nn.Module, out: Path, val: TensorData | None,
            test: TensorData | None, mean: tuple, std: tuple, history: list, seconds: float) -> TrainResult:
    """Write the final fp32 weights and a JSON with the config and the measured accuracy."""
    model = model.to(memory_format=torch.contiguous_format).eval()
    val_acc = evaluate(model, val, mean, std) if val is not None else float("nan")
    test_acc = evaluate(model, test, mean, std) if test is not None else float("nan")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with temp_file(out, ".safetensors") as tmp:
        save_file(state, str(tmp), metadata={"model": config.model})
        commit(tmp, out / "weights.safetensors")
    info = {"config": asdict(config), "val_acc": val_acc, "test_acc": test_acc,
            "train_seconds": seconds, "history": history, "torch": torch.__version__,
            "timm": timm.__version__, "weights_sha256": sha256_file(out / "weights.safetensors")}
    write_json_atomic(out / "weights.json", info)
    log.info("%s: val top-1 %.4f, test top-1 %.4f (fp32)", config.model, val_acc, test_acc)
    return TrainResult(out / "weights.safetensors", val_acc, test_acc, seconds, len(history))


def _glyph_data(config: TrainConfig) -> tuple[TensorData, TensorData, TensorData, int]:
    from engine.data import load_glyph_arrays

    parts = {}
    for split in ("train", "val", "test"):
        images, labels, class_names = load_glyph_arrays(
            split, cache_root=config.cache, train_per_class=config.train_per_class, seed=config.seed
        )
        parts[split] = TensorData(torch.from_numpy(images)[:, None], torch.from_numpy(labels))
    return parts["train"], parts["val"], parts["test"], len(class_names)
