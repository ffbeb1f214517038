"""What the two applications need from a dataset, and class subsets of it.

:class:`Splits` is the applications' whole view of the data: a training and a test set of
``(image tensor, label)`` pairs with their labels known up front (so class subsets are
chosen without decoding images), the class names, and an identity for the samples. The
registries (``engine.data``, ``engine.models``) fill it for named datasets and models; tests
fill it with tiny tensors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from engine.atomic import sha256_bytes


@dataclass(frozen=True)
class Splits:
    """Train and test sets of one dataset, with labels known without reading images."""

    train: Dataset  # yields (image tensor, int label)
    test: Dataset
    train_labels: np.ndarray  # (N_train,) int64
    test_labels: np.ndarray  # (N_test,) int64
    class_names: list[str]
    identity: str  # names the dataset and its version (goes into sample fingerprints)
    # (class, count, seed) -> that many fresh images of the class, never seen in any split;
    # for datasets that can make more (the glyph world renders them), else None
    fresh_images: Callable[[int, int, int], Dataset] | None = None
    # the test samples' ids as engine.extract names them, so that stores written here pair
    # with stores extracted from the same samples (None: fingerprints of our own)
    test_sample_ids: list[str] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class Relabeled(Dataset):
    """The samples ``indices`` of ``base`` with labels mapped through ``label_map``."""

    def __init__(self, base: Dataset, indices: np.ndarray, label_map: np.ndarray):
        self.base, self.indices, self.label_map = base, np.asarray(indices, dtype=np.int64), label_map

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        x, y = self.base[int(self.indices[i])]
        return x, int(self.label_map[int(y)])


def select_indices(labels: np.ndarray, classes: np.ndarray, per_class: int = 0) -> np.ndarray:
    """Indices of the samples whose label is in ``classes`` (the first ``per_class`` of each
    class when ``per_class`` > 0), in dataset order."""
    keep = np.isin(labels, classes)
    if per_class > 0:
        rank = np.zeros(len(labels), dtype=np.int64)
        seen: dict[int, int] = {}
        for i, y in enumerate(labels.tolist()):
            rank[i] = seen.get(y, 0)
            seen[y] = rank[i] + 1
        keep &= rank < per_class
    return np.flatnonzero(keep)


def label_map_for(classes: np.ndarray, num_classes: int) -> np.ndarray:
    """Map from dataset labels to positions in ``classes`` (−1 for the others)."""
    out = np.full(num_classes, -1, dtype=np.int64)
    out[np.asarray(classes)] = np.arange(len(classes))
    return out


def test_fingerprint(splits: Splits, indices: np.ndarray) -> str:
    """Sample fingerprint of test samples ``indices``: stores over the same samples pair.

    With sample ids, the same fingerprint ``engine.extract`` gives those samples.
    """
    if splits.test_sample_ids is not None:
        return "samples:" + sha256_bytes("\n".join(splits.test_sample_ids[i] for i in indices).encode())
    body = f"{splits.identity}|test|".encode() + np.ascontiguousarray(indices, dtype=np.int64).tobytes()
    return "subset:" + sha256_bytes(body)


def tensor_splits(
    x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
    class_names: list[str] | None = None, identity: str = "tensors",
) -> Splits:
    """Splits over in-memory tensors (generated data, tests)."""
    from torch.utils.data import TensorDataset

    k = int(max(int(y_train.max()), int(y_test.max())) + 1)
    return Splits(
        train=TensorDataset(x_train, y_train), test=TensorDataset(x_test, y_test),
        train_labels=y_train.numpy().astype(np.int64), test_labels=y_test.numpy().astype(np.int64),
        class_names=class_names or [f"class {i}" for i in range(k)], identity=identity,
    )


def checkpoint_dir(run_dir: Path, *identities: str) -> Path:
    """Where a run keeps its checkpoints: under ``run_dir``, keyed by what it was trained from
    (the data's identity, the starting weights...), so a run over changed data or weights
    starts afresh instead of resuming checkpoints that belong to something else."""
    return Path(run_dir) / ("data-" + sha256_bytes("|".join(identities).encode())[:12])


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of a model's weights and buffers (names, shapes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
