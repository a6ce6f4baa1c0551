"""monitor: softmax health over a training run, as JSON lines and TensorBoard scalars.

A :class:`Monitor` sees the logits of a training step in one of three ways:
a forward hook on the module that outputs them (the model's output head), a
forward pre-hook on a loss module (which also gives the targets), or the
user's own :meth:`Monitor.observe` call.  On a sampled step (every
``every``-th) it computes a handful of reductions on the logits' device,
hooks the logits' gradient for its norm, and keeps the figures as device
tensors; they come to the host once per record, when the step ends, and are
written as one JSON line and, when ``tensorboard`` is installed, as
TensorBoard scalars.  Besides, one host read for the logits and one per
gradient say whether every value is finite, which spares the non-finite
masks in the usual case.  Steps that are not sampled cost one hook call.
Under ``torch.compile`` the hooks run eagerly, at a graph break.

:meth:`Monitor.attention` is softmaxkit's attention with the entropy of each
query head recorded: the k-th call of a step is layer k of its record.

The float32 collapse and zero-target-gradient rules and the margin are those
of :func:`softmaxkit.diagnose` (``softmaxkit.tools.report``), applied to the
tensors where they are.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable

try:
    import torch
except ImportError:
    raise ImportError("softmaxkit.torch needs PyTorch: pip install 'softmaxkit[torch]'") from None

from softmaxkit.backends.torch.attention import scaled_dot_product_attention
from softmaxkit.backends.torch.execution import xp
from softmaxkit.frontend import validate
from softmaxkit.numerics import attention as att
from softmaxkit.tools.curves import RECORDS_FILE
from softmaxkit.tools.report import attention_entropy, collapsed, float32_terms, top2_margins, zero_target_grad

__all__ = [
    "Monitor",
    "monitor",
]

# Figures added over the observations of a step, and those combined by min and max.
_SUMS = (
    "rows",
    "regular_rows",
    "collapsed_rows",
    "target_rows",
    "zero_grad_rows",
    "masked_rows",
    "nan_count",
    "posinf_count",
    "neginf_count",
    "entropy_sum",
    "max_prob_sum",
    "grad_sq",
    "grad_nonfinite",
    "grads",
    "loss_sum",
    "losses",
)
_MINS = ("logit_min", "entropy_min")
_MAXS = ("logit_max", "max_margin", "max_prob_max")
# Rows per chunk are chosen so that each temporary holds about this many
# elements: the figures of a (8192, 131072) batch of logits take a few
# chunk-sized buffers, not copies of the whole batch.
_CHUNK_ELEMENTS = 1 << 24

_tensorboard_note_given = False


class _Step:
    """The figures of one step so far, as device tensors."""

    def __init__(self, step: int, device: torch.device, dtype: torch.dtype):
        self.step = step
        self.sums = torch.zeros(len(_SUMS), device=device, dtype=dtype)
        self.mins = torch.full((len(_MINS),), math.inf, device=device, dtype=dtype)
        self.maxs = torch.full((len(_MAXS),), -math.inf, device=device, dtype=dtype)
        # One (entropy sums, rows, minima, empty rows) per attention call, in call order.
        self.attention: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def add(self, sums: torch.Tensor, mins: torch.Tensor, maxs: torch.Tensor) -> None:
        self.sums += sums
        torch.minimum(self.mins, mins, out=self.mins)
        torch.maximum(self.maxs, maxs, out=self.maxs)

    def add_one(self, name: str, value: torch.Tensor) -> None:
        self.sums[_SUMS.index(name)] += value

    def record(self) -> dict[str, Any]:
        values = torch.cat([self.sums, self.mins, self.maxs]).tolist()
        sums = dict(zip(_SUMS, values[: len(_SUMS)]))
        extremes = dict(zip(_MINS + _MAXS, values[len(_SUMS) :]))
        regular = sums["regular_rows"]

        def extreme(name):
            v = extremes[name]
            return None if math.isinf(v) else v

        def share(part, whole):
            return None if whole == 0 else part / whole

        return {
            "step": self.step,
            "time": time.time(),
            "rows": int(sums["rows"]),
            "regular_rows": int(regular),
            "logit_min": extreme("logit_min"),
            "logit_max": extreme("logit_max"),
            "max_margin": extreme("max_margin"),
            "entropy_mean": share(sums["entropy_sum"], regular),
            "entropy_min": extreme("entropy_min"),
            "max_prob_mean": share(sums["max_prob_sum"], regular),
            "max_prob_max": extreme("max_prob_max"),
            "collapse_fraction": share(sums["collapsed_rows"], regular),
            "zero_grad_fraction": share(sums["zero_grad_rows"], sums["target_rows"]),
            "masked_rows": int(sums["masked_rows"]),
            "nan_count": int(sums["nan_count"]),
            "posinf_count": int(sums["posinf_count"]),
            "neginf_count": int(sums["neginf_count"]),
            "grad_norm": math.sqrt(sums["grad_sq"]) if sums["grads"] else None,
            "grad_nonfinite": int(sums["grad_nonfinite"]) if sums["grads"] else None,
            "loss": share(sums["loss_sum"], sums["losses"]),
            **self._attention_record(),
        }

    def _attention_record(self) -> dict[str, Any]:
        if not self.attention:
            return {}
        means, minima, empty = [], [], []
        for sums, rows, mins, empty_rows in self.attention:
            sums, rows, mins = sums.tolist(), rows.tolist(), mins.tolist()
            means.append([None if n == 0 else s / n for s, n in zip(sums, rows)])
            minima.append([None if n == 0 else m for m, n in zip(mins, rows)])
            empty.append(int(empty_rows.item()))
        return {"attention_entropy": means, "attention_entropy_min": minima, "attention_empty_rows": empty}


def _figures(rows: torch.Tensor, target: torch.Tensor | None, ignore_index: int, dtype: torch.dtype, finite: bool):
    """(sums, mins, maxs) of one chunk of rows (shape (R, C), C >= 1), on its device.

    ``finite`` says that every logit of the chunk is known to be finite: the
    usual case, which needs none of the masks below (they take most of the
    passes).
    """
    inf = math.inf
    device = rows.device
    zero = torch.zeros((), device=device, dtype=dtype)
    if rows.dtype not in (torch.float32, torch.float64):
        rows = rows.float()  # bfloat16 and float16 convert exactly, one chunk at a time
    if finite:
        v, regular = rows, None
        counts = [torch.tensor(rows.shape[0], device=device, dtype=dtype), zero, zero, zero, zero]
        logit_min = rows.amin()
        two_finite = None
    else:
        finite = torch.isfinite(rows)
        nan = torch.isnan(rows)
        posinf = rows == inf
        neginf = rows == -inf
        regular = finite.any(-1) & ~(nan | posinf).any(-1)
        v = torch.where(finite, rows, -inf)
        counts = [m.sum(dtype=dtype) for m in (regular, neginf.all(-1), nan, posinf, neginf)]
        logit_min = torch.where(finite, rows, inf).amin()
        two_finite = finite.sum(-1) >= 2

    def over_regular(x, fill):
        return x if regular is None else torch.where(regular, x, fill)

    row_max = v.amax(-1)
    z, e, total = float32_terms(v, row_max)
    # H = log(total) - sum(e z) / total; a -inf logit has e = 0 and adds nothing.
    # z is ours (a difference), so e z is formed in its place.
    ez = z.mul_(e) if regular is None else torch.where(e > 0, e * z, 0.0)
    entropy = torch.log(total) - ez.sum(-1) / total
    max_prob = 1.0 / total
    if rows.shape[-1] >= 2:
        margins = top2_margins(v)
        margin = (margins if two_finite is None else torch.where(two_finite, margins, -inf)).amax()
    else:
        margin = torch.tensor(-inf, device=device)
    if target is None:
        target_rows = zero_grad = zero
    else:
        keep = over_regular(target != ignore_index, False)
        index = torch.where(keep, target, 0).clamp(0, rows.shape[-1] - 1)
        e_t = e.gather(-1, index[:, None])[:, 0]
        target_rows = keep.sum(dtype=dtype)
        zero_grad = (zero_target_grad(e_t, total) & keep).sum(dtype=dtype)
    regular_rows, masked_rows, nan_count, posinf_count, neginf_count = counts
    figures = [
        torch.tensor(rows.shape[0], device=device, dtype=dtype),
        regular_rows,
        over_regular(collapsed(total), False).sum(dtype=dtype),
        target_rows,
        zero_grad,
        masked_rows,
        nan_count,
        posinf_count,
        neginf_count,
        over_regular(entropy, 0.0).sum(dtype=dtype),
        over_regular(max_prob, 0.0).sum(dtype=dtype),
        zero,
        zero,
        zero,
        zero,
        zero,
    ]
    sums = torch.stack(figures)
    mins = torch.stack([logit_min, over_regular(entropy, inf).amin()])
    maxs = torch.stack([row_max.amax(), margin, over_regular(max_prob, -inf).amax()])
    return sums, mins.to(dtype), maxs.to(dtype)


def _attention_figures(q, k, lse, mask, causal, scale, softcap, sinks, dtype):
    """(entropy sums, rows, minima) per query head, and the empty rows, of one attention call.

    ``H_i = lse_i - sum_j P_ij s_ij - P_sink sink`` with ``P_ij = exp(s_ij - lse_i)``
    over the attended keys (:func:`softmaxkit.tools.report.attention_entropy`),
    from the scores in ``dtype``, in chunks of query rows; ``lse`` (the
    call's) gives the shape of the rows.
    """
    if q.ndim == 2:
        q, k = q[None], k[None]
    heads, kv_heads = q.shape[-3], k.shape[-3]
    lead, rows = tuple(lse.shape[:-1]), lse.shape[-1]
    keys = k.shape[-2]
    # Query head h reads key head h // (heads // kv_heads): the query heads are grouped.
    q = q.detach().to(dtype).unflatten(-3, (kv_heads, heads // kv_heads))
    kt = k.detach().to(dtype).unsqueeze(-3).transpose(-1, -2)
    if mask is not None:
        mask = torch.broadcast_to(mask.detach(), lead + (rows, keys))
    sink = None if sinks is None else sinks.detach().to(dtype)[:, None]
    device = lse.device
    sums = torch.zeros(heads, device=device, dtype=dtype)
    counts = torch.zeros(heads, device=device, dtype=dtype)
    mins = torch.full((heads,), math.inf, device=device, dtype=dtype)
    empty = torch.zeros((), device=device, dtype=dtype)
    step = max(1, _CHUNK_ELEMENTS // max(1, math.prod(lead) * keys))
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        s = (q[..., start:stop, :] @ kt).flatten(-4, -3) * scale
        if softcap is not None:
            s, _ = att.soft_cap(xp, s, None, softcap)
        attend = torch.ones((), dtype=torch.bool, device=s.device)
        if mask is not None and mask.dtype == torch.bool:
            attend = mask[..., start:stop, :]
        elif mask is not None:
            s = s + mask[..., start:stop, :].to(dtype)
        if causal:
            attend = attend & att.causal_keep(
                torch.arange(start, stop, device=s.device), torch.arange(keys, device=s.device), rows, keys, "top_left"
            )
        attend = attend & (s > -math.inf)
        # From the scores, not the call's lse (float32 for float32 inputs,
        # whose rounding would show in H at about 1e-7 of lse).
        entropy = attention_entropy(s, attend, sink)
        per_head = entropy.movedim(-2, 0).reshape(heads, -1)
        kept = attend.any(-1).movedim(-2, 0).reshape(heads, -1)
        sums += torch.where(kept, per_head, 0.0).sum(-1)
        counts += kept.sum(-1, dtype=dtype)
        torch.minimum(mins, torch.where(kept, per_head, math.inf).amin(-1), out=mins)
        empty += (~kept).sum(dtype=dtype)
    return sums, counts, mins, empty


def _summary_writer(log_dir: Path):
    """A SummaryWriter on ``log_dir``, or None (with a note, once) when tensorboard is missing."""
    global _tensorboard_note_given
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if not _tensorboard_note_given:
            _tensorboard_note_given = True
            warnings.warn(
                "softmaxkit.torch.monitor: tensorboard is not installed, so only JSON lines are written "
                f"({RECORDS_FILE}); pip install 'softmaxkit[monitor]' for TensorBoard event files",
                stacklevel=4,
            )
        return None
    return SummaryWriter(log_dir=str(log_dir))


def _write_scalars(writer, record: dict[str, Any]) -> None:
    """The record's figures as the scalars ``softmax/<figure>``, in one TensorBoard event."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard.summary import scalar

    # One event holds every figure, as TensorFlow's own writers do: an event
    # per figure (add_scalar) costs a hand-over to the writer's thread each,
    # more than computing the figures.
    figures = [(name, value) for name, value in record.items() if name not in ("step", "time")]
    values = [
        v
        for name, value in figures
        if value is not None and not isinstance(value, list)
        for v in scalar(f"softmax/{name}", value).value
    ]
    # Attention figures: one scalar per layer (and per head).
    for name in ("attention_entropy", "attention_entropy_min"):
        for layer, heads in enumerate(record.get(name, [])):
            for head, value in enumerate(heads):
                if value is not None:
                    values.extend(scalar(f"softmax/{name}/layer{layer}/head{head}", value).value)
    for layer, value in enumerate(record.get("attention_empty_rows", [])):
        values.extend(scalar(f"softmax/attention_empty_rows/layer{layer}", value).value)
    writer.file_writer.add_summary(Summary(value=values), record["step"], record["time"])


class Monitor:
    """Softmax health over a training run; made by :func:`monitor`.

    Attributes
    ----------
    log_dir : pathlib.Path
        Where the records go: ``softmax-health.jsonl`` and, with tensorboard,
        the event files.
    path : pathlib.Path
        The JSON lines file.
    current_step : int
        The step the logits seen now are filed under (see :func:`monitor`).
    last_record : dict or None
        The latest record written, as written.
    loss : callable or torch.nn.Module or None
        The loss to call when a loss was given: the module itself (hooked), or
        a wrapper around a plain function that records its arguments.
    """

    def __init__(self, head, loss, log_dir, every, dim, ignore_index, optimizer, tensorboard):
        self.log_dir = Path(log_dir)
        self.every = every
        self.dim = dim
        self.ignore_index = ignore_index
        self.current_step = 0
        self.last_record: dict[str, Any] | None = None
        self._manual_steps = optimizer is not None
        self._calls = 0
        self._pending: _Step | None = None
        self._loss_step: _Step | None = None
        self._handles: list[Any] = []
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.log_dir / RECORDS_FILE
        self._file = open(self.path, "a", encoding="utf-8")
        # The file may hold an earlier run's records: this monitor's start here.
        self._start = self._file.tell()
        self._writer = _summary_writer(self.log_dir) if tensorboard else None
        self._closed = False
        # Under torch.compile the hooks run eagerly, at a graph break, instead
        # of being traced (their host reads and file writes are not graph code).
        eager = torch.compiler.disable
        if head is not None:
            self._handles.append(head.register_forward_hook(eager(self._head_hook)))
        self.loss = loss
        if isinstance(loss, torch.nn.Module):
            self._handles.append(loss.register_forward_pre_hook(eager(self._loss_pre_hook), with_kwargs=True))
            self._handles.append(loss.register_forward_hook(eager(self._loss_post_hook)))
        elif loss is not None:
            self.loss = self._wrap(loss)
        if optimizer is not None:
            self._handles.append(optimizer.register_step_post_hook(lambda opt, args, kwargs: self.step()))

    # --- public API ---------------------------------------------------------

    def observe(self, logits: torch.Tensor, target: torch.Tensor | None = None) -> None:
        """Record ``logits`` (classes on ``dim``) and, optionally, integer ``target``.

        This is what the hooks call; call it yourself for logits that no
        hooked module or loss sees.  It counts as one call for the step
        numbering, and records even under ``torch.no_grad()``.
        """
        if not isinstance(logits, torch.Tensor):
            raise TypeError(f"logits must be a torch.Tensor; got {validate.describe(logits)}")
        if target is not None and not isinstance(target, torch.Tensor):
            raise TypeError(f"target must be a torch.Tensor or None; got {validate.describe(target)}")
        if target is not None and not target.is_floating_point() and logits.ndim > 0:
            row_shape = tuple(logits.movedim(self.dim, -1).shape[:-1])
            if target.numel() != math.prod(row_shape):
                raise ValueError(
                    f"target must hold one class index per row of the logits, shape {row_shape}; "
                    f"got shape {tuple(target.shape)}"
                )
        if self._begin():
            self._add(logits, target, self.dim, -100 if self.ignore_index is None else self.ignore_index)

    def attention(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        r"""softmaxkit's ``scaled_dot_product_attention(query, key, value, ...)``, recording its entropy per head.

        Takes the arguments of
        :func:`softmaxkit.torch.scaled_dot_product_attention` and returns what
        it returns.  On a recorded step, with gradients enabled, the k-th
        call of the step is layer k of the record: for query head h,
        ``attention_entropy[k][h]`` is the mean over the batch and the query
        rows of

        .. math:: H_i = \mathrm{lse}_i - \sum_{j \in A_i} P_{ij} s_{ij}
                  \;(- P_\sigma \sigma_h \text{ with a sink}),\quad
                  P_{ij} = e^{s_{ij} - \mathrm{lse}_i}

        in nats (``s`` the scores after scale, softcap and float mask,
        ``A_i`` the attended keys), ``attention_entropy_min[k][h]`` its
        minimum, and ``attention_empty_rows[k]`` the rows with no key to
        attend to, which are left out (a head with only such rows has
        ``None``).  It is computed in float64 (float32 on MPS) from the
        scores, the log-sum-exp formed again in that precision (the call's
        is float32 for float32 inputs), in chunks of query rows of about
        16M scores: one more pass over the scores per recorded call.  Attention calls do not advance the step: without a
        head, loss or optimizer, call ``mon.step()``.

        Examples
        --------
        >>> import tempfile, torch
        >>> from softmaxkit.torch import monitor
        >>> q, k, v = torch.ones(1, 2, 3, 4), torch.ones(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
        >>> with tempfile.TemporaryDirectory() as run:
        ...     with monitor(log_dir=run, tensorboard=False) as mon:
        ...         out = mon.attention(q, k, v)
        ...     [[round(h, 4) for h in heads] for heads in mon.records[0]["attention_entropy"]]
        [[1.6094, 1.6094]]
        """
        if self._closed or not torch.is_grad_enabled():
            return scaled_dot_product_attention(query, key, value, *args, **kwargs)
        return_lse = validate.flag(kwargs.get("return_lse", False), "return_lse")
        out, lse = scaled_dot_product_attention(query, key, value, *args, **{**kwargs, "return_lse": True})
        # Under torch.compile the figures are taken eagerly, at a graph break, as in the hooks.
        torch.compiler.disable(self._observe_attention)(query, key, lse, args, kwargs)
        return (out, lse) if return_lse else out

    def _observe_attention(self, query, key, lse, args, kwargs) -> None:
        given = inspect.signature(scaled_dot_product_attention).bind(query, key, None, *args, **kwargs).arguments
        step = self.current_step if self._manual_steps else self._calls
        if self._pending is not None and self._pending.step != step:
            self._flush()
        if step % self.every == 0:
            dtype = torch.float32 if lse.device.type == "mps" else torch.float64
            if self._pending is None:
                self._pending = _Step(step, lse.device, dtype)
            scale = validate.attention_scale(given.get("scale"), query.shape[-1])
            self._pending.attention.append(
                _attention_figures(
                    query, key, lse, given.get("attn_mask"), given.get("is_causal", False), scale,
                    given.get("softcap"), given.get("sinks"), dtype,
                )
            )

    @property
    def records(self) -> list[dict[str, Any]]:
        """The records this monitor has written, read back from its file.

        Kept on disk, not in memory, so that a long run does not grow; NaN
        and infinity come back as floats.
        """
        if not self._closed:
            self._file.flush()
        with open(self.path, encoding="utf-8") as f:
            f.seek(self._start)
            return [json.loads(line) for line in f if line.strip()]

    def step(self, value: int | None = None) -> int:
        """End the current step (its record is written) and advance by one, or go to ``value``.

        After the first call, calls of the head or loss no longer advance the
        step.  With ``optimizer=`` given, every ``optimizer.step()`` calls it.
        """
        if value is not None:
            value = validate.integer(value, "value")
        self._manual_steps = True
        self._flush()
        self.current_step = self.current_step + 1 if value is None else value
        return self.current_step

    def close(self) -> None:
        """Write the pending record, remove the hooks, close the files.  Idempotent."""
        if self._closed:
            return
        self._flush()
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._file.close()
        if self._writer is not None:
            self._writer.close()
        self._closed = True

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- steps and records --------------------------------------------------

    def _begin(self) -> bool:
        """Number this call's step; whether the step is recorded."""
        if self._closed:
            raise RuntimeError("this monitor is closed")
        if not self._manual_steps:
            if self._calls > 0:
                self.current_step = self._calls
                # The step's attention calls, made before its head or loss, opened it.
                if self._pending is not None and self._pending.step != self.current_step:
                    self._flush()
            self._calls += 1
        return self.current_step % self.every == 0

    def _flush(self) -> None:
        acc, self._pending = self._pending, None
        if acc is None:
            return
        record = acc.record()
        self.last_record = record
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            _write_scalars(self._writer, record)

    def _add(self, logits, target, dim, ignore_index) -> _Step:
        if not (logits.is_floating_point() and logits.layout == torch.strided):
            raise TypeError(f"the logits must be a real floating, strided tensor; got {logits.dtype} {logits.layout}")
        if logits.ndim == 0:
            raise ValueError("the logits must have at least one dimension (the class axis); got a 0-d tensor")
        # MPS has no float64.
        dtype = torch.float32 if logits.device.type == "mps" else torch.float64
        acc = self._pending
        if acc is None:
            acc = self._pending = _Step(self.current_step, logits.device, dtype)
        x = logits.detach()
        x = x.movedim(dim, -1)
        classes = x.shape[-1]
        rows = x.reshape(math.prod(x.shape[:-1]), classes)
        t = None
        if target is not None and not target.is_floating_point() and target.numel() == rows.shape[0]:
            t = target.detach().reshape(-1).to(rows.device)
        if classes == 0:
            acc.add_one("rows", torch.tensor(rows.shape[0], device=rows.device))
        else:
            # One sum over every logit, one host read: a finite sum proves
            # every logit finite (as in watch), and the chunks skip the masks.
            total = rows.sum(dtype=torch.float64 if rows.dtype == torch.float64 else torch.float32)
            finite = math.isfinite(total.item())
            step = max(1, _CHUNK_ELEMENTS // classes)
            for start in range(0, rows.shape[0], step):
                part = None if t is None else t[start : start + step]
                acc.add(*_figures(rows[start : start + step], part, ignore_index, dtype, finite))
        if logits.requires_grad and torch.is_grad_enabled():
            logits.register_hook(torch.compiler.disable(functools.partial(self._grad_hook, acc)))
        return acc

    @staticmethod
    def _grad_hook(acc: _Step, grad: torch.Tensor) -> None:
        g = grad.detach()
        # In float32 (float64 for float64 gradients): a float64 copy of the
        # gradient would cost more than the rest of the record.
        norm = torch.linalg.vector_norm(g, dtype=torch.float64 if g.dtype == torch.float64 else torch.float32)
        acc.add_one("grad_sq", norm.to(acc.sums.dtype).square())
        # A finite norm proves every element finite; only a non-finite one is counted.
        if not math.isfinite(norm.item()):
            acc.add_one("grad_nonfinite", (~torch.isfinite(g)).sum())
        acc.add_one("grads", torch.ones((), device=g.device))

    # --- hooks --------------------------------------------------------------

    def _head_hook(self, module, args, output) -> None:
        if not torch.is_grad_enabled():
            return
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"monitor: the head's output must be a tensor of logits; got {validate.describe(output)}; attach "
                f"to the module that outputs the logits, or call observe(logits) yourself"
            )
        if self._begin():
            self._add(output, None, self.dim, -100)

    def _loss_arguments(self, args, kwargs, module_ignore):
        logits = args[0] if args else kwargs.get("input")
        target = args[1] if len(args) > 1 else kwargs.get("target")
        if not isinstance(logits, torch.Tensor):
            raise TypeError(
                f"monitor: the loss's first argument must be the tensor of logits; got {validate.describe(logits)}"
            )
        if self.ignore_index is not None:
            ignore = self.ignore_index
        else:
            ignore = kwargs.get("ignore_index", module_ignore)
        # torch.nn.functional.cross_entropy's layout: classes on dim 1, or 0 for one row.
        return logits, target, (1 if logits.ndim >= 2 else 0), ignore

    def _loss_begin(self, args, kwargs, module_ignore) -> None:
        self._loss_step = None
        if not torch.is_grad_enabled():
            return
        logits, target, dim, ignore = self._loss_arguments(args, kwargs, module_ignore)
        if self._begin():
            self._loss_step = self._add(logits, target if isinstance(target, torch.Tensor) else None, dim, ignore)

    def _loss_end(self, output) -> None:
        acc, self._loss_step = self._loss_step, None
        if acc is not None and isinstance(output, torch.Tensor) and output.is_floating_point():
            acc.add_one("loss_sum", output.detach().mean(dtype=acc.sums.dtype))
            acc.add_one("losses", torch.ones((), device=output.device))

    def _loss_pre_hook(self, module, args, kwargs):
        self._loss_begin(args, kwargs, getattr(module, "ignore_index", -100))

    def _loss_post_hook(self, module, args, output):
        self._loss_end(output)

    def _wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        begin = torch.compiler.disable(self._loss_begin)
        end = torch.compiler.disable(self._loss_end)

        @functools.wraps(fn)
        def loss(*args, **kwargs):
            if self._closed:
                return fn(*args, **kwargs)
            begin(args, kwargs, -100)
            out = fn(*args, **kwargs)
            end(out)
            return out

        return loss


def monitor(
    head: torch.nn.Module | None = None,
    *,
    loss: torch.nn.Module | Callable[..., Any] | None = None,
    log_dir: str | os.PathLike,
    every: int = 10,
    optimizer: torch.optim.Optimizer | None = None,
    dim: int = -1,
    ignore_index: int | None = None,
    tensorboard: bool = True,
) -> Monitor:
    """Record softmax health every ``every`` steps of a training run.

    Attach to the module that outputs the logits (``head``), or to the loss
    (``loss``, which also gives the targets and the loss value), or to
    neither and call :meth:`Monitor.observe` yourself.  Each record holds,
    over the rows of the step's logits (for a row x with maximum a, float32
    terms ``e_i = exp(x_i - a)``, ``S = sum(e)``):

    * ``logit_min``, ``logit_max``: range of the finite logits;
      ``max_margin``: the largest top-1 minus top-2;
    * ``entropy_mean``, ``entropy_min``: ``H = log S - sum(e (x - a)) / S``
      in nats, over regular rows (a finite logit, no NaN or ``+inf``);
    * ``max_prob_mean``, ``max_prob_max``: ``max p = 1 / S``;
    * ``collapse_fraction``: regular rows with float32 ``S == 1`` (Prieto
      et al. 2025), the rule of :func:`softmaxkit.diagnose`;
    * ``zero_grad_fraction`` (with integer targets): rows whose naive float32
      ``p_t - 1`` is 0, among regular rows whose target is not ignored;
    * ``masked_rows`` (every logit ``-inf``), ``nan_count``,
      ``posinf_count``, ``neginf_count``;
    * ``grad_norm``: the L2 norm of the loss's gradient with respect to the
      logits (a tensor hook), and ``grad_nonfinite``, its non-finite count;
    * ``loss`` (attached to a loss): the mean of its outputs.

    Parameters
    ----------
    head : torch.nn.Module, optional
        A module whose output is a tensor of logits, classes on ``dim``
        (e.g. ``model.lm_head``); a forward hook sees it.
    loss : torch.nn.Module or callable, optional
        Called as ``loss(input, target, ...)`` with the layout of
        ``torch.nn.functional.cross_entropy`` (classes on dim 1, or 0 for a
        single row).  A module is hooked in place; for a plain function,
        call ``mon.loss(...)`` instead of it.  Integer targets give the
        zero-gradient figure; class probabilities do not.
    log_dir : str or path-like
        Created if needed.  ``softmax-health.jsonl`` is appended to, one
        JSON object per record (``step`` and ``time``, the wall time in
        seconds, then the figures; NaN and infinity as Python's ``json``
        writes them); with tensorboard installed, TensorBoard event files
        get each figure as the scalar ``softmax/<name>``.
    every : int >= 1, default 10
        Record steps 0, every, 2 every, ...
    optimizer : torch.optim.Optimizer, optional
        The step is then the number of ``optimizer.step()`` calls so far.
    dim : int, default -1
        The class axis of the head's output and of :meth:`Monitor.observe`.
    ignore_index : int, optional
        Targets left out of the zero-gradient figure.  Default: the loss
        module's ``ignore_index`` attribute, or the ``ignore_index`` keyword
        of the loss call, or -100.
    tensorboard : bool, default True
        Write TensorBoard event files when tensorboard is installed; without
        it, a warning says so once and the JSON lines are still written.

    Returns
    -------
    Monitor
        Attached at once; ``close()`` (or leaving a ``with`` block) writes
        the last record, removes the hooks and closes the files.

    Notes
    -----
    Steps: with ``optimizer``, each ``optimizer.step()`` ends a step, so the
    micro-batches of gradient accumulation make one record (counts added,
    extremes combined, means over all their rows, the gradient norm over
    all their logits).  Without it, each call of the head or loss (or of
    ``observe``) is a step, until you call ``mon.step()``; from then on
    only ``mon.step()`` advances it, as in :func:`softmaxkit.torch.watch`.
    A step's record is written when the step ends, so call ``mon.step()``
    after the backward pass.  Calls of the head or loss under
    ``torch.no_grad()`` (evaluation) are not recorded.

    The figures are reductions on the logits' device, in chunks of about
    16M elements; they reach the host once per record, and one host read
    for the logits and one per gradient say whether every value is finite
    (so a recorded step synchronises with a GPU a few times).  Recorded steps
    cost a few passes over the logits; the others, one hook call.  Under
    ``torch.compile`` the hooks run eagerly, at a graph break.  NaN is seen
    only on recorded steps: use :func:`softmaxkit.torch.watch` to find where
    it is made.

    References
    ----------
    L. Prieto, M. Barsbey, P. A. M. Mediano, T. Birdal, "Grokking at the
    edge of numerical stability", ICLR 2025.

    Examples
    --------
    >>> import tempfile, torch
    >>> from softmaxkit.torch import monitor
    >>> head, criterion = torch.nn.Linear(4, 3), torch.nn.CrossEntropyLoss()
    >>> with tempfile.TemporaryDirectory() as run:
    ...     with monitor(loss=criterion, log_dir=run, every=1, tensorboard=False) as mon:
    ...         for _ in range(2):
    ...             criterion(head(torch.randn(5, 4)), torch.tensor([0, 1, 2, 0, 1])).backward()
    ...     [(r["step"], r["rows"], r["collapse_fraction"], r["grad_norm"] > 0) for r in mon.records]
    [(0, 5, 0.0, True), (1, 5, 0.0, True)]
    """
    if head is not None and not isinstance(head, torch.nn.Module):
        raise TypeError(f"head must be a torch.nn.Module; got {validate.describe(head)}")
    if head is not None and loss is not None:
        raise ValueError(
            "give head or loss, not both: the loss sees the same logits with their targets; attach to the loss"
        )
    if loss is not None and not callable(loss):
        raise TypeError(f"loss must be a torch.nn.Module or a callable; got {validate.describe(loss)}")
    if not isinstance(log_dir, (str, os.PathLike)):
        raise TypeError(f"log_dir must be a str or a path; got {validate.describe(log_dir)}")
    every = validate.count(every, "every", 1)
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer; got {validate.describe(optimizer)}")
    dim = validate.integer(dim, "dim")
    if ignore_index is not None:
        ignore_index = validate.integer(ignore_index, "ignore_index")
    validate.flag(tensorboard, "tensorboard")
    return Monitor(head, loss, log_dir, every, dim, ignore_index, optimizer, tensorboard)
