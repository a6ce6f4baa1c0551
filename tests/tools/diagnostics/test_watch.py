"""softmaxkit.torch.watch on models with planted NaNs and infs."""

import logging

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from softmaxkit.tools.report import LogitReport  # noqa: E402
from softmaxkit.tools.watch import NonFiniteReport  # noqa: E402
from softmaxkit.torch import NonFiniteError, watch  # noqa: E402

D = 4


class Planted(nn.Module):
    """Identity, or a product with ``bad`` (NaN or inf in some features) once armed."""

    def __init__(self, value):
        super().__init__()
        self.armed = False
        self.register_buffer("bad", torch.tensor([1.0, value, 1.0, value]))

    def forward(self, x):
        return x * self.bad if self.armed else x * 1.0


class NaNGrad(torch.autograd.Function):
    """Identity forward; NaN gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


class BadBackward(nn.Module):
    def forward(self, x):
        return NaNGrad.apply(x)


class SafeLog(nn.Module):
    """log(x) where x > 0, else 0: the NaN of log(-x) is masked out."""

    def forward(self, x):
        return torch.where(x > 0, torch.log(x), torch.zeros_like(x))


class SqrtRelu(nn.Module):
    """sqrt(relu(x)): finite forward, but sqrt's gradient at 0 is inf."""

    def forward(self, x):
        return torch.sqrt(torch.relu(x)) + 0.0


class Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.s = nn.Parameter(torch.tensor(1e-30))

    def forward(self, x):
        # The product is not the last node, so no node hook sees ds.
        return x * self.s + 0.0


