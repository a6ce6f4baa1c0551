"""SMK2xx: losses given probabilities where they expect logits or log-probabilities."""

from __future__ import annotations

import ast

from softmaxkit.tools.lint.rule import Context, Rule
from softmaxkit.tools.lint.semantic.tags import PROB, SIGMOID
from softmaxkit.tools.lint._rules._common import (
    is_manual_cross_entropy,
    renamed_callee,
    sole_argument,
)
from softmaxkit.tools.lint._rules.softmax import softmax_to_log_softmax


def _direct_softmax(expr: ast.expr | None, ctx: Context):
    if type(expr) is not ast.Call:
        return None
    op = ctx.op(expr)
    return op if op is not None and op.name == "softmax" else None


class SoftmaxBeforeCrossEntropy(Rule):
    """
    ## What it does
    Checks for probabilities (softmax output) given as the input of
    `F.cross_entropy`, of an `nn.CrossEntropyLoss` instance, or of
    `nn.CrossEntropyLoss()(...)`: directly, through variables, through an
    `nn.Sequential` that ends in `nn.Softmax`, and through a module of the
    same file whose `forward` returns softmax output.

    ## Why is this bad?
    `cross_entropy` applies `log_softmax` to its input itself. Given
    probabilities, it computes the loss of `softmax(softmax(x))`, whose
    values all lie in `[1/e, e]` times each other: the loss cannot fall much
    below `log(n_classes) - 1`, and its gradients shrink, so training stalls
    without any error.

    ## Example
    ```python
    probs = F.softmax(logits, dim=1)
    loss = F.cross_entropy(probs, target)
    ```

    ## Use instead
    ```python
    loss = F.cross_entropy(logits, target)
    ```
    and apply softmax only where probabilities are read.

    ## Fix safety
    The fix is unsafe and applies only with `--unsafe-fixes`: it removes a
    softmax that is the loss's direct argument, which changes the loss value
    (that is its purpose) and assumes the softmax ran over the class axis.

    ## References
    - PyTorch documentation of `torch.nn.CrossEntropyLoss`: "The input is
      expected to contain the unnormalized logits for each class".
    """

    code = "SMK201"
    name = "softmax-before-cross-entropy"
    message = "`cross_entropy` applies log_softmax itself and expects logits, not probabilities; pass the logits"
    fix_safety = "unsafe"
    node_types = (ast.Call,)

    def check(self, node: ast.Call, ctx: Context) -> None:
        loss = ctx.loss_call(node)
        if loss is None or loss[0] != "cross_entropy" or loss[1] is None or ctx.tag(loss[1]) != PROB:
            return
        fix = None
        softmax = _direct_softmax(loss[1], ctx)
        if softmax is not None and softmax.input is not None:
            fix = ctx.fix("unsafe", "Remove the softmax", loss[1], ctx.text(softmax.input))
        ctx.report(self, loss[1], fix)


class _LogProbabilityLoss(Rule):
    kind: str

    def check(self, node: ast.Call, ctx: Context) -> None:
        loss = ctx.loss_call(node)
        if loss is None or loss[0] != self.kind or loss[1] is None or ctx.tag(loss[1]) != PROB:
            return
        fix = None
        softmax = _direct_softmax(loss[1], ctx)
        if softmax is not None:
            content = softmax_to_log_softmax(softmax, ctx)
            if content is not None:
                fix = ctx.fix("unsafe", "Use `log_softmax`", loss[1], content)
        ctx.report(self, loss[1], fix)


class NllLossOnProbabilities(_LogProbabilityLoss):
    """
    ## What it does
    Checks for probabilities (softmax output) given as the input of
    `F.nll_loss` or of an `nn.NLLLoss` instance, directly or through
    variables and modules of the same file.

    ## Why is this bad?
    `nll_loss` expects log-probabilities and returns `-input[target]`. Given
    probabilities it returns `-p[target]`, a value in `[-1, 0]` that is not
    the cross-entropy; training on it converges slowly and to poorly
    calibrated models, without any error.

    ## Example
    ```python
    loss = F.nll_loss(F.softmax(logits, dim=1), target)
    ```

    ## Use instead
    ```python
    loss = F.nll_loss(F.log_softmax(logits, dim=1), target)
    ```
    or `F.cross_entropy(logits, target)`.

    ## Fix safety
    The fix is unsafe and applies only with `--unsafe-fixes`: turning the
    direct softmax argument into `log_softmax` changes the loss value, which
    is the point, and whatever was tuned on the old value.

    ## References
    - PyTorch documentation of `torch.nn.NLLLoss`: "The input given through a
      forward call is expected to contain log-probabilities of each class".
    """

    code = "SMK202"
    name = "nll-loss-on-probabilities"
    message = "`nll_loss` expects log-probabilities, not probabilities; use `log_softmax` (or `cross_entropy` on logits)"
    fix_safety = "unsafe"
    node_types = (ast.Call,)
    kind = "nll_loss"


