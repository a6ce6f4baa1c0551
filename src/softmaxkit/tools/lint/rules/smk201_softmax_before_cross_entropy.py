"""SMK201 softmax-before-cross-entropy: probabilities given to `cross_entropy`."""

from __future__ import annotations

import ast

from softmaxkit.tools.lint.rule import Context, Rule
from softmaxkit.tools.lint.rules.patterns import direct_softmax
from softmaxkit.tools.lint.semantic.tags import PROB


class SoftmaxBeforeCrossEntropy(Rule):
    """
    ## What it does
    Checks for probabilities (softmax output) given as the input of
    `F.cross_entropy`, of an `nn.CrossEntropyLoss` instance, or of
    `nn.CrossEntropyLoss()(...)` (and of `optax.softmax_cross_entropy`):
    directly, through variables, reshapes and concatenation, through an
    `nn.Sequential` that ends in `nn.Softmax`, through a module of the same
    file whose `forward` returns softmax output (also when it does so in one
    mode, `if self.mode == "argmax":`, and the loss is computed under the
    same test), and through the parameters of functions of the file that
    every call passes such output.

    This rule is an error: the loss is wrong for every input.

    ## Why is this bad?
    `cross_entropy` applies `log_softmax` to its input itself. Given
    probabilities, it computes the loss of `softmax(softmax(x))`, whose
    values all lie in `[1/e, e]` times each other: the loss cannot fall much
    below `log(n_classes) - 1`, and its gradients shrink, so training stalls
    without any error.

    ## Example
    ```python
    import torch
    import torch.nn as nn
    import torch.nn.functional as F


    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            return F.softmax(self.fc(x), dim=-1)


    model = Classifier()
    x, target = torch.randn(8, 16), torch.randint(10, (8,))
    loss = F.cross_entropy(model(x), target)
    ```

    ## Use instead
    ```python
    import torch
    import torch.nn as nn
    import torch.nn.functional as F


    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            return self.fc(x)


    model = Classifier()
    x, target = torch.randn(8, 16), torch.randint(10, (8,))
    loss = F.cross_entropy(model(x), target)
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
    severity = "error"
    fix_safety = "unsafe"
    node_types = (ast.Call,)

    def check(self, node: ast.Call, ctx: Context) -> None:
        loss = ctx.loss_call(node)
        if loss is None or loss[0] != "cross_entropy" or loss[1] is None or ctx.tag(loss[1]) != PROB:
            return
        fix = None
        softmax = direct_softmax(loss[1], ctx)
        if softmax is not None and softmax.input is not None:
            fix = ctx.fix("unsafe", "Remove the softmax", loss[1], ctx.text(softmax.input))
        ctx.report(self, loss[1], fix)
