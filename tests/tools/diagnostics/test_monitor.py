"""softmaxkit.torch.monitor: its figures against diagnose and float64, its steps, its files."""

import json
import math
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import softmaxkit as smk  # noqa: E402
from softmaxkit.tools import monitor as monitor_module  # noqa: E402
from softmaxkit.tools.cli import main  # noqa: E402
from softmaxkit.tools.curves import RECORDS_FILE, read_records  # noqa: E402
from softmaxkit.torch import monitor  # noqa: E402

inf, nan = math.inf, math.nan


@pytest.fixture(autouse=True)
def one_thread():
    # Small ops on a shared machine: several threads only wait for each other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def special_logits():
    """Float32 rows of every kind, with targets; rows 3, 4 and 7 collapse, 3 and 7 lose their gradient."""
    torch.manual_seed(0)
    x = torch.randn(12, 7)
    x[1] = -inf  # fully masked
    x[2, 3] = nan
    x[3] = torch.tensor([40.0, 0, 1, 2, -inf, 3, 0])  # collapses, target on the argmax
    x[4, 5] = 90.0  # collapses; its target (2) is not the argmax
    x[5, 0] = inf
    x[6] = torch.tensor([5.0, 5, -inf, -inf, -inf, -inf, -inf])  # a tie: margin 0
    x[7, 1:] = -inf  # one finite logit
    t = torch.tensor([0, 0, 1, 0, 2, 3, 0, 0, -100, 6, 5, 4])
    return x, t


def regular_reference(x):
    """Entropy and max probability of the regular rows, in float64."""
    rows = x.double().numpy()
    keep = np.isfinite(rows).any(-1) & ~(np.isnan(rows) | (rows == inf)).any(-1)
    z = rows[keep] - rows[keep].max(-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    entropy = -np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0).sum(-1)
    return entropy, p.max(-1)


