"""SMK108 multihead-attention-padded-weights: ``nn.MultiheadAttention`` given a padding mask on its weights-returning path."""

from __future__ import annotations

import ast

from softmaxkit.tools.lint.rule import Context, Rule

_MULTIHEAD_ATTENTION = frozenset(
    {"torch.nn.MultiheadAttention", "torch.nn.modules.activation.MultiheadAttention"}
)
# ``forward(query, key, value, key_padding_mask=None, need_weights=True, ...)``
_KEY_PADDING_MASK_POSITION = 3
_NEED_WEIGHTS_POSITION = 4


def _argument(call: ast.Call, position: int, keyword: str) -> ast.expr | None:
    if len(call.args) > position:
        return call.args[position]
    for k in call.keywords:
        if k.arg == keyword:
            return k.value
    return None


def _module_key(func: ast.expr) -> tuple[str, str] | None:
    """``("self", "attn")`` for ``self.attn``, ``("name", "attn")`` for ``attn``; None for other callees."""
    if type(func) is ast.Name:
        return ("name", func.id)
    if (
        type(func) is ast.Attribute
        and type(func.value) is ast.Name
        and func.value.id == "self"
    ):
        return ("self", func.attr)
    return None


class MultiheadAttentionPaddedWeights(Rule):
    """
    ## What it does
    Checks for an `nn.MultiheadAttention` module, created in the same file
    (`self.attn = nn.MultiheadAttention(...)` or `attn =
    nn.MultiheadAttention(...)`), called with a `key_padding_mask` and
    without `need_weights=False`. `need_weights` defaults to `True`, so a
    call that does not pass it is reported. A call whose `need_weights` is
    a variable is not reported, and neither is a call with only an
    `attn_mask`: a causal mask keeps the diagonal, so it cannot empty a row.

    This rule is a warning: the output is NaN only for a sequence whose keys
    are all padding, which depends on the batch.

    ## Why is this bad?
    With `need_weights=True`, `nn.MultiheadAttention` computes the attention
    weights with a plain softmax over scores filled with `-inf` at padded
    keys. A sequence whose keys are all padding gives a row of `-inf`,
    whose softmax is NaN: the output and the returned weights of that
    sequence are NaN in torch releases up to at least 2.13
    ([pytorch#41508](https://github.com/pytorch/pytorch/issues/41508), open
    since 2020), and in training the NaN reaches the gradients of the
    shared projections, so one empty sequence spoils the whole batch. With
    `need_weights=False` the module's computation calls
    `scaled_dot_product_attention` instead, which since torch 2.5 returns 0
    for such rows (torch 2.4 and earlier give NaN there too). One path
    still gives NaN with `need_weights=False`: the inference fast path
    (`batch_first=True`, evaluation mode, no gradients), checked on torch
    2.13. Only keeping a key of each such sequence unmasked avoids the NaN
    on every path.

    ## Example
    ```python
    import torch.nn as nn

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(64, 4, batch_first=True)

        def forward(self, x, padding):
            out, _ = self.attn(x, x, x, key_padding_mask=padding)
            return out
    ```

    ## Use instead
    ```python
    import torch.nn as nn

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(64, 4, batch_first=True)

        def forward(self, x, padding):
            empty = padding.all(-1, keepdim=True)
            out, _ = self.attn(x, x, x, key_padding_mask=padding & ~empty, need_weights=False)
            return out.masked_fill(empty[..., None], 0.0)
    ```
    The sequences that are all padding attend to every key, which keeps
    their rows finite, and their output is then set to 0. When the weights
    are needed, the same guard makes `need_weights=True` safe as well.

    ## Fix safety
    No fix is offered: with `need_weights=False` the call returns `None`
    for the weights, which the caller may use, and the guard depends on
    the layout of the mask.

    ## References
    - [pytorch#41508](https://github.com/pytorch/pytorch/issues/41508):
      NaN from `nn.MultiheadAttention` when a row is fully masked.
    - [pytorch#40932](https://github.com/pytorch/pytorch/issues/40932):
      a `key_padding_mask` that is all True gives a NaN loss.
    """

    code = "SMK108"
    name = "multihead-attention-padded-weights"
    message = (
        "`nn.MultiheadAttention` with a `key_padding_mask` and `need_weights=True` (the default) gives NaN "
        "for a sequence that is all padding; pass `need_weights=False` and unmask the keys of such sequences"
    )
    severity = "warning"
    node_types = (ast.Call,)

    def check(self, node: ast.Call, ctx: Context) -> None:
        state = ctx.file_state(self)
        if ctx.imports.qualname(node.func) in _MULTIHEAD_ATTENTION:
            statement = ctx.parent(node)
            if type(statement) is ast.Assign:
                for target in statement.targets:
                    key = _module_key(target)
                    if key is not None:
                        state.setdefault("modules", set()).add(key)
            return
        key = _module_key(node.func)
        if key is None or any(k.arg is None for k in node.keywords):
            return
        mask = _argument(node, _KEY_PADDING_MASK_POSITION, "key_padding_mask")
        if mask is None or (type(mask) is ast.Constant and mask.value is None):
            return
        need_weights = _argument(node, _NEED_WEIGHTS_POSITION, "need_weights")
        if need_weights is None or (
            type(need_weights) is ast.Constant and need_weights.value is True
        ):
            state.setdefault("calls", []).append((key, node))

    def end_file(self, ctx: Context, state: dict) -> None:
        modules = state.get("modules", set())
        for key, node in state.get("calls", ()):
            if key in modules:
                ctx.report(self, node)
