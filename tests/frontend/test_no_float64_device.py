"""Array-API devices without float64: the work runs in compensated float32.

array_api_strict has such a device; its arrays take the generic path, which
would otherwise convert to float64 there and fail.  Accuracy is measured in
ULP against mpmath.
"""

from __future__ import annotations

import numpy as np
import pytest

import softmaxkit as smk

from tests import reference as ref

xp = pytest.importorskip("array_api_strict")

# Stated bound for float32 computed in compensated float32 (exact shift,
# exp(hi) (1 + lo), cascaded sums): the float32 exp's own error, the
# division and the final rounding add up; 1600 random rows (scales 1 to
# 300, temperatures 0.05 to 3.3) gave at most 4.1 ULP (softmax), 3.7
# (gradient), 2.7 (log_softmax), 2.0 (loss).  logsumexp is within this
# many ULP of max(|lse|, max|x|), as in float64: a + log1p(s) can cancel.
FLOAT32_ULP = 6.0


def _device_without_float64():
    info = xp.__array_namespace_info__()
    for device in info.devices():
        if "float64" not in info.dtypes(device=device, kind="real floating"):
            return device
    pytest.skip("array_api_strict has no device without float64")


@pytest.fixture(scope="module")
def device():
    return _device_without_float64()


def _host(a):
    """A NumPy copy of an array on any array_api_strict device."""
    return np.asarray(a.to_device(xp.__array_namespace_info__().default_device()))


def _rows():
    rng = np.random.default_rng(3)
    rows = [
        rng.normal(scale=4.0, size=12),
        np.array([30.0, 0.0, -1.0, 2.5]),  # confident: p_max rounds to 1
        np.array([88.0, -15.0, 1e-3, 87.9]),
        np.array([0.0, -np.inf, 3.0, -np.inf]),
        rng.normal(scale=30.0, size=12),
        np.full(12, 7.25),
        rng.normal(scale=1e4, size=12),
    ]
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), -np.inf)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out.astype(np.float32)


# What broke: softmax, log_softmax, logsumexp and cross_entropy converted to
# float64 on every device and raised ValueError on a device without it.
@pytest.mark.parametrize("T", [1.0, 0.7, 3.0])
def test_softmax_family_on_a_device_without_float64(device, T):
    x = _rows()
    a = xp.asarray(x, device=device)
    p, lp = smk.softmax(a, temperature=T), smk.log_softmax(a, temperature=T)
    for out in (p, lp):
        assert out.device == device and out.dtype == xp.float32
    p, lp = _host(p), _host(lp)
    for i, row in enumerate(x):
        exact = ref.log_softmax(ref.to_mp(row), ref.mp.mpf(T))
        assert ref.ulp_error(lp[i], exact, np.float32) <= FLOAT32_ULP, i
        assert ref.ulp_error(p[i], [ref.mp.exp(v) for v in exact], np.float32) <= FLOAT32_ULP, i


def test_logsumexp_on_a_device_without_float64(device):
    x = _rows()
    out = smk.logsumexp(xp.asarray(x, device=device))
    assert out.device == device and out.dtype == xp.float32
    exact = [ref.lse(ref.to_mp(row)) for row in x]
    assert ref.ulp_error(_host(out), exact, np.float32) <= FLOAT32_ULP


def test_cross_entropy_on_a_device_without_float64(device):
    x = _rows()
    t = np.array([0, 1, 3, 2, 5, 4, 0])
    loss, grad = smk.cross_entropy(xp.asarray(x, device=device), xp.asarray(t, device=device), reduction="none", return_grad=True)
    assert loss.device == device and grad.device == device and grad.dtype == xp.float32
    loss, grad = _host(loss), _host(grad)
    for i, row in enumerate(x):
        coef, _ = ref.hard_coef(len(row), int(t[i]))
        exact_loss, exact_grad = ref.cross_entropy(ref.to_mp(row), coef)
        assert ref.ulp_error([loss[i]], [exact_loss], np.float32) <= FLOAT32_ULP, i
        assert ref.ulp_error(grad[i], exact_grad, np.float32) <= FLOAT32_ULP, i


# What broke: sigmoid, softplus and log_sigmoid asked for float64 without
# naming the device, and raised ValueError on a device without it.
@pytest.mark.parametrize("name", ["sigmoid", "softplus", "log_sigmoid"])
def test_elementwise_on_a_device_without_float64(device, name):
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(scale=s, size=40) for s in (1.0, 10.0, 60.0)] + [[0.0, -0.0, 88.5, -103.0, 1e-30, -1e-30, np.inf, -np.inf]])
    x = x.astype(np.float32)
    out = getattr(smk, name)(xp.asarray(x, device=device))
    assert out.device == device and out.dtype == xp.float32
    mx = ref.to_mp(x)
    exact = {
        "sigmoid": [ref.sigmoid(v) for v in mx],
        "softplus": [ref.softplus(v) for v in mx],
        "log_sigmoid": [-ref.softplus(-v) for v in mx],
    }[name]
    # Plain float32 here (nothing to compensate): 2.3 ULP the worst of 3500 points.
    assert ref.ulp_error(_host(out), exact, np.float32) <= 3.0


# What broke: integer input was promoted to float64 whatever its device, so
# every function raised on a device without float64; there it is float32.
def test_integer_input_on_a_device_without_float64(device):
    x = np.array([[3, -1, 0, 7], [0, 0, 0, 0]], dtype=np.int32)
    a = xp.asarray(x, device=device)
    p, lse, s = smk.softmax(a), smk.logsumexp(a), smk.sigmoid(a)
    for out in (p, lse, s):
        assert out.device == device and out.dtype == xp.float32
    for i, row in enumerate(x.astype(np.float32)):
        exact = ref.log_softmax(ref.to_mp(row))
        assert ref.ulp_error(_host(p)[i], [ref.mp.exp(v) for v in exact], np.float32) <= FLOAT32_ULP, i
    assert ref.ulp_error(_host(lse), [ref.lse(ref.to_mp(row)) for row in x.astype(np.float32)], np.float32) <= FLOAT32_ULP
    assert ref.ulp_error(_host(s).ravel(), [ref.sigmoid(v) for v in ref.to_mp(x.ravel().astype(np.float32))], np.float32) <= FLOAT32_ULP


# What broke: complex logsumexp asked for complex128 without naming the
# device, and raised ValueError on a device without float64.
def test_complex_logsumexp_on_a_device_without_float64(device):
    rng = np.random.default_rng(2)
    z = np.concatenate([rng.normal(scale=s, size=(20, 9)) + 1j * rng.normal(scale=3.0, size=(20, 9)) for s in (1.0, 5.0, 30.0)])
    z = z.astype(np.complex64)
    out = smk.logsumexp(xp.asarray(z, device=device))
    assert out.device == device and out.dtype == xp.complex64
    out = _host(out)
    for i, row in enumerate(z):
        terms = [ref.mp.exp(ref.mp.mpc(complex(v))) for v in row]
        total = ref.mp.fsum(terms)
        exact = ref.mp.log(total)
        # The documented scale: max(|part|, kappa (1 + max|Im x|)), kappa the cancellation in the sum.
        kappa = ref.mp.fsum(abs(t) for t in terms) / abs(total)
        floor = kappa * (1 + max(abs(row.imag)))
        for got, want in ((out[i].real, exact.real), (out[i].imag, exact.imag)):
            spacing = float(np.spacing(np.float32(max(abs(want), floor))))
            assert abs(float(got) - want) / spacing <= FLOAT32_ULP, i