class TestFigures:
    def test_the_diagnose_figures_are_those_of_diagnose(self, tmp_path):
        x, t = special_logits()
        with monitor(log_dir=tmp_path, tensorboard=False) as mon:
            mon.observe(x, t)
        (r,) = mon.records
        d = smk.diagnose(x, t)
        assert r["rows"] == d.rows == 12
        assert r["regular_rows"] == d.regular_rows == 9
        assert (r["logit_min"], r["logit_max"]) == (d.min, d.max)
        assert r["max_margin"] == d.max_margin
        assert r["collapse_fraction"] == d.collapse_fraction == 3 / 9
        assert r["zero_grad_fraction"] == d.zero_grad_fraction == 2 / 8
        assert r["masked_rows"] == d.masked_rows == 1
        assert (r["nan_count"], r["posinf_count"], r["neginf_count"]) == (
            d.nan_count,
            d.posinf_count,
            d.neginf_count,
        )

    def test_entropy_and_max_probability_against_float64(self, tmp_path):
        x, t = special_logits()
        with monitor(log_dir=tmp_path, tensorboard=False) as mon:
            mon.observe(x, t)
        (r,) = mon.records
        entropy, max_prob = regular_reference(x)
        # float32 terms: a few float32 ULPs of the row's scale
        assert r["entropy_mean"] == pytest.approx(entropy.mean(), rel=1e-6, abs=1e-6)
        assert r["entropy_min"] == pytest.approx(entropy.min(), abs=1e-6)
        assert r["max_prob_mean"] == pytest.approx(max_prob.mean(), rel=1e-6)
        assert r["max_prob_max"] == 1.0

    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
    def test_other_dtypes_agree_with_diagnose(self, tmp_path, dtype):
        x = (8 * torch.randn(64, 50)).to(dtype)
        x[:8, 0] = 30.0
        with monitor(log_dir=tmp_path, tensorboard=False) as mon:
            mon.observe(x)
        (r,) = mon.records
        d = smk.diagnose(x)
        assert r["collapse_fraction"] == d.collapse_fraction > 0
        assert (r["logit_min"], r["logit_max"], r["max_margin"]) == (d.min, d.max, d.max_margin)

    @pytest.mark.parametrize("shape, fill", [((0, 5), 0.0), ((3, 0), 0.0), ((2, 3), -inf), ((2,), 1.0)])
    def test_empty_masked_and_single_row_logits(self, tmp_path, shape, fill):
        x = torch.full(shape, fill)
        with monitor(log_dir=tmp_path, tensorboard=False) as mon:
            mon.observe(x)
        (r,) = mon.records
        d = smk.diagnose(x)
        assert (r["rows"], r["regular_rows"], r["masked_rows"]) == (d.rows, d.regular_rows, d.masked_rows)
        assert (r["collapse_fraction"], r["logit_max"], r["max_margin"]) == (d.collapse_fraction, d.max, d.max_margin)

    def test_chunks_give_the_figures_of_the_whole(self, tmp_path, monkeypatch):
        x, t = special_logits()
        with monitor(log_dir=tmp_path / "whole", tensorboard=False) as whole:
            whole.observe(x, t)
        monkeypatch.setattr(monitor_module, "_CHUNK_ELEMENTS", 20)  # 2 rows of 7 per chunk
        with monitor(log_dir=tmp_path / "chunks", tensorboard=False) as chunks:
            chunks.observe(x, t)
        a, b = whole.records[0], chunks.records[0]
        for key in a:
            if key != "time":
                assert a[key] == (b[key] if b[key] is None else pytest.approx(b[key], rel=1e-12)), key

    def test_gradient_norm_is_that_of_the_logits_gradient(self, tmp_path):
        torch.manual_seed(1)
        head = nn.Linear(6, 5)
        with monitor(head, log_dir=tmp_path, tensorboard=False) as mon:
            logits = head(torch.randn(8, 6))
            logits.retain_grad()
            nn.functional.cross_entropy(logits, torch.randint(0, 5, (8,))).backward()
        (r,) = mon.records
        assert r["grad_norm"] == pytest.approx(logits.grad.double().norm().item(), rel=1e-6)
        assert r["grad_nonfinite"] == 0
        assert r["zero_grad_fraction"] is None and r["loss"] is None  # a head sees no targets

    def test_nonfinite_gradients_are_counted(self, tmp_path):
        head = nn.Linear(3, 4)
        with monitor(head, log_dir=tmp_path, tensorboard=False) as mon:
            (head(torch.randn(2, 3)) * torch.tensor([nan, 1.0, 1.0, inf])).sum().backward()
        (r,) = mon.records
        assert r["grad_nonfinite"] == 4 and math.isnan(r["grad_norm"])
        assert r["nan_count"] == 0

    def test_loss_layout_classes_on_dim_1_and_the_modules_ignore_index(self, tmp_path):
        x, t = special_logits()
        # (N, C, d) as cross_entropy takes it: rows are (n, d) pairs
        x3 = x.reshape(3, 4, 7).transpose(1, 2).contiguous().requires_grad_()
        t3 = t.reshape(3, 4).clone()
        t3[t3 == -100] = 6
        t3.view(-1)[4] = 6  # the zero-gradient row's target, ignored below
        criterion = smk.torch.CrossEntropyLoss(ignore_index=6)
        with monitor(loss=criterion, log_dir=tmp_path, tensorboard=False) as mon:
            criterion(x3, t3).backward()
        (r,) = mon.records
        d = smk.diagnose(x, t3.reshape(-1), ignore_index=6)
        assert r["collapse_fraction"] == d.collapse_fraction
        assert r["zero_grad_fraction"] == d.zero_grad_fraction
        assert r["loss"] == pytest.approx(criterion(x3, t3).item(), nan_ok=True)


def separable(seed=0, n=64, d=8, c=4, noise=0.3):
    torch.manual_seed(seed)
    centers = 3 * torch.randn(c, d)
    y = torch.arange(n) % c
    return centers[y] + noise * torch.randn(n, d), y


