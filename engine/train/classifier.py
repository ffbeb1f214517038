"""Train an image classifier from scratch on the glyph world: how the demo models were made.

The recipe of :class:`TrainConfig` (AdamW, one-cycle learning rate, label smoothing, bf16
autocast where it is fast, seeded) runs through the project's one training loop
(:func:`engine.train.loop.fit`): a checkpoint after every epoch, and a run started again
with the same output folder resumes from the last one. The final fp32 weights go to
``<out_dir>/weights.safetensors`` with a JSON of the config and the measured accuracy.

    >>> from engine.train.classifier import TrainConfig, train_classifier
    >>> result = train_classifier(TrainConfig(model="glyph-resnet", epochs=8, out_dir="runs/r"))
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from engine.ingest.data import GlyphDataset, ImageDataset, prepare_transform
from engine.ingest.glyphs import GlyphConfig
from engine.ingest.models import resolve_arch
from engine.storage.atomic import commit, sha256_file, temp_file, write_json_atomic
from engine.storage.layout import DEFAULT_CACHE
from engine.train.loop import LoopConfig, Samples, accuracy, fit, use_bf16, use_threads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """One training run; stored beside its checkpoints and final weights."""

    model: str = "glyph-resnet"  # demo model name (engine.ingest.models.DEMO_MODELS) or timm architecture
    dataset: str = "glyphs"  # dataset registry name (the glyph world)
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
    cache: str = str(DEFAULT_CACHE)  # where the glyph world's rendered splits are cached
    out_dir: str = "runs/glyph-resnet"
    model_kwargs: dict = field(default_factory=dict)  # extra timm.create_model arguments

    def __hash__(self) -> int:  # model_kwargs is a dict; hash the canonical JSON instead
        return hash(json.dumps(asdict(self), sort_keys=True))

    def loop_config(self) -> LoopConfig:
        return LoopConfig(epochs=self.epochs, lr=self.lr, weight_decay=self.weight_decay,
                          batch_size=self.batch_size, optimizer="adamw", schedule="onecycle",
                          warmup_frac=self.warmup_frac, label_smoothing=self.label_smoothing,
                          seed=self.seed, precision=self.precision)


@dataclass(frozen=True)
class TrainResult:
    weights: Path  # final weights (safetensors)
    val_acc: float
    test_acc: float
    seconds: float
    epochs_run: int


def glyph_splits(config: TrainConfig) -> tuple[GlyphDataset, GlyphDataset, GlyphDataset]:
    """The glyph world's train / val / test splits as the config renders them.

    The world (its classes and images) is the demo's whatever the training seed: models trained
    with different seeds must classify the same categories to be compared."""
    world = GlyphConfig(train_per_class=config.train_per_class)
    return tuple(GlyphDataset(split, config.cache, world) for split in ("train", "val", "test"))


def train_classifier(
    config: TrainConfig,
    train: ImageDataset | None = None,
    val: ImageDataset | None = None,
    test: ImageDataset | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> TrainResult:
    """Train ``config.model`` and write ``<out_dir>/weights.safetensors`` + ``weights.json``.

    Data default to the glyph world's splits; pass datasets (``engine.ingest.data``) to train on
    something else, e.g. an :class:`~engine.ingest.data.ArrayDataset` of a few classes.
    """
    if train is None:
        train, val, test = glyph_splits(config)
    use_threads(config.threads)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    model = timm.create_model(resolve_arch(config.model), pretrained=False, num_classes=train.num_classes,
                              **config.model_kwargs)
    device = torch.device("cpu")
    _, _, transform = prepare_transform(model, train)
    for data in (val, test):
        if data is not None:
            prepare_transform(model, data)
    bf16 = use_bf16(config.precision, device)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "config.json", asdict(config))
    t0 = time.perf_counter()
    history = fit(model, Samples.all_of(train), config.loop_config(), out, device=device, transform=transform,
                  progress=progress, phase=config.model,
                  after_epoch=(lambda m: {"val_acc": accuracy(m, val, device, transform, bf16)}) if val else None)
    return _finish(config, model, out, val, test, transform, history, time.perf_counter() - t0)


def _finish(config: TrainConfig, model: nn.Module, out: Path, val: ImageDataset | None,
            test: ImageDataset | None, transform, history: list, seconds: float) -> TrainResult:
    """Write the final fp32 weights and a JSON with the config and the measured accuracy."""
    model = model.to(memory_format=torch.contiguous_format).eval()
    cpu = torch.device("cpu")
    val_acc = accuracy(model, val, cpu, transform) if val is not None else float("nan")
    test_acc = accuracy(model, test, cpu, transform) if test is not None else float("nan")
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
