"""SMK107 min-sentinel-mask-sum: two masks filled with `finfo.min` (or a large finite sentinel) added together."""

from __future__ import annotations

import ast
import math

from softmaxkit.tools.lint.rule import Context, Rule

# Sentinels are measured as fractions of the largest finite value of the
# dtype they overflow: ``finfo.min`` is 1 of its own dtype's, ``-5e4`` is
# 5e4 / 65504 of float16's, ``-3.4e38`` nearly 1 of float32's. Two that sum
# above 1 overflow to -inf.
_FLOAT16_MAX = 65504.0
_FLOAT32_MAX = 3.4028234663852886e38
# Constants from this magnitude on are taken for mask sentinels (-1e4, -5e4, -65504).
_SENTINEL_MIN = 1e4
# Constants between float16's range and this doubled stay finite in float32 and bfloat16.
_HALF_FLOAT32_MAX = _FLOAT32_MAX / 2
# Calls that carry their input's values into their result: fills, selections, casts and reshapes.
_CARRIERS = frozenset(
    {
        "masked_fill",
        "masked_fill_",
        "where",
        "full",
        "full_like",
        "new_full",
        "fill_",
        "tensor",
        "as_tensor",
        "to",
        "type",
        "float",
        "half",
        "bfloat16",
        "expand",
        "expand_as",
        "view",
        "reshape",
        "unsqueeze",
        "squeeze",
        "repeat",
        "clone",
        "contiguous",
        "permute",
        "transpose",
        "triu",
        "tril",
        "cat",
        "stack",
        "rearrange",
    }
)
# The most nodes one look at an operand follows.
_BUDGET = 64
# Sums, and the values whose sentinel an assignment records (a name or a
# constant assigned clears what the target held).
_STATEMENT_EXPRESSIONS = (
    ast.BinOp,
    ast.Call,
    ast.UnaryOp,
    ast.Attribute,
    ast.Subscript,
    ast.IfExp,
    ast.Name,
    ast.Constant,
)


def _is_finfo(expr: ast.expr, ctx: Context, attr: str) -> bool:
    """Whether ``expr`` is ``<finfo>(...).<attr>`` for torch, NumPy or JAX's ``finfo``."""
    if (
        type(expr) is not ast.Attribute
        or expr.attr != attr
        or type(expr.value) is not ast.Call
    ):
        return False
    qualname = ctx.imports.qualname(expr.value.func)
    return qualname is not None and qualname.split(".")[-1] == "finfo"


def _constant_fraction(value: object) -> float:
    """The fraction of float16's (or float32's) largest value a negated constant sentinel ``-value`` spends, or 0."""
    if type(value) not in (int, float) or not math.isfinite(value):
        return 0.0
    if _SENTINEL_MIN <= value <= _FLOAT16_MAX:
        return value / _FLOAT16_MAX
    if _HALF_FLOAT32_MAX <= value <= _FLOAT32_MAX:
        return value / _FLOAT32_MAX
    return 0.0


def _fraction(expr: ast.expr, ctx: Context, names: dict[str, float]) -> float:
    """How much of its dtype's range the sentinel ``expr`` may hold spends: 1 for ``finfo.min``, 0 for no sentinel.

    Only expressions that carry a value into their result are followed:
    arithmetic, indexing, conditionals and the calls in ``_CARRIERS``; at
    most ``_BUDGET`` of them, since sentinels sit near the top of a mask's
    expression and long sums must stay cheap.
    """
    best = 0.0
    stack = [(expr, 1.0)]
    seen = 0
    while stack and seen < _BUDGET:
        node, scale = stack.pop()
        seen += 1
        kind = type(node)
        if kind is ast.Name:
            best = max(best, scale * names.get(node.id, 0.0))
        elif kind is ast.Attribute:
            if _is_finfo(node, ctx, "min"):
                best = max(best, scale)
        elif kind is ast.UnaryOp:
            operand = node.operand
            if type(node.op) is not ast.USub:
                stack.append((operand, scale))
            elif _is_finfo(operand, ctx, "max"):
                best = max(best, scale)
            elif type(operand) is ast.Constant:
                best = max(best, scale * _constant_fraction(operand.value))
            else:
                stack.append((operand, scale))
        elif kind is ast.BinOp:
            right = node.right
            if (
                type(node.op) is ast.Div
                and type(right) is ast.Constant
                and type(right.value) in (int, float)
            ):
                stack.append(
                    (node.left, scale / right.value if right.value >= 1 else scale)
                )
            else:
                stack.append((node.left, scale))
                stack.append((right, scale))
        elif kind is ast.Subscript:
            stack.append((node.value, scale))
        elif kind is ast.IfExp:
            stack.append((node.body, scale))
            stack.append((node.orelse, scale))
        elif kind is ast.List or kind is ast.Tuple:
            stack.extend((e, scale) for e in node.elts)
        elif kind is ast.Call:
            func = node.func
            called = (
                func.attr
                if type(func) is ast.Attribute
                else func.id
                if type(func) is ast.Name
                else None
            )
            if called in _CARRIERS:
                stack.extend((part, scale) for part in node.args)
                stack.extend((k.value, scale) for k in node.keywords)
                if type(func) is ast.Attribute and not ctx.imports.is_module_name(
                    func.value
                ):
                    stack.append((func.value, scale))
    return best


