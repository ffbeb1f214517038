"""One frozen dataclass per job kind: what a job does, validated before it is launched.

A spec is plain data (no torch import here), so the CLI and the dashboard can build forms
from it, check it and store it beside the job's results. Every field has a default that
reproduces the paper's setting where the paper gives one, scaled to the embedded glyph world
where it must be (the docstring says which). ``spec_from_dict`` is the one boundary where
user input (CLI strings, JSON, form values) becomes a spec; a bad value raises
:class:`InvalidInputError` naming the field, the value and what is expected.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass
from typing import Any

from engine.errors import InvalidInputError
from engine.storage.atomic import canonical_json, sha256_bytes

_DEVICES = ("auto", "cpu", "cuda")
_PAIR_RE = re.compile(r"^[^,]+,[^,]+$")


def _fail(kind: str, name: str, value: Any, expected: str) -> None:
    raise InvalidInputError(f"{kind} job: field '{name}' = {value!r} is invalid: {expected}")


def _positive(kind: str, **values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            _fail(kind, name, value, "expected a finite number > 0")


def _non_negative(kind: str, **values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            _fail(kind, name, value, "expected a finite number >= 0")


def _device(kind: str, device: str) -> None:
    if device not in _DEVICES and not re.fullmatch(r"cuda:\d+", device):
        _fail(kind, "device", device, f"expected one of {', '.join(_DEVICES)} or 'cuda:N'")


@dataclass(frozen=True)
class ProbeSpec:
    """A job that only counts (and optionally fails): checks a backend end to end.

    ``python -m engine jobs submit probe`` on a new machine or cluster shows that jobs
    start, report progress, write logs and finish, before an hour of training is queued.
    """

    seconds: float = 2.0  # how long to run, in steps of 0.1 s with a progress report each
    fail: bool = False  # raise an error at the end instead of succeeding
    message: str = "probe"  # written to the log and the report
    children: int = 0  # child processes to start (like DataLoader workers): cancel stops them too

    def __post_init__(self) -> None:
        _non_negative("probe", seconds=self.seconds, children=self.children)
        if self.seconds > 86400:
            _fail("probe", "seconds", self.seconds, "expected at most 86400 (a day)")
        if self.children > 16:
            _fail("probe", "children", self.children, "expected at most 16")


@dataclass(frozen=True)
class ExtractSpec:
    """Logit extraction (``python -m engine extract``) run as a job."""

    model: str = "glyph-resnet"  # model registry name: a timm name, or a demo model
    data: str = "glyphs"  # dataset registry name or an ImageFolder path
    name: str = ""  # name of the store to create (required)
    checkpoint: str = ""  # local checkpoint for the architecture ('' = registry default)
    split: str = "test"  # dataset split, where the dataset has splits
    batch_size: int = 256
    device: str = "auto"

    def __post_init__(self) -> None:
        from engine.storage.store import check_store_name

        if not self.name:
            _fail("extract", "name", self.name, "give the name of the store to create, e.g. 'resnet50-val'")
        try:
            check_store_name(self.name)
        except InvalidInputError as exc:
            _fail("extract", "name", self.name, str(exc))
        for name in ("model", "data"):
            if not getattr(self, name):
                _fail("extract", name, "", "must not be empty")
        _positive("extract", batch_size=self.batch_size)
        _device("extract", self.device)


@dataclass(frozen=True)
class ZooSpec:
    """A model zoo (``python -m engine extract --model A B C`` or ``--preset paper``) as a job.

    One store per model over the same samples in the same order, then the cross-Grams of every
    pair and every pairing's dependencies, ready for the Explore and Compare pages; the job's
    progress names the model being extracted.
    """

    models: tuple[str, ...] = ()  # model registry names (timm names with tags); or a preset
    preset: str = ""  # a named zoo instead of models ('paper': the paper's four models)
    data: str = "glyphs"  # dataset registry name or an ImageFolder path
    names: tuple[str, ...] = ()  # store names, one per model ('' = the preset's or the model names)
    checkpoints: tuple[str, ...] = ()  # local weights, one per model ('-' for none), or none at all
    split: str = "test"
    batch_size: int = 256
    device: str = "auto"
    prepare: bool = True  # cross-Grams and dependencies of every pairing

    def __post_init__(self) -> None:
        from engine.ingest.presets import PRESETS
        from engine.storage.store import check_store_name

        k = "zoo"
        if bool(self.models) == bool(self.preset):
            _fail(k, "models", list(self.models),
                  f"give either models or a preset ({', '.join(PRESETS)}), not both nor neither")
        if self.preset and self.preset not in PRESETS:
            _fail(k, "preset", self.preset, f"expected one of {', '.join(PRESETS)}")
        n_models = len(self.models) or (len(PRESETS[self.preset].members) if self.preset else 0)
        if self.names and len(self.names) != n_models:
            _fail(k, "names", list(self.names), f"expected {n_models} store names (one per model) or none")
        if self.checkpoints and len(self.checkpoints) != n_models:
            _fail(k, "checkpoints", list(self.checkpoints),
                  f"expected {n_models} entries (one per model, '-' for none) or none")
        for name in self.names:
            try:
                check_store_name(name)
            except InvalidInputError as exc:
                _fail(k, "names", name, str(exc))
        if not self.data:
            _fail(k, "data", "", "must not be empty")
        _positive(k, batch_size=self.batch_size)
        _device(k, self.device)


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


def _store_name(kind: str, name: str, value: str, optional: bool = False) -> None:
    from engine.storage.store import check_store_name

    if optional and value == "":
        return
    try:
        check_store_name(value)
    except InvalidInputError as exc:
        _fail(kind, name, value, str(exc))


@dataclass(frozen=True)
class GramSpec:
    """The Gram set of a store, or of a pair (``source``'s logits predicting ``model``'s):
    one streamed pass over the logits, float64, on the GPU when there is one.

    Import and extraction make a store's own Gram; this job makes one for a store imported
    before they did, and the cross-Gram of a pair.
    """

    model: str = ""  # the store whose categories are the targets
    source: str = ""  # the store whose logits predict them ('' = the model itself)
    device: str = "auto"

    def __post_init__(self) -> None:
        _store_name("gram", "model", self.model)
        _store_name("gram", "source", self.source, optional=True)
        _device("gram", self.device)


@dataclass(frozen=True)
class PathsSpec:
    """Every target's α path of a store (or pair): what the Atlas and the all-target exports
    read, then Conjecture 1 checked over every target at every α (the Theory page). Solved
    by chunks of targets, each cached as soon as it is done: a killed job resumes at the
    first missing chunk, and pages use the chunks done so far (saying so). Pages solve the
    targets they show on their own, in seconds.
    """

    model: str = ""  # the store whose categories are the targets
    source: str = ""  # the store whose logits predict them ('' = the model itself)
    device: str = "cpu"  # the solver's device (cpu, cuda)
    chunk: int = 256  # targets per chunk: the unit of progress and of resume (larger on a GPU)

    def __post_init__(self) -> None:
        _positive("paths", chunk=self.chunk)
        _store_name("paths", "model", self.model)
        _store_name("paths", "source", self.source, optional=True)
        if self.device not in ("cpu", "cuda") and not re.fullmatch(r"cuda:\d+", self.device):
            _fail("paths", "device", self.device, "expected cpu, cuda or cuda:N")


@dataclass(frozen=True)
class BestSubsetsSpec:
    """Every target's best dependency with at most m sources, m = 1 … ``max_sources``, of a
    store (or pair): forward selection and OMP starts improved by swaps, from the Gram alone
    (engine.core.bestsubset), cached as one entry that the pages, the exports and
    ``dependencies --sources`` read. Pages solve the targets they show on their own."""

    model: str = ""  # the store whose categories are the targets
    source: str = ""  # the store whose logits predict them ('' = the model itself)
    max_sources: int = 8  # the largest m (1-32)
    device: str = "cpu"  # the solver's device (cpu, cuda)

    def __post_init__(self) -> None:
        from engine.core.bestsubset import MAX_SOURCES_LIMIT

        _store_name("best-subsets", "model", self.model)
        _store_name("best-subsets", "source", self.source, optional=True)
        if isinstance(self.max_sources, bool) or not isinstance(self.max_sources, int) \
                or not 1 <= self.max_sources <= MAX_SOURCES_LIMIT:
            _fail("best-subsets", "max_sources", self.max_sources, f"expected an integer from 1 to {MAX_SOURCES_LIMIT}")
        if self.device not in ("cpu", "cuda") and not re.fullmatch(r"cuda:\d+", self.device):
            _fail("best-subsets", "device", self.device, "expected cpu, cuda or cuda:N")


@dataclass(frozen=True)
class AtlasSpec:
    """The Atlas's communities: Louvain over every target's dependency graph at one α of
    the store's path (each target's ``top_k`` sources with |θ| ≥ ``min_coef``). Solves
    every target's path first if the paths job has not."""

    model: str = ""  # the store
    alpha: float = 0.25  # the α of the path nearest to this one
    top_k: int = 4  # sources per target in the graph
    min_coef: float = 0.05  # smallest |θ| of an edge

    def __post_init__(self) -> None:
        _store_name("atlas", "model", self.model)
        _positive("atlas", alpha=self.alpha, top_k=self.top_k)
        _non_negative("atlas", min_coef=self.min_coef)


