"""Streaming logit Gram matrices: ``E[f fᵀ]`` and cross-Grams ``E[f gᵀ]``, in float64.

The CovLasso depends on the data only through these matrices, so one pass over the logits
serves every target, every α and every model pair. Accumulation is by chunks (so N can be
far larger than memory allows for a float64 copy) on CPU or CUDA; each chunk is promoted
to float64 before its product, so the sum is exact to float64 rounding.

On the CPU the upper triangle is accumulated by BLAS ``dsyrk`` (half a GEMM's FLOPs) from
numpy's own OpenBLAS when it has one (the ILP64 CBLAS of numpy's wheels, called through
ctypes, which takes sub-blocks of the Gram in place), into one C-ordered array that
:meth:`GramAccumulator.gram` mirrors in place. Measured at K = 6,000 (one chunk of 2,796
rows, best of 3, interleaved, loaded ≈ 8): its dsyrk and scipy's both do their FLOPs at
104–108 % of a float64 GEMM's rate, torch GEMMs by blocks of rows (the path above
K = 16,000 before) at 73 %.
"""

from __future__ import annotations

import ctypes
import glob
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from engine.core.covlasso_types import max_correlation
from engine.errors import InvalidInputError

if TYPE_CHECKING:
    import torch

CHUNK_BYTES = 128 << 20  # a float64 chunk of logits is at most this big (rows adapt to K)


