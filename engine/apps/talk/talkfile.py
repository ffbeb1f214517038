"""The talk file: which model(s), target and α each slide shows, and the speaker's notes.

A small TOML file, read with :mod:`tomllib` and written by :func:`talk_toml`::

    title = "Neural dependencies"

    [[slide]]
    kind = "dependency"          # one of SLIDE_KINDS
    model = "glyph-vgg"          # the store whose category is the target
    target = "Í"                 # index, class name or its first word (as the CLI takes it)
    alpha = 4.6                  # the paper's Lasso at this α; or n_sources = 6: the Lasso
                                 # path's α with that many sources; or sources = 4: the best
                                 # dependency with at most 4 sources (best subset, 1 … 8)
    note = "Read it aloud: Í is mostly Ó, Ĭ and Î."

Slides that show a dependency (``dependency``, ``fit``, ``sources``, ``why``, ``between``)
take ``model``, ``target`` and one of ``alpha``, ``n_sources`` (the CovLasso) or ``sources``
(the best subset, :mod:`engine.stages.sparsity`); ``between`` also ``source`` (the
model whose logits predict the target). ``question``, ``atlas`` and ``applications`` take a
``model`` (the first dependency slide's when left out). Where a dependency slide leaves a
field out, the talk's first ``dependency`` slide fills it in.

:func:`default_talk` writes the paper's story on whatever stores the cache holds, from the
recommendations of :mod:`engine.stages.recommend` (the clear example of a model and of its best
pairing with another model), so a speaker with their own models gets the same story. Where
the model's best subsets are cached (the demo, the ``best-subsets`` job), its dependency,
fit and sources slides show the sparsest best-subset dependency that fits
(``sources = m``); the Lasso's α otherwise (and always on the "why" slide, whose picture is
the Lasso's covariance band).
"""

from __future__ import annotations

import logging
import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from engine.core.bestsubset import DEFAULT_MAX_SOURCES
from engine.errors import InvalidInputError, NotFoundError
from engine.storage.atomic import write_bytes_atomic
from engine.storage.store import Cache

log = logging.getLogger(__name__)

# The story, in order (the default talk has one slide of each).
SLIDE_KINDS = ("question", "dependency", "fit", "sources", "between", "why", "atlas", "applications")
_DEPENDENCY_KINDS = ("dependency", "fit", "sources", "why", "between")


@dataclass(frozen=True)
class TalkSlide:
    """One slide of the talk file (empty strings / None: filled in from the talk's first
    dependency slide, or by the slide's own default)."""

    kind: str  # one of SLIDE_KINDS
    model: str = ""  # the store whose category is the target
    source: str = ""  # between: the store whose logits predict it ('' = model: within)
    target: str = ""  # index, class name or first word of the name
    alpha: float | None = None  # the α of the dependency (nearest on the target's path)
    n_sources: int | None = None  # instead of α: the path's largest α with at most this many sources
    sources: int | None = None  # instead of α: the best subset with at most this many sources (1 … 8)
    note: str = ""  # speaker note (shown in the deck's notes, never on the slide)
    title: str = ""  # the slide's title ('' = the kind's default)

    def __post_init__(self) -> None:
        if self.kind not in SLIDE_KINDS:
            raise InvalidInputError(f"slide kind {self.kind!r} is not one of {', '.join(SLIDE_KINDS)}; "
                                    "fix the talk file's `kind`")
        if self.alpha is not None and not (math.isfinite(self.alpha) and self.alpha > 0):
            raise InvalidInputError(f"slide {self.kind!r}: alpha = {self.alpha!r}; expected a positive number")
        if self.n_sources is not None and self.n_sources < 1:
            raise InvalidInputError(f"slide {self.kind!r}: n_sources = {self.n_sources!r}; expected ≥ 1")
        if self.sources is not None:
            if isinstance(self.sources, bool) or not isinstance(self.sources, int | np.integer) \
                    or not 1 <= self.sources <= DEFAULT_MAX_SOURCES:
                raise InvalidInputError(
                    f"slide {self.kind!r}: sources = {self.sources!r}; expected a whole number from 1 to "
                    f"{DEFAULT_MAX_SOURCES} (the best subsets cached per target); for more sources give alpha")
            given = [k for k in ("alpha", "n_sources") if getattr(self, k) is not None]
            if given:
                raise InvalidInputError(
                    f"slide {self.kind!r} gives both sources = {self.sources} and {given[0]}; expected one of "
                    "them: sources (best subset) or alpha / n_sources (the paper's Lasso)")


