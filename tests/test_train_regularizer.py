"""§3.3 on tiny generated data: the penalty cuts the chosen dependency, the control keeps it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso
from torch import nn

from engine.errors import InvalidInputError
from engine.ingest.data import ArrayDataset, prepare_transform
from engine.jobs.context import RunContext
from engine.jobs.kinds import spec_from_dict
from engine.storage.store import Cache
from engine.train.loop import LoopConfig, Samples, fit
from engine.train.regularizer import (
    DependencyPenalty,
    dependency_coefficients,
    ood_aupr,
    regularize_dependencies,
    resolve_pairs,
    strongest_dependency,
)
from engine.train.specs import RegularizerSpec
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
    # A sensible pair (close prototypes): the relative penalty needs β = 2 to cut it here.
    spec = RegularizerSpec(dataset="blobs", model="mlp", pairs=("0,1",), beta=2.0, alpha=0.5, train_per_class=0,
                           epochs=4, batch_size=32, lr=0.01, device="cpu", side_by_side=False)
    ctx = RunContext(cache=Cache(tmp_path / "cache"), run_dir=tmp_path / "run")
    report = json.loads(regularize_dependencies(spec, ctx, train, test, ood, model).read_text())
    m = report["metrics"]
    before, after, control = (m[k]["pairs"][0] for k in ("before", "after", "control"))
    assert abs(before["coef"]) > 0.2  # a real dependency to cut...
    assert abs(after["coef"]) < 0.05 * abs(before["coef"])  # ...cut by the penalty...
    assert abs(control["coef"]) > 0.5 * abs(before["coef"])  # ...and not by fine-tuning alone
    assert abs(after["cov"]) < 0.1 * abs(before["cov"])
    # 'class 0' and 'class 1' share one of their two words: peculiarity 1 − 1/3 by name tokens
    assert report["peculiarity"]["pairs"] == [pytest.approx(2 / 3)]
    assert "name" in report["peculiarity"]["measure"] and report["pair_choice"] is None
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


def _trajectory(scale: float, relative: bool, steps: int = 15) -> np.ndarray:
    """Parameters after each SGD step of a small network whose logits are ``scale`` × its own,
    trained with CE on logits / scale (the same probabilities) + the dependency penalty."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, DIM, generator=g, dtype=torch.float64), torch.arange(96) % K
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(DIM, 16), nn.Tanh(), nn.Linear(16, K)).double()
    pairs = [(0, 1), (3, 2)]
    with torch.no_grad():
        reference = (scale * net(x)).numpy()
    penalty = (DependencyPenalty.relative(pairs, 0.5, reference) if relative
               else DependencyPenalty(pairs, 0.5))
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    out = []
    for step in range(steps):
        batch = slice(32 * (step % 3), 32 * (step % 3 + 1))
        logits = scale * net(x[batch])
        loss = F.cross_entropy(logits / scale, y[batch]) + penalty(logits)
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(torch.cat([p.detach().ravel() for p in net.parameters()]).numpy().copy())
    return np.array(out)


def test_the_relative_penalty_trains_the_same_whatever_the_logits_scale():
    """Logits × 10 (CE adjusted to see the same probabilities): the same trajectory with the
    scale-free penalty; a different one with the paper's raw penalty, which grows 100-fold."""
    np.testing.assert_allclose(_trajectory(10.0, True), _trajectory(1.0, True), rtol=1e-6, atol=1e-8)
    raw1, raw10 = _trajectory(1.0, False), _trajectory(10.0, False)
    assert np.abs(raw10 - raw1).max() > 0.1
    assert np.abs(_trajectory(1.0, True) - raw1).max() > 1e-3  # the two penalties differ at all


def test_relative_penalty_by_hand():
    reference = np.array([[1.0, 2.0, 0.0], [3.0, 4.0, 1.0]])  # C_01 = (2 + 12) / 2 = 7
    logits = torch.tensor([[1.0, 2.0, 0.0], [3.0, -1.0, 1.0]])  # batch mean f_0 f_1 = -0.5
    value = DependencyPenalty.relative([(0, 1)], beta=0.2, reference=reference)(logits)
    assert value.item() == pytest.approx(0.2 * 0.5 / 7)
    # A pair already uncorrelated before falls back on sqrt(E f_i² E f_j²), its largest value.
    reference = np.array([[1.0, 1.0, 0.0], [1.0, -1.0, 1.0]])
    value = DependencyPenalty.relative([(0, 1)], beta=1.0, reference=reference)(logits)
    assert value.item() == pytest.approx(0.5 / 1.0)


