"""Argument checking at the public boundary.

Every check raises ``TypeError`` for the wrong kind of thing and
``ValueError`` for a bad value; the message names the argument, shows the
value and says what is allowed.  Nothing here uses ``assert``.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable

import array_api_compat
import numpy as np

from softmaxkit.frontend import registry
from softmaxkit.numerics import working_dtype

REDUCTIONS = ("none", "mean", "sum")


def quiet(func):
    """Silence NumPy's floating-point warnings inside a public function.

    The formulas meet ``inf - inf`` and ``0 * inf`` on purpose (masked rows,
    infinite logits) and replace the results with the defined limits; the
    warnings would only be noise.  Arrays owned by a backend (torch, JAX) go
    straight through: NumPy's error state is not theirs, and ``torch.compile``
    cannot trace it.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        first = args[0] if args else next(iter(kwargs.values()), None)
        if type(first) is not np.ndarray and registry.backend_for(first) is not None:
            return func(*args, **kwargs)
        with np.errstate(all="ignore"):
            return func(*args, **kwargs)

    return wrapper


def describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def namespace_of(x: Any, name: str) -> tuple[Any, Any]:
    """The array namespace of ``x`` and ``x`` as an array of that namespace.

    Array-API arrays (NumPy, PyTorch, JAX, CuPy, ...) are kept as they are;
    anything else (lists, scalars) goes through ``numpy.asarray``.  A
    ``numpy.ma.MaskedArray`` is refused: ``asarray`` would drop its mask
    silently (functions with ``where=`` take its mask first, see
    :func:`unmask`).
    """
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a numpy.ma.MaskedArray, and this function cannot honour its mask; pass {name}.filled(value) "
            "with the value masked entries should take, or pass the data with where=~mask to a function that has where="
        )
    if not array_api_compat.is_array_api_obj(x) or isinstance(x, np.generic):
        try:
            x = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be an array of real numbers; got {describe(x)} ({exc})") from None
    return array_api_compat.array_namespace(x), x


def _kind(xp: Any, dtype: Any) -> str:
    """'float', 'int', 'bool', 'complex' or 'other' for a dtype of namespace ``xp``."""
    if isinstance(dtype, np.dtype):
        if dtype.kind == "f" or dtype.name == "bfloat16":
            return "float"
        if dtype.kind in "iu":
            return "int"
        if dtype.kind == "c":
            return "complex"
        return "bool" if dtype.kind == "b" else "other"
    if xp.isdtype(dtype, "real floating"):
        return "float"
    if xp.isdtype(dtype, "integral"):
        return "int"
    if xp.isdtype(dtype, "complex floating"):
        return "complex"
    return "bool" if xp.isdtype(dtype, "bool") else "other"


def is_complex(xp: Any, dtype: Any) -> bool:
    return _kind(xp, dtype) == "complex"


def unmask(x: Any, where: Any) -> tuple[Any, Any]:
    """``x`` without a ``numpy.ma.MaskedArray``'s mask, folded into ``where``.

    For the functions that take ``where=``: masked entries take no part, as
    if ``where`` were False there, and an explicit ``where`` is combined
    with the mask by AND.  Any other ``x`` comes back unchanged.
    """
    if not isinstance(x, np.ma.MaskedArray):
        return x, where
    mask = np.ma.getmask(x)
    if mask is np.ma.nomask or not mask.any():
        # nothing masked: the plain data, so that the native kernels may take it
        return x.data, where
    keep = ~mask
    if where is not None:
        keep = keep & where_mask(np, where, keep.shape)
    return x.data, keep


def real_array(x: Any, name: str) -> tuple[Any, Any, Any]:
    """``(xp, x, out_dtype)`` for a real-valued input.

    Integer arrays are promoted to float64 (float32 where the namespace, or
    the array's device, has no float64); bool, complex, string and object
    arrays raise ``TypeError``.
    """
    xp, arr = namespace_of(x, name)
    arr = as_float(xp, arr, name)
    return xp, arr, arr.dtype


def as_float(xp: Any, x: Any, name: str) -> Any:
    """``x`` if floating; integers promoted to float64 (float32 where the
    namespace, or the array's device, has no float64); ``TypeError`` for
    bool, complex, string and object arrays."""
    kind = _kind(xp, x.dtype)
    if kind == "float":
        return x
    if kind == "int":
        wide, _ = working_dtype(xp, xp.float32, x)
        return xp.astype(x, wide)
    raise TypeError(f"{name} must be a real floating or integer array; got dtype {x.dtype}")


