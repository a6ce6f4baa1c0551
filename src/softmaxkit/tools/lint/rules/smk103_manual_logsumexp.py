"""SMK103 manual-logsumexp: `log(sum(exp(x)))` written out."""

from __future__ import annotations

import ast

from softmaxkit.tools.lint.rule import Context, Rule
from softmaxkit.tools.lint.rules.patterns import log_op, renamed_callee
from softmaxkit.tools.lint.semantic.tags import SUM_EXP

_LOGSUMEXP = {
    "numpy": ("scipy.special.logsumexp",),
    "jax.numpy": ("jax.nn.logsumexp", "jax.scipy.special.logsumexp"),
    "torch": ("torch.logsumexp",),
}
# Arguments of sum that logsumexp takes under the same name and position.
_SUM_KEYWORDS = {
    "numpy": ("axis", "keepdims"),
    "jax.numpy": ("axis", "keepdims"),
    "torch": ("dim", "keepdim"),
}


class ManualLogSumExp(Rule):
    """
    ## What it does
    Checks for `log(sum(exp(x)))` written out, in NumPy, PyTorch and JAX
    spellings, as functions or methods (`x.exp().sum(-1).log()`), also when
    the sum is kept in a variable, weighted (`sum(w * exp(x))`), added to
    another such sum or to a constant, or handed to a one-line helper such
    as `def log(x): return torch.log(x + 1e-8)`. The stable spelling
    `m + log(sum(exp(x - m)))` with `m = max(x)` is not reported.

    This rule is a warning: the value is right as long as no element
    overflows `exp` and some element does not underflow it.

    ## Why is this bad?
    `exp(x)` overflows to `inf` once an element exceeds about 88.7 in float32
    (709.8 in float64), so the result is `inf`; when all elements are very
    negative, the sum underflows to 0 and the result is `-inf`. The true
    value lies between `max(x)` and `max(x) + log(n)` in both cases.

    ## Example
    ```python
    import torch

    scores = torch.randn(8, 10)
    lse = torch.log(torch.sum(torch.exp(scores), dim=-1))
    ```

    ## Use instead
    ```python
    import torch

    scores = torch.randn(8, 10)
    lse = torch.logsumexp(scores, dim=-1)
    ```
    (`scipy.special.logsumexp` for NumPy, `jax.nn.logsumexp` for JAX).

    ## Fix safety
    The fix is safe. It applies when the three calls are nested directly, the
    sum names its axis (`torch.logsumexp` requires one) and passes nothing
    else but `keepdims`, and the logsumexp function can be named with the
    file's imports (`scipy.special` for NumPy code, `jax.nn` or
    `jax.scipy.special` for JAX code).

    ## References
    - Blanchard, Higham and Higham, "Accurately computing the log-sum-exp and
      softmax functions", IMA J. Numer. Anal. 41 (2021).
    """

    code = "SMK103"
    name = "manual-logsumexp"
    message = "`log(sum(exp(x)))` overflows to `inf` for large `x`; use `logsumexp(x)`"
    severity = "warning"
    fix_safety = "safe"
    node_types = (ast.Call,)

    def check(self, node: ast.Call, ctx: Context) -> None:
        op = log_op(node, ctx)
        if op is None or ctx.tag(op.input) != SUM_EXP:
            return
        ctx.report(self, node, self._fix(node, op, ctx))

    def _fix(self, node: ast.Call, op, ctx: Context):
        if op.library == "math" or op.wrapper or type(op.input) is not ast.Call:
            return None
        sum_op = ctx.op(op.input)
        if sum_op is None or sum_op.name != "sum" or type(sum_op.input) is not ast.Call:
            return None
        exp_op = ctx.op(sum_op.input)
        if exp_op is None or exp_op.name != "exp" or exp_op.input is None:
            return None
        library = exp_op.library
        if library not in _LOGSUMEXP:
            return None
        axis_name, keep_name = _SUM_KEYWORDS[library]
        sum_call = sum_op.call
        if len(sum_op.rest) > 2 or any(type(a) is ast.Starred for a in sum_op.rest):
            return None
        if any(k.arg not in (axis_name, keep_name) for k in sum_call.keywords):
            return None
        if not sum_op.rest and all(k.arg != axis_name for k in sum_call.keywords):
            return None
        arguments = [ctx.text(a) for a in sum_op.rest] + [ctx.text(k) for k in sum_call.keywords]
        if exp_op.method:
            content = f"{ctx.atom(exp_op.input)}.logsumexp({', '.join(arguments)})"
        else:
            callee = None
            for qualname in _LOGSUMEXP[library]:
                callee = renamed_callee(exp_op, ctx, qualname) if library == "torch" else ctx.imports.spell(qualname)
                if callee is not None:
                    break
            if callee is None:
                return None
            content = f"{callee}({', '.join([ctx.text(exp_op.input), *arguments])})"
        return ctx.fix("safe", "Use `logsumexp`", node, content)
