"""The engine's job kinds: one frozen dataclass per kind, validated before it is launched, and
their registration (training registers its own kinds, in :mod:`engine.train.specs`).

A spec is plain data (no torch import here), so the CLI and the dashboard can build forms
from it, check it and store it beside the job's results. Every field has a default that
reproduces the paper's setting where the paper gives one, scaled to the embedded glyph world
where it must be (the docstring says which). ``spec_from_dict`` is the one boundary where
user input (CLI strings, JSON, form values) becomes a spec; a bad value raises
:class:`InvalidInputError` naming the field, the value and what is expected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import InvalidInputError
from engine.jobs.kinds import (
    JobKind,
    _device,
    _fail,
    _non_negative,
    _positive,
    _store_name,
    register_kind,
)


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
        from engine.storage.manifests import check_store_name

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
        from engine.storage.manifests import check_store_name

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



for _kind in (
    JobKind("extract", ExtractSpec, "engine.jobs.extract_job:run_job", "Logit extraction", rank=2,
            data_fields={"data": ("glyphs",)}, model_fields=("model",)),
    JobKind("gram", GramSpec, "engine.jobs.analysis_jobs:run_gram", "Gram set of a store or pair", rank=3,
            store_fields=("model", "source")),
    JobKind("paths", PathsSpec, "engine.jobs.analysis_jobs:run_paths", "Every target's α path", rank=4,
            store_fields=("model", "source")),
    JobKind("best-subsets", BestSubsetsSpec, "engine.jobs.analysis_jobs:run_best_subsets",
            "Every target's best dependency with 1 … m sources", rank=5, store_fields=("model", "source")),
    JobKind("atlas", AtlasSpec, "engine.jobs.analysis_jobs:run_atlas", "Atlas communities", rank=6,
            store_fields=("model",)),
    JobKind("theory", TheorySpec, "engine.jobs.analysis_jobs:run_theory",
            "Redundancy, spectrum, least-squares floor", rank=7, store_fields=("model", "source")),
    JobKind("zoo", ZooSpec, "engine.jobs.zoo_job:run_job", "Model zoo: several models, every pairing", rank=9,
            data_fields={"data": ("glyphs",)}, model_fields=("models",)),
    JobKind("probe", ProbeSpec, "engine.jobs.probe:run_job", "Probe (checks the job system)", rank=10),
):
    register_kind(_kind)
