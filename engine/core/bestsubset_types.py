"""The best-subset search's configuration and result (:mod:`engine.core.bestsubset` solves).

Numpy only: what the cache stores and the pages read, without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.core.covlasso_types import check_device, check_integers, result_key
from engine.core.sparse import SparseColumns
from engine.errors import InvalidInputError

DEFAULT_MAX_SOURCES = 8  # the Sources control of the pages: 1 … 8
MAX_SOURCES_LIMIT = 32  # beyond it a dependency is not "a few sources", and the swaps cost k²·P
RESULT_ARRAYS = ("offsets", "source", "value", "residual", "swaps", "omp_start")


@dataclass(frozen=True)
class SubsetConfig:
    """How best subsets are searched; part of every cached solution's key."""

    pivot: float = 1e-8  # a source joins S only when d_i > pivot · G_ii (see the module doc)
    tol: float = 1e-12  # a swap must lower the residual by more than tol · E[g_t²]
    max_swaps: int = 64  # swaps per target and m (each lowers the residual; rarely > 5)
    # independent searches per target, each started from one of its ``starts`` best single
    # sources (the first one free); the best of them is kept for every m
    starts: int = 4
    backward: bool = True  # the backward sweep (m+1's solution less its weakest source, swapped)
    chunk: int = 0  # targets solved together; 0: as many as ~256 MB of temporaries allow
    device: str = "cpu"
    # chunks of targets solved at once on the CPU, each in its own thread with one torch
    # thread (small batched ops run fastest single-threaded; torch releases the GIL); 0: one
    # per core, at most 4
    threads: int = 0

    def __post_init__(self) -> None:
        for name in ("pivot", "tol"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v) or not 0 < v < 1:
                raise InvalidInputError(f"{name} must be a number in (0, 1); got {v!r}")
        check_integers(self, {"max_swaps": 0, "starts": 1, "chunk": 0, "threads": 0})
        check_device(self.device)

    def key(self) -> dict:
        """The settings that change the result (device, chunking and threads do not)."""
        return result_key(self)


def check_max_sources(value, n_sources: int | None = None) -> int:
    """``--sources`` / ``max_sources``: an integer in 1 … :data:`MAX_SOURCES_LIMIT` (and below
    the number of sources when known), else one line naming the value and what to give."""
    text = str(value).strip()
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not ok and isinstance(value, str) and text.lstrip("+").isdigit() and text.isascii():
        value, ok = int(text), True
    limit = MAX_SOURCES_LIMIT if n_sources is None else min(MAX_SOURCES_LIMIT, max(n_sources, 1))
    if not ok or not 1 <= int(value) <= limit:
        raise InvalidInputError(
            f"--sources must be a whole number of sources from 1 to {limit}; got {text!r}. "
            f"Give e.g. --sources 4 (the paper's illustrated dependencies have 3 or 4 sources)")
    return int(value)


@dataclass(frozen=True)
class BestSubsetResult:
    """The best dependency with at most m sources, m = 1 … M, of T targets.

    coef : :class:`SparseColumns` with T·M columns; column ``t·M + (m − 1)`` is target t with
        at most m sources (ascending source indices, as every SparseColumns).
    residual : (T, M) ``E[(g_t − θᵀf)²]`` of each, from the Grams (non-increasing in m).
    swaps : (T, M) swaps made after the greedy start.
    omp_start : (T, M) True where OMP's support was the better start.
    """

    coef: SparseColumns
    residual: np.ndarray
    swaps: np.ndarray
    omp_start: np.ndarray

    @property
    def n_targets(self) -> int:
        return self.residual.shape[0]

    @property
    def max_sources(self) -> int:
        return self.residual.shape[1]

    @property
    def n_sources(self) -> int:
        return self.coef.n_sources

    def column(self, position: int, m: int) -> tuple[np.ndarray, np.ndarray]:
        """(sources, coefficients) of the target at ``position`` with at most ``m`` sources."""
        if not 1 <= m <= self.max_sources:
            raise InvalidInputError(f"m must lie in 1 … {self.max_sources}; got {m!r}")
        return self.coef.column(position * self.max_sources + m - 1)

    def at(self, m: int) -> SparseColumns:
        """Every target's dependency with at most ``m`` sources: T columns, in target order."""
        if not 1 <= m <= self.max_sources:
            raise InvalidInputError(f"m must lie in 1 … {self.max_sources}; got {m!r}")
        return self.coef.select(np.arange(self.n_targets) * self.max_sources + m - 1)

    def select(self, positions) -> BestSubsetResult:
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        M = self.max_sources
        cols = (pos[:, None] * M + np.arange(M)[None, :]).reshape(-1)
        return BestSubsetResult(self.coef.select(cols), self.residual[pos], self.swaps[pos], self.omp_start[pos])

    def up_to(self, m: int) -> BestSubsetResult:
        """The same targets with M = ``m`` (a prefix of every target's sequence)."""
        if not 1 <= m <= self.max_sources:
            raise InvalidInputError(f"m must lie in 1 … {self.max_sources}; got {m!r}")
        M, T = self.max_sources, self.n_targets
        cols = (np.arange(T)[:, None] * M + np.arange(m)[None, :]).reshape(-1)
        return BestSubsetResult(self.coef.select(cols), self.residual[:, :m], self.swaps[:, :m],
                                self.omp_start[:, :m])

    @classmethod
    def concat(cls, parts: list[BestSubsetResult]) -> BestSubsetResult:
        return cls(SparseColumns.concat([p.coef for p in parts]),
                   *(np.concatenate([getattr(p, f) for p in parts]) for f in ("residual", "swaps", "omp_start")))

    # -- storage
    def to_arrays(self) -> dict[str, np.ndarray]:
        return {**self.coef.to_arrays(), "residual": self.residual, "swaps": self.swaps,
                "omp_start": self.omp_start.astype(np.uint8)}

    @classmethod
    def from_arrays(cls, arrays: dict, n_sources: int) -> BestSubsetResult:
        return cls(SparseColumns.from_arrays(arrays, n_sources), np.asarray(arrays["residual"], dtype=np.float64),
                   np.asarray(arrays["swaps"], dtype=np.int64), np.asarray(arrays["omp_start"]).astype(bool))
