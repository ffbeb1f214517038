"""Training's job kinds: the spec of each training application, and their registration.

The paper's §3.2 (new categories from old ones), §3.3 (the dependency regulariser) and the
emergence runs. Training registers its kinds into the job system (training imports jobs,
never the reverse); see :mod:`engine.jobs.kinds`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from engine.jobs.kinds import JobKind, _device, _fail, _non_negative, _positive, register_kind

_PAIR_RE = re.compile(r"^[^,]+,[^,]+$")


@dataclass(frozen=True)
class NewClassesSpec:
    """Paper §3.2: new categories as ``W · f_base(x)`` over a frozen backbone's base logits.

    The backbone is trained on the base classes, frozen, and W (new × base, no bias) is
    learned with cross-entropy over all ``[f_base; W f_base]`` logits on the new classes'
    training images, plus ``base_negatives`` images per base class: with none (the paper's
    wording taken literally) nothing stops W from outscoring the base logits on base images,
    and accuracy over all classes collapses (docs/jobs-and-training.md). A baseline of the same architecture and recipe is trained on all the
    classes. The paper's settings are ``n_new`` = 100, 50, 1 out of 1,000 (900→100, 950→50,
    999→1: ``num_classes=0`` with the glyph world). The defaults keep the same 9:1 split on
    the glyph world's first 200 classes (180→20): both networks from scratch, 8 epochs, side by
    side on two cores (about 3 minutes on an idle 2-core CPU, see docs/jobs-and-training.md);
    the full 1,000 classes are five times the work.
    """

    dataset: str = "glyphs"  # dataset registry name or ImageFolder root with train/ and test/
    arch: str = "glyph-cnn"  # backbone architecture (glyph-cnn, registry or timm name), from scratch
    num_classes: int = 200  # use the first N classes of the dataset (0 = all; the paper: 1,000)
    n_new: int = 20  # new categories, the rest are base (paper: 100, 50, 1 of 1,000)
    new_classes: str = "random"  # which ones are new: "random" (from seed) or "last"
    epochs: int = 8  # backbone and baseline epochs (the paper: 90 on ImageNet)
    w_epochs: int = 60  # epochs over the new classes' precomputed base logits (paper: 60)
    lr: float = 2e-3  # backbone / baseline AdamW peak learning rate (one-cycle)
    w_lr: float = 1e-2  # AdamW learning rate of W
    weight_decay: float = 0.05
    w_weight_decay: float = 0.0
    w_batch_size: int = 1024  # mini-batch of W's training (a convex problem over fixed logits)
    batch_size: int = 128
    base_negatives: int = 50  # training images per base class that W also sees (0: see below)
    baseline: bool = True  # train the all-class baseline too (the comparison of Tables 2 and 4)
    binary_pairs: int = 500  # positive/negative pairs of the one-new-class test (paper: 500)
    train_per_class: int = 0  # cap on training images per class (0 = all)
    seed: int = 0
    device: str = "auto"
    workers: int = 0  # DataLoader workers (image files)
    threads: int = 1  # CPU threads (0: one per core); 1 is fastest on a CPU shared with other work
    side_by_side: bool = True  # CPU: train the baseline in a helper process beside the backbone

    def __post_init__(self) -> None:
        k = "newclasses"
        for name in ("dataset", "arch"):
            if not getattr(self, name):
                _fail(k, name, "", "must not be empty")
        _positive(k, n_new=self.n_new, epochs=self.epochs, w_epochs=self.w_epochs, lr=self.lr,
                  w_lr=self.w_lr, batch_size=self.batch_size, w_batch_size=self.w_batch_size)
        _non_negative(k, num_classes=self.num_classes, weight_decay=self.weight_decay,
                      w_weight_decay=self.w_weight_decay, base_negatives=self.base_negatives,
                      binary_pairs=self.binary_pairs, train_per_class=self.train_per_class,
                      seed=self.seed, workers=self.workers, threads=self.threads)
        if self.num_classes and self.num_classes < self.n_new + 2:
            _fail(k, "n_new", self.n_new,
                  f"expected at most num_classes - 2 = {self.num_classes - 2} (at least 2 base classes)")
        if self.new_classes not in ("random", "last"):
            _fail(k, "new_classes", self.new_classes, "expected 'random' or 'last'")
        _device(k, self.device)


@dataclass(frozen=True)
class RegularizerSpec:
    """Paper §3.3: fine-tune with ``CE + β·Σ_pairs |mean_batch f_i f_j| / |C_ij before|`` to cut dependencies.

    Starting from a trained model, fine-tunes run with the same recipe and seed: one with
    the regulariser (β) and a control with β = 0, so that differences come from the
    regulariser alone. Reported: top-1 accuracy, the CovLasso coefficient θ_j of target i
    (at ``alpha``) before and after, and OOD AUPR (score −max softmax, OOD positive). The
    paper fine-tunes 30 epochs with SGD lr 0.01, momentum 0.9, weight decay 5e-4, β = 0.2 on
    the raw penalty, and cuts one dependency it chose by hand as "not sensible for humans".
    Here, with no ``pairs``, the strongest *peculiar* dependency is cut (``peculiar``: shapes
    in the glyph world, names for ImageNet-like classes, or a file of pairs the user marked),
    and the penalty is divided by the pair's ``|C_ij|`` before fine-tuning (``penalty =
    relative``), so β does not depend on the logits' scale (``raw``: the paper's literal
    penalty). ``sweep`` adds β values, ``seeds`` repeats everything over consecutive seeds.
    """

    dataset: str = "glyphs"  # dataset registry name or ImageFolder root with train/ and test/
    model: str = "glyph-resnet"  # trained model: registry name (demo model, timm name)
    checkpoint: str = ""  # local checkpoint for the model ('' = the registry's weights)
    ood: str = "glyphs-ood"  # OOD dataset: registry name or ImageFolder path (ImageNet-O)
    num_classes: int = 0  # the model's classes are the dataset's first N (0 = all)
    pairs: tuple[str, ...] = ()  # "TARGET,SOURCE" (index or class name); empty = strongest peculiar one
    peculiar: str = "auto"  # how pairs are judged: auto, shapes, names, none, or a file of marked pairs
    min_peculiarity: float = 0.5  # a dependency is peculiar at 1 − similarity ≥ this
    # weight of the (relative) regulariser; 0.1 measured on the demo: θ of the cut pair 0 (from
    # −0.44), top-1 −0.17 pt against the control; 0.3 and 1 too (−0.26, −0.39 pt), 3 costs −0.89 pt
    # (docs/jobs-and-training.md). The paper: 0.2 on the raw penalty.
    beta: float = 0.1
    sweep: tuple[str, ...] = ()  # more β values to fine-tune with, e.g. 0.05 0.1 0.5 (the trade-off chart)
    penalty: str = "relative"  # "relative": divided by |C_ij| before fine-tuning; "raw": the paper's
    alpha: float = 0.25  # CovLasso α for the coefficient before/after (glyph logits' scale)
    epochs: int = 2  # fine-tuning epochs (paper: 30)
    lr: float = 0.01  # SGD, as the paper
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    train_per_class: int = 8  # training images per class for fine-tuning (0 = all 48)
    control: bool = True  # also fine-tune with β = 0 (the baseline of Table 3)
    seed: int = 0
    seeds: int = 1  # repeat every fine-tune with seeds seed, seed + 1, …: mean ± sd (paper: 5 runs)
    device: str = "auto"
    workers: int = 0  # DataLoader workers (image files)
    threads: int = 1  # CPU threads (0: one per core); 1 is fastest on a CPU shared with other work
    side_by_side: bool = True  # CPU: fine-tune the control in a helper process beside ours

    def __post_init__(self) -> None:
        k = "regularizer"
        for name in ("dataset", "model"):
            if not getattr(self, name):
                _fail(k, name, "", "must not be empty")
        _positive(k, alpha=self.alpha, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                  seeds=self.seeds)
        _non_negative(k, beta=self.beta, momentum=self.momentum, weight_decay=self.weight_decay,
                      train_per_class=self.train_per_class, seed=self.seed, workers=self.workers,
                      num_classes=self.num_classes, threads=self.threads, min_peculiarity=self.min_peculiarity)
        for pair in self.pairs:
            if not isinstance(pair, str) or not _PAIR_RE.match(pair):
                _fail(k, "pairs", pair, "expected 'TARGET,SOURCE' with a class index or name each")
            target, source = (p.strip() for p in pair.split(","))
            if target == source:
                _fail(k, "pairs", pair, "target and source must be different categories")
        for value in self.sweep:
            try:
                ok = math.isfinite(float(value)) and float(value) >= 0
            except ValueError:
                ok = False
            if not ok:
                _fail(k, "sweep", value, "expected β values, finite numbers >= 0, e.g. 0.05 0.1 0.5")
        if self.penalty not in ("relative", "raw"):
            _fail(k, "penalty", self.penalty, "expected 'relative' or 'raw'")
        if self.min_peculiarity > 1:
            _fail(k, "min_peculiarity", self.min_peculiarity, "expected a number in [0, 1]")
        if self.seeds > 20:
            _fail(k, "seeds", self.seeds, "expected at most 20")
        if not self.peculiar:
            _fail(k, "peculiar", "", "expected auto, shapes, names, none or a file of 'TARGET,SOURCE' lines")
        _device(k, self.device)

    def betas(self) -> tuple[float, ...]:
        """The β values fine-tuned with (besides the control): ``beta`` and the sweep's, > 0, sorted."""
        return tuple(sorted({b for b in (self.beta, *map(float, self.sweep)) if b > 0}))

