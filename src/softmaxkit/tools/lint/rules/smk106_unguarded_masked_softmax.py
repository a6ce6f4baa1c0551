"""SMK106 unguarded-masked-softmax: softmax over `-inf`-masked scores with no guard for fully masked rows."""

from __future__ import annotations

import ast

from softmaxkit.tools.lint.rule import Context, Rule
from softmaxkit.tools.lint.semantic.tags import LOGPROB, MASKED, PROB, Calls

_GUARDS = frozenset({"nan_to_num", "where", "clamp", "masked_fill", "masked_fill_"})
_SOFTMAX_KINDS = frozenset({PROB, LOGPROB})


def _module_softmax_input(call: ast.Call, ctx: Context) -> ast.expr | None:
    """The masked scores given to an ``nn.Softmax``/``nn.LogSoftmax`` instance (``self.softmax(scores)``), if any."""
    args = call.args
    if len(args) != 1 or type(args[0]) is ast.Starred or ctx.tag(args[0]) != MASKED:
        return None
    callee = ctx.tag(call.func)
    return args[0] if type(callee) is Calls and callee.result in _SOFTMAX_KINDS else None


class UnguardedMaskedSoftmax(Rule):
    """
    ## What it does
    Checks for softmax (or log_softmax) over scores masked with `-inf`
    (`masked_fill(mask, float('-inf'))`, `-math.inf`, `-torch.inf`,
    `-np.inf`, `torch.where(mask, s, -inf)`, `s[mask] = -inf`), or an
    `nn.Softmax` module applied to them, by a mask that
    can leave a row with no entry, when nothing guards those rows: no
    `nan_to_num`, `where`, `masked_fill` or `clamp` applied to the result.
    Masking with a finite large negative value (`-1e9`,
    `torch.finfo(dtype).min`) is not reported, and neither are masks that
    always keep an entry of each row: causal and sliding-window masks built
    with `tril`/`triu` or by comparing positions (`arange`), also when kept
    with `register_buffer` and sliced (`self.bias[:, :, :T, :T] == 0`), and
    top-k masks (`logits < v[:, [-1]]` with `v, _ = torch.topk(logits, k)`),
    top-p masks (a threshold on `cumsum(softmax(...))`), thresholds
    relative to the row maximum (`(m - s) / f > eps`), and column ranges or
    sets masked alike in every row
    (`logits[:, suppressed] = -inf`, `logits[:, :n] = -inf`).
    Padding and key masks stay reported, also when combined with a causal
    one.

    This rule is a warning: the code is correct as long as no row is ever
    fully masked, which the linter cannot know.

    ## Why is this bad?
    A row whose entries are all `-inf` has maximum `-inf`, and
    `-inf - (-inf)` is NaN, so the whole row of the softmax is NaN, and the
    NaN spreads through the attention output and the gradients. Padding-only
    sequences and causal masks with left padding produce such rows.

    ## Example
    ```python
    import torch
    import torch.nn.functional as F

    def attend(scores, key_padding_mask):
        scores = scores.masked_fill(key_padding_mask, float("-inf"))
        return F.softmax(scores, dim=-1)
    ```

    ## Use instead
    ```python
    import torch
    import torch.nn.functional as F

    def attend(scores, key_padding_mask):
        scores = scores.masked_fill(key_padding_mask, float("-inf"))
        return F.softmax(scores, dim=-1).nan_to_num(0.0)
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
            if _module_softmax_input(node, ctx) is None:
                return
        elif op.name in _GUARDS and not (op.name.startswith("masked_fill") and ctx.is_neg_inf(op.arg(1, "value"))):
            guards = ctx.state(self).setdefault("guards", {})
            for arg in (op.input, *node.args, *(k.value for k in node.keywords)):
                if type(arg) is ast.Name:
                    guards.setdefault(arg.id, []).append(node.lineno)
            return
        elif op.name not in ("softmax", "log_softmax") or ctx.tag(op.input) != MASKED:
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
