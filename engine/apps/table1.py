"""The paper's Table 1 from the user's stores, beside the paper's own figures.

Table 1 of the paper reports, for the dependencies drawn in its Fig. 2, the error of predicting
a target category's logit from a few others and the accuracy when the logit is replaced
(DESIGN.md §1 defines the metrics). Two commands reproduce it on ImageNet's validation set::

    python -m engine extract --preset paper --data /data/imagenet/val
    python -m engine table1 --markdown table1.md --json table1.json

The paper's cases, as its text names them (§2.1): within one network, 'jellyfish' (ResNet-18,
Fig. 2a), 'egretta albus' (ResNet-50, 2b), 'basketball' (Swin-T, 2c), 'komondor' (ViT-S, 2d);
between networks, 'bustard' (2e) and 'hamster' (2f). The text says that 2f predicts ResNet-50's
'hamster' from Swin-T's logits, so Table 1's last two columns ("R-50 Swin-T", "Swin-T R-50",
arrows lost in the text) read as source → target: 2e is Swin-T's 'bustard' from ResNet-50.
Fig. 1a's 'macaw' (from 'ostrich', 'bittern', …) is added without figures: the paper names no
model for it; it is shown within ResNet-50. Categories are looked up by ImageNet-1k synset, so
'egretta albus' is the class timm names 'American egret'.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass

from engine.errors import NotFoundError
from engine.ingest.presets import ZooPreset, get_preset, pair_alpha
from engine.storage.store import Cache, LogitStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PaperFigures:
    """One column of the paper's Table 1 (errors in logit units and %, accuracies in %)."""

    abs_err: float
    rel_err: float
    acc: float
    ori_acc: float
    pos_acc: float
    ori_pos_acc: float


@dataclass(frozen=True)
class PaperCase:
    """A dependency the paper shows: target category of ``target``, predicted from ``source``."""

    figure: str  # where the paper shows it
    category: str  # as the paper writes it
    synset: str  # its ImageNet-1k synset
    target: str  # preset member (key) whose category is the target
    source: str  # preset member whose logits predict it (the target itself: within one network)
    paper: PaperFigures | None  # Table 1's column (None: not in Table 1)
    named_sources: tuple[tuple[str, str], ...]  # (paper's word, synset) of sources the text names


PAPER_CASES: tuple[PaperCase, ...] = (
    PaperCase("Fig. 1a", "macaw", "n01818515", "resnet50", "resnet50", None,
              (("ostrich", "n01518878"), ("bittern", "n02011460"))),
    PaperCase("Fig. 2a", "jellyfish", "n01910747", "resnet18", "resnet18",
              PaperFigures(0.187, 2.568, 60.9, 61.0, 72.0, 84.0), (("spot", "n04286575"),)),
    PaperCase("Fig. 2b", "egretta albus", "n02009912", "resnet50", "resnet50",
              PaperFigures(0.068, 1.063, 64.9, 64.9, 92.0, 92.0), (("ostrich", "n01518878"),)),
    PaperCase("Fig. 2c", "basketball", "n02802426", "swin-t", "swin-t",
              PaperFigures(0.104, 0.926, 40.1, 40.1, 94.0, 92.0), (("unicycle", "n04509417"),)),
    PaperCase("Fig. 2d", "komondor", "n02105505", "vit-s", "vit-s",
              PaperFigures(0.297, 4.276, 45.9, 45.9, 96.0, 100.0), (("swab", "n04367480"),)),
    PaperCase("Fig. 2e", "bustard", "n02018795", "swin-t", "resnet50",
              PaperFigures(0.207, 1.776, 69.5, 69.5, 94.0, 96.0), (("bittern", "n02011460"),)),
    PaperCase("Fig. 2f", "hamster", "n02342885", "resnet50", "swin-t",
              PaperFigures(0.211, 3.939, 49.0, 49.2, 94.0, 100.0), (("brocoli", "n07714990"),)),
)

_GENERIC = re.compile(r"^class \d+$")


