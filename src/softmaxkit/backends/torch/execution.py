"""How the torch backend executes: precision, execution modes, value checks, chunking, layouts and the native kernels.

Forward and backward passes call the formulas in ``softmaxkit.numerics``
with the array namespace ``array_api_compat.torch``; nothing here restates
them.  Rows are processed in chunks so that working-precision temporaries
stay ``O(chunk x classes)``, and results are written into one preallocated
output.  On CPU, softmax, log_softmax (forward and first-order backward),
logsumexp and the cross-entropy passes go to the native kernels
(``softmaxkit.kernels``, the same formulas in C) when they are built: the
kernels read the tensor's memory along any dim (:func:`kernel_layout`) and
write into memory from their output cache (:func:`native_empty_like`).

Working precision
-----------------
* CPU: float16, bfloat16 and float32 are computed in float64 and rounded
  once; float64 uses the compensated float64 path of ``softmaxkit.numerics``.
* CUDA and other accelerators: float32 and narrower are computed in float32.
  float32 inputs take the compensated path (exact shift, ``exp(hi)(1 + lo)``,
  cascaded sums) that ``softmaxkit.numerics`` uses when no wider type is available;
  float16 and bfloat16 get float32 as their wider type.  float64 runs at a
  small fraction of float32 speed on most GPUs, and the compensated float32
  path stays within a few ULP.  Where :func:`triton_ready` holds, the passes
  run the Triton kernels (``softmaxkit.kernels.triton``), which restate that
  compensated float32 path.

Checks under compilation and transforms
---------------------------------------
Shape, dtype and option checks always run.  Checks on tensor *values*
(target range, finite class weights, signs of probabilities) raise ``ValueError`` in
eager mode; under ``torch.compile`` they become ``torch._assert_async``
(no graph break; a ``RuntimeError`` when the compiled code runs), and under
``torch.func.vmap`` they are skipped, since data-dependent Python control
flow is not allowed there.  The batched cotangents of
``torch.autograd.grad(..., is_grads_batched=True)`` count as a transform
too: they never reach the native kernels.

Eager and compiled code
-----------------------
Each autograd Function defines an exact ``jvp`` (see ``docs/torch.md``),
which Dynamo cannot trace; under ``torch.compile`` the custom operators of
``ops.py`` run instead (:func:`apply_function`).  Both run the same passes
(``functions.py``).
"""

from __future__ import annotations

import importlib
import math
from typing import Any, Callable

import array_api_compat.torch as _compat
import torch
import torch.autograd.forward_ad as _forward_ad

from softmaxkit.frontend import layout as _layout
from softmaxkit.frontend import registry
from softmaxkit.frontend.layout import Layout
from softmaxkit import numerics as num
from softmaxkit.frontend import validate


