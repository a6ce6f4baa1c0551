"""SMK303 log-of-sigmoid: the logarithm of sigmoid output."""

from __future__ import annotations

import ast

from softmaxkit.tools.lint.rule import Context, Rule
from softmaxkit.tools.lint.rules.patterns import log_op, renamed_callee, sole_argument, within_manual_cross_entropy
from softmaxkit.tools.lint.semantic.tags import SIGMOID

_LOG_SIGMOID = {
    "torch.sigmoid": "torch.nn.functional.logsigmoid",
    "torch.nn.functional.sigmoid": "torch.nn.functional.logsigmoid",
    "torch.special.expit": "torch.nn.functional.logsigmoid",
    "scipy.special.expit": "scipy.special.log_expit",
    "jax.nn.sigmoid": "jax.nn.log_sigmoid",
    "jax.scipy.special.expit": "jax.nn.log_sigmoid",
}


class LogOfSigmoid(Rule):
    """
    ## What it does
    Checks for the logarithm of sigmoid output: `torch.log(torch.sigmoid(x))`,
    `x.sigmoid().log()`, `jnp.log(jax.nn.sigmoid(x))`,
    `np.log(scipy.special.expit(x))`, and the log of `1 / (1 + exp(-x))`,
    directly or through variables.

    This rule is a warning: the value is finite, if inaccurate, until
    the sigmoid underflows to 0.

    ## Why is this bad?
    For very negative `x`, `sigmoid(x)` underflows to 0 (below about -88 in
    float32, -104 with subnormals) and its log is `-inf`, while the true
    value is about `x`. `logsigmoid(x) = -log1p(exp(-x))` for `x > 0` and
    `x - log1p(exp(x))` otherwise, finite and accurate everywhere.

    ## Example
    ```python
    import torch
    import torch.nn.functional as F

    logits = torch.randn(8)
    log_p = torch.log(torch.sigmoid(logits))
    ```

    ## Use instead
    ```python
    import torch
    import torch.nn.functional as F

    logits = torch.randn(8)
    log_p = F.logsigmoid(logits)
    ```
    (`jax.nn.log_sigmoid`, `scipy.special.log_expit`).

    ## Fix safety
    The fix is safe. It applies when the sigmoid call is the log's direct
    argument and the log-sigmoid function can be named with the file's
    imports (`import torch` is enough for `torch.nn.functional.logsigmoid`).

    ## References
    - PyTorch documentation of `torch.nn.functional.logsigmoid`.
    """

    code = "SMK303"
    name = "log-of-sigmoid"
    message = "`log(sigmoid(x))` gives `-inf` for very negative `x`; use `logsigmoid(x)`"
    severity = "warning"
    fix_safety = "safe"
    node_types = (ast.Call,)

    def check(self, node: ast.Call, ctx: Context) -> None:
        op = log_op(node, ctx)
        if op is None or ctx.tag(op.input) != SIGMOID or within_manual_cross_entropy(node, ctx):
            return
        fix = None
        inner = ctx.op(op.input) if type(op.input) is ast.Call else None
        if inner is not None and inner.name == "sigmoid" and op.library != "math" and not op.wrapper:
            logits = sole_argument(inner)
            target = "torch.nn.functional.logsigmoid" if inner.method else _LOG_SIGMOID.get(inner.qualname)
            callee = None
            if target is not None:
                callee = ctx.imports.spell(target) if inner.method else renamed_callee(inner, ctx, target)
            if logits is not None and callee is not None:
                fix = ctx.fix("safe", "Use `logsigmoid`", node, f"{callee}({ctx.text(logits)})")
        ctx.report(self, node, fix)
