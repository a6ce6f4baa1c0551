"""Each rule: code it must report, and look-alike code it must not."""

import pytest

from _lint_helpers import codes

HEADER = """\
import math
import numpy as np
import scipy.special
import torch
import torch.nn as nn
import torch.nn.functional as F
import jax
import jax.numpy as jnp
"""

CASES = {
    "SMK101": (
        [
            "e = np.exp(x)\ny = e / e.sum(axis=-1, keepdims=True)",
            "y = torch.exp(x) / torch.exp(x).sum(dim=1, keepdim=True)",
            "y = x.exp() / x.exp().sum(-1, keepdim=True)",
            "y = jnp.exp(x) / jnp.sum(jnp.exp(x))",
            "e = np.exp(x)\ns = e.sum()\ny = e / s",
        ],
        [
            "e = np.exp(x - x.max(axis=-1, keepdims=True))\ny = e / e.sum(axis=-1, keepdims=True)",
            "m = np.max(x)\ne = np.exp(x - m)\ny = e / e.sum()",
            "e = torch.exp(x - torch.logsumexp(x, 1, keepdim=True))",
            "y = np.exp(a) / np.exp(b)",
            "y = math.exp(a) / sum(math.exp(v) for v in xs)",
        ],
    ),
    "SMK102": (
        [
            "y = torch.log(F.softmax(x, dim=-1))",
            "y = np.log(scipy.special.softmax(x))",
            "y = x.softmax(-1).log()",
            "act = nn.Softmax(dim=1)\ny = torch.log(act(h))",
            "p = F.softmax(x, dim=1)\ny = p.log()",
            "y = jnp.log(jax.nn.softmax(x))",
        ],
        [
            "y = F.log_softmax(x, dim=-1)",
            "y = torch.log(x)",
            "y = torch.log(F.relu(x))",
            "p = F.softmax(x, dim=1)\ny = p.argmax(-1)",
        ],
    ),
    "SMK103": (
        [
            "y = torch.log(torch.sum(torch.exp(x), dim=1))",
            "y = np.log(np.sum(np.exp(x)))",
            "y = x.exp().sum(-1).log()",
            "s = jnp.exp(x).sum(axis=0)\ny = jnp.log(s)",
        ],
        [
            "m = x.max()\ny = m + np.log(np.sum(np.exp(x - m)))",
            "y = torch.logsumexp(x, dim=1)",
            "y = np.log(np.sum(x))",
            "y = np.log(np.exp(x))",
        ],
    ),
    "SMK104": (
        [
            "y = F.softmax(x)",
            "y = F.log_softmax(x)",
            "m = nn.Softmax()",
            "m = nn.LogSoftmax(dim=None)",
            "y = F.softmax(x, dim=None)",
        ],
        [
            "y = F.softmax(x, -1)",
            "y = F.softmax(x, dim=1)",
            "m = nn.Softmax(1)",
            "y = scipy.special.softmax(x)",
            "y = jax.nn.softmax(x)",
            "y = F.softmax(x, **options)",
        ],
    ),
    "SMK105": (
        [
            "y = F.softmax(x, dim=-1) / T",
            "y = F.log_softmax(x, dim=-1) * (1 / temperature)",
            "p = F.softmax(x, dim=-1)\ny = p ** (1 / self.tau)",
            "p = torch.softmax(x, 1)\np /= temperature",
        ],
        [
            "y = F.softmax(x / T, dim=-1)",
            "p = F.softmax(x, dim=-1)\ny = p / p.sum(-1, keepdim=True)",
            "p = F.softmax(x, dim=-1)\ny = p / 2",
            "p = F.softmax(x, dim=-1)\ny = p * mask",
            "y = F.log_softmax(x, dim=-1) * weight",
            "y = logits / T",
        ],
    ),
    "SMK106": (
        [
            "s = s.masked_fill(m, float('-inf'))\na = F.softmax(s, dim=-1)",
            "s = s.masked_fill(m, -math.inf)\na = torch.softmax(s / 2, dim=-1)",
            "s.masked_fill_(m, -torch.inf)\na = F.softmax(s, -1)",
            "s = torch.where(m, s, -np.inf)\nuse(F.softmax(s, dim=-1))",
            "s = s.masked_fill(m, float('-inf'))\na = F.log_softmax(s, dim=-1)",
        ],
        [
            "s = s.masked_fill(m, -1e9)\na = F.softmax(s, dim=-1)",
            "s = s.masked_fill(m, torch.finfo(s.dtype).min)\na = F.softmax(s, dim=-1)",
            "s = s.masked_fill(m, float('-inf'))\na = F.softmax(s, dim=-1).nan_to_num(0.0)",
            "s = s.masked_fill(m, float('-inf'))\na = F.softmax(s, dim=-1)\na = torch.nan_to_num(a)",
            "s = s.masked_fill(m, float('-inf'))\ns = s.masked_fill(m.all(-1, keepdim=True), 0.0)\na = F.softmax(s, -1)",
            "s = jnp.where(m, s, -jnp.inf)\na = jax.nn.softmax(s, where=m)",
        ],
    ),
    "SMK201": (
        [
            "y = F.cross_entropy(F.softmax(z, dim=1), t)",
            "p = F.softmax(z, dim=1)\ny = F.cross_entropy(p, t)",
            "y = nn.CrossEntropyLoss()(torch.softmax(z, 1), t)",
            "crit = nn.CrossEntropyLoss()\nnet = nn.Sequential(nn.Linear(2, 3), nn.Softmax(dim=1))\ny = crit(net(x), t)",
        ],
        [
            "y = F.cross_entropy(z, t)",
            "y = F.cross_entropy(z, F.softmax(soft, dim=1))",
            "y = F.cross_entropy(F.log_softmax(z, dim=1), t)",
            "net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())\ny = nn.CrossEntropyLoss()(net(x), t)",
        ],
    ),
    "SMK202": (
        [
            "y = F.nll_loss(F.softmax(z, dim=1), t)",
            "loss = nn.NLLLoss()\np = z.softmax(1)\ny = loss(p, t)",
        ],
        [
            "y = F.nll_loss(F.log_softmax(z, dim=1), t)",
            "y = F.nll_loss(torch.log(q), t)",
        ],
    ),
    "SMK203": (
        [
            "p = F.softmax(z, dim=1)\ny = -torch.log(p[torch.arange(n), t]).mean()",
            "p = F.softmax(z, dim=1)\ny = -(t * torch.log(p)).sum(dim=1).mean()",
            "p = 1 / (1 + np.exp(-z))\ny = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))",
            "p = scipy.special.softmax(z, axis=1)\ny = np.sum(-t * np.log(p))",
            "p = F.softmax(z, dim=1)\ny = -torch.log(p.gather(1, t[:, None])).mean()",
        ],
        [
            "lp = F.log_softmax(z, dim=1)\ny = -(t * lp).sum(dim=1).mean()",
            "p = np.clip(1 / (1 + np.exp(-z)), 1e-7, 1 - 1e-7)\ny = -np.mean(t * np.log(p))",
            "y = -np.log(q).mean()",
            "p = F.softmax(z, dim=1)\ny = -torch.log(p + 1e-8).mean()",
            "p = F.softmax(z, dim=1)\nsurprise = -torch.log(p)",
        ],
    ),
    "SMK204": (
        [
            "y = F.binary_cross_entropy(torch.sigmoid(z), t)",
            "bce = nn.BCELoss()\np = z.sigmoid()\ny = bce(p, t)",
        ],
        [
            "y = F.binary_cross_entropy_with_logits(z, t)",
            "y = F.binary_cross_entropy(p, t)",
            "y = F.binary_cross_entropy(torch.clamp(torch.sigmoid(z), 0.01, 0.99), t)",
        ],
    ),
    "SMK205": (
        [
            "y = F.kl_div(F.softmax(s, -1), F.softmax(t, -1))",
            "kl = nn.KLDivLoss(reduction='batchmean')\np = F.softmax(s, -1)\ny = kl(p, q)",
        ],
        [
            "y = F.kl_div(F.log_softmax(s, -1), F.softmax(t, -1))",
            "y = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True)",
        ],
    ),
    "SMK301": (
        [
            "y = np.log(1 + x)",
            "y = torch.log(x + 1)",
            "y = math.log(1.0 + x)",
            "y = (1 + x).log()",
            "y = jnp.log(1 + counts)",
        ],
        [
            "y = np.log(counts)",
            "y = np.log1p(x)",
            "y = np.log(2 + x)",
            "y = math.log(1 + x, 10)",
            "y = np.log(1 - x)",
        ],
    ),
    "SMK302": (
        [
            "y = np.exp(x) - 1",
            "y = torch.exp(x) - 1.0",
            "y = math.exp(x) - 1",
            "y = x.exp() - 1",
        ],
        [
            "y = np.expm1(x)",
            "y = np.exp(x) - 2",
            "y = np.exp(x) + 1",
            "y = 1 - np.exp(x)",
            "y = np.exp(x - 1)",
        ],
    ),
    "SMK303": (
        [
            "y = torch.log(torch.sigmoid(x))",
            "y = x.sigmoid().log()",
            "y = jnp.log(jax.nn.sigmoid(x))",
            "y = np.log(scipy.special.expit(x))",
            "p = 1 / (1 + np.exp(-x))\ny = np.log(p)",
        ],
        [
            "y = F.logsigmoid(x)",
            "y = torch.log(torch.tanh(x))",
            "y = torch.sigmoid(torch.log(x))",
        ],
    ),
}