def _imagenet_index(synset: str) -> int:
    from timm.data import ImageNetInfo

    return ImageNetInfo("imagenet-1k").label_names().index(synset)


def find_synset(store: LogitStore, synset: str) -> tuple[int, str]:
    """(index, how it was found) of an ImageNet-1k synset among a store's categories.

    By name as this project's extraction writes it (first lemma, or 'lemma (synset)' when two
    synsets share it), timm's full description, or the synset itself; for stores imported with
    no class names ('class 0' …) and 1,000 categories, by ImageNet-1k's index.
    """
    from timm.data import ImageNetInfo

    from engine.ingest.data import imagenet_names

    description = ImageNetInfo().label_name_to_description(synset)
    lemma = imagenet_names([synset])[0]
    names = store.class_names
    for candidate in (lemma, f"{lemma} ({synset})", description, synset):
        hits = [i for i, n in enumerate(names) if n == candidate]
        if len(hits) == 1:
            return hits[0], "name"
    if store.k == 1000 and all(_GENERIC.match(n) for n in names):
        return _imagenet_index(synset), "ImageNet-1k index"
    raise NotFoundError(
        f"store {store.name!r} has no category {lemma!r} (ImageNet synset {synset}): its "
        f"{store.k} class names are not ImageNet-1k's. Extract it from an ImageNet folder "
        "(class folders named by synsets), or import it with ImageNet's class names")


@dataclass(frozen=True)
class CaseResult:
    """Our figures for one paper case, beside the paper's."""

    figure: str
    category: str
    target_store: str
    source_store: str
    alpha: float
    target_index: int
    target_name: str
    found_by: str  # "name" or "ImageNet-1k index"
    sources: list[dict]  # [{"index", "name", "coef"}], largest |coef| first
    ours: dict  # abs_err, rel_err, acc, ori_acc, pos_acc, ori_pos_acc, r2 (and r2_reason when null)
    paper: dict | None
    named_sources_found: dict[str, bool]  # the paper's named source -> among ours?


@dataclass(frozen=True)
class Table1Report:
    preset: str
    cases: list[CaseResult]
    missing: list[dict]  # cases not computed: {"figure", "category", "reason"}

    def as_dict(self) -> dict:
        return {"preset": self.preset, "cases": [asdict(c) for c in self.cases], "missing": self.missing}


def table1_report(cache: Cache, *, preset: str = "paper", stores: dict[str, str] | None = None,
                  alpha: float | None = None) -> Table1Report:
    """Table 1 for every paper case whose stores exist (``stores`` maps the preset's keys to
    store names; default: the keys themselves, as ``extract --preset`` names them)."""
    from engine.apps.report import dependency_report

    zoo = get_preset(preset)
    names = {m.key: m.key for m in zoo.members} | dict(stores or {})
    for key in names:
        zoo.member(key)  # raises naming the preset's keys
    present = set(cache.store_names())
    cases, missing = [], []
    for case in PAPER_CASES:
        lacking = sorted({names[case.target], names[case.source]} - present)
        if lacking:
            missing.append({"figure": case.figure, "category": case.category,
                            "reason": f"no store {', '.join(map(repr, lacking))}"})
            continue
        target_store = cache.load_store(names[case.target])
        index, found_by = find_synset(target_store, case.synset)
        a = alpha if alpha is not None else _case_alpha(zoo, case)
        source = None if case.source == case.target else names[case.source]
        report = dependency_report(cache, names[case.target], source, a, [index])
        row = report["targets"][0]
        cases.append(_case_result(cache, case, names, a, index, found_by, row))
    if not cases:
        raise NotFoundError(
            f"none of the stores of preset {preset!r} ({', '.join(sorted(set(names.values())))}) is in "
            f"{cache.root}; make them with `python -m engine --cache {cache.root} extract --preset "
            f"{preset} --data /path/to/imagenet/val`, or name yours with --store KEY=NAME")
    return Table1Report(preset, cases, missing)


def _case_alpha(zoo: ZooPreset, case: PaperCase) -> float:
    return pair_alpha(zoo.member(case.target).alpha, zoo.member(case.source).alpha)


