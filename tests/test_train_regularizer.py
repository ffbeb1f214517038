"""§3.3 on tiny generated data: the penalty cuts the chosen dependency, the control keeps it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso
from torch import nn

from engine.data import ArrayDataset, prepare_transform
from engine.errors import InvalidInputError
from engine.jobs.context import RunContext
from engine.jobs.specs import RegularizerSpec, spec_from_dict
from engine.store import Cache
from engine.train.loop import LoopConfig, Samples, fit
from engine.train.regularizer import (
    DependencyPenalty,
    dependency_coefficients,
    ood_aupr,
    regularize_dependencies,
    resolve_pairs,
    strongest_dependency,
)
from tests.tiny_images import DIM, SHAPE, blob_images, image_mlp
from tests.torch_threads import one_torch_thread  # noqa: F401  (autouse fixture)

K = 8


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Eight blobs, classes 0 and 1 close together (so f_0 depends on f_1), and a model."""
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(K, DIM, generator=g)
    protos[1] = protos[0] + 0.5 * torch.randn(DIM, generator=g)
    train, test = blob_images(protos, 60, 1, noise=0.7), blob_images(protos, 40, 2, noise=0.7, split="test")
    noise = (128 + 32 * torch.randn(200, DIM, generator=g)).clamp(0, 255).to(torch.uint8)
    ood = ArrayDataset(noise.reshape(200, *SHAPE), np.zeros(200), ["noise"], "noise", "ood")
    torch.manual_seed(0)
    model = image_mlp(K)
    _, _, tf = prepare_transform(model, train)
    fit(model, Samples.all_of(train), LoopConfig(epochs=8, lr=1e-2, weight_decay=0.0, batch_size=32),
        tmp_path_factory.mktemp("pretrain"), device=torch.device("cpu"), transform=tf)
    return train, test, ood, model


def test_penalty_drives_the_coefficient_to_zero(tmp_path, world):
    train, test, ood, model = world
    spec = RegularizerSpec(dataset="blobs", model="mlp", pairs=("0,1",), beta=0.2, alpha=0.5, train_per_class=0,
                           epochs=4, batch_size=32, lr=0.01, device="cpu", side_by_side=False)
    ctx = RunContext(cache=Cache(tmp_path / "cache"), run_dir=tmp_path / "run")
    report = json.loads(regularize_dependencies(spec, ctx, train, test, ood, model).read_text())
    m = report["metrics"]
    before, after, control = (m[k]["pairs"][0] for k in ("before", "after", "control"))
    assert abs(before["coef"]) > 0.2  # a real dependency to cut...
    assert abs(after["coef"]) < 0.05 * abs(before["coef"])  # ...cut by the penalty...
    assert abs(control["coef"]) > 0.5 * abs(before["coef"])  # ...and not by fine-tuning alone
    assert abs(after["cov"]) < 0.1 * abs(before["cov"])
    for row in m.values():  # the classifier still works (chance is 12.5 %)
        assert row["top1"] > 85 and 0 <= row["ood_aupr"] <= 100
    cache = Cache(tmp_path / "cache")
    stored = cache.load_store(report["stores"]["after"])
    assert stored.logits.shape == (K * 40, K)
    assert dependency_coefficients(stored.logits, 0, 0.5)[1] == pytest.approx(after["coef"])
    # The model handed in is left as it was (both fine-tunes start from a copy).
    again = json.loads(regularize_dependencies(spec, ctx, train, test, ood, model).read_text())
    assert again["metrics"]["before"] == m["before"]


def test_coefficients_match_sklearn_lasso():
    rng = np.random.default_rng(0)
    h = rng.standard_normal((400, 5))
    logits = h @ rng.standard_normal((5, 9)) + 0.3 * rng.standard_normal((400, 9))
    for alpha in (0.05, 0.3):
        theta = dependency_coefficients(logits.astype(np.float32), 2, alpha)
        x = np.delete(logits.astype(np.float32).astype(np.float64), 2, axis=1)
        ref = Lasso(alpha=alpha, fit_intercept=False, tol=1e-10, max_iter=100_000).fit(
            x, logits.astype(np.float32).astype(np.float64)[:, 2]).coef_
        assert theta[2] == 0
        np.testing.assert_allclose(np.delete(theta, 2), ref, atol=1e-5)


def test_strongest_dependency_finds_a_planted_copy():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((500, 6))
    logits[:, 4] = 0.9 * logits[:, 1] + 0.05 * rng.standard_normal(500)
    assert strongest_dependency(logits, 0.05) in ((4, 1), (1, 4))
    with pytest.raises(InvalidInputError, match="no category has a dependency"):
        strongest_dependency(logits, 1e6)


def test_penalty_and_aupr_by_hand():
    logits = torch.tensor([[1.0, 2.0, 0.0], [3.0, -1.0, 1.0]], requires_grad=True)
    value = DependencyPenalty([(0, 1), (2, 0)], beta=0.5)(logits)
    assert value.item() == pytest.approx(0.5 * (abs((2 - 3) / 2) + abs((0 + 3) / 2)))
    confident = np.array([[10.0, 0, 0]] * 4)
    unsure = np.zeros((4, 3))
    assert ood_aupr(confident, unsure) == pytest.approx(100.0)  # OOD all score higher
    assert ood_aupr(unsure, confident) == pytest.approx(50.0)  # all below: precision 1/2


def test_pairs_are_resolved_or_rejected():
    names = ["e (LATIN SMALL LETTER E)", "é (LATIN SMALL LETTER E WITH ACUTE)", "O (LATIN CAPITAL LETTER O)"]
    assert resolve_pairs(("é,e", "2,0"), names) == [(1, 0), (2, 0)]
    with pytest.raises(InvalidInputError, match="out of range"):
        resolve_pairs(("0,7",), names)
    with pytest.raises(InvalidInputError, match="'x' matches 0"):
        resolve_pairs(("x,e",), names)
    with pytest.raises(InvalidInputError, match="'pairs'"):
        spec_from_dict("regularizer", {"pairs": ["0;1"]})
    with pytest.raises(InvalidInputError, match="'beta'"):
        spec_from_dict("regularizer", {"beta": -1})
    with pytest.raises(InvalidInputError, match="'alpha'"):
        spec_from_dict("regularizer", {"alpha": "nan"})


def test_checkpoints_are_keyed_by_the_data_and_the_starting_weights(tmp_path):
    from engine.train.appdata import checkpoint_dir, model_fingerprint

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))  # 0-d buffer num_batches_tracked
    same = model_fingerprint(net)
    assert same == model_fingerprint(net)
    with torch.no_grad():
        net[0].weight[0, 0, 0, 0] += 1e-3
    assert model_fingerprint(net) != same
    assert checkpoint_dir(tmp_path, "data-a", same) != checkpoint_dir(tmp_path, "data-b", same)
    assert checkpoint_dir(tmp_path, "data-a", same).parent == tmp_path
