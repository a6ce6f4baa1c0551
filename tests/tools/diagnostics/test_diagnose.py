"""softmaxkit.diagnose on constructed logits whose figures are known exactly."""

import dataclasses
import json
import math

import numpy as np
import pytest

import softmaxkit as smk

inf, nan = math.inf, math.nan


def mixed():
    """Six float32 rows, one of each kind, with targets."""
    x = np.array(
        [
            [0.0, 1.0, 2.0],  # regular, margin 1
            [-inf, -inf, -inf],  # fully masked
            [nan, 1.0, 2.0],  # NaN row
            [100.0, 0.0, -inf],  # overflows (100 > 88.72), collapses, margin 100
            [-200.0, -300.0, -250.0],  # every exp underflows; collapses, margin 50
            [inf, 0.0, 1.0],  # +inf row
        ],
        dtype=np.float32,
    )
    t = np.array([2, 0, 1, 0, 0, -100])
    return x, t


class TestMixedRows:
    def test_counts(self):
        x, t = mixed()
        r = smk.diagnose(x, t)
        assert (r.rows, r.classes, r.axis, r.shape, r.dtype) == (6, 3, 1, (6, 3), "float32")
        assert (r.nan_count, r.posinf_count, r.neginf_count) == (1, 1, 4)
        assert r.masked_rows == 1
        assert (r.min, r.max, r.abs_max) == (-300.0, 100.0, 300.0)
        assert r.overflow_count == 1 and r.naive_overflow
        assert r.underflow_rows == 1 and r.naive_underflow
        # Regular rows: 0, 3 and 4; rows 3 and 4 collapse.
        assert (r.regular_rows, r.collapsed_rows) == (3, 2)
        assert r.collapse_fraction == 2 / 3
        # Targets on rows 3 and 4 are their argmax: p_t rounds to 1.
        assert (r.target_rows, r.zero_grad_rows) == (3, 2)
        assert r.zero_grad_fraction == 2 / 3
        # Margins among finite logits: 1, 1 (NaN row), 100, 50, 1 (+inf row).
        assert r.max_margin == 100.0

    def test_without_targets_the_target_figures_are_none(self):
        x, _ = mixed()
        r = smk.diagnose(x)
        assert r.target_rows is None and r.zero_grad_rows is None and r.zero_grad_fraction is None
        assert "zero target grad" not in str(r)

    def test_ignore_index_rows_are_left_out(self):
        x, t = mixed()
        t = t.copy()
        t[3] = 7  # was a zero-gradient row
        t[5] = 7
        r = smk.diagnose(x, t, ignore_index=7)
        assert (r.target_rows, r.zero_grad_rows) == (2, 1)

    def test_input_is_not_written(self):
        x, t = mixed()
        before = x.copy()
        smk.diagnose(x, t)
        np.testing.assert_array_equal(x, before)


class TestCollapse:
    # float32 1 + e^-m rounds to 1 exactly when e^-m < 2^-24, i.e. m > 24 ln 2 = 16.64.
    def test_boundary_at_margin_16_64(self):
        x = np.array([[16.0, 0.0], [17.0, 0.0], [30.0, 0.0], [0.0, 30.0]], dtype=np.float32)
        r = smk.diagnose(x, [0, 0, 0, 0])
        assert r.collapsed_rows == 3
        # Row 3's target is not its argmax: p_t - 1 is -1, not 0.
        assert (r.target_rows, r.zero_grad_rows) == (4, 2)

    def test_float64_input_is_measured_in_float32(self):
        r = smk.diagnose(np.array([[17.0, 0.0]], dtype=np.float64))
        assert r.collapsed_rows == 1
        assert smk.softmax(np.array([17.0, 0.0]))[1] > 0

    def test_single_class_rows_are_one_hot(self):
        assert smk.diagnose(np.zeros((3, 1), dtype=np.float32)).collapse_fraction == 1.0


class TestDtypeBounds:
    @pytest.mark.parametrize(
        "dtype, over, under",
        [("float16", 12.0, -18.0), ("float32", 89.0, -104.5), ("float64", 710.0, -746.0)],
    )
    def test_numpy(self, dtype, over, under):
        # Bounds: log(max) and log(smallest subnormal / 2) of the dtype.
        r = smk.diagnose(np.array([[over, 0.0], [under, under - 1]], dtype=dtype))
        assert (r.overflow_count, r.underflow_rows) == (1, 1)
        info = np.finfo(dtype)
        assert r.overflow_threshold == math.log(float(info.max))
        assert r.underflow_threshold == math.log(float(info.smallest_subnormal)) - math.log(2)
        r = smk.diagnose(np.array([[over - 2, 0.0], [under + 2, under]], dtype=dtype))
        assert (r.overflow_count, r.underflow_rows) == (0, 0)

    def test_the_same_values_overflow_in_float32_but_not_float64(self):
        x = np.array([[89.0, 0.0]])
        assert smk.diagnose(x.astype(np.float32)).naive_overflow
        assert not smk.diagnose(x).naive_overflow

    def test_integer_logits_are_float64(self):
        r = smk.diagnose([[1000, 0]])
        assert r.dtype == "float64" and r.overflow_count == 1