@dataclass(frozen=True)
class Talk:
    title: str = "Neural dependencies"
    slides: tuple[TalkSlide, ...] = field(default_factory=tuple)

    def resolved(self) -> Talk:
        """Every dependency slide with its model, target and α or n_sources filled in from the
        first ``dependency`` slide (or the first that names them)."""
        base = next((s for s in self.slides if s.kind == "dependency" and s.model), None)
        base = base or next((s for s in self.slides if s.model), None)
        if base is None:
            return self
        out = []
        for s in self.slides:
            if not s.model:
                s = replace(s, model=base.model)
            if s.kind in _DEPENDENCY_KINDS and s.kind != "between" and not s.target and s.model == base.model:
                own = bool(s.alpha or s.n_sources or s.sources)
                s = replace(s, target=base.target, alpha=s.alpha if own else base.alpha,
                            n_sources=s.n_sources if own else base.n_sources,
                            sources=s.sources if own else base.sources)
            out.append(s)
        return replace(self, slides=tuple(out))


# ----------------------------------------------------------------------------- reading, writing


def read_talk(path: str | Path) -> Talk:
    """The talk in ``path`` (TOML); a one-line error naming the problem otherwise."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError(f"talk file {str(path)!r} does not exist; write one with "
                            "`python -m engine talk --write-default talk.toml`") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"talk file {str(path)!r} is not valid TOML ({exc}); fix it or write "
                                "a fresh one with `python -m engine talk --write-default`") from None
    return talk_from_dict(data, str(path))


def talk_from_dict(data: dict, where: str = "talk") -> Talk:
    slides = data.get("slide", [])
    if not isinstance(slides, list) or not slides:
        raise InvalidInputError(f"{where} has no [[slide]] table; expected at least one, e.g. "
                                '[[slide]] kind = "dependency" model = "…"')
    known = {f.name for f in fields(TalkSlide)}
    out = []
    for n, raw in enumerate(slides, 1):
        if not isinstance(raw, dict) or "kind" not in raw:
            raise InvalidInputError(f"{where}: slide {n} has no `kind`; expected one of {', '.join(SLIDE_KINDS)}")
        extra = sorted(set(raw) - known)
        if extra:
            raise InvalidInputError(f"{where}: slide {n} has unknown field(s) {', '.join(extra)}; "
                                    f"expected {', '.join(sorted(known))}")
        values = dict(raw)
        for key in ("model", "source", "target", "note", "title", "kind"):
            if key in values:
                values[key] = str(values[key])
        if "alpha" in values:
            values["alpha"] = _number(values["alpha"], f"{where}: slide {n}'s alpha")
        if "n_sources" in values:
            values["n_sources"] = int(_number(values["n_sources"], f"{where}: slide {n}'s n_sources"))
        if "sources" in values and (isinstance(values["sources"], bool) or not isinstance(values["sources"], int)):
            raise InvalidInputError(f"{where}: slide {n}'s sources is {values['sources']!r}; expected a whole "
                                    f"number from 1 to {DEFAULT_MAX_SOURCES}, e.g. sources = 4")
        out.append(TalkSlide(**values))
    return Talk(str(data.get("title", Talk.title)), tuple(out))


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"{what} is {value!r}; expected a number")
    return float(value)


def _toml_value(value) -> str:
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        return f'"{escaped}"'
    if isinstance(value, float):
        return repr(float(f"{value:.6g}"))
    return str(int(value))


def talk_toml(talk: Talk) -> str:
    """The talk as TOML (what :func:`read_talk` reads back)."""
    lines = ["# A talk for `python -m engine talk --export talk.html --talk THIS` and the dashboard's",
             "# Talk page. Slide kinds: " + ", ".join(SLIDE_KINDS) + ".",
             "# Dependency slides take model, target, and alpha or n_sources (the paper's Lasso) or",
             "# sources (the best dependency with at most that many sources, 1 to 8); between also source.",
             f"title = {_toml_value(talk.title)}", ""]
    for s in talk.slides:
        lines.append("[[slide]]")
        for f in fields(TalkSlide):
            value = getattr(s, f.name)
            if value in (None, "") and f.name != "kind":
                continue
            lines.append(f"{f.name} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def write_talk(talk: Talk, path: str | Path) -> Path:
    path = Path(path)
    write_bytes_atomic(path, talk_toml(talk).encode("utf-8"))
    return path


def add_slide(cache: Cache, slide: TalkSlide, path: str | Path | None = None) -> Path:
    """Append ``slide`` to the talk file (``path``, default the cache's talk file; the
    default talk is written first when there is none): the pages' "Add to talk"."""
    path = Path(path) if path else cache.talk_path
    talk = read_talk(path) if path.exists() else default_talk(cache)
    return write_talk(replace(talk, slides=(*talk.slides, slide)), path)


