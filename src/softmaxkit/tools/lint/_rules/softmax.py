"""SMK1xx: computing softmax, log-softmax and logsumexp."""

from __future__ import annotations

import ast

from softmaxkit.tools.lint.rule import Context, Rule
from softmaxkit.tools.lint.semantic.tags import EXP, LOGPROB, MASKED, PROB, SUM_EXP
from softmaxkit.tools.lint._rules._common import (
    is_inverse_temperature,
    is_temperature,
    log_op,
    renamed_callee,
    within_manual_cross_entropy,
)


class NaiveSoftmax(Rule):
    """
    ## What it does
    Checks for softmax written as `exp(x) / sum(exp(x))` without subtracting
    the maximum first, in NumPy, PyTorch and JAX spellings, as functions
    (`np.exp(x) / np.sum(np.exp(x))`) and as methods
    (`x.exp() / x.exp().sum(-1, keepdim=True)`), also through a variable
    (`e = np.exp(x); e / e.sum()`).

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
    node_types = (ast.BinOp,)

    def check(self, node: ast.BinOp, ctx: Context) -> None:
        if type(node.op) is ast.Div and ctx.tag(node.left) == EXP and ctx.tag(node.right) == SUM_EXP:
            ctx.report(self, node)


class LogOfSoftmax(Rule):
    """
    ## What it does
    Checks for the logarithm of softmax output: `torch.log(F.softmax(x, dim=1))`,
    `np.log(scipy.special.softmax(x))`, `x.softmax(-1).log()`, and the log of
    the output of an `nn.Softmax` module, directly or through variables.

    ## Why is this bad?
    Softmax rounds small probabilities to 0 (below about 1e-45 in float32),
    and the log of 0 is `-inf`; a later `-inf * 0` or gradient gives NaN.
    Even when nothing underflows, the rounding error of the probability is
    magnified in the log of a probability near 1. `log_softmax` computes
    `x - logsumexp(x)` directly, which is finite and accurate.

    ## Example
    ```python
    log_probs = torch.log(F.softmax(logits, dim=-1))
    ```

    ## Use instead
    ```python
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
    fix_safety = "safe"
    node_types = (ast.Call,)

    def check(self, node: ast.Call, ctx: Context) -> None:
        op = log_op(node, ctx)
        if op is None or ctx.tag(op.input) != PROB or within_manual_cross_entropy(node, ctx):
            return
        fix = None
        inner = op.input
        inner_op = ctx.op(inner) if type(inner) is ast.Call else None
        if inner_op is not None and inner_op.name == "softmax" and op.library != "math":
            content = softmax_to_log_softmax(inner_op, ctx)
            if content is not None:
                fix = ctx.fix("safe", "Use `log_softmax`", node, content)
        ctx.report(self, node, fix)


def softmax_to_log_softmax(op, ctx: Context) -> str | None:
    """The source of a softmax call rewritten to call log_softmax with the same arguments."""
    call = op.call
    if op.method:
        return ctx.splice(call, [(call.func, f"{ctx.text(call.func.value)}.log_softmax")])
    callee = renamed_callee(op, ctx, op.qualname.rpartition(".")[0] + ".log_softmax")
    if callee is None:
        return None
    return ctx.splice(call, [(call.func, callee)])


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
    the sum is kept in a variable. The stable spelling
    `m + log(sum(exp(x - m)))` with `m = max(x)` is not reported.

    ## Why is this bad?
    `exp(x)` overflows to `inf` once an element exceeds about 88.7 in float32
    (709.8 in float64), so the result is `inf`; when all elements are very
    negative, the sum underflows to 0 and the result is `-inf`. The true
    value lies between `max(x)` and `max(x) + log(n)` in both cases.

    ## Example
    ```python
    lse = torch.log(torch.sum(torch.exp(scores), dim=-1))
    ```

    ## Use instead
    ```python
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
    fix_safety = "safe"
    node_types = (ast.Call,)

    def check(self, node: ast.Call, ctx: Context) -> None:
        op = log_op(node, ctx)
        if op is None or ctx.tag(op.input) != SUM_EXP:
            return
        ctx.report(self, node, self._fix(node, op, ctx))

    def _fix(self, node: ast.Call, op, ctx: Context):
        if op.library == "math" or type(op.input) is not ast.Call:
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