def _cases(kind):
    index = 0 if kind == "positive" else 1
    for code, pair in CASES.items():
        for number, snippet in enumerate(pair[index]):
            yield pytest.param(code, snippet, id=f"{code}-{kind}-{number}")


def test_every_rule_has_cases():
    from softmaxkit.tools.lint import RULES

    for rule in RULES:
        positives, negatives = CASES[rule.code]
        assert positives and negatives, rule.code


@pytest.mark.parametrize("code, snippet", list(_cases("positive")))
def test_reports(code, snippet):
    assert code in codes(HEADER + snippet)


@pytest.mark.parametrize("code, snippet", list(_cases("negative")))
def test_look_alike_is_not_reported(code, snippet):
    assert code not in codes(HEADER + snippet)


def test_inside_a_function_and_method():
    source = HEADER + (
        "class Head(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.act = nn.Softmax(dim=1)\n"
        "        self.loss = nn.CrossEntropyLoss()\n"
        "    def forward(self, h, t):\n"
        "        return self.loss(self.act(h), t)\n"
    )
    assert codes(source) == ["SMK201"]


def test_module_whose_forward_returns_softmax():
    source = HEADER + (
        "class Net(nn.Module):\n"
        "    def forward(self, x):\n"
        "        return F.softmax(self.fc(x), dim=-1)\n"
        "def train(x, t):\n"
        "    model = Net().to('cpu')\n"
        "    return F.cross_entropy(model(x), t)\n"
    )
    assert codes(source) == ["SMK201"]


