"""The kernels' configuration: the off switch, the thread count and the output cache.

The thread count and the cache limit are held by the C module alone and read
back through its getters; without the C module they are held here.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from typing import Iterator

from softmaxkit.frontend import validate

try:
    import softmaxkit.kernels._kernels as _kernels
except ImportError:  # built without a C compiler: the generic path serves
    _kernels = None



class _Settings:
    """Where the thread count and the cache limit live without the C module (with it, the C module holds them)."""

    def __init__(self) -> None:
        self._threads = 1
        self._cache = 0

    def set_num_threads(self, n: int) -> None:
        self._threads = n

    def get_num_threads(self) -> int:
        return self._threads

    def set_cache_limit(self, n: int) -> None:
        self._cache = n

    def cache_limit(self) -> int:
        return self._cache


_settings = _kernels if _kernels is not None else _Settings()
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
    >>> from softmaxkit import kernels
    >>> with kernels.disabled():
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


def _from_environment(var: str, low: int, high: int, unit: str, fallback: str) -> int | None:
    """The count in environment variable ``var``; None when unset or invalid (with a warning)."""
    text = os.environ.get(var, "").strip()
    if not text:
        return None
    try:
        return validate.count(int(text), var, low, high, unit)
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


_settings.set_num_threads(_default_threads())


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
    _settings.set_num_threads(validate.count(n, "n", 1, _MAX_THREADS))


def get_num_threads() -> int:
    """The number of threads the native kernels use (see :func:`set_num_threads`)."""
    return _settings.get_num_threads()


# --- output memory -------------------------------------------------------------

_MIB = 1 << 20


# The cache's limit is a byte count the C side holds as a Py_ssize_t.
_MAX_CACHE = sys.maxsize


def _default_cache() -> int:
    mib = _from_environment("SOFTMAXKIT_OUTPUT_CACHE_MB", 0, _MAX_CACHE // _MIB, " (MiB)", "using 512")
    return (512 if mib is None else mib) * _MIB


_settings.set_cache_limit(_default_cache())


def set_output_cache(max_bytes: int) -> None:
    """Set how much freed output memory the native kernels keep for reuse.

    The operating system hands out a large block of memory page by page,
    zeroing each page when it is first written: for a large result that
    costs about as much as computing the softmax.  So the memory of a large
    result (4 MiB or more) made by the native kernels is not returned to the
    system when the array is freed; it is kept, up to ``max_bytes`` in all
    (the oldest goes first), and the next result of the same size reuses it.
    A loop that computes a softmax of the same shape each step then never
    waits for the system.

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
    _settings.set_cache_limit(validate.count(max_bytes, "max_bytes", 0, _MAX_CACHE, " (bytes)"))


def get_output_cache() -> int:
    """The most freed output memory kept for reuse, in bytes (see :func:`set_output_cache`)."""
    return _settings.cache_limit()


