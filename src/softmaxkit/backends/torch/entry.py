"""The torch backend's entry points for the public functions (``softmaxkit.softmax(tensor)`` and friends).

``softmaxkit.softmax(tensor, axis=...)`` and friends land here: the
arguments are mapped onto the autograd Functions, so results keep their
autograd history, and ``return_grad=True`` returns the gradient computed by
the Function's backward pass.
"""

from __future__ import annotations

import array_api_compat.torch as xp
import torch

from softmaxkit.frontend import validate
from softmaxkit.frontend.layout import Layout
from softmaxkit.backends.torch import functional, linear, linear_distillation
from softmaxkit.backends.torch.execution import as_float, working_dtype
from softmaxkit.backends.torch import sparse
from softmaxkit.backends.torch import distillation
from softmaxkit.frontend import random as _random
from softmaxkit.frontend import registry


def _tensor(value, name: str):
    """``value`` as a tensor; a tensor passes untouched (no array-namespace lookup, which
    torch.compile would trace), anything else follows ``validate.same_namespace``."""
    return value if isinstance(value, torch.Tensor) else validate.same_namespace(xp, value, name)


def _masked(x: torch.Tensor, where) -> torch.Tensor:
    x = as_float(x, "x")
    mask = None if where is None else validate.where_mask(xp, _tensor(where, "where"), tuple(x.shape))
    return x if mask is None else x.masked_fill(~mask.to(x.device), -float("inf"))


def _over_axes(x: torch.Tensor, axis, fn) -> torch.Tensor:
    axes = validate.axis(axis, max(x.ndim, 1), allow_many=True)
    if len(axes) == 1 or x.ndim == 0:
        return fn(x, axes[0])
    layout = Layout(xp, tuple(x.shape), axes)
    return layout.back(fn(layout.forward(x), -1))


def softmax(x, axis, *, temperature, where):
    return _over_axes(_masked(x, where), axis, lambda t, d: functional.softmax(t, d, temperature=temperature))


def log_softmax(x, axis, *, temperature, where):
    return _over_axes(_masked(x, where), axis, lambda t, d: functional.log_softmax(t, d, temperature=temperature))


def logsumexp(x, axis, *, keepdims, where):
    x = _masked(x, where)
    dims = validate.axis(axis, max(x.ndim, 1), allow_many=True)
    return functional.logsumexp(x, dims, keepdim=validate.flag(keepdims, "keepdims"))


def _with_grad(loss_fn, logits: torch.Tensor):
    """``(loss, d loss.sum() / d logits)`` from the Function's backward."""
    tracked = logits.requires_grad
    leaf = logits if tracked else logits.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(leaf)
    (grad,) = torch.autograd.grad(loss.sum(), leaf, retain_graph=tracked)
    return (loss if tracked else loss.detach()), grad


def cross_entropy(logits, targets, *, axis, weight, ignore_index, label_smoothing, reduction, z_loss, return_grad):
    logits = as_float(logits, "logits")
    if logits.ndim == 0:
        raise ValueError("logits must have a class axis; got a 0-d tensor")
    (ax,) = validate.axis(axis, logits.ndim)
    targets = _tensor(targets, "targets")
    soft = validate.target_kind(xp, targets, "targets") == "float"
    weight = None if weight is None else _tensor(weight, "weight")
    cdim = 0 if logits.ndim == 1 else 1

    def loss_fn(x):
        # torch puts the classes at dim 1; the NumPy API lets the caller choose.
        return functional.cross_entropy(
            x.movedim(ax, cdim),
            targets.movedim(ax, cdim) if soft else targets,
            weight,
            ignore_index,
            reduction,
            label_smoothing,
            z_loss=z_loss,
        )

    if not validate.flag(return_grad, "return_grad"):
        return loss_fn(logits)
    return _with_grad(loss_fn, logits)


def binary_cross_entropy_with_logits(logits, targets, *, weight, pos_weight, reduction, return_grad):
    logits = as_float(logits, "logits")

    def as_tensor(value, name):
        return None if value is None else _tensor(value, name)

    targets, weight, pos_weight = as_tensor(targets, "targets"), as_tensor(weight, "weight"), as_tensor(pos_weight, "pos_weight")

    def loss_fn(x):
        return functional.binary_cross_entropy_with_logits(x, as_float(targets, "targets"), weight, reduction, pos_weight)

    if not validate.flag(return_grad, "return_grad"):
        return loss_fn(logits)
    return _with_grad(loss_fn, logits)


