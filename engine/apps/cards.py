"""A target card: what a page shows of one target's dependency, from one call.

:func:`target_card` gathers, for one target and one method — the best dependency with at most
``m`` sources, or the paper's CovLasso at the ``alpha_index``-th α of the target's path — its
sources and coefficients (strongest first), the Table 1 metrics, the table of sources (with
the target's covariance with each, Fig. 3's axis), the formula and the words that name the
method; the page (``dashboard/app_pages/explore.py``, through one cached loader) only lays
the card out. :func:`best_subset_card` and :func:`covlasso_card` build a card from a solved
curve or path (the dashboard's centred logits solve theirs in memory). The stages it reads are cached on disk: the target's sources curve
(:func:`engine.stages.sparsity.sources_curve`) and α path (:func:`engine.stages.alpha_paths.target_paths`),
each solved for that target alone the first time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from engine.apps.views import dependency_formula, dependency_frame
from engine.core.analysis import DependencyMetrics, dependency_metrics
from engine.errors import InvalidInputError
from engine.stages.alpha_paths import path_spec, target_paths
from engine.stages.gramsets import load_gramset
from engine.stages.pairing import open_pairing
from engine.stages.solutions import load_top2
from engine.stages.sparsity import curve_sources, sources_curve
from engine.storage.store import Cache

BEST = "best-subset"
LASSO = "covlasso"


@dataclass(frozen=True)
class TargetCard:
    """One target's dependency as a page shows it: its sources and coefficients, the Table 1
    metrics, the table of sources with C_tj, the formula and its label."""

    model: str
    source: str
    target: int
    target_name: str
    method: str  # BEST or LASSO
    m: int | None  # the sources control's value (best subset)
    alpha: float | None  # the α of the path shown (CovLasso)
    sources: np.ndarray  # strongest first
    coefs: np.ndarray
    metrics: DependencyMetrics
    label: str  # "best subset, 3 sources" / "CovLasso, α = 0.5"
    slug: str  # for file names: "m3" / "a0.5"
    frame: pd.DataFrame  # index, name, coef (and covariance: C_tj), strongest first
    formula: str  # 'O ≈ 0.36·0 + 0.19·C …'
    covariance: np.ndarray | None  # (P,) the target's covariance with every source (None without a Gram)

    @property
    def line(self) -> str:
        """The view line's words: the label, and the number of sources where the label does not
        already say it ("best subset, 4 sources"; "CovLasso, α = 4.6 · 13 sources")."""
        if self.method == BEST:
            return self.label
        n = len(self.sources)
        return f"{self.label} · {n} source{'s' if n != 1 else ''}"


def target_card(cache: Cache | str, model: str, source: str | None, target: int, method: str = BEST, *,
                m: int | None = None, alpha_index: int | None = None) -> TargetCard:
    """The card of ``target`` (``model``'s category, predicted from ``source``'s logits; None:
    ``model`` itself; the paper's raw logits): with ``method`` BEST, its best dependency with at
    most ``m`` sources; with LASSO, the CovLasso at the ``alpha_index``-th α of its path."""
    cache = Cache.of(cache)
    pairing = open_pairing(cache, model, source)
    mstore, sstore = pairing.model, pairing.source
    target = int(target)
    gs = load_gramset(cache, pairing, compute=False)
    covariance = None if gs is None else np.asarray(gs.rhs_columns([target])[:, 0])
    names = (mstore.name, sstore.name, mstore.class_names[target], sstore.class_names)
    if method == BEST:
        curve = sources_curve(cache, pairing, target, max_sources=curve_sources(sstore.k, pairing.within))
        return best_subset_card(*names, target, curve, m, covariance)
    if method == LASSO:
        if alpha_index is None:
            raise InvalidInputError("a CovLasso card needs alpha_index (an α of the target's path); got None")
        path = target_paths(cache, path_spec(cache, pairing), [target])
        return covlasso_card(*names, target, path, alpha_index, mstore, sstore, load_top2(cache, mstore), covariance)
    raise InvalidInputError(f"method must be {BEST!r} or {LASSO!r}; got {method!r}")


def best_subset_card(model: str, source: str, target_name: str, source_names: list[str], target: int, curve,
                     m: int | None, covariance: np.ndarray | None = None) -> TargetCard:
    """The card of the best dependency with at most ``m`` sources, from the target's sources
    curve (:class:`engine.stages.sparsity.SourcesCurve`, on raw or centred logits)."""
    if m is None:
        raise InvalidInputError("a best-subset card needs m (the number of sources); got None")
    if not 1 <= m <= len(curve.best):
        raise InvalidInputError(f"m must be in 1 … {len(curve.best)}; got {m}")
    fit = curve.best[m - 1]
    n = len(fit.sources)
    label = f"best subset, {n} source{'s' if n != 1 else ''}" + ("" if n == m else f" (m = {m})")
    return _card(model, source, target, target_name, source_names, BEST, m, None, np.asarray(fit.sources),
                 np.asarray(fit.coefs), fit.metrics, label, f"m{m}", covariance)


def covlasso_card(model: str, source: str, target_name: str, source_names: list[str], target: int, path,
                  alpha_index: int, model_side, source_side, top2, covariance: np.ndarray | None = None) -> TargetCard:
    """The card of the CovLasso at the ``alpha_index``-th α of the target's path
    (:class:`engine.stages.alpha_paths.DependencyPath`), its Table 1 metrics on ``model_side``'s
    logits predicted from ``source_side``'s (anything with ``.logits``; the model's ``.labels``):
    stores, or their centred logits."""
    sources, coefs = path.coef_at(target, alpha_index)
    return covlasso_card_at(model, source, target_name, source_names, target, float(path.alphas[alpha_index]),
                            sources, coefs, path.coef_vector(target, alpha_index), model_side, source_side, top2,
                            covariance)


def covlasso_card_at(model: str, source: str, target_name: str, source_names: list[str], target: int, alpha: float,
                     sources, coefs, vector: np.ndarray, model_side, source_side, top2,
                     covariance: np.ndarray | None = None) -> TargetCard:
    """:func:`covlasso_card` from the solution at α itself: its ``sources`` and ``coefs``, and
    ``vector``, the coefficients of every source (zero off the sources)."""
    sources, coefs = np.asarray(sources), np.asarray(coefs)
    metrics = dependency_metrics(model_side.logits, source_side.logits, model_side.labels, target, vector, top2)
    return _card(model, source, target, target_name, source_names, LASSO, None, alpha, sources, coefs, metrics,
                 f"CovLasso, α = {alpha:.3g}", f"a{alpha:.3g}", covariance)


def _card(model, source, target, target_name, source_names, method, m, alpha, sources, coefs, metrics, label, slug,
          covariance) -> TargetCard:
    frame = dependency_frame(sources, coefs, source_names, covariance)
    return TargetCard(model=model, source=source, target=int(target), target_name=target_name, method=method, m=m,
                      alpha=alpha, sources=sources, coefs=coefs, metrics=metrics, label=label, slug=slug, frame=frame,
                      formula=dependency_formula(target_name, frame), covariance=covariance)
