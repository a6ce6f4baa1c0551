"""Native CPU kernels: the softmax family, cross-entropy and the VJPs in C.

The public NumPy functions call these automatically for float16, float32
and float64 arrays reduced along their last, C-contiguous axis (no ``where``,
no ``b``); every other case, and builds without the extension, take the
generic path.  The kernels implement the formulas of ``softmaxkit.numerics``
exactly as stated there.

Kernels
-------
Along the last axis of a C-contiguous array, for each row:

* softmax and log_softmax (with a temperature), logsumexp;
* cross-entropy loss per row and its gradient, fused: class indices with
  ``ignore_index``, class weights, label smoothing, z-loss, or probability
  targets; the reductions are applied here, in Python, to the per-row losses
  (the gradient's "mean" divisor is applied in the kernel);
* the softmax VJP (from probabilities) and the log_softmax VJP (from
  log-probabilities).

Numerics
--------
float32 and float16 are computed in float64 and rounded once (float16 goes
through an exact float32 copy and is rounded float64 -> float32 -> float16,
which can differ from a single rounding by one float16 ULP in rare halfway
cases).  float64 uses the exact shift ``x - max = hi + lo`` (TwoSum; with a
temperature, the quotient and the exact remainder of the division),
``exp(hi + lo)`` and compensated (TwoSum) sums; a shift below -746 gives
exactly 0, whatever its low part.  The vectorised exp is written here (see ``sk_simd.h``): relative
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
Each row is read three times (maximum, exponentials, output), but only the
first read comes from main memory: while a thread computes one row's
exponentials it prefetches the next row it will run (rows are claimed one
batch ahead for that).  An output of 32 MiB or more is written with
non-temporal stores where the instruction set has them (AVX-512, float32
family): it could not stay in the cache anyway, and this saves reading every
line of it before writing.  Smaller outputs are prefetched like the input.
The public functions take the memory of large results from an output cache
(:func:`set_output_cache`), so that a loop does not make the operating system
fault in and zero a new output on every call.

``SOFTMAXKIT_DISABLE_NATIVE=1`` (read at import) or the :func:`disabled`
context manager make every public function take the generic path.

Wrappers for other front ends
-----------------------------
These take C-contiguous NumPy arrays (a CPU ``torch.Tensor`` converts without
a copy with ``.numpy()``; results come back with ``torch.from_numpy``), reduce
along the last axis, and write into preallocated outputs of the input's dtype
(float16, float32 or float64).  They check formats and sizes, not values:
validate arguments before calling them.  Outputs must not overlap the inputs,
except that ``out`` may be ``x`` itself for ``softmax_into`` and
``log_softmax_into``.

* ``softmax_into(x, out, temperature=1.0)``
* ``log_softmax_into(x, out, temperature=1.0)``
* ``logsumexp_into(x, out)``: ``out`` has ``x.shape[:-1]``.
* ``cross_entropy_into(logits, targets, loss, grad=None, *, weight=None,
  ignore_index=-100, label_smoothing=0.0, z_loss=0.0, grad_divisor=1.0)``:
  ``targets`` holds int64 class indices of shape ``logits.shape[:-1]``, or
  probabilities of the logits' shape and dtype; ``weight`` is float64 of
  shape ``(C,)`` or None; ``loss`` is float64 of shape ``logits.shape[:-1]``
  and receives each row's loss (0 for ignored rows); ``grad`` receives the
  gradient of ``loss.sum() / grad_divisor``.  A class index outside
  ``[0, C)`` that is not ``ignore_index`` raises ``ValueError``.  The
  indices are read once, into a copy that is checked and then used, so a
  thread that changes ``targets`` meanwhile cannot make the kernel read out
  of bounds.
* ``softmax_vjp_into(probs, cotangent, out)``
* ``log_softmax_vjp_into(log_probs, cotangent, out)``
"""

from __future__ import annotations

import contextlib
import numbers
import os
import sys
import warnings
from typing import Any, Iterator