class TestTraining:
    def test_collapse_rises_before_the_loss_stalls(self, tmp_path, capsys):
        # A linear classifier on separable data with a large learning rate:
        # the margins grow until every row's float32 softmax is one-hot; from
        # then on torch's float32 loss is exactly 0, and so is the gradient at
        # each target (only the other classes' tiny probabilities are left).
        x, y = separable()
        model = nn.Linear(8, 4)
        criterion = nn.CrossEntropyLoss()
        opt = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
        with monitor(loss=criterion, log_dir=tmp_path, every=1, optimizer=opt, tensorboard=False) as mon:
            for _ in range(30):
                opt.zero_grad()
                criterion(model(x), y).backward()
                opt.step()
        records = read_records(tmp_path)
        assert records == json.loads(json.dumps(mon.records))
        assert [r["step"] for r in records] == list(range(30))
        collapse = [r["collapse_fraction"] for r in records]
        loss = [r["loss"] for r in records]
        stalled = next(i for i in range(1, 30) if loss[i] == loss[i - 1])
        half = next(i for i, f in enumerate(collapse) if f > 0.5)
        assert collapse[0] == 0 and half < stalled
        assert all(loss[i] < loss[i - 1] for i in range(1, half + 1))  # still learning when half collapsed
        assert collapse[stalled] == 1.0 and loss[stalled] == 0.0
        assert records[stalled]["zero_grad_fraction"] == 1.0 and records[stalled]["grad_norm"] < 1e-6
        # softmaxkit report reads the same run back
        assert main(["report", str(tmp_path), "--no-png"]) == 0
        assert f"collapse fraction first above 0.5        step {half}\n" in capsys.readouterr().out

    def test_every_and_gradient_accumulation(self, tmp_path):
        x, y = separable()
        model = nn.Linear(8, 4)
        criterion = nn.CrossEntropyLoss()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with monitor(loss=criterion, log_dir=tmp_path, every=3, optimizer=opt, tensorboard=False) as mon:
            for _ in range(7):
                opt.zero_grad()
                parts = []
                for half in (slice(0, 32), slice(32, 64)):
                    logits = model(x[half])
                    logits.retain_grad()
                    parts.append(logits)
                    (criterion(logits, y[half]) / 2).backward()
                opt.step()
                with torch.no_grad():  # evaluation: not recorded
                    criterion(model(x), y)
        assert [r["step"] for r in mon.records] == [0, 3, 6]
        last = mon.records[-1]
        assert last["rows"] == 64
        # the norm over both micro-batches' logits
        expected = math.sqrt(sum(p.grad.double().square().sum().item() for p in parts))
        assert last["grad_norm"] == pytest.approx(expected, rel=1e-6)

    def test_calls_are_steps_until_step_is_called(self, tmp_path):
        head = nn.Linear(3, 4)
        with monitor(head, log_dir=tmp_path, every=2, tensorboard=False) as mon:
            for _ in range(3):
                head(torch.randn(2, 3))
            assert mon.current_step == 2
            assert mon.step(10) == 10
            head(torch.randn(2, 3))
            head(torch.randn(5, 3))  # same step 10: one record of 7 rows
            mon.step()
            head(torch.randn(2, 3))  # step 11, not recorded
        assert [(r["step"], r["rows"]) for r in mon.records] == [(0, 2), (2, 2), (10, 7)]

    def test_a_loss_function_is_wrapped(self, tmp_path):
        x, y = separable()
        y = y.clone()
        y[:16] = 3
        with monitor(loss=nn.functional.cross_entropy, log_dir=tmp_path, tensorboard=False) as mon:
            value = mon.loss(100 * x[:, :4], y, ignore_index=3)
        assert mon.loss.__name__ == "cross_entropy"
        (r,) = mon.records
        d = smk.diagnose(100 * x[:, :4], y, ignore_index=3)
        assert r["loss"] == value.item()
        assert r["zero_grad_fraction"] == d.zero_grad_fraction and d.target_rows < 64


    def test_compiled_model_and_loss(self, tmp_path):
        # The hooks run eagerly at a graph break: Dynamo neither traces them
        # (with a warning for each host call) nor drops them.
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
        criterion = nn.CrossEntropyLoss()
        x, y = torch.randn(32, 8), torch.randint(0, 4, (32,))
        step = torch.compile(lambda x, y: criterion(model(x), y), backend="aot_eager")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with monitor(loss=criterion, log_dir=tmp_path / "compiled", every=2, tensorboard=False) as compiled:
                for _ in range(3):
                    step(x, y).backward()
        assert not [w for w in caught if "Dynamo" in str(w.message)]
        with monitor(loss=criterion, log_dir=tmp_path / "eager", every=2, tensorboard=False) as eager:
            for _ in range(3):
                criterion(model(x), y).backward()
        assert [r["step"] for r in compiled.records] == [0, 2]
        for a, b in zip(compiled.records, eager.records):
            assert (a["loss"], a["grad_norm"], a["entropy_mean"]) == pytest.approx((b["loss"], b["grad_norm"], b["entropy_mean"]))