class TestTorch:
    torch = pytest.importorskip("torch")

    def test_matches_numpy(self):
        x, t = mixed()
        tx = self.torch.tensor(x, requires_grad=False)
        want = smk.diagnose(x, t).to_dict()
        assert smk.diagnose(tx, self.torch.tensor(t)).to_dict() == want

    def test_tensor_that_requires_grad(self):
        x = self.torch.tensor([[30.0, 0.0]], requires_grad=True)
        assert smk.diagnose(x).collapsed_rows == 1

    @pytest.mark.parametrize("name, big", [("bfloat16", 89.0), ("float16", 12.0)])
    def test_half_dtypes(self, name, big):
        x = self.torch.tensor([[big, 0.0]], dtype=getattr(self.torch, name))
        r = smk.diagnose(x)
        assert r.dtype == name and r.overflow_count == 1


class TestAxis:
    def test_axis_0_equals_transposed(self):
        x, t = mixed()
        a = smk.diagnose(x, t).to_dict()
        b = smk.diagnose(np.ascontiguousarray(x.T), t, axis=0).to_dict()
        assert b.pop("axis") == 0 and b.pop("shape") == [3, 6]
        a.pop("axis"), a.pop("shape")
        assert a == b

    def test_three_dimensional(self):
        x = np.zeros((2, 3, 4), dtype=np.float32)
        x[1, 2, 0] = 40.0
        r = smk.diagnose(x, np.zeros((2, 3), dtype=np.int64))
        assert (r.rows, r.classes, r.collapsed_rows, r.zero_grad_rows) == (6, 4, 1, 1)


class TestEdges:
    def test_no_rows(self):
        r = smk.diagnose(np.zeros((0, 4)))
        assert r.rows == 0 and r.collapse_fraction is None and r.max_margin is None and r.min is None

    def test_no_classes(self):
        r = smk.diagnose(np.zeros((3, 0)))
        assert (r.rows, r.masked_rows, r.regular_rows) == (3, 0, 0)
        assert "no finite logits" in str(r)

    def test_all_masked(self):
        r = smk.diagnose(np.full((2, 3), -inf, dtype=np.float32))
        assert (r.masked_rows, r.regular_rows, r.neginf_count, r.max_margin) == (2, 0, 6, None)


class TestOutput:
    def test_str_is_an_aligned_block(self):
        x, t = mixed()
        text = str(smk.diagnose(x, t))
        lines = text.splitlines()
        assert [line.split("  ")[0] for line in lines] == [
            "logits",
            "range (finite)",
            "non-finite",
            "masked rows",
            "naive overflow",
            "naive underflow",
            "softmax collapse",
            "zero target grad",
            "largest margin",
        ]
        starts = {len(line) - len(line[18:].lstrip()) for line in lines}
        assert starts == {18}, text
        assert "2 of 3 rows" in text and "Prieto et al. 2025" in text

    def test_to_dict_is_json_ready(self):
        x, t = mixed()
        d = json.loads(json.dumps(smk.diagnose(x, t).to_dict()))
        assert d["collapse_fraction"] == 2 / 3 and d["naive_overflow"] is True and d["shape"] == [6, 3]

    def test_frozen(self):
        r = smk.diagnose(np.zeros((1, 2)))
        with pytest.raises(dataclasses.FrozenInstanceError):
            r.rows = 3


class TestErrors:
    @pytest.mark.parametrize(
        "logits, targets, kwargs, exc, match",
        [
            (np.array([True]), None, {}, TypeError, "logits must be a real floating or integer array"),
            (np.float32(3.0), None, {}, ValueError, "at least one dimension"),
            (np.zeros((2, 3)), np.array([0.0, 1.0]), {}, TypeError, "targets must hold integer"),
            (np.zeros((2, 3)), np.array([0, 3]), {}, ValueError, r"targets\[1\] = 3 is not a class index"),
            (np.zeros((2, 3)), np.array([0]), {}, ValueError, r"shape without the class axis, \(2,\)"),
            (np.zeros((2, 3)), None, {"axis": 2}, ValueError, "axis=2 is out of range"),
            (np.zeros((2, 3)), None, {"ignore_index": 1.5}, TypeError, "ignore_index must be an int"),
        ],
    )
    def test_messages(self, logits, targets, kwargs, exc, match):
        with pytest.raises(exc, match=match):
            smk.diagnose(logits, targets, **kwargs)


class TestLongDouble:
    @pytest.mark.skipif(np.finfo(np.longdouble).eps == np.finfo(np.float64).eps, reason="long double is float64 here")
    def test_long_double_is_refused_by_name(self):
        # diagnose(float128 logits) raised "math domain error": the long
        # double smallest subnormal converted to 0.0 before its log.
        name = np.dtype(np.longdouble).name
        with pytest.raises(TypeError, match=rf"logits dtype {name} .*not supported.*float64"):
            smk.diagnose(np.ones((2, 3), np.longdouble))


# Regression: a masked targets array went through numpy.asarray, which
# dropped its mask silently, so masked rows were counted as targets.
def test_masked_targets_are_refused():
    with pytest.raises(TypeError, match=r"targets is a numpy.ma.MaskedArray.*filled\(ignore_index\)"):
        smk.diagnose(np.zeros((2, 3)), targets=np.ma.masked_array([0, 1], mask=[0, 1]))
