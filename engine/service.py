"""The engine's front door for the CLI and the dashboard: cached solutions, paths, reports.

Everything here reads stores, computes what is missing once, and caches it by the hash of
the inputs (store contents, α, solver settings), so asking again costs a file read.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from engine.analysis import Top2, dependency_metrics, r2_from_error, target_variance
from engine.covlasso import (
    CovLassoResult,
    SolverConfig,
    alpha_max,
    check_alpha,
    solve_covlasso,
)
from engine.errors import NotFoundError
from engine.gram import GramSet, load_or_compute_gramset
from engine.store import Cache, LogitStore

log = logging.getLogger(__name__)

PAPER_ALPHAS = (2.5, 0.25)
_SOLUTION_ARRAYS = ("offsets", "source", "value", "gap", "n_iter", "converged", "objective")


@dataclass(frozen=True)
class Pairing:
    """Targets are ``model``'s categories, predicted from ``source``'s logits."""

    model: LogitStore
    source: LogitStore

    @property
    def within(self) -> bool:
        return self.model.content_hash == self.source.content_hash

    def key(self) -> dict:
        return {"model": self.model.content_hash, "source": self.source.content_hash}


def open_pairing(cache: Cache, model: str, source: str | None = None) -> Pairing:
    m = cache.load_store(model)
    s = m if source in (None, model) else cache.load_store(source)
    return Pairing(m, s)


def load_gramset(cache: Cache, pairing: Pairing) -> GramSet:
    return load_or_compute_gramset(cache, pairing.source, None if pairing.within else pairing.model)


def _sparse_arrays(res: CovLassoResult) -> dict[str, np.ndarray]:
    return {"offsets": res.offsets, "source": res.sources, "value": res.values}


def _dense_from(arrays: dict[str, np.ndarray], p: int, t: int, prefix: str = "") -> np.ndarray:
    coef = np.zeros((p, t))
    offsets = arrays[prefix + "offsets"]
    counts = np.diff(offsets)
    cols = np.repeat(np.arange(t), counts)
    coef[arrays[prefix + "source"], cols] = arrays[prefix + "value"]
    return coef


def solve_dependencies(
    cache: Cache, pairing: Pairing, alpha: float, config: SolverConfig | None = None
) -> CovLassoResult:
    """Solutions for every target at ``alpha``, from the cache or solved once and cached."""
    alpha = check_alpha(alpha)
    cfg = config or SolverConfig()
    key = {**pairing.key(), "alpha": alpha, "solver": cfg.key()}
    name = cache.derived_key("solution", key)
    with cache.lock(name):
        hit = cache.load_derived("solution", key, _SOLUTION_ARRAYS)
        if hit is not None:
            arrays, _ = hit
            return CovLassoResult(
                np.full(pairing.model.k, alpha), arrays["offsets"], arrays["source"], arrays["value"],
                pairing.source.k, arrays["gap"], arrays["n_iter"],
                arrays["converged"].astype(bool), arrays["objective"],
            )
        gs = load_gramset(cache, pairing)
        res = solve_covlasso(gs.design, gs.rhs, gs.target_sq, alpha, within=gs.within, config=cfg)
        arrays = _sparse_arrays(res)
        arrays.update(
            gap=res.duality_gap, n_iter=res.n_iter,
            converged=res.converged.astype(np.uint8), objective=res.objective,
        )
        cache.save_derived("solution", key, arrays, {"model": pairing.model.name, "source": pairing.source.name})
    return res


# ----------------------------------------------------------------------------- α paths


@dataclass(frozen=True)
class DependencyPath:
    """Exact solutions of every target on a grid of α values (descending), for sliders.

    coef_at(t, a) gives target t's sources and coefficients at ``alphas[a]``.
    """

    model: str
    source: str
    within: bool
    alphas: np.ndarray  # (A,) descending
    alpha_max: np.ndarray  # (T,)
    gaps: np.ndarray  # (A, T)
    offsets: np.ndarray  # (A·T + 1,) into source/value, ordered by (alpha, target)
    sources: np.ndarray
    values: np.ndarray
    n_sources: int
    n_targets: int
    r2: np.ndarray | None = None  # (A, T) R² of each dependency (engine.analysis.r_squared), nan if undefined

    def coef_at(self, target: int, alpha_index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= target < self.n_targets:
            raise NotFoundError(f"target {target} is out of range [0, {self.n_targets - 1}]")
        k = alpha_index * self.n_targets + target
        sl = slice(self.offsets[k], self.offsets[k + 1])
        return self.sources[sl], self.values[sl]

    def coef_vector(self, target: int, alpha_index: int) -> np.ndarray:
        vec = np.zeros(self.n_sources)
        idx, val = self.coef_at(target, alpha_index)
        vec[idx] = val
        return vec

    def coef_matrix(self, alpha_index: int) -> np.ndarray:
        """Dense (P, T) coefficients at ``alphas[alpha_index]``."""
        t = self.n_targets
        base = self.offsets[alpha_index * t : (alpha_index + 1) * t + 1]
        sl = slice(base[0], base[-1])
        arrays = {"offsets": base - base[0], "source": self.sources[sl], "value": self.values[sl]}
        return _dense_from(arrays, self.n_sources, t)

    def nearest_alpha_index(self, alpha: float) -> int:
        alpha = check_alpha(alpha)
        return int(np.argmin(np.abs(np.log(self.alphas) - np.log(alpha))))

    def target_path(self, target: int) -> np.ndarray:
        """(A, P) coefficients of one target over the whole grid (for the α-path chart)."""
        return np.stack([self.coef_vector(target, a) for a in range(len(self.alphas))])

    @cached_property
    def support_sizes(self) -> np.ndarray:
        """(A, T) number of sources per target and α."""
        return np.diff(self.offsets).reshape(len(self.alphas), self.n_targets)


@dataclass(frozen=True)
class GridRule:
    """How a path's α grid is chosen when none is given; part of the path's cache key.

    Log-spaced from the largest α_max down to ``span`` times it (plus the paper's α), and
    stopped after the first α at which the median target uses more than
    ``max_median_sources`` sources: below that a dependency is neither sparse nor readable
    (the star graph shows 16 sources, the formula 8), and the solves there cost the most —
    measured on the demo, the glyph-vit ← glyph-resnet path spent 35 of its 54 s of CPU
    below a median of 73 sources (docs/dashboard.md).
    """

    n: int = 24
    span: float = 5e-3
    max_median_sources: int = 64

    def alphas(self, amax: np.ndarray) -> np.ndarray:
        return default_alpha_grid(amax, self.n, self.span)


def default_alpha_grid(amax: np.ndarray, n: int = 24, span: float = 5e-3) -> np.ndarray:
    """Log-spaced α from the largest α_max down to ``span`` times it, plus the paper's α."""
    hi = float(amax.max())
    if not hi > 0:  # all-zero logits: every coefficient is zero at every α; any grid shows that
        hi = 1.0
    grid = np.geomspace(hi, hi * span, n)
    extra = [a for a in PAPER_ALPHAS if hi * span < a < hi]
    return np.unique(np.concatenate([grid, extra]))[::-1]


def load_or_compute_path(
    cache: Cache,
    pairing: Pairing,
    alphas: np.ndarray | None = None,
    config: SolverConfig | None = None,
    rule: GridRule | None = None,
) -> DependencyPath:
    """The α path of every target, from the cache or computed once (warm starts) and cached.

    ``alphas``: an explicit grid, solved in full; otherwise ``rule`` (default
    :class:`GridRule`) chooses it, and the path may end before the grid's last α.
    """
    cfg = config or SolverConfig()
    gs = load_gramset(cache, pairing)
    amax = alpha_max(gs.design, gs.rhs, gs.within)
    stop = None
    if alphas is None:
        rule = rule or GridRule()
        alphas, stop = rule.alphas(amax), rule.max_median_sources
    grid = np.sort(np.asarray(alphas, dtype=np.float64))[::-1]
    for a in grid:
        check_alpha(a)
    key = {**pairing.key(), "alphas": [float(a) for a in grid], "solver": cfg.key(), "measures": ["r2"]}
    if stop is not None:
        key["stop_median_sources"] = stop
    name = cache.derived_key("path", key)
    with cache.lock(name):
        hit = cache.load_derived("path", key, ("offsets", "source", "value", "gaps", "r2"))
        if hit is None:
            arrays = compute_path(gs, grid, cfg, stop, target_mean=pairing.model.logits.mean(0, dtype=np.float64))
            cache.save_derived("path", key, arrays, {"model": pairing.model.name, "source": pairing.source.name})
        else:
            arrays = hit[0]
    return DependencyPath(
        model=pairing.model.name,
        source=pairing.source.name,
        within=pairing.within,
        alphas=arrays.get("alphas", grid),
        alpha_max=amax,
        gaps=arrays["gaps"],
        offsets=arrays["offsets"],
        sources=arrays["source"],
        values=arrays["value"],
        n_sources=gs.design.shape[0],
        n_targets=gs.rhs.shape[1],
        r2=arrays["r2"],
    )


def compute_path(gs: GramSet, grid: np.ndarray, cfg: SolverConfig, stop: int | None = None,
                 target_mean: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Warm-started solves down the grid; after the first α whose median support exceeds
    ``stop`` (when given), the path ends. With the targets' means, each dependency's R² too."""
    prev = None
    offsets, sources, values, gaps, r2 = [np.zeros(1, dtype=np.int64)], [], [], [], []
    for a in grid:
        res = solve_covlasso(gs.design, gs.rhs, gs.target_sq, a, within=gs.within, config=cfg,
                             warm_start=prev)
        prev = res
        arr = _sparse_arrays(res)
        offsets.append(arr["offsets"][1:] + offsets[-1][-1])
        sources.append(arr["source"])
        values.append(arr["value"])
        gaps.append(res.duality_gap)
        if target_mean is not None:
            r2.append(dependencies_r2(gs, res, target_mean))
        if stop is not None and np.median(res.support_sizes) > stop:
            log.info("α path ends at α = %.4g: the median target has %d sources (> %d)",
                     a, int(np.median(res.support_sizes)), stop)
            break
    out = {
        "alphas": grid[: len(gaps)].copy(),
        "offsets": np.concatenate(offsets),
        "source": np.concatenate(sources),
        "value": np.concatenate(values),
        "gaps": np.stack(gaps),
    }
    if r2:
        out["r2"] = np.stack(r2)
    return out


def dependencies_r2(gs: GramSet, res: CovLassoResult, target_mean: np.ndarray) -> np.ndarray:
    """(T,) R² of every target's sparse dependency in ``res``, from the Grams alone."""
    var = target_variance(gs.target_sq, target_mean)
    err = np.empty(res.n_targets)
    for t in range(res.n_targets):
        sl = slice(res.offsets[t], res.offsets[t + 1])
        src, val = res.sources[sl], res.values[sl]
        err[t] = gs.target_sq[t] - 2.0 * (val @ gs.rhs[src, t]) + val @ gs.design[np.ix_(src, src)] @ val
    return r2_from_error(err, var, gs.target_sq)


# ----------------------------------------------------------------------------- reports


_INDEX_RE = re.compile(r"^-?[0-9]{1,18}$")


def parse_index(text: str) -> int | None:
    """An integer written with ASCII digits (``"12"``, ``"-1"``), else None.

    ``str.isdigit`` is not the test: it accepts "²" and "١٢", which ``int`` then refuses
    or reads as another number; such text is a (non-existent) class name instead.
    """
    text = str(text).strip()
    return int(text) if _INDEX_RE.match(text) else None


def find_category(class_names: list[str], token: str | int) -> int | str:
    """One category from an index, an exact class name, or a name's first word when that is
    unique (glyph classes: the character itself, ``"é"``). Returns the index, or a sentence
    saying why there is none (callers raise it with their own error type and context)."""
    text = str(token).strip()
    i = parse_index(text)
    if i is not None:
        return i if 0 <= i < len(class_names) else f"index {i} is out of range 0..{len(class_names) - 1}"
    matches = [j for j, n in enumerate(class_names) if n == text]
    matches = matches or [j for j, n in enumerate(class_names) if n.split(" ")[0] == text]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        return (f"no category named {text!r} ({text!r} matches 0 class names or first words); give an "
                f"index 0..{len(class_names) - 1}, an exact class name or a name's first word "
                f"(e.g. {class_names[0]!r})")
    return f"{text!r} matches {len(matches)} class names by their first word; give its index or its exact name"


def resolve_targets(store: LogitStore, targets: list[str | int] | None) -> list[int]:
    """Targets given as indices, exact class names or unique first words (the CLI)."""
    if not targets:
        return list(range(store.k))
    out = []
    for t in targets:
        i = find_category(store.class_names, t)
        if isinstance(i, str):
            raise NotFoundError(f"store {store.name!r}: {i}")
        out.append(i)
    return out


def dependency_report(
    cache: Cache,
    model: str,
    source: str | None,
    alpha: float,
    targets: list[str | int] | None = None,
    config: SolverConfig | None = None,
) -> dict:
    """The CLI's ``dependencies`` JSON: sources, coefficients and Table 1 metrics per target."""
    alpha = check_alpha(alpha)
    pairing = open_pairing(cache, model, source)
    wanted = resolve_targets(pairing.model, targets)
    res = solve_dependencies(cache, pairing, alpha, config)
    m, s = pairing.model, pairing.source
    top2 = Top2.of(m.logits)
    src_names = s.class_names
    out = []
    for t in wanted:
        col = res.column(t)
        idx = np.flatnonzero(col)
        idx = idx[np.argsort(-np.abs(col[idx]), kind="stable")]
        metrics = dependency_metrics(m.logits, s.logits, m.labels, t, col, top2)
        out.append(
            {
                "target": t,
                "target_name": m.class_names[t],
                "sources": [{"index": int(j), "name": src_names[j], "coef": float(col[j])} for j in idx],
                **metrics.as_json(),  # abs_err, rel_err, acc, ori_acc, pos_acc, ori_pos_acc, n_pos, r2
                "duality_gap": float(res.duality_gap[t]),
            }
        )
    return {"alpha": alpha, "model": m.name, "source": s.name, "targets": out}





def prepare_demo_dependencies(
    cache: Cache, stores: list[str], pairs: list[tuple[str, str]], alpha: float
) -> bool:
    """Solutions at ``alpha`` and the α paths (what Explore and Compare read) for every store
    (within) and every (model, source) pair (between). Returns True when all were cache hits."""
    before = set(cache.derived_dir.glob("*.json")) if cache.derived_dir.exists() else set()
    for model, source in [(s, s) for s in stores] + [tuple(p) for p in pairs]:
        pairing = open_pairing(cache, model, source)
        solve_dependencies(cache, pairing, alpha)
        load_or_compute_path(cache, pairing)
        log.info("dependencies ready: %s from %s", model, source)
    return set(cache.derived_dir.glob("*.json")) == before