class MinSentinelMaskSum(Rule):
    """
    ## What it does
    Checks for the sum of two masks (or of scores and a mask) that both hold
    a large finite sentinel in place of `-inf`: `torch.finfo(dtype).min`,
    `-torch.finfo(dtype).max`, `np.finfo(...).min`, or a constant such as
    `-5e4`, `-65504` or `-3.4e38`, filled in with `masked_fill`,
    `torch.where`, `torch.full` or `(1 - mask) * sentinel`. Both sides must
    be known to hold a sentinel: a name assigned one earlier in the same
    function (or at module level, for module-level code), or the sentinel
    itself. A sum is reported when it can leave
    the finite range: always for `finfo.min` (twice the largest finite
    value of any float type), and for constants whose magnitudes sum above
    65504, float16's largest value. `-1e4` masks are not reported, since
    two of them sum to `-2e4`, and neither are sentinels halved
    (`-finfo.max / 2`), whose sum stays finite. Values are followed through
    arithmetic, indexing, fills, selections, casts and reshapes only: the
    result of `torch.max(x, finfo.min)` or `clamp` (which bound a sum) or of
    a helper function is not taken for a sentinel mask.

    This rule is a warning: only positions that both masks mask become
    `-inf`, and only a row made wholly of them gives NaN, which depends on
    the data.

    ## Why is this bad?
    A sentinel is chosen to be the most negative finite value, so two of
    them add up to `-inf` (`finfo.min + finfo.min` overflows in every
    float type; `-5e4 + -5e4` overflows in float16). A row that both masks
    mask entirely, such as a padded query under a padding mask plus a
    causal mask, becomes all `-inf`, its maximum is `-inf`, and the
    softmax gives NaN: `-inf - (-inf)` is NaN. The finite sentinel was
    chosen to avoid exactly this. In float16 even `finfo.min` plus a
    score below -16 overflows, so adding a `finfo.min` mask to scores that
    already carry one is the same bug.

    ## Example
    ```python
    import torch

    def combined_mask(padding, causal, dtype):
        padding_mask = (1.0 - padding) * torch.finfo(dtype).min
        causal_mask = torch.zeros_like(causal, dtype=dtype).masked_fill(causal, torch.finfo(dtype).min)
        return padding_mask + causal_mask
    ```

    ## Use instead
    ```python
    import torch

    def combined_mask(padding, causal, dtype):
        masked = (padding == 0) | causal
        return torch.zeros(masked.shape, dtype=dtype).masked_fill(masked, torch.finfo(dtype).min)
    ```
    Combine boolean masks and fill once, or pass the boolean mask itself
    (`torch.nn.functional.scaled_dot_product_attention` and
    `softmaxkit.attention` take one), or give the scores to
    `softmaxkit.torch.softmax`, which returns 0 on rows that are all
    `-inf`.

    ## Fix safety
    No fix is offered: how the masks should be combined depends on the
    model.

    ## References
    - [huggingface/transformers#31035](https://github.com/huggingface/transformers/issues/31035):
      NaN in float16 and bfloat16 attention with padding.
    - [huggingface/transformers#17306](https://github.com/huggingface/transformers/pull/17306):
      `torch.finfo(torch.float16).min` plus a negative score is `-inf`.
    """

    code = "SMK107"
    name = "min-sentinel-mask-sum"
    message = (
        "adding two masks filled with `finfo.min` (or a large finite sentinel) overflows to `-inf`, "
        "and a row masked by both gives NaN; combine boolean masks and fill once"
    )
    severity = "warning"
    node_types = (*_STATEMENT_EXPRESSIONS, ast.AugAssign)

    def check(self, node: ast.AST, ctx: Context) -> None:
        # What a statement binds is applied when the next statement starts, so
        # that the sums inside ``mask = mask + causal`` see the old ``mask``.
        kind = type(node)
        statement = node if kind is ast.AugAssign else ctx.parent(node)
        if (kind is ast.Name or kind is ast.Constant) and type(
            statement
        ) is not ast.Assign:
            return
        state = ctx.state(self)
        names = state.setdefault("names", {})
        top = isinstance(statement, ast.stmt)
        if top and statement is not state.get("statement"):
            names.update(state.pop("pending", {}))
            state["statement"] = statement
        if type(node) is ast.BinOp:
            if type(node.op) is ast.Add and _overflows(
                node.left, node.right, ctx, names
            ):
                ctx.report(self, node)
        elif type(node) is ast.AugAssign:
            if type(node.op) is ast.Add and _overflows(
                node.target, node.value, ctx, names
            ):
                ctx.report(self, node)
            if type(node.target) is ast.Name:
                fraction = max(
                    _fraction(node.target, ctx, names),
                    _fraction(node.value, ctx, names),
                )
                state["pending"] = {node.target.id: fraction}
            return
        if top and type(statement) is ast.Assign and node is statement.value:
            fraction = _fraction(node, ctx, names)
            state["pending"] = {
                t.id: fraction for t in statement.targets if type(t) is ast.Name
            }


def _overflows(
    left: ast.expr, right: ast.expr, ctx: Context, names: dict[str, float]
) -> bool:
    """Whether both sides hold sentinels that together leave their dtype's finite range."""
    a = _fraction(left, ctx, names)
    if a == 0:
        return False
    b = _fraction(right, ctx, names)
    return b > 0 and a + b > 1
