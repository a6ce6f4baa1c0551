"""SMK203 manual-cross-entropy: cross-entropy computed by hand from probabilities."""

from __future__ import annotations

import ast

from softmaxkit.tools.lint.rule import Context, Rule
from softmaxkit.tools.lint.rules.patterns import is_manual_cross_entropy


class ManualCrossEntropy(Rule):
    """
    ## What it does
    Checks for cross-entropy computed by hand from probabilities (softmax or
    sigmoid output): `-torch.log(p[range(n), y]).mean()`,
    `-(y * np.log(p)).sum(axis=1).mean()`,
    `-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))`,
    `np.sum(-y * np.log(p))`, and per element,
    `-y * np.log(p) - (1 - y) * np.log(1 - p)`. Probabilities clipped or
    offset before the log (`np.log(p + eps)`,
    `np.log(np.clip(p, eps, 1 - eps))`) are not reported.

    This rule is a warning: the loss is right until a probability
    underflows to 0 (or, for `log(1 - p)`, rounds to 1).

    ## Why is this bad?
    A probability that rounds to 0 makes the loss `inf` and its gradient NaN.
    In float32 this happens once the target's logit trails the largest one by
    about 100, and for `log(1 - p)` with sigmoid output once the logit exceeds
    about 17, where `p` rounds to 1. Computing the loss from logits,
    `logsumexp(x) - x[target]`, stays finite and accurate.

    ## Example
    ```python
    import torch
    import torch.nn.functional as F

    logits = torch.randn(8, 10)
    y = torch.randint(10, (8,))
    probs = F.softmax(logits, dim=1)
    loss = -torch.log(probs[torch.arange(len(y)), y]).mean()
    ```

    ## Use instead
    ```python
    import torch
    import torch.nn.functional as F

    logits = torch.randn(8, 10)
    y = torch.randint(10, (8,))
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
    severity = "warning"
    node_types = (ast.UnaryOp, ast.Call, ast.BinOp)

    def check(self, node: ast.AST, ctx: Context) -> None:
        if is_manual_cross_entropy(node, ctx):
            ctx.report(self, node)