_METRICS = ("abs_err", "rel_err", "acc", "ori_acc", "pos_acc", "ori_pos_acc", "r2", "r2_reason")


def _case_result(cache: Cache, case: PaperCase, names: dict, alpha: float, index: int,
                 found_by: str, row: dict) -> CaseResult:
    source_store = cache.load_store(names[case.source])
    found = {}
    for word, synset in case.named_sources:
        try:
            j, _ = find_synset(source_store, synset)
        except NotFoundError:
            found[word] = False
            continue
        found[word] = any(s["index"] == j for s in row["sources"])
    return CaseResult(
        figure=case.figure, category=case.category, target_store=names[case.target],
        source_store=names[case.source], alpha=alpha, target_index=index,
        target_name=row["target_name"], found_by=found_by, sources=row["sources"],
        ours={k: row[k] for k in _METRICS if k in row},
        paper=asdict(case.paper) if case.paper else None, named_sources_found=found)


# ----------------------------------------------------------------------------- Markdown


def _num(x, digits: int) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _pair(ours: dict, paper: dict | None, a: str, b: str, digits: int = 1) -> tuple[str, str]:
    mine = f"{_num(ours.get(a), digits)} ({_num(ours.get(b), digits)})"
    theirs = f"{_num(paper[a], digits)} ({_num(paper[b], digits)})" if paper else "–"
    return mine, theirs


def _title(zoo: ZooPreset, c: CaseResult, case: PaperCase) -> str:
    target = zoo.member(case.target).title
    if case.source == case.target:
        return f"{c.figure} {target}: {c.category}"
    return f"{c.figure} {zoo.member(case.source).title} → {target}: {c.category}"


def to_markdown(report: Table1Report, top: int = 4) -> str:
    """Rows as the paper's Table 1 (metrics), one column per case; ours above the paper's."""
    zoo = get_preset(report.preset)
    by_figure = {c.figure: c for c in PAPER_CASES}
    cols = report.cases
    head = ["metric"] + [_title(zoo, c, by_figure[c.figure]) for c in cols]
    rows: list[list[str]] = [
        ["target (store, index)"] + [f"{c.target_name} ({c.target_store}, {c.target_index})" for c in cols],
        ["α"] + [f"{c.alpha:g}" for c in cols],
        ["sources (ours)"] + [_sources(c, top) for c in cols],
        ["paper's named source among ours"] + [
            ", ".join(f"{w}: {'yes' if ok else 'no'}" for w, ok in c.named_sources_found.items()) for c in cols],
        ["Abs Err — ours"] + [_num(c.ours.get("abs_err"), 3) for c in cols],
        ["Abs Err — paper"] + [_num(c.paper["abs_err"], 3) if c.paper else "–" for c in cols],
        ["Rel Err (%) — ours"] + [_num(c.ours.get("rel_err"), 3) for c in cols],
        ["Rel Err (%) — paper"] + [_num(c.paper["rel_err"], 3) if c.paper else "–" for c in cols],
    ]
    for label, a, b in (("Acc (Ori. Acc)", "acc", "ori_acc"), ("Pos Acc (Ori. Pos Acc)", "pos_acc", "ori_pos_acc")):
        pairs = [_pair(c.ours, c.paper, a, b) for c in cols]
        rows.append([f"{label} — ours"] + [p[0] for p in pairs])
        rows.append([f"{label} — paper"] + [p[1] for p in pairs])
    if any("r2" in c.ours for c in cols):
        rows.append(["R² — ours (not in the paper)"] + [_num(c.ours.get("r2"), 4) for c in cols])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * len(cols)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    for m in report.missing:
        lines.append(f"\n{m['figure']} ({m['category']}) not computed: {m['reason']}.")
    return "\n".join(lines) + "\n"


def _sources(c: CaseResult, top: int) -> str:
    parts = [f"{s['coef']:+.2f}·{s['name']}" for s in c.sources[:top]]
    more = len(c.sources) - top
    return (" ".join(parts) + (f" … (+{more})" if more > 0 else "")) if parts else "none"
