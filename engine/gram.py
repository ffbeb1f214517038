"""Streaming logit Gram matrices: ``E[f fᵀ]`` and cross-Grams ``E[f gᵀ]``, in float64.

The CovLasso depends on the data only through these matrices, so one pass over the logits
serves every target, every α and every model pair. Accumulation is by chunks (so N can be
far larger than memory allows for a float64 copy) on CPU or CUDA; each chunk is promoted
to float64 before its product, so the sum is exact to float64 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from engine.errors import IncompatibleStoresError, InvalidInputError
from engine.store import Cache, LogitStore

if TYPE_CHECKING:
    import torch

DEFAULT_CHUNK = 8192


class GramAccumulator:
    """Accumulates ``Σ fᵀf`` (and ``Σ fᵀg``, ``Σ gᵀg`` for a pair) chunk by chunk.

    >>> acc = GramAccumulator(k_a=1000)            # within one model
    >>> for chunk in chunks: acc.update(chunk)     # chunk: (n, 1000) tensor or array
    >>> C = acc.gram()                              # (1000, 1000) float64 numpy, E[f fᵀ]
    """

    def __init__(self, k_a: int, k_b: int | None = None, device: str | torch.device = "cpu",
                 syrk: bool | None = None):
        import torch  # only to accumulate: reading cached Grams needs numpy alone

        self.device = torch.device(device)
        self.n = 0
        kw = {"dtype": torch.float64, "device": self.device}
        # On CPU, Σ fᵀf goes through BLAS's symmetric rank-k update (dsyrk: the upper triangle
        # only, half the FLOPs of a GEMM; measured 2.0× faster for 4,096 × 1,000 chunks, which
        # is what keeps extraction of a small model limited by the model). On CUDA, addmm
        # (``syrk=False`` takes that path on CPU too: the tests check both against numpy).
        self._syrk = self.device.type == "cpu" if syrk is None else bool(syrk)
        if self._syrk and self.device.type != "cpu":
            raise InvalidInputError(f"syrk=True is a CPU path; the device is {self.device}")
        self._aa = np.zeros((k_a, k_a), order="F") if self._syrk else torch.zeros(k_a, k_a, **kw)
        self._ab = torch.zeros(k_a, k_b, **kw) if k_b else None
        self._bb_diag = torch.zeros(k_b, **kw) if k_b else None

    def update(self, f, g=None) -> None:
        import torch

        f = torch.as_tensor(f).to(self.device, torch.float64)
        if f.ndim != 2 or f.shape[1] != self._aa.shape[0]:
            raise InvalidInputError(
                f"Gram chunk must have shape (n, {self._aa.shape[0]}); got {tuple(f.shape)}"
            )
        if self._syrk:
            from scipy.linalg.blas import dsyrk

            a = np.ascontiguousarray(f.numpy()).T  # (K, n), Fortran order: no copy
            self._aa = dsyrk(1.0, a, beta=1.0, c=self._aa, trans=0, overwrite_c=1)
        else:
            self._aa.addmm_(f.T, f)
        if self._ab is not None:
            if g is None:
                raise InvalidInputError("this accumulator is for a model pair: pass g as well")
            g = torch.as_tensor(g).to(self.device, torch.float64)
            if g.shape != (f.shape[0], self._ab.shape[1]):
                raise InvalidInputError(
                    f"paired chunk must have shape ({f.shape[0]}, {self._ab.shape[1]}); "
                    f"got {tuple(g.shape)}"
                )
            self._ab.addmm_(f.T, g)
            self._bb_diag += (g * g).sum(0)
        self.n += int(f.shape[0])

    def _require_samples(self) -> None:
        if self.n == 0:
            raise InvalidInputError("no samples were accumulated; the Gram of nothing is undefined")

    def _mean(self, total: torch.Tensor) -> np.ndarray:
        self._require_samples()
        return (total / self.n).cpu().numpy()

    def gram(self) -> np.ndarray:
        """``E[f fᵀ]``, symmetrised in place by blocks (no second K×K copy at large K)."""
        if self._syrk:  # only the upper triangle was accumulated: mirror it, by blocks
            self._require_samples()
            k, block = self._aa.shape[0], 1024
            g = np.empty((k, k))
            np.divide(self._aa, self.n, out=g)
            for i in range(0, k, block):
                rows = slice(i, i + block)
                g[i + block :, rows] = g[rows, i + block :].T
                d = g[rows, rows]
                g[rows, rows] = np.triu(d) + np.triu(d, 1).T
            return g
        g = self._mean(self._aa)
        k, block = g.shape[0], 1024
        for i in range(0, k, block):
            avg = (g[i : i + block, i:] + g[i:, i : i + block].T) / 2
            g[i : i + block, i:] = avg
            g[i:, i : i + block] = avg.T
        return g

    def cross_gram(self) -> np.ndarray:
        """``E[f gᵀ]`` of a pair (K_a × K_b)."""
        if self._ab is None:
            raise InvalidInputError("this accumulator was built for one model; no cross-Gram")
        return self._mean(self._ab)

    def target_sq(self) -> np.ndarray:
        """``E[g_i²]`` for every category i of the second model."""
        if self._bb_diag is None:
            raise InvalidInputError("this accumulator was built for one model")
        return self._mean(self._bb_diag)


def check_pairable(a: LogitStore, b: LogitStore) -> None:
    """Two stores pair only if they hold the same samples in the same order."""
    if a.n != b.n or a.sample_fingerprint != b.sample_fingerprint:
        raise IncompatibleStoresError(
            f"stores {a.name!r} ({a.n} samples, fingerprint {a.sample_fingerprint[:20]}…) and "
            f"{b.name!r} ({b.n} samples, fingerprint {b.sample_fingerprint[:20]}…) do not hold "
            "the same samples in the same order; extract both from the same dataset and split"
        )


@dataclass(frozen=True)
class GramSet:
    """What the CovLasso needs for one (source, target) pairing, all float64.

    design: E[f fᵀ] of the source model (P × P); rhs: E[f g_i] for every target i (P × T);
    target_sq: E[g_i²] (T,); within: True when source and target are the same model
    (then θ_i = 0 is imposed for target i).
    """

    design: np.ndarray
    rhs: np.ndarray
    target_sq: np.ndarray
    within: bool
    n: int


def compute_gramset(
    source: LogitStore, target: LogitStore | None = None, *, device: str = "cpu", chunk: int = DEFAULT_CHUNK
) -> GramSet:
    """Accumulate the Grams of ``source`` (and the cross-Gram with ``target``) by chunks."""
    within = target is None or target.content_hash == source.content_hash
    if not within:
        check_pairable(source, target)
    acc = GramAccumulator(source.k, None if within else target.k, device)
    for start in range(0, source.n, chunk):
        f = source.logits[start : start + chunk]
        acc.update(f, None if within else target.logits[start : start + chunk])
    design = acc.gram()
    if within:
        return GramSet(design, design, np.diag(design).copy(), True, acc.n)
    return GramSet(design, acc.cross_gram(), acc.target_sq(), False, acc.n)


def gram_config(source: LogitStore, target: LogitStore | None) -> dict:
    within = target is None or target.content_hash == source.content_hash
    return {"source": source.content_hash, "target": None if within else target.content_hash}


def load_or_compute_gramset(
    cache: Cache, source: LogitStore, target: LogitStore | None = None, *, device: str = "cpu"
) -> GramSet:
    """The GramSet from the cache, or computed once and cached (atomically, under a lock)."""
    config = gram_config(source, target)
    key = cache.derived_key("gram", config)
    with cache.lock(key):
        hit = cache.load_derived("gram", config, ("design", "target_sq") + (() if config["target"] is None else ("rhs",)))
        if hit is None:
            gs = compute_gramset(source, target, device=device)
            save_gramset(cache, config, gs)
            return gs
    arrays, manifest = hit
    within = config["target"] is None
    design = arrays["design"]
    return GramSet(
        design=design,
        rhs=design if within else arrays["rhs"],
        target_sq=arrays["target_sq"],
        within=within,
        n=int(manifest["info"]["n"]),
    )


def save_gramset(cache: Cache, config: dict, gs: GramSet) -> None:
    arrays = {"design": gs.design, "target_sq": gs.target_sq}
    if not gs.within:
        arrays["rhs"] = gs.rhs
    cache.save_derived("gram", config, arrays, {"n": gs.n})
