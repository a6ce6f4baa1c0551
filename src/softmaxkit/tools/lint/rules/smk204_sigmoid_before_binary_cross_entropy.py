"""SMK204 sigmoid-before-binary-cross-entropy: `binary_cross_entropy` on sigmoid output."""

from __future__ import annotations

import ast

from softmaxkit.tools.lint.rule import Context, Rule
from softmaxkit.tools.lint.rules.patterns import renamed_callee, sole_argument
from softmaxkit.tools.lint.semantic.tags import SIGMOID


class SigmoidBeforeBinaryCrossEntropy(Rule):
    """
    ## What it does
    Checks for sigmoid output given as the input of
    `F.binary_cross_entropy` or of an `nn.BCELoss` instance, directly or
    through variables, modules (an `nn.Sequential` ending in `nn.Sigmoid`, a
    `forward` or a method that returns sigmoid output, also inside a tuple)
    and function parameters of the same file. Sigmoid of arrays built from
    small literals (`torch.tensor([1.1]) * 2.2`), which cannot saturate, is
    not reported.

    This rule is a warning: the loss is right, if less accurate, while
    every logit stays within about ±17 (float32).

    ## Why is this bad?
    In float32, `sigmoid(x)` rounds to exactly 1 once `x` exceeds about 17,
    and `log(1 - 1)` is `-inf`; PyTorch clamps the log at -100, so the loss
    and its gradient stop depending on the logit. The `with_logits` version
    computes `max(x, 0) - x * y + log1p(exp(-|x|))`, which is exact for any
    logit.

    ## Example
    ```python
    import torch
    import torch.nn.functional as F

    logits = torch.randn(8)
    target = torch.rand(8)


    def bce(p, y):
        return F.binary_cross_entropy(p, y)


    loss = bce(torch.sigmoid(logits), target)
    ```

    ## Use instead
    ```python
    import torch
    import torch.nn.functional as F

    logits = torch.randn(8)
    target = torch.rand(8)


    def bce(z, y):
        return F.binary_cross_entropy_with_logits(z, y)


    loss = bce(logits, target)
    ```
    (`nn.BCEWithLogitsLoss` for the module form).

    ## Fix safety
    The fix is safe. It applies to the functional form when the sigmoid is
    the loss's direct argument; `weight` and `reduction` keep their meaning.

    ## References
    - PyTorch documentation of `torch.nn.BCEWithLogitsLoss`: "This version is
      more numerically stable than using a plain Sigmoid followed by a
      BCELoss".
    """

    code = "SMK204"
    name = "sigmoid-before-binary-cross-entropy"
    message = "`binary_cross_entropy` on `sigmoid` output saturates for large logits; use `binary_cross_entropy_with_logits` on the logits"
    severity = "warning"
    fix_safety = "safe"
    node_types = (ast.Call,)

    def check(self, node: ast.Call, ctx: Context) -> None:
        loss = ctx.loss_call(node)
        if loss is None or loss[0] != "binary_cross_entropy" or loss[1] is None or ctx.tag(loss[1]) != SIGMOID:
            return
        ctx.report(self, loss[1], self._fix(node, loss[1], ctx))

    def _fix(self, node: ast.Call, argument: ast.expr, ctx: Context):
        op = ctx.op(node)
        if op is None or type(argument) is not ast.Call:
            return None
        sigmoid = ctx.op(argument)
        if sigmoid is None or sigmoid.name != "sigmoid":
            return None
        logits = sole_argument(sigmoid)
        callee = renamed_callee(op, ctx, "torch.nn.functional.binary_cross_entropy_with_logits")
        if logits is None or callee is None:
            return None
        content = ctx.splice(node, [(node.func, callee), (argument, ctx.text(logits))])
        return ctx.fix("safe", "Use `binary_cross_entropy_with_logits`", node, content)