class _Namespace:
    """``array_api_compat.torch`` with ``concat`` as ``torch.cat``.

    The cotangents of ``torch.autograd.grad(..., is_grads_batched=True)``
    are batched by torch's legacy batching, which has a rule for ``cat`` but
    none for ``concat``; the compensated sums of the shared formulas concatenate
    when a row's width is odd.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(_compat, name)

    @staticmethod
    def concat(arrays, /, *, axis: int | None = 0) -> torch.Tensor:
        if axis is None:
            return torch.cat([a.reshape(-1) for a in arrays])
        return torch.cat(list(arrays), axis)


xp = _Namespace()


def working_dtype(dtype: torch.dtype, device: torch.device) -> tuple[torch.dtype, bool]:
    """The dtype to compute in, and whether it is wider than ``dtype``.

    See the module docstring: float64 on CPU, float32 on accelerators.
    """
    if device.type == "cpu" or dtype == torch.float64:
        return num.working_dtype(xp, dtype)
    return torch.float32, dtype != torch.float32


_NARROW = (torch.float16, torch.bfloat16)


def autocast_dtype(dtype: torch.dtype, device: torch.device, loss: bool) -> torch.dtype:
    """The result dtype torch's autocast policy gives an operation on ``dtype`` input.

    Under autocast, losses (cross-entropy, NLL, binary cross-entropy) of
    float16 or bfloat16 input are float32 on every device; softmax,
    log_softmax and logsumexp are float32 on accelerators and keep their
    dtype on CPU (torch's float32 lists).  Without autocast, and for other
    dtypes, ``dtype`` itself.  The computation reads the narrow input: only
    the result's rounding changes.
    """
    if dtype in _NARROW and torch.is_autocast_enabled(device.type) and (loss or device.type != "cpu"):
        return torch.float32
    return dtype


def transformed(tensors: tuple) -> bool:
    """Whether any tensor is wrapped by a transform: functorch's (``vmap``,
    ``grad``, ``jvp``) or the batched cotangents of
    ``torch.autograd.grad(..., is_grads_batched=True)`` (legacy batching)."""
    fc = torch._C._functorch
    return any(fc.is_functorch_wrapped_tensor(t) or fc.is_legacy_batchedtensor(t) for t in tensors if t is not None)


def plain_eager(*tensors: Any) -> bool:
    """True in ordinary eager execution.

    Chunked in-place writes, the native kernels (which read the tensors'
    memory) and data-dependent checks need it; under ``torch.compile``
    (which fuses the temporaries away anyway), ``vmap``, ``torch.func.grad``,
    batched gradients and double backward the work is done in one piece.
    """
    if torch.compiler.is_compiling() or torch.is_grad_enabled():
        return False
    return not transformed(tensors)


def _readable(bad: torch.Tensor) -> bool:
    return not transformed((bad,))


# How values are checked here: at once in eager code, as an asynchronous
# assertion under torch.compile, not at all under vmap and other transforms.
_EAGER_CHECKS = validate.ValueChecks(readable=_readable)
_COMPILED_CHECKS = validate.ValueChecks(readable=lambda bad: False, check_later=torch._assert_async)


def value_checks() -> validate.ValueChecks:
    return _COMPILED_CHECKS if torch.compiler.is_compiling() else _EAGER_CHECKS


def by_rows(compute: Callable[..., tuple], *rows: torch.Tensor | None) -> tuple:
    """``compute(*rows)`` evaluated chunk by chunk along the leading axis.

    Every entry of ``rows`` (``None`` passes through) has the rows first and,
    for the first one, the classes last.  ``compute`` returns a tuple of
    tensors with a leading row axis; each is written into one preallocated
    output.  The chunk size is the generic path's (``_layout.chunk_rows``,
    in the first entry's working dtype).
    """
    n_rows, width = rows[0].shape[0], rows[0].shape[-1]
    work, _ = working_dtype(rows[0].dtype, rows[0].device)
    step = _layout.chunk_rows(width, work.itemsize)
    if n_rows <= step or not plain_eager(*rows):
        return compute(*rows)
    outs = None
    for start in range(0, n_rows, step):
        stop = min(start + step, n_rows)
        part = compute(*(None if r is None else r[start:stop] for r in rows))
        if outs is None:
            outs = tuple(torch.empty((n_rows,) + tuple(p.shape[1:]), dtype=p.dtype, device=p.device) for p in part)
        for out, p in zip(outs, part):
            out[start:stop] = p
    return outs


def loss_options(target: Any, ignore_index: Any, label_smoothing: Any, z_loss: Any, reduction: Any) -> tuple[int, float, float, str]:
    """A cross-entropy's options checked, and ``target`` a tensor: ``(ignore_index, eps, z, reduction)``."""
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor; got {type(target).__module__}.{type(target).__name__}")
    return validate.loss_options(ignore_index, label_smoothing, z_loss, reduction)


def as_float(x: Any, name: str) -> torch.Tensor:
    """A floating tensor (integers promoted as in ``validate.as_float``), or a clear error."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__module__}.{type(x).__name__}")
    return validate.as_float(xp, x, name)


def _class_layout(x: torch.Tensor, dim: int) -> Layout:
    """The shared layout of ``x`` with ``dim`` last; a 0-d tensor is one row of one entry."""
    return Layout(xp, tuple(x.shape) or (1,), (dim if x.ndim else 0,))


def rows_view(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x`` as (rows, n) with ``dim`` last (a view where the strides allow one).

    The last dimension needs no axis move: a plain reshape, which spares a
    small call the cost of building the Layout.
    """
    if x.ndim and dim == x.ndim - 1:
        return x.reshape(math.prod(list(x.shape[:-1])), x.shape[-1])
    return _class_layout(x, dim).rows(x)


def from_rows(y2: torch.Tensor, x: torch.Tensor, dim: int) -> torch.Tensor:
    """Undo :func:`rows_view` on a result of ``x``'s size."""
    if x.ndim and dim == x.ndim - 1:
        return y2.reshape(x.shape)
    return _class_layout(x, dim).back_rows(y2).reshape(x.shape)


_NATIVE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def native_ready(*tensors: torch.Tensor) -> bool:
    """Whether the native kernels can take these tensors: CPU
    float16/bfloat16/float32/float64 tensors in plain eager mode, of any
    shape and layout (see :func:`kernel_layout` and :func:`as_numpy`)."""
    return registry.native() is not None and plain_eager(*tensors) and all(
        t.device.type == "cpu" and t.dtype in _NATIVE_DTYPES for t in tensors
    )


_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

# The Triton kernels live in a layer above this one (kernels/triton); like the
# registry's backends they are named, and imported on first use.
_TRITON = "softmaxkit.kernels.triton"


