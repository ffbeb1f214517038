"""The CLI's ``dependencies`` report: sources, coefficients and Table 1 metrics per target.

Solves only the targets asked for (:func:`engine.service.solve_dependencies` with a subset),
so ``--target`` costs a few Lasso problems on the Gram, whatever the number of categories.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from engine.analysis import dependency_metrics
from engine.categories import resolve_targets
from engine.centring import CentredLogits, centred_gramset, centred_top2
from engine.covlasso import SolverConfig, check_alpha
from engine.gramsets import verify_gramset_of
from engine.service import load_gramset, load_top2, open_pairing, solve_dependencies, solve_gramset
from engine.store import Cache


def dependency_report(
    cache: Cache,
    model: str,
    source: str | None,
    alpha: float,
    targets: list[str | int] | None = None,
    config: SolverConfig | None = None,
    centred: bool = False,
) -> dict:
    """The JSON of ``python -m engine dependencies`` (see README: the contract is stable).

    ``centred``: every logit minus its sample's mean logit, in the solve and in the metrics
    (:mod:`engine.centring`; solved from the raw Grams, not cached); the default is the
    paper's raw setting."""
    alpha = check_alpha(alpha)
    with ThreadPoolExecutor(1) as pool:  # the Gram's hash is checked while the stores are read
        early = pool.submit(verify_gramset_of, cache, model, source)
        pairing = open_pairing(cache, model, source)
        early.result()
    wanted = resolve_targets(pairing.model, targets)
    subset = None if not targets else wanted
    m, s = pairing.model, pairing.source
    top2 = load_top2(cache, m)
    target_logits, source_logits = m.logits, s.logits
    if centred:
        res, target_logits, source_logits, top2 = _centred(cache, pairing, alpha, config, subset, top2)
    else:
        res = solve_dependencies(cache, pairing, alpha, config, subset)
    src_names = s.class_names
    out = []
    for i, t in enumerate(wanted):
        col = res.column(i if targets else t)
        idx = np.flatnonzero(col)
        idx = idx[np.argsort(-np.abs(col[idx]), kind="stable")]
        metrics = dependency_metrics(target_logits, source_logits, m.labels, t, col, top2)
        out.append(
            {
                "target": t,
                "target_name": m.class_names[t],
                "sources": [{"index": int(j), "name": src_names[j], "coef": float(col[j])} for j in idx],
                **metrics.as_json(),  # abs_err, rel_err, acc, ori_acc, pos_acc, ori_pos_acc, n_pos, r2
                "duality_gap": float(res.duality_gap[i if targets else t]),
            }
        )
    return {"alpha": alpha, "model": m.name, "source": s.name, "targets": out,
            "logits": "centred" if centred else "raw"}


def _centred(cache: Cache, pairing, alpha: float, config: SolverConfig | None, targets, top2):
    """The solution and the metrics' inputs on per-sample-centred logits."""
    raw = load_gramset(cache, pairing)
    own = None if pairing.within else load_gramset(cache, open_pairing(cache, pairing.model.name))
    res = solve_gramset(centred_gramset(raw, own), alpha, config or SolverConfig(), targets)
    target = CentredLogits(pairing.model.logits)
    source = target if pairing.within else CentredLogits(pairing.source.logits)
    return res, target, source, centred_top2(top2, target.means)
