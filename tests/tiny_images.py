"""Tiny in-memory image worlds for training tests: Gaussian blobs drawn as 1×4×6 uint8 images,
and a small MLP over them that declares its input like a timm model (``pretrained_cfg``)."""

from __future__ import annotations

import torch
from torch import nn

from engine.ingest.data import ArrayDataset

SHAPE = (1, 4, 6)  # 24 pixels: one blob coordinate each
DIM = 24
DATA_CONFIG = {"input_size": SHAPE, "mean": (0.5,), "std": (0.125,), "interpolation": "bilinear",
               "crop_pct": 1.0}


def blob_images(protos: torch.Tensor, per_class: int, seed: int, noise: float, name: str = "blobs",
                split: str = "train") -> ArrayDataset:
    """``per_class`` images of each prototype (K, 24) plus Gaussian noise, as uint8 pixels
    (pixel = 128 + 32·x, so the data config above turns them back into x)."""
    g = torch.Generator().manual_seed(seed)
    k = len(protos)
    y = torch.arange(k).repeat_interleave(per_class)
    x = protos[y] + noise * torch.randn(len(y), DIM, generator=g)
    pixels = (128 + 32 * x).round().clamp(0, 255).to(torch.uint8).reshape(len(y), *SHAPE)
    return ArrayDataset(pixels, y.numpy(), [f"class {i}" for i in range(k)], name, split)


def image_mlp(n_out: int, hidden: int = 32) -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(DIM, hidden), nn.ReLU(), nn.Linear(hidden, n_out))
    model.pretrained_cfg = DATA_CONFIG  # what timm.data.resolve_data_config reads
    model.num_classes = n_out
    return model
