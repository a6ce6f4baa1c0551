"""Native CPU kernels: the softmax family, cross-entropy and the VJPs in C.

The public NumPy functions call these automatically for float16, float32,
float64 and ``ml_dtypes.bfloat16`` arrays reduced along any one axis of
a C-contiguous array (no ``where``, no ``b``); every other case, and builds
without the extension, take the generic path.  The kernels implement the formulas of ``softmaxkit.numerics``
exactly as stated there.

Kernels
-------
Along any one axis of a C-contiguous array, for each row (the elements
along that axis at one position of the others):

* softmax and log_softmax (with a temperature), logsumexp;
* cross-entropy loss per row and its gradient, fused: class indices with
  ``ignore_index``, class weights, label smoothing, z-loss, or probability
  targets; the front end applies the shared loss rules (``numerics.reduction``)
  to the per-row losses and gives the kernel the gradient's divisor;
* the softmax VJP (from probabilities) and the log_softmax VJP (from
  log-probabilities).

and scaled dot-product attention (``csrc/attention*.c``): a tiled
online-softmax forward and FlashAttention-2's backward, float32 and
bfloat16, for :func:`softmaxkit.attention` and the torch CPU path (see
"Attention" below).

Along the last axis a row's elements are adjacent and are read in place.
Along another axis, of shape (outer, n, inner) about it, they lie ``inner``
apart: each thread gathers a tile of neighbouring rows (which share cache
lines) into its scratch, computes them there exactly as contiguous rows, and
scatters the row-shaped outputs back, so results are bitwise those of the
same data with the axis moved last, and no transposed copy of the array is
made.  Per-row values (logsumexp, losses, class indices) have the array's
shape without the axis.

Numerics
--------
float32 is computed in float64 and rounded once.  float16 and bfloat16 go
through the same code: each chunk of a row is widened to float32 (exactly),
and the float32 results are rounded to the 16-bit type (to nearest, ties to
even; overflow gives inf, NaN stays NaN), so float64 -> float32 -> 16 bits,
which can differ from a single rounding by one ULP of the 16-bit type in rare
halfway cases: their contract is 1 ULP (the results stay within 0.5 + 2**-10
ULP).  The conversions are vectorised on each instruction set (F16C or
AVX-512F for float16, integer arithmetic for bfloat16) and give bitwise the
same results on all of them, the portable baseline included.  float64 uses the exact shift ``x - max = hi + lo`` (TwoSum; with a
temperature, the quotient and the exact remainder of the division),
``exp(hi + lo)`` and compensated (TwoSum) sums; a shift below -746 gives
exactly 0, whatever its low part.  The vectorised exp is written here (see ``csrc/simd.h``): relative
error below 2**-32 in the float32 family, so that the float32 result stays
within 0.5 + 2**-7 ULP (on AVX-512 a 16-entry table of 2**(j/16) after
reduction by ``ln 2 / 16`` and a degree-4 Taylor polynomial, below 2**-34.5;
elsewhere a degree-5 polynomial after reduction by ``ln 2``), and within 0.7
ULP in the float64 family (degree 10, with the low parts folded in);
``log1p`` of the per-row sum comes from the C library.  Divisions by ``1 + s`` use the reciprocal in the float32 family and
a fused-multiply-add-corrected quotient in the float64 family.

Sums are formed per block of 2048 elements from the start of the row and the
block sums are added in order, so a result does not depend on the number of
threads.  Results may differ in the last bit between instruction sets
(AVX-512, AVX2 + FMA, the portable baseline), which sum in different lane
orders.

Instruction sets and threads
----------------------------
AVX-512 (F/DQ/BW/VL), AVX2 + FMA and a portable baseline are compiled into one
binary and chosen at import from what the CPU supports.  Rows are spread over
a pool of POSIX threads, and a few very wide rows are split into one chunk per
thread; the GIL is released while kernels run.  The thread count (1 to 4096)
defaults to the number of CPUs this process may run on, can be set with the
environment variable ``SOFTMAXKIT_NUM_THREADS`` (read at import; a value that
is not a valid count warns and leaves the default) and with
:func:`set_num_threads`.  Memory: the outputs, plus one row (or chunk) of
scratch per thread.

Memory traffic
--------------
Along the last axis, each row is read three times (maximum, exponentials, output), but only the
first read comes from main memory: while a thread computes one row's
exponentials it prefetches the next row it will run (rows are claimed one
batch ahead for that).  An output of 32 MiB or more is written with
non-temporal stores where the instruction set has them (AVX-512, float32
family): it could not stay in the cache anyway, and this saves reading every
line of it before writing.  Smaller outputs are prefetched like the input.
The public functions take the memory of large results from an output cache
(:func:`set_output_cache`), so that a loop does not make the operating system
fault in and zero a new output on every call.

Attention
---------
The formulas of ``numerics.attention`` for inputs narrower than float64,
computed in float64 and rounded once to the inputs' dtype (the log-sum-exp
to float32): scores as sums of exact products in order of the head
dimension, the scale, the soft cap and the additive mask, the keys a row
does not attend selected out; per block of 128 keys the block's state (its
maximum, the sum of exponentials without the first argmax term, the
weighted values; ``csrc/simd.h``'s float64 exp), merged into the running
state by the formula of ``numerics.attention.combine``; the sink as one more
state; then ``acc / (1 + s)`` and ``m + log1p(s)``.  The backward recomputes
the weights from the saved log-sum-exp.  With at least 16 key heads (batch
x Hkv) it runs one pass per key head, which makes its dq, dk and dv (five
products per score, dk and dv accumulated in the thread's scratch);
otherwise a dq pass per block of query rows, then a dk/dv pass per block of
keys that reads every query row of its group of heads in order (seven
products per score).  Both add every term in the same order, and the choice
depends on the shape only; no two threads write the same output, so results
are bitwise the same for every thread count.  Work items are fixed (64 query
rows, 64 keys or a key head), claimed by the pool's threads.  Memory: tiles
per thread (a few hundred KiB; the fused backward also the key head's dk
and dv in float64, S x (D + Dv)), never an ``L x S`` array;
masks are read through their strides, so a broadcast mask is never
expanded.  Masked keys, values and rows are never read: a product with an
operand that is not finite is a selection.

``SOFTMAXKIT_DISABLE_NATIVE=1`` (read at import) or the :func:`disabled`
context manager make every public function take the generic path.

Layout of this package
----------------------
``config`` (the switch, threads, output cache), ``numpy_adapter`` (which
NumPy arrays the kernels take, and the calls), ``into`` (the wrappers below),
``csrc/`` (the C sources).  Importing the package registers the kernels with
the front end's registry.

Wrappers for other front ends
-----------------------------
These take C-contiguous NumPy arrays (a CPU ``torch.Tensor`` converts without
a copy with ``.numpy()``; results come back with ``torch.from_numpy``), reduce
along ``axis`` (any axis; default the last), and write into preallocated outputs of the input's dtype
(float16, float32, float64 or bfloat16).  They check formats and sizes, not
values: validate arguments before calling them.

bfloat16 comes as ``ml_dtypes.bfloat16`` arrays (recognised by the dtype's
name; ml_dtypes is not imported here), or, as NumPy and torch cannot export
bfloat16 through the buffer protocol, as 2-byte integer arrays holding its
bits with the keyword ``bfloat16=True``: from a bfloat16 ``torch.Tensor``,
``t.view(torch.uint16).numpy()`` (no copy), for the inputs and the outputs
alike, e.g. ``softmax_into(x.view(torch.uint16).numpy(),
out.view(torch.uint16).numpy(), T, bfloat16=True)``.  Outputs must not overlap the inputs,
except that ``out`` may be ``x`` itself for ``softmax_into`` and
``log_softmax_into``.

* ``softmax_into(x, out, temperature=1.0, *, axis=-1, bfloat16=False)``:
  ``out`` has ``x``'s shape.
* ``log_softmax_into(x, out, temperature=1.0, *, axis=-1, bfloat16=False)``
* ``logsumexp_into(x, out, *, axis=-1, bfloat16=False)``: ``out`` has
  ``x``'s shape without ``axis``.
* ``cross_entropy_into(logits, targets, loss, grad=None, *, weight=None,
  ignore_index=-100, label_smoothing=0.0, z_loss=0.0, grad_divisor=1.0,
  axis=-1, bfloat16=False)``: the classes lie along ``axis``;
  ``targets`` holds int64 class indices of the logits' shape without
  ``axis``, or probabilities of the logits' shape and dtype (with
  ``bfloat16=True``, 2-byte integer targets are bfloat16 probabilities);
  ``weight`` is float64 of shape ``(C,)`` or None; ``loss`` is float64 of
  the logits' shape without ``axis`` and receives each row's loss (0 for ignored rows); ``grad`` receives the
  gradient of ``loss.sum() / grad_divisor``.  A class index outside
  ``[0, C)`` that is not ``ignore_index`` raises ``ValueError``.  The
  indices are read once, into a copy that is checked and then used, so a
  thread that changes ``targets`` meanwhile cannot make the kernel read out
  of bounds.
* ``softmax_vjp_into(probs, cotangent, out, *, axis=-1, bfloat16=False)``
* ``log_softmax_vjp_into(log_probs, cotangent, out, *, axis=-1, bfloat16=False)``
* ``attention_forward_into(query, key, value, out, lse, *, mask=None,
  causal=None, scale, softcap=None, sinks=None, bfloat16=False)``:
  query (..., Hq, L, D), key (..., Hkv, S, D), value (..., Hkv, S, Dv)
  C-contiguous float32 or bfloat16 of one dtype; ``out`` (..., Hq, L, Dv)
  in that dtype, ``lse`` (..., Hq, L) float32; ``mask`` bool or float32/64
  broadcastable to (..., Hq, L, S); ``causal`` None, ``"top_left"`` or
  ``"bottom_right"``.
* ``attention_backward_into(query, key, value, out, lse, dout, dlse, dq, dk,
  dv, *, mask=None, causal=None, scale, softcap=None, sinks=None,
  dsinks=None, dmask=None, bfloat16=False)``: the gradients, from the
  forward's ``out`` and ``lse`` and the cotangents (``dlse`` float32 or
  None); ``dsinks`` (Hq,) float64 with sinks; ``dmask`` (..., Hq, L, S)
  float64 for a float mask's gradient.
"""

from softmaxkit.frontend import registry
from softmaxkit.kernels import into, numpy_adapter
from softmaxkit.kernels.config import (
    _kernels,
    active,
    available,
    disabled,
    get_num_threads,
    get_output_cache,
    isa,
    set_num_threads,
    set_output_cache,
)
from softmaxkit.kernels.into import (
    attention_backward_into,
    attention_forward_into,
    cross_entropy_into,
    log_softmax_into,
    log_softmax_vjp_into,
    logsumexp_into,
    softmax_into,
    softmax_vjp_into,
)

__all__ = [
    "active",
    "attention_backward_into",
    "attention_forward_into",
    "available",
    "cross_entropy_into",
    "disabled",
    "get_num_threads",
    "get_output_cache",
    "isa",
    "log_softmax_into",
    "log_softmax_vjp_into",
    "logsumexp_into",
    "set_num_threads",
    "set_output_cache",
    "softmax_into",
    "softmax_vjp_into",
]

if _kernels is not None:
    registry.register_native(
        registry.Native(
            numpy=numpy_adapter,
            into=into,
            active=active,
            library=_kernels.__file__,
            describe=lambda: f"{isa()}, {get_num_threads()} threads",
        )
    )
