"""The training loop: it learns; an interrupted run resumes to the same weights; the recipe's
learning-rate schedule and parameter groups."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.ingest.data import prepare_transform
from engine.train.loop import LoopConfig, Samples, accuracy, fit, learning_rate, load_checkpoint
from tests.tiny_images import blob_images, image_mlp
from tests.torch_threads import one_torch_thread  # noqa: F401  (autouse fixture)

CPU = torch.device("cpu")


class Interrupt(Exception):
    pass


def _data():
    protos = 2 * torch.randn(4, 24, generator=torch.Generator().manual_seed(0))
    return blob_images(protos, 24, 1, noise=0.8)


def _model():
    torch.manual_seed(0)
    model = image_mlp(4)
    model.insert(3, torch.nn.Dropout(0.2))  # randomness inside an epoch, to be replayed on resume
    return model


@pytest.mark.parametrize("optimizer,schedule", [("adamw", "onecycle"), ("sgd", "cosine")])
def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, optimizer, schedule):
    cfg = LoopConfig(epochs=4, lr=0.05, weight_decay=1e-4, batch_size=16, optimizer=optimizer,
                     schedule=schedule, seed=3)
    data = _data()
    straight = _model()
    _, _, tf = prepare_transform(straight, data)
    untrained = accuracy(straight, data, CPU, tf)
    history = fit(straight, Samples.all_of(data), cfg, tmp_path / "straight", device=CPU, transform=tf)
    assert history[-1]["ce"] < history[0]["ce"] and accuracy(straight, data, CPU, tf) > max(0.9, untrained)

    def stop_in_epoch_three(fraction, message):
        if "epoch 3/4" in message:
            raise Interrupt()

    broken = _model()
    with pytest.raises(Interrupt):
        fit(broken, Samples.all_of(data), cfg, tmp_path / "broken", device=CPU, transform=tf,
            progress=stop_in_epoch_three)
    assert len(load_checkpoint(tmp_path / "broken" / "last.pt")["history"]) == 2  # epochs 1-2 saved
    resumed = _model()
    fit(resumed, Samples.all_of(data), cfg, tmp_path / "broken", device=CPU, transform=tf)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_targets_relabel_a_class_subset(tmp_path):
    """Training on classes {1, 3} relabelled 0 and 1: the model learns to tell those two apart."""
    data = _data()
    idx = np.flatnonzero(np.isin(data.labels, [1, 3]))
    targets = np.array([-1, 0, -1, 1])
    torch.manual_seed(0)
    model = image_mlp(2)
    _, _, tf = prepare_transform(model, data)
    fit(model, Samples(data, idx, targets), LoopConfig(epochs=6, lr=0.02, weight_decay=0.0, batch_size=8),
        tmp_path, device=CPU, transform=tf)
    with torch.no_grad():
        pred = model(tf(data.images[idx])).argmax(1).numpy()
    assert (pred == targets[data.labels[idx]]).mean() > 0.9


def test_learning_rate_schedules_by_hand():
    one = LoopConfig(epochs=1, lr=1.0, weight_decay=0, batch_size=1, warmup_frac=0.1)
    assert learning_rate(one, 0, 100) == pytest.approx(1 / 25)  # warm-up starts at lr/25
    assert learning_rate(one, 5, 100) == pytest.approx(1 / 25 + (1 - 1 / 25) * 0.5)  # linear
    assert learning_rate(one, 10, 100) == pytest.approx(1.0)  # peak after the warm-up
    assert learning_rate(one, 55, 100) == pytest.approx(1e-4 + (1 - 1e-4) * 0.5)  # cosine half-way
    assert learning_rate(one, 100, 100) == pytest.approx(1e-4)
    cos = LoopConfig(epochs=1, lr=0.1, weight_decay=0, batch_size=1, schedule="cosine")
    assert [learning_rate(cos, s, 4) for s in (0, 2, 4)] == pytest.approx([0.1, 0.05, 0.0])
    assert learning_rate(cos, 1, 4) == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)))


def test_weight_decay_spares_biases_and_norms(tmp_path):
    """One AdamW step at lr 1e-3 (the warm-up's first, lr/25) with weight decay 100: decayed
    tensors shrink by 1 - 1e-3·100 = 0.9, while Adam's own step moves each entry by ~1e-3."""
    data = _data()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                                torch.nn.Flatten(), torch.nn.Linear(96, 4))
    model.pretrained_cfg = image_mlp(4).pretrained_cfg
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _, _, tf = prepare_transform(model, data)
    fit(model, Samples.all_of(data), LoopConfig(epochs=1, lr=2.5e-2, weight_decay=100.0, batch_size=96),
        tmp_path, device=CPU, transform=tf)
    after = model.state_dict()
    shrink = {k: after[k].norm().item() / before[k].norm().item() for k in ("0.weight", "3.weight", "1.weight")}
    assert shrink["0.weight"] < 0.95 and shrink["3.weight"] < 0.95  # decayed
    assert shrink["1.weight"] > 0.995  # the norm's scale is not decayed (only moved by Adam's step)
    assert (after["0.bias"] - before["0.bias"]).abs().max() < 2e-3  # nor the biases
