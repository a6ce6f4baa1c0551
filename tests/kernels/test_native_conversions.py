"""The 16-bit conversions of every instruction set (csrc/convert.h, half.c),
over every float16 and bfloat16 bit pattern and against NumPy and ml_dtypes:
widening is exact, narrowing rounds to nearest even, and a NaN stays a NaN
(its sign and high payload bits kept, the quiet bit set).  Each instruction
set must give exactly these bits, in its vector loops and in the scalar loop
after the last whole vector, so that 16-bit results do not depend on it.
"""

import numpy as np
import pytest

from softmaxkit import kernels as _native

from tests.reference import BFLOAT16

# (name, NumPy dtype, quiet bit, bits of +inf); the float16 NaN rule follows F16C
FORMATS = [("float16", np.float16, 0x0200, 0x7C00)] + ([("bfloat16", BFLOAT16, 0x0040, 0x7F80)] if BFLOAT16 is not None else [])
ALL_BITS = np.arange(1 << 16, dtype=np.uint16)


@pytest.fixture(params=FORMATS, ids=lambda f: f[0])
def fmt(request):
    return request.param


def _bf16(fmt):
    return fmt[0] == "bfloat16"


def widen(fmt, h):
    """The uint16 bit patterns h widened to float32 by the kernels."""
    out = np.empty(h.size, np.float32)
    _native._kernels.convert(h if _bf16(fmt) else h.view(np.float16), out, _bf16(fmt))
    return out


def narrow(fmt, f):
    """The float32 values f narrowed by the kernels, as uint16 bit patterns."""
    out = np.empty(f.size, np.uint16)
    _native._kernels.convert(f, out if _bf16(fmt) else out.view(np.float16), _bf16(fmt))
    return out


def nan_bits(fmt, h):
    """Which of the uint16 bit patterns h are NaN (without arithmetic on them, which would flag signalling ones)."""
    return (h & 0x7FFF) > fmt[3]


def expected_nan_narrowing(fmt, u):
    """The bit patterns of float32 NaNs (as uint32 u) narrowed: sign, quiet bit, high payload bits."""
    if _bf16(fmt):
        return ((u >> 16) | 0x40).astype(np.uint16)
    return (((u >> 16) & 0x8000) | 0x7E00 | ((u >> 13) & 0x3FF)).astype(np.uint16)


def check_narrowing(fmt, f):
    """narrow(f) against the NumPy / ml_dtypes rounding, whole and from an odd offset (a scalar tail)."""
    with np.errstate(over="ignore", invalid="ignore"):
        want = f.astype(fmt[1]).view(np.uint16)
    nan = np.isnan(f)
    want[nan] = expected_nan_narrowing(fmt, f.view(np.uint32)[nan])
    for start in (0, 3):
        got = narrow(fmt, f[start:])
        bad = np.flatnonzero(got != want[start:])
        assert bad.size == 0, [(hex(f[start:].view(np.uint32)[i]), hex(got[i]), hex(want[start + i])) for i in bad[:5]]


def test_widening_is_exact(isa, fmt):
    with np.errstate(invalid="ignore"):
        want = ALL_BITS.view(fmt[1]).astype(np.float32).view(np.uint32)
    nan = nan_bits(fmt, ALL_BITS)
    if _bf16(fmt):
        want[nan] = ALL_BITS[nan].astype(np.uint32) << 16  # the bits as they are
    else:
        h = ALL_BITS[nan].astype(np.uint32)
        want[nan] = ((h & 0x8000) << 16) | 0x7FC00000 | ((h & 0x3FF) << 13)
    for start in (0, 5):
        got = widen(fmt, ALL_BITS[start:]).view(np.uint32)
        bad = np.flatnonzero(got != want[start:])
        assert bad.size == 0, [(hex(ALL_BITS[start + i]), hex(got[i]), hex(want[start + i])) for i in bad[:5]]


def test_widening_then_narrowing_gives_every_pattern_back(isa, fmt):
    back = narrow(fmt, widen(fmt, ALL_BITS))
    nan = nan_bits(fmt, ALL_BITS)
    np.testing.assert_array_equal(back[~nan], ALL_BITS[~nan])
    np.testing.assert_array_equal(back[nan], ALL_BITS[nan] | fmt[2])


def test_narrowing_rounds_random_floats_to_nearest_even(isa, fmt):
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 1 << 32, 200_000, dtype=np.uint64).astype(np.uint32)  # every binade, NaN and inf
    near_one = rng.uniform(-70000.0, 70000.0, 100_000).astype(np.float32)  # around float16's range
    tiny = (rng.uniform(-1.0, 1.0, 100_000) * 2.0**-13).astype(np.float32)  # float16's subnormals
    check_narrowing(fmt, np.concatenate([bits.view(np.float32), near_one, tiny]))


def test_narrowing_rounds_ties_to_even_and_overflows(isa, fmt):
    # the midpoint of every two neighbouring non-negative values, exact in
    # float32, with the signs and the float32 values on either side of it;
    # past the largest value the neighbour is the power of two where the
    # range ends, and their midpoint is the threshold of overflow
    inf_bits = fmt[3]
    h = ALL_BITS[:inf_bits]
    lo = widen(fmt, h).astype(np.float64)
    hi = widen(fmt, h + np.uint16(1)).astype(np.float64)
    hi[-1] = 2.0**128 if _bf16(fmt) else 2.0**16
    mid = ((lo + hi) / 2).astype(np.float32)
    mid = np.concatenate([mid, -mid])
    big = np.float32(np.inf)
    check_narrowing(fmt, np.concatenate([mid, np.nextafter(mid, -big), np.nextafter(mid, big)]))
    assert narrow(fmt, np.array([np.finfo(np.float32).max, -np.inf], np.float32)).tolist() == [inf_bits, inf_bits | 0x8000]
