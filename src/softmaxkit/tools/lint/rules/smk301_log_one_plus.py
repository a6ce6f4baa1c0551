"""SMK301 log-one-plus: `log(1 + x)` where `log1p(x)` is accurate."""

from __future__ import annotations

import ast

from softmaxkit.tools.lint.rule import Context, Rule
from softmaxkit.tools.lint.rules.patterns import is_integer, is_not_small, is_rounded, log_op, renamed_beside
from softmaxkit.tools.lint.semantic.ops import is_one


class LogOnePlus(Rule):
    """
    ## What it does
    Checks for `log(1 + x)` and `log(x + 1)` with NumPy, PyTorch, JAX or
    `math`, in function or method spelling. `np.log(x)` alone is not
    reported, and neither is `x` that holds integers (a literal, `len(...)`,
    `.shape[i]`, `.size(i)`, a `range` index, `int(...)`), for which `1 + x`
    is exact, a number literal of magnitude at least 0.01, nor a result
    rounded at once (`int(...)`, `round`,
    `math.floor`/`ceil`, `.astype(int)`, `.long()`), whose rounding hides
    the lost digits.

    This rule is a warning: only small `|x|` loses accuracy.

    ## Why is this bad?
    When `|x|` is below the machine epsilon (1.2e-7 in float32), `1 + x`
    rounds to 1 and the log returns 0 instead of about `x`; for larger small
    `x`, the rounding of `1 + x` leaves only a few correct digits. `log1p`
    computes the result to full precision for every `x`.

    ## Example
    ```python
    import numpy as np

    x = np.array([1e-10, 1e-3])
    y = np.log(1 + x)
    ```

    ## Use instead
    ```python
    import numpy as np

    x = np.array([1e-10, 1e-3])
    y = np.log1p(x)
    ```

    ## Fix safety
    The fix is safe: `log1p(x)` equals `log(1 + x)` mathematically and is more
    accurate. It applies when `log1p` can be named with the file's imports.

    ## References
    - Goldberg, "What every computer scientist should know about
      floating-point arithmetic", ACM Computing Surveys 23 (1991), theorem 4.
    """

    code = "SMK301"
    name = "log-one-plus"
    message = "`log(1 + x)` loses precision for small `x`; use `log1p(x)`"
    severity = "warning"
    fix_safety = "safe"
    node_types = (ast.Call,)

    def check(self, node: ast.Call, ctx: Context) -> None:
        op = log_op(node, ctx)
        if op is None:
            return
        argument = op.input
        if type(argument) is not ast.BinOp or type(argument.op) is not ast.Add:
            return
        if is_one(argument.left):
            x = argument.right
        elif is_one(argument.right):
            x = argument.left
        else:
            return
        if is_integer(x, ctx) or is_not_small(x) or is_rounded(node, ctx):
            return
        fix = None
        callee = renamed_beside(op, ctx, "log1p")
        if callee is not None:
            if op.method:
                content = ctx.splice(node, [(node.func, f"{ctx.atom(x)}.log1p")])
            else:
                content = ctx.splice(node, [(node.func, callee), (argument, ctx.text(x))])
            fix = ctx.fix("safe", "Use `log1p`", node, content)
        ctx.report(self, node, fix)