class Block(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.proj = nn.Linear(D, D)
        self.attn = inner

    def forward(self, x):
        return self.attn(self.proj(x))


class Encoder(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.layers = nn.ModuleList([Block(nn.Identity()), Block(inner)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class Net(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.encoder = Encoder(inner)
        self.head = nn.Linear(D, 3)

    def forward(self, x):
        return self.head(self.encoder(x))


def make(inner):
    torch.manual_seed(0)
    return Net(inner)


def x_batch(rows=5):
    torch.manual_seed(1)
    return torch.randn(rows, D)


def step(net, x=None):
    out = net(x_batch() if x is None else x)
    out.square().sum().backward()
    return out


def no_hooks_left(net):
    return all(
        not m._forward_hooks and not m._forward_pre_hooks for m in net.modules()
    ) and all(not p._backward_hooks for p in net.parameters())


class TestForward:
    @pytest.mark.parametrize("value, kind", [(float("nan"), "NaN"), (float("inf"), "inf")])
    def test_planted_in_named_submodule(self, value, kind):
        inner = Planted(value)
        net = make(inner)
        with watch(net) as w:
            step(net)
            inner.armed = True
            with pytest.raises(NonFiniteError) as exc:
                step(net)
        r = exc.value.report
        assert isinstance(r, NonFiniteReport)
        assert (r.phase, r.module, r.module_type, r.function, r.kind, r.tensor) == (
            "forward", "encoder.layers.1.attn", "Planted", None, kind, "output"
        )
        assert r.step == 1 and w.current_step == 1
        (inp,) = r.inputs
        (out,) = r.outputs
        assert inp.nonfinite_count == 0 and inp.shape == (5, D) and inp.dtype == "float32"
        assert out.nonfinite_count == 10
        assert (out.nan_count, out.posinf_count + out.neginf_count) == ((10, 0) if kind == "NaN" else (0, 10))
        assert out.min is not None and out.abs_max >= max(abs(out.min), abs(out.max))
        message = str(exc.value)
        assert f"{kind} in forward, step 1, at encoder.layers.1.attn (Planted)" in message
        assert "NaN 10" in message or "inf" in message

    def test_non_finite_input_to_the_model(self):
        net = make(nn.Identity())
        x = x_batch()
        x[0, 0] = float("nan")
        with pytest.raises(NonFiniteError) as exc, watch(net):
            net(x)
        r = exc.value.report
        assert (r.module, r.tensor, r.location) == ("", "input[0]", "(root model) (Net)")

    def test_masked_intermediate_nan_needs_the_function_check(self):
        net = make(SafeLog())
        with watch(net):  # functions=False: the module outputs are all finite
            out = step(net)
        assert torch.isfinite(out).all()
        with pytest.raises(NonFiniteError) as exc, watch(net, functions=True):
            step(net)
        r = exc.value.report
        assert (r.phase, r.module, r.module_type, r.function, r.kind) == (
            "forward", "encoder.layers.1.attn", "SafeLog", "torch.log", "NaN"
        )
        assert r.inputs[0].min < 0 and r.inputs[0].nonfinite_count == 0
        assert "torch.log" in str(exc.value)

    def test_function_outside_the_model(self):
        net = make(nn.Identity())
        with pytest.raises(NonFiniteError) as exc, watch(net, functions=True):
            torch.log(net(x_batch()) - 100.0).sum()
        r = exc.value.report
        assert (r.module, r.module_type, r.function, r.location) == (None, None, "torch.log", "outside the model")


class TestBackward:
    @pytest.mark.parametrize("functions", [False, True])
    def test_custom_function_gradient(self, functions):
        net = make(BadBackward())
        with watch(net, functions=functions):
            out = net(x_batch())  # forward is clean
            with pytest.raises(NonFiniteError) as exc:
                out.sum().backward()
        r = exc.value.report
        assert (r.phase, r.module, r.module_type, r.kind) == ("backward", "encoder.layers.1.attn", "BadBackward", "NaN")
        assert r.tensor.startswith("grad_input[0] of NaNGrad")
        assert r.inputs[0].nonfinite_count == 0 and r.outputs[0].nan_count == 5 * D

    def test_function_backward_is_named(self):
        net = make(SqrtRelu())
        with pytest.raises(NonFiniteError) as exc, watch(net, functions=True):
            step(net)
        r = exc.value.report
        assert (r.phase, r.module, r.function, r.kind) == ("backward", "encoder.layers.1.attn", "torch.sqrt", "inf")
        assert "backward of torch.sqrt" in str(exc.value)

    def test_masked_backward_inf_needs_the_function_check(self):
        # relu's backward zeroes the inf where x <= 0, so no gradient that
        # leaves the module is non-finite.
        net = make(SqrtRelu())
        with watch(net):
            step(net)
        assert all(torch.isfinite(p.grad).all() for p in net.parameters())

    def test_parameter_gradient(self):
        # x * s with x ~ 3e38 and s = 1e-30: finite forward and input
        # gradient, but ds = sum(x * g) overflows.
        net = nn.Sequential(Scale())
        x = torch.full((4,), 3e38)
        with pytest.raises(NonFiniteError) as exc, watch(net):
            net(x).sum().backward()
        r = exc.value.report
        assert (r.phase, r.module, r.module_type, r.tensor, r.kind) == (
            "backward", "0", "Scale", "grad of parameter s", "inf"
        )


class TestRecord:
    def test_one_report_per_step_and_run_goes_on(self, caplog):
        inner = Planted(float("nan"))
        inner.armed = True
        net = make(inner)
        with caplog.at_level(logging.WARNING, logger="softmaxkit.watch"), watch(net, mode="record") as w:
            for _ in range(3):
                step(net)
        forward = [r for r in w.reports if r.phase == "forward"]
        assert [r.step for r in forward] == [0, 1, 2]
        assert {r.module for r in forward} == {"encoder.layers.1.attn"}
        assert len(w.reports) <= 6  # at most one per step and phase
        assert sum("non-finite value" in m for m in caplog.messages) == len(w.reports)

    def test_clean_run_records_nothing(self):
        net = make(nn.Identity())
        with watch(net, mode="record", functions=True) as w:
            for _ in range(2):
                step(net)
        assert w.reports == []


class TestStartStop:
    def test_start_and_stop_calls(self):
        inner = Planted(float("nan"))
        net = make(inner)
        w = watch(net)
        assert no_hooks_left(net)  # watch() alone installs nothing
        assert w.start() is w
        assert not no_hooks_left(net)
        inner.armed = True
        with pytest.raises(NonFiniteError):
            step(net)
        w.stop()
        assert no_hooks_left(net)
        step(net)  # unwatched: no error
        w.stop()  # idempotent

    def test_start_twice(self):
        net = make(nn.Identity())
        w = watch(net).start()
        with pytest.raises(RuntimeError, match="already started"):
            w.start()
        w.stop()

    def test_context_manager_removes_hooks_after_an_error(self):
        inner = Planted(float("nan"))
        inner.armed = True
        net = make(inner)
        with pytest.raises(NonFiniteError), watch(net, functions=True):
            step(net)
        assert no_hooks_left(net)
        step(net)
        net2 = make(SafeLog())
        step(net2)  # the function mode is gone too


class TestSteps:
    def test_forward_passes_count_from_zero(self):
        inner = Planted(float("nan"))
        net = make(inner)
        with watch(net, mode="record") as w:
            for i in range(4):
                inner.armed = i == 2
                step(net)
        assert w.current_step == 3
        assert {r.step for r in w.reports} == {2}

    def test_manual_steps(self):
        inner = Planted(float("nan"))
        net = make(inner)
        with watch(net, mode="record") as w:
            assert w.step(10) == 10
            step(net)
            step(net)  # no longer counted
            assert w.step() == 11
            inner.armed = True
            step(net)
        assert w.current_step == 11
        assert {r.step for r in w.reports} == {11}


class TestDiagnoseLogits:
    def test_every_step(self):
        net = make(nn.Identity())
        with watch(net, diagnose_logits=True) as w:
            for _ in range(3):
                step(net)
        assert [s for s, _ in w.diagnostics] == [0, 1, 2]
        assert all(isinstance(r, LogitReport) and (r.rows, r.classes) == (5, 3) for _, r in w.diagnostics)

    def test_callable_and_every(self):
        class DictOut(nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = nn.Linear(D, 7)

            def forward(self, x):
                return {"logits": self.lin(x) * 100.0, "aux": x}

        net = DictOut()
        with watch(net, diagnose_logits=lambda out: out["logits"], diagnose_every=2) as w:
            for _ in range(5):
                net(x_batch())
        assert [s for s, _ in w.diagnostics] == [0, 2, 4]
        assert w.diagnostics[0][1].classes == 7

    def test_picker_must_return_a_tensor(self):
        net = make(nn.Identity())
        with pytest.raises(TypeError, match="diagnose_logits must pick a tensor"), watch(
            net, diagnose_logits=lambda out: out.tolist()
        ):
            net(x_batch())


class TestArguments:
    @pytest.mark.parametrize(
        "model, kwargs, exc, match",
        [
            (object(), {}, TypeError, "model must be a torch.nn.Module"),
            (None, {"mode": "warn"}, ValueError, "mode must be one of 'raise', 'record'; got 'warn'"),
            (None, {"functions": 1}, TypeError, "functions must be True or False"),
            (None, {"diagnose_logits": 3}, TypeError, "diagnose_logits must be None, True, False or a callable"),
            (None, {"diagnose_every": 0}, ValueError, "diagnose_every must be an int >= 1; got 0"),
            (None, {"diagnose_every": 1.5}, TypeError, "diagnose_every must be an int"),
        ],
    )
    def test_messages(self, model, kwargs, exc, match):
        with pytest.raises(exc, match=match):
            watch(make(nn.Identity()) if model is None else model, **kwargs)

    def test_step_value(self):
        with pytest.raises(TypeError, match="value must be an int"):
            watch(make(nn.Identity())).step("3")