import numpy as np

try:
    from softmaxkit.kernels import _kernels
except ImportError:  # built without a C compiler: the generic path serves
    _kernels = None

_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_ENV_OFF = os.environ.get("SOFTMAXKIT_DISABLE_NATIVE", "").strip() not in ("", "0")
_off = 1 if (_ENV_OFF or _kernels is None) else 0


def available() -> bool:
    """Whether the compiled kernels were built and loaded."""
    return _kernels is not None


def active() -> bool:
    """Whether public functions use the kernels now (available, not disabled)."""
    return _off == 0


def isa() -> str | None:
    """The instruction set in use: 'avx512', 'avx2', 'baseline', or None."""
    return _kernels.isa() if _kernels is not None else None


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Make public functions take the generic path inside the block.

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> from softmaxkit import kernels as _native
    >>> with _native.disabled():
    ...     p = smk.softmax(np.zeros(2))
    >>> p
    array([0.5, 0.5])
    """
    global _off
    _off += 1
    try:
        yield
    finally:
        _off -= 1


# --- threads -------------------------------------------------------------------


def _check_count(value: Any, name: str, low: int, high: int, unit: str = "") -> int:
    """``value`` as an int in [``low``, ``high``]; errors name ``name``, the range and the unit."""
    allowed = f"an int in [{low}, {high}]{unit}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {allowed}; got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be {allowed}; got {value}")
    return int(value)


def _from_environment(var: str, low: int, high: int, unit: str, fallback: str) -> int | None:
    """The count in environment variable ``var``; None when unset or invalid (with a warning)."""
    text = os.environ.get(var, "").strip()
    if not text:
        return None
    try:
        return _check_count(int(text), var, low, high, unit)
    except ValueError:
        warnings.warn(
            f"{var} must be an int in [{low}, {high}]{unit}; got {text!r}; {fallback}", RuntimeWarning, stacklevel=3
        )
        return None


# The kernels refuse more threads (each is a pooled OS thread); the same
# bound holds in builds without them.
_MAX_THREADS = _kernels.MAX_THREADS if _kernels is not None else 4096


def _default_threads() -> int:
    n = _from_environment("SOFTMAXKIT_NUM_THREADS", 1, _MAX_THREADS, "", "using the number of CPUs")
    if n is not None:
        return n
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return min(cpus, _MAX_THREADS)


_threads = _default_threads()
if _kernels is not None:
    _kernels.set_num_threads(_threads)


def set_num_threads(n: int) -> None:
    """Set the number of threads the native kernels use.

    Parameters
    ----------
    n : int in [1, 4096]
        Threads per call.  Small inputs use fewer (about 32768 elements per
        thread at least); results do not depend on it.

    Raises
    ------
    TypeError
        ``n`` is not an int.
    ValueError
        ``n`` is outside [1, 4096]; the setting is then unchanged.

    Examples
    --------
    >>> import softmaxkit as smk
    >>> before = smk.get_num_threads()
    >>> smk.set_num_threads(1)
    >>> smk.get_num_threads()
    1
    >>> smk.set_num_threads(before)
    """
    global _threads
    n = _check_count(n, "n", 1, _MAX_THREADS)
    if _kernels is not None:
        _kernels.set_num_threads(n)
    _threads = n


def get_num_threads() -> int:
    """The number of threads the native kernels use (see :func:`set_num_threads`)."""
    return _kernels.get_num_threads() if _kernels is not None else _threads


# --- output memory -------------------------------------------------------------

_MIB = 1 << 20
# Outputs smaller than this come from NumPy: the C allocator's heap keeps and
# reuses memory of that size by itself.
_CACHE_MIN = 4 * _MIB
_PAGE = 4096


# The cache's limit is a byte count the C side holds as a Py_ssize_t.
_MAX_CACHE = sys.maxsize


def _default_cache() -> int:
    mib = _from_environment("SOFTMAXKIT_OUTPUT_CACHE_MB", 0, _MAX_CACHE // _MIB, " (MiB)", "using 512")
    return (512 if mib is None else mib) * _MIB


_cache_limit = _default_cache()
if _kernels is not None:
    _kernels.set_cache_limit(_cache_limit)


def set_output_cache(max_bytes: int) -> None:
    """Set how much freed output memory the native kernels keep for reuse.

    The operating system hands out a large block of memory page by page,
    zeroing each page when it is first written: for a 256 MiB result that
    costs about as much as computing the softmax.  So the memory of a large
    result (4 MiB or more) made by the native kernels is not returned to the
    system when the array is freed; it is kept, up to ``max_bytes`` in all
    (the oldest goes first), and the next result of the same size reuses it.
    A loop that computes a softmax of the same shape each step then never
    waits for the system.  (A block holds a page more than its result, which
    starts half a page from the input modulo 4096, where no load of the input
    waits on a store of the output.)

    Parameters
    ----------
    max_bytes : int in [0, sys.maxsize]
        The most the cache keeps.  0 turns it off and frees what it holds.
        The default is 512 MiB, or ``SOFTMAXKIT_OUTPUT_CACHE_MB`` (in MiB)
        when that is set.

    Raises
    ------
    TypeError
        ``max_bytes`` is not an int.
    ValueError
        ``max_bytes`` is outside [0, sys.maxsize]; the setting is then
        unchanged.

    Examples
    --------
    >>> import softmaxkit as smk
    >>> before = smk.get_output_cache()
    >>> smk.set_output_cache(0)
    >>> smk.get_output_cache()
    0
    >>> smk.set_output_cache(before)
    """
    global _cache_limit
    limit = _check_count(max_bytes, "max_bytes", 0, _MAX_CACHE, " (bytes)")
    if _kernels is not None:
        _kernels.set_cache_limit(limit)
    _cache_limit = limit


def get_output_cache() -> int:
    """The most freed output memory kept for reuse, in bytes (see :func:`set_output_cache`)."""
    return _kernels.cache_limit() if _kernels is not None else _cache_limit


def _empty_like(x: np.ndarray) -> np.ndarray:
    """An uninitialised C-contiguous array of ``x``'s shape and dtype, for a kernel's output.

    A cached block holds a page more than the output, which starts half a
    page from ``x`` modulo 4096 (64-byte aligned): a load at the same address
    modulo 4096 as a pending store waits for it, and an output a few cache
    lines ahead of its input made the streamed log_softmax 30 % slower.
    """
    if x.nbytes < _CACHE_MIN or x.nbytes + _PAGE > _cache_limit:
        return np.empty(x.shape, x.dtype)
    block = _kernels.block(x.nbytes + _PAGE)
    start = np.frombuffer(block, np.uint8, count=1).ctypes.data
    offset = (x.ctypes.data + _PAGE // 2 - start) % _PAGE // 64 * 64
    return np.frombuffer(block, dtype=x.dtype, count=x.size, offset=offset).reshape(x.shape)


# --- eligibility ---------------------------------------------------------------


def eligible(x: Any, axis: Any) -> bool:
    """Whether ``x`` reduced along ``axis`` can go to the kernels.

    True for a NumPy float16/32/64 array (native byte order, aligned) whose
    reduced axis is its last and which is C-contiguous, while the kernels are
    active.  Anything else, including arguments the generic path rejects,
    gives False.
    """
    return (
        _off == 0
        and type(x) is np.ndarray
        and type(axis) is int
        and x.ndim > 0
        and (axis == -1 or axis == x.ndim - 1)
        and x.dtype in _FLOATS
        and x.flags.c_contiguous
        and x.flags.aligned
    )


def eligible_pair(x: Any, y: Any, axis: Any) -> bool:
    """:func:`eligible` for ``x``, and ``y`` an array of the same shape and dtype."""
    return (
        eligible(x, axis)
        and type(y) is np.ndarray
        and y.dtype == x.dtype
        and y.shape == x.shape
        and y.flags.c_contiguous
        and y.flags.aligned
    )


# --- the core's entry points (arguments already validated) --------------------


def softmax(x: np.ndarray, temperature: float) -> np.ndarray:
    out = _empty_like(x)
    _kernels.softmax(x, out, temperature, False)
    return out


def log_softmax(x: np.ndarray, temperature: float) -> np.ndarray:
    out = _empty_like(x)
    _kernels.softmax(x, out, temperature, True)
    return out


def logsumexp(x: np.ndarray, keepdims: bool, return_sign: bool) -> Any:
    out = np.empty(x.shape[:-1], dtype=x.dtype)
    _kernels.logsumexp(x, out)
    if keepdims:
        out = out.reshape(x.shape[:-1] + (1,))
    if not return_sign:
        return out
    # a fully masked row (or empty axis) is the only way to get -inf
    sign = np.where(np.isnan(out), out, np.where(out == -np.inf, 0, 1).astype(x.dtype))
    return out, sign


def softmax_vjp(probs: np.ndarray, cotangent: np.ndarray) -> np.ndarray:
    out = _empty_like(probs)
    _kernels.vjp(probs, cotangent, out, False)
    return out


def log_softmax_vjp(log_probs: np.ndarray, cotangent: np.ndarray) -> np.ndarray:
    out = _empty_like(log_probs)
    _kernels.vjp(log_probs, cotangent, out, True)
    return out


def _class_indices(targets: np.ndarray, shape: tuple) -> np.ndarray | None:
    """``targets`` as C-contiguous int64, or None where the generic path must run."""
    if targets.dtype.kind not in "iu" or targets.shape != shape:
        return None
    if targets.dtype == np.uint64 and targets.size and targets.max() >= 2**63:
        return None
    return np.ascontiguousarray(targets, dtype=np.int64)


def _reduce_rows(loss_rows: np.ndarray, denominator: float, reduction: str, dtype: np.dtype) -> Any:
    """``_losses._reduce`` for per-row losses in float64, and the cast to ``dtype``."""
    if reduction == "none":
        return loss_rows.astype(dtype)
    flat = loss_rows.reshape(-1)
    if dtype == np.float64:
        import array_api_compat.numpy as xp

        from softmaxkit.numerics import compensated_sum

        total = compensated_sum(xp, flat.reshape(1, -1), False)[0, 0]
    else:
        total = np.sum(flat)
    if reduction == "sum":
        return total.astype(dtype)
    # an all-ignored (or all-zero-weight) batch has mean 0
    return np.asarray(total / denominator if denominator != 0 else 0.0, dtype=np.float64).astype(dtype)


def _weights(weight: Any, n: int) -> np.ndarray | None | bool:
    """float64 class weights, None for none, False where the generic path must run."""
    if weight is None:
        return None
    if type(weight) is not np.ndarray or weight.shape != (n,) or weight.dtype.kind not in "fiu":
        return False
    w = np.ascontiguousarray(weight, dtype=np.float64)
    if not bool(np.all(np.isfinite(w))):
        return False
    return w


def cross_entropy(
    logits: Any,
    targets: Any,
    axis: Any,
    weight: Any,
    ignore_index: int,
    eps: float,
    reduction: str,
    z_loss: float,
    return_grad: bool,
) -> Any:
    """The native cross-entropy, or None where the generic path must run.

    Scalar options are already validated; array arguments are checked here
    and anything unusual (including invalid values, so that the generic path
    raises its own error) returns None.
    """
    if not eligible(logits, axis) or type(targets) is not np.ndarray:
        return None
    n = logits.shape[-1]
    rows_shape = logits.shape[:-1]
    if n == 0:
        return None
    w = _weights(weight, n)
    if w is False:
        return None
    if targets.dtype.kind in "iu":
        t = _class_indices(targets, rows_shape)
        if t is None or not -(2**63) <= ignore_index < 2**63:
            return None
        probs = None
    elif targets.dtype.kind == "f":
        if not eligible_pair(logits, targets, axis):
            return None
        if targets.size and np.fmin.reduce(targets, axis=None) < 0:
            return None
        t, probs = None, targets
    else:
        return None
    divisor = -1.0 if (reduction == "mean" and return_grad) else 1.0
    loss_rows = np.empty(rows_shape, dtype=np.float64)
    grad = _empty_like(logits) if return_grad else None
    try:
        denominator = _kernels.cross_entropy(logits, t, probs, w, loss_rows, grad, ignore_index, eps, z_loss, divisor)
    except ValueError:
        # a class index out of range: the generic path raises its own error
        return None
    if grad is not None and reduction == "mean" and denominator == 0:
        # an all-ignored (or all-zero-weight) batch: mean 0, gradient 0
        grad.fill(0)
    loss = _reduce_rows(loss_rows, denominator, reduction, logits.dtype)
    return (loss, grad) if return_grad else loss


# --- wrappers for other front ends ---------------------------------------------


def _require() -> Any:
    if _kernels is None:
        raise RuntimeError("the native kernels are not built in this installation of softmaxkit")
    return _kernels


def _no_overlap(out: np.ndarray, name: str, *inputs: tuple[str, Any]) -> None:
    for input_name, a in inputs:
        if a is not None and np.may_share_memory(out, a):
            raise ValueError(f"{name} must not overlap {input_name}")


def softmax_into(x: np.ndarray, out: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``out[...] = softmax(x, axis=-1, temperature=temperature)``; returns ``out``."""
    if out is not x:
        _no_overlap(out, "out", ("x", x))
    _require().softmax(x, out, float(temperature), False)
    return out