@dataclass(frozen=True)
class TheorySpec:
    """Eigendecompositions of a store's Gram (K³ work: minutes at 21,843 categories):
    within one model the redundancy r_i of every category and the spectrum (the Theory and
    Atlas pages); for a pair, the least-squares floor of every target of ``model`` from all of ``source``'s
    logits (the Compare page)."""

    model: str = ""  # the store
    source: str = ""  # '' within the model; a second store for the floor between models

    def __post_init__(self) -> None:
        _store_name("theory", "model", self.model)
        _store_name("theory", "source", self.source, optional=True)


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


@dataclass(frozen=True)
class JobKind:
    """A registry entry: the spec class and the function that runs it (``module:function``)."""

    name: str
    spec: type
    runner: str  # imported only inside the job's process, so the dashboard never loads torch
    title: str


JOB_KINDS: dict[str, JobKind] = {
    k.name: k
    for k in (
        JobKind("newclasses", NewClassesSpec, "engine.train.newclasses:run_job",
                "New categories from old ones (§3.2)"),
        JobKind("regularizer", RegularizerSpec, "engine.train.regularizer:run_job",
                "Dependency regulariser (§3.3)"),
        JobKind("extract", ExtractSpec, "engine.jobs.extract_job:run_job", "Logit extraction"),
        JobKind("gram", GramSpec, "engine.jobs.analysis_jobs:run_gram", "Gram set of a store or pair"),
        JobKind("paths", PathsSpec, "engine.jobs.analysis_jobs:run_paths", "Every target's α path"),
        JobKind("best-subsets", BestSubsetsSpec, "engine.jobs.analysis_jobs:run_best_subsets",
                "Every target's best dependency with 1 … m sources"),
        JobKind("atlas", AtlasSpec, "engine.jobs.analysis_jobs:run_atlas", "Atlas communities"),
        JobKind("theory", TheorySpec, "engine.jobs.analysis_jobs:run_theory",
                "Redundancy, spectrum, least-squares floor"),
        JobKind("emergence", EmergenceSpec, "engine.train.emergence:run_job",
                "Emergence: dependencies over training and categories"),
        JobKind("zoo", ZooSpec, "engine.jobs.zoo_job:run_job", "Model zoo: several models, every pairing"),
        JobKind("probe", ProbeSpec, "engine.jobs.probe:run_job", "Probe (checks the job system)"),
    )
}


