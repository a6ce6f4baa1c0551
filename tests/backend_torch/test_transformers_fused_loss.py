"""softmaxkit.torch.integrations.transformers.use_fused_loss: the loss and every parameter's gradient of
tiny GPT-2, Llama and Gemma-2 models (built from configs, no download) against the same models
unpatched, the documented differences (all labels ignored, float64 models), logits only when asked,
generate(), idempotence and undo.

Tolerances: the models run in float32 and differ only in how the loss is formed from the same hidden
states (transformers: float32 logits and torch's float32 cross-entropy; softmaxkit: float32 logits,
float64 reduction).  The losses agree to 1e-5 relative.  The gradients pass back through the same
layers, where a difference of a few ULP in the hidden states' gradient spreads to entries near 0, so
they are compared normwise: each parameter's gradient within 1e-5 of its largest entry (measured: at
most 6e-7).
"""

import copy
import inspect

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import softmaxkit.backends.torch.integrations.transformers as backend
from softmaxkit.torch.integrations.transformers import remove_fused_loss, use_fused_loss

VOCAB = 97
LOSS_TOL = {"rtol": 1e-5, "atol": 0.0}
GRAD_NORMWISE = 1e-5


def gpt2():
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=VOCAB, bos_token_id=None, eos_token_id=None)
    return transformers.GPT2LMHeadModel(config)


def gpt2_with_bias():
    # An untied head with a bias: the bias gradient and an lm_head that is not the embedding.
    model = gpt2()
    model.lm_head = torch.nn.Linear(32, VOCAB, bias=True)
    with torch.no_grad():
        model.lm_head.bias.normal_()
    return model


def llama():
    config = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, vocab_size=VOCAB, tie_word_embeddings=False,
    )
    return transformers.LlamaForCausalLM(config)


def gemma2():
    # A small soft cap, so that it bends the logits of this tiny model.
    config = transformers.Gemma2Config(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, vocab_size=VOCAB, final_logit_softcapping=0.5,
        attn_implementation="eager",
    )
    return transformers.Gemma2ForCausalLM(config)


MODELS = {"gpt2": gpt2, "gpt2_bias": gpt2_with_bias, "llama": llama, "gemma2": gemma2}


def pair(name, seed=0):
    """(reference, patched): the same weights, in eval mode (no dropout); only the second is patched."""
    torch.manual_seed(seed)
    reference = MODELS[name]().eval()
    with torch.no_grad():
        for p in reference.parameters():
            p.mul_(8.0 if p is reference.get_output_embeddings().weight else 1.0)  # confident rows
    return reference, use_fused_loss(copy.deepcopy(reference))


def batch(seed=1, shape=(3, 9)):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, shape, generator=gen)
    labels = ids.clone()
    labels[0, :4] = -100  # a masked prompt
    labels[2, 5] = -100
    return ids, labels


def loss_and_grads(model, **kwargs):
    model.zero_grad(set_to_none=True)
    out = model(**kwargs)
    out.loss.backward()
    return out, {n: p.grad for n, p in model.named_parameters()}


def assert_same_loss_and_grads(reference, patched, **kwargs):
    ref_out, ref_grads = loss_and_grads(reference, **kwargs)
    out, grads = loss_and_grads(patched, **kwargs)
    assert out.loss.dtype == ref_out.loss.dtype == torch.float32
    torch.testing.assert_close(out.loss, ref_out.loss, **LOSS_TOL)
    assert ref_grads.keys() == grads.keys()
    for name, g in grads.items():
        assert g is not None and ref_grads[name] is not None, name
        error = float((g - ref_grads[name]).abs().max() / ref_grads[name].abs().max())
        assert error <= GRAD_NORMWISE, (name, error)
    return out, ref_out


@pytest.mark.parametrize("name", MODELS)
def test_loss_and_every_gradient_match_transformers_with_ignored_labels(name):
    reference, patched = pair(name)
    ids, labels = batch()
    out, _ = assert_same_loss_and_grads(reference, patched, input_ids=ids, labels=labels)
    assert out.logits is None


@pytest.mark.parametrize("name", MODELS)
def test_num_items_in_batch_divides_the_sum(name):
    # Gradient accumulation: the sum over this batch divided by the tokens of all the batches.
    reference, patched = pair(name)
    ids, labels = batch()
    items = torch.tensor(40)
    out, _ = assert_same_loss_and_grads(reference, patched, input_ids=ids, labels=labels, num_items_in_batch=items)
    mean = patched(input_ids=ids, labels=labels).loss
    counted = int((labels[:, 1:] != -100).sum())
    torch.testing.assert_close(out.loss, mean * counted / 40, **LOSS_TOL)


