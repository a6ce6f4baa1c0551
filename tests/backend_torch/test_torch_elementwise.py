"""Derivatives of sigmoid, log-sigmoid, softplus and BCE with logits under torch autograd.

Both routes are checked: the softmaxkit.torch functions and the NumPy-style
functions given a torch tensor (which run the shared formulas on torch
operations, so autograd differentiates the formulas themselves).  Each
derivative is compared with its exact value from mpmath at 0, -0, tiny,
moderate and large |x| and the infinities, in float32 and float64.
"""

import math

import mpmath as mp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
TF = torch.nn.functional

import softmaxkit as smk  # noqa: E402
import softmaxkit.torch as smt  # noqa: E402

from tests import reference as ref  # noqa: E402

INF = math.inf
# around 0, moderate, near float32 and float64 overflow and underflow of exp, huge, infinite
POINTS = [0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8, 0.5, -0.5, 3.0, -3.0, 30.0, -30.0, 80.0, -80.0, 88.5, -88.5, -103.5]
POINTS += [700.0, -700.0, 709.5, -709.5, -745.0, 1e300, -1e300, INF, -INF]


def _sigma(x):
    if x == INF:
        return mp.mpf(1)
    if x == -INF:
        return mp.mpf(0)
    return 1 / (1 + mp.exp(-mp.mpf(x)))


# name -> (function, exact first derivative, exact second derivative), with
# s = sigmoid(x) and r = sigmoid(-x)
FUNCTIONS = {
    "smt.sigmoid": (smt.sigmoid, lambda s, r: s * r, lambda s, r: s * r * (r - s)),
    "smt.softplus": (smt.softplus, lambda s, r: s, lambda s, r: s * r),
    "smt.logsigmoid": (smt.logsigmoid, lambda s, r: r, lambda s, r: -s * r),
    "smk.sigmoid": (smk.sigmoid, lambda s, r: s * r, lambda s, r: s * r * (r - s)),
    "smk.softplus": (smk.softplus, lambda s, r: s, lambda s, r: s * r),
    "smk.log_sigmoid": (smk.log_sigmoid, lambda s, r: r, lambda s, r: -s * r),
}


def _derivatives(fn, x, dtype):
    xt = torch.tensor(x, dtype=dtype, requires_grad=True)
    (d1,) = torch.autograd.grad(fn(xt), xt, create_graph=True)
    (d2,) = torch.autograd.grad(d1, xt)
    return float(d1.detach()), float(d2)


# What broke: torch.autograd gave sigmoid'(0) = 0 (the true value is 1/4):
# the formula's e^{-|x|} has the derivative of |x| at 0, which torch takes
# as 0.  softplus' and log_sigmoid' at 0 came out right only because torch
# splits the tie of max(x, 0) evenly; second derivatives at 0 were wrong.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_elementwise_derivatives_at_zero_and_everywhere(name, dtype):
    fn, first, second = FUNCTIONS[name]
    np_dtype = np.dtype(str(dtype)[6:])
    for x in POINTS:
        x_rounded = float(torch.tensor(x, dtype=dtype))
        s, r = _sigma(x_rounded), _sigma(-x_rounded)
        d1, d2 = _derivatives(fn, x, dtype)
        exact = first(s, r)
        if exact == 0:
            assert d1 == 0, (x, d1)
        else:
            assert ref.ulp_error([d1], [exact], np_dtype) <= 2, (x, d1, float(exact))
        # The second derivative is a difference (s r (r - s)): bounded in ULP
        # of its largest term, s r.
        scale = float(s * r)
        assert abs(d2 - float(second(s, r))) <= 4 * float(np.spacing(np.asarray(scale, dtype=np_dtype))), (x, d2)


@pytest.mark.parametrize("name", ["smt.sigmoid", "smt.softplus", "smt.logsigmoid"])
def test_elementwise_values_match_torch(name):
    ours = FUNCTIONS[name][0]
    theirs = {"smt.sigmoid": torch.sigmoid, "smt.softplus": TF.softplus, "smt.logsigmoid": TF.logsigmoid}[name]
    x = torch.linspace(-15.0, 15.0, 101, dtype=torch.float64)
    for dtype in (torch.float32, torch.float64):
        got = ours(x.to(dtype))
        assert got.dtype == dtype
        # torch's softplus is linear above its threshold of 20; inside it they agree
        torch.testing.assert_close(got, theirs(x.to(dtype)))


# What broke: the double backward of BCE with logits went through the
# sigmoid formula and gave 0 for the second derivative at logit 0.
@pytest.mark.parametrize("route", ["smt", "smk"])
@pytest.mark.parametrize("y", [0.0, 0.25, 1.0])
@pytest.mark.parametrize("pos_weight", [None, 3.0])
def test_bce_with_logits_derivatives_at_zero_and_everywhere(route, y, pos_weight):
    beta = None if pos_weight is None else torch.tensor(pos_weight, dtype=torch.float64)
    b = 1 if pos_weight is None else pos_weight

    def loss(x):
        target = torch.full_like(x, y)
        if route == "smt":
            return smt.binary_cross_entropy_with_logits(x, target, pos_weight=beta, reduction="sum")
        return smk.binary_cross_entropy_with_logits(x, target, pos_weight=beta, reduction="sum")

    for x in POINTS:
        s, r = _sigma(x), _sigma(-x)
        d1, d2 = _derivatives(loss, x, torch.float64)
        exact = float((1 - y) * s - b * y * r)
        assert abs(d1 - exact) <= 4 * np.spacing(abs(exact)) + 2 * np.spacing(float(b)), (x, d1, exact)
        assert d2 == pytest.approx(float((1 - y + b * y) * s * r), rel=1e-14, abs=1e-300), x


def test_zero_initialised_logistic_head_gets_a_gradient():
    x = torch.zeros(4, requires_grad=True)
    (g,) = torch.autograd.grad(smk.sigmoid(x).sum(), x)
    assert g.tolist() == [0.25] * 4
    (g,) = torch.autograd.grad(smt.sigmoid(x).sum(), x)
    assert g.tolist() == [0.25] * 4
