"""SMK3xx: element-wise log and exp that lose accuracy."""

from __future__ import annotations

import ast

from softmaxkit.tools.lint.rule import Context, Rule
from softmaxkit.tools.lint.semantic.ops import is_one
from softmaxkit.tools.lint.semantic.tags import SIGMOID
from softmaxkit.tools.lint._rules._common import (
    log_op,
    renamed_callee,
    sole_argument,
    within_manual_cross_entropy,
)


def _renamed(op, ctx: Context, name: str) -> str | None:
    """Callee text for the function ``name`` beside ``op``'s (``np.log`` to ``np.log1p``)."""
    if op.method:
        return f"{ctx.text(op.call.func.value)}.{name}"
    return renamed_callee(op, ctx, op.qualname.rpartition(".")[0] + "." + name)


class LogOnePlus(Rule):
    """
    ## What it does
    Checks for `log(1 + x)` and `log(x + 1)` with NumPy, PyTorch, JAX or
    `math`, in function or method spelling. It is reported for any `x`: the
    rewrite is always valid. `np.log(x)` alone is not reported.

    ## Why is this bad?
    When `|x|` is below the machine epsilon (1.2e-7 in float32), `1 + x`
    rounds to 1 and the log returns 0 instead of about `x`; for larger small
    `x`, the rounding of `1 + x` leaves only a few correct digits. `log1p`
    computes the result to full precision for every `x`.

    ## Example
    ```python
    y = np.log(1 + x)
    ```

    ## Use instead
    ```python
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
        fix = None
        callee = _renamed(op, ctx, "log1p")
        if callee is not None:
            if op.method:
                content = ctx.splice(node, [(node.func, f"{ctx.atom(x)}.log1p")])
            else:
                content = ctx.splice(node, [(node.func, callee), (argument, ctx.text(x))])
            fix = ctx.fix("safe", "Use `log1p`", node, content)
        ctx.report(self, node, fix)


class ExpMinusOne(Rule):
    """
    ## What it does
    Checks for `exp(x) - 1` with NumPy, PyTorch, JAX or `math`, in function
    or method spelling.

    ## Why is this bad?
    For small `|x|`, `exp(x)` is close to 1 and the subtraction cancels the
    leading digits: below the machine epsilon the result is 0 instead of
    about `x`. `expm1` computes the result to full precision for every `x`.

    ## Example
    ```python
    y = torch.exp(x) - 1
    ```

    ## Use instead
    ```python
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
    fix_safety = "safe"
    node_types = (ast.BinOp,)

    def check(self, node: ast.BinOp, ctx: Context) -> None:
        if type(node.op) is not ast.Sub or not is_one(node.right) or type(node.left) is not ast.Call:
            return
        op = ctx.op(node.left)
        if op is None or op.name != "exp" or op.input is None:
            return
        fix = None
        callee = _renamed(op, ctx, "expm1")
        if callee is not None:
            content = ctx.splice(node.left, [(node.left.func, callee)])
            fix = ctx.fix("safe", "Use `expm1`", node, content)
        ctx.report(self, node, fix)


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

    ## Why is this bad?
    For very negative `x`, `sigmoid(x)` underflows to 0 (below about -88 in
    float32, -104 with subnormals) and its log is `-inf`, while the true
    value is about `x`. `logsigmoid(x) = -log1p(exp(-x))` for `x > 0` and
    `x - log1p(exp(x))` otherwise, finite and accurate everywhere.

    ## Example
    ```python
    log_p = torch.log(torch.sigmoid(logits))
    ```

    ## Use instead
    ```python
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
    fix_safety = "safe"
    node_types = (ast.Call,)

    def check(self, node: ast.Call, ctx: Context) -> None:
        op = log_op(node, ctx)
        if op is None or ctx.tag(op.input) != SIGMOID or within_manual_cross_entropy(node, ctx):
            return
        fix = None
        inner = ctx.op(op.input) if type(op.input) is ast.Call else None
        if inner is not None and inner.name == "sigmoid" and op.library != "math":
            logits = sole_argument(inner)
            target = "torch.nn.functional.logsigmoid" if inner.method else _LOG_SIGMOID[inner.qualname]
            callee = ctx.imports.spell(target) if inner.method else renamed_callee(inner, ctx, target)
            if logits is not None and callee is not None:
                fix = ctx.fix("safe", "Use `logsigmoid`", node, f"{callee}({ctx.text(logits)})")
        ctx.report(self, node, fix)