class TestFiles:
    def test_tensorboard_event_files_hold_the_records(self, tmp_path):
        pytest.importorskip("tensorboard")
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        x, y = separable()
        model = nn.Linear(8, 4)
        criterion = nn.CrossEntropyLoss()
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        with monitor(loss=criterion, log_dir=tmp_path, every=2, optimizer=opt) as mon:
            for _ in range(5):
                opt.zero_grad()
                criterion(model(x), y).backward()
                opt.step()
        events = EventAccumulator(str(tmp_path))
        events.Reload()
        tags = set(events.Tags()["scalars"])
        assert {"softmax/collapse_fraction", "softmax/grad_norm", "softmax/loss", "softmax/entropy_mean"} <= tags
        for name in ("collapse_fraction", "grad_norm", "loss", "max_margin", "nan_count"):
            got = [(e.step, e.value) for e in events.Scalars(f"softmax/{name}")]
            want = [(r["step"], pytest.approx(r[name], rel=1e-6)) for r in mon.records]
            assert got == want, name
        walltimes = [e.wall_time for e in events.Scalars("softmax/loss")]
        assert walltimes == pytest.approx([r["time"] for r in mon.records])
        # a record without targets has no zero-gradient figure: no scalar
        assert "softmax/zero_grad_fraction" in tags

    def test_without_tensorboard_one_note_and_the_json_lines(self, tmp_path, monkeypatch):
        monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
        monkeypatch.setattr(monitor_module, "_tensorboard_note_given", False)
        with pytest.warns(UserWarning, match=r"tensorboard is not installed.*softmaxkit\[monitor\]"):
            first = monitor(log_dir=tmp_path / "a")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            second = monitor(log_dir=tmp_path / "b")
        for mon in (first, second):
            mon.observe(torch.randn(3, 4))
            mon.close()
            assert len(read_records(mon.log_dir)) == 1
            assert not list(mon.log_dir.glob("events.out.tfevents.*"))

    def test_records_are_appended_and_nan_is_written_as_json_does(self, tmp_path):
        with monitor(log_dir=tmp_path, tensorboard=False) as mon:
            mon.observe(torch.tensor([[nan, 1.0], [-inf, -inf]]))
        with monitor(log_dir=tmp_path, tensorboard=False) as mon:
            mon.step(20)
            mon.observe(torch.tensor([[0.0, 1.0]]))
        lines = (tmp_path / RECORDS_FILE).read_text().splitlines()
        assert len(lines) == 2
        first, second = map(json.loads, lines)
        assert (first["step"], first["nan_count"], first["masked_rows"], first["regular_rows"]) == (0, 1, 1, 0)
        assert first["collapse_fraction"] is None and first["logit_max"] == 1.0
        assert second["step"] == 20
        # each monitor reads back only its own records; the last one is kept in memory
        assert [r["step"] for r in mon.records] == [20] and mon.last_record == second

    def test_close_is_idempotent_and_removes_the_hooks(self, tmp_path):
        head = nn.Linear(3, 4)
        mon = monitor(head, log_dir=tmp_path, tensorboard=False)
        head(torch.randn(2, 3))
        mon.close()
        mon.close()
        head(torch.randn(2, 3))
        assert len(mon.records) == 1
        with pytest.raises(RuntimeError, match="closed"):
            mon.observe(torch.randn(2, 3))


