"""Import and alias resolution."""

import ast

import pytest

from softmaxkit.tools.lint.semantic.names import Imports


def _resolve(source, expression):
    tree = ast.parse(source)
    return Imports(tree).qualname(ast.parse(expression, mode="eval").body)


@pytest.mark.parametrize(
    "source, expression, expected",
    [
        ("import torch.nn.functional as F", "F.softmax", "torch.nn.functional.softmax"),
        ("from torch.nn.functional import softmax as sm", "sm", "torch.nn.functional.softmax"),
        ("from torch.nn import functional", "functional.log_softmax", "torch.nn.functional.log_softmax"),
        ("import numpy as anything", "anything.exp", "numpy.exp"),
        ("import jax.numpy as jnp", "jnp.log", "jax.numpy.log"),
        ("from jax import numpy as jnp, nn", "nn.softmax", "jax.nn.softmax"),
        ("import jax", "jax.numpy.exp", "jax.numpy.exp"),
        ("import scipy.special", "scipy.special.logsumexp", "scipy.special.logsumexp"),
        ("from scipy import special as sp", "sp.softmax", "scipy.special.softmax"),
        ("import torch", "torch.special.expit", "torch.special.expit"),
        ("def f():\n    import torch as T", "T.exp", "torch.exp"),
        ("", "sum", "builtins.sum"),
        ("sum = 3", "sum", None),
        ("from .local import softmax", "softmax", None),
        ("import torch", "x.softmax", None),
    ],
)
def test_qualname(source, expression, expected):
    assert _resolve(source, expression) == expected


def test_spell_prefers_the_shortest_module_level_name():
    imports = Imports(ast.parse("import torch\nimport torch.nn.functional as F\ndef f():\n    import scipy\n"))
    assert imports.spell("torch.nn.functional.logsigmoid") == "F.logsigmoid"
    assert imports.spell("torch.logsumexp") == "torch.logsumexp"
    assert imports.spell("scipy.special.logsumexp") is None