@pytest.mark.parametrize("name", ["gpt2", "gemma2"])
def test_shift_labels_are_used_as_given(name):
    reference, patched = pair(name)
    ids, labels = batch()
    shifted = torch.roll(labels, 1, dims=1)  # any per-position targets, not the shifted labels
    assert_same_loss_and_grads(reference, patched, input_ids=ids, labels=labels, shift_labels=shifted)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_logits_to_keep_scores_the_kept_positions(name):
    reference, patched = pair(name)
    if "logits_to_keep" not in inspect.signature(type(reference).forward).parameters:
        pytest.skip(f"{type(reference).__name__} takes no logits_to_keep in transformers {transformers.__version__}")
    ids, labels = batch()
    kept_labels = labels[:, -4:]
    assert_same_loss_and_grads(reference, patched, input_ids=ids, labels=kept_labels, logits_to_keep=4)
    with pytest.raises(ValueError, match="one label per position"):
        patched(input_ids=ids, labels=labels, logits_to_keep=4)


@pytest.mark.parametrize("name", ["gpt2", "llama", "gemma2"])
def test_every_label_ignored_gives_zero_where_transformers_gives_nan(name):
    reference, patched = pair(name)
    ids, _ = batch()
    labels = torch.full_like(ids, -100)
    assert torch.isnan(reference(input_ids=ids, labels=labels).loss)
    out, grads = loss_and_grads(patched, input_ids=ids, labels=labels)
    assert out.loss.item() == 0.0
    assert all(g is None or not g.any() for g in grads.values())
    # num_items_in_batch of 0 (a step with no tokens): transformers divides 0 by 0.
    assert torch.isnan(reference(input_ids=ids, labels=labels, num_items_in_batch=torch.tensor(0)).loss)
    assert patched(input_ids=ids, labels=labels, num_items_in_batch=torch.tensor(0)).loss.item() == 0.0


def test_a_router_aux_loss_is_kept():
    # Mixtral adds router_aux_loss_coef * aux_loss to the loss that self.loss_function returns.
    torch.manual_seed(0)
    config = transformers.MixtralConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        vocab_size=VOCAB, num_local_experts=4, num_experts_per_tok=2, output_router_logits=True,
        router_aux_loss_coef=0.5,
    )
    reference = transformers.MixtralForCausalLM(config).eval()
    patched = use_fused_loss(copy.deepcopy(reference))
    ids, labels = batch()
    out, ref_out = assert_same_loss_and_grads(reference, patched, input_ids=ids, labels=labels)
    assert out.aux_loss > 0.1
    assert torch.equal(out.aux_loss, ref_out.aux_loss)


def test_float64_model_gives_a_float64_loss():
    # transformers rounds a float64 model's logits to float32 before its cross-entropy.
    # GPT-2: its LayerNorm keeps float64 (Llama's and Gemma's RMSNorm round to float32).
    reference, patched = pair("gpt2_bias")
    reference, patched = reference.double(), patched.double()
    ids, labels = batch()
    logits = reference(input_ids=ids).logits
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1))
    assert abs(reference(input_ids=ids, labels=labels).loss.item() - expected.item()) > 1e-9
    loss = patched(input_ids=ids, labels=labels).loss
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, expected, rtol=1e-13, atol=0.0)
    assert reference(input_ids=ids, labels=labels).loss.dtype == torch.float32


def test_bfloat16_model_gives_a_float32_loss_and_bfloat16_gradients():
    reference, patched = pair("llama")
    reference, patched = reference.bfloat16(), patched.bfloat16()
    ids, labels = batch()
    ref_out, _ = loss_and_grads(reference, input_ids=ids, labels=labels)
    out, grads = loss_and_grads(patched, input_ids=ids, labels=labels)
    assert out.loss.dtype == ref_out.loss.dtype == torch.float32
    # transformers rounds the logits to bfloat16 before its float32 cross-entropy; softmaxkit does not.
    torch.testing.assert_close(out.loss, ref_out.loss, rtol=2e-2, atol=0.0)
    assert all(g.dtype == torch.bfloat16 and torch.isfinite(g).all() for g in grads.values())


@pytest.mark.parametrize("name", ["gpt2", "gemma2"])
def test_logits_only_when_asked(name):
    reference, patched = pair(name)
    ids, labels = batch()
    ref_out = reference(input_ids=ids, labels=labels)
    assert patched(input_ids=ids, labels=labels).logits is None
    # Without labels the model is unchanged.
    assert torch.equal(patched(input_ids=ids).logits, reference(input_ids=ids).logits)
    # return_dict=False: the tuple without the logits.
    plain = patched(input_ids=ids, labels=labels, return_dict=False)
    ref_plain = reference(input_ids=ids, labels=labels, return_dict=False)
    assert len(plain) == len(ref_plain) - 1
    assert torch.equal(plain[0], patched(input_ids=ids, labels=labels).loss)
    use_fused_loss(patched, return_logits=True)
    out = patched(input_ids=ids, labels=labels)
    assert torch.equal(out.logits, ref_out.logits)
    torch.testing.assert_close(out.loss, ref_out.loss, **LOSS_TOL)
    assert len(patched(input_ids=ids, labels=labels, return_dict=False)) == len(ref_plain)