def cache_talk(cache: Cache) -> Talk:
    """The cache's talk file when there is one, else the default talk of the cache."""
    return read_talk(cache.talk_path) if cache.talk_path.exists() else default_talk(cache)


# ----------------------------------------------------------------------------- the default talk

_NOTES = {
    "question": "Ask the room: if I hide one category's logit, can you read it off a few others?",
    "dependency": "One category's logit, rebuilt from a handful of others; the weights are the edges.",
    "fit": "Every dot is a test image: the rebuilt logit against the real one; the prediction is unchanged.",
    "sources": "How few sources: the best few sources fit as well as the Lasso's many; the Lasso shrinks and picks worse ones.",
    "between": "Now the other model's logits only: the solver was never told which categories correspond.",
    "why": "Why: the logits span far fewer dimensions than there are categories, so most are redundant.",
    "atlas": "All categories at once: each inner node's few sources around it, coloured by community.",
    "applications": "What it buys: new categories from old ones, and a regulariser that cuts a dependency.",
}


def default_talk(cache: Cache) -> Talk:
    """The paper's story on the cache's own stores: the clear example of the best-recommended
    model (its recommended α), and the clear example of the pairing of two models whose
    dependencies fit best. Needs every target's path of the stores (``python -m engine demo``
    or the ``paths`` job); a store without them is passed over."""
    within = _best_within(cache)
    if within is None:
        raise NotFoundError(f"no store in {cache.root} has every target's α path, which the talk's default "
                            "reads; run `python -m engine demo` or `python -m engine jobs submit paths --model NAME --wait`")
    model, target, alpha, index = within
    m = _sparsest_best_subset(cache, model, index)
    how = {"alpha": alpha} if m is None else {"sources": m}
    slides = [TalkSlide("question", model=model, note=_NOTES["question"])]
    for kind in ("dependency", "fit", "sources"):
        slides.append(TalkSlide(kind, model=model, target=target, note=_NOTES[kind], **how))
    between = _best_between(cache, model)
    if between is not None:
        b_model, b_source, b_target, b_alpha = between
        slides.append(TalkSlide("between", model=b_model, source=b_source, target=b_target, alpha=b_alpha,
                                note=_NOTES["between"]))
    slides.append(TalkSlide("why", model=model, target=target, alpha=alpha, note=_NOTES["why"]))
    slides.append(TalkSlide("atlas", model=model, note=_NOTES["atlas"]))
    slides.append(TalkSlide("applications", model=model, note=_NOTES["applications"]))
    return Talk("Neural dependencies", tuple(slides))


