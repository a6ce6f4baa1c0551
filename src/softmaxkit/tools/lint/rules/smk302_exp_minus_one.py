"""SMK302 exp-minus-one: `exp(x) - 1` where `expm1(x)` is accurate."""

from __future__ import annotations

import ast

from softmaxkit.tools.lint.rule import Context, Rule
from softmaxkit.tools.lint.rules.patterns import is_integer, is_not_small, is_rounded, renamed_beside
from softmaxkit.tools.lint.semantic.ops import is_one


class ExpMinusOne(Rule):
    """
    ## What it does
    Checks for `exp(x) - 1` with NumPy, PyTorch, JAX or `math`, in function
    or method spelling. Integer `x` (a literal, `len(...)`, `.shape[i]`,
    `.size(i)`, a `range` index, `int(...)`), for which `exp(x)` is 1 or far
    from it, number literals of magnitude at least 0.01, and results rounded
    at once (`int(...)`, `round`,
    `math.floor`/`ceil`, `.astype(int)`, `.long()`) are not reported.

    This rule is a warning: only small `|x|` loses accuracy.

    ## Why is this bad?
    For small `|x|`, `exp(x)` is close to 1 and the subtraction cancels the
    leading digits: below the machine epsilon the result is 0 instead of
    about `x`. `expm1` computes the result to full precision for every `x`.

    ## Example
    ```python
    import torch

    x = torch.tensor([1e-10, 1e-3])
    y = torch.exp(x) - 1
    ```

    ## Use instead
    ```python
    import torch

    x = torch.tensor([1e-10, 1e-3])
    y = torch.expm1(x)
    ```

    ## Fix safety
    The fix is safe: `expm1(x)` equals `exp(x) - 1` mathematically and is
    more accurate. It applies when `expm1` can be named with the file's
    imports.

    ## References
    - Goldberg, "What every computer scientist should know about
      floating-point arithmetic", ACM Computing Surveys 23 (1991).
    """

    code = "SMK302"
    name = "exp-minus-one"
    message = "`exp(x) - 1` loses precision for small `x`; use `expm1(x)`"
    severity = "warning"
    fix_safety = "safe"
    node_types = (ast.BinOp,)

    def check(self, node: ast.BinOp, ctx: Context) -> None:
        if type(node.op) is not ast.Sub or not is_one(node.right) or type(node.left) is not ast.Call:
            return
        op = ctx.op(node.left)
        if op is None or op.name != "exp" or op.input is None:
            return
        if is_integer(op.input, ctx) or is_not_small(op.input) or is_rounded(node, ctx):
            return
        fix = None
        callee = renamed_beside(op, ctx, "expm1")
        if callee is not None:
            content = ctx.splice(node.left, [(node.left.func, callee)])
            fix = ctx.fix("safe", "Use `expm1`", node, content)
        ctx.report(self, node, fix)