@pytest.mark.parametrize("name", ["gpt2", "llama", "gemma2"])
def test_generate_is_unchanged(name):
    reference, patched = pair(name)
    prompt = torch.tensor([[5, 6, 7, 8]])
    settings = {"attention_mask": torch.ones_like(prompt), "max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    assert torch.equal(patched.generate(prompt, **settings), reference.generate(prompt, **settings))


def test_applied_twice_wraps_once_and_removes_in_one_call(monkeypatch):
    reference, patched = pair("gpt2")
    use_fused_loss(patched)
    calls = []
    fused = backend.linear_cross_entropy
    monkeypatch.setattr(backend, "linear_cross_entropy", lambda *a, **k: calls.append(1) or fused(*a, **k))
    ids, labels = batch()
    patched(input_ids=ids, labels=labels)
    assert len(calls) == 1
    assert vars(patched)["forward"].previous is None
    remove_fused_loss(patched)
    assert "forward" not in vars(patched) and "_loss_function" not in vars(patched)
    out, ref_out = patched(input_ids=ids, labels=labels), reference(input_ids=ids, labels=labels)
    assert len(calls) == 1
    assert torch.equal(out.loss, ref_out.loss) and torch.equal(out.logits, ref_out.logits)
    assert remove_fused_loss(patched) is patched  # nothing to undo


def test_an_earlier_instance_forward_is_kept_and_restored():
    _, patched = pair("gpt2")
    remove_fused_loss(patched)
    seen = []
    own = patched.forward

    def logged(*args, **kwargs):
        seen.append(kwargs.get("labels") is not None)
        return own(*args, **kwargs)

    patched.forward = logged
    use_fused_loss(patched)
    ids, labels = batch()
    assert patched(input_ids=ids, labels=labels).logits is None
    assert seen == [True]
    remove_fused_loss(patched)
    assert vars(patched)["forward"] is logged


def test_a_deep_copy_runs_its_own_weights():
    _, patched = pair("llama")
    twin = copy.deepcopy(patched)
    assert vars(twin)["forward"].model is twin
    with torch.no_grad():
        twin.lm_head.weight.zero_()
    ids, labels = batch()
    # Zero logits: the mean loss is log(V) exactly in float64, rounded once.
    assert twin(input_ids=ids, labels=labels).loss.item() == pytest.approx(torch.log(torch.tensor(float(VOCAB))).item(), rel=1e-7)
    assert patched(input_ids=ids, labels=labels).loss.item() != twin(input_ids=ids, labels=labels).loss.item()


def test_errors_name_the_argument():
    with pytest.raises(TypeError, match="model must be a transformers.PreTrainedModel"):
        use_fused_loss(torch.nn.Linear(2, 2))
    _, patched = pair("llama")
    with pytest.raises(TypeError, match="return_logits must be a bool"):
        use_fused_loss(patched, return_logits=1)
    remove_fused_loss(patched)
    patched.config.logit_scale = 0.0625
    with pytest.raises(ValueError, match="logit_scale is 0.0625"):
        use_fused_loss(patched)
    assert "forward" not in vars(patched)


def test_transformers_before_4_50_is_refused(monkeypatch):
    _, patched = pair("gpt2")
    remove_fused_loss(patched)
    monkeypatch.setattr(transformers, "__version__", "4.49.0")
    with pytest.raises(ImportError, match=r"transformers 4.50 or later.*4.49.0 is installed"):
        use_fused_loss(patched)
    assert "forward" not in vars(patched)
    monkeypatch.setattr(transformers, "__version__", "4.50.0.dev0")
    assert "forward" in vars(use_fused_loss(patched))


class InlineLossGPT2(transformers.GPT2LMHeadModel):
    """A forward that computes its loss itself, without self.loss_function."""

    def forward(self, input_ids=None, labels=None, **kwargs):
        out = super().forward(input_ids, **kwargs)
        out.loss = out.logits.float().mean()
        return out


def test_a_forward_without_loss_function_raises():
    torch.manual_seed(0)
    model = use_fused_loss(InlineLossGPT2(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=VOCAB)))
    ids, labels = batch()
    with pytest.raises(RuntimeError, match="without self.loss_function"):
        model(input_ids=ids, labels=labels)
    assert "_loss_function" not in vars(model)
    assert model(input_ids=ids).logits.shape == (3, 9, VOCAB)
