"""softmaxkit.torch.integrations.transformers: the kept classes of transformers' own warpers on ordinary
scores, the documented differences at ties, rounding boundaries and non-finite scores, and generate()
on a tiny GPT-2 built from a config (no download)."""

import math

import mpmath
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import softmaxkit as smk
import softmaxkit.torch.integrations.transformers as skt

INF = math.inf
HF = transformers


def kept(scores):
    """The classes a warper's output keeps, as a boolean tensor."""
    return scores > -INF


def random_scores(seed=0, rows=6, vocab=500, scale=2.0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, vocab, generator=gen) * scale


def run(processor, scores):
    return processor(None, scores.clone())


# --- ordinary scores: the kept classes of transformers' warpers --------------------------


@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.5])
def test_temperature_gives_the_probabilities_of_transformers(temperature):
    x = random_scores()
    ours, theirs = (run(skt.TemperatureLogitsWarper(temperature), x), run(HF.TemperatureLogitsWarper(temperature), x))
    torch.testing.assert_close(torch.softmax(ours, -1), torch.softmax(theirs, -1), rtol=1e-5, atol=1e-7)
    # (x - max x) / T: a constant apart from x / T in each row, with the largest entry 0.
    assert torch.equal(ours.amax(-1), torch.zeros(6))
    torch.testing.assert_close(ours, theirs - theirs.amax(-1, keepdim=True))


@pytest.mark.parametrize("top_k", [1, 7, 499, 500, 600])
@pytest.mark.parametrize("min_tokens_to_keep", [1, 10])
def test_top_k_keeps_the_classes_of_transformers(top_k, min_tokens_to_keep):
    x = random_scores()
    ours = run(skt.TopKLogitsWarper(top_k, min_tokens_to_keep=min_tokens_to_keep), x)
    theirs = run(HF.TopKLogitsWarper(top_k, min_tokens_to_keep=min_tokens_to_keep), x)
    assert torch.equal(kept(ours), kept(theirs))
    assert int(kept(ours)[0].sum()) == min(max(top_k, min_tokens_to_keep), 500)


@pytest.mark.parametrize("top_p", [0.05, 0.5, 0.9, 0.999, 1.0])
@pytest.mark.parametrize("min_tokens_to_keep", [1, 5])
def test_top_p_keeps_the_classes_of_transformers(top_p, min_tokens_to_keep):
    x = random_scores()
    ours = run(skt.TopPLogitsWarper(top_p, min_tokens_to_keep=min_tokens_to_keep), x)
    theirs = run(HF.TopPLogitsWarper(top_p, min_tokens_to_keep=min_tokens_to_keep), x)
    assert torch.equal(kept(ours), kept(theirs))


@pytest.mark.parametrize("min_p", [0.0, 0.01, 0.3, 1.0])
@pytest.mark.parametrize("min_tokens_to_keep", [1, 5])
def test_min_p_keeps_the_classes_of_transformers(min_p, min_tokens_to_keep):
    x = random_scores()
    ours = run(skt.MinPLogitsWarper(min_p, min_tokens_to_keep=min_tokens_to_keep), x)
    theirs = run(HF.MinPLogitsWarper(min_p, min_tokens_to_keep=min_tokens_to_keep), x)
    assert torch.equal(kept(ours), kept(theirs))


SETTINGS = [
    {"temperature": 0.7, "top_k": 40, "top_p": 0.9, "min_p": 0.05},
    {"temperature": 1.3, "top_k": 200, "top_p": 0.6},
    {"temperature": 0.5, "top_p": 0.95, "min_p": 0.2},
    {"temperature": 2.0, "top_k": 3, "min_tokens_to_keep": 5},
]


