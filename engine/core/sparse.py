"""One sparse-coefficient type for every dependency the engine returns, caches or shows.

A dependency of target t is a handful of (source index, coefficient) pairs. Many targets
(one solve), many (target, α) pairs (a path) and many chunks of targets (a job) are all
:class:`SparseColumns`: columns are dependencies, kept compressed as in a CSC matrix but
without a matrix, so 21,843 targets cost their non-zeros, never P × T floats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import InvalidInputError

ARRAY_NAMES = ("offsets", "source", "value")  # how a SparseColumns is stored (with a prefix)


@dataclass(frozen=True)
class SparseColumns:
    """Coefficients of T columns (targets) over P rows (sources), column by column.

    Column t holds ``sources[offsets[t]:offsets[t+1]]`` (ascending) with ``values`` alongside.

    offsets : (T + 1,) int64, ``offsets[0] == 0``, non-decreasing.
    sources : (nnz,) int64 row indices in [0, P).
    values : (nnz,) float64 coefficients (never 0).
    n_sources : P.
    """

    offsets: np.ndarray
    sources: np.ndarray
    values: np.ndarray
    n_sources: int

    def __post_init__(self) -> None:
        if self.offsets.ndim != 1 or len(self.offsets) < 1 or self.offsets[0] != 0:
            raise InvalidInputError("sparse columns: offsets must be a 1-D array starting at 0")
        if not self.offsets[-1] == len(self.sources) == len(self.values):
            raise InvalidInputError(
                f"sparse columns: offsets end at {int(self.offsets[-1])} but there are "
                f"{len(self.sources)} sources and {len(self.values)} values")

    # -- sizes
    @property
    def n_targets(self) -> int:
        return len(self.offsets) - 1

    @property
    def nnz(self) -> int:
        return int(self.offsets[-1])

    @property
    def support_sizes(self) -> np.ndarray:
        """(T,) number of sources of every column."""
        return np.diff(self.offsets)

    # -- one column
    def column(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(sources, values) of column ``t``."""
        if not 0 <= t < self.n_targets:
            raise InvalidInputError(f"column {t} is out of range [0, {self.n_targets - 1}]")
        sl = slice(int(self.offsets[t]), int(self.offsets[t + 1]))
        return self.sources[sl], self.values[sl]

    def dense_column(self, t: int) -> np.ndarray:
        """(P,) column ``t`` with its zeros."""
        out = np.zeros(self.n_sources)
        idx, val = self.column(t)
        out[idx] = val
        return out

    # -- many columns
    def select(self, cols) -> SparseColumns:
        """The columns ``cols`` (any order, repeats allowed), as a new SparseColumns."""
        cols = np.asarray(cols, dtype=np.int64).reshape(-1)
        starts, ends = self.offsets[cols], self.offsets[cols + 1]
        lens = ends - starts
        offsets = np.zeros(len(cols) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        take = np.repeat(starts - offsets[:-1], lens) + np.arange(offsets[-1])
        return SparseColumns(offsets, self.sources[take], self.values[take], self.n_sources)

    def to_dense(self) -> np.ndarray:
        """(P, T) dense matrix: for small problems only (P·T floats)."""
        out = np.zeros((self.n_sources, self.n_targets))
        out[self.sources, self.column_index()] = self.values
        return out

    def column_index(self) -> np.ndarray:
        """(nnz,) the column of every entry."""
        return np.repeat(np.arange(self.n_targets), self.support_sizes)

    def to_scipy(self):
        """A ``scipy.sparse.csc_array`` of shape (P, T), sharing nothing with this object."""
        from scipy.sparse import csc_array

        return csc_array((self.values.copy(), self.sources.copy(), self.offsets.copy()),
                         shape=(self.n_sources, self.n_targets))

    # -- construction
    @classmethod
    def empty(cls, n_targets: int, n_sources: int) -> SparseColumns:
        return cls(np.zeros(n_targets + 1, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0),
                   int(n_sources))

    @classmethod
    def from_dense(cls, coef: np.ndarray) -> SparseColumns:
        """From a dense (P, T) matrix (its non-zeros)."""
        coef = np.asarray(coef, dtype=np.float64)
        cols, rows = np.nonzero(coef.T)  # column-major order: by column, then ascending row
        return cls.from_entries(cols, rows, coef[rows, cols], coef.shape[1], coef.shape[0])

    @classmethod
    def from_entries(cls, cols: np.ndarray, rows: np.ndarray, values: np.ndarray, n_targets: int,
                     n_sources: int) -> SparseColumns:
        """From entries sorted by column (then row): ``cols``, ``rows``, ``values`` (nnz,)."""
        counts = np.bincount(np.asarray(cols, dtype=np.int64), minlength=n_targets)
        offsets = np.zeros(n_targets + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return cls(offsets, np.asarray(rows, dtype=np.int64), np.asarray(values, dtype=np.float64),
                   int(n_sources))

    @classmethod
    def concat(cls, parts: list[SparseColumns]) -> SparseColumns:
        """The columns of ``parts``, one after the other (all over the same sources)."""
        if not parts:
            raise InvalidInputError("nothing to concatenate")
        n_sources = parts[0].n_sources
        if any(p.n_sources != n_sources for p in parts):
            raise InvalidInputError("sparse columns over different numbers of sources cannot be concatenated")
        shift = np.cumsum([0] + [p.nnz for p in parts[:-1]])
        offsets = np.concatenate([[0]] + [p.offsets[1:] + s for p, s in zip(parts, shift)]).astype(np.int64)
        return cls(offsets, np.concatenate([p.sources for p in parts]).astype(np.int64),
                   np.concatenate([p.values for p in parts]).astype(np.float64), n_sources)

    # -- storage (safetensors arrays)
    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {prefix + "offsets": self.offsets, prefix + "source": self.sources, prefix + "value": self.values}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], n_sources: int, prefix: str = "") -> SparseColumns:
        return cls(np.asarray(arrays[prefix + "offsets"], dtype=np.int64),
                   np.asarray(arrays[prefix + "source"], dtype=np.int64),
                   np.asarray(arrays[prefix + "value"], dtype=np.float64), int(n_sources))