class TestErrors:
    def test_arguments(self, tmp_path):
        head = nn.Linear(3, 4)
        with pytest.raises(ValueError, match="head or loss, not both"):
            monitor(head, loss=nn.CrossEntropyLoss(), log_dir=tmp_path)
        with pytest.raises(TypeError, match="head must be a torch.nn.Module; got 3"):
            monitor(3, log_dir=tmp_path)
        with pytest.raises(ValueError, match="every"):
            monitor(head, log_dir=tmp_path, every=0)
        with pytest.raises(TypeError, match="loss must be"):
            monitor(loss="cross_entropy", log_dir=tmp_path)
        with pytest.raises(TypeError, match="optimizer must be"):
            monitor(head, log_dir=tmp_path, optimizer=object())
        with pytest.raises(TypeError, match="log_dir"):
            monitor(head, log_dir=None)

    def test_observe_checks_its_targets(self, tmp_path):
        with monitor(log_dir=tmp_path, tensorboard=False) as mon:
            with pytest.raises(ValueError, match=r"one class index per row of the logits, shape \(2, 3\); got shape \(5,\)"):
                mon.observe(torch.randn(2, 3, 4), torch.zeros(5, dtype=torch.long))
            with pytest.raises(TypeError, match="target must be a torch.Tensor or None; got \\[0, 1\\]"):
                mon.observe(torch.randn(2, 4), [0, 1])

    def test_a_head_whose_output_is_not_a_tensor(self, tmp_path):
        class Pair(nn.Module):
            def forward(self, x):
                return x, x

        pair = Pair()
        with monitor(pair, log_dir=tmp_path, tensorboard=False):
            with pytest.raises(TypeError, match="the head's output must be a tensor of logits; got \\(tensor"):
                pair(torch.randn(2, 3))


def attention_entropy_reference(q, k, mask, scale):
    """Per head, the entropies of the non-empty rows, and the empty rows: float64, directly."""
    group = q.shape[-3] // k.shape[-3]
    k = k.double().repeat_interleave(group, dim=-3)
    s = (q.double() @ k.transpose(-1, -2)) * scale
    s = torch.where(mask, s, -inf)
    p = torch.softmax(s, -1)
    entropy = -torch.where(p > 0, p * torch.log(p), 0.0).sum(-1)
    full = mask.expand(s.shape).any(-1)
    heads = [entropy[:, h][full[:, h]] for h in range(q.shape[-3])]
    return heads, int((~full).sum())


