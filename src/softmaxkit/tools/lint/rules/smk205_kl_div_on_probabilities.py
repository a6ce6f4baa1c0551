"""SMK205 kl-div-on-probabilities: probabilities given as the input of `kl_div`."""

from __future__ import annotations

import ast

from softmaxkit.tools.lint.rules.patterns import LogProbabilityLoss


class KlDivOnProbabilities(LogProbabilityLoss):
    """
    ## What it does
    Checks for probabilities (softmax output) given as the first argument of
    `F.kl_div` or of an `nn.KLDivLoss` instance. The target (second argument)
    may be probabilities; `kl_div(log_softmax(s), softmax(t))` is correct.

    This rule is an error: the divergence is wrong for every input.

    ## Why is this bad?
    `kl_div(input, target)` computes `target * (log(target) - input)`: it
    expects `input` to be log-probabilities. Given probabilities it computes
    a quantity that is not a divergence, can be negative, and whose gradient
    pushes the student the wrong way, without any error.

    ## Example
    ```python
    import torch
    import torch.nn.functional as F

    student, teacher = torch.randn(8, 10), torch.randn(8, 10)
    loss = F.kl_div(F.softmax(student, dim=-1), F.softmax(teacher, dim=-1), reduction="batchmean")
    ```

    ## Use instead
    ```python
    import torch
    import torch.nn.functional as F

    student, teacher = torch.randn(8, 10), torch.randn(8, 10)
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
    severity = "error"
    fix_safety = "unsafe"
    node_types = (ast.Call,)
    kind = "kl_div"
