"""How kinds of values flow through a file: calls, branch joins, reshapes, masks and integers.

Each behaviour has a case that must be reported and a look-alike that must
not; the rules' own cases are their fixtures (``test_lint_fixtures.py``).
"""

import ast

import pytest

from softmaxkit.tools.lint import RULES, lint_source
from softmaxkit.tools.lint.checker import Checker
from tests.tools.lint._lint_helpers import codes

TORCH = "import math\nimport numpy as np\nimport torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"


def _codes(body, header=TORCH):
    return codes(header + body)


# ---- through parameters and return values -----------------------------------


def test_module_whose_forward_returns_softmax_fed_to_a_loss_in_another_function():
    # fairseq's bug: the model's output reaches cross_entropy through a parameter.
    source = (
        "class Net(nn.Module):\n"
        "    def forward(self, x):\n"
        "        return torch.softmax(self.fc(x), dim=-1)\n"
        "def train_step(model, x, t):\n"
        "    out = model(x)\n"
        "    return F.cross_entropy(out, t)\n"
        "def main(x, t):\n"
        "    net = Net()\n"
        "    return train_step(net, x, t)\n"
    )
    assert _codes(source) == ["SMK201"]
    assert _codes(source.replace("torch.softmax(self.fc(x), dim=-1)", "self.fc(x)")) == []


def test_criterion_passed_as_a_parameter():
    source = (
        "def step(criterion, logits, t):\n"
        "    return criterion(logits, t)\n"
        "step(nn.CrossEntropyLoss(), F.softmax(z, dim=-1), t)\n"
    )
    assert _codes(source) == ["SMK201"]
    assert _codes(source.replace("F.softmax(z, dim=-1)", "z")) == []


def test_sigmoid_output_passed_to_binary_cross_entropy_in_a_helper():
    source = (
        "def bce(p, y):\n"
        "    return F.binary_cross_entropy(p, y)\n"
        "loss = bce(torch.sigmoid(z), y)\n"
    )
    assert _codes(source) == ["SMK204"]


def test_parameter_is_the_join_of_the_call_sites():
    source = (
        "def bce(p, y):\n"
        "    loss = F.binary_cross_entropy(p, y)\n"
        "    return loss\n"
        "a = bce(torch.sigmoid(z), y)\n"
        "b = bce(probabilities_from_elsewhere, y)\n"
    )
    assert _codes(source) == []


def test_parameter_flows_through_two_functions_and_a_return():
    source = (
        "def identity(p):\n"
        "    return p\n"
        "def loss(p, t):\n"
        "    return F.cross_entropy(identity(p), t)\n"
        "loss(F.softmax(z, dim=1), t)\n"
    )
    assert _codes(source) == ["SMK201"]


def test_method_parameters_are_bound_by_calls_on_self():
    source = (
        "class Trainer:\n"
        "    def loss(self, logits, t):\n"
        "        return F.cross_entropy(logits, t)\n"
        "    def step(self, x, t):\n"
        "        return self.loss(F.softmax(x, dim=-1), t)\n"
    )
    assert _codes(source) == ["SMK201"]


def test_parameter_with_starred_call_is_unknown():
    source = (
        "def loss(p, t):\n"
        "    value = F.cross_entropy(p, t)\n"
        "    return value\n"
        "loss(*pair)\n"
        "loss(F.softmax(z, dim=1), t)\n"
    )
    assert _codes(source) == []


def test_passes_are_bounded_on_recursion():
    source = (
        "def f(p, n):\n"
        "    if n == 0:\n"
        "        return F.cross_entropy(p, t)\n"
        "    return f(p, n - 1)\n"
        "f(F.softmax(z, dim=1), 3)\n"
    )
    assert _codes(source) == ["SMK201"]


# ---- branch joins -------------------------------------------------------------


def test_name_keeps_its_kind_when_both_branches_agree():
    source = (
        "if flag:\n"
        "    p = F.softmax(z, dim=1)\n"
        "else:\n"
        "    p = torch.softmax(z.float(), dim=1)\n"
        "loss = F.cross_entropy(p, t)\n"
    )
    assert _codes(source) == ["SMK201"]