def triton_ready(*tensors: torch.Tensor) -> bool:
    """Whether the Triton kernels take these tensors.

    True when every tensor is float16, bfloat16 or float32 (float64 keeps
    the formulas' path) on CUDA, or on CPU with the switch on
    (``SOFTMAXKIT_TRITON_ON_CPU=1`` at import, or the attribute
    ``softmaxkit.kernels.triton.on_cpu`` that tests flip), in plain eager
    mode (:func:`plain_eager`: the custom operators run their passes that
    way under ``torch.compile`` too), and ``triton`` imports.  Checked in
    that order, so that CPU code with the switch off never imports triton.
    """
    if not tensors or any(t.dtype not in _TRITON_DTYPES for t in tensors):
        return False
    kernels = triton_kernels()
    if not all(t.device.type == "cuda" or (t.device.type == "cpu" and kernels.on_cpu) for t in tensors):
        return False
    return plain_eager(*tensors) and kernels.available()


def triton_kernels(name: str = "") -> Any:
    """The module ``softmaxkit.kernels.triton`` (or its submodule ``name``, e.g. ``"softmax"``)."""
    return importlib.import_module(f"{_TRITON}.{name}" if name else _TRITON)


def as_numpy(t: torch.Tensor):
    """A CPU tensor's memory as a C-contiguous NumPy array for the kernels:
    bfloat16 as its 16-bit patterns (pass ``bfloat16=True`` with it).

    Contiguous tensors are shared, not copied.  Others are copied first: the
    kernels read rows whose classes are adjacent, and a strided row would
    otherwise take the generic path, which is many times slower than the
    copy (about 7 s against 0.15 s for softmax along dim 0 of 4096 x 8192).
    """
    t = t.detach().contiguous()
    return t.view(torch.uint16).numpy() if t.dtype == torch.bfloat16 else t.numpy()


def kernel_layout(dim: int, x: torch.Tensor, *others: torch.Tensor) -> tuple[list[int], int, tuple[torch.Tensor, ...]]:
    """``(order, axis, tensors)``: ``x`` and ``others`` (of ``x``'s shape)
    permuted by ``order`` and C-contiguous, and where ``dim`` went.

    The kernels reduce along any axis of a C-contiguous array.  A tensor
    whose memory is dense in some order of its dimensions (a transpose, a
    ``permute`` or ``movedim`` of a contiguous tensor) is read in that
    order without a copy; any other layout (a slice with steps, an
    expanded tensor) is copied first.  ``others`` (a cotangent) follow
    ``x``'s order, copied if theirs differs.  :func:`restore_layout` undoes
    the permutation on a result.
    """
    identity = list(range(x.ndim))
    if x.is_contiguous():
        return identity, dim, tuple(t.contiguous() for t in (x,) + others)
    order = sorted(identity, key=lambda i: (-x.stride(i), i))
    if not x.permute(order).is_contiguous():
        order = identity
    tensors = tuple(t.permute(order).contiguous() for t in (x,) + others)
    return order, order.index(dim), tensors


def restore_layout(out: torch.Tensor, order: list[int]) -> torch.Tensor:
    """A kernel result in :func:`kernel_layout`'s order, back in the caller's (a view)."""
    if order == sorted(order):
        return out
    inverse = [0] * len(order)
    for position, d in enumerate(order):
        inverse[d] = position
    return out.permute(inverse)


def native_empty_like(like: torch.Tensor) -> torch.Tensor:
    """An uninitialised contiguous tensor of ``like``'s shape and dtype for a
    kernel's output, from the kernels' output cache (see
    ``softmaxkit.kernels.set_output_cache``): a training loop then reuses the
    memory of the step before instead of having the operating system fault in
    and zero a new output every step.  The tensor holds its block until it
    is freed, like any NumPy-backed tensor."""
    out = torch.from_numpy(registry.native().numpy.empty_like(as_numpy(like)))
    return out.view(torch.bfloat16) if like.dtype == torch.bfloat16 else out


# --- eager and compiled execution --------------------------------------------
# The autograd Functions define exact jvps for forward mode, which Dynamo
# cannot trace.  Under torch.compile the custom operators (ops.py) run
# instead: one opaque node each, forward and backward.


def apply_function(function: type, op: Callable[..., Any], *args: Any) -> Any:
    """``function.apply(*args)`` in eager code, ``op(*args)`` (its custom operator) under torch.compile.

    In eager code with nothing to differentiate (gradient recording off or no
    input requiring a gradient, no forward-mode level open, no transform),
    ``function.forward`` runs directly: ``Function.apply`` binds its
    arguments through ``inspect.signature`` on every call, which costs more
    than a small softmax.
    """
    if torch.compiler.is_compiling():
        return op(*args)
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if (
        not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
        and _forward_ad._current_level < 0
        and not transformed(tensors)
    ):
        # detached: a tensor that requires a gradient under no_grad must not
        # make cross-entropy write a gradient nobody asks for
        with torch.no_grad():
            return function.forward(*(a.detach() if isinstance(a, torch.Tensor) else a for a in args))
    return function.apply(*args)
