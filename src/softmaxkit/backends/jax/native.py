"""The native kernels inside ``jax.jit`` on CPU: XLA FFI calls into ``softmaxkit.kernels``.

``ffi.cc`` (beside this file) holds XLA FFI handlers that call the C
kernels.  It is compiled on first use, once per machine, against the headers
of the installed jaxlib (``jax.ffi.include_dir()``), with the C++ compiler
named by ``$CXX`` (default ``c++``), into a cache folder
(``$SOFTMAXKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/softmaxkit``, else
``~/.cache/softmaxkit``), under a name that changes with the source, the
jaxlib version and the Python build, so an upgrade rebuilds it.  Concurrent
processes wait on a file lock and build it once.

The handlers receive the addresses of the kernels' entry points
(``kernels/csrc/api.h``) from the loaded ``softmaxkit.kernels`` extension, so
the two share one thread pool, thread count and instruction set.

Where the handlers cannot be had (no C++ compiler, no native kernels, a
build error), where the kernels are switched off (``SOFTMAXKIT_DISABLE_NATIVE``,
``softmaxkit.kernels.disabled()``, both read when a function is traced), or
where the default JAX backend is not the CPU, the JAX functions run their
``jax.numpy`` formulas instead, with the results the module docstring of
``softmaxkit.jax`` states.  :func:`path` says which path is in use, and why.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path
from typing import Any

import jax
import numpy as np

from softmaxkit.frontend import registry

_HERE = Path(__file__).resolve().parent
_SOURCE = _HERE / "ffi.cc"
_API = _HERE.parent.parent / "kernels" / "csrc" / "api.h"
_TARGETS = ("softmax", "logsumexp", "cross_entropy", "attention_forward", "attention_backward")

_lock = threading.Lock()
_state: dict[str, Any] = {}


def _cache_dir() -> Path:
    explicit = os.environ.get("SOFTMAXKIT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "softmaxkit"


def _library_path() -> Path:
    import jaxlib

    key = hashlib.sha256()
    for part in (_SOURCE.read_bytes(), _API.read_bytes(), jaxlib.__version__.encode(), sys.version.encode()):
        key.update(part)
    suffix = sysconfig.get_config_var("SHLIB_SUFFIX") or ".so"
    return _cache_dir() / f"jax_ffi-{key.hexdigest()[:16]}{suffix}"


def _compile(target: Path) -> None:
    """Compiles ``ffi.cc`` into ``target`` (atomically: a half-written library is never loaded)."""
    import fcntl

    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / (target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            return
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=target.suffix)
        os.close(fd)
        command = [
            os.environ.get("CXX", "c++"),
            "-O2",
            "-std=c++17",
            "-shared",
            "-fPIC",
            f"-I{jax.ffi.include_dir()}",
            f"-I{_API.parent}",
            str(_SOURCE),
            "-o",
            tmp,
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise OSError(f"{' '.join(command[:1])} failed:\n{done.stderr.strip()[-2000:]}")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _load() -> str | None:
    """Builds (if needed), loads and registers the handlers; the reason they are not in use, or None."""
    installed = registry.native_installed()
    if installed is None:
        return "the native kernels are not built in this installation"
    if not hasattr(jax, "ffi"):
        return f"JAX {jax.__version__} has no jax.ffi (0.4.38 or newer has)"
    target = _library_path()
    try:
        if not target.exists():
            _compile(target)
        library = ctypes.CDLL(str(target))
    except (OSError, ImportError) as exc:  # no compiler, a failed build; no fcntl off POSIX
        return f"the XLA FFI handlers could not be built: {exc}"
    kernels = ctypes.CDLL(installed.library)
    entry = [ctypes.cast(getattr(kernels, f"sk_{name}"), ctypes.c_void_p) for name in (*_TARGETS, "narrow_f64")]
    library.skjax_bind.argtypes = [ctypes.c_void_p] * len(entry)
    library.skjax_bind(*entry)
    for name in _TARGETS:
        jax.ffi.register_ffi_target(f"softmaxkit_{name}", jax.ffi.pycapsule(getattr(library, f"skjax_{name}")), platform="cpu")
    _state["library"] = str(target)
    return None


def _reason() -> str | None:
    with _lock:
        if "reason" not in _state:
            _state["reason"] = _load()
        return _state["reason"]


def active() -> bool:
    """Whether JAX functions traced now run the native kernels (on the CPU backend)."""
    return registry.native() is not None and jax.default_backend() == "cpu" and _reason() is None


def path() -> str:
    """One line: which path ``softmaxkit.jax`` takes, and why.

    >>> import softmaxkit.jax as smj
    >>> smj.kernel_path()  # doctest: +SKIP
    'native: XLA FFI handlers on CPU (avx512, 2 threads)'
    """
    backend = jax.default_backend()
    if backend != "cpu":
        return f"jax.numpy formulas: the default JAX backend is {backend} (XLA fuses them there)"
    reason = _reason()
    if reason is not None:
        return f"jax.numpy formulas: {reason}"
    if registry.native() is None:
        return "jax.numpy formulas: the native kernels are switched off (SOFTMAXKIT_DISABLE_NATIVE or softmaxkit.kernels.disabled())"
    return f"native: XLA FFI handlers on CPU ({registry.native_installed().describe()})"


def _registered(name: str) -> str:
    """The FFI target ``name``, registered (RuntimeError where the handlers cannot be had)."""
    reason = _reason()
    if reason is not None:
        raise RuntimeError(f"softmaxkit's XLA FFI handlers are not available: {reason}")
    return f"softmaxkit_{name}"


def _shape(x: Any, dtype: Any = None) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(x.shape if hasattr(x, "shape") else x, dtype if dtype is not None else x.dtype)


def softmax(x: Any, temperature: float, log: bool) -> Any:
    """softmax (or log_softmax) of ``x`` along its last axis, in ``x``'s dtype."""
    call = jax.ffi.ffi_call(_registered("softmax"), _shape(x), vmap_method="broadcast_all")
    return call(x, axis=np.int64(-1), temperature=np.float64(temperature), log=np.int64(log))


