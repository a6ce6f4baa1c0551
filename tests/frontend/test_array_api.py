"""Any array-API array in, the same kind out, with the NumPy path's values."""

import numpy as np
import pytest

import softmaxkit as smk

X = np.array([[1.0, 2.0, 3.0], [1000.0, 0.0, -1000.0], [-np.inf, -np.inf, -np.inf]])
T = np.array([0, 2, 1])
CALLS = [
    ("softmax", lambda m, x: smk.softmax(x, temperature=2.0)),
    ("log_softmax", lambda m, x: smk.log_softmax(x, axis=0)),
    ("logsumexp", lambda m, x: smk.logsumexp(x, b=m.asarray([1.0, 2.0, 0.5]))),
    ("entropy", lambda m, x: smk.entropy(x)),
    ("kl_div", lambda m, x: smk.kl_div(x, m.flip(x, axis=1))),
    ("sigmoid", lambda m, x: smk.sigmoid(x)),
    ("log_sigmoid", lambda m, x: smk.log_sigmoid(x)),
    ("softplus", lambda m, x: smk.softplus(x)),
    ("cross_entropy", lambda m, x: smk.cross_entropy(x, m.asarray(T), label_smoothing=0.1, return_grad=True)),
    ("nll_loss", lambda m, x: smk.nll_loss(smk.log_softmax(x), m.asarray(T), return_grad=True)),
    ("bce", lambda m, x: smk.binary_cross_entropy_with_logits(x, m.zeros((3, 3), dtype=m.float64), return_grad=True)),
    ("softmax_vjp", lambda m, x: smk.softmax_vjp(smk.softmax(x), x)),
    ("log_softmax_vjp", lambda m, x: smk.log_softmax_vjp(smk.log_softmax(x), m.ones((3, 3), dtype=m.float64))),
    ("logsumexp_vjp", lambda m, x: smk.logsumexp_vjp(x, m.ones((3,), dtype=m.float64))),
]


def _values(out):
    return [np.asarray(o) for o in out] if isinstance(out, tuple) else [np.asarray(out)]


@pytest.mark.parametrize("name, call", CALLS, ids=[c[0] for c in CALLS])
def test_strict_array_api_arrays(name, call):
    xp = pytest.importorskip("array_api_strict")
    out = call(xp, xp.asarray(X))
    for o in out if isinstance(out, tuple) else (out,):
        assert type(o) is type(xp.asarray(X))
    expected = call(np, X)
    for got, want in zip(_values(out), _values(expected)):
        np.testing.assert_array_equal(got, want)


def test_torch_tensors_come_back_as_tensors():
    torch = pytest.importorskip("torch")
    x = torch.tensor(X, dtype=torch.float32)
    p = smk.softmax(x)
    assert isinstance(p, torch.Tensor) and p.dtype == torch.float32
    np.testing.assert_array_equal(p.numpy(), smk.softmax(X.astype(np.float32)))
    loss = smk.cross_entropy(x[:2], torch.tensor(T[:2]))
    assert isinstance(loss, torch.Tensor)


def test_jax_arrays_come_back_as_jax_arrays():
    jnp = pytest.importorskip("jax.numpy")
    x = jnp.asarray(X, dtype=jnp.float32)
    p = smk.softmax(x)
    assert type(p).__module__.startswith("jax")
    np.testing.assert_allclose(np.asarray(p), smk.softmax(X.astype(np.float32)), rtol=3e-7, atol=0)