def number_array(x: Any, name: str) -> tuple[Any, Any, Any]:
    """``(xp, x, out_dtype)`` for a real or complex input (see :func:`real_array`)."""
    xp, arr = namespace_of(x, name)
    if _kind(xp, arr.dtype) == "complex":
        return xp, arr, arr.dtype
    try:
        return real_array(arr, name)
    except TypeError:
        raise TypeError(f"{name} must be a real floating, complex or integer array; got dtype {arr.dtype}") from None


def target_kind(xp: Any, t: Any, name: str) -> str:
    """'int' for class indices, 'float' for probabilities; else TypeError."""
    kind = _kind(xp, t.dtype)
    if kind in ("int", "float"):
        return kind
    raise TypeError(f"{name} must hold integer class indices or floating probabilities; got dtype {t.dtype}")


def probability_targets_ignore_index(ignore_index: int, dtype: Any, name: str) -> None:
    """PyTorch's rule: ``ignore_index`` means nothing to probability targets.

    Its negative values (the default -100 among them) pass unused; a
    non-negative one, which would name a class, is refused.
    """
    if ignore_index >= 0:
        raise ValueError(
            f"ignore_index={ignore_index} cannot be used with probability targets ({name} of floating dtype {dtype}); "
            "it applies to class indices only: leave it negative (default -100)"
        )


def axis(value: Any, ndim: int, name: str = "axis", allow_many: bool = False) -> tuple[int, ...]:
    """Normalise an axis (or, with ``allow_many``, a tuple of axes or None)."""
    if type(value) is int and -ndim <= value < ndim:
        # the common case, without the checks' cost on a small array's call
        return (value % ndim,)
    if value is None and allow_many:
        return tuple(range(ndim))
    values = value if (allow_many and isinstance(value, tuple)) else (value,)
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            allowed = "an int, a tuple of ints or None" if allow_many else "an int"
            raise TypeError(f"{name} must be {allowed}; got {describe(value)}")
        if not -ndim <= v < ndim:
            raise ValueError(f"{name}={v} is out of range for an array of {ndim} dimension(s); allowed: {-ndim} to {ndim - 1}")
        out.append(int(v) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{name} has repeated axes: {describe(value)}")
    return tuple(out)


def real_number(value: Any, name: str) -> float:
    if type(value) is float:
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if getattr(value, "shape", None) == () and _is_real_scalar_array(value):
            value = float(value)
        else:
            raise TypeError(f"{name} must be a real number; got {describe(value)}")
    return float(value)


def _is_real_scalar_array(value: Any) -> bool:
    try:
        xp, arr = namespace_of(value, "value")
    except TypeError:
        return False
    return _kind(xp, arr.dtype) in ("float", "int")


def temperature(value: Any) -> float:
    return positive_finite(value, "temperature")


def in_unit_interval(value: Any, name: str) -> float:
    v = real_number(value, name)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]; got {v!r}")
    return v


def non_negative(value: Any, name: str) -> float:
    v = real_number(value, name)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be finite and >= 0; got {v!r}")
    return v


def reduction(value: Any) -> str:
    if value not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, REDUCTIONS))}; got {describe(value)}")
    return value


def loss_options(ignore_index: Any, label_smoothing: Any, z_loss: Any, mode: Any) -> tuple[int, float, float, str]:
    """A cross-entropy's options checked: ``(ignore_index, label_smoothing, z_loss, reduction)``
    (``mode`` is the reduction)."""
    mode = reduction(mode)
    eps = in_unit_interval(label_smoothing, "label_smoothing")
    z = non_negative(z_loss, "z_loss")
    return integer(ignore_index, "ignore_index"), eps, z, mode


def integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {describe(value)}")
    return int(value)


def flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {describe(value)}")
    return value


def to_numpy(a: Any) -> np.ndarray:
    """A host copy of an array of any namespace, for error messages."""
    if hasattr(a, "detach"):
        a = a.detach().cpu()
    return np.asarray(a)


def first_position(mask: Any) -> tuple[int, ...]:
    """Index of the first True entry of a boolean array of any namespace."""
    return tuple(int(i) for i in np.argwhere(to_numpy(mask))[0])


def broadcast_to(xp: Any, value: Any, shape: tuple[int, ...], name: str, target: str) -> Any:
    """``value`` (an array of namespace ``xp``) broadcast to ``shape``."""
    try:
        return xp.broadcast_to(value, shape)
    except (ValueError, RuntimeError) as exc:
        raise ValueError(
            f"{name} of shape {tuple(value.shape)} does not broadcast to {target} of shape {tuple(shape)}"
        ) from exc


