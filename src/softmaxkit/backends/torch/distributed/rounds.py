"""The collectives of a vocabulary-parallel cross-entropy, around the formulas of ``numerics.vocab_parallel``.

Per batch of rows (all of them for the plain loss, a chunk of tokens for the
fused linear loss), every rank takes part in:

1. one all-reduce MAX of ``(n, 1)`` values, ``(n, 2)`` with class weights:
   each row's maximum and the target's class weight, in float32 (float64
   for float64 logits or weights).  A maximum is exact in any order.
2. one all-reduce SUM, in float64, of each row's share of ``s``, with label
   smoothing also the count of classes that are not ``-inf`` (and their
   weights' sum), plus one number: how many rows this slice holds the
   maximum of.  Where that count shows a maximum held by two slices (a tie
   across ranks, or ``+inf`` on several), one more all-reduce SUM of an
   ``(n,)`` float64 column gives the holders per row.  For float64 logits,
   and float32 ones on an accelerator (computed in compensated float32), a
   plain sum over ranks would round once per rank: the shares are
   all-gathered instead and summed in rank order with a compensated sum.

Then each rank's part of the loss (:meth:`Rounds.loss_rows`) is added up
(:meth:`Rounds.finish`): one all-gather of one float64 number per rank for
"mean" and "sum", one all-reduce of the ``(n,)`` losses for "none".  The
gradient needs no communication.  Every order is fixed by the ranks, so the
results are the same bit for bit from run to run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from softmaxkit import numerics as num
from softmaxkit.backends.torch.execution import working_dtype, xp
from softmaxkit.frontend import layout as _layout
from softmaxkit.numerics import vocab_parallel as vp

from softmaxkit.backends.torch.distributed import native
from softmaxkit.backends.torch.distributed.group import Slices


@dataclass
class Totals:
    """The row totals every rank holds after the collectives (``(n, 1)``, working dtype)."""

    a: torch.Tensor
    w_t: torch.Tensor
    s: torch.Tensor
    n_finite: torch.Tensor | None
    finite_weight: torch.Tensor | None
    # The slice's share and whether it holds the maximum, where the native passes run.
    own: tuple | None = None

    def rows(self, index: slice) -> "Totals":
        own = None if self.own is None else tuple(v[index] for v in self.own)
        return Totals(*(None if v is None else v[index] for v in (self.a, self.w_t, self.s, self.n_finite, self.finite_weight)), own)

    def sums(self) -> dict:
        return {"s": self.s, "n_finite": self.n_finite, "finite_weight": self.finite_weight}


class Rounds:
    """One call's targets and options on this rank, and the collectives of its row totals."""

    def __init__(self, slices: Slices, t: torch.Tensor, weight: torch.Tensor | None, ignore_index: int, eps: float, z: float, dtype: torch.dtype, device: torch.device):
        self.slices = slices
        self.eps, self.z = eps, z
        self.work, self.widened = working_dtype(dtype, device)
        self.local, self.on_slice, self.keep = vp.target_slice(xp, t, slices.start, slices.width, ignore_index)
        self.keep_w = self.keep.to(self.work)
        wide = dtype == torch.float64 or (weight is not None and weight.dtype == torch.float64)
        self.max_dtype = torch.float64 if wide else torch.float32
        self.weight = None if weight is None else weight.to(self.work)
        self.picked_weight = None if weight is None else weight.to(self.max_dtype)
        self.native = native.usable(dtype, device, eps)

    def _chunks(self, n: int):
        step = _layout.chunk_rows(max(self.slices.width, 1), torch.finfo(self.work).bits // 8)
        for start in range(0, n, step):
            yield slice(start, min(n, start + step))

    def _sum(self, values: torch.Tensor) -> torch.Tensor:
        """The sum over the ranks of ``values`` (working dtype, left as they are), the same on every rank."""
        group = self.slices.group
        if self.widened:
            values = values.clone()
            dist.all_reduce(values, op=dist.ReduceOp.SUM, group=group)
            return values
        parts = [torch.empty_like(values) for _ in range(self.slices.world)]
        dist.all_gather(parts, values, group=group)
        return num.compensated_sum(xp, torch.stack(parts, dim=-1), False)[..., 0]

    def totals(self, x: torch.Tensor, rows: slice) -> Totals:
        """The row totals of the logits ``x`` (this slice of rows ``rows`` of the targets)."""
        local, on_slice, keep = self.local[rows], self.on_slice[rows], self.keep[rows]
        cols = [vp.slice_max(xp, x).to(self.max_dtype)]
        if self.weight is not None:
            cols.append(vp.picked(xp, self.picked_weight, local, on_slice))
        top = torch.cat(cols, dim=1)
        dist.all_reduce(top, op=dist.ReduceOp.MAX, group=self.slices.group)
        a = top[:, :1].to(self.work)
        w_t = vp.row_weight(xp, keep, top[:, 1:] if self.weight is not None else None, self.work)
        # The share of s, and with smoothing the classes' count (and weight).
        own = native.shares(x, a) if self.native and bool(torch.isfinite(a).all()) else None
        if own is not None:
            shares, holds = own[0], own[1][:, 0]
        else:
            shares, holds = self._shares(x, a)
        summed = self._sum(torch.cat([shares.reshape(-1), holds.sum().reshape(1)]))
        shares = summed[:-1].reshape(shares.shape)
        expected = int(((a > -float("inf")) & ~torch.isnan(a)).sum())
        holders = self._sum(holds) if int(summed[-1]) != expected else torch.ones_like(holds)
        sums = vp.row_totals(xp, [shares[:, :1], holders[:, None]] + [shares[:, i : i + 1] for i in range(1, shares.shape[1])])
        return Totals(a, w_t, sums["s"], sums["n_finite"], sums["finite_weight"], own)

    def _shares(self, x: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The formulas' ``(share columns (n, m), holds (n,))``, a chunk of rows at a time."""
        n = x.shape[0]
        n_cols = 1 + (1 if self.eps else 0) + (1 if self.eps and self.weight is not None else 0)
        shares = torch.empty((n, n_cols), dtype=self.work, device=x.device)
        holds = torch.empty((n,), dtype=self.work, device=x.device)
        for c in self._chunks(n):
            part, _ = vp.shares(xp, x[c].to(self.work), a[c], self.eps, self.weight, self.widened)
            holds[c] = part[1][:, 0]
            shares[c] = torch.cat([part[0]] + part[2:], dim=1)
        return shares, holds

    def denominator(self, totals: Totals) -> torch.Tensor:
        """What "mean" divides by: the summed target weights of the rows (float64, 0-d)."""
        return totals.w_t.to(torch.float64).sum()

    def target_weight_total(self) -> torch.Tensor:
        """What "mean" divides by, before any row total: the targets' class
        weights summed (float64, 0-d; the count of rows that are not
        ignored without class weights).  With class weights each rank sums
        those of the targets it holds, and one all-gather adds them up."""
        if self.weight is None:
            return self.keep_w.to(torch.float64).sum()
        held = vp.picked(xp, self.weight, self.local, self.on_slice)
        mine = torch.where(self.on_slice, held, torch.zeros_like(held)).to(torch.float64).sum().reshape(1)
        parts = [torch.empty_like(mine) for _ in range(self.slices.world)]
        dist.all_gather(parts, mine, group=self.slices.group)
        return num.compensated_sum(xp, torch.cat(parts).reshape(1, -1), False)[0, 0]

    def loss_rows(self, x: torch.Tensor, rows: slice, totals: Totals, grad: torch.Tensor | None = None, denominator: Any = None, row_scale: torch.Tensor | None = None) -> torch.Tensor:
        """This slice's part of each row's loss (float64 ``(n,)``); with ``grad``, its gradient written there.

        The gradient is of the rows' losses summed, each times ``row_scale``
        (a cotangent per row) where given, divided by ``denominator`` where
        given (the "mean" rule: 0 where it is 0).
        """
        if totals.own is not None:
            return native.loss_rows(
                x, self.local[rows], self.on_slice[rows], self.keep[rows], totals.w_t, totals.a, totals.s, totals.own,
                self.z, grad, denominator, row_scale,
            )
        local, on_slice, keep = self.local[rows], self.on_slice[rows], self.keep_w[rows]
        loss = torch.empty((x.shape[0],), dtype=self.work, device=x.device)
        for c in self._chunks(x.shape[0]):
            xw = x[c].to(self.work)
            tc = totals.rows(c)
            st = vp.row_stats_of_slice(xp, xw, tc.a, tc.s, self.widened)
            hot = vp.slice_hot(xp, local[c], on_slice[c], self.slices.width, self.work)
            coef, c_sum = vp.coefficients(xp, xw, hot, self.eps, self.weight, tc.w_t, keep[c], tc.sums())
            loss[c] = vp.slice_loss(xp, st, coef, self.z, tc.w_t, on_slice[c])
            if grad is None:
                continue
            g = vp.slice_grad(xp, st, coef, c_sum, self.z, tc.w_t)
            if row_scale is not None:
                g = g * row_scale[c].to(self.work)[:, None]
            if denominator is not None:
                g = num.reduce_grad(xp, g, denominator, "mean")
            grad[c] = g.to(grad.dtype)
        return loss.to(torch.float64)

    def finish(self, rows: torch.Tensor, reduction: str, denominator: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The loss from every rank's :meth:`loss_rows`, reduced, in ``dtype``; the same on every rank."""
        if reduction == "none":
            if self.eps:
                return self._sum(rows.to(self.work)).to(dtype)
            # Without smoothing only the slice holding a row's target has a
            # part of its loss: the sum is exact in the loss's own dtype
            # (carried in float32 for 16-bit ones, rounded once).
            carrier = torch.float64 if dtype == torch.float64 else torch.float32
            values = rows.to(dtype).to(carrier)
            dist.all_reduce(values, op=dist.ReduceOp.SUM, group=self.slices.group)
            return values.to(dtype)
        mine = num.compensated_sum(xp, rows.reshape(1, -1), False).reshape(1)
        parts = [torch.empty_like(mine) for _ in range(self.slices.world)]
        dist.all_gather(parts, mine, group=self.slices.group)
        total = num.compensated_sum(xp, torch.cat(parts).reshape(1, -1), False)[0, 0]
        loss, _ = num.reduce(xp, total.reshape(1), None, denominator, reduction, True)
        return loss.reshape(()).to(dtype)