class TestAttention:
    def case(self):
        torch.manual_seed(1)
        q = (3 * torch.randn(2, 4, 5, 3)).requires_grad_()  # GQA: 4 query heads on 2 key heads
        k, v = 3 * torch.randn(2, 2, 6, 3), torch.randn(2, 2, 6, 3)
        mask = torch.rand(2, 1, 5, 6) > 0.4
        mask[0, 0, 2] = False  # an empty row, in every head
        mask[1, 0, 4] = False
        mask[1, 0, 4, 5] = True  # one key: entropy 0
        return q, k, v, mask

    def test_entropy_per_head_against_float64(self, tmp_path, monkeypatch):
        q, k, v, mask = self.case()
        heads, empty = attention_entropy_reference(q.detach(), k, mask, 0.5)
        assert empty == 4
        # chunks of one query row give the figures of the whole
        for chunk in (1 << 24, 6):
            monkeypatch.setattr(monitor_module, "_CHUNK_ELEMENTS", chunk)
            with monitor(log_dir=tmp_path / str(chunk), tensorboard=False) as mon:
                out, lse = mon.attention(q, k, v, mask, scale=0.5, enable_gqa=True, return_lse=True)
                out.sum().backward()
            want_out, want_lse = smk.torch.scaled_dot_product_attention(q, k, v, mask, scale=0.5, enable_gqa=True, return_lse=True)
            assert torch.equal(out, want_out) and torch.equal(lse, want_lse)
            (record,) = mon.records
            assert record["attention_entropy"] == [pytest.approx([float(h.mean()) for h in heads], rel=1e-9)]
            assert record["attention_entropy_min"] == [pytest.approx([float(h.min()) for h in heads], rel=1e-9, abs=1e-12)]
            assert record["attention_empty_rows"] == [empty]

    def test_calls_are_layers_within_a_step(self, tmp_path, monkeypatch):
        monkeypatch.setattr(monitor_module, "_CHUNK_ELEMENTS", 48)  # two query rows a chunk
        q, k, v, mask = self.case()
        q, k = q.detach()[:, :2], k.double()
        head = nn.Linear(3, 4)
        with monitor(head, log_dir=tmp_path, every=2, tensorboard=False) as mon:
            for step in range(3):
                a = mon.attention(q.double(), k, v.double(), mask)
                b = mon.attention(q.double(), k, v.double(), is_causal=True)
                head(torch.randn(5, 3)).sum().backward()
            with torch.no_grad():
                mon.attention(q, k.float(), v, mask)
        assert torch.equal(a, smk.torch.scaled_dot_product_attention(q.double(), k, v.double(), mask))
        assert torch.equal(b, smk.torch.scaled_dot_product_attention(q.double(), k, v.double(), is_causal=True))
        records = mon.records
        assert [r["step"] for r in records] == [0, 2]
        causal = torch.ones(5, 6, dtype=torch.bool).tril()
        for r in records:
            assert r["rows"] == 5
            layers = [attention_entropy_reference(q, k, m, 1 / math.sqrt(3)) for m in (mask, causal)]
            assert r["attention_entropy"] == [pytest.approx([float(h.mean()) for h in heads], rel=1e-9) for heads, _ in layers]
            assert r["attention_empty_rows"] == [2, 0]

    def test_softcap_and_sinks(self, tmp_path):
        # The sink is one more logit of each head's distribution, in the normaliser only.
        torch.manual_seed(2)
        q, k, v = torch.randn(1, 2, 4, 3, dtype=torch.float64), torch.randn(1, 2, 5, 3, dtype=torch.float64), torch.randn(1, 2, 5, 3)
        sinks = torch.tensor([0.5, 3.0], dtype=torch.float64)
        with monitor(log_dir=tmp_path, tensorboard=False) as mon:
            mon.attention(q, k, v.double(), is_causal=True, scale=2.0, softcap=1.5, sinks=sinks)
        s = 1.5 * torch.tanh(2.0 * q @ k.transpose(-1, -2) / 1.5)
        s = torch.where(torch.ones(4, 5, dtype=torch.bool).tril(), s, -inf)
        s = torch.cat([s, sinks[:, None, None].expand(1, 2, 4, 1)], -1)
        p = torch.softmax(s, -1)
        entropy = -torch.where(p > 0, p * torch.log(p), 0.0).sum(-1)
        (record,) = mon.records
        assert record["attention_entropy"] == [pytest.approx(entropy.mean((0, 2)).tolist(), rel=1e-12)]
        assert record["attention_entropy_min"] == [pytest.approx(entropy.amin((0, 2)).tolist(), rel=1e-12)]

    def test_not_recorded_under_no_grad(self, tmp_path):
        q, k, v, mask = self.case()
        with monitor(log_dir=tmp_path, tensorboard=False) as mon:
            with torch.no_grad():
                out = mon.attention(q, k, v, mask, enable_gqa=True)
            mon.step()
        assert out.shape == (2, 4, 5, 3)
        assert mon.records == []

    def test_tensorboard_scalars_per_layer_and_head(self, tmp_path):
        pytest.importorskip("tensorboard")
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        q, k, v, mask = self.case()
        with monitor(log_dir=tmp_path, every=1) as mon:
            for _ in range(2):
                mon.attention(q, k, v, mask, enable_gqa=True)
                mon.attention(q, k, v, enable_gqa=True)
                mon.step()
        events = EventAccumulator(str(tmp_path))
        events.Reload()
        records = mon.records
        for layer in range(2):
            for head in range(4):
                got = [(e.step, e.value) for e in events.Scalars(f"softmax/attention_entropy/layer{layer}/head{head}")]
                assert got == [(r["step"], pytest.approx(r["attention_entropy"][layer][head], rel=1e-6)) for r in records]
            got = [e.value for e in events.Scalars(f"softmax/attention_empty_rows/layer{layer}")]
            assert got == [r["attention_empty_rows"][layer] for r in records] == [[4, 0][layer]] * 2
        assert "softmax/attention_entropy_min/layer1/head3" in events.Tags()["scalars"]