def logsumexp(x: Any) -> Any:
    """logsumexp of ``x`` along its last axis, in ``x``'s dtype."""
    call = jax.ffi.ffi_call(_registered("logsumexp"), _shape(x.shape[:-1], x.dtype), vmap_method="broadcast_all")
    return call(x, axis=np.int64(-1))


def cross_entropy(x, labels, weight, divisor, ignore_index, eps, z, loss_dtype, want_grad):
    """``(per-row loss in loss_dtype, gradient or None)`` of logits ``x`` (classes last).

    ``labels``: int32/int64 class indices of ``x``'s shape without the last
    axis, or probabilities of ``x``'s shape and dtype; ``weight``: (C,)
    class weights or None; ``divisor``: a 0-d float, the gradient is that of
    the losses' sum divided by it (``+inf`` gives a zero gradient).
    """
    w = np.zeros((0,), np.float32) if weight is None else weight
    grad_shape = _shape(x) if want_grad else _shape((0,), x.dtype)
    call = jax.ffi.ffi_call(
        _registered("cross_entropy"), (_shape(x.shape[:-1], loss_dtype), grad_shape), vmap_method="broadcast_all"
    )
    loss, grad = call(
        x, labels, w, divisor, ignore_index=np.int64(ignore_index), eps=np.float64(eps), z=np.float64(z)
    )
    return loss, (grad if want_grad else None)


def _attention_operands(mask: Any, sinks: Any) -> tuple[Any, Any]:
    """The mask (bool, float32 or float64, of query's rank) and the sinks, or empty stand-ins."""
    return (np.zeros((0,), np.float32) if mask is None else mask), (np.zeros((0,), np.float32) if sinks is None else sinks)


def attention_forward(q, k, v, mask, sinks, causal: int, scale: float, softcap: float | None) -> tuple[Any, Any]:
    """``(out, lse)`` of ``q`` (..., Hq, L, D), ``k`` (..., Hkv, S, D), ``v``
    (..., Hkv, S, Dv), float32 or bfloat16 of one dtype: ``out`` in it, ``lse``
    float32.

    ``mask``: None, or bool (True attends) / float32 / float64 (added) of
    ``q``'s rank, each dimension 1 or that of the scores (..., Hq, L, S);
    ``sinks``: None or (Hq,) float32/float64; ``causal`` 0 none, 1 top left,
    2 bottom right; ``softcap`` None or > 0.
    """
    m, s = _attention_operands(mask, sinks)
    results = (_shape(q.shape[:-1] + (v.shape[-1],), q.dtype), _shape(q.shape[:-1], np.float32))
    call = jax.ffi.ffi_call(_registered("attention_forward"), results, vmap_method="broadcast_all")
    return call(
        q, k, v, m, s, causal=np.int64(causal), scale=np.float64(scale), softcap=np.float64(softcap or 0.0),
        has_mask=np.int64(mask is not None),
    )


def attention_backward(q, k, v, mask, sinks, out, lse, dout, dlse, causal: int, scale: float, softcap: float | None, want_bias: bool):
    """``(dq, dk, dv, dsinks, dbias)`` of :func:`attention_forward` from its
    ``out`` and ``lse`` and their cotangents ``dout`` and ``dlse`` (float32).

    ``dsinks`` (Hq,) in the sinks' dtype (None without sinks): the sum over
    the batch and the rows.  ``dbias`` (..., Hq, L, S) in the float mask's
    dtype with ``want_bias``, else None.
    """
    m, s = _attention_operands(mask, sinks)
    scores = q.shape[:-1] + (k.shape[-2],)
    results = (
        _shape(q),
        _shape(k),
        _shape(v),
        _shape(s),
        _shape(scores if want_bias else (0,), m.dtype if want_bias else np.float32),
    )
    call = jax.ffi.ffi_call(_registered("attention_backward"), results, vmap_method="broadcast_all")
    dq, dk, dv, dsinks, dbias = call(
        q, k, v, m, s, out, lse, dout, dlse, causal=np.int64(causal), scale=np.float64(scale),
        softcap=np.float64(softcap or 0.0), has_mask=np.int64(mask is not None), want_bias=np.int64(want_bias),
    )
    return dq, dk, dv, (None if sinks is None else dsinks), (dbias if want_bias else None)
