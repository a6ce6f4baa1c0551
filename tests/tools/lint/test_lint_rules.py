"""How findings follow values across statements, functions and classes.

Each rule's own cases, reported and look-alike, are its fixture in
``fixtures/`` (see ``test_lint_fixtures.py``).
"""

from tests.tools.lint._lint_helpers import codes

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


def test_sentinel_mask_sum_reads_names_as_they_were_before_the_statement():
    # The sum reads the old ``mask`` (a cast), not the sentinel mask the statement assigns.
    source = HEADER + (
        "def f(a, c, dtype):\n"
        "    mask = a.float()\n"
        "    mask = torch.where(c, mask + (1.0 - a) * torch.finfo(dtype).min, torch.finfo(dtype).min)\n"
        "    return mask + (1.0 - c) * torch.finfo(dtype).min\n"
    )
    assert codes(source, select=["SMK107"]) == ["SMK107"]


def test_sentinel_mask_reassigned_a_name_no_longer_holds_it():
    source = HEADER + (
        "def f(a, b, dtype):\n"
        "    mask = (1.0 - a) * torch.finfo(dtype).min\n"
        "    mask = b\n"
        "    return mask + (1.0 - a) * torch.finfo(dtype).min\n"
    )
    assert codes(source, select=["SMK107"]) == []


def test_sentinel_masks_of_another_function_are_not_seen():
    source = HEADER + (
        "def build(a, dtype):\n"
        "    mask = (1.0 - a) * torch.finfo(dtype).min\n"
        "    return mask\n"
        "def combine(mask, b, dtype):\n"
        "    return mask + (1.0 - b) * torch.finfo(dtype).min\n"
    )
    assert codes(source, select=["SMK107"]) == []


def test_sentinel_mask_sum_in_a_branch_is_reported():
    source = HEADER + (
        "def f(a, b, causal, dtype):\n"
        "    mask = (1.0 - a) * torch.finfo(dtype).min\n"
        "    if causal:\n"
        "        mask = mask + torch.triu(torch.full((4, 4), torch.finfo(dtype).min), 1)\n"
        "    return mask\n"
    )
    assert codes(source, select=["SMK107"]) == ["SMK107"]


def test_multihead_attention_at_module_level_called_in_a_function():
    source = HEADER + (
        "def encode(x, padding):\n"
        "    return ATTN(x, x, x, key_padding_mask=padding)[0]\n"
        "ATTN = nn.MultiheadAttention(64, 4)\n"
    )
    assert codes(source, select=["SMK108"]) == ["SMK108"]


def test_multihead_attention_unpacked_keywords_are_not_guessed():
    source = HEADER + (
        "def encode(x, padding, options):\n"
        "    attn = nn.MultiheadAttention(64, 4)\n"
        "    return attn(x, x, x, key_padding_mask=padding, **options)[0]\n"
    )
    assert codes(source, select=["SMK108"]) == []
