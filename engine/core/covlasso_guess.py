"""A first support for the CovLasso's large solves: a few accelerated proximal-gradient
(FISTA) steps in float32 (see :mod:`engine.core.covlasso_kernels` for where they are used).

The Newton steps that solve a subproblem exactly let at most a quarter of the support enter
per step (adding every violator at once overshoots). A target that starts its all-feature
round with 48 sources and ends with 200 therefore spends about seven capped steps only
growing its support, each step refreshing a (128, m, m) batch of factors. A few dozen
FISTA steps on all the rows of a group at once cost one (rows × P) × (P × P) float32 GEMM
each, and land within a few features of the final support (measured on a P = 1,000
classifier-like Gram: 40 steps from 48 sources, 1.9 of 203 missed and 1.7 extra). The
Newton steps start from there and take three or four steps.

Nothing here decides the result: the guess is an iterate like any other, the Newton steps
solve the subproblem exactly and the duality gap certifies every target. The guess is used
only where it pays: rows with more KKT violators than sources (:func:`worth_guessing`).
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch

# FISTA steps per guess. Measured at P = 1,000, median 200 sources, CPU seconds of the
# whole solve (one thread): no guess 3.4 s; 25 steps 3.0 s; 30 steps 2.6 s; 40 steps 2.9 s.
STEPS = 30
# Power-iteration steps for the Gram's largest eigenvalue (the gradient's Lipschitz constant)
# and the margin above the estimate (a power iteration approaches it from below).
_POWER_STEPS = 40
_MARGIN = 1.1
# No guesses above this many features: the rank (a pivoted Cholesky, P³/3 flops: 23 GFLOP at
# 4,096) would cost more than the guesses save, and rounds on all features start only at P/16
# (≥ 256 features in a working set) anyway.
MAX_FEATURES = 4096
# Rows tried before the share of refused guesses may stop further guesses (ProximalGuess._welcome).
_TRIAL = 64
# Fewer rows asking than this get no guess: the Gram's float32 copy, Lipschitz constant and rank
# cost ~50 ms at P = 1,000 once per solve, which a single target's solve (the pages' on-demand
# solves) would pay for a few GEMVs' gain.
MIN_ROWS = 32


# A row with more than _FAR times as many violators as sources (and some sources: not a cold
# start, where every row has many) goes to the all-feature round with a guess at once, even
# while its working set is small. Measured at P = 1,000, one thread, CPU s at a median of
# 60 / 120 / 200 sources: without this rule 0.58 / 1.80–1.83 / 2.58–2.62; _FAR = 3: – / – /
# 2.57; 4: 0.58–0.63 / 1.57–1.68 / 2.39–2.42; 8: – / – / 2.48. (After the cold first round
# the median 200-source row has 24 sources and 477 violators, the 60-source row 24 and 54.)
_FAR = 4


def _counts(score: torch.Tensor):
    inside = torch.isinf(score)
    return ((score > 1.0) & ~inside).sum(1), inside.sum(1)


def worth_guessing(score: torch.Tensor) -> torch.Tensor:
    """Rows of a working-set round that a guess helps: more KKT violators outside the
    support than sources in it. ``score``: ``|c_j|/α``, the support scored ∞ (as the rounds
    score features). Growing such a support by a quarter per Newton step would take at
    least three steps (1.25³ ≈ 2)."""
    violators, sources = _counts(score)
    return violators > sources


def far_from_support(score: torch.Tensor) -> torch.Tensor:
    """Rows with sources and more than :data:`_FAR` times as many violators: their supports
    will be several times what they are, whatever the size of their working sets."""
    violators, sources = _counts(score)
    return (sources > 0) & (violators > _FAR * sources)


class ProximalGuess:
    """The shared Gram's float32 copy, Lipschitz constant and numerical rank, made once for a
    solve (on the first guess, by whichever worker thread asks first), and the guesses.

    A guess with more sources than half the Gram's rank is not used: on a near-rank Gram (the
    demo's logits span 65 dimensions of 1,000 categories) 30 FISTA steps leave ~200 small
    non-zeros that cancel in the Gram's metric, the Newton steps cannot start from them (a
    guess past the rank is singular), and the monotone method crawled from there: 228 s
    instead of 4.1 s for glyph-vgg's 1,000 targets at 0.01·α_max before this check."""

    def __init__(self, G: torch.Tensor):
        self._G = G
        self._lock = threading.Lock()
        self._rank: int | None = None
        self._low: tuple[torch.Tensor, float] | None = None
        self._tried = self._taken = 0  # rows, over the solve's guesses so far

    def rank(self) -> int:
        """The Gram's numerical rank (:func:`_numerical_rank`), computed on first use."""
        with self._lock:
            if self._rank is None:
                self._rank = _numerical_rank(self._G)
            return self._rank

    def _welcome(self) -> bool:
        """False once half the rows tried have refused their guesses (at least
        :data:`_TRIAL` rows tried): the Gram does not suit them, and every further guess would
        cost its GEMMs for nothing (glyph-vgg at 0.01·α_max: 7.1 s against 4.5 s without)."""
        with self._lock:
            return self._tried < _TRIAL or 2 * self._taken >= self._tried

    def _prepared(self) -> tuple[torch.Tensor, float]:
        with self._lock:
            if self._low is None:
                G = self._G
                v = torch.ones(G.shape[0], dtype=G.dtype, device=G.device) / math.sqrt(G.shape[0])
                top = 0.0
                for _ in range(_POWER_STEPS):
                    w = G @ v
                    top = float(torch.linalg.vector_norm(w))
                    if not top > 0.0:
                        break
                    v = w / top
                self._low = (G.to(torch.float32), _MARGIN * top)
            return self._low

    def guess(self, b: torch.Tensor, theta: torch.Tensor, alpha: torch.Tensor,
              ban: torch.Tensor | None = None, least: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """θ after :data:`STEPS` FISTA steps from ``theta`` on ``½θᵀGθ − bᵀθ + α‖θ‖₁``, one
        problem per row (b, θ: (R, P); α: (R,); ``ban`` (R, P): features held at zero), and
        which rows took it. A row keeps ``theta`` where its iterate is not finite (a Gram the
        margin does not cover), or has fewer non-zeros than ``least`` (the size at which a
        round on all features pays) or more than half the Gram's rank. Every row keeps it,
        and no step is taken, where the Gram has more than :data:`MAX_FEATURES` features, where
        half its rank is below ``least``, and once half the rows tried refused theirs."""
        keep = torch.zeros(len(theta), dtype=torch.bool, device=theta.device)
        if theta.shape[1] > MAX_FEATURES or not self._welcome():
            return theta, keep
        rank = self.rank()
        if rank // 2 < max(least, 1):
            return theta, keep
        low, lip = self._prepared()
        if not lip > 0.0:
            return theta, keep
        dt = low.dtype
        b_low, x = b.to(dt), theta.to(dt)
        thr = (alpha.to(dt) / lip)[:, None]
        y, t = x, 1.0
        for _ in range(STEPS):
            z = torch.addmm(b_low, y, low, alpha=-1.0).div_(lip).add_(y)  # y + (b − yG)/L
            new = z - torch.clamp(z, -thr, thr)  # soft threshold at α/L
            if ban is not None:
                new.masked_fill_(ban, 0.0)
            t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
            y = new + ((t - 1.0) / t_next) * (new - x)
            x, t = new, t_next
        out = x.to(theta.dtype)
        nnz = (out != 0).sum(1)
        took = torch.isfinite(out).all(1) & (nnz >= least) & (nnz <= rank // 2)
        with self._lock:
            self._tried += len(took)
            self._taken += int(took.sum())
        return torch.where(took[:, None], out, theta), took


def _numerical_rank(G: torch.Tensor) -> int:
    """The Gram's rank as LAPACK's pivoted Cholesky (``dpstrf``) finds it: pivots down to
    1e-10 of the largest diagonal entry, as the solver's factors cut dependent columns
    (17–30 ms at P = 1,000, one thread)."""
    from scipy.linalg.lapack import dpstrf
    from threadpoolctl import threadpool_limits

    a = G.detach().cpu().numpy().astype(np.float64, copy=True)
    diag = float(np.max(np.diag(a))) if len(a) else 0.0
    if not diag > 0.0:
        return 0
    # one BLAS thread: scipy's OpenBLAS threads would spin beside the solver's own
    with threadpool_limits(limits=1, user_api="blas"):
        _, _, rank, info = dpstrf(a, lower=1, tol=1e-10 * diag, overwrite_a=1)
    return int(rank) if info >= 0 else 0