def test_name_loses_its_kind_when_branches_disagree():
    source = (
        "if flag:\n"
        "    p = F.softmax(z, dim=1)\n"
        "else:\n"
        "    p = z\n"
        "loss = F.cross_entropy(p, t)\n"
    )
    assert _codes(source) == []
    swapped = source.replace("    p = F.softmax(z, dim=1)\n", "    p = Q\n").replace("    p = z\n", "    p = F.softmax(z, dim=1)\n")
    assert _codes(swapped.replace("p = Q", "p = z")) == []


def test_branch_that_returns_does_not_reach_the_join():
    source = (
        "def f(z, t, eval_mode):\n"
        "    p = F.softmax(z, dim=1)\n"
        "    if eval_mode:\n"
        "        p = z\n"
        "        return p\n"
        "    return F.cross_entropy(p, t)\n"
    )
    assert _codes(source) == ["SMK201"]


def test_optional_mask_stays_masked_after_the_join():
    source = (
        "def attend(s, mask=None):\n"
        "    if mask is not None:\n"
        "        s = s.masked_fill(mask == 0, float('-inf'))\n"
        "    return F.softmax(s, dim=-1)\n"
    )
    assert _codes(source) == ["SMK106"]


def test_loop_body_may_not_run():
    source = "p = z\nfor _ in range(3):\n    p = F.softmax(z, dim=1)\nloss = F.cross_entropy(p, t)\n"
    assert _codes(source) == []
    assert _codes(source.replace("p = z\n", "")) == ["SMK201"]


def test_try_and_its_handler_join():
    source = (
        "try:\n"
        "    p = F.softmax(z, dim=1)\n"
        "except ValueError:\n"
        "    p = z\n"
        "loss = F.cross_entropy(p, t)\n"
    )
    assert _codes(source) == []
    assert _codes(source.replace("    p = z\n", "    raise\n")) == ["SMK201"]


# ---- reshapes, concatenation, indexing, reciprocal --------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "torch.cat([p, p], dim=0)",
        "torch.stack((p, p))",
        "p.view(-1, 10)",
        "torch.reshape(p, (-1, 10))",
        "p.flatten(0, 1)",
        "p.permute(1, 0)",
        "p.transpose(0, 1)",
        "torch.unsqueeze(p, 0)",
        "p[:, :10]",
    ],
)
def test_kind_flows_through_reshapes_and_concatenation(expression):
    source = f"p = F.softmax(z, dim=1)\nloss = F.cross_entropy({expression}, t)\n"
    assert _codes(source) == ["SMK201"]
    assert _codes(source.replace("F.softmax(z, dim=1)", "z")) == []


def test_concatenation_of_different_kinds_has_none():
    assert _codes("p = F.softmax(z, dim=1)\nloss = F.cross_entropy(torch.cat([p, z]), t)\n") == []


def test_numpy_expand_dims_keeps_the_kind():
    source = "import scipy.special\np = np.expand_dims(scipy.special.softmax(z, axis=1), 0)\ny = np.log(p)\n"
    assert _codes(source) == ["SMK102"]


def test_product_with_the_reciprocal_of_the_sum_is_a_softmax():
    naive = "e = torch.exp(x)\np = e * e.sum(-1, keepdim=True) ** -1\nloss = F.cross_entropy(p, t)\n"
    assert sorted(_codes(naive)) == ["SMK101", "SMK201"]
    stable = naive.replace("torch.exp(x)", "torch.exp(x - x.max(-1, keepdim=True).values)")
    assert _codes(stable) == ["SMK201"]
    assert _codes(naive.replace("** -1", "** 2")) == []


# ---- the max in tuple unpacking -----------------------------------------------


@pytest.mark.parametrize(
    "line",
    ["m, _ = x.max(dim=-1, keepdim=True)", "m = x.max(dim=-1, keepdim=True).values", "m = torch.max(x, -1, True)[0]"],
)
def test_max_is_recognised(line):
    source = f"{line}\ne = torch.exp(x - m)\ny = e / e.sum(-1, keepdim=True)\n"
    assert _codes(source) == []
    assert _codes(source.replace("x - m", "x")) == ["SMK101"]


