"""The slices' two passes by the native cross-entropy kernel: CPU, 16-bit and float32 logits, no label smoothing.

The kernel computes one row's cross-entropy and its gradient in float64,
exactly as on one device.  Both passes hand it a row it can finish alone:

* **shares**: with the slice's own argmax as the target, the kernel's loss is
  ``log1p(s_slice)``, ``s_slice`` the slice's sum without its maximum
  term, exactly.  The slice that holds the row maximum ``a`` contributes
  ``expm1`` of it; another slice, whose maximum ``m`` is below ``a``,
  contributes ``exp((m - a) + log1p(s_slice))``.
* **loss and gradient**: the slice's logits, widened to float64, with one
  more column ``a + log(R)``, ``R`` the other slices' mass
  ``sum exp(x_i - a)`` (``s - share`` on the slice holding the maximum,
  ``1 + s - share`` elsewhere), form a row whose log-sum-exp is the whole
  row's and whose softmax on the slice's columns is the whole row's.  The
  kernel's loss and gradient of that row, targeted at the class where this
  slice holds it and at the extra column elsewhere, times the row weight
  ``w_t``, are this slice's part of the loss (``w_t (lse - x_t) + z w_t
  lse^2``) and its columns of the gradient (``w_t ((1 + 2 z lse) p - onehot)``).
  Where the slice holds a confident row's maximum, the kernel's own ``s``
  is the row's (the extra column's term is ``R``), and its argmax form
  keeps the target's gradient exact.

``R`` computed as ``s - share`` carries ``s``'s rounding, ``2^-53 s``: the
kernel's ``s``, the slice's terms plus ``R``, is still within that of the
row's.  Rows whose maximum is not finite (masked, ``+inf``, NaN) take the
formulas' path.
"""

from __future__ import annotations

import numpy as np
import torch

from softmaxkit import numerics as num
from softmaxkit.backends.torch.execution import as_numpy, xp
from softmaxkit.frontend import registry

# Bytes of float64 per chunk of the widened rows and their gradient.
_CHUNK_BYTES = 32 << 20


def usable(dtype: torch.dtype, device: torch.device, eps: float) -> bool:
    """Whether the native passes apply: the kernels built, CPU, narrower than float64, no smoothing."""
    return registry.native() is not None and device.type == "cpu" and dtype != torch.float64 and not eps


def _kernel(logits: torch.Tensor, targets: torch.Tensor, loss: np.ndarray, grad: np.ndarray | None, z: float) -> None:
    registry.native().into.cross_entropy_into(
        as_numpy(logits), targets.numpy(), loss, grad, ignore_index=-1, z_loss=z, bfloat16=logits.dtype == torch.bfloat16,
    )


def shares(x: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(share, holds)`` (``(n, 1)`` float64) of the slice ``x`` for finite row maxima ``a``."""
    n, width = x.shape
    if width == 0:
        zero = torch.zeros((n, 1), dtype=torch.float64)
        return zero, zero
    m, k = x.max(dim=1, keepdim=True)
    m = m.to(torch.float64)
    log_sum = np.empty(n, dtype=np.float64)
    _kernel(x, k[:, 0], log_sum, None, 0.0)
    log_sum = torch.from_numpy(log_sum)[:, None]
    holds = m == a
    share = torch.where(holds, torch.expm1(log_sum), torch.exp((m - a) + log_sum))
    share = torch.where(m == -float("inf"), torch.zeros_like(share), share)
    return share, holds.to(torch.float64)


def loss_rows(x, local, on_slice, keep, w_t, a, s, own, z, grad, denominator, row_scale) -> torch.Tensor:
    """This slice's part of each row's loss (float64 ``(n,)``), and its gradient written into ``grad`` where given.

    ``own`` is the slice's mass ``sum exp(x_i - a)`` without the maximum
    term where it holds it (the share), and whether it holds it: ``(share,
    holds)``; the other arguments are :class:`~.rounds.Rounds`' (axis kept).
    """
    n, width = x.shape
    share, holds = own
    rest = torch.where(holds > 0, s - share, (1.0 + s) - share).clamp_min(0.0)
    extra = a + torch.log(rest)
    target = torch.where(on_slice, local, torch.where(keep, torch.full_like(local, width), torch.full_like(local, -1)))[:, 0]
    out = torch.zeros((n,), dtype=torch.float64)
    # Each row's gradient is the kernel's times this one factor.
    factor = w_t if row_scale is None else w_t * row_scale.to(torch.float64)[:, None]
    if denominator is not None:
        factor = num.reduce_grad(xp, factor, denominator, "mean")
    step = max(1, _CHUNK_BYTES // (16 * (width + 1)))
    for start in range(0, n, step):
        c = slice(start, min(n, start + step))
        rows = torch.empty((c.stop - c.start, width + 1), dtype=torch.float64)
        rows[:, :width] = x[c]
        rows[:, width:] = extra[c]
        loss = np.empty(rows.shape[0], dtype=np.float64)
        g = None if grad is None else torch.empty_like(rows)
        _kernel(rows, target[c].contiguous(), loss, None if g is None else g.numpy(), z)
        out[c] = torch.where(on_slice[c, 0], w_t[c, 0] * torch.from_numpy(loss), 0.0)
        if g is None:
            continue
        grad[c].copy_(g[:, :width].mul_(factor[c]))
    return out