def _complete_path(cache: Cache, model: str, source: str):
    from engine.stages.alpha_paths import path_progress, path_spec, read_all_paths
    from engine.stages.gramsets import has_gramset
    from engine.stages.pairing import open_pairing

    pairing = open_pairing(cache, model, source)
    if not has_gramset(cache, pairing.source, None if pairing.within else pairing.model):
        return None
    spec = path_spec(cache, pairing)
    if not path_progress(cache, spec).complete:
        return None
    return read_all_paths(cache, spec)


def _example(cache: Cache, model: str, source: str):
    """(target name, α, median recommended R²) of the pairing's clear example, or None."""
    from engine.apps.views import read_at_a_glance, recognised_categories
    from engine.stages.recommend import recommend
    from engine.stages.solutions import load_top2

    path = _complete_path(cache, model, source)
    if path is None:
        return None
    store = cache.load_store(model)
    rec = recommend(path)
    glance = read_at_a_glance(store.class_names)
    if store.labels is not None:
        known = recognised_categories(store.labels, load_top2(cache, store).pred, store.k)
        glance = glance & known if (glance & known).any() else (glance if glance.any() else known)
    target = _readable_example(path, rec, glance) if source == model else None
    if target is None:
        target = rec.clear_example(prefer=glance)
    if target is None:
        target = int(np.nanargmax(np.nan_to_num(rec.r2, nan=-np.inf)))
    a = int(rec.alpha_index[target])
    alpha = float(path.alphas[max(a, 0)])
    return store.class_names[target], alpha, float(np.nanmedian(rec.r2)), int(target)


def _readable_example(path, rec, glance: np.ndarray, terms: int = 4) -> int | None:
    """Among the categories read at a glance whose recommended dependency fits with 3–16
    sources, the one whose strongest ``terms`` sources are also read at a glance the most
    (by weight): a formula the room reads without a legend. Ties: fewer sources, higher R²."""
    ok = np.flatnonzero(rec.fits() & (rec.n_sources >= 3) & (rec.n_sources <= 16) & glance)
    best, best_key = None, None
    for t in ok:
        src, val = path.coef_at(int(t), int(rec.alpha_index[t]))
        w = np.abs(val)
        top = np.argsort(-w, kind="stable")[:terms]
        share = float(w[top][glance[src[top]]].sum() / max(w[top].sum(), 1e-300))
        key = (round(share, 2), -int(rec.n_sources[t]), float(rec.r2[t]))
        if best_key is None or key > best_key:
            best, best_key = int(t), key
    return best


def _best_within(cache: Cache):
    best = None
    for name in cache.store_names():
        found = _example(cache, name, name)
        if found is not None and (best is None or found[2] > best[1][2]):
            best = (name, found)
    if best is None:
        return None
    name, (target_name, alpha, _, index) = best
    return name, target_name, alpha, index


def _sparsest_best_subset(cache: Cache, model: str, target: int) -> int | None:
    """The fewest sources whose best subset fits the target (R² ≥ 0.95, ≤ 0.5 pt of top-1
    lost) when every target's best subsets of ``model`` are cached; else None (the Lasso)."""
    from engine.stages.pairing import open_pairing
    from engine.stages.sparsity import has_all_best_subsets, sources_curve

    pairing = open_pairing(cache, model, model)
    if not has_all_best_subsets(cache, pairing):
        return None
    return sources_curve(cache, pairing, target).sparsest_fit()


def _best_between(cache: Cache, model: str):
    """The pairing (targets, sources) of two stores with the same categories whose
    recommended dependencies fit best (median R²), preferring those involving ``model``."""
    from engine.errors import EngineError
    from engine.stages.gramsets import check_pairable

    names = cache.store_names()
    best, best_key = None, None
    for m in names:
        for s in names:
            if m == s:
                continue
            try:
                a, b = cache.load_store(m), cache.load_store(s)
                check_pairable(a, b)
            except EngineError:
                continue
            if a.class_names != b.class_names:
                continue
            found = _example(cache, m, s)
            if found is None:
                continue
            key = (model in (m, s), found[2])
            if best_key is None or key > best_key:
                best, best_key = (m, s, found[0], found[1]), key
    return best