def transformers_chain(temperature=1.0, top_k=None, top_p=None, min_p=None, min_tokens_to_keep=1):
    """The warpers generate() builds from these settings, in its order."""
    chain = [HF.TemperatureLogitsWarper(float(temperature))]
    if top_k is not None:
        chain.append(HF.TopKLogitsWarper(top_k, min_tokens_to_keep=min_tokens_to_keep))
    if top_p is not None:
        chain.append(HF.TopPLogitsWarper(top_p, min_tokens_to_keep=min_tokens_to_keep))
    if min_p is not None:
        chain.append(HF.MinPLogitsWarper(min_p, min_tokens_to_keep=min_tokens_to_keep))
    return HF.LogitsProcessorList(chain)


@pytest.mark.parametrize("settings", SETTINGS, ids=str)
def test_one_step_and_chain_keep_the_classes_of_the_transformers_chain(settings):
    x = random_scores(seed=1)
    theirs = transformers_chain(**settings)(None, x.clone())
    one_step = skt.logits_processor(**settings)
    assert len(one_step) == 1 and isinstance(one_step[0], skt.TruncationLogitsWarper)
    ours = one_step(None, x.clone())
    assert torch.equal(kept(ours), kept(theirs))
    torch.testing.assert_close(torch.softmax(ours, -1), torch.softmax(theirs, -1), rtol=1e-5, atol=1e-7)
    mtk = settings.get("min_tokens_to_keep", 1)
    chain = [skt.TemperatureLogitsWarper(settings["temperature"])]
    chain += [skt.TopKLogitsWarper(settings["top_k"], min_tokens_to_keep=mtk)] if "top_k" in settings else []
    chain += [skt.TopPLogitsWarper(settings["top_p"], min_tokens_to_keep=mtk)] if "top_p" in settings else []
    chain += [skt.MinPLogitsWarper(settings["min_p"], min_tokens_to_keep=mtk)] if "min_p" in settings else []
    assert torch.equal(kept(HF.LogitsProcessorList(chain)(None, x.clone())), kept(theirs))


@pytest.mark.parametrize("settings", SETTINGS, ids=str)
def test_the_one_step_processor_is_softmaxkit_truncate(settings):
    x = random_scores(seed=2)
    settings = {k: v for k, v in settings.items() if k != "min_tokens_to_keep"}
    assert torch.equal(run(skt.TruncationLogitsWarper(**settings), x), smk.truncate(x, **settings))


@pytest.mark.parametrize(
    "make",
    [
        lambda v: skt.TopKLogitsWarper(5, v),
        lambda v: skt.TopPLogitsWarper(0.5, v),
        lambda v: skt.MinPLogitsWarper(0.2, v),
    ],
    ids=["top_k", "top_p", "min_p"],
)
def test_filter_value_marks_the_classes_not_kept(make):
    x = random_scores()
    x[:, 0] = -INF
    expected = run(make(-INF), x)
    assert torch.equal(run(make(-1e4), x), torch.where(kept(expected), expected, torch.full_like(x, -1e4)))


def test_output_keeps_dtype_and_shape():
    x = random_scores().to(torch.float16)
    out = run(skt.TruncationLogitsWarper(temperature=0.8, top_p=0.9), x)
    assert out.dtype == torch.float16 and out.shape == x.shape


# --- where transformers decides by sort order or rounding --------------------------------


def test_top_k_keeps_every_tie_with_the_kth_score_as_transformers_does():
    x = torch.tensor([[3.0, 2.0, 2.0, 2.0, 1.0]])
    for warper in (skt.TopKLogitsWarper(2), HF.TopKLogitsWarper(2)):
        assert kept(run(warper, x)).tolist() == [[True, True, True, True, False]]


def merged_by_division(temperature):
    """Two adjacent float32 logits whose float32 quotients by ``temperature`` are equal."""
    x = np.float32(1.5)
    while True:
        y = np.nextafter(x, np.float32(2))
        if np.float32(x) / np.float32(temperature) == y / np.float32(temperature):
            return float(y), float(x)
        x = y


