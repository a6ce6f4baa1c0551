"""The registry: array kind -> backend, and the slot for the native kernels.

The public functions validate what every backend shares, then ask
:func:`backend_for` which backend owns their input.  ``None`` means the
generic array-API path of the front end (NumPy, CuPy, array-api-strict, ...);
a :class:`Backend` means torch tensors or JAX arrays, whose entry points keep
autograd and tracing intact.  Backends are registered by name and imported
on first use, so that neither torch nor JAX is imported until an array of
theirs is met (an array of a kind can only exist once its library has been
imported).  The package root registers the backends it ships
(``softmaxkit/__init__.py``); the native kernels register themselves when
they are importable (:func:`register_native`).

Adding an operation to a backend touches :class:`Backend` (a new field) and
the backend's own ``entry.py``; adding a backend touches :func:`register`'s
call in the package root and the backend's folder.  See
``docs/architecture.md``.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any, Callable

Entry = Callable[..., Any]


@dataclass(frozen=True)
class Backend:
    """One backend's entry points.

    Every field is named after the public function (or the step of it) that
    calls it.  A field set to None says that the operation takes the generic
    array-API path on this kind of array: missing operations are stated,
    never probed.

    * ``softmax``, ``log_softmax``: ``(x, axis, *, temperature, where)``;
    * ``logsumexp``: ``(x, axis, *, keepdims, where)``;
    * ``cross_entropy``: ``(logits, targets, *, axis, weight, ignore_index,
      label_smoothing, reduction, z_loss, return_grad)``;
    * ``linear_cross_entropy``: ``(hidden, linear_weight, targets, *,
      linear_bias, weight, ignore_index, label_smoothing, z_loss, softcap,
      reduction, normalizer, return_grad)``;
    * ``linear_distillation_loss``: ``(student_hidden, student_weight,
      teacher_hidden, teacher_weight, *, student_bias, teacher_bias, targets,
      divergence, beta, temperature, scale_by_temperature_squared,
      ignore_index, hard_label_weight, reduction, return_grad)``;
    * ``binary_cross_entropy_with_logits``: ``(logits, targets, *, weight,
      pos_weight, reduction, return_grad)``;
    * ``sparsemax``, ``entmax15``: ``(rows, widened)``, rows in the working
      dtype along the last axis, differentiable in the backend's own way;
    * ``check_rng``: ``(rng) -> generator``, raising ``TypeError`` for a
      generator of the wrong kind; ``random_words``: ``(generator, shape,
      like) -> uniform 32-bit words of that shape``;
    * ``stop_gradient``: ``(a) -> a`` cut from differentiation;
    * ``traced``: ``(a) -> bool``, whether ``a``'s values cannot be read now
      (a tracer under ``jax.jit``); value checks are skipped on such arrays;
    * ``top_k``: ``(x, k) -> (values, indices)``, ``k`` largest entries of
      each row (last axis), decreasing, those of equal value in index order,
      NaN first (the generic path sorts whole rows); which of the entries
      tied with the ``k``-th largest are returned may be left open;
    * ``cond``: ``(pred, if_true, if_false)``, a branch on a 0-d boolean,
      traced or on a device; both branches return tuples of arrays of the
      same shapes (the generic path reads ``pred``);
    * ``namespace``: the array namespace of the backend's arrays, which the
      sampling functions compute with in the front end (the generic path
      looks it up);
    * ``working_dtype``: ``(dtype, device) -> (work, widened)``, the
      backend's working precision for logits of ``dtype`` on ``device``
      (the generic path: ``numerics.working_dtype``);
    * ``distillation_loss``: ``(student_logits, teacher_logits, *, divergence,
      beta, temperature, scale_by_temperature_squared, targets, ignore_index,
      hard_label_weight, reduction, axis, return_grad)``.
    """

    name: str
    softmax: Entry | None
    log_softmax: Entry | None
    logsumexp: Entry | None
    cross_entropy: Entry | None
    binary_cross_entropy_with_logits: Entry | None
    sparsemax: Entry | None
    entmax15: Entry | None
    check_rng: Entry | None
    random_words: Entry | None
    stop_gradient: Entry | None
    traced: Entry | None
    top_k: Entry | None
    cond: Entry | None
    namespace: Any = None
    working_dtype: Entry | None = None
    distillation_loss: Entry | None = None
    linear_cross_entropy: Entry | None = None
    linear_distillation_loss: Entry | None = None


@dataclass(frozen=True)
class _Registration:
    library: str
    array_type: str
    backend: str


_registrations: list[_Registration] = []
_loaded: dict[str, Backend] = {}


def register(library: str, array_type: str, backend: str) -> None:
    """Route arrays of type ``library.array_type`` to the Backend at ``backend`` ("module:attribute")."""
    _registrations.append(_Registration(library, array_type, backend))


def backend_for(x: Any) -> Backend | None:
    """The backend that owns ``x``, or None for the generic array-API path."""
    for reg in _registrations:
        library = sys.modules.get(reg.library)
        # getattr: a module of that name that is not the library (a partial
        # import, a local folder) has no such type and owns nothing.
        array_type = getattr(library, reg.array_type, None) if library is not None else None
        if isinstance(array_type, type) and isinstance(x, array_type):
            return _load(reg.backend)
    return None


def load_imported() -> None:
    """Load now the backends whose library is already imported.

    ``torch.compile`` cannot trace an import: a backend first met inside
    compiled code would cost a graph break there.  The package root and the
    public backend modules call this, so that importing torch (or JAX)
    before softmaxkit, or importing ``softmaxkit.torch``, loads the backend
    ahead of any tracing.
    """
    for reg in _registrations:
        if reg.library in sys.modules:
            _load(reg.backend)


def _load(path: str) -> Backend:
    if path not in _loaded:
        module, attribute = path.split(":")
        _loaded[path] = getattr(importlib.import_module(module), attribute)
    return _loaded[path]


@dataclass(frozen=True)
class Native:
    """The native kernels: ``numpy`` holds the NumPy adapters, ``into`` the
    kernels writing into preallocated arrays, ``active`` says whether they are
    in use now (not switched off), ``library`` is the path of the loaded
    extension (whose C entry points, ``kernels/csrc/api.h``, other native
    code binds to), ``describe`` names the instruction set and thread count
    in use."""

    numpy: Any
    into: Any
    active: Callable[[], bool]
    library: str
    describe: Callable[[], str]


_native: Native | None = None


def register_native(kernels: Native) -> None:
    """Install the native kernels (done by ``softmaxkit.kernels`` when its C module loads)."""
    global _native
    _native = kernels


def native() -> Native | None:
    """The native kernels while they are in use, else None."""
    return _native if _native is not None and _native.active() else None


def native_installed() -> Native | None:
    """The native kernels when they are built, in use or switched off; else None."""
    return _native