_IMPLICIT_DIM_FUNCTIONS = frozenset(
    {"torch.nn.functional.softmax", "torch.nn.functional.log_softmax", "torch.nn.functional.softmin"}
)
_IMPLICIT_DIM_CLASSES = frozenset({"torch.nn.Softmax", "torch.nn.LogSoftmax", "torch.nn.Softmin"})


class SoftmaxImplicitDim(Rule):
    """
    ## What it does
    Checks for `F.softmax`, `F.log_softmax` and `F.softmin` called without
    `dim`, and for `nn.Softmax()`, `nn.LogSoftmax()` and `nn.Softmin()`
    created without `dim`.

    ## Why is this bad?
    Without `dim`, PyTorch guesses the axis from the number of dimensions:
    dim 0 for 0-, 1- and 3-D inputs, dim 1 otherwise. For a 3-D batch of
    sequences `(batch, time, classes)` that normalises over the batch, which
    gives wrong probabilities without any error; PyTorch only emits a
    deprecation warning.

    ## Example
    ```python
    probs = F.softmax(logits)
    self.act = nn.Softmax()
    ```

    ## Use instead
    ```python
    probs = F.softmax(logits, dim=-1)
    self.act = nn.Softmax(dim=-1)
    ```

    ## Fix safety
    No fix is offered: only the author knows which axis holds the classes.

    ## References
    - PyTorch documentation of `torch.nn.functional.softmax` ("implicit choice
      of dim is deprecated").
    """

    code = "SMK104"
    name = "softmax-implicit-dim"
    message = "softmax without `dim` guesses the axis (dim 0 for 3-D input); pass `dim=` explicitly"
    node_types = (ast.Call,)

    def check(self, node: ast.Call, ctx: Context) -> None:
        if any(k.arg is None for k in node.keywords) or any(type(a) is ast.Starred for a in node.args):
            return
        op = ctx.op(node)
        if op is not None:
            if op.method or op.qualname not in _IMPLICIT_DIM_FUNCTIONS:
                return
            dim = op.arg(0, "dim")
        elif ctx.imports.qualname(node.func) in _IMPLICIT_DIM_CLASSES:
            dim = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "dim"), None)
        else:
            return
        if dim is None or (type(dim) is ast.Constant and dim.value is None):
            ctx.report(self, node)