@dataclass(frozen=True)
class EmergenceSpec:
    """Emergence: how dependencies appear as a model trains and as its categories grow.

    For each number of ``categories`` (nested subsets: the first k of the dataset's classes in
    a fixed order drawn with ``order_seed``, the same images per class) the same architecture
    and recipe are trained from scratch; checkpoints at ``fractions`` of the first epoch and at
    the end of every epoch are measured on the test split of those categories: top-1, the
    logit spectrum, the share of categories fitting with ≤ 4 / ≤ 6 sources, the median R²,
    §2.2's redundancy. Each checkpoint's test logits become a store. The defaults are
    ``glyph-vgg``'s recipe (AdamW one-cycle, peak 2e-3, no label smoothing, a rank-64 head),
    on 50 images per category.

    With ``checkpoint_dir`` (a folder of a user's checkpoints of the timm architecture ``model``,
    ordered by the last number in each file name, taken as its epoch) nothing is trained:
    each checkpoint is measured on ``dataset`` (an ImageFolder; its ``test/`` or ``val/`` folder
    when it has one), with all its categories.
    """

    model: str = "glyph-vgg"  # demo model (its architecture), glyph architecture or timm name
    dataset: str = "glyphs"  # 'glyphs' or an ImageFolder root with train/ and test/ (or val/)
    categories: tuple[str, ...] = ("20", "50", "100")  # numbers of categories (nested subsets)
    epochs: int = 1  # epochs of each training run; a checkpoint after each
    fractions: tuple[str, ...] = ("0.1", "0.25", "0.5")  # checkpoints inside the first epoch
    train_per_class: int = 50  # training images per category (glyph world: rendered; folders: at most)
    rank: int = 64  # glyph architectures: a rank-R head, as the demo models (0 = a plain linear head)
    label_smoothing: float = 0.0
    lr: float = 2e-3  # peak learning rate of the one-cycle schedule
    weight_decay: float = 0.05
    batch_size: int = 128
    seed: int = 0  # initialisation and batch order
    order_seed: int = 0  # the order in which categories join the nested subsets
    checkpoint_dir: str = ""  # a folder of the user's checkpoints: measure them instead of training
    threads: int = 1  # CPU threads (1 is fastest on a shared CPU)

    def __post_init__(self) -> None:
        k = "emergence"
        for name in ("model", "dataset"):
            if not getattr(self, name):
                _fail(k, name, "", "must not be empty")
        if not self.checkpoint_dir:
            if not self.categories:
                _fail(k, "categories", [], "give at least one number of categories, e.g. 20 50 100")
            for value in self.categories:
                if not re.fullmatch(r"\d+", str(value).strip()) or int(value) < 2:
                    _fail(k, "categories", value, "expected whole numbers of categories, each at least 2")
            if len(set(self.category_counts())) != len(self.categories):
                _fail(k, "categories", list(self.categories), "expected distinct numbers of categories")
        for value in self.fractions:
            try:
                f = float(value)
            except ValueError:
                f = float("nan")
            if not 0 < f < 1:
                _fail(k, "fractions", value, "expected fractions of the first epoch strictly between 0 and 1")
        _positive(k, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size)
        _non_negative(k, train_per_class=self.train_per_class, rank=self.rank, label_smoothing=self.label_smoothing,
                      weight_decay=self.weight_decay, seed=self.seed, order_seed=self.order_seed,
                      threads=self.threads)
        if self.label_smoothing >= 1:
            _fail(k, "label_smoothing", self.label_smoothing, "expected a number in [0, 1)")

    def category_counts(self) -> list[int]:
        """The numbers of categories, ascending."""
        return sorted(int(v) for v in self.categories)

    def epoch_points(self) -> list[float]:
        """Where checkpoints are measured, in epochs: the fractions of the first, then 1, 2, …"""
        return sorted({float(f) for f in self.fractions}) + [float(e) for e in range(1, self.epochs + 1)]


def _check_emergence(spec, cache, fail) -> None:
    """The numbers of categories against the data, the checkpoints against the model."""
    from engine.train.emergence_inputs import check_emergence_inputs

    check_emergence_inputs(spec, cache, fail)


for _kind in (
    JobKind("newclasses", NewClassesSpec, "engine.train.newclasses:run_job", "New categories from old ones (§3.2)",
            rank=0, data_fields={"dataset": ("glyphs",)}, model_fields=("arch",)),
    JobKind("regularizer", RegularizerSpec, "engine.train.regularizer:run_job", "Dependency regulariser (§3.3)",
            rank=1, data_fields={"dataset": ("glyphs",), "ood": ("glyphs-ood", "")}, model_fields=("model",)),
    JobKind("emergence", EmergenceSpec, "engine.train.emergence:run_job",
            "Emergence: dependencies over training and categories", rank=8,
            data_fields={"dataset": ("glyphs",)}, model_fields=("model",), check=_check_emergence),
):
    register_kind(_kind)
