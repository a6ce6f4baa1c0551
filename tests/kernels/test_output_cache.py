"""The output cache: freed memory of large native results is reused.

What must hold: a reused block gives bitwise the same results as fresh
memory (every element is written, whatever the block held before), the cache
never keeps more than its limit and gives back the oldest block first, and
its settings are checked like the thread settings.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import softmaxkit as smk
from softmaxkit import kernels as _native

SHAPE = (512, 2048)  # 4 MiB in float32: the smallest output the cache serves
BLOCK = (4 << 20) + 4096  # a block holds a page more than its output


@pytest.fixture
def cache(native):
    before = smk.get_output_cache()
    smk.set_output_cache(0)
    smk.set_output_cache(64 << 20)
    yield _native._kernels
    smk.set_output_cache(before)


def _logits(seed=0):
    return (np.random.default_rng(seed).standard_normal(SHAPE) * 4).astype(np.float32)


def test_freed_output_is_reused(cache):
    x = _logits()
    smk.set_output_cache(0)
    fresh = smk.log_softmax(x)
    smk.set_output_cache(64 << 20)
    p = smk.softmax(x)
    address = p.ctypes.data
    assert not p.flags.owndata and p.flags.writeable and p.flags.c_contiguous
    del p
    assert cache.cache_bytes() == BLOCK
    q = smk.log_softmax(x)
    assert q.ctypes.data == address
    assert cache.cache_bytes() == 0
    np.testing.assert_array_equal(q, fresh)


@pytest.mark.parametrize(
    "call",
    [
        lambda x, t: smk.softmax(x),
        lambda x, t: smk.log_softmax(x, temperature=0.5),
        lambda x, t: smk.cross_entropy(x, t, label_smoothing=0.1, return_grad=True)[1],
        lambda x, t: smk.softmax_vjp(smk.softmax(x), x),
        lambda x, t: smk.log_softmax_vjp(smk.log_softmax(x), x),
    ],
    ids=["softmax", "log_softmax", "cross_entropy_grad", "softmax_vjp", "log_softmax_vjp"],
)
def test_reused_memory_gives_the_same_bits(cache, call):
    x = _logits(1)
    x[3] = -np.inf  # a fully masked row is written with its limit, too
    t = np.random.default_rng(2).integers(0, SHAPE[1], SHAPE[0])
    smk.set_output_cache(0)
    fresh = call(x, t)
    smk.set_output_cache(64 << 20)
    # fill the cache with blocks that hold something else
    junk = [np.frombuffer(cache.block(BLOCK), np.float32) for _ in range(3)]
    for j in junk:
        j.fill(np.nan)
    del junk, j
    assert cache.cache_bytes() == 3 * BLOCK
    again = call(x, t)
    assert not again.flags.owndata
    np.testing.assert_array_equal(again, fresh)


def test_limit_gives_back_the_oldest_first(cache):
    smk.set_output_cache(2 * BLOCK)
    blocks = [cache.block(BLOCK) for _ in range(3)]
    addresses = [np.frombuffer(b, np.uint8).ctypes.data for b in blocks]
    while blocks:
        del blocks[0]
    assert cache.cache_bytes() == 2 * BLOCK
    # the newest two are kept; the next output takes the newest
    p = smk.softmax(_logits())
    assert 0 <= p.ctypes.data - addresses[2] < 4096
    q = smk.softmax(_logits())
    assert 0 <= q.ctypes.data - addresses[1] < 4096
    smk.set_output_cache(0)
    assert cache.cache_bytes() == 0


def test_output_starts_half_a_page_from_the_input(cache):
    """Modulo 4096, so that no load of the input waits on a store of the
    output at the same address modulo 4096 (see empty_like)."""
    for shift in (0, 3, 16, 1000):
        buf = np.zeros(SHAPE[0] * SHAPE[1] + 1024, np.float32)
        x = buf[shift : shift + SHAPE[0] * SHAPE[1]].reshape(SHAPE)
        p = smk.log_softmax(x)
        assert p.ctypes.data % 64 == 0
        assert 2048 - 64 < (p.ctypes.data - x.ctypes.data) % 4096 <= 2048
        del p


def test_outputs_the_cache_does_not_serve_come_from_numpy(cache):
    small = np.zeros((4, 8), np.float32)
    assert smk.softmax(small).flags.owndata
    smk.set_output_cache(BLOCK - 1)
    assert smk.softmax(_logits()).flags.owndata
    assert cache.cache_bytes() == 0


def test_output_cache_settings():
    before = smk.get_output_cache()
    try:
        smk.set_output_cache(1 << 20)
        assert smk.get_output_cache() == 1 << 20
        with pytest.raises(ValueError, match=r"max_bytes must be an int in \[0, \d+\] \(bytes\); got -1"):
            smk.set_output_cache(-1)
        with pytest.raises(TypeError, match="max_bytes must be an int"):
            smk.set_output_cache(1.5)
        with pytest.raises(TypeError, match="max_bytes must be an int"):
            smk.set_output_cache(True)
    finally:
        smk.set_output_cache(before)
    assert "set_output_cache" in smk.__all__ and "get_output_cache" in smk.__all__


@pytest.mark.parametrize(("value", "expected", "warns"), [("0", 0, False), ("64", 64 << 20, False), ("lots", 512 << 20, True)])
def test_output_cache_environment_variable(value, expected, warns):
    env = dict(os.environ, SOFTMAXKIT_OUTPUT_CACHE_MB=value)
    code = "import warnings, softmaxkit as smk; warnings.simplefilter('always'); print(smk.get_output_cache())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == expected
    assert ("SOFTMAXKIT_OUTPUT_CACHE_MB must be an int in [0, " in done.stderr and "got 'lots'" in done.stderr) == warns