class TemperatureAfterSoftmax(Rule):
    """
    ## What it does
    Checks for a temperature applied to probabilities or log-probabilities
    instead of logits: `softmax(x) / T`, `log_softmax(x) * (1 / T)`,
    `probs ** (1 / T)`, `probs /= self.temperature`. A temperature is a name
    such as `T`, `tau`, `temp`, `temperature` or one ending in `_temperature`.

    ## Why is this bad?
    Temperature scaling means `softmax(x / T)`. Dividing probabilities by `T`
    only rescales them, so they no longer sum to 1, and dividing
    log-probabilities by `T` gives values that are not log-probabilities of
    any distribution. Powers of probabilities also lose the mass of entries
    that already underflowed.

    ## Example
    ```python
    probs = F.softmax(logits, dim=-1) / temperature
    ```

    ## Use instead
    ```python
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
    node_types = (ast.BinOp, ast.AugAssign)

    def check(self, node: ast.BinOp | ast.AugAssign, ctx: Context) -> None:
        if type(node) is ast.AugAssign:
            left, right = node.target, node.value
        else:
            left, right = node.left, node.right
        kind = type(node.op)
        probabilities = (PROB, LOGPROB)
        if kind is ast.Div:
            found = ctx.tag(left) in probabilities and is_temperature(right)
        elif kind is ast.Mult:
            found = any(
                ctx.tag(a) in probabilities and (is_temperature(b) or is_inverse_temperature(b))
                for a, b in ((left, right), (right, left))
            )
        elif kind is ast.Pow:
            found = ctx.tag(left) in probabilities and (is_temperature(right) or is_inverse_temperature(right))
        else:
            found = False
        if found:
            ctx.report(self, node)


_GUARDS = frozenset({"nan_to_num", "where", "clamp", "masked_fill", "masked_fill_"})


class UnguardedMaskedSoftmax(Rule):
    """
    ## What it does
    Checks for softmax (or log_softmax) over scores masked with `-inf`
    (`masked_fill(mask, float('-inf'))`, `-math.inf`, `-torch.inf`,
    `-np.inf`, `torch.where(mask, s, -inf)`) when nothing guards the rows in
    which every entry is masked: no `nan_to_num`, `where`, `masked_fill` or
    `clamp` applied to the result. Masking with a finite large negative value
    (`-1e9`, `torch.finfo(dtype).min`) is not reported.

    This rule is a warning: the code is correct as long as no row is ever
    fully masked, which the linter cannot know.

    ## Why is this bad?
    A row whose entries are all `-inf` has maximum `-inf`, and
    `-inf - (-inf)` is NaN, so the whole row of the softmax is NaN, and the
    NaN spreads through the attention output and the gradients. Padding-only
    sequences and causal masks with left padding produce such rows.

    ## Example
    ```python
    scores = scores.masked_fill(~mask, float("-inf"))
    attn = F.softmax(scores, dim=-1)
    ```

    ## Use instead
    ```python
    scores = scores.masked_fill(~mask, float("-inf"))
    attn = F.softmax(scores, dim=-1).nan_to_num(0.0)
    ```
    or `softmaxkit.torch.softmax`, which returns 0 on fully masked rows.

    ## Fix safety
    No fix is offered: what a fully masked row should produce depends on the
    model.

    ## References
    - IEEE 754-2019, section 7.2: `inf - inf` is an invalid operation whose
      result is NaN.
    """

    code = "SMK106"
    name = "unguarded-masked-softmax"
    message = "softmax over `-inf`-masked scores gives NaN on fully masked rows; guard the result or mask with a finite value"
    severity = "warning"
    node_types = (ast.Call,)

    def check(self, node: ast.Call, ctx: Context) -> None:
        op = ctx.op(node)
        if op is None:
            return
        if op.name in _GUARDS and not (op.name.startswith("masked_fill") and ctx.is_neg_inf(op.arg(1, "value"))):
            guards = ctx.state(self).setdefault("guards", {})
            for arg in (op.input, *node.args, *(k.value for k in node.keywords)):
                if type(arg) is ast.Name:
                    guards.setdefault(arg.id, []).append(node.lineno)
            return
        if op.name not in ("softmax", "log_softmax") or ctx.tag(op.input) != MASKED:
            return
        if any(k.arg == "where" for k in node.keywords):
            return
        ancestor = ctx.parent(node)
        while isinstance(ancestor, ast.expr):
            if type(ancestor) is ast.Call:
                outer = ctx.op(ancestor)
                if outer is not None and outer.name in _GUARDS:
                    return
            ancestor = ctx.parent(ancestor)
        if type(ancestor) is ast.Assign and len(ancestor.targets) == 1 and type(ancestor.targets[0]) is ast.Name:
            ctx.state(self).setdefault("pending", []).append((node, ancestor.targets[0].id))
        else:
            ctx.report(self, node)

    def end_scope(self, ctx: Context, state: dict) -> None:
        guards = state.get("guards", {})
        for node, name in state.get("pending", ()):
            if not any(line > node.lineno for line in guards.get(name, ())):
                ctx.report(self, node)
