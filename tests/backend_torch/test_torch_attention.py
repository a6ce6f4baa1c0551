"""softmaxkit.torch.scaled_dot_product_attention and merge_attention_states:
API parity with torch's SDPA (values and gradients) for every mask kind,
causal and GQA; gradients against float64 finite differences (gradcheck);
edge rows; 16-bit dtypes; the merge's autograd."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F

import softmaxkit as smk
import softmaxkit.torch as smt

F64 = torch.float64


@pytest.fixture(autouse=True)
def _both_paths(numeric_path):
    """Every test runs through the native kernel (CPU float32 and bfloat16)
    and through the generic formulas."""
    return numeric_path


def _inputs(seed, dtype=torch.float32, hq=4, hkv=2, L=5, S=7, D=8, Dv=3):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, hq, L, D, generator=g, dtype=F64).to(dtype).requires_grad_()
    k = torch.randn(2, hkv, S, D, generator=g, dtype=F64).to(dtype).requires_grad_()
    v = torch.randn(2, hkv, S, Dv, generator=g, dtype=F64).to(dtype).requires_grad_()
    return q, k, v, g


MASKS = ["none", "bool", "float", "causal", "bool4d"]


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("gqa", [False, True], ids=["mha", "gqa"])
def test_parity_with_torch_sdpa(kind, gqa, dtype):
    q, k, v, g = _inputs(1, dtype, hkv=2 if gqa else 4)
    opts = {"enable_gqa": gqa}
    if kind == "bool":
        mask = torch.rand(5, 7, generator=g) < 0.7
        mask[:, 0] = True  # no empty row: torch's NaN is not parity
        opts["attn_mask"] = mask
    elif kind == "bool4d":
        mask = torch.rand(2, 4, 5, 7, generator=g) < 0.7
        mask[..., 0] = True
        opts["attn_mask"] = mask
    elif kind == "float":
        opts["attn_mask"] = torch.randn(4, 5, 7, generator=g, dtype=F64).to(dtype).requires_grad_()
    elif kind == "causal":
        opts["is_causal"] = True
    ours = smt.scaled_dot_product_attention(q, k, v, scale=0.5, **opts)
    theirs = F.scaled_dot_product_attention(q, k, v, scale=0.5, **opts)
    assert ours.dtype == dtype
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-13}
    torch.testing.assert_close(ours, theirs, **tol)
    wrt = [q, k, v] + ([opts["attn_mask"]] if kind == "float" else [])
    cot = torch.randn(ours.shape, generator=g, dtype=F64).to(dtype)
    for a, b in zip(torch.autograd.grad(ours, wrt, cot), torch.autograd.grad(theirs, wrt, cot)):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("options", [
    {"softcap": 2.0, "sinks": True, "mask": "float"},
    {"sinks": True, "causal": True, "mask": "bool"},
], ids=["softcap-sinks-float-mask", "sinks-causal-bool-mask"])
def test_gradients_against_finite_differences(options):
    q, k, v, g = _inputs(2, F64, hq=2, hkv=1, L=3, S=4, D=2, Dv=2)
    sinks = torch.randn(2, generator=g, dtype=F64).requires_grad_()
    if options["mask"] == "float":
        mask = torch.randn(3, 4, generator=g, dtype=F64).requires_grad_()
    else:
        mask = torch.tensor([[True, False, True, True], [False, False, False, False], [True, True, False, True]])
    extras = (sinks, mask) if mask.dtype == F64 else (sinks,)

    def f(q, k, v, sinks, *m):
        out, lse = smt.scaled_dot_product_attention(
            q, k, v, attn_mask=m[0] if m else mask, is_causal=options.get("causal", False), enable_gqa=True,
            softcap=options.get("softcap"), sinks=sinks, return_lse=True,
        )
        return out, lse

    assert torch.autograd.gradcheck(f, (q, k, v) + extras, eps=1e-6, atol=1e-8, rtol=1e-6)


def test_forward_is_the_numpy_attention_bit_for_bit():
    q, k, v, g = _inputs(3, torch.float32)
    sinks = torch.randn(4, generator=g)
    out, lse = smt.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True, softcap=5.0, sinks=sinks, return_lse=True)
    n = [t.detach().numpy() for t in (q, k, v)]
    o2, l2 = smk.attention(*n, causal="top_left", softcap=5.0, sinks=sinks.numpy(), return_lse=True)
    np.testing.assert_array_equal(out.detach().numpy(), o2)
    np.testing.assert_array_equal(lse.detach().numpy(), l2)


def test_empty_rows_give_zero_output_and_zero_finite_gradients():
    # torch gives NaN on a fully masked row (values and gradients).
    q, k, v, _ = _inputs(4, torch.float32)
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[2] = False
    mask[:, 6] = False
    with torch.no_grad():
        k[:, :, 6] = float("nan")  # masked everywhere: never read
        v[:, :, 6] = float("inf")
    out = smt.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    assert torch.all(out[:, :, 2] == 0) and torch.isfinite(out).all()
    out.sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert torch.all(q.grad[:, :, 2] == 0)
    assert torch.all(k.grad[:, :, 6] == 0) and torch.all(v.grad[:, :, 6] == 0)
    additive = torch.zeros(5, 7, requires_grad=True)
    with torch.no_grad():
        additive[2] = -float("inf")
    q.grad = None
    out = smt.scaled_dot_product_attention(q, k[:, :, :6], v[:, :, :6], attn_mask=additive[:, :6], enable_gqa=True)
    out.sum().backward()
    assert torch.all(q.grad[:, :, 2] == 0) and torch.isfinite(additive.grad).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_16_bit_in_same_dtype_out(dtype):
    q, k, v, _ = _inputs(5, dtype)
    out, lse = smt.scaled_dot_product_attention(q, k, v, enable_gqa=True, return_lse=True)
    assert out.dtype == dtype and lse.dtype == torch.float32
    out.float().sum().backward()
    wide = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = smt.scaled_dot_product_attention(*wide, enable_gqa=True)
    ref.sum().backward()
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=2e-2)
    for t, w in zip((q, k, v), wide):
        assert t.grad.dtype == dtype
        torch.testing.assert_close(t.grad.double(), w.grad, rtol=0, atol=5e-2)


def test_errors():
    q, k, v, _ = _inputs(6)
    with pytest.raises(ValueError, match="dropout_p must be 0.0: dropout is not supported; got dropout_p=0.1"):
        smt.scaled_dot_product_attention(q, k, v, dropout_p=0.1, enable_gqa=True)
    with pytest.raises(ValueError, match="enable_gqa=True"):
        smt.scaled_dot_product_attention(q, k, v)
    with pytest.raises(TypeError, match="query must be a torch.Tensor"):
        smt.scaled_dot_product_attention(q.detach().numpy(), k, v)


def test_merge_forward_and_gradients():
    g = torch.Generator().manual_seed(7)
    outs = torch.randn(3, 4, 2, generator=g, dtype=F64)
    lses = torch.randn(3, 4, generator=g, dtype=F64) * 3
    for base in ("e", 2):
        assert torch.autograd.gradcheck(lambda o, l, base=base: smt.merge_attention_states(o, l, dim=0, base=base), (outs.clone().requires_grad_(), lses.clone().requires_grad_()))
    # dim and a list of states
    o_list = [outs[i].clone().requires_grad_() for i in range(3)]
    o, l = smt.merge_attention_states(o_list, list(lses), dim=-1)
    o2, l2 = smk.merge_attention_states(outs.movedim(0, 1).numpy(), lses.T.numpy(), axis=-1)
    np.testing.assert_array_equal(o.detach().numpy(), o2)
    np.testing.assert_array_equal(l.detach().numpy(), l2)


def test_merge_empty_state_is_never_read():
    o = torch.tensor([[1.0, 2.0], [float("nan"), float("nan")]], requires_grad=True)
    for empty, fill in (("-inf", -float("inf")), ("+inf", float("inf"))):
        lse = torch.tensor([0.5, fill], requires_grad=True)
        out, merged = smt.merge_attention_states(o, lse, empty_lse=empty)
        assert torch.equal(out, o[0].detach()) and merged.item() == 0.5
        (out.sum() + merged).backward()
        assert torch.equal(o.grad, torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
        assert torch.equal(lse.grad, torch.tensor([1.0, 0.0]))
        o.grad = None


def test_compiled_fullgraph_matches_eager_and_opcheck():
    q, k, v, g = _inputs(8)
    mask = torch.randn(4, 5, 7, generator=g).requires_grad_()
    sinks = torch.randn(4, generator=g).requires_grad_()

    def f(q, k, v, mask, sinks):
        out, lse = smt.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True, sinks=sinks, softcap=3.0, return_lse=True)
        return out.sum() + lse.sum()

    wrt = (q, k, v, mask, sinks)
    compiled = torch.autograd.grad(torch.compile(f, fullgraph=True)(*wrt), wrt)
    eager = torch.autograd.grad(f(*wrt), wrt)
    for a, b in zip(compiled, eager):
        assert torch.equal(a, b)
    result = torch.library.opcheck(torch.ops.softmaxkit.attention.default, (q, k, v, mask, sinks, None, 0.5, None))
    assert all(r == "SUCCESS" for r in result.values())


def test_no_silent_second_derivative():
    q = torch.randn(1, 1, 2, 3, dtype=F64, requires_grad=True)
    for out in (smt.scaled_dot_product_attention(q, q, q), smt.merge_attention_states(q[0, 0], q[0, 0, :, 0])[0]):
        (g,) = torch.autograd.grad(out.sum(), q, create_graph=True)
        with pytest.raises(RuntimeError):
            g.sum().backward()
