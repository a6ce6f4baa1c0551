"""Working precision and error-free transformations: the "widened or compensated" choice,
TwoSum/TwoProduct, exact division by a temperature, and compensated sums."""

from __future__ import annotations

import math
import struct
from typing import Any

import array_api_compat


def device(x: Any) -> Any:
    """The device of array ``x``: its ``device`` attribute (the array-API
    standard), or ``array_api_compat.device`` for arrays without one.

    The attribute comes first because ``torch.compile`` traces this call, and
    the library's type tests behind the fallback would each print a warning.
    """
    d = getattr(x, "device", None)
    return array_api_compat.device(x) if d is None or callable(d) else d

_INF = float("inf")


def working_dtype(xp: Any, dtype: Any, like: Any = None) -> tuple[Any, bool]:
    """``(work, widened)``: the dtype to compute in, and whether it is wider than ``dtype``.

    float64 is used for every floating input; when the input is narrower
    (``widened``), the working precision has room to spare and the
    compensations below are skipped.  Where float64 is not available (JAX without x64, or the device
    of ``like``, an array where the work will run, lacks it) the work is
    done in float32 with the compensations for float32 input, and plainly
    (float32 being wider) for float16 and bfloat16.
    """
    if dtype == xp.float64:
        return xp.float64, False
    if _has_float64(xp, like):
        return xp.float64, True
    return xp.float32, dtype != xp.float32


def _has_float64(xp: Any, like: Any) -> bool:
    if xp.__name__.startswith("jax"):
        import jax

        return bool(jax.config.read("jax_enable_x64"))
    if like is None or array_api_compat.is_numpy_namespace(xp):
        return True
    # Array-API devices list their dtypes (some GPUs and test devices have no float64).
    info = getattr(xp, "__array_namespace_info__", None)
    if info is None:
        return True
    return "float64" in info().dtypes(device=device(like), kind="real floating")


# --- error-free transformations ---------------------------------------------


def two_diff(xp, x, a):
    """``hi + lo == x - a`` exactly (TwoSum of ``x`` and ``-a``)."""
    hi = x - a
    bb = hi - x
    lo = (x - (hi - bb)) - (a + bb)
    # x = -inf gives hi = -inf and a NaN remainder; the remainder of an
    # infinite difference is 0.
    return hi, xp.where(xp.isfinite(hi), lo, xp.zeros_like(lo))


def _split_factor(xp, dtype) -> float:
    return 134217729.0 if dtype == xp.float64 else 4097.0


def _split(xp, v):
    # Veltkamp splitting: v == high + low with each half fitting in half the
    # significand, so products of halves are exact.
    c = _split_factor(xp, v.dtype) * v
    high = c - (c - v)
    return high, v - high


def two_prod(xp, u, v):
    """``p + e == u * v`` exactly (Dekker's TwoProduct).

    Exact while ``factor * |u|`` and ``factor * |v|`` (the Veltkamp splits)
    stay finite and the partial products stay normal; see
    :func:`divide_pair` for how its callers keep them there.
    """
    p = u * v
    uh, ul = _split(xp, u)
    vh, vl = _split(xp, v)
    e = ((uh * vh - p) + uh * vl + ul * vh) + ul * vl
    return p, e


def _scale(v, k: int):
    """``v * 2**k`` in two exact steps: ``2**k`` alone may not be representable."""
    half = k // 2
    return (v * 2.0**half) * 2.0 ** (k - half)


def divide_pair(xp, hi, lo, temperature: float):
    """``(q, r)`` with ``q + r`` within a rounding of ``(hi + lo) / temperature``.

    ``q`` is the rounded quotient and ``r`` its remainder divided by the
    temperature, recovered with :func:`two_prod`.  The temperature is the
    caller's (float64) number even where the working dtype is narrower: its
    own rounding error is carried into ``r``.

    Dekker's product splits ``q`` and the temperature with Veltkamp's
    constant, which overflows (to NaN) beyond about ``max / factor``, and
    loses exactness where its partial products underflow.  So a temperature
    far from 1 is written ``m * 2**k`` with ``m`` in ``[0.5, 1)`` and ``hi``
    and ``lo`` are scaled by ``2**-k`` instead (exact), and the remainder is
    left out (0) where ``|q|`` is too large to split: there ``exp(q)`` is 0
    and ``q`` alone is within half an ULP of the quotient.
    """
    dtype = hi.dtype
    dev = device(hi)
    fi = xp.finfo(dtype)
    emax = math.frexp(float(fi.max))[1]
    m, k = math.frexp(temperature)
    if abs(k) <= emax // 4:
        m, k = temperature, 0
    else:
        hi, lo = _scale(hi, -k), _scale(lo, -k)
    # The rounding of m to the working dtype, done on the host: a device
    # round trip would stall an accelerator's queue.
    m_hi = m if dtype == xp.float64 else float(struct.unpack("f", struct.pack("f", m))[0])
    t_hi = xp.asarray(m_hi, dtype=dtype, device=dev)
    t_lo = m - m_hi
    q = hi / t_hi
    p, perr = two_prod(xp, q, t_hi)
    num = ((hi - p) - perr) + lo
    if t_lo:
        num = num - q * t_lo
    rem = num / t_hi
    splittable = xp.abs(q) <= float(fi.max) / (2.0 * _split_factor(xp, dtype))
    return q, xp.where(splittable, rem, xp.zeros_like(rem))


def compensated_sum_pair(xp, v, widened: bool):
    """Sum over the last axis as ``hi + lo`` (axis kept), ``lo`` a correction.

    With ``widened`` the inputs carry spare precision and a plain (pairwise)
    sum suffices (``lo`` is None).  Otherwise a halving tree of TwoSums is
    summed exactly and its rounding errors are collected in ``lo``: ``hi + lo``
    is within about one rounding of the exact sum for any width, and
    ``hi + lo`` itself carries nearly twice the working precision.
    """
    if widened or v.shape[-1] <= 1:
        return xp.sum(v, axis=-1, keepdims=True), None
    hi = v
    err = xp.zeros_like(v[..., :1])
    while hi.shape[-1] > 1:
        n = hi.shape[-1]
        h = n // 2
        u, w = hi[..., :h], hi[..., h : 2 * h]
        t = u + w
        bb = t - u
        e = (u - (t - bb)) + (w - bb)
        # inf + x gives a NaN remainder; an infinite sum has nothing to add.
        e = xp.where(xp.isfinite(t), e, xp.zeros_like(e))
        err = err + xp.sum(e, axis=-1, keepdims=True)
        hi = t if n == 2 * h else xp.concat([t, hi[..., 2 * h :]], axis=-1)
    return hi, err


def compensated_sum(xp, v, widened: bool):
    """Sum over the last axis, keeping the axis (see ``compensated_sum_pair``)."""
    hi, lo = compensated_sum_pair(xp, v, widened)
    return hi if lo is None else hi + lo


