"""SMK202 nll-loss-on-probabilities: probabilities given to `nll_loss`."""

from __future__ import annotations

import ast

from softmaxkit.tools.lint.rules.patterns import LogProbabilityLoss


class NllLossOnProbabilities(LogProbabilityLoss):
    """
    ## What it does
    Checks for probabilities (softmax output) given as the input of
    `F.nll_loss` or of an `nn.NLLLoss` instance, directly or through
    variables and modules of the same file.

    This rule is an error: the loss is wrong for every input.

    ## Why is this bad?
    `nll_loss` expects log-probabilities and returns `-input[target]`. Given
    probabilities it returns `-p[target]`, a value in `[-1, 0]` that is not
    the cross-entropy; training on it converges slowly and to poorly
    calibrated models, without any error.

    ## Example
    ```python
    import torch
    import torch.nn.functional as F

    logits = torch.randn(8, 10)
    target = torch.randint(10, (8,))
    loss = F.nll_loss(F.softmax(logits, dim=1), target)
    ```

    ## Use instead
    ```python
    import torch
    import torch.nn.functional as F

    logits = torch.randn(8, 10)
    target = torch.randint(10, (8,))
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
    severity = "error"
    fix_safety = "unsafe"
    node_types = (ast.Call,)
    kind = "nll_loss"