def test_second_element_of_max_is_not_the_max():
    source = "_, m = x.max(dim=-1, keepdim=True)\ne = torch.exp(x - m)\ny = e / e.sum(-1, keepdim=True)\n"
    assert _codes(source) == ["SMK101"]


# ---- flax, optax and user wrappers -------------------------------------------


@pytest.mark.parametrize(
    "header, call",
    [
        ("import flax.linen as nn\n", "nn.log_softmax(x)"),
        ("import flax.linen\n", "flax.linen.log_softmax(x)"),
        ("from flax import nnx\n", "nnx.log_softmax(x)"),
    ],
)
def test_flax_reexports_are_known(header, call):
    source = f"import jax.numpy as jnp\n{header}y = jnp.log(jnp.exp({call}))\nz = jnp.log({call.replace('log_softmax', 'softmax')})\n"
    assert codes(source) == ["SMK102"]


def test_optax_cross_entropy_takes_logits():
    source = "import jax\nimport optax\nloss = optax.softmax_cross_entropy(jax.nn.softmax(x), y)\n"
    assert codes(source) == ["SMK201"]
    assert codes(source.replace("jax.nn.softmax(x)", "x")) == []


def _with_functions(source, functions):
    tree = ast.parse(source)
    return [f.code for f in Checker(tree, source, list(RULES), functions=functions).run()]


def test_user_wrappers_are_known_operations():
    source = (
        "from fairseq import utils\n"
        "import torch.nn.functional as F\n"
        "probs = utils.softmax(x, dim=-1)\n"
        "loss = F.cross_entropy(probs, t)\n"
        "lp = utils.log_softmax(x, dim=-1)\n"
        "loss2 = xent.xent(F.softmax(x, dim=-1), t)\n"
    )
    functions = {"fairseq.utils.softmax": "softmax", "fairseq.utils.log_softmax": "log_softmax"}
    assert _with_functions(source, functions) == ["SMK201"]
    assert _with_functions(source, None) == []
    source_with_loss = source.replace("loss2 = xent", "import mypkg.losses as xent\nloss2 = xent")
    assert _with_functions(source_with_loss.replace("xent.xent", "xent.xent"), {"mypkg.losses.xent": "cross_entropy"}) == [
        "SMK201"
    ]


def test_user_wrapper_findings_offer_no_fix_through_unknown_neighbours():
    source = "from fairseq import utils\nimport torch\ny = torch.log(utils.softmax(x, dim=-1))\n"
    tree = ast.parse(source)
    findings = Checker(tree, source, list(RULES), functions={"fairseq.utils.softmax": "softmax"}).run()
    assert [f.code for f in findings] == ["SMK102"] and findings[0].fix is None


# ---- SMK106: masks that can and cannot empty a row --------------------------

NANOGPT = """\
class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.register_buffer("bias", torch.tril(torch.ones(8, 8)).view(1, 1, 8, 8))

    def forward(self, q, k):
        T = q.size(-2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float('-inf'))
        return F.softmax(att, dim=-1)
"""


def test_causal_mask_from_a_registered_buffer_is_not_reported():
    assert _codes(NANOGPT) == []


def test_padding_mask_added_to_a_causal_one_is_reported():
    source = NANOGPT.replace(
        "        return F.softmax", "        att = att.masked_fill(pad == 0, float('-inf'))\n        return F.softmax"
    )
    assert _codes(source) == ["SMK106"]


def test_register_buffer_of_an_unknown_mask_is_reported():
    assert _codes(NANOGPT.replace("torch.tril(torch.ones(8, 8))", "make_mask(8)")) == ["SMK106"]


@pytest.mark.parametrize(
    "mask",
    [
        "torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)",
        "torch.ones(T, T).tril() == 0",
        "~torch.ones(T, T, dtype=torch.bool).tril()",
        "torch.arange(T)[None, :] > torch.arange(T)[:, None]",
        "(torch.arange(T)[:, None] - torch.arange(T)[None, :]).abs() > window",
        "torch.ones(T, T).triu(1).bool() | torch.ones(T, T).tril(-window).bool()",
    ],
)
def test_causal_and_band_masks_are_not_reported(mask):
    source = f"def f(s, T, window):\n    s = s.masked_fill({mask}, float('-inf'))\n    return F.softmax(s, dim=-1)\n"
    assert _codes(source) == []
    assert _codes(source.replace(mask, "key_padding_mask")) == ["SMK106"]


