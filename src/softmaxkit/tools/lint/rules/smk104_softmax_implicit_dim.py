"""SMK104 softmax-implicit-dim: a torch softmax that leaves `dim` to be guessed."""

from __future__ import annotations

import ast

from softmaxkit.tools.lint.rule import Context, Rule
from softmaxkit.tools.lint.semantic.tags import POSITIONS, VECTOR

_IMPLICIT_DIM_FUNCTIONS = frozenset(
    {"torch.nn.functional.softmax", "torch.nn.functional.log_softmax", "torch.nn.functional.softmin"}
)
_IMPLICIT_DIM_CLASSES = frozenset({"torch.nn.Softmax", "torch.nn.LogSoftmax", "torch.nn.Softmin"})


class SoftmaxImplicitDim(Rule):
    """
    ## What it does
    Checks for `F.softmax`, `F.log_softmax` and `F.softmin` called without
    `dim`, and for `nn.Softmax()`, `nn.LogSoftmax()` and `nn.Softmin()`
    created without `dim`. A call on an array known to have one axis
    (`torch.zeros(n)`, `torch.arange(n)`) is not reported.

    This rule is a warning: for 2-D input the guessed axis is the class
    axis, so the code is wrong only for inputs of other ranks.

    ## Why is this bad?
    Without `dim`, PyTorch guesses the axis from the number of dimensions:
    dim 0 for 0-, 1- and 3-D inputs, dim 1 otherwise. For a 3-D batch of
    sequences `(batch, time, classes)` that normalises over the batch, which
    gives wrong probabilities without any error; PyTorch only emits a
    deprecation warning.

    ## Example
    ```python
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    logits = torch.randn(4, 5, 10)
    probs = F.softmax(logits)
    act = nn.Softmax()
    ```

    ## Use instead
    ```python
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    logits = torch.randn(4, 5, 10)
    probs = F.softmax(logits, dim=-1)
    act = nn.Softmax(dim=-1)
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
    severity = "warning"
    node_types = (ast.Call,)

    def check(self, node: ast.Call, ctx: Context) -> None:
        if any(k.arg is None for k in node.keywords) or any(type(a) is ast.Starred for a in node.args):
            return
        op = ctx.op(node)
        if op is not None:
            if op.method or op.qualname not in _IMPLICIT_DIM_FUNCTIONS:
                return
            dim = op.arg(0, "dim")
            if ctx.tag(op.input) in (VECTOR, POSITIONS):
                # One axis: the guess (dim 0) is the only axis there is.
                return
        elif ctx.imports.qualname(node.func) in _IMPLICIT_DIM_CLASSES:
            dim = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "dim"), None)
        else:
            return
        if dim is None or (type(dim) is ast.Constant and dim.value is None):
            ctx.report(self, node)