def test_top_k_after_temperature_ranks_the_logits_where_transformers_ranks_rounded_quotients():
    hi, lo = merged_by_division(3.0)
    x = torch.tensor([[lo, hi, 0.0, -1.0]])
    theirs = transformers_chain(temperature=3.0, top_k=1)(None, x.clone())
    assert kept(theirs).tolist() == [[True, True, False, False]]  # the two quotients tie
    expected = [[False, True, False, False]]
    assert kept(run(skt.TruncationLogitsWarper(temperature=3.0, top_k=1), x)).tolist() == expected
    chain = HF.LogitsProcessorList([skt.TemperatureLogitsWarper(3.0), skt.TopKLogitsWarper(1)])
    assert kept(chain(None, x.clone())).tolist() == expected  # (x - max x) / T keeps them apart


def test_top_p_keeps_a_whole_tie_at_the_boundary_where_transformers_keeps_part():
    x = torch.zeros(1, 4)  # four classes of 0.25; two reach top_p = 0.5
    assert int(kept(run(skt.TopPLogitsWarper(0.5), x)).sum()) == 4
    assert int(kept(run(HF.TopPLogitsWarper(0.5), x)).sum()) == 2


def exact_softmax(row):
    """softmax of float32 logits, in mpmath at 50 digits."""
    with mpmath.workdps(50):
        e = [mpmath.exp(mpmath.mpf(float(v))) for v in row]
        total = mpmath.fsum(e)
        return [w / total for w in e]


def test_top_p_decides_a_boundary_within_rounding_distance_exactly():
    x = torch.tensor([[2.0, 1.25, 0.5, -0.75, -1.5]])
    p = exact_softmax(x[0].tolist())
    mass_before_third = p[0] + p[1]
    ours, theirs = [], []
    for top_p in (float(mass_before_third * (1 + 1e-9)), float(mass_before_third * (1 - 1e-9))):
        ours.append(int(kept(run(skt.TopPLogitsWarper(top_p), x)).sum()))
        theirs.append(int(kept(run(HF.TopPLogitsWarper(top_p), x)).sum()))
    # Just above the mass before it the third class is kept, just below it is not.
    assert ours == [3, 2]
    # float32 cannot tell the two top_p apart: one of the two decisions differs from the rule.
    assert theirs[0] == theirs[1]


def test_top_p_of_one_keeps_classes_whose_float32_probability_is_zero():
    x = torch.tensor([[0.0, -1.0, -200.0]])
    assert kept(run(skt.TopPLogitsWarper(1.0), x)).tolist() == [[True, True, True]]
    assert kept(run(HF.TopPLogitsWarper(1.0), x)).tolist() == [[True, True, False]]


def test_min_p_decides_a_ratio_within_rounding_distance_exactly():
    x = torch.tensor([[0.0, -1.7, -0.3, -4.0]])
    with mpmath.workdps(50):
        ratio = mpmath.exp(mpmath.mpf(float(x[0, 1])))
    ours, theirs = [], []
    for min_p in (float(ratio * (1 - 1e-9)), float(ratio * (1 + 1e-9))):
        ours.append(kept(run(skt.MinPLogitsWarper(min_p), x))[0, 1].item())
        theirs.append(kept(run(HF.MinPLogitsWarper(min_p), x))[0, 1].item())
    assert ours == [True, False]
    assert theirs[0] == theirs[1]


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (skt.TopPLogitsWarper(0.01, min_tokens_to_keep=2), HF.TopPLogitsWarper(0.01, min_tokens_to_keep=2)),
        (skt.MinPLogitsWarper(0.99, min_tokens_to_keep=2), HF.MinPLogitsWarper(0.99, min_tokens_to_keep=2)),
    ],
    ids=["top_p", "min_p"],
)
def test_min_tokens_to_keep_keeps_ties_where_transformers_keeps_exactly_that_many(ours, theirs):
    x = torch.tensor([[2.0, 1.0, 1.0, 1.0, 0.0]])
    assert kept(run(ours, x)).tolist() == [[True, True, True, True, False]]
    assert int(kept(run(theirs, x)).sum()) == 2


# --- non-finite scores --------------------------------------------------------------------