def test_additive_causal_mask_is_not_reported():
    source = (
        "mask = torch.empty(8, 8).fill_(-np.inf).triu_(1)\n"
        "def f(qk):\n"
        "    qk = qk + mask[:8, :8]\n"
        "    return F.softmax(qk, dim=-1)\n"
    )
    assert _codes(source) == []


def test_top_k_mask_is_not_reported():
    source = (
        "def sample(logits, k):\n"
        "    v, _ = torch.topk(logits, min(k, logits.size(-1)))\n"
        "    logits[logits < v[:, [-1]]] = -float('Inf')\n"
        "    return F.softmax(logits, dim=-1)\n"
    )
    assert _codes(source) == []
    assert _codes(source.replace("logits < v[:, [-1]]", "banned")) == ["SMK106"]


def test_top_k_mask_with_masked_fill_and_values_is_not_reported():
    source = (
        "def sample(logits, k):\n"
        "    kth = torch.topk(logits, k).values[..., -1, None]\n"
        "    logits = logits.masked_fill(logits < kth, float('-inf'))\n"
        "    return F.softmax(logits, dim=-1)\n"
    )
    assert _codes(source) == []


# ---- SMK301/SMK302: integer-valued and rounded --------------------------------


@pytest.mark.parametrize(
    "argument",
    ["3", "len(xs)", "xs.shape[0]", "xs.size(0)", "i", "int(x)", "n_tokens", "xs.shape[0] * 2"],
)
def test_integer_arguments_are_not_reported(argument):
    source = f"n_tokens = len(xs)\nfor i in range(4):\n    a = math.log(1 + {argument})\n    b = math.exp({argument}) - 1\n"
    assert _codes(source) == []


def test_literal_arguments_that_are_not_small_are_not_reported():
    assert _codes("a = math.exp(2.1) - 1\nb = np.log(1 + 0.5)\nc = math.exp(-0.25) - 1\n") == []
    assert _codes("a = math.exp(1e-5) - 1\nb = np.log(1 + 1e-9)\n") == ["SMK302", "SMK301"]


@pytest.mark.parametrize("argument", ["x", "x / 2", "xs.mean()"])
def test_real_arguments_are_reported(argument):
    source = f"a = math.log(1 + {argument})\nb = math.exp({argument}) - 1\n"
    assert _codes(source) == ["SMK301", "SMK302"]


@pytest.mark.parametrize(
    "wrap",
    [
        "int({})",
        "round({})",
        "math.floor({})",
        "math.ceil({} / math.log(2))",
        "np.floor({})",
        "({}).astype(int)",
        "({}).astype(np.int64)",
        "({}).long()",
    ],
)
def test_rounded_results_are_not_reported(wrap):
    source = f"a = {wrap.format('np.log(1 + x)')}\nb = {wrap.format('np.exp(x) - 1')}\n"
    assert _codes(source) == []
    assert _codes("a = np.log(1 + x) + 0.5\nb = np.exp(x) - 1\n") == ["SMK301", "SMK302"]


def test_padding_mask_built_from_lengths_is_reported():
    source = (
        "def f(s, lengths, T):\n"
        "    pad = torch.arange(T)[None, :] >= lengths[:, None]\n"
        "    s = s.masked_fill(pad, float('-inf'))\n"
        "    return F.softmax(s, dim=-1)\n"
    )
    assert _codes(source) == ["SMK106"]


# ---- more flow: tuples, conditional expressions, modes, duck typing ----------


