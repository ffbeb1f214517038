"""Batched linear algebra of the CovLasso's kernels: gathers of sub-Grams and Cholesky factors
kept across steps (see :mod:`engine.core.covlasso_kernels` for the algorithm).

Every function works on a batch of rows (targets) at once, as torch tensors: (B, w, w)
working-set Grams or one shared (P, P) Gram, (B, s) ordered positions with a ``valid`` mask
for the padding. A factor is (slots (B, m), n (B,), L (B, m, m)): the lower Cholesky factor
of the Gram on each row's first ``n`` slots, the identity beyond them.
"""

from __future__ import annotations

import numpy as np
import torch

# A column whose squared distance to the span of the columns before it (in the Gram's metric)
# is below _PIVOT of its squared norm counts as a combination of them (cond ≳ 1/_PIVOT).
_PIVOT = 1e-10


# ----------------------------------------------------------------------------- gathers and solves

def _take(src: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """``src.flatten()[flat]`` (any shape of ``flat``). On the CPU numpy's ``take`` is used: it
    gathers 2–4× faster than ``torch.take`` or ``gather`` (measured on (128, 250, 250)
    gathers, torch 2.14, one thread); elsewhere ``torch.take``."""
    if src.device.type == "cpu" and src.is_contiguous():
        return torch.from_numpy(np.take(src.numpy().reshape(-1), flat.numpy()))
    return torch.take(src, flat)


def _batched_submatrix(H: torch.Tensor, pos: torch.Tensor, cols: torch.Tensor | None = None) -> torch.Tensor:
    """``H[b][pos_b][:, cols_b]`` for every b (``cols`` = ``pos`` when not given):
    (B, w, w), (B, s), (B, k) → (B, s, k). One flat gather."""
    B, w, _ = H.shape
    cols = pos if cols is None else cols
    base = torch.arange(B, device=H.device)[:, None, None] * (w * w)
    return _take(H, base + pos[:, :, None] * w + cols[:, None, :])


def _shared_submatrix(G: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """``G[pos_b][:, pos_b]`` for every row b of ``pos`` from one shared (P, P) G: (B, s, s)."""
    return _take(G, pos[:, :, None] * G.shape[1] + pos[:, None, :])


def _submatrix(H: torch.Tensor, pos: torch.Tensor, cols: torch.Tensor | None = None) -> torch.Tensor:
    """``H[pos_b][:, cols_b]`` of the subproblems' Gram: per row (B, w, w) or one shared (w, w)."""
    if H.dim() == 3:
        return _batched_submatrix(H, pos, cols)
    cols = pos if cols is None else cols
    return _take(H, pos[:, :, None] * H.shape[1] + cols[:, None, :])


def _matvec(H: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``H x`` of every row of x (B, w): a batched product, or one GEMM with a shared
    (symmetric) H."""
    if H.dim() == 3:
        return torch.bmm(H, x[:, :, None])[:, :, 0]
    return x @ H


def _chol_solve(L: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``(L Lᵀ)⁻¹ rhs`` for (B, m, m) factors and (B, m, r) right-hand sides: two triangular
    solves (4× faster than ``torch.cholesky_solve`` on batched CPU factors, torch 2.14)."""
    y = torch.linalg.solve_triangular(L, rhs, upper=False)
    return torch.linalg.solve_triangular(L.mT, y, upper=True)


def _ordered(active: torch.Tensor, key: torch.Tensor):
    """Positions of the active features, by increasing ``key``, padded to the largest set.

    Returns (pos (B, s), valid (B, s)): ``valid`` is False on the padding.
    """
    s = max(int(active.sum(1).max()), 1)
    pos = torch.argsort(torch.where(active, key, float("inf")), dim=1, stable=True)[:, :s]
    return pos, torch.gather(active, 1, pos)


def _factor(sub: torch.Tensor, valid: torch.Tensor):
    """Cholesky factor of the gathered systems ``sub`` (B, s, s) (identity on the padding)
    and, per row, the first position whose column is a combination of the ones before it
    (s if none).

    Only the leading block before that position is used (:func:`_leading_solve`): the
    factor of a leading block is the leading block of the factor.
    """
    s = sub.shape[1]
    Hs = sub  # a fresh gather from every caller: its padding is overwritten in place
    if not bool(valid.all()):
        Hs.masked_fill_(~(valid[:, :, None] & valid[:, None, :]), 0.0)
        Hs.diagonal(dim1=1, dim2=2).add_(~valid)  # the identity on the padding
    U, info = torch.linalg.cholesky_ex(Hs, upper=True)
    L = U.mT  # contiguous (LAPACK writes column-major): no copy for the factor updates
    ar = torch.arange(s, device=sub.device)
    pivot = torch.diagonal(L, dim1=1, dim2=2) ** 2
    bad = ~(pivot >= _PIVOT * torch.diagonal(Hs, dim1=1, dim2=2))  # NaN counts as bad
    bad |= (info > 0)[:, None] & (ar >= info[:, None] - 1)
    first = torch.where(bad & valid, ar, s).amin(1)
    return Hs, L, first


def _leading_solve(L: torch.Tensor, first: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve with the leading ``first × first`` block of each factor (zeros beyond)."""
    s = L.shape[1]
    lead = torch.arange(s, device=L.device) < first[:, None]
    if bool(lead.all()):
        return _chol_solve(L, rhs[:, :, None])[:, :, 0]
    eye = torch.eye(s, dtype=L.dtype, device=L.device)
    Lk = torch.where(lead[:, :, None] & lead[:, None, :], L, eye)
    return _chol_solve(Lk, (rhs * lead)[:, :, None])[:, :, 0] * lead


# ----------------------------------------------------------------------------- factors kept across steps
#
# (Used by the Newton steps of :mod:`engine.core.covlasso_subproblem`; see the note there.)


def _fresh_factor(Hr, pos, valid):
    """A new factor on the ordered active columns ``pos``/``valid`` (B, s): (slots (B, s),
    n (B,), L (B, s, s)) with the factor cut at the first dependent column (:func:`_factor`)
    and the identity beyond ``n``."""
    _, L, first = _factor(_submatrix(Hr, pos), valid)
    s = pos.shape[1]
    lead = valid & (torch.arange(s, device=Hr.device) < first[:, None])  # valid: a prefix
    n = lead.sum(1)
    if bool((n < valid.sum(1)).any()):  # a cut: the identity beyond it (the padding has it)
        eye = torch.eye(s, dtype=L.dtype, device=L.device)
        L = torch.where(lead[:, :, None] & lead[:, None, :], L, eye)
    return pos, n, L.contiguous()


def _pad_factor(slots, L, m):
    """Room for ``m`` slots (identity and slot 0 on the new ones)."""
    B, s = slots.shape
    if m <= s:
        return slots, L
    Lp = torch.empty(B, m, m, dtype=L.dtype, device=L.device)  # every entry written once
    Lp[:, :s, :s] = L
    Lp[:, :s, s:] = 0.0
    Lp[:, s:] = 0.0
    Lp[:, s:].diagonal(offset=s, dim1=1, dim2=2).fill_(1.0)
    return torch.cat([slots, slots.new_zeros(B, m - s)], 1), Lp


def _append(Hr, slots, n, L, epos, evalid):
    """Append the ordered columns ``epos``/``evalid`` (B, k) to every row's factor (block
    update), cut at the first one that depends on the columns before it. Returns
    (slots, n, L, joined (B, k): which of ``epos`` joined)."""
    B, w = slots.shape[0], Hr.shape[-1]
    m, k = slots.shape[1], epos.shape[1]
    dev, dt = Hr.device, Hr.dtype
    used = torch.arange(m, device=dev) < n[:, None]
    Hfe = _submatrix(Hr, slots, epos) * (used[:, :, None] & evalid[:, None, :])
    Hee = _submatrix(Hr, epos)
    L12 = torch.linalg.solve_triangular(L, Hfe, upper=False)
    # the Schur complement's pivots are the new columns' squared distances to the span of
    # the factor's columns: a column counts as dependent below _PIVOT of its H_jj, as in
    # a fresh factor
    _, L22, first = _factor(Hee - L12.mT @ L12, evalid)
    ar_k = torch.arange(k, device=dev)
    pivot = torch.diagonal(L22, dim1=1, dim2=2) ** 2
    bad = ~(pivot >= _PIVOT * torch.diagonal(Hee, dim1=1, dim2=2)) & evalid
    first = torch.minimum(first, torch.where(bad, ar_k, k).amin(1))
    joined = evalid & (ar_k < first[:, None])
    eye = torch.eye(k, dtype=dt, device=dev)
    L22 = torch.where(joined[:, :, None] & joined[:, None, :], L22, eye)
    L12 = L12 * joined[:, None, :]
    # one spare row at least, beyond every row's factor: the columns that did not join
    # write identity rows, and those beyond the factor's room all write that last row
    need = int((n + joined.sum(1)).max()) + 1  # ≤ w + 1: the slots are distinct positions
    if need > m:  # grow with some room: a reallocation copies every factor
        slots, L = _pad_factor(slots, L, min(w + 1, need + max(8, need // 8)))
    m2 = slots.shape[1]
    # (B, k): the rows of L the new columns take
    rows_at = torch.clamp(n[:, None] + ar_k, max=m2 - 1)
    vals = torch.zeros(B, k, m2, dtype=dt, device=dev)
    vals[:, :, :m] = L12.mT
    vals.scatter_add_(2, rows_at[:, None, :].expand(B, k, k), L22)
    idx = (rows_at[:, :, None] * m2 + torch.arange(m2, device=dev)).reshape(B, k * m2)
    L.view(B, m2 * m2).scatter_(1, idx, vals.reshape(B, k * m2))
    slots = slots.scatter(1, rows_at, torch.where(joined, epos, torch.gather(slots, 1, rows_at)))
    return slots, n + joined.sum(1), L, joined


def _capacitance_solve(L, rhs, dead):
    """Solve on the live slots only: ``H_FF x = rhs`` with ``x = 0`` on the ``dead`` slots
    (B, m), through the factor of H_FF and a (dead × dead) capacitance system.

    With ``E`` the dead slots' unit columns, ``x = H⁻¹(rhs − E u)`` where ``u`` solves
    ``(Eᵀ H⁻¹ E) u = Eᵀ H⁻¹ rhs``. One forward solve ``[y₀ Y] = L⁻¹[rhs E]`` gives both sides
    (``Eᵀ H⁻¹ E = YᵀY``, ``Eᵀ H⁻¹ rhs = Yᵀy₀``), and one back solve with a single column
    ``x = L⁻ᵀ(y₀ − Y u)`` the result: the dead columns are never solved backwards (each
    triangular solve reads every row's whole factor)."""
    if not bool(dead.any()):
        return _chol_solve(L, rhs[:, :, None])[:, :, 0]
    B, m = rhs.shape
    dpos, dvalid = _ordered(dead, torch.arange(m, device=L.device, dtype=L.dtype).expand_as(rhs))
    d = dpos.shape[1]
    E = torch.zeros(B, m, d + 1, dtype=L.dtype, device=L.device)
    E[:, :, 0] = rhs
    E[:, :, 1:].scatter_(1, dpos[:, None, :], dvalid[:, None, :].to(L.dtype))
    YE = torch.linalg.solve_triangular(L, E, upper=False)
    y0, Y = YE[:, :, :1], YE[:, :, 1:]
    eye = torch.eye(d, dtype=L.dtype, device=L.device)
    Zd = torch.where(dvalid[:, :, None] & dvalid[:, None, :], Y.mT @ Y, eye)
    u = torch.linalg.solve(Zd, (Y.mT @ y0)[:, :, 0] * dvalid)
    return torch.linalg.solve_triangular(L.mT, y0 - Y @ u[:, :, None], upper=True)[:, :, 0]