# --- sampling -------------------------------------------------------------------------------


def check_rng(rng):
    """A ``torch.Generator``, an int seed, or None (torch's global generator)."""
    if rng is None or isinstance(rng, torch.Generator):
        return rng
    return torch.Generator().manual_seed(_random.seed(rng, "a torch.Generator, an int seed or None", "torch"))


def _words(generator, shape, device):
    """Uniform 32-bit words of ``shape`` (as int64), drawn on the generator's device."""
    source = generator.device if generator is not None else device
    return torch.randint(0, 2**32, tuple(shape), generator=generator, dtype=torch.int64, device=source).to(device)


# torch.compile cannot pass a torch.Generator to an operation it traces.
# The generators met while tracing are kept here, and the graph calls
# softmaxkit::random_words with the key of its generator, a constant of
# the graph (Dynamo guards on the generator's identity, so another
# generator compiles its own graph).  The graph then draws from the
# generator itself: compiled and eager code give the same words.
_GENERATORS: dict[int, torch.Generator] = {}


@torch.compiler.assume_constant_result
def _generator_key(generator: torch.Generator) -> int:
    _GENERATORS[id(generator)] = generator
    return id(generator)


@torch.library.custom_op("softmaxkit::random_words", mutates_args=())
def _random_words_op(like: torch.Tensor, shape: list[int], generator_key: int) -> torch.Tensor:
    return _words(_GENERATORS[generator_key], shape, like.device)


@_random_words_op.register_fake
def _(like, shape, generator_key):
    return like.new_empty(shape, dtype=torch.int64)


# The draws advance the generator: the compiled graph must keep every call,
# used or not, in program order (an ordered effect), as eager code makes them.
torch.library._register_effectful_op("softmaxkit::random_words", torch.library.EffectType.ORDERED)


def random_words(generator, shape, like):
    """Uniform 32-bit words of ``shape``, on ``like``'s device (through softmaxkit::random_words under torch.compile with a generator)."""
    if generator is None or not torch.compiler.is_compiling():
        return _words(generator, shape, like.device)
    return _random_words_op(like, list(shape), _generator_key(generator))


def traced(a):
    """Values cannot be read while torch.compile traces."""
    return torch.compiler.is_compiling()


def top_k(x, k):
    """``torch.topk``, with the entries of equal value put in index order (torch leaves their order open)."""
    values, indices = torch.topk(x, k, dim=-1)
    indices, by_index = torch.sort(indices, dim=-1)
    values = torch.gather(values, -1, by_index)
    values, by_value = torch.sort(values, dim=-1, descending=True, stable=True)
    return values, torch.gather(indices, -1, by_value)


def cond(pred, if_true, if_false):
    """A branch on a 0-d boolean tensor without waiting for a device.

    Under torch.compile it is ``torch.cond``; in eager code the boolean is
    read where it is on the CPU, and on other devices both branches run
    and their results are selected, so the host never waits for the device.
    """
    if torch.compiler.is_compiling():
        return torch.cond(pred, if_true, if_false, ())
    if pred.device.type == "cpu":
        return if_true() if bool(pred) else if_false()
    return tuple(torch.where(pred, a, b) for a, b in zip(if_true(), if_false()))


BACKEND = registry.Backend(
    name="torch",
    softmax=softmax,
    log_softmax=log_softmax,
    logsumexp=logsumexp,
    cross_entropy=cross_entropy,
    linear_cross_entropy=linear.entry,
    linear_distillation_loss=linear_distillation.entry,
    binary_cross_entropy_with_logits=binary_cross_entropy_with_logits,
    sparsemax=sparse.SparsemaxFunction.apply,
    entmax15=sparse.Entmax15Function.apply,
    check_rng=check_rng,
    random_words=random_words,
    stop_gradient=torch.Tensor.detach,
    traced=traced,
    top_k=top_k,
    cond=cond,
    namespace=xp,
    working_dtype=working_dtype,
    distillation_loss=distillation.entry,
)