class ManualCrossEntropy(Rule):
    """
    ## What it does
    Checks for cross-entropy computed by hand from probabilities (softmax or
    sigmoid output): `-torch.log(p[range(n), y]).mean()`,
    `-(y * np.log(p)).sum(axis=1).mean()`,
    `-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))`,
    `np.sum(-y * np.log(p))`. Probabilities clipped or offset before the log
    (`np.log(p + eps)`, `np.log(np.clip(p, eps, 1 - eps))`) are not reported.

    ## Why is this bad?
    A probability that rounds to 0 makes the loss `inf` and its gradient NaN.
    In float32 this happens once the target's logit trails the largest one by
    about 100, and for `log(1 - p)` with sigmoid output once the logit exceeds
    about 17, where `p` rounds to 1. Computing the loss from logits,
    `logsumexp(x) - x[target]`, stays finite and accurate.

    ## Example
    ```python
    probs = F.softmax(logits, dim=1)
    loss = -torch.log(probs[torch.arange(len(y)), y]).mean()
    ```

    ## Use instead
    ```python
    loss = F.cross_entropy(logits, y)
    ```
    (`softmaxkit.cross_entropy` for NumPy,
    `-(y * jax.nn.log_softmax(x)).sum(-1)` for JAX).

    ## Fix safety
    No fix is offered: the rewrite needs the logits, which the expression no
    longer has.

    ## References
    - Prieto et al., "Grokking at the edge of numerical stability" (2025),
      on softmax collapse in float32.
    """

    code = "SMK203"
    name = "manual-cross-entropy"
    message = "cross-entropy computed from probabilities gives `inf` when a probability underflows; compute it from logits (`cross_entropy`, `log_softmax`)"
    node_types = (ast.UnaryOp, ast.Call)

    def check(self, node: ast.AST, ctx: Context) -> None:
        if is_manual_cross_entropy(node, ctx):
            ctx.report(self, node)


class SigmoidBeforeBinaryCrossEntropy(Rule):
    """
    ## What it does
    Checks for sigmoid output given as the input of
    `F.binary_cross_entropy` or of an `nn.BCELoss` instance, directly or
    through variables and modules of the same file.

    ## Why is this bad?
    In float32, `sigmoid(x)` rounds to exactly 1 once `x` exceeds about 17,
    and `log(1 - 1)` is `-inf`; PyTorch clamps the log at -100, so the loss
    and its gradient stop depending on the logit. The `with_logits` version
    computes `max(x, 0) - x * y + log1p(exp(-|x|))`, which is exact for any
    logit.

    ## Example
    ```python
    loss = F.binary_cross_entropy(torch.sigmoid(logits), target)
    ```

    ## Use instead
    ```python
    loss = F.binary_cross_entropy_with_logits(logits, target)
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


class KlDivOnProbabilities(_LogProbabilityLoss):
    """
    ## What it does
    Checks for probabilities (softmax output) given as the first argument of
    `F.kl_div` or of an `nn.KLDivLoss` instance. The target (second argument)
    may be probabilities; `kl_div(log_softmax(s), softmax(t))` is correct.

    ## Why is this bad?
    `kl_div(input, target)` computes `target * (log(target) - input)`: it
    expects `input` to be log-probabilities. Given probabilities it computes
    a quantity that is not a divergence, can be negative, and whose gradient
    pushes the student the wrong way, without any error.

    ## Example
    ```python
    loss = F.kl_div(F.softmax(student, dim=-1), F.softmax(teacher, dim=-1), reduction="batchmean")
    ```

    ## Use instead
    ```python
    loss = F.kl_div(F.log_softmax(student, dim=-1), F.softmax(teacher, dim=-1), reduction="batchmean")
    ```

    ## Fix safety
    The fix is unsafe and applies only with `--unsafe-fixes`: turning the
    direct softmax argument into `log_softmax` changes the loss value, which
    is the point.

    ## References
    - PyTorch documentation of `torch.nn.KLDivLoss`: "the argument input
      should be log-probabilities".
    """

    code = "SMK205"
    name = "kl-div-on-probabilities"
    message = "`kl_div` expects log-probabilities as its input; pass `log_softmax(x)`"
    fix_safety = "unsafe"
    node_types = (ast.Call,)
    kind = "kl_div"
