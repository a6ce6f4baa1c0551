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
