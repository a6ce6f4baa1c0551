"""softmaxkit.torch.watch names the cause: where values grew, the parameters there, the optimizer step, compiled models."""

import logging
import math

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from softmaxkit.tools.watch import GradientTrail, Growth, ModuleTrail
from softmaxkit.torch import NonFiniteError, watch

D = 16


class Block(nn.Module):
    """A pre-LayerNorm transformer block, as in GPT-2: the residual stream carries any growth on."""

    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(D)
        self.attn = nn.MultiheadAttention(D, 2, batch_first=True)
        self.ln_2 = nn.LayerNorm(D)
        self.mlp = nn.Sequential(nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, D))

    def forward(self, x):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class TinyGPT(nn.Module):
    def __init__(self, layers=3, vocab=11):
        super().__init__()
        self.wte = nn.Embedding(vocab, D)
        self.h = nn.ModuleList([Block() for _ in range(layers)])
        self.ln_f = nn.LayerNorm(D)
        self.head = nn.Linear(D, vocab)

    def forward(self, ids):
        x = self.wte(ids)
        for block in self.h:
            x = block(x)
        return self.head(self.ln_f(x))


def tiny_gpt():
    torch.manual_seed(0)
    return TinyGPT()


def ids():
    return torch.randint(0, 11, (2, 6), generator=torch.Generator().manual_seed(1))


def train_step(model, opt=None, scale=1.0):
    x = ids()
    logits = model(x)
    loss = nn.functional.cross_entropy(logits.flatten(0, 1), x.flatten())
    (scale * loss).backward()
    if opt is not None:
        opt.step()
        opt.zero_grad()
    return loss