def log_softmax_into(x: np.ndarray, out: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``out[...] = log_softmax(x, axis=-1, temperature=temperature)``; returns ``out``."""
    if out is not x:
        _no_overlap(out, "out", ("x", x))
    _require().softmax(x, out, float(temperature), True)
    return out


def logsumexp_into(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[...] = logsumexp(x, axis=-1)``; ``out`` has ``x.shape[:-1]``."""
    _no_overlap(out, "out", ("x", x))
    _require().logsumexp(x, out)
    return out


def cross_entropy_into(
    logits: np.ndarray,
    targets: np.ndarray,
    loss: np.ndarray,
    grad: np.ndarray | None = None,
    *,
    weight: np.ndarray | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    grad_divisor: float = 1.0,
) -> None:
    """Per-row cross-entropy into ``loss`` and, optionally, its gradient into ``grad``.

    See the module docstring for the shapes; ``grad`` is the gradient of
    ``loss.sum() / grad_divisor`` with respect to ``logits``.
    """
    k = _require()
    index = targets.dtype.kind in "iu"
    if grad_divisor <= 0:
        raise ValueError(f"grad_divisor must be > 0; got {grad_divisor!r}")
    _no_overlap(loss, "loss", ("logits", logits), ("targets", targets), ("weight", weight))
    if grad is not None:
        _no_overlap(grad, "grad", ("logits", logits), ("targets", targets), ("weight", weight), ("loss", loss))
    k.cross_entropy(
        logits,
        targets if index else None,
        None if index else targets,
        weight,
        loss,
        grad,
        int(ignore_index),
        float(label_smoothing),
        float(z_loss),
        float(grad_divisor),
    )


def softmax_vjp_into(probs: np.ndarray, cotangent: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[...] = probs * (cotangent - sum(probs * cotangent, -1))``; returns ``out``."""
    _no_overlap(out, "out", ("probs", probs), ("cotangent", cotangent))
    _require().vjp(probs, cotangent, out, False)
    return out


def log_softmax_vjp_into(log_probs: np.ndarray, cotangent: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[...] = cotangent - exp(log_probs) * sum(cotangent, -1)``; returns ``out``."""
    _no_overlap(out, "out", ("log_probs", log_probs), ("cotangent", cotangent))
    _require().vjp(log_probs, cotangent, out, True)
    return out