def test_tuple_returned_by_forward_is_unpacked():
    # pytorch/examples' VAE: forward returns (decode(z), mu, logvar), decode ends in sigmoid.
    source = (
        "class VAE(nn.Module):\n"
        "    def decode(self, z):\n"
        "        return torch.sigmoid(self.fc(z))\n"
        "    def forward(self, x):\n"
        "        return self.decode(x), x, x\n"
        "def loss_function(recon_x, x):\n"
        "    return F.binary_cross_entropy(recon_x, x)\n"
        "model = VAE()\n"
        "recon, mu, logvar = model(data)\n"
        "loss = loss_function(recon, data)\n"
    )
    assert _codes(source) == ["SMK204"]
    assert _codes(source.replace("recon, mu, logvar = model(data)", "mu, recon, logvar = model(data)")) == []


def test_conditional_expression_joins_its_branches():
    source = (
        "def add_mask(scores, mask=None):\n"
        "    return scores if mask is None else scores + mask\n"
        "bias = torch.zeros(4, 4).masked_fill(key_mask, float('-inf'))\n"
        "attn = add_mask(scores, bias).softmax(dim=-1)\n"
    )
    assert _codes(source) == ["SMK106"]


def test_mode_dependent_output_meets_the_loss_of_the_same_mode():
    # fairseq's pitch predictor: sigmoid in "mean" mode, softmax in "argmax" mode,
    # and the training loop picks the loss with the same test.
    source = (
        "class Predictor(nn.Module):\n"
        "    def forward(self, x):\n"
        "        x = self.proj(x)\n"
        "        if self.mode == 'mean':\n"
        "            x = torch.sigmoid(x)\n"
        "        elif self.mode == 'argmax':\n"
        "            x = torch.softmax(x, dim=-1)\n"
        "        return x\n"
        "def run(model: Predictor, cfg):\n"
        "    yhat = model(x)\n"
        "    if cfg.mode == 'mean':\n"
        "        loss = F.binary_cross_entropy(yhat[m], y[m])\n"
        "    elif cfg.mode == 'argmax':\n"
        "        loss = F.cross_entropy(yhat.view(-1, 8), y)\n"
        "    else:\n"
        "        loss = F.cross_entropy(yhat, y)\n"
        "run(Predictor(), cfg)\n"
    )
    assert _codes(source) == ["SMK204", "SMK201"]
    assert _codes(source.replace("cfg.mode == 'mean'", "cfg.other == 'mean'").replace("cfg.mode == 'argmax'", "cfg.other == 'argmax'")) == []


def test_returns_under_a_mode_test():
    source = (
        "def head(x, kind):\n"
        "    if kind == 'probs':\n"
        "        return F.softmax(x, dim=-1)\n"
        "    return x\n"
        "def train(x, t, kind):\n"
        "    out = head(x, kind)\n"
        "    if kind == 'probs':\n"
        "        return F.cross_entropy(out, t)\n"
        "    return F.cross_entropy(out, t)\n"
    )
    assert _codes(source) == ["SMK201"]


def test_parameter_of_unknown_origin_typed_by_a_method_only_one_class_defines():
    source = (
        "class Net(nn.Module):\n"
        "    def forward(self, x):\n"
        "        return torch.softmax(self.fc(x), dim=-1)\n"
        "    def inference(self, x):\n"
        "        return self(x).argmax(-1)\n"
        "def run_epoch(model, x, t):\n"
        "    preds = model.inference(x)\n"
        "    return F.cross_entropy(model(x), t)\n"
    )
    assert _codes(source) == ["SMK201"]
    assert _codes(source.replace("model.inference(x)", "model.eval()")) == []
    two_classes = source.replace("class Net(nn.Module):", "class Other:\n    def inference(self, x):\n        return x\nclass Net(nn.Module):")
    assert _codes(two_classes) == []


def test_data_parallel_calls_the_module():
    source = (
        "class D(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.main = nn.Sequential(nn.Linear(4, 1), nn.Sigmoid())\n"
        "    def forward(self, x):\n"
        "        if self.ngpu > 1:\n"
        "            out = nn.parallel.data_parallel(self.main, x, range(2))\n"
        "        else:\n"
        "            out = self.main(x)\n"
        "        return out.view(-1)\n"
        "criterion = nn.BCELoss()\n"
        "net = D()\n"
        "loss = criterion(net(x), y)\n"
    )
    assert _codes(source) == ["SMK204"]