def test_the_default_pair_is_the_strongest_peculiar_one():
    from engine.train.regularizer import choose_pair

    coef = np.zeros((4, 4))  # (sources, targets)
    coef[1, 0], coef[2, 3] = 0.8, 0.4  # 0 ← 1 strongest, 3 ← 2 weaker
    names = ["a", "b", "c", "d"]
    sim = np.eye(4)
    sim[0, 1] = sim[1, 0] = 0.9  # a and b look alike
    pair, info = choose_pair(coef, sim, 0.5, names, "test")
    assert pair == (3, 2) and info["chosen"]["peculiarity"] == 1.0
    assert (info["strongest_of_all"]["target"], info["strongest_of_all"]["source"]) == (0, 1)
    assert info["strongest_of_all"]["peculiarity"] == pytest.approx(0.1)
    assert info["rank_among_all"] == 2
    pair, info = choose_pair(coef, None, 0.5, names, "none")
    assert pair == (0, 1) and info["chosen"]["peculiarity"] is None


def test_runs_and_their_summary():
    from engine.train.regularizer import _runs, summarize_runs, verdict

    spec = RegularizerSpec(beta=0.2, sweep=("0.5", "0.2", "0"), seeds=2, seed=3)
    assert spec.betas() == (0.2, 0.5)
    runs = _runs(spec)
    assert [(b, s) for _, b, s in runs] == [(0, 3), (0.2, 3), (0.5, 3), (0, 4), (0.2, 4), (0.5, 4)]
    assert [n for n, _, _ in runs][:3] == ["control", "after", "beta=0.5,seed=3"]
    top1 = {(0, 3): 90.0, (0.2, 3): 89.8, (0.5, 3): 88.0, (0, 4): 91.0, (0.2, 4): 90.6, (0.5, 4): 89.0}
    rows = {n: {"top1": top1[(b, s)], "ood_aupr": 10 + b + s, "pairs": [{"coef": 0.5 - b, "cov": 1.0}]}
            for n, b, s in runs}
    before = {"top1": 92.0, "ood_aupr": 12.0, "pairs": [{"coef": 0.5, "cov": 2.0}]}
    sweep = summarize_runs(runs, rows, before)
    assert [r["beta"] for r in sweep] == [0, 0.2, 0.5]
    at = sweep[1]
    assert at["top1"]["mean"] == pytest.approx(90.2) and at["top1"]["sd"] == pytest.approx(np.std([89.8, 90.6], ddof=1))
    assert at["top1_vs_control"]["mean"] == pytest.approx(-0.3)  # paired by seed: -0.2 and -0.4
    assert at["ood_aupr_vs_control"]["mean"] == pytest.approx(0.2)
    assert at["pairs"][0]["coef_fraction"]["mean"] == pytest.approx(0.3 / 0.5)
    text = " ".join(verdict(sweep, 0.2))
    assert "within 0.5 pt" in text and "not cut by 90 %" in text and "does not improve" not in text
    with pytest.raises(InvalidInputError, match="'sweep'"):
        spec_from_dict("regularizer", {"sweep": ["0.1", "x"]})
    with pytest.raises(InvalidInputError, match="'penalty'"):
        spec_from_dict("regularizer", {"penalty": "log"})


@pytest.mark.slow  # helper processes: 100 s on the loaded 2-core machine
def test_a_sweep_runs_side_by_side_and_matches_the_same_runs_in_turn(tmp_path, world):
    """Three fine-tunes on two cores (control and β = 2 side by side, then β = 4), each evaluated
    where it trained: the same rows as one process running them in turn."""
    train, test, ood, model = world
    common = dict(dataset="blobs", model="mlp", pairs=("0,1",), beta=2.0, sweep=("4",), alpha=0.5,
                  train_per_class=20, epochs=2, batch_size=32, device="cpu")
    reports = []
    for side in (True, False):
        ctx = RunContext(cache=Cache(tmp_path / "cache"), run_dir=tmp_path / f"run-{side}")
        spec = RegularizerSpec(**common, side_by_side=side)
        reports.append(json.loads(regularize_dependencies(spec, ctx, train, test, ood, model).read_text()))
    side, turn = reports
    assert [r["name"] for r in side["runs"]] == ["control", "after", "beta=4,seed=0"]
    assert side["runs"] == turn["runs"] and side["sweep"] == turn["sweep"]
    assert [r["beta"] for r in side["sweep"]] == [0, 2.0, 4.0]
    assert set(side["stores"]) == {"before", "after", "control"}


def test_a_missing_file_of_marked_pairs_is_refused_at_submission(tmp_path):
    from engine.jobs.kinds import check_spec_inputs

    spec = spec_from_dict("regularizer", {"peculiar": str(tmp_path / "marked.txt")})
    with pytest.raises(InvalidInputError, match="'peculiar'"):
        check_spec_inputs("regularizer", spec)
    (tmp_path / "marked.txt").write_text("™,┇\n")
    check_spec_inputs("regularizer", spec)  # glyph-resnet and glyphs exist: nothing to say
