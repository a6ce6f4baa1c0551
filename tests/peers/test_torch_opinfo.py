"""PyTorch's own OpInfo and ModuleInfo samples, run against softmaxkit.torch.

torch ships, in ``torch.testing._internal``, the sample inputs its own test
suite feeds to every operator (``op_db``) and module (``module_db``).  Each
sample is given as it is (args and kwargs unchanged) to the
``torch.nn.functional`` operator and to its softmaxkit.torch counterpart, in
float64 and float32 on the CPU; the values, the gradients (reverse mode) and
the operators' tangents (forward mode) with respect to every floating input
that requires a gradient must agree, and so must the dtypes.

Where softmaxkit deliberately answers differently (an answer torch leaves
undefined as NaN or inf), the sample is a strict xfail naming the semantics,
so that a change on either side is noticed.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
# torch.testing._internal imports expecttest (in softmaxkit's test extra).
pytest.importorskip("expecttest")

from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402
from torch.testing._internal.common_modules import module_db  # noqa: E402

import softmaxkit.torch as smt  # noqa: E402

# op_db name (variant) -> the softmaxkit.torch function taking the same arguments.
OPS = {
    ("softmax", ""): "softmax",
    ("softmax", "with_dtype"): "softmax",
    ("log_softmax", ""): "log_softmax",
    ("log_softmax", "with_dtype"): "log_softmax",
    ("logsumexp", ""): "logsumexp",
    ("nn.functional.cross_entropy", ""): "cross_entropy",
    ("nn.functional.nll_loss", ""): "nll_loss",
    ("nn.functional.binary_cross_entropy_with_logits", ""): "binary_cross_entropy_with_logits",
    ("sigmoid", ""): "sigmoid",
    ("nn.functional.logsigmoid", ""): "logsigmoid",
}
MODULES = ("CrossEntropyLoss", "NLLLoss", "Softmax", "LogSoftmax", "BCEWithLogitsLoss")
DTYPES = (torch.float64, torch.float32)

ALL_IGNORED_MEAN = (
    "softmaxkit semantics: a 'mean' over class-index targets whose total weight is 0 "
    "(every target ignored, or zero-weight classes) is 0 with a zero gradient; torch gives NaN or inf"
)


def _zero_total_weight(input, target, weight=None, ignore_index=-100, reduction="mean", **_):
    """Whether a class-index loss reduced by "mean" divides by a total weight of 0."""
    if reduction != "mean" or target.is_floating_point():
        return False
    keep = target != ignore_index
    if weight is None:
        return not bool(keep.any())
    safe = torch.where(keep, target, torch.zeros_like(target))
    return float(torch.where(keep, weight[safe], torch.zeros_like(weight[safe])).sum()) == 0.0


def _loss_arguments(args, kwargs, names):
    """The functional's arguments by name (torch's positional order ``names``)."""
    bound = dict(zip(names, args))
    bound.update(kwargs)
    return bound


def _deliberate(kind: str, bound: dict) -> str | None:
    if kind in ("cross_entropy", "nll_loss", "CrossEntropyLoss", "NLLLoss") and _zero_total_weight(**bound):
        return ALL_IGNORED_MEAN
    return None


def _op_cases():
    cases = []
    for info in op_db:
        name = OPS.get((info.name, info.variant_test_name))
        if name is None:
            continue
        for dtype in DTYPES:
            torch.manual_seed(0)
            for i, sample in enumerate(info.sample_inputs("cpu", dtype, requires_grad=True)):
                bound = _loss_arguments((sample.input, *sample.args), sample.kwargs, ("input", "target", "weight"))
                reason = _deliberate(name, bound)
                marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
                ident = f"{info.name}{'.' + info.variant_test_name if info.variant_test_name else ''}-{str(dtype)[6:]}-{i}"
                cases.append(pytest.param(info.op, name, sample, id=ident, marks=marks))
    return cases


def _module_cases():
    cases = []
    for info in module_db:
        name = info.module_cls.__name__
        if name not in MODULES:
            continue
        for dtype in DTYPES:
            torch.manual_seed(0)
            inputs = info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True, training=True)
            for i, module_input in enumerate(inputs):
                ctor, fwd = module_input.constructor_input, module_input.forward_input
                bound = {}
                if name in ("CrossEntropyLoss", "NLLLoss"):
                    bound = _loss_arguments(ctor.args, ctor.kwargs, ("weight", "size_average", "ignore_index"))
                    bound = {k: val for k, val in bound.items() if k in ("weight", "ignore_index", "reduction")}
                    bound.update(input=fwd.args[0], target=fwd.args[1])
                reason = _deliberate(name, bound) if bound else None
                marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
                cases.append(pytest.param(info.module_cls, name, module_input, id=f"{name}-{str(dtype)[6:]}-{i}", marks=marks))
    return cases


def _float_inputs(tree):
    """The floating tensors that require a gradient, in a flat list."""
    out = []
    for item in tree:
        if isinstance(item, torch.Tensor) and item.is_floating_point() and item.requires_grad:
            out.append(item)
    return out


def _compare(call_torch, call_smk, inputs):
    expected = call_torch()
    got = call_smk()
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, equal_nan=True)
    if not inputs or not expected.requires_grad:
        return
    torch.manual_seed(1)
    cotangent = torch.randn(expected.shape, dtype=expected.dtype)
    want = torch.autograd.grad(expected, inputs, cotangent, allow_unused=True)
    have = torch.autograd.grad(got, inputs, cotangent, allow_unused=True)
    for t, w, h in zip(inputs, want, have):
        w = torch.zeros_like(t) if w is None else w
        h = torch.zeros_like(t) if h is None else h
        assert h.dtype == w.dtype
        torch.testing.assert_close(h, w, equal_nan=True)


@pytest.mark.parametrize(("torch_op", "name", "sample"), _op_cases())
def test_opinfo_sample_matches_torch(torch_op, name, sample):
    smk_op = getattr(smt, name)
    args = (sample.input, *sample.args)
    inputs = _float_inputs([*args, *sample.kwargs.values()])
    _compare(lambda: torch_op(*args, **sample.kwargs), lambda: smk_op(*args, **sample.kwargs), inputs)


def _tangent_of(output):
    import torch.autograd.forward_ad as fwAD

    return fwAD.unpack_dual(output).tangent


@pytest.mark.parametrize(("torch_op", "name", "sample"), _op_cases())
def test_opinfo_sample_forward_mode_matches_torch(torch_op, name, sample):
    import torch.autograd.forward_ad as fwAD

    smk_op = getattr(smt, name)
    args = (sample.input, *sample.args)
    inputs = _float_inputs([*args, *sample.kwargs.values()])
    if not inputs:
        pytest.skip("no differentiable input")
    torch.manual_seed(2)
    tangents = {id(t): torch.randn(t.shape, dtype=t.dtype) for t in inputs}

    def run(op):
        with fwAD.dual_level():

            def dual(value):
                if isinstance(value, torch.Tensor) and id(value) in tangents:
                    return fwAD.make_dual(value.detach(), tangents[id(value)])
                return value

            out = op(*(dual(a) for a in args), **{k: dual(val) for k, val in sample.kwargs.items()})
            return out.detach(), _tangent_of(out)

    want, want_tangent = run(torch_op)
    got, got_tangent = run(smk_op)
    torch.testing.assert_close(got, want, equal_nan=True)
    if want_tangent is None or got_tangent is None:
        assert want_tangent is None or not want_tangent.any()
        assert got_tangent is None or not got_tangent.any()
        return
    assert got_tangent.dtype == want_tangent.dtype
    torch.testing.assert_close(got_tangent, want_tangent, equal_nan=True)


@pytest.mark.parametrize(("module_cls", "name", "module_input"), _module_cases())
def test_moduleinfo_input_matches_torch(module_cls, name, module_input):
    ctor, fwd = module_input.constructor_input, module_input.forward_input
    ours = getattr(smt, name)(*ctor.args, **ctor.kwargs)
    theirs = module_cls(*ctor.args, **ctor.kwargs)
    inputs = _float_inputs([*fwd.args, *fwd.kwargs.values()])
    _compare(lambda: theirs(*fwd.args, **fwd.kwargs), lambda: ours(*fwd.args, **fwd.kwargs), inputs)
