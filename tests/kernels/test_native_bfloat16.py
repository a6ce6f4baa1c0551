"""bfloat16 through the wrappers and the public functions: ml_dtypes.bfloat16
arrays, 2-byte integer arrays holding its bits with ``bfloat16=True`` (what a
torch caller passes), and the errors that name the argument and the dtypes.
The values are checked in test_native_accuracy and test_native_parity."""

import numpy as np
import pytest

import softmaxkit as smk
from softmaxkit import kernels as _native
from softmaxkit.kernels import numpy_adapter

from tests.reference import BFLOAT16

pytestmark = pytest.mark.skipif(BFLOAT16 is None, reason="needs ml_dtypes")


def inputs(shape=(5, 37), seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 4).astype(BFLOAT16)
    x[1, 3] = np.inf
    x[2] = -np.inf
    x[3, 0] = np.nan
    q = rng.dirichlet(np.ones(shape[-1]), shape[0]).astype(BFLOAT16)
    g = rng.standard_normal(shape).astype(BFLOAT16)
    t = rng.integers(0, shape[-1], shape[0])
    return x, q, g, t


def wrapper_calls(x, q, g, t, as_bits):
    """Every wrapper on bfloat16 inputs: ml_dtypes arrays, or (as_bits) their
    uint16 views with bfloat16=True.  Returns the outputs of each (bfloat16
    as uint16) as a tuple."""
    view = (lambda a: a.view(np.uint16)) if as_bits else (lambda a: a)
    flag = {"bfloat16": True} if as_bits else {}
    rows = x.shape[:-1]

    def out(shape=x.shape):
        return view(np.empty(shape, BFLOAT16))

    results = {}
    for name, kernel, args in [
        ("softmax_into", _native.softmax_into, (view(x),)),
        ("log_softmax_into", _native.log_softmax_into, (view(x),)),
        ("softmax_vjp_into", _native.softmax_vjp_into, (view(q), view(g))),
        ("log_softmax_vjp_into", _native.log_softmax_vjp_into, (view(x), view(g))),
    ]:
        o = out()
        kernel(*args, o, **flag)
        results[name] = (o.view(np.uint16).copy(),)
    o = out(rows)
    _native.logsumexp_into(view(x), o, **flag)
    results["logsumexp_into"] = (o.view(np.uint16).copy(),)
    for kind, targets in (("indices", t), ("probabilities", view(q))):
        loss, grad = np.empty(rows), out()
        _native.cross_entropy_into(view(x), targets, loss, grad, label_smoothing=0.1, **flag)
        results[f"cross_entropy_into {kind}"] = (loss.copy(), grad.view(np.uint16).copy())
    return results


def test_bits_with_the_flag_equal_ml_dtypes_arrays(native):
    x, q, g, t = inputs()
    typed, as_bits = wrapper_calls(x, q, g, t, False), wrapper_calls(x, q, g, t, True)
    assert typed.keys() == as_bits.keys()
    for name in typed:
        for a, b in zip(typed[name], as_bits[name]):
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_wrappers_match_the_public_functions(native):
    x, q, g, t = inputs(seed=1)
    typed = wrapper_calls(x, q, g, t, False)
    assert typed["softmax_into"][0].tobytes() == smk.softmax(x).tobytes()
    assert typed["logsumexp_into"][0].tobytes() == smk.logsumexp(x).tobytes()
    loss, grad = smk.cross_entropy(x, t, label_smoothing=0.1, reduction="sum", return_grad=True)
    assert typed["cross_entropy_into indices"][1].tobytes() == grad.tobytes()


def test_torch_bfloat16_through_uint16_views(native):
    torch = pytest.importorskip("torch")
    x, _, _, t = inputs(seed=2)
    xt = torch.from_numpy(x.view(np.uint16).copy()).view(torch.bfloat16)
    out = torch.empty_like(xt)
    _native.softmax_into(xt.view(torch.uint16).numpy(), out.view(torch.uint16).numpy(), bfloat16=True)
    assert out.view(torch.uint16).numpy().tobytes() == smk.softmax(x).tobytes()
    loss, grad = torch.empty(xt.shape[0], dtype=torch.float64), torch.empty_like(xt)
    _native.cross_entropy_into(
        xt.view(torch.uint16).numpy(), torch.from_numpy(t).numpy(), loss.numpy(), grad.view(torch.uint16).numpy(),
        bfloat16=True,
    )
    want_loss, want_grad = np.empty(x.shape[0]), np.empty_like(x)
    _native.cross_entropy_into(x, t, want_loss, want_grad)
    np.testing.assert_array_equal(loss.numpy(), want_loss)
    assert grad.view(torch.uint16).numpy().tobytes() == want_grad.tobytes()


def test_public_functions_take_the_kernels(native):
    x, q, _, t = inputs()
    assert numpy_adapter.eligible(x, -1) and numpy_adapter.eligible_pair(x, q, -1)
    assert numpy_adapter.cross_entropy_inputs(x, q, -1, None, -100) is not None
    assert numpy_adapter.cross_entropy_inputs(x, t, -1, None, -100) is not None
    for fn in (smk.softmax, smk.log_softmax, smk.logsumexp):
        assert fn(x).dtype == BFLOAT16


def test_probability_targets_refuse_a_class_ignore_index_like_the_generic_path(native):
    x, q, _, _ = inputs()
    for run in (lambda: smk.cross_entropy(x, q, ignore_index=3), lambda: smk.cross_entropy(x, q, ignore_index=0)):
        with pytest.raises(ValueError, match="ignore_index"):
            run()
        with _native.disabled(), pytest.raises(ValueError, match="ignore_index"):
            run()


def test_errors_name_the_argument_and_bfloat16(native):
    x, _, _, _ = inputs()
    with pytest.raises(TypeError, match=r"out must hold bfloat16 .*got format 'f'"):
        _native.softmax_into(x, np.empty(x.shape, np.float32))
    with pytest.raises(TypeError, match=r"x must hold float16, float32 or float64, or bfloat16 .*got format 'H'"):
        _native.softmax_into(x.view(np.uint16), np.empty(x.shape, np.uint16))
    with pytest.raises(TypeError, match=r"x must hold bfloat16 .*got format 'f'"):
        _native.logsumexp_into(np.zeros((2, 3), np.float32), np.zeros(2, np.float32), bfloat16=True)
    with pytest.raises(TypeError, match=r"cotangent must hold bfloat16"):
        _native.softmax_vjp_into(x, np.zeros(x.shape, np.float16), np.empty_like(x))
    with pytest.raises(TypeError, match=r"probs must hold bfloat16"):
        _native.cross_entropy_into(x, np.zeros(x.shape, np.float32), np.empty(x.shape[0]))