def broadcast_shapes(shape: tuple[int, ...], other: tuple[int, ...], name: str, other_name: str) -> tuple[int, ...]:
    """The shape two arrays broadcast to together (either may grow)."""
    try:
        return tuple(np.broadcast_shapes(shape, other))
    except ValueError:
        raise ValueError(f"{name} of shape {shape} does not broadcast to {other_name} of shape {other}, nor the two to a common shape") from None


def same_namespace(xp: Any, value: Any, name: str) -> Any:
    """``value`` as an array of namespace ``xp`` (NumPy inputs and lists are converted)."""
    vxp, v = namespace_of(value, name)
    if vxp is xp:
        return v
    if isinstance(v, np.ndarray):
        return xp.asarray(v)
    raise TypeError(f"{name} is a {type(v).__module__}.{type(v).__name__}, but the logits are of another kind; pass the same kind of array")


def where_mask(xp: Any, where: Any, shape: tuple[int, ...]) -> Any:
    if where is None:
        return None
    w = same_namespace(xp, where, "where")
    if _kind(xp, w.dtype) != "bool":
        raise TypeError(f"where must be a boolean array; got dtype {w.dtype}")
    return broadcast_to(xp, w, shape, "where", "x")


# --- cross-entropy targets and class weights -----------------------------------
# One statement of the rules and their messages for every front end (NumPy and
# array-API, torch, JAX, diagnose).  Each front end applies the value checks
# its own way: NumPy raises at once; torch.compile and jax.jit cannot branch
# on data while tracing.


def target_shape(kind: str, got: tuple, logits_shape: tuple, class_axis: int, target: str, logits: str, axis_word: str) -> None:
    """Class indices have the logits' shape without the class axis; probabilities the logits' shape."""
    got, logits_shape = tuple(got), tuple(logits_shape)
    if kind == "int":
        want = logits_shape[:class_axis] + logits_shape[class_axis + 1 :]
        if got != want:
            raise ValueError(f"{target} of class indices must have shape {want} ({logits}' shape without {axis_word} {class_axis}); got {got}")
    elif got != logits_shape:
        raise ValueError(f"{target} of probabilities must have the shape of {logits} {logits_shape}; got {got}")


def not_a_class(t: Any, n_classes: int, ignore_index: int) -> Any:
    """Mask of the targets that are neither a class index nor ``ignore_index``."""
    return ~((t == ignore_index) | ((t >= 0) & (t < n_classes)))


def not_a_class_message(where: str, n_classes: int, ignore_index: int) -> str:
    return f"{where} is not a class index: allowed 0 to {n_classes - 1}, or ignore_index={ignore_index}"


def weight_shape(got: tuple, n_classes: int) -> None:
    if tuple(got) != (n_classes,):
        raise ValueError(f"weight must have shape ({n_classes},), one entry per class; got {tuple(got)}")


def bad_weight(xp: Any, w: Any) -> Any:
    """Mask of the class weights that are not finite.

    Any finite weight is allowed, negative ones included, as in PyTorch; a
    "mean" whose total weight comes to 0 is 0 (see ``numerics.reduction``).
    NaN and infinite weights would turn every row of their class into NaN.
    """
    return ~xp.isfinite(w)


BAD_WEIGHT = "weight must be finite"
# pos_weight follows the class-weight rule: any finite value, as in PyTorch.
BAD_POS_WEIGHT = "pos_weight must be finite"
NEGATIVE_PROBABILITY = "must be non-negative probabilities"
NOT_A_PROBABILITY = "must be probabilities in [0, 1]"


# --- checks on values ------------------------------------------------------------


def _always(bad: Any) -> bool:
    return True


@dataclass(frozen=True)
class ValueChecks:
    """How a backend checks values: read them now, record the check for run
    time, or skip it.

    NumPy reads values at once.  Under ``torch.compile`` a check becomes an
    asynchronous assertion (``check_later``); under ``vmap``, ``jax.jit`` or
    other tracing, values cannot be read without a host round trip and the
    check is skipped.  ``readable(bad)`` says whether the mask of bad
    entries can be read now: a mask computed while tracing is a tracer even
    where its input is concrete.  Option, dtype and shape checks never
    depend on this.
    """

    readable: Callable[[Any], bool] = _always
    check_later: Callable[[Any, str], Any] | None = None

    def require_none(self, xp: Any, bad: Any, describe: Callable[[tuple | None], str]) -> None:
        """Raise ``ValueError(describe(position))`` at the first True entry of ``bad``.

        ``describe(None)`` is the message where no position can be read.
        """
        if self.readable(bad):
            if bool(xp.any(bad)):
                raise ValueError(describe(first_position(bad)))
        elif self.check_later is not None:
            self.check_later(xp.logical_not(xp.any(bad)), describe(None))