WARPERS = {
    "temperature": (skt.TemperatureLogitsWarper(0.7), HF.TemperatureLogitsWarper(0.7)),
    "top_k": (skt.TopKLogitsWarper(3), HF.TopKLogitsWarper(3)),
    "top_k_beyond_finite": (skt.TopKLogitsWarper(8), HF.TopKLogitsWarper(8)),
    "top_p": (skt.TopPLogitsWarper(0.8), HF.TopPLogitsWarper(0.8)),
    "min_p": (skt.MinPLogitsWarper(0.1), HF.MinPLogitsWarper(0.1)),
}


@pytest.mark.parametrize("name", WARPERS)
def test_minus_inf_scores_are_never_kept(name):
    ours, theirs = WARPERS[name]
    x = random_scores(rows=3, vocab=10)
    x[:, ::2] = -INF
    out = run(ours, x)
    assert not kept(out)[:, ::2].any()
    assert torch.equal(kept(out), kept(run(theirs, x)))


@pytest.mark.parametrize("name", WARPERS)
def test_a_row_of_minus_inf_raises_where_transformers_passes_it_on(name):
    ours, theirs = WARPERS[name]
    x = random_scores(rows=3, vocab=10)
    x[1] = -INF
    assert not kept(run(theirs, x))[1].any()  # and torch.multinomial fails on it later
    with pytest.raises(ValueError, match=r"row \[1\].*fully masked"):
        run(ours, x)


@pytest.mark.parametrize("name", WARPERS)
def test_plus_inf_scores_share_the_mass_where_transformers_gives_nan(name):
    ours, theirs = WARPERS[name]
    x = torch.tensor([[INF, 1.0, INF, 0.0, -INF]])
    out = run(ours, x)
    assert out.tolist() == [[0.0, -INF, 0.0, -INF, -INF]]
    assert torch.softmax(out, -1).tolist() == [[0.5, 0.0, 0.5, 0.0, 0.0]]
    assert torch.softmax(run(theirs, x), -1).isnan().any()


@pytest.mark.parametrize("name", WARPERS)
def test_nan_scores_raise(name):
    ours, _ = WARPERS[name]
    with pytest.raises(ValueError, match="NaN"):
        run(ours, torch.tensor([[0.0, math.nan, 1.0]]))


# --- settings ----------------------------------------------------------------------------


def test_temperature_zero_keeps_the_first_argmax_where_transformers_refuses_it():
    x = torch.tensor([[1.0, 3.0, 3.0, 2.0]])
    assert run(skt.TemperatureLogitsWarper(0.0), x).tolist() == [[-INF, 0.0, -INF, -INF]]
    with pytest.raises(ValueError):
        HF.TemperatureLogitsWarper(0.0)


def test_an_int_temperature_is_a_temperature():
    x = random_scores()
    assert torch.equal(run(skt.TemperatureLogitsWarper(2), x), run(skt.TemperatureLogitsWarper(2.0), x))


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: skt.TemperatureLogitsWarper(-1.0), ValueError, "temperature must be finite and >= 0; got -1.0"),
        (lambda: skt.TemperatureLogitsWarper(math.inf), ValueError, "temperature must be finite and >= 0; got inf"),
        (lambda: skt.TopKLogitsWarper(0), ValueError, r"top_k must be an int >= 1 \(or None\); got 0"),
        (lambda: skt.TopKLogitsWarper(2.5), TypeError, "top_k must be an int >= 1"),
        (lambda: skt.TopPLogitsWarper(0.0), ValueError, r"top_p must be in \(0, 1\] or None; got 0.0"),
        (lambda: skt.TopPLogitsWarper(1.5), ValueError, r"top_p must be in \(0, 1\] or None; got 1.5"),
        (lambda: skt.MinPLogitsWarper(-0.1), ValueError, r"min_p must be in \[0, 1\]; got -0.1"),
        (
            lambda: skt.MinPLogitsWarper(0.1, min_tokens_to_keep=0),
            ValueError,
            "min_tokens_to_keep must be an int >= 1; got 0",
        ),
        (lambda: skt.TopKLogitsWarper(3, filter_value="low"), TypeError, "filter_value must be a real number"),
    ],
)
def test_settings_are_checked_at_construction(make, error, message):
    with pytest.raises(error, match=message):
        make()