def test_reciprocal_kept_in_a_name():
    # makemore: counts_sum_inv = counts_sum**-1; probs = counts * counts_sum_inv
    source = (
        "norm = logits - logits.max(1, keepdim=True).values\n"
        "counts = norm.exp()\n"
        "counts_sum_inv = counts.sum(1, keepdims=True) ** -1\n"
        "probs = counts * counts_sum_inv\n"
        "logprobs = probs.log()\n"
    )
    assert _codes(source) == ["SMK102"]
    assert _codes(source.replace("** -1", "** 2")) == []


def test_weighted_exponentials_are_exponentials():
    source = "p = torch.sum(pi * torch.exp(log_prob), 2)\nloss = -torch.mean(torch.log(1e-5 + p))\n"
    assert _codes(source) == ["SMK103"]
    assert _codes(source.replace("pi * torch.exp(log_prob)", "torch.exp(log_prob) * pi")) == ["SMK103"]
    assert _codes(source.replace("torch.exp(log_prob)", "torch.exp(log_prob - log_prob.max())")) == []


def test_exponentials_sampled_by_multinomial_are_a_naive_softmax():
    source = "w = out.div(temperature).exp().cpu()\nidx = torch.multinomial(w, 1)\n"
    assert _codes(source) == ["SMK101"]
    assert _codes(source.replace("out.div(temperature)", "(out - out.max()).div(temperature)")) == []


def test_einops_rearrange_keeps_the_kind():
    source = "from einops import rearrange\np = F.softmax(z, -1)\nloss = F.cross_entropy(rearrange(p, 'b t d -> (b t) d'), t)\n"
    assert _codes(source) == ["SMK201"]


def test_literal_inputs_cannot_saturate():
    source = (
        "x1 = torch.tensor([1.1])\n"
        "w1 = torch.tensor([2.2], requires_grad=True)\n"
        "z = x1 * w1 + 0.5\n"
        "loss = F.binary_cross_entropy(torch.sigmoid(z), y)\n"
        "e = torch.exp(z)\n"
        "p = e / e.sum()\n"
    )
    assert _codes(source) == []
    assert _codes(source.replace("[2.2]", "[22.0]")) == ["SMK204"]
    assert _codes(source.replace("[2.2]", "[220.0]")) == ["SMK204", "SMK101"]


def test_tempered_log_probabilities_normalised_again_are_not_reported():
    source = "q = torch.distributions.Categorical(logits=F.log_softmax(x, -1) / temperature)\n"
    assert _codes(source) == []
    assert _codes("lp = F.log_softmax(x, -1) / temperature\n") == ["SMK105"]
    assert _codes("q = torch.distributions.Categorical(probs=F.softmax(x, -1) / temperature)\n") == ["SMK105"]


def test_nn_softmax_module_over_masked_scores_is_reported():
    source = (
        "class GAT(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.softmax = nn.Softmax(dim=1)\n"
        "    def forward(self, e, adj):\n"
        "        e = e.masked_fill(adj == 0, float('-inf'))\n"
        "        return self.softmax(e)\n"
    )
    assert _codes(source) == ["SMK106"]
    assert _codes(source.replace("float('-inf')", "-1e9")) == []


def test_column_ranges_masked_alike_in_every_row_are_not_reported():
    # whisper's logit filters: the same columns of every row.
    source = (
        "def f(logits, suppress, k, begin):\n"
        "    logits[:, suppress] = -np.inf\n"
        "    logits[k, begin:] = -np.inf\n"
        "    return F.log_softmax(logits, dim=-1)\n"
    )
    assert _codes(source) == []
    assert _codes(source.replace("logits[:, suppress]", "logits[row_mask]")) == ["SMK106"]


def test_where_with_keywords_and_a_top_k_condition_is_not_reported():
    source = (
        "top, _ = torch.topk(logits, 3)\n"
        "new = torch.where(condition=logits < top[-1], input=torch.tensor(float('-inf')), other=logits)\n"
        "p = torch.softmax(new, dim=0)\n"
    )
    assert _codes(source) == []
    assert _codes(source.replace("logits < top[-1]", "banned")) == ["SMK106"]


