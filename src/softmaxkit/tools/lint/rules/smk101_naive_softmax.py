"""SMK101 naive-softmax: softmax as `exp(x) / sum(exp(x))` without subtracting the maximum."""

from __future__ import annotations

import ast

from softmaxkit.tools.lint.rule import Context, Rule
from softmaxkit.tools.lint.semantic.tags import EXP, SUM_EXP


class NaiveSoftmax(Rule):
    """
    ## What it does
    Checks for softmax written as `exp(x) / sum(exp(x))` without subtracting
    the maximum first, in NumPy, PyTorch and JAX spellings, as functions
    (`np.exp(x) / np.sum(np.exp(x))`) and as methods
    (`x.exp() / x.exp().sum(-1, keepdim=True)`), also through a variable
    (`e = np.exp(x); e / e.sum()`), as a product with the reciprocal
    (`e * e.sum() ** -1`), and as unshifted exponentials handed to
    `torch.multinomial`, which divides by their sum itself.

    This rule is a warning: the result is right as long as every logit
    stays below about 88 (float32) and some logit of each row above about -87;
    it fails only on inputs outside that range.

    ## Why is this bad?
    `exp` overflows to `inf` once a logit exceeds about 88.7 in float32
    (709.8 in float64), and `inf / inf` is NaN. When every logit is very
    negative, every `exp` underflows to 0 and the row becomes `0 / 0`, also
    NaN. Softmax is invariant to shifting a row, so subtracting the row
    maximum first keeps every exponent at most 0 and the denominator at
    least 1.

    ## Example
    ```python
    import numpy as np

    def softmax(x):
        e = np.exp(x)
        return e / e.sum(axis=-1, keepdims=True)
    ```

    ## Use instead
    ```python
    import numpy as np

    def softmax(x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    ```
    or a library softmax: `softmaxkit.softmax`, `scipy.special.softmax`,
    `torch.softmax`, `jax.nn.softmax`.

    ## Fix safety
    No fix is offered: the axis to shift along depends on the code around it.

    ## References
    - Blanchard, Higham and Higham, "Accurately computing the log-sum-exp and
      softmax functions", IMA J. Numer. Anal. 41 (2021).
    """

    code = "SMK101"
    name = "naive-softmax"
    message = "`exp(x) / sum(exp(x))` overflows to NaN for large logits; subtract the row max first or call a softmax function"
    severity = "warning"
    node_types = (ast.BinOp, ast.Call)

    def check(self, node: ast.BinOp | ast.Call, ctx: Context) -> None:
        if type(node) is ast.Call:
            # ``torch.multinomial(exp(x / T), 1)`` normalises the exponentials itself.
            func = node.func
            if (func.attr if type(func) is ast.Attribute else getattr(func, "id", None)) != "multinomial":
                return
            op = ctx.op(node)
            if op is not None and op.name == "multinomial" and ctx.tag(op.input) == EXP:
                ctx.report(self, op.input)
            return
        kind = type(node.op)
        if kind is ast.Div:
            found = ctx.tag(node.left) == EXP and ctx.tag(node.right) == SUM_EXP
        elif kind is ast.Mult:
            found = any(
                ctx.tag(a) == EXP and ctx.reciprocal_tag(b) == SUM_EXP
                for a, b in ((node.left, node.right), (node.right, node.left))
            )
        else:
            found = False
        if found:
            ctx.report(self, node)
