"""SMK104 softmax-implicit-dim: a torch softmax that leaves `dim` to be guessed."""

from __future__ import annotations

import ast

from softmaxkit.tools.lint.rule import Context, Rule
from softmaxkit.tools.lint.semantic.tags import MATRIX, POSITIONS, VECTOR, Calls

_IMPLICIT_DIM_FUNCTIONS = frozenset(
    {"torch.nn.functional.softmax", "torch.nn.functional.log_softmax", "torch.nn.functional.softmin"}
)
_IMPLICIT_DIM_CLASSES = frozenset({"torch.nn.Softmax", "torch.nn.LogSoftmax", "torch.nn.Softmin"})
# Arrays of one or two axes, for which the guess (dim 0 for 1-D, 1 for 2-D) is the last axis.
_KNOWN_RANKS = (VECTOR, MATRIX, POSITIONS)


class SoftmaxImplicitDim(Rule):
    """
    ## What it does
    Checks for `F.softmax`, `F.log_softmax` and `F.softmin` called without
    `dim`, and for `nn.Softmax()`, `nn.LogSoftmax()` and `nn.Softmin()`
    created without `dim`. A call on an array known to have one or two
    axes (`torch.zeros(n)`, `torch.arange(n)`, `x.view(n, -1)`,
    `x.flatten(1)`) is not reported, and neither is a module that every
    application in the file gives such an array (directly or through an
    `nn.Sequential` of which it is the last layer).

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
        self._note_application(node, ctx)
        if any(k.arg is None for k in node.keywords) or any(type(a) is ast.Starred for a in node.args):
            return
        op = ctx.op(node)
        if op is not None:
            if op.method or op.qualname not in _IMPLICIT_DIM_FUNCTIONS:
                return
            dim = op.arg(0, "dim")
            if ctx.tag(op.input) in _KNOWN_RANKS:
                return
            if dim is None or (type(dim) is ast.Constant and dim.value is None):
                ctx.report(self, node)
            return
        if ctx.imports.qualname(node.func) not in _IMPLICIT_DIM_CLASSES:
            return
        dim = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "dim"), None)
        if dim is None or (type(dim) is ast.Constant and dim.value is None):
            # Decided at the end of the file, once the module's applications are known.
            ctx.file_state(self).setdefault("modules", {})[node] = []

    def _note_application(self, node: ast.Call, ctx: Context) -> None:
        """Records whether a call applies a pending module to an array of known rank."""
        if not node.args:
            return
        modules = ctx.file_state(self).get("modules")
        if not modules:
            return
        callee = ctx.tag(node.func)
        if type(callee) is Calls and callee.origin in modules:
            modules[callee.origin].append(ctx.tag(node.args[0]) in _KNOWN_RANKS)

    def end_file(self, ctx: Context, state: dict) -> None:
        for node, known in state.get("modules", {}).items():
            if not known or not all(known):
                ctx.report(self, node)