# --- generate() ----------------------------------------------------------------------------

VOCAB = 64


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = HF.GPT2Config(
        n_layer=2, n_head=2, n_embd=32, vocab_size=VOCAB, n_positions=64, eos_token_id=None, pad_token_id=0
    )
    return HF.GPT2LMHeadModel(config).eval()


PROMPT = torch.tensor([[5, 6, 7, 8, 9, 10]])
# Two prompts of different lengths, the shorter left-padded.
BATCH = torch.tensor([[5, 6, 7, 8, 9, 10], [0, 0, 0, 11, 12, 13]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]])


def generate(model, ids, mask, seed=0, **kwargs):
    torch.manual_seed(seed)
    kwargs.setdefault("do_sample", True)
    if kwargs["do_sample"]:
        kwargs.setdefault("top_k", 0)
    return model.generate(ids, attention_mask=mask, max_new_tokens=8, pad_token_id=0, **kwargs)


def test_generate_runs_and_is_reproducible_with_a_seed(model):
    processors = skt.logits_processor(temperature=1.5, top_p=0.9)
    first = generate(model, BATCH, MASK, seed=3, logits_processor=processors)
    assert first.shape == (2, 14)
    assert torch.equal(first, generate(model, BATCH, MASK, seed=3, logits_processor=processors))
    draws = {
        tuple(generate(model, PROMPT, torch.ones_like(PROMPT), seed=s, logits_processor=processors)[0].tolist())
        for s in range(4)
    }
    assert len(draws) > 1  # the draws are random


def test_generate_draws_only_classes_the_truncation_keeps(model):
    settings = {"temperature": 0.8, "top_k": 20, "top_p": 0.7, "min_p": 0.05}
    out = generate(
        model,
        BATCH,
        MASK,
        seed=1,
        logits_processor=skt.logits_processor(**settings),
        return_dict_in_generate=True,
        output_scores=True,
        output_logits=True,
    )
    tokens = out.sequences[:, BATCH.shape[1] :]
    for step, (scores, logits) in enumerate(zip(out.scores, out.logits)):
        expected = smk.truncate(logits, **settings)
        assert torch.equal(scores, expected)
        chosen = scores.gather(1, tokens[:, step : step + 1])
        assert kept(chosen).all()


def test_top_k_of_one_is_greedy_decoding(model):
    greedy = generate(model, BATCH, MASK, do_sample=False)
    for processors in (skt.logits_processor(top_k=1), [skt.TopKLogitsWarper(1)], skt.logits_processor(temperature=0.0)):
        assert torch.equal(
            generate(model, BATCH, MASK, seed=5, logits_processor=HF.LogitsProcessorList(processors)), greedy
        )


def test_padded_rows_are_truncated_each_on_its_own(model):
    settings = {"temperature": 0.9, "top_p": 0.6}
    out = generate(
        model,
        BATCH,
        MASK,
        logits_processor=skt.logits_processor(**settings),
        return_dict_in_generate=True,
        output_scores=True,
        output_logits=True,
    )
    for scores, logits in zip(out.scores, out.logits):
        for row in range(2):
            assert torch.equal(scores[row], smk.truncate(logits[row : row + 1], **settings)[0])
    # Greedy through the processors: each padded row decodes as its prompt does alone.
    greedy = generate(model, BATCH, MASK, logits_processor=skt.logits_processor(top_k=1))
    for row in range(2):
        prompt = BATCH[row : row + 1, MASK[row] == 1]
        alone = generate(model, prompt, torch.ones_like(prompt), logits_processor=skt.logits_processor(top_k=1))
        assert torch.equal(greedy[row, -8:], alone[0, -8:])