EAGER = ValueChecks()


def _value_at(a: Any, pos: tuple[int, ...]) -> str:
    value = to_numpy(a)[pos]
    return repr(int(value)) if np.issubdtype(value.dtype, np.integer) else repr(float(value))


def _at(name: str, a: Any, message: str) -> Callable[[tuple | None], str]:
    """``describe`` for :meth:`ValueChecks.require_none`: the message, then the first bad entry and its value."""
    return lambda pos: message if pos is None else f"{message}; got {name}{list(pos)} = {_value_at(a, pos)}"


def class_indices(xp: Any, t: Any, n_classes: int, ignore_index: int, name: str, checks: ValueChecks = EAGER) -> None:
    """Every target is a class index in ``[0, n_classes)`` or ``ignore_index``."""
    checks.require_none(
        xp,
        not_a_class(t, n_classes, ignore_index),
        lambda pos: not_a_class_message(f"a value of {name}" if pos is None else f"{name}{list(pos)} = {_value_at(t, pos)}", n_classes, ignore_index),
    )


def class_weights(xp: Any, w: Any, n_classes: int, checks: ValueChecks = EAGER) -> None:
    """One finite weight per class."""
    weight_shape(w.shape, n_classes)
    checks.require_none(xp, bad_weight(xp, w), _at("weight", w, BAD_WEIGHT))


def probabilities(xp: Any, q: Any, name: str, checks: ValueChecks = EAGER) -> None:
    """Probability targets are non-negative (rows need not sum to 1, as in PyTorch)."""
    checks.require_none(xp, q < 0, _at(name, q, f"{name} {NEGATIVE_PROBABILITY}"))


def not_binary(y: Any) -> Any:
    """Mask of the binary cross-entropy targets outside [0, 1] (NaN included)."""
    return ~((y >= 0) & (y <= 1))


def binary_targets(xp: Any, y: Any, name: str, checks: ValueChecks = EAGER) -> None:
    """Binary cross-entropy targets lie in [0, 1]."""
    checks.require_none(xp, not_binary(y), _at(name, y, f"{name} {NOT_A_PROBABILITY}"))


def pos_weights(xp: Any, beta: Any, checks: ValueChecks = EAGER) -> None:
    """Every ``pos_weight`` is finite."""
    checks.require_none(xp, bad_weight(xp, beta), _at("pos_weight", beta, BAD_POS_WEIGHT))


# --- counts and positive numbers -------------------------------------------------


def count(value: Any, name: str, low: int, high: int | None = None, unit: str = "") -> int:
    """``value`` as an int in [``low``, ``high``] (no upper bound when ``high`` is None).

    ``TypeError`` for anything but an int (bool included), ``ValueError`` for
    an int out of range; both messages name ``name`` and the range, followed
    by ``unit`` (such as ``" (bytes)"``).
    """
    allowed = (f"an int >= {low}" if high is None else f"an int in [{low}, {high}]") + unit
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {allowed}; got {describe(value)}")
    n = int(value)
    if n < low or (high is not None and n > high):
        raise ValueError(f"{name} must be {allowed}; got {n}")
    return n


def positive_finite(value: Any, name: str) -> float:
    """``value`` as a float, finite and > 0 (a temperature, a tolerance)."""
    x = real_number(value, name)
    if not (math.isfinite(x) and x > 0):
        raise ValueError(f"{name} must be finite and > 0; got {x!r}")
    return x


def grouped_heads(n_q_heads: int, n_kv_heads: int, q_letter: str = "Hq", kv_letter: str = "Hkv") -> int:
    """Grouped-query attention's heads: query head ``h`` reads key head
    ``h // group``; returns ``group = n_q_heads // n_kv_heads``.  The letters
    name the two head counts in the caller's layout."""
    if n_kv_heads == 0 or n_q_heads % n_kv_heads:
        raise ValueError(
            f"query's heads {q_letter}={n_q_heads} must be a multiple of key's heads {kv_letter}={n_kv_heads} ({kv_letter} >= 1)"
        )
    return n_q_heads // n_kv_heads


def attention_scale(scale: Any, depth: int) -> float:
    """Attention's score scale: ``scale`` checked (finite, > 0), or ``1 / sqrt(depth)``
    by default (``depth`` the query's last dimension; 1 when it is 0)."""
    return 1.0 / math.sqrt(max(depth, 1)) if scale is None else positive_finite(scale, "scale")