def chunk_rows(k: int, rows: int = 8192) -> int:
    """Rows per chunk: ``rows``, fewer when a float64 chunk of K columns would exceed CHUNK_BYTES."""
    return int(max(256, min(rows, CHUNK_BYTES // (8 * max(k, 1)))))


def default_device() -> str:
    """CUDA when there is one (the Gram is one large product), else the CPU."""
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a requirement
        return "cpu"


class GramAccumulator:
    """Accumulates ``Σ fᵀf`` (and ``Σ gᵀf``, ``Σ gᵀg`` for a pair) chunk by chunk.

    >>> acc = GramAccumulator(k_a=1000)            # within one model
    >>> for chunk in chunks: acc.update(chunk)     # chunk: (n, 1000) tensor or array
    >>> C = acc.gram()                              # (1000, 1000) float64 numpy, E[f fᵀ]

    :meth:`gram` finishes in place (no second K×K array: at K = 21,843 one is 3.8 GB); it
    may be called once.
    """

    def __init__(self, k_a: int, k_b: int | None = None, device: str | torch.device = "cpu",
                 syrk: bool | None = None, method: str | None = None):
        import torch  # only to accumulate: reading cached Grams needs numpy alone

        self.device = torch.device(device)
        self.n = 0
        kw = {"dtype": torch.float64, "device": self.device}
        self._method = _pick_method(self.device, k_a, syrk, method)
        self._buffer: np.ndarray | None = None  # the float64 chunk, reused (no allocation per chunk)
        if self._method == "syrk":
            self._aa = np.zeros((k_a, k_a))  # its upper triangle (C order) is accumulated
        else:
            self._aa = torch.zeros(k_a, k_a, **kw)
        self._ba = torch.zeros(k_b, k_a, **kw) if k_b else None  # Σ gᵀf: a target's row is contiguous
        self._bb_diag = torch.zeros(k_b, **kw) if k_b else None
        self._sum = torch.zeros(k_b or k_a, **kw)  # Σ of the targets' logits (for their means: R²)
        self._done = False

    def update(self, f, g=None) -> None:
        """Add a chunk ``f`` (n, K_a) — and ``g`` (n, K_b) for a pair — of any float dtype
        (numpy arrays, memory maps included, or tensors); nothing is written to them."""
        import torch

        if self._done:
            raise InvalidInputError("this Gram was already finished (gram() was called)")
        if not isinstance(f, np.ndarray | torch.Tensor):
            f = np.asarray(f)
        k = self._aa.shape[0]
        if f.ndim != 2 or f.shape[1] != k:
            raise InvalidInputError(f"Gram chunk must have shape (n, {k}); got {tuple(f.shape)}")
        if self._ba is not None:  # checked before anything is added
            if g is None:
                raise InvalidInputError("this accumulator is for a model pair: pass g as well")
            if tuple(g.shape) != (f.shape[0], self._ba.shape[0]):
                raise InvalidInputError(
                    f"paired chunk must have shape ({f.shape[0]}, {self._ba.shape[0]}); "
                    f"got {tuple(g.shape)}"
                )
        if self._method == "syrk":
            a = self._as_float64_array(f)
            _syrk_upper(self._aa, a)
            f = torch.from_numpy(a)
        else:
            f = _as_float64_tensor(f, self.device)
            if self._method == "blocks":  # the upper triangle, one block of rows at a time
                for j0 in range(0, k, _BLOCK_ROWS):
                    j1 = min(k, j0 + _BLOCK_ROWS)
                    self._aa[j0:j1, j0:].addmm_(f[:, j0:j1].T, f[:, j0:])
            else:
                self._aa.addmm_(f.T, f)
        if self._ba is None:
            self._sum += f.sum(0)
        else:
            g = _as_float64_tensor(g, self.device)
            self._ba.addmm_(g.T, f)
            self._bb_diag += (g * g).sum(0)
            self._sum += g.sum(0)
        self.n += int(f.shape[0])

    def _as_float64_array(self, f) -> np.ndarray:
        """A chunk as a C-ordered float64 numpy array: converted into one buffer that every
        chunk reuses (a fresh 128 MiB array per chunk costs its page faults each time)."""
        import torch

        if isinstance(f, np.ndarray) and f.dtype == np.float64 and f.flags.c_contiguous:
            return f
        rows, k = f.shape
        if self._buffer is None or self._buffer.shape[0] < rows:
            self._buffer = np.empty((rows, k))
        out = self._buffer[:rows]
        if isinstance(f, np.ndarray):
            np.copyto(out, f, casting="unsafe")
        else:  # a tensor of any dtype (bfloat16 included) on any device
            torch.from_numpy(out).copy_(f.detach())
        return out

    def _require_samples(self) -> None:
        if self.n == 0:
            raise InvalidInputError("no samples were accumulated; the Gram of nothing is undefined")

    def _mean(self, total: torch.Tensor) -> np.ndarray:
        self._require_samples()
        if total.device.type == "cpu":
            return total.div_(self.n).numpy()  # in place: no copy
        return (total / self.n).cpu().numpy()

    def gram(self) -> np.ndarray:
        """``E[f fᵀ]``, C-contiguous, exactly symmetric; finished in place, by blocks."""
        self._require_samples()
        self._done = True
        self._buffer = None  # the chunk buffer (128 MiB at most) is not needed any more
        if self._method == "syrk":  # only the upper triangle was accumulated: scale, then mirror it
            g = self._aa
            for s in range(0, g.shape[0], 1024):  # by blocks of rows: the upper triangle's part
                np.divide(g[s : s + 1024, s:], self.n, out=g[s : s + 1024, s:])
            _mirror_lower_to_upper(g.T)  # the lower triangle of the transpose is g's upper one
            return g
        if self._method == "blocks":  # the upper triangle (rows of blocks): mirror it down
            g = self._mean(self._aa)
            _mirror_lower_to_upper(g.T)  # the lower triangle of the transpose is g's upper one
            return g
        g = self._mean(self._aa)
        k, block = g.shape[0], 1024
        for i in range(0, k, block):
            avg = (g[i : i + block, i:] + g[i:, i : i + block].T) / 2
            g[i : i + block, i:] = avg
            g[i:, i : i + block] = avg.T
        return g

    def cross_gram_t(self) -> np.ndarray:
        """``E[g fᵀ]`` of a pair (K_b × K_a): row t is target t's right-hand side."""
        if self._ba is None:
            raise InvalidInputError("this accumulator was built for one model; no cross-Gram")
        return self._mean(self._ba)

    def cross_gram(self) -> np.ndarray:
        """``E[f gᵀ]`` of a pair (K_a × K_b), a transposed view of :meth:`cross_gram_t`."""
        return self.cross_gram_t().T

    def target_sq(self) -> np.ndarray:
        """``E[g_i²]`` for every category i of the second model."""
        if self._bb_diag is None:
            raise InvalidInputError("this accumulator was built for one model")
        return self._mean(self._bb_diag)

    def target_mean(self) -> np.ndarray:
        """``E[g_i]`` of every target (the model's own categories within one model)."""
        return self._mean(self._sum.clone())

    def gramset(self) -> GramSet:
        """Everything accumulated, as the pairing's :class:`GramSet` (finishes the Gram)."""
        mean = self.target_mean()
        if self._ba is None:
            return GramSet.of_model(self.gram(), self.n, mean)
        return GramSet.of_pair(self.gram(), self.cross_gram_t(), self.target_sq(), self.n, mean)


# OpenBLAS's threaded dsyrk (scipy's 0.3.30 and numpy's 0.3.31 alike) crashes once its
# output passes 2 GiB (found at K = 21,843: a segfault, for 256 samples as for 1,536; a
# 10,922-column diagonal block of the same array at its far end is fine). numpy's OpenBLAS
# therefore takes K in diagonal blocks of at most _SYRK_BLOCK columns (dsyrk) and the blocks
# right of them by GEMMs (dgemm); scipy's (the fallback when numpy brings no OpenBLAS) is
# used for K ≤ SYRK_MAX_K only, and above it torch's GEMM by blocks of rows ("blocks").
SYRK_MAX_K = 16000
_SYRK_BLOCK = 8192
_BLOCK_ROWS = 2048


class _Cblas:
    """numpy's own OpenBLAS through its ILP64 CBLAS (the ``scipy_cblas_*64_`` symbols of the
    ``scipy-openblas64`` library that numpy's wheels bundle), or nothing (:func:`_cblas`)."""

    _ROW_MAJOR, _UPPER, _NO_TRANS, _TRANS = 101, 121, 111, 112

    def __init__(self, lib: ctypes.CDLL):
        i64, ptr, dbl, enum = ctypes.c_int64, ctypes.c_void_p, ctypes.c_double, ctypes.c_int
        self.syrk, self.gemm = lib.scipy_cblas_dsyrk64_, lib.scipy_cblas_dgemm64_
        self.syrk.restype = self.gemm.restype = None
        self.syrk.argtypes = [enum, enum, enum, i64, i64, dbl, ptr, i64, dbl, ptr, i64]
        self.gemm.argtypes = [enum, enum, enum, i64, i64, i64, dbl, ptr, i64, ptr, i64, dbl, ptr, i64]

    def syrk_upper(self, c: np.ndarray, a: np.ndarray) -> None:
        """``c += aᵀa`` on c's upper triangle (c: a square view of rows of a C-ordered array,
        a: (n, m) with unit column stride)."""
        m, n = c.shape[0], a.shape[0]
        self.syrk(self._ROW_MAJOR, self._UPPER, self._TRANS, m, n, 1.0, a.ctypes.data, a.strides[0] // 8,
                  1.0, c.ctypes.data, c.strides[0] // 8)

    def gemm_tn(self, c: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        """``c += aᵀb`` (row-major views with unit column strides)."""
        self.gemm(self._ROW_MAJOR, self._TRANS, self._NO_TRANS, c.shape[0], c.shape[1], a.shape[0], 1.0,
                  a.ctypes.data, a.strides[0] // 8, b.ctypes.data, b.strides[0] // 8, 1.0, c.ctypes.data,
                  c.strides[0] // 8)


_CBLAS: list = []  # [the _Cblas or None], once looked up


def _cblas() -> _Cblas | None:
    """numpy's bundled OpenBLAS (Linux and macOS wheels), or None (then scipy's or torch's)."""
    if not _CBLAS:
        found = None
        folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(np.__file__))), "numpy.libs")
        for path in sorted(glob.glob(os.path.join(folder, "libscipy_openblas64_*"))):
            try:
                found = _Cblas(ctypes.CDLL(path))
                break
            except (OSError, AttributeError):
                continue
        _CBLAS.append(found)
    return _CBLAS[0]


def _syrk_upper(c: np.ndarray, a: np.ndarray) -> None:
    """``c += aᵀa`` on the upper triangle of the C-ordered (K, K) ``c``, a: (n, K) float64
    C-ordered. K ≤ SYRK_MAX_K: scipy's dsyrk on the whole. Above: numpy's OpenBLAS, dsyrk on
    diagonal blocks of ≤ _SYRK_BLOCK columns, dgemm on the blocks right of them."""
    k = c.shape[0]
    # numpy's OpenBLAS through ctypes only where scipy's cannot go (K > SYRK_MAX_K): below,
    # both run dsyrk at the same speed, and calling numpy's OpenBLAS this way during an
    # extraction left the solves after it in the same process ~25 % slower (the fresh demo's
    # paths step: 57.6–59.1 s against 45.5 s with scipy's; alone, 46 s either way)
    blas = _cblas() if k > SYRK_MAX_K else None
    if blas is None:
        from scipy.linalg.blas import dsyrk

        # c's transpose is Fortran-ordered: its lower triangle is c's upper one (updated in place)
        dsyrk(1.0, a.T, beta=1.0, c=c.T, trans=0, lower=1, overwrite_c=1)
        return
    step = -(-k // -(-k // _SYRK_BLOCK))  # equal blocks of at most _SYRK_BLOCK
    for j0 in range(0, k, step):
        j1 = min(k, j0 + step)
        blas.syrk_upper(c[j0:j1, j0:j1], a[:, j0:j1])
        if j1 < k:
            blas.gemm_tn(c[j0:j1, j1:], a[:, j0:j1], a[:, j1:])


def _pick_method(device, k: int, syrk: bool | None, method: str | None) -> str:
    """How Σ fᵀf is accumulated: ``syrk`` (BLAS dsyrk: the upper triangle, half a GEMM's
    FLOPs; see :func:`_syrk_upper`), ``blocks`` (the upper triangle by blocks of rows,
    torch GEMMs: half the FLOPs too, any K) or ``full`` (one addmm: on CUDA, one large
    product is what a GPU does best). ``syrk`` True/False asks for dsyrk or a full addmm
    (the tests compare every method with numpy)."""
    syrk_k = None if _cblas() is not None else SYRK_MAX_K  # the largest K dsyrk may take
    if method is None:
        if syrk is not None:
            method = "syrk" if syrk else "full"
        elif device.type != "cpu":
            method = "full"
        else:
            method = "syrk" if syrk_k is None or k <= syrk_k else "blocks"
    if method not in ("syrk", "blocks", "full"):
        raise InvalidInputError(f"Gram method {method!r} is unknown; use syrk, blocks or full")
    if method == "syrk" and (device.type != "cpu" or (syrk_k is not None and k > syrk_k)):
        raise InvalidInputError(f"dsyrk is a CPU path (for K ≤ {SYRK_MAX_K} without numpy's OpenBLAS); "
                                f"here the device is {device}, K = {k}")
    return method


def _as_float64_tensor(x, device) -> torch.Tensor:
    """A chunk as a float64 tensor on ``device`` (numpy chunks, memory maps included, are
    converted by numpy: one float64 copy, never a write to the source)."""
    import torch

    if isinstance(x, np.ndarray):
        x = np.asarray(x, dtype=np.float64)
        if not x.flags.writeable:
            x = x.copy()
        x = torch.from_numpy(x)
    return torch.as_tensor(x).to(device, torch.float64)


def _mirror_lower_to_upper(g: np.ndarray, block: int = 1024) -> None:
    """Copy the lower triangle of a C-contiguous square array onto its upper one, by blocks."""
    k = g.shape[0]
    for i in range(0, k, block):
        rows = slice(i, i + block)
        g[rows, i + block :] = g[i + block :, rows].T
        d = g[rows, rows]
        g[rows, rows] = np.tril(d) + np.tril(d, -1).T


@dataclass(frozen=True)
class GramSet:
    """What the CovLasso needs for one (source, target) pairing, all float64.

    design : (P, P) ``E[f fᵀ]`` of the source model (possibly a read-only memory map).
    target_sq : (T,) ``E[g_t²]``.
    n : samples accumulated.
    cross_t : (T, P) ``E[g fᵀ]`` between two models (row t: target t's right-hand side);
        None within one model (then the right-hand sides are the design's columns, and
        target t may not use itself).
    alpha_max : (T,) each target's α_max.
    target_mean : (T,) ``E[g_t]`` (a dependency's R² needs the target's variance).
    design_diag : (P,) the design's diagonal ``E[f_j²]`` (read once: a memory-mapped Gram's
        diagonal is one page per value).
    """

    design: np.ndarray
    target_sq: np.ndarray
    n: int
    cross_t: np.ndarray | None = None
    alpha_max: np.ndarray | None = None
    target_mean: np.ndarray | None = None
    design_diag: np.ndarray | None = None

    @property
    def within(self) -> bool:
        return self.cross_t is None

    @property
    def n_sources(self) -> int:
        return int(self.design.shape[0])

    @property
    def n_targets(self) -> int:
        return len(self.target_sq)

    @property
    def rhs(self) -> np.ndarray:
        """(P, T) every right-hand side (a view: the design within, the cross-Gram's transpose)."""
        return self.design if self.within else self.cross_t.T

    def rhs_columns(self, targets) -> np.ndarray:
        """(P, len(targets)) the right-hand sides of ``targets``, read by rows (the design is
        symmetric), so a memory-mapped Gram reads len(targets) rows, not P scattered values."""
        idx = np.asarray(targets, dtype=np.int64).reshape(-1)
        rows = self.design[idx] if self.within else self.cross_t[idx]
        return np.ascontiguousarray(np.asarray(rows, dtype=np.float64).T)

    def forbid(self, targets) -> np.ndarray | None:
        """The source each target may not use (itself, within one model), or None."""
        return np.asarray(targets, dtype=np.int64).reshape(-1) if self.within else None

    @classmethod
    def of_model(cls, design: np.ndarray, n: int, mean: np.ndarray) -> GramSet:
        """A within-model set (α_max computed from the design: one pass over it)."""
        k, diag = design.shape[0], np.diagonal(design).copy()
        return cls(design, diag, n, None, max_correlation(design, np.arange(k)), np.asarray(mean, dtype=np.float64),
                   diag)

    @classmethod
    def of_pair(cls, design: np.ndarray, cross_t: np.ndarray, target_sq: np.ndarray, n: int,
                mean: np.ndarray) -> GramSet:
        return cls(design, target_sq, n, cross_t, max_correlation(cross_t.T), np.asarray(mean, dtype=np.float64),
                   np.diagonal(design).copy())


def accumulate(chunks: Iterable[tuple[np.ndarray, np.ndarray | None]], k_a: int, k_b: int | None = None, *,
               device: str = "cpu", n_total: int | None = None,
               progress: Callable[[float, str], None] | None = None) -> GramSet:
    """The GramSet of a stream of chunks ``(f, g)`` (``g`` None within one model): pure."""
    acc = GramAccumulator(k_a, k_b, device)
    for f, g in chunks:
        acc.update(f, g)
        if progress is not None and n_total:
            progress(acc.n / n_total, f"Gram: {acc.n:,} of {n_total:,} samples")
    return acc.gramset()