def test_one_line_wrapper_is_checked_where_it_is_called():
    # PyTorch-GAN's softmax GAN: log(Z) with a helper log(x) = torch.log(x + 1e-8).
    source = (
        "def log(x):\n"
        "    return torch.log(x + 1e-8)\n"
        "def step(d_real, d_fake):\n"
        "    Z = torch.sum(torch.exp(-d_real)) + torch.sum(torch.exp(-d_fake))\n"
        "    d_loss = torch.sum(d_real) + log(Z)\n"
        "    g_loss = torch.sum(d_fake) + log(Z)\n"
        "    h = log(torch.sum(torch.exp(d_real), dim=1))\n"
        "    return d_loss, g_loss, h\n"
    )
    findings = lint_source(TORCH + source)
    assert [(f.code, f.row - TORCH.count("\n")) for f in findings] == [("SMK103", 5), ("SMK103", 6), ("SMK103", 7)]
    assert all(f.fix is None for f in findings)
    stable = source.replace("torch.sum(torch.exp(-d_fake))", "torch.sum(d_fake)").replace("torch.exp(d_real)", "d_real")
    assert _codes(stable.replace("torch.sum(torch.exp(-d_real))", "torch.sum(d_real)")) == []


def test_wrapped_bce_is_reported_at_each_call():
    source = (
        "def bce(p, y):\n"
        "    return F.binary_cross_entropy(p, y)\n"
        "a = bce(torch.sigmoid(z), y)\n"
        "b = bce(probabilities_from_elsewhere, y)\n"
    )
    findings = lint_source(TORCH + source)
    assert [(f.code, f.row - TORCH.count("\n")) for f in findings] == [("SMK204", 3)]


def test_sequential_moved_to_a_device_keeps_its_output_kind():
    source = (
        "D = nn.Sequential(nn.Linear(4, 1), nn.Sigmoid())\n"
        "D = D.to(device)\n"
        "criterion = nn.BCELoss()\n"
        "loss = criterion(D(images), labels)\n"
    )
    assert _codes(source) == ["SMK204"]
    assert _codes(source.replace("nn.Sigmoid()", "nn.ReLU()")) == []


def test_parameter_annotated_int_is_an_integer():
    source = "def f(num_words: int, x: float):\n    return np.log(num_words + 1), np.log(x + 1)\n"
    assert _codes(source) == ["SMK301"]


def test_softmax_without_dim_of_a_vector_is_not_reported():
    source = "scores = torch.zeros(n_step)\nfor i in range(n_step):\n    scores[i] = score(i)\np = F.softmax(scores)\n"
    assert _codes(source) == []
    assert _codes(source.replace("torch.zeros(n_step)", "torch.zeros(n_step, 4)")) == ["SMK104"]


def test_binary_cross_entropy_written_out_per_element():
    source = (
        "def sigmoid(x):\n"
        "    return 1 / (1 + np.exp(-x))\n"
        "def error_formula(y, output):\n"
        "    return - y*np.log(output) - (1 - y) * np.log(1-output)\n"
        "out = sigmoid(np.dot(x, w))\n"
        "err = error_formula(y, out)\n"
    )
    # Both: the per-element loss, and the log of the sigmoid with its own fix (logsigmoid).
    assert _codes(source) == ["SMK203", "SMK303"]
    assert _codes(source.replace("out = sigmoid(np.dot(x, w))", "out = np.dot(x, w)")) == []
    assert _codes("d = np.log(p) - np.log(q)\n") == []


def test_long_chains_are_followed_without_recursing():
    # Each of these once overflowed the analysis ("too deeply nested to analyse").
    unary = "y = " + "-" * 900 + "torch.exp(x)\n"
    conditional = "y = " + "a if c else " * 900 + "b\n"
    elifs = "if a == 0:\n    p = F.softmax(z, 1)\n" + "".join(f"elif a == {i}:\n    p = F.softmax(z, 1)\n" for i in range(1, 1500))
    elifs += "else:\n    p = F.softmax(z, 0)\nloss = F.cross_entropy(p, t)\n"
    assert _codes(unary) == []
    assert _codes(conditional) == []
    assert _codes(elifs) == ["SMK201"]