def get_kind(kind: str) -> JobKind:
    if kind not in JOB_KINDS:
        raise InvalidInputError(
            f"unknown job kind {kind!r}; valid kinds: {', '.join(sorted(JOB_KINDS))}"
        )
    return JOB_KINDS[kind]


def field_types(spec_cls: type) -> dict[str, Any]:
    """Resolved type of every field of a spec class (``tuple[str, ...]`` and friends)."""
    return typing.get_type_hints(spec_cls)


def _coerce(kind: str, name: str, value: Any, typ: Any) -> Any:
    """Turn a JSON / CLI / form value into the field's type, or raise naming the field."""
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        _fail(kind, name, value, "expected true or false")
    if typ is int:
        if isinstance(value, bool):
            _fail(kind, name, value, "expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            return int(value)
        _fail(kind, name, value, "expected an integer")
    if typ is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        _fail(kind, name, value, "expected a number")
    if typ is str:
        if isinstance(value, str):
            return value
        _fail(kind, name, value, "expected a string")
    if typing.get_origin(typ) is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(";") if v.strip()]
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(v.strip() for v in value)
        _fail(kind, name, value, "expected a list of strings")
    raise TypeError(f"unsupported spec field type {typ!r}")  # a programming error, not input


def spec_from_dict(kind: str, values: dict[str, Any] | None = None) -> Any:
    """Build a validated spec of ``kind`` from user values (defaults for the rest)."""
    entry = get_kind(kind)
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise InvalidInputError(
            f"{kind} job: the config must be a JSON object; got {type(values).__name__}"
        )
    types = field_types(entry.spec)
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise InvalidInputError(
            f"{kind} job: unknown field(s) {', '.join(unknown)}; valid fields: {', '.join(types)}"
        )
    coerced = {name: _coerce(kind, name, v, types[name]) for name, v in values.items()}
    return entry.spec(**coerced)


