"""softmaxkit.diagnose_attention on constructed scores whose figures are known exactly."""

import json
import math

import numpy as np
import pytest

import softmaxkit as smk
from softmaxkit.tools.report import attention_entropy, attention_logits

inf, nan = math.inf, math.nan


def test_empty_padded_row():
    """A key-padding mask that hides every key of one query row: one empty row, left out of the entropy."""
    s = np.zeros((1, 2, 3, 4))
    mask = np.ones((1, 2, 3, 4), dtype=bool)
    mask[0, 1, 2] = False
    r = smk.diagnose_attention(s, mask=mask)
    assert (r.rows, r.heads, r.keys, r.empty_rows, r.nan_rows) == (6, 2, 4, 1, 0)
    assert r.entropy_mean == pytest.approx((math.log(4), math.log(4)), rel=1e-15)
    assert r.entropy_min == pytest.approx((math.log(4), math.log(4)), rel=1e-15)


def test_padding_by_minus_inf_bias_and_by_causal_rows():
    # A -inf additive mask masks; bottom-right causal with L > S empties the first L - S rows.
    bias = np.array([[0.0, -inf], [-inf, -inf]])
    assert smk.diagnose_attention(np.zeros((1, 2, 2)), mask=bias).empty_rows == 1
    assert smk.diagnose_attention(np.zeros((1, 5, 3)), causal="bottom_right").empty_rows == 2
    assert smk.diagnose_attention(np.zeros((1, 5, 3)), causal="top_left").empty_rows == 0


def test_finfo_min_mask_is_an_ordinary_score():
    """finfo.min added to every key swamps the scores: uniform weights, not an empty row."""
    s = np.array([[[1.0, 2.0, 3.0]]], dtype=np.float32)
    r = smk.diagnose_attention(s, mask=np.full((1, 3), np.finfo(np.float32).min, dtype=np.float32))
    assert r.empty_rows == 0
    assert r.entropy_mean[0] == pytest.approx(math.log(3), rel=1e-12)


def test_saturated_row():
    """Margin 30: every other float32 weight is below half an ULP of 1; margin 5 is not."""
    s = np.array([[[30.0, 0.0, 0.0], [5.0, 0.0, 0.0]]], dtype=np.float32)
    r = smk.diagnose_attention(s)
    assert (r.regular_rows, r.saturated_rows, r.saturated_fraction) == (2, 1, 0.5)
    assert r.entropy_min[0] < 1e-11


def test_a_single_key_is_not_saturation():
    """Row 0 of a causal mask sees one key: weight 1 by construction, not a collapse."""
    r = smk.diagnose_attention(np.zeros((1, 3, 3)), causal="top_left")
    assert (r.regular_rows, r.saturated_rows) == (2, 0)
    # ...but with a sink it has two entries, and a sink 40 below saturates it.
    r = smk.diagnose_attention(np.zeros((1, 3, 3)), causal="top_left", sinks=np.array([-40.0]))
    assert (r.regular_rows, r.saturated_rows) == (3, 1)


def test_uniform_rows():
    """Equal scores over n attended keys have entropy log n: causal row i has log(i + 1)."""
    L = 6
    r = smk.diagnose_attention(np.full((2, 3, L, L), 7.0), causal="top_left")
    logs = [math.log(i + 1) for i in range(L)]
    assert r.entropy_mean == pytest.approx((sum(logs) / L,) * 3, rel=1e-14)
    assert r.entropy_min == (0.0, 0.0, 0.0)
    assert r.saturated_rows == 0


def test_sink_counts_in_the_entropy():
    """n equal scores and a sink equal to them: n + 1 equal weights, entropy log(n + 1)."""
    r = smk.diagnose_attention(np.zeros((2, 1, 4)), sinks=np.array([0.0, -inf]))
    assert r.entropy_mean == pytest.approx((math.log(5), math.log(4)), rel=1e-15)


def test_nan_rows():
    """A NaN in an attended score makes a NaN row, left out of the entropy; a masked NaN is never read."""
    s = np.array([[[nan, 0.0], [nan, 0.0], [0.0, 0.0]]])
    mask = np.array([[True, True], [False, True], [True, True]])
    r = smk.diagnose_attention(s, mask=mask)
    assert (r.nan_rows, r.empty_rows) == (1, 0)
    assert r.entropy_mean[0] == pytest.approx(math.log(2) / 2, rel=1e-15)
    assert r.entropy_min[0] == 0.0


def test_posinf_row_is_not_regular():
    r = smk.diagnose_attention(np.array([[[inf, inf, 0.0]]]))
    assert (r.regular_rows, r.nan_rows) == (0, 0)
    assert r.entropy_mean[0] == pytest.approx(math.log(2), rel=1e-15)