def test_softmax_module_without_dim_applied_only_to_matrices_is_not_reported():
    # PyTorch-GAN's auxiliary classifier: flattened features, nn.Linear, nn.Softmax().
    source = (
        "class D(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.aux = nn.Sequential(nn.Linear(64, 10), nn.Softmax())\n"
        "    def forward(self, img):\n"
        "        out = self.conv(img)\n"
        "        out = out.view(out.shape[0], -1)\n"
        "        return self.aux(out)\n"
    )
    assert _codes(source) == []
    assert _codes(source.replace("out.view(out.shape[0], -1)", "out.view(out.shape[0], 4, -1)")) == ["SMK104"]
    assert _codes(source.replace("        return self.aux(out)\n", "        return out\n")) == ["SMK104"]
    assert _codes(source.replace("out.view(out.shape[0], -1)", "out.flatten(1)")) == []


def test_maximum_with_infinities_replaced_is_still_a_maximum():
    # torch._refs.logsumexp: maxes = masked_fill(amax(x), maxes.abs() == inf, 0)
    source = (
        "maxes = torch.amax(x, dim, keepdim=True)\n"
        "maxes = torch.masked_fill(maxes, maxes.abs() == float('inf'), 0)\n"
        "result = torch.sum(torch.exp(x - maxes), dim).log()\n"
    )
    assert _codes(source) == []
    assert _codes(source.replace("torch.amax(x, dim, keepdim=True)", "x.mean(dim, keepdim=True)")) == ["SMK103"]


def test_class_whose_method_returns_its_own_instance():
    # torch.nn.utils.spectral_norm: SpectralNorm.apply returns a SpectralNorm.
    source = (
        "class Norm:\n"
        "    @staticmethod\n"
        "    def apply(module):\n"
        "        fn = Norm()\n"
        "        return fn\n"
        "def spectral_norm(module):\n"
        "    Norm.apply(module)\n"
        "    return module\n"
        "def use(norm):\n"
        "    return norm\n"
        "use(Norm())\n"
    )
    assert _codes(source) == []


def test_exp_in_extended_precision_is_not_a_naive_softmax():
    source = "def softmax(x):\n    x = np.array(x, dtype=np.float128)\n    e = np.exp(x)\n    return e / e.sum(axis=0)\n"
    assert _codes(source) == []
    assert _codes(source.replace("np.float128", "np.float64")) == ["SMK101"]
    assert _codes(source.replace("np.array(x, dtype=np.float128)", "x.astype(np.longdouble)")) == []


def test_top_p_mask_is_not_reported():
    source = (
        "def nucleus(logits, top_p):\n"
        "    sorted_logits, sorted_indices = torch.sort(logits, descending=True)\n"
        "    cumulative = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)\n"
        "    remove = cumulative > top_p\n"
        "    remove[..., 1:] = remove[..., :-1].clone()\n"
        "    remove[..., 0] = 0\n"
        "    remove = remove.scatter(-1, sorted_indices, remove)\n"
        "    logits[remove] = float('-inf')\n"
        "    return torch.softmax(logits, dim=-1)\n"
    )
    assert _codes(source) == []
    assert _codes(source.replace("torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)", "torch.cumsum(w, dim=-1)")) == ["SMK106"]


def test_threshold_relative_to_the_row_maximum_is_not_reported():
    # Mixtral-style sparse gating: entries far below the row maximum are masked.
    source = (
        "def gate(scores, eps):\n"
        "    m, _ = scores.max(dim=-1, keepdim=True)\n"
        "    far = ((m - scores) / scores.abs().clamp(min=m)) > 2 * eps\n"
        "    return torch.softmax(scores.masked_fill(far, float('-inf')), dim=-1)\n"
    )
    assert _codes(source) == []
    assert _codes(source.replace("m, _ = scores.max(dim=-1, keepdim=True)", "m = scores.mean(dim=-1, keepdim=True)")) == ["SMK106"]
    # A length mask whose size is a maximum is still a padding mask.
    padding = "def f(s, lengths):\n    pad = torch.arange(lengths.max())[None, :] >= lengths[:, None]\n    return torch.softmax(s.masked_fill(pad, float('-inf')), -1)\n"
    assert _codes(padding) == ["SMK106"]