# fields naming data (with the registry names each accepts besides a folder) and models
_DATA_FIELDS = {"newclasses": {"dataset": ("glyphs",)},
                "regularizer": {"dataset": ("glyphs",), "ood": ("glyphs-ood", "")},
                "extract": {"data": ("glyphs",)}, "zoo": {"data": ("glyphs",)},
                "emergence": {"dataset": ("glyphs",)}}
_MODEL_FIELDS = {"newclasses": ("arch",), "regularizer": ("model",), "extract": ("model",),
                 "zoo": ("models",), "emergence": ("model",)}


_STORE_FIELDS = {"gram": ("model", "source"), "paths": ("model", "source"), "atlas": ("model",),
                 "best-subsets": ("model", "source"),
                 "theory": ("model", "source")}


def check_spec_inputs(kind: str, spec: Any, cache=None) -> None:
    """The data, models and checkpoints a spec names exist, or :class:`InvalidInputError`
    naming the field: run when a job is submitted, so that a typo fails at once rather than
    minutes later in the job. Model names are looked up in the model registry (it imports
    timm, a second or two), which is why this is not part of the spec's own validation."""
    from pathlib import Path

    for name, registry in _DATA_FIELDS.get(kind, {}).items():
        value = getattr(spec, name)
        if value not in registry and not Path(value).expanduser().is_dir():
            names = " or ".join(repr(r) for r in registry)
            _fail(kind, name, value, f"expected {names} or an existing ImageFolder folder")
    peculiar = getattr(spec, "peculiar", "auto")
    if peculiar not in ("auto", "shapes", "names", "none") and not Path(peculiar).expanduser().is_file():
        _fail(kind, "peculiar", peculiar, "expected auto, shapes, names, none or an existing file of "
              "'TARGET,SOURCE' lines (pairs marked peculiar)")
    checkpoint = getattr(spec, "checkpoint", "")
    if checkpoint and not Path(checkpoint).expanduser().is_file():
        _fail(kind, "checkpoint", checkpoint, "expected an existing weights file (.safetensors, .pt, .pth)")
    if cache is not None:
        known = cache.store_names()
        for name in _STORE_FIELDS.get(kind, ()):
            value = getattr(spec, name)
            if value and value not in known:
                _fail(kind, name, value, f"no such store in {cache.root}; known stores: "
                      f"{', '.join(known) or 'none (import or extract one first)'}")
    for path in getattr(spec, "checkpoints", ()):
        if path not in ("", "-") and not Path(path).expanduser().is_file():
            _fail(kind, "checkpoints", path, "expected an existing weights file, or '-' for none")
    for name in _MODEL_FIELDS.get(kind, ()):
        from engine.errors import NotFoundError
        from engine.ingest.models import check_model_name

        value = getattr(spec, name)
        models = value if isinstance(value, tuple) else (value,)
        ckpts = getattr(spec, "checkpoints", ()) or (checkpoint,) * len(models)
        for model, ckpt in zip(models, ckpts):
            try:
                check_model_name(model, None if ckpt in ("", "-") else ckpt)
            except NotFoundError as exc:
                _fail(kind, name, model, str(exc))
    if kind == "emergence":  # the numbers of categories against the data, the checkpoints against the model
        from engine.train.emergence_inputs import check_emergence_inputs

        check_emergence_inputs(spec, cache, _fail)


def spec_to_dict(spec: Any) -> dict[str, Any]:
    """JSON-ready values of a spec (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(spec).items()}


def spec_hash(kind: str, spec: Any,
              ignore: tuple[str, ...] = ("device", "workers", "threads", "side_by_side")) -> str:
    """Key of a spec's results: equal configs share a run folder (and resume each other).

    Fields that change where, not what, is computed (device, loader workers, threads, helper
    processes) are left out.
    """
    body = {k: v for k, v in spec_to_dict(spec).items() if k not in ignore}
    return sha256_bytes(canonical_json({"kind": kind, "spec": body}).encode())[:16]