def test_module_that_returns_logits_in_training_is_not_reported():
    source = HEADER + (
        "class Net(nn.Module):\n"
        "    def forward(self, x):\n"
        "        if self.training:\n"
        "            return self.fc(x)\n"
        "        return F.softmax(self.fc(x), dim=-1)\n"
        "y = F.cross_entropy(Net()(x), t)\n"
    )
    assert codes(source) == []


def test_module_level_name_used_in_function_defined_earlier():
    source = HEADER + (
        "def loss(t):\n"
        "    return F.cross_entropy(PROBS, t)\n"
        "PROBS = F.softmax(torch.zeros(2, 3), dim=1)\n"
    )
    assert codes(source) == ["SMK201"]


def test_reassignment_clears_what_a_name_held():
    source = HEADER + "p = F.softmax(z, dim=1)\np = z\ny = F.cross_entropy(p, t)\n"
    assert codes(source) == []


def test_manual_cross_entropy_is_reported_once():
    source = HEADER + "p = F.softmax(z, dim=1)\ny = -torch.log(p[range(n), t]).mean()\n"
    assert codes(source) == ["SMK203"]


def test_unresolved_names_are_not_guessed():
    # Without imports nothing is known to be numpy or torch.
    assert codes("y = log(softmax(x))\nz = exp(x) - 1\n") == []
