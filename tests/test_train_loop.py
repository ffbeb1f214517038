"""The training loop: an interrupted run resumes from its last epoch to the same weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from engine.train.loop import LoopConfig, fit, load_checkpoint
from tests.torch_threads import one_torch_thread  # noqa: F401  (autouse fixture)


class Interrupt(Exception):
    pass



def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 8, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long())


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 4))


@pytest.mark.parametrize("optimizer,schedule", [("adamw", "onecycle"), ("sgd", "cosine")])
def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, optimizer, schedule):
    cfg = LoopConfig(epochs=4, lr=0.05, weight_decay=1e-4, batch_size=16, optimizer=optimizer,
                     schedule=schedule, seed=3)
    device = torch.device("cpu")
    straight = _model()
    history = fit(straight, _data(), cfg, tmp_path / "straight", device=device)
    assert history["ce"][-1] < history["ce"][0]  # it learns

    def stop_in_epoch_three(fraction, message):
        if "epoch 3/4" in message:
            raise Interrupt()

    broken = _model()
    with pytest.raises(Interrupt):
        fit(broken, _data(), cfg, tmp_path / "broken", device=device, progress=stop_in_epoch_three)
    assert load_checkpoint(tmp_path / "broken" / "last.pt")["epoch"] == 1  # epochs 1-2 saved
    resumed = _model()
    fit(resumed, _data(), cfg, tmp_path / "broken", device=device)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
