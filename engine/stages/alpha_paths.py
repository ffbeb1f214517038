"""The α-path stage: exact solutions along a grid of α, per target on demand, or for every
target as a job that is resumable by chunks of targets.

What a page shows is one target (or a few): :func:`target_paths` solves just those, from
the Gram alone, and caches each target's path — milliseconds to a second, whatever K is.
Every target's path (for the Atlas, exports, Conjecture 1 over all targets) is
:func:`compute_all_paths`, run as a job: chunks of targets are solved and cached one by one,
so a killed job resumes where it stopped, and :func:`read_all_paths` serves what exists —
the complete path, or the chunks done so far marked ``complete=False`` — without solving
anything. A target's path is the same whichever way it was solved (the solver treats each
target on its own; tests check supports and objectives).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from engine.core.analysis import r2_from_error, target_variance
from engine.core.covlasso import CovLassoPath, SolverConfig, check_alpha, check_grid, covlasso_path
from engine.core.gram import GramSet
from engine.core.sparse import ARRAY_NAMES, SparseColumns
from engine.errors import NotFoundError
from engine.stages.gramsets import load_gramset, resident_gramset
from engine.stages.pairing import PAPER_ALPHAS, Pairing
from engine.storage.derived import declare_derived
from engine.storage.store import Cache

log = logging.getLogger(__name__)

PATH_CHUNK = 256  # default targets per chunk of the all-target job (the unit of progress and resume)
_PATH_ARRAYS = (*ARRAY_NAMES, "alphas", "targets", "gaps", "n_alphas", "alpha_max", "r2")
_LAYOUT = 3  # the "layout" of every path entry's config (PathSpec.key)
ALL_PATHS = declare_derived("path", _PATH_ARRAYS, _LAYOUT, "every target's α path, in one entry")
TARGET_PATH = declare_derived("path-target", _PATH_ARRAYS, _LAYOUT, "one target's α path (solved on demand)")
CHUNK_PATHS = declare_derived("path-chunk", _PATH_ARRAYS, _LAYOUT, "a range of targets' α paths (a job's progress)")
PATH_INDEX = declare_derived("path-index", ("starts", "stops"), _LAYOUT, "the chunks an all-target path was made of")


@dataclass(frozen=True)
class GridRule:
    """How a path's α grid is chosen when none is given; part of the path's cache key.

    Log-spaced from the largest α_max down to ``span`` times it (plus the paper's α). Each
    target's path ends after the first α at which it uses more than ``max_sources``
    sources: below that its dependency is neither sparse nor readable (the star graph shows
    16 sources, the formula 8), and the solves there cost the most — measured on the demo,
    the first demo's glyph-vit ← glyph-resnet path spent 35 of its 54 s of CPU below a median of 73
    sources (docs/dashboard.md). The rule is per target, so one target's path does not
    depend on which other targets were solved with it.
    """

    n: int = 24
    span: float = 5e-3
    max_sources: int = 64

    def alphas(self, amax: np.ndarray) -> np.ndarray:
        return default_alpha_grid(amax, self.n, self.span)


def default_alpha_grid(amax: np.ndarray, n: int = 24, span: float = 5e-3) -> np.ndarray:
    """Log-spaced α from the largest α_max down to ``span`` times it, plus the paper's α."""
    hi = float(np.max(amax, initial=0.0))
    if not hi > 0:  # all-zero logits: every coefficient is zero at every α; any grid shows that
        hi = 1.0
    grid = np.geomspace(hi, hi * span, n)
    extra = [a for a in PAPER_ALPHAS if hi * span < a < hi]
    return np.unique(np.concatenate([grid, extra]))[::-1]


# ----------------------------------------------------------------------------- the type


@dataclass(frozen=True)
class DependencyPath:
    """Exact solutions of some targets of a pairing on a grid of α (descending), for sliders.

    targets : (T',) the pairing's target indices held, ascending (every one when ``complete``).
    coef : :class:`SparseColumns` with T'·A columns; column ``i·A + a`` is ``targets[i]`` at
        ``alphas[a]``. A target's path is a prefix of the grid: ``n_alphas`` long.
    gaps : (T', A) duality gaps (NaN beyond a target's path); alpha_max : (T',).
    r2 : (T', A) R² of every dependency (:func:`engine.core.analysis.r_squared`, from the Grams;
        NaN beyond a target's path or where its logit is constant).
    n_targets : the pairing's number of targets; complete : True when every one is held.
    """

    model: str
    source: str
    within: bool
    alphas: np.ndarray
    targets: np.ndarray
    coef: SparseColumns
    gaps: np.ndarray
    n_alphas: np.ndarray
    alpha_max_held: np.ndarray
    n_targets: int
    r2: np.ndarray

    @property
    def n_sources(self) -> int:
        return self.coef.n_sources

    @property
    def complete(self) -> bool:
        return len(self.targets) == self.n_targets

    # -- one target
    def has(self, target: int) -> bool:
        i = int(np.searchsorted(self.targets, target))
        return i < len(self.targets) and self.targets[i] == target

    def position(self, target: int) -> int:
        if not 0 <= target < self.n_targets:
            raise NotFoundError(f"target {target} is out of range [0, {self.n_targets - 1}]")
        if not self.has(target):
            raise NotFoundError(f"target {target}'s path is not solved yet")
        return int(np.searchsorted(self.targets, target))

    def alpha_max(self, target: int) -> float:
        return float(self.alpha_max_held[self.position(target)])

    def alpha_indices(self, target: int) -> np.ndarray:
        """Indices of the α on this target's path (descending α)."""
        return np.arange(int(self.n_alphas[self.position(target)]))

    def coef_at(self, target: int, alpha_index: int) -> tuple[np.ndarray, np.ndarray]:
        i = self.position(target)
        if not 0 <= alpha_index < self.n_alphas[i]:
            raise NotFoundError(f"α index {alpha_index} is not on target {target}'s path "
                                f"(it has {int(self.n_alphas[i])} α)")
        return self.coef.column(i * len(self.alphas) + alpha_index)

    def coef_vector(self, target: int, alpha_index: int) -> np.ndarray:
        vec = np.zeros(self.n_sources)
        idx, val = self.coef_at(target, alpha_index)
        vec[idx] = val
        return vec

    def r2_of(self, target: int) -> np.ndarray:
        """R² of the target's dependency at each α of its path."""
        return self.r2[self.position(target), : len(self.alpha_indices(target))]

    def target_path(self, target: int) -> np.ndarray:
        """(A', P) coefficients of one target along its path (for the α-path chart)."""
        return np.stack([self.coef_vector(target, a) for a in self.alpha_indices(target)])

    def nearest_alpha_index(self, alpha: float, target: int | None = None) -> int:
        alpha = check_alpha(alpha)
        grid = self.alphas if target is None else self.alphas[self.alpha_indices(target)]
        return int(np.argmin(np.abs(np.log(grid) - np.log(alpha))))

    # -- many targets
    @property
    def support_sizes(self) -> np.ndarray:
        """(T', A) sources per held target and α (0 beyond a target's path: see ``reached``)."""
        return self.coef.support_sizes.reshape(len(self.targets), len(self.alphas))

    def reached(self, alpha_index: int) -> np.ndarray:
        """(T',) True for the held targets whose path reaches ``alphas[alpha_index]``."""
        return self.n_alphas > alpha_index

    def at_alpha(self, alpha_index: int) -> SparseColumns:
        """The held targets' coefficients at one α: (P, T') columns, in ``targets`` order
        (empty for targets whose path ended before it: see :meth:`reached`)."""
        cols = np.arange(len(self.targets)) * len(self.alphas) + alpha_index
        return self.coef.select(cols)

    def select(self, targets) -> DependencyPath:
        """The paths of ``targets`` (held ones; in the order given)."""
        return self.take([self.position(int(t)) for t in np.asarray(targets).reshape(-1)])

    def take(self, positions) -> DependencyPath:
        """The paths at ``positions`` of ``targets``."""
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        A = len(self.alphas)
        cols = (pos[:, None] * A + np.arange(A)[None, :]).reshape(-1)
        return replace(self, targets=self.targets[pos], coef=self.coef.select(cols), gaps=self.gaps[pos],
                       n_alphas=self.n_alphas[pos], alpha_max_held=self.alpha_max_held[pos], r2=self.r2[pos])

    # -- storage
    def to_arrays(self) -> dict[str, np.ndarray]:
        return {**self.coef.to_arrays(), "alphas": self.alphas, "targets": self.targets, "gaps": self.gaps,
                "n_alphas": self.n_alphas, "alpha_max": self.alpha_max_held, "r2": self.r2}


def _from_arrays(arrays: dict, pairing: Pairing) -> DependencyPath:
    return DependencyPath(
        model=pairing.model.name, source=pairing.source.name, within=pairing.within,
        alphas=np.asarray(arrays["alphas"]), targets=np.asarray(arrays["targets"], dtype=np.int64),
        coef=SparseColumns.from_arrays(arrays, pairing.source.k), gaps=np.asarray(arrays["gaps"]),
        n_alphas=np.asarray(arrays["n_alphas"], dtype=np.int64), alpha_max_held=np.asarray(arrays["alpha_max"]),
        n_targets=pairing.model.k, r2=np.asarray(arrays["r2"]))


def _from_core(core: CovLassoPath, targets: np.ndarray, pairing: Pairing, gs) -> DependencyPath:
    return DependencyPath(
        model=pairing.model.name, source=pairing.source.name, within=pairing.within, alphas=core.alphas,
        targets=np.asarray(targets, dtype=np.int64), coef=core.coef, gaps=core.gaps, n_alphas=core.n_alphas,
        alpha_max_held=core.alpha_max, n_targets=pairing.model.k, r2=path_r2(gs, core, targets))


def path_r2(gs, core: CovLassoPath, targets: np.ndarray) -> np.ndarray:
    """(T', A) R² of every dependency of a solved path, from the Grams and the targets' means:
    ``1 − e / Var g_t`` with ``e = E[g²] − 2θᵀb + θᵀGθ`` (θ sparse: a few Gram rows each)."""
    A = len(core.alphas)
    err = np.full((len(targets), A), np.nan)
    for i, t in enumerate(np.asarray(targets)):
        row = gs.rhs_columns([t])[:, 0]
        for a in range(int(core.n_alphas[i])):
            idx, val = core.coef.column(i * A + a)
            quad = val @ np.asarray(gs.design[np.ix_(idx, idx)]) @ val if len(idx) else 0.0
            err[i, a] = gs.target_sq[t] - 2.0 * (val @ row[idx]) + quad
    t = np.asarray(targets)
    var = target_variance(gs.target_sq[t], gs.target_mean[t])[:, None]
    return r2_from_error(err, var, gs.target_sq[t][:, None])


def concat_paths(parts: list[DependencyPath]) -> DependencyPath:
    """Paths of disjoint target sets on the same grid, as one (targets kept ascending)."""
    joined = replace(
        parts[0], targets=np.concatenate([p.targets for p in parts]),
        coef=SparseColumns.concat([p.coef for p in parts]), gaps=np.concatenate([p.gaps for p in parts]),
        n_alphas=np.concatenate([p.n_alphas for p in parts]),
        alpha_max_held=np.concatenate([p.alpha_max_held for p in parts]),
        r2=np.concatenate([p.r2 for p in parts]))
    order = np.argsort(joined.targets, kind="stable")
    return joined if np.all(order == np.arange(len(order))) else joined.take(order)


# ----------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class PathSpec:
    """Everything a pairing's path depends on: its cache key (per target, per chunk, all)."""

    pairing: Pairing
    alphas: np.ndarray
    config: SolverConfig
    max_sources: int | None

    def key(self) -> dict:
        key = {**self.pairing.key(), "alphas": [float(a) for a in self.alphas], "solver": self.config.key(),
               "layout": _LAYOUT}
        if self.max_sources is not None:
            key["max_sources"] = int(self.max_sources)
        return key



def path_spec(cache: Cache, pairing: Pairing, alphas=None, config: SolverConfig | None = None,
              rule: GridRule | None = None) -> PathSpec:
    """The path's grid and settings: ``alphas`` solved in full, or chosen by ``rule``
    (default :class:`GridRule`) from the largest α_max (read from the cached Gram set)."""
    cfg = config or SolverConfig()
    if alphas is not None:
        return PathSpec(pairing, check_grid(alphas), cfg, None)
    rule = rule or GridRule()
    gs = load_gramset(cache, pairing)
    return PathSpec(pairing, check_grid(rule.alphas(gs.alpha_max)), cfg, rule.max_sources)


# ----------------------------------------------------------------------------- per target


def target_paths(cache: Cache, spec: PathSpec, targets) -> DependencyPath:
    """The paths of ``targets`` (the pairing's indices), in ascending order: read from the
    all-target path or its chunks when they hold them, else from each target's own cache
    entry, else solved now for the missing targets alone and cached per target."""
    wanted = np.unique(np.asarray(targets, dtype=np.int64).reshape(-1))
    k = spec.pairing.model.k
    if wanted.size == 0 or wanted[0] < 0 or wanted[-1] >= k:
        raise NotFoundError(f"targets must lie in [0, {k - 1}]; got {targets!r}")
    held = read_all_paths(cache, spec, chunks_for=wanted)
    found = [held.select(wanted[[held.has(int(t)) for t in wanted]])] if held is not None else []
    rest = [int(t) for t in wanted if held is None or not held.has(int(t))]
    missing = []
    for t in rest:
        hit = cache.load_derived(TARGET_PATH, {**spec.key(), "target": t})
        if hit is None:
            missing.append(t)
        else:
            found.append(_from_arrays(hit[0], spec.pairing))
    if missing:
        solved = solve_targets(cache, spec, np.asarray(missing))
        for t in missing:
            one = solved.select([t])
            cache.save_derived(TARGET_PATH, {**spec.key(), "target": t}, one.to_arrays(), spec.pairing.names())
        found.append(solved)
    return concat_paths([p for p in found if len(p.targets)])


def solve_targets(cache: Cache, spec: PathSpec, targets: np.ndarray,
                  progress: Callable[[float, str], None] | None = None, gs: GramSet | None = None) -> DependencyPath:
    """Solve the paths of ``targets`` (ascending) now, from the Gram set (pure core); ``gs``:
    the pairing's Gram set when the caller holds it (default: read from the cache)."""
    gs = gs if gs is not None else load_gramset(cache, spec.pairing)
    targets = np.asarray(targets, dtype=np.int64)
    core = covlasso_path(gs.design, gs.rhs_columns(targets), gs.target_sq[targets], spec.alphas,
                         forbid=gs.forbid(targets), config=spec.config, max_sources=spec.max_sources,
                         check_input=False, design_diag=gs.design_diag, progress=progress)
    return _from_core(core, targets, spec.pairing, gs)


# ----------------------------------------------------------------------------- every target


def _finished_chunks(cache: Cache, spec: PathSpec) -> list[tuple[int, int]]:
    """(start, stop) of the chunks the all-target job has cached, from its index entry."""
    hit = cache.load_derived(PATH_INDEX, spec.key())
    if hit is None:
        return []
    return [(int(a), int(b)) for a, b in zip(hit[0]["starts"], hit[0]["stops"])]


def read_all_paths(cache: Cache, spec: PathSpec, *, chunks_for=None) -> DependencyPath | None:
    """What the all-target job has produced, solving nothing: the complete path; else the
    chunks finished so far (``complete`` False); else None. ``chunks_for``: read only the
    chunks holding these targets."""
    hit = cache.load_derived(ALL_PATHS, spec.key(), mmap=True)
    if hit is not None:
        return _from_arrays(hit[0], spec.pairing)
    ranges = _finished_chunks(cache, spec)
    if chunks_for is not None:
        wanted = np.asarray(chunks_for).reshape(-1)
        ranges = [(a, b) for a, b in ranges if ((wanted >= a) & (wanted < b)).any()]
    parts = []
    for start, stop in ranges:
        part = cache.load_derived(CHUNK_PATHS, {**spec.key(), "start": start, "stop": stop})
        if part is not None:
            parts.append(_from_arrays(part[0], spec.pairing))
    return concat_paths(parts) if parts else None


@dataclass(frozen=True)
class PathProgress:
    """How far the all-target path is: targets solved (in finished chunks) out of all."""

    solved: int
    total: int
    complete: bool

    @property
    def fraction(self) -> float:
        return self.solved / max(self.total, 1)


def path_progress(cache: Cache, spec: PathSpec) -> PathProgress:
    """Cheap (a manifest and two small arrays): for pages that say how much is done."""
    total = spec.pairing.model.k
    if cache.has_derived(ALL_PATHS, spec.key()):
        return PathProgress(total, total, True)
    return PathProgress(sum(b - a for a, b in _finished_chunks(cache, spec)), total, False)


def compute_all_paths(cache: Cache, spec: PathSpec, progress: Callable[[float, str], None] | None = None,
                      chunk: int = PATH_CHUNK) -> DependencyPath:
    """Every target's path, ``chunk`` targets at a time, each chunk cached (and listed in the
    job's index) as soon as it is solved; a killed run resumes at the first missing chunk.
    The complete entry is written last, so nothing reads a half result as complete."""
    report = progress or (lambda fraction, message: None)
    with cache.lock(cache.derived_key(ALL_PATHS, spec.key())):
        hit = cache.load_derived(ALL_PATHS, spec.key())
        if hit is not None:
            report(1.0, "every target's path is cached")
            return _from_arrays(hit[0], spec.pairing)
        gs = resident_gramset(load_gramset(cache, spec.pairing, progress=lambda f, m: report(0.0, m)))
        total = spec.pairing.model.k
        ranges = _finished_chunks(cache, spec)
        covered = np.zeros(total, dtype=bool)
        for a, b in ranges:
            covered[a:b] = True
        todo = [(s, min(s + chunk, total)) for s in range(0, total, chunk)]
        todo = [(a, b) for a, b in _uncovered(todo, covered)]
        solved_here, t0 = 0, time.perf_counter()
        for n, (start, stop) in enumerate(todo):
            config = {**spec.key(), "start": start, "stop": stop}
            if not cache.has_derived(CHUNK_PATHS, config):
                path = solve_targets(cache, spec, np.arange(start, stop), gs=gs)
                cache.save_derived(CHUNK_PATHS, config, path.to_arrays(), spec.pairing.names())
                solved_here += stop - start
            ranges.append((start, stop))
            ranges.sort()
            cache.save_derived(PATH_INDEX, spec.key(), {"starts": np.array([a for a, _ in ranges]),
                                                          "stops": np.array([b for _, b in ranges])})
            finished = sum(b - a for a, b in ranges)
            report(finished / total, _eta_message(n + 1, len(todo), finished, total, solved_here,
                                                  time.perf_counter() - t0))
        full = read_all_paths(cache, spec)
        cache.save_derived(ALL_PATHS, spec.key(), full.to_arrays(), spec.pairing.names())
        log.info("every target's path of %s ← %s is cached (%d targets, %d α)", spec.pairing.model.name,
                 spec.pairing.source.name, total, len(spec.alphas))
        return full


def _uncovered(ranges: list[tuple[int, int]], covered: np.ndarray) -> list[tuple[int, int]]:
    """The parts of ``ranges`` not yet covered (a resumed job may have used another chunk size)."""
    out = []
    for a, b in ranges:
        idx = np.flatnonzero(~covered[a:b]) + a
        if idx.size:
            breaks = np.flatnonzero(np.diff(idx) > 1)
            starts = np.concatenate([[idx[0]], idx[breaks + 1]])
            stops = np.concatenate([idx[breaks] + 1, [idx[-1] + 1]])
            out += [(int(s), int(e)) for s, e in zip(starts, stops)]
    return out


def _eta_message(chunk: int, chunks: int, done: int, total: int, solved_here: int, seconds: float) -> str:
    text = f"chunk {chunk}/{chunks}: {done:,} of {total:,} targets"
    if solved_here and done < total:
        left = (total - done) * seconds / solved_here
        text += f", about {left / 60:.1f} min left" if left >= 90 else f", about {left:.0f} s left"
    return text


def load_or_compute_path(cache: Cache, pairing: Pairing, alphas=None, config: SolverConfig | None = None,
                         rule: GridRule | None = None) -> DependencyPath:
    """Every target's path, read or computed here in the foreground (what the ``paths`` job
    runs): for scripts, tests and ``python -m engine demo``; pages never call it."""
    return compute_all_paths(cache, path_spec(cache, pairing, alphas, config, rule))