def first_report(model, steps, grow=None, **kwargs):
    """Train until watch raises; ``grow(model)`` runs after each step."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    with pytest.raises(NonFiniteError) as exc, watch(model, **kwargs):
        for _ in range(steps):
            train_step(model, opt)
            if grow is not None:
                with torch.no_grad():
                    grow(model)
    return exc.value.report


class TestWhereValuesGrew:
    def test_gpt2_scaled_layer_is_named_not_the_layer_norm_after_it(self):
        transformers = pytest.importorskip("transformers")
        transformers.logging.set_verbosity_error()
        config = transformers.GPT2Config(
            n_layer=3, n_embd=32, n_head=2, vocab_size=50, n_positions=16, bos_token_id=0, eos_token_id=0
        )
        torch.manual_seed(0)
        model = transformers.GPT2LMHeadModel(config)
        with torch.no_grad():
            model.transformer.h[1].mlp.c_fc.weight.mul_(1e30)
        x = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(0))
        with pytest.raises(NonFiniteError) as exc, watch(model):
            model(x, labels=x).loss.backward()
        r = exc.value.report
        # The NaN shows where the residual stream of about 1e30 is squared
        # in a LayerNorm; the values grew two blocks earlier.
        assert r.module.endswith("ln_1") or r.module.endswith("ln_f")
        assert isinstance(r.growth, Growth)
        assert (r.growth.module, r.growth.module_type) == ("transformer.h.1.mlp.c_fc", "Conv1D")
        assert r.growth.baseline_step is None and r.growth.factor > 1e20
        weight = next(s for s in r.parameters if s.name == "weight")
        assert weight.shape == (32, 128) and weight.abs_max > 1e28
        text = str(exc.value)
        assert "grew at  transformer.h.1.mlp.c_fc (Conv1D)" in text
        assert "> transformer.h.1.mlp.c_fc" in text  # marked in the trail

    def test_weight_growing_over_steps(self):
        def grow(model):
            model.h[1].mlp[2].weight.mul_(30.0)

        r = first_report(tiny_gpt(), 40, grow)
        assert r.module != "h.1.mlp.2"
        assert (r.growth.module, r.growth.module_type) == ("h.1.mlp.2", "Linear")
        assert r.growth.baseline_step == r.trail_steps[0] and r.growth.step == r.step
        assert r.growth.factor > 1e6
        # The ring buffer: the last 8 steps, up to the one that failed.
        assert r.trail_steps == tuple(range(r.step - 7, r.step + 1))
        row = next(t for t in r.trail if t.module == "h.1.mlp.2")
        assert isinstance(row, ModuleTrail) and len(row.abs_max) == 8
        assert all(b > 10 * a for a, b in zip(row.abs_max[:-2], row.abs_max[1:-1]))
        names = [t.module for t in r.trail]
        assert names.index("h.1.mlp.1") < names.index("h.1.mlp.2") < names.index("h.1.mlp") < names.index("h.1")
        # zero_grad() dropped the gradients; the trail kept their abs-max.
        assert [s.name for s in r.parameters] == ["weight", "bias"]
        assert r.parameters[0].abs_max > 1e10
        assert [g.parameter for g in r.grad_trail] == ["h.1.mlp.2.weight", "h.1.mlp.2.bias"]
        assert all(isinstance(g, GradientTrail) and len(g.abs_max) == 8 for g in r.grad_trail)
        assert r.grad_trail[0].abs_max[-1] is None and r.grad_trail[0].abs_max[0] > 0  # no backward in the last step
        assert "grad of h.1.mlp.2.weight" in str(r)

    def test_first_to_grow_not_the_fastest(self):
        # The cube of the grown values rises three times as fast, in orders
        # of magnitude, as the layer that grew.
        class Cube(nn.Module):
            def forward(self, x):
                return x * x * x

        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(D, D), nn.Linear(D, D), Cube(), nn.Linear(D, 1))

        def grow(model):
            model[1].weight.mul_(30.0)

        x = torch.randn(4, D)
        with pytest.raises(NonFiniteError) as exc, watch(model):
            for _ in range(20):
                model(x).sum().backward()
                with torch.no_grad():
                    grow(model)
        r = exc.value.report
        assert (r.module, r.growth.module) == ("2", "1")

    def test_sudden_jump_is_found_in_one_step(self):
        def corrupt(model):
            if not hasattr(model, "done"):
                model.done = True
                model.h[0].attn.out_proj.weight.mul_(1e34)

        r = first_report(tiny_gpt(), 5, corrupt)
        assert r.growth.module == "h.0.attn"  # MultiheadAttention computes out_proj itself
        assert r.growth.step == r.step

    def test_nan_from_ordinary_values_names_no_growth(self):
        class NegLog(nn.Module):
            def forward(self, x):
                return torch.log(x - 10.0)

        model = tiny_gpt()
        model.h[2].mlp[1] = NegLog()
        r = first_report(model, 2)
        assert (r.module, r.growth) == ("h.2.mlp.1", None)
        assert r.parameters == ()  # NegLog has none
        assert "grew at" not in str(r)

    def test_parameters_of_the_reporting_module_without_growth(self):
        model = tiny_gpt()
        with torch.no_grad():
            model.h[0].ln_2.weight[3] = math.nan
        r = first_report(model, 2)
        assert (r.module, r.growth) == ("h.0.ln_2", None)
        weight = next(s for s in r.parameters if s.name == "weight")
        assert weight.nan_count == 1


class TestOptimizerStep:
    @pytest.mark.parametrize("functions", [False, True])
    def test_step_that_made_a_parameter_non_finite(self, functions):
        model = tiny_gpt()
        opt = torch.optim.SGD(
            [{"params": model.head.parameters(), "lr": 1e38}, {"params": [p for n, p in model.named_parameters() if not n.startswith("head")]}],
            lr=1e-3,
        )
        with pytest.raises(NonFiniteError) as exc, watch(model, functions=functions):
            train_step(model, opt, scale=1e4)  # gradients of about 1e3: lr * grad overflows
        r = exc.value.report
        assert (r.phase, r.step, r.module, r.module_type, r.tensor) == ("optimizer", 0, "head", "Linear", "parameter weight")
        assert r.function == "SGD.step, lr=1e+38"
        (grad,) = r.inputs
        assert grad.name == "grad of weight" and grad.nonfinite_count == 0
        assert r.outputs[0].nonfinite_count > 0
        assert "in optimizer, step 0, at head (Linear), SGD.step, lr=1e+38" in str(exc.value)

    def test_other_models_parameters_are_not_checked(self):
        model = tiny_gpt()
        other = nn.Parameter(torch.tensor([math.inf]))
        other.grad = torch.zeros(1)
        with watch(model):
            torch.optim.SGD([other], lr=0.1).step()
            train_step(model, torch.optim.SGD(model.parameters(), lr=1e-3))

    def test_no_optimizer_hook_after_stop(self):
        model = tiny_gpt()
        with watch(model):
            pass
        opt = torch.optim.SGD(model.head.parameters(), lr=1e38)
        train_step(model, opt, scale=1e4)  # unwatched: no error
        assert not torch.isfinite(model.head.weight).all()


class TestCompiled:
    def planted(self):
        model = tiny_gpt()
        with torch.no_grad():
            model.h[1].mlp[0].weight.mul_(1e30)
        return model

    @pytest.mark.parametrize("how", ["torch.compile", "Module.compile"])
    def test_compiled_model_runs_eagerly_and_says_so_in_one_line(self, how, caplog, capfd):
        model = self.planted()
        if how == "torch.compile":
            compiled = torch.compile(model)
        else:
            model.compile()
            compiled = model
        before = torch._dynamo.eval_frame._stance.stance
        with caplog.at_level(logging.DEBUG), pytest.raises(NonFiniteError) as exc, watch(compiled):
            compiled(ids()).sum().backward()
        r = exc.value.report
        assert r.growth.module == "h.1.mlp.0"  # named as in the uncompiled model
        assert torch._dynamo.eval_frame._stance.stance == before
        watch_lines = [rec.getMessage() for rec in caplog.records if rec.name == "softmaxkit.watch"]
        assert watch_lines == [
            (
                "softmaxkit.watch: the model is compiled; it runs eagerly while watched "
                "(torch.compiler.set_stance('force_eager')) so that every module can be checked"
            )
        ]
        assert [rec for rec in caplog.records if rec.levelno >= logging.WARNING and rec.name != "softmaxkit.watch"] == []
        assert capfd.readouterr() == ("", "")  # no Dynamo warnings about the hooks

    def test_without_set_stance_says_it_cannot_in_one_line(self, monkeypatch, caplog):
        monkeypatch.delattr(torch.compiler, "set_stance")
        model = tiny_gpt()
        compiled = torch.compile(model)
        with caplog.at_level(logging.WARNING, logger="softmaxkit.watch"), watch(compiled):
            pass
        (line,) = caplog.messages
        assert "cannot run a compiled model eagerly" in line and "\n" not in line
        assert all(not m._forward_hooks for m in model.modules())

    def test_uncompiled_model_logs_nothing(self, caplog):
        model = tiny_gpt()
        with caplog.at_level(logging.DEBUG, logger="softmaxkit.watch"), watch(model):
            train_step(model)
        assert caplog.messages == []


class TestCheapCheck:
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
    @pytest.mark.parametrize("value, expected", [(math.inf, "inf"), (-math.inf, "inf"), (math.nan, "NaN")])
    def test_one_non_finite_element_in_any_float_dtype(self, dtype, value, expected):
        class Put(nn.Module):
            def forward(self, x):
                y = x.to(dtype).clone()
                y[1, 2] = value
                return y

        model = nn.Sequential(nn.Linear(4, 4), Put())
        with pytest.raises(NonFiniteError) as exc, watch(model):
            model(torch.randn(3, 4))
        assert (exc.value.report.module, exc.value.report.kind) == ("1", expected)

    def test_empty_and_large_finite_outputs_pass(self):
        class Big(nn.Module):
            def forward(self, x):
                return torch.full((3,), 3e38), x[:0]

        with watch(Big()) as w:
            w.model(torch.ones(2))
        assert w.reports == []
