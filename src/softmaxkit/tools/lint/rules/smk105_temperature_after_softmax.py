"""SMK105 temperature-after-softmax: a temperature applied to probabilities instead of logits."""

from __future__ import annotations

import ast
import re

from softmaxkit.tools.lint.rule import Context, Rule
from softmaxkit.tools.lint.semantic.ops import is_one
from softmaxkit.tools.lint.semantic.tags import LOGPROB, PROB

_TEMPERATURE = re.compile(r"(tau|temp|temperature)(_?\d+)?|\w*_(tau|temp|temperature)|temperature_\w*", re.IGNORECASE)


def _is_temperature(expr: ast.expr) -> bool:
    """Whether ``expr`` is named like a temperature (``T``, ``tau``, ``self.temperature``)."""
    kind = type(expr)
    if kind is ast.Name:
        name = expr.id
    elif kind is ast.Attribute:
        name = expr.attr
    else:
        return False
    return name == "T" or _TEMPERATURE.fullmatch(name) is not None


def _is_inverse_temperature(expr: ast.expr) -> bool:
    return (
        type(expr) is ast.BinOp
        and type(expr.op) is ast.Div
        and is_one(expr.left)
        and _is_temperature(expr.right)
    )


def _renormalised(node: ast.AST, ctx: Context) -> bool:
    """Whether ``node`` is normalised again as logits: ``Categorical(logits=...)``, ``softmax(...)``.

    ``log_softmax(x) / T`` differs from ``x / T`` by a constant per row, so
    normalised again it gives exactly ``softmax(x / T)``.
    """
    parent = ctx.parent(node)
    if type(parent) is ast.keyword:
        return parent.arg == "logits"
    if type(parent) is ast.Call:
        op = ctx.op(parent)
        return op is not None and op.name in ("softmax", "log_softmax") and op.input is node
    return False


class TemperatureAfterSoftmax(Rule):
    """
    ## What it does
    Checks for a temperature applied to probabilities or log-probabilities
    instead of logits: `softmax(x) / T`, `log_softmax(x) * (1 / T)`,
    `probs ** (1 / T)`, `probs /= self.temperature`. A temperature is a name
    such as `T`, `tau`, `temp`, `temperature` or one ending in `_temperature`.
    Log-probabilities divided by a temperature and normalised again
    (`Categorical(logits=log_softmax(x) / T)`, `softmax(log_softmax(x) / T)`)
    are not reported: that is `softmax(x / T)` exactly.

    This rule is an error: the result is not the tempered distribution
    for any input with `T != 1`.

    ## Why is this bad?
    Temperature scaling means `softmax(x / T)`. Dividing probabilities by `T`
    only rescales them, so they no longer sum to 1, and dividing
    log-probabilities by `T` gives values that are not log-probabilities of
    any distribution. Powers of probabilities also lose the mass of entries
    that already underflowed.

    ## Example
    ```python
    import torch
    import torch.nn.functional as F

    logits = torch.randn(8, 10)
    temperature = 2.0
    probs = F.softmax(logits, dim=-1) / temperature
    ```

    ## Use instead
    ```python
    import torch
    import torch.nn.functional as F

    logits = torch.randn(8, 10)
    temperature = 2.0
    probs = F.softmax(logits / temperature, dim=-1)
    ```

    ## Fix safety
    No fix is offered: moving the temperature changes the result on purpose.

    ## References
    - Hinton, Vinyals and Dean, "Distilling the knowledge in a neural
      network" (2015), section 2.
    - Guo et al., "On calibration of modern neural networks", ICML 2017.
    """

    code = "SMK105"
    name = "temperature-after-softmax"
    message = "temperature applied to probabilities; divide the logits instead: `softmax(x / T)`"
    severity = "error"
    node_types = (ast.BinOp, ast.AugAssign)

    def check(self, node: ast.BinOp | ast.AugAssign, ctx: Context) -> None:
        if type(node) is ast.AugAssign:
            left, right = node.target, node.value
        else:
            left, right = node.left, node.right
        kind = type(node.op)
        probabilities = (PROB, LOGPROB)
        if kind is ast.Div:
            found = ctx.tag(left) in probabilities and _is_temperature(right)
        elif kind is ast.Mult:
            found = any(
                ctx.tag(a) in probabilities and (_is_temperature(b) or _is_inverse_temperature(b))
                for a, b in ((left, right), (right, left))
            )
        elif kind is ast.Pow:
            found = ctx.tag(left) in probabilities and (_is_temperature(right) or _is_inverse_temperature(right))
        else:
            found = False
        if found and not (ctx.tag(left) == LOGPROB and _renormalised(node, ctx)):
            ctx.report(self, node)