def test_query_and_key_give_the_scores_of_attention():
    """cap(scale q.k) with grouped-query heads (query head h reads key head h // 2)."""
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(2, 4, 5, 3)), rng.normal(size=(2, 2, 300, 3))
    opts = {"mask": rng.random((5, 300)) < 0.5, "sinks": rng.normal(size=4)}
    s = 2.0 * np.einsum("bhld,bhsd->bhls", q, np.repeat(k, 2, axis=1))
    s = 1.5 * np.tanh(s / 1.5)
    a = smk.diagnose_attention(query=q, key=k, scale=2.0, softcap=1.5, causal="top_left", **opts)
    b = smk.diagnose_attention(s, causal="top_left", **opts)
    assert a.entropy_mean == pytest.approx(b.entropy_mean, rel=1e-13)
    assert a.entropy_min == pytest.approx(b.entropy_min, rel=1e-13)
    assert (a.empty_rows, a.regular_rows, a.shape, a.heads) == (b.empty_rows, b.regular_rows, (2, 4, 5, 300), 4)


def test_chunks_of_query_rows_give_the_whole(monkeypatch):
    rng = np.random.default_rng(1)
    s = rng.normal(size=(2, 3, 9, 7)) * 20
    whole = smk.diagnose_attention(s, causal="bottom_right")
    monkeypatch.setattr("softmaxkit.tools.report._CHUNK_SCORES", 1)
    parts = smk.diagnose_attention(s, causal="bottom_right")
    # The per-head sums are taken chunk by chunk: the same terms, in another order.
    assert parts.entropy_mean == pytest.approx(whole.entropy_mean, rel=1e-14)
    assert (parts.entropy_min, parts.empty_rows, parts.regular_rows, parts.saturated_rows) == (
        whole.entropy_min, whole.empty_rows, whole.regular_rows, whole.saturated_rows,
    )
    assert whole.empty_rows == 2 * 3 * 2 and whole.saturated_rows > 0


def test_torch_scores_and_masks():
    torch = pytest.importorskip("torch")
    s = torch.tensor([[[0.0, 0.0, 0.0], [30.0, 0.0, 0.0]]], dtype=torch.bfloat16, requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    r = smk.diagnose_attention(s, mask=mask)
    assert (r.dtype, r.saturated_rows, r.empty_rows) == ("bfloat16", 1, 0)
    assert r.entropy_mean[0] == pytest.approx(math.log(2) / 2, rel=1e-6)


def test_entropy_is_the_softmax_entropy_of_the_attention_logits():
    s = np.array([[1.0, nan, -2.0]])
    attend = np.array([True, False, True])
    assert attention_logits(s, attend, np.array([0.5])).tolist() == [[1.0, -inf, -2.0, 0.5]]
    assert attention_entropy(s, attend, np.array([0.5])) == smk.entropy(np.array([[1.0, -inf, -2.0, 0.5]]))


def test_report_text_and_dict():
    r = smk.diagnose_attention(np.zeros((1, 2, 3)), mask=np.array([[True] * 3, [False] * 3]))
    text = str(r)
    assert "empty rows      1 of 2 rows (50%)" in text
    assert "per head (nats): 1.099" in text
    d = json.loads(json.dumps(r.to_dict()))
    assert d["shape"] == [1, 2, 3] and d["empty_rows"] == 1 and d["saturated_fraction"] == 0.0


def test_inputs_are_not_written():
    s = np.array([[[nan, 1.0]]])
    before = s.copy()
    smk.diagnose_attention(s, mask=np.array([False, True]))
    np.testing.assert_array_equal(s, before)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({}, TypeError, "scores, or query and key"),
        ({"scores": np.zeros((1, 1, 1)), "query": np.zeros((1, 1, 1))}, TypeError, "got both"),
        ({"query": np.zeros((1, 1, 1))}, TypeError, "got only query"),
        ({"scores": np.zeros((1, 1))}, ValueError, "at least 3 dimensions"),
        ({"scores": np.zeros((1, 1, 1)), "scale": 2.0}, TypeError, "scale and softcap apply to query and key"),
        ({"scores": np.zeros((1, 1, 1)), "causal": "upper"}, ValueError, "causal must be None, 'top_left' or 'bottom_right'; got 'upper'"),
        ({"scores": np.zeros((2, 1, 1)), "sinks": np.zeros(3)}, ValueError, r"sinks must have shape \(2,\)"),
        ({"scores": np.zeros((1, 1, 2)), "mask": np.ones(2, dtype=np.int64)}, TypeError, "got dtype int64"),
        ({"scores": np.zeros((1, 1, 2)), "mask": np.ones(3, dtype=bool)}, ValueError, r"mask of shape \(3,\) does not broadcast"),
        ({"query": np.zeros((1, 3, 1, 2)), "key": np.zeros((1, 2, 1, 2))}, ValueError, "multiple of key's heads"),
        ({"query": np.zeros((1, 1, 1, 2)), "key": np.zeros((1, 1, 1, 3))}, ValueError, "key must have shape"),
        ({"query": np.zeros((1, 1, 2)), "key": np.zeros((1, 1, 2)), "scale": -1.0}, ValueError, "scale must be finite and > 0"),
    ],
)
def test_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        smk.diagnose_attention(**kwargs)
