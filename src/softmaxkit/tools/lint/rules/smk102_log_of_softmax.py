"""SMK102 log-of-softmax: the logarithm of softmax output."""

from __future__ import annotations

import ast

from softmaxkit.tools.lint.rule import Context, Rule
from softmaxkit.tools.lint.rules.patterns import log_op, softmax_to_log_softmax, within_manual_cross_entropy
from softmaxkit.tools.lint.semantic.tags import PROB


class LogOfSoftmax(Rule):
    """
    ## What it does
    Checks for the logarithm of softmax output: `torch.log(F.softmax(x, dim=1))`,
    `np.log(scipy.special.softmax(x))`, `x.softmax(-1).log()`, and the log of
    the output of an `nn.Softmax` module, directly or through variables.

    This rule is a warning: the value is finite, if inaccurate, as long
    as no probability underflows to 0.

    ## Why is this bad?
    Softmax rounds small probabilities to 0 (below about 1e-45 in float32),
    and the log of 0 is `-inf`; a later `-inf * 0` or gradient gives NaN.
    Even when nothing underflows, the rounding error of the probability is
    magnified in the log of a probability near 1. `log_softmax` computes
    `x - logsumexp(x)` directly, which is finite and accurate.

    ## Example
    ```python
    import torch
    import torch.nn.functional as F

    logits = torch.randn(8, 10)
    log_probs = torch.log(F.softmax(logits, dim=-1))
    ```

    ## Use instead
    ```python
    import torch
    import torch.nn.functional as F

    logits = torch.randn(8, 10)
    log_probs = F.log_softmax(logits, dim=-1)
    ```

    ## Fix safety
    The fix is safe. It applies when the softmax call is the log's direct
    argument and `log_softmax` can be named with the file's imports; it
    computes the same value, and is finite where the original was `-inf`.

    ## References
    - PyTorch documentation of `torch.nn.functional.log_softmax`.
    - Blanchard, Higham and Higham, IMA J. Numer. Anal. 41 (2021).
    """

    code = "SMK102"
    name = "log-of-softmax"
    message = "`log(softmax(x))` loses precision and gives `-inf` on underflow; use `log_softmax(x)`"
    severity = "warning"
    fix_safety = "safe"
    node_types = (ast.Call,)

    def check(self, node: ast.Call, ctx: Context) -> None:
        op = log_op(node, ctx)
        if op is None or ctx.tag(op.input) != PROB or within_manual_cross_entropy(node, ctx):
            return
        fix = None
        inner = op.input
        inner_op = ctx.op(inner) if type(inner) is ast.Call else None
        if inner_op is not None and inner_op.name == "softmax" and op.library != "math" and not op.wrapper:
            content = softmax_to_log_softmax(inner_op, ctx)
            if content is not None:
                fix = ctx.fix("safe", "Use `log_softmax`", node, content)
        ctx.report(self, node, fix)
