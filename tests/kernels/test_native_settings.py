"""The thread and output-cache settings: their ranges, what a refused value
leaves behind, and the environment variables read at import."""

import os
import subprocess
import sys

import numpy as np
import pytest

import softmaxkit as smk
from softmaxkit import kernels as _native

pytestmark = pytest.mark.skipif(not _native.available(), reason="native kernels not built")


@pytest.fixture
def restore():
    threads, cache = smk.get_num_threads(), smk.get_output_cache()
    yield
    smk.set_num_threads(threads)
    smk.set_output_cache(cache)


# Regression: set_num_threads(2**63) raised OverflowError after storing the
# value in Python, so get_num_threads() reported 2**63 while the kernels kept
# their old count; 100000 was silently capped at 4096 in C while Python
# reported 100000.
@pytest.mark.parametrize("n", [2**63, 2**100, 4097, 100_000, np.int64(2**62), 0, -5])
def test_thread_count_out_of_range_is_refused_and_changes_nothing(restore, n):
    smk.set_num_threads(3)
    with pytest.raises(ValueError, match=rf"n must be an int in \[1, 4096\]; got {n}$"):
        smk.set_num_threads(n)
    assert smk.get_num_threads() == 3
    assert _native._kernels.get_num_threads() == 3


def test_thread_count_range_edges(restore):
    for n in (1, np.int32(2), 4096):
        smk.set_num_threads(n)
        assert smk.get_num_threads() == n == _native._kernels.get_num_threads()
        assert type(smk.get_num_threads()) is int


# Regression: set_output_cache(2**63) raised OverflowError after storing the
# value in Python, so get_output_cache() reported 2**63 while the C limit
# kept its old value.
@pytest.mark.parametrize("max_bytes", [2**63, 2**200, -1])
def test_output_cache_out_of_range_is_refused_and_changes_nothing(restore, max_bytes):
    smk.set_output_cache(1 << 20)
    with pytest.raises(ValueError, match=rf"max_bytes must be an int in \[0, {sys.maxsize}\] \(bytes\); got {max_bytes}$"):
        smk.set_output_cache(max_bytes)
    assert smk.get_output_cache() == 1 << 20 == _native._kernels.cache_limit()


def test_output_cache_range_edges(restore):
    for limit in (0, sys.maxsize, 1 << 20):
        smk.set_output_cache(limit)
        assert smk.get_output_cache() == limit == _native._kernels.cache_limit()


def test_kernels_refuse_out_of_range_settings_themselves():
    # the extension's own check, for callers that bypass softmaxkit.kernels
    with pytest.raises(ValueError, match=r"n must be an int in \[1, 4096\]; got 4097"):
        _native._kernels.set_num_threads(4097)
    with pytest.raises(ValueError, match=r"max_bytes must be an int in \[0, \d+\]; got -1"):
        _native._kernels.set_cache_limit(-1)


_REPORT = (
    "import os, warnings\n"
    "warnings.simplefilter('always')\n"
    "import softmaxkit as smk\n"
    "print(smk.get_num_threads(), smk.get_output_cache(), min(len(os.sched_getaffinity(0)), 4096))\n"
)


def _import_with(var, value):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTMAXKIT_")}
    env[var] = value
    done = subprocess.run([sys.executable, "-c", _REPORT], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    threads, cache, cpus = (int(v) for v in done.stdout.split())
    return threads, cache, cpus, done.stderr


# Regression: SOFTMAXKIT_NUM_THREADS=99999999999999999999 or
# SOFTMAXKIT_OUTPUT_CACHE_MB=8796093022208 (2**63 bytes) made
# `import softmaxkit` fail with OverflowError.
BAD_VALUES = ["99999999999999999999", "8796093022208", "4097", "-1", "0x10", "abc", "1e3", "9" * 5000]


@pytest.mark.parametrize("value", BAD_VALUES)
def test_bad_thread_count_in_environment_warns_and_uses_the_default(value):
    threads, cache, cpus, err = _import_with("SOFTMAXKIT_NUM_THREADS", value)
    assert threads == cpus
    assert cache == 512 << 20
    assert "SOFTMAXKIT_NUM_THREADS must be an int in [1, 4096]" in err
    assert "using the number of CPUs" in err


@pytest.mark.parametrize("value", [v for v in BAD_VALUES if v != "4097"])
def test_bad_output_cache_in_environment_warns_and_uses_the_default(value):
    threads, cache, cpus, err = _import_with("SOFTMAXKIT_OUTPUT_CACHE_MB", value)
    assert cache == 512 << 20
    assert threads == cpus
    assert f"SOFTMAXKIT_OUTPUT_CACHE_MB must be an int in [0, {sys.maxsize >> 20}] (MiB)" in err
    assert "using 512" in err


def test_good_values_in_environment_are_used():
    threads, _, _, err = _import_with("SOFTMAXKIT_NUM_THREADS", " 4096 ")
    assert threads == 4096 and "Warning" not in err
    _, cache, _, err = _import_with("SOFTMAXKIT_OUTPUT_CACHE_MB", str(sys.maxsize >> 20))
    assert cache == (sys.maxsize >> 20) << 20 and "Warning" not in err
