"""Patterns that more than one rule looks for, and the rule shape shared by the losses that expect log-probabilities."""

from __future__ import annotations

import ast

from softmaxkit.tools.lint.rule import Context, Rule
from softmaxkit.tools.lint.semantic.model import names_integer_type
from softmaxkit.tools.lint.semantic.names import FUNCTIONS
from softmaxkit.tools.lint.semantic.ops import Op, is_one
from softmaxkit.tools.lint.semantic.tags import INTEGER, OFFSETS, POSITIONS, PROB, SIGMOID

_REDUCTIONS = frozenset({"sum", "mean"})
_INDEXING_METHODS = frozenset({"gather", "take_along_dim", "index_select"})
_ROUNDING_METHODS = frozenset({"long", "int", "floor", "ceil", "round", "__int__"})


def log_op(call: ast.Call, ctx: Context) -> Op | None:
    """The call as a natural logarithm, if it is one (``math.log`` with a base is not)."""
    op = ctx.op(call)
    if op is None or op.name != "log" or op.input is None:
        return None
    if op.library == "math" and (len(call.args) != 1 or call.keywords):
        return None
    return op


def renamed_callee(op: Op, ctx: Context, qualname: str) -> str | None:
    """Source text that calls ``qualname`` in place of ``op``'s function.

    Keeps the user's spelling of the module (``F.softmax`` becomes
    ``F.log_softmax``) when the new function lives beside the old one. A
    wrapper declared in the configuration has no known neighbours: None.
    """
    if op.qualname not in FUNCTIONS:
        return None
    func = op.call.func
    module, _, name = qualname.rpartition(".")
    if type(func) is ast.Attribute and op.qualname.rpartition(".")[0] == module:
        return f"{ctx.text(func.value)}.{name}"
    return ctx.imports.spell(qualname)


def renamed_beside(op: Op, ctx: Context, name: str) -> str | None:
    """Callee text for the function ``name`` beside ``op``'s (``np.log`` to ``np.log1p``)."""
    if op.method:
        return f"{ctx.text(op.call.func.value)}.{name}"
    return renamed_callee(op, ctx, op.qualname.rpartition(".")[0] + "." + name)


def is_rounded(node: ast.expr, ctx: Context) -> bool:
    """Whether the value of ``node`` is rounded to an integer at once.

    ``int(...)``, ``round``, ``math.floor``/``ceil``, ``np.floor``,
    ``.astype(int)``, ``.long()``, also after arithmetic:
    ``math.ceil(math.log(1 + n) / math.log(2))``.
    """
    child = node
    parent = ctx.parent(node)
    while type(parent) is ast.BinOp:
        child, parent = parent, ctx.parent(parent)
    kind = type(parent)
    if kind is ast.Call:
        op = ctx.op(parent)
        return op is not None and op.name == "integer" and child in parent.args
    if kind is ast.Attribute:
        call = ctx.parent(parent)
        if type(call) is not ast.Call or call.func is not parent:
            return False
        if parent.attr in _ROUNDING_METHODS:
            return True
        return parent.attr == "astype" and bool(call.args) and names_integer_type(call.args[0])
    return False


def is_integer(expr: ast.expr, ctx: Context) -> bool:
    """Whether ``expr`` is integer-valued: a literal, ``len``, ``.shape[i]``, ``.size(i)``, a ``range`` index, ``int(...)``, ``arange``."""
    return ctx.tag(expr) in (INTEGER, POSITIONS, OFFSETS)


def is_not_small(expr: ast.expr) -> bool:
    """Whether ``expr`` is a number literal of magnitude at least 0.01 (``2.1``, ``-0.5``).

    ``log(1 + x)`` and ``exp(x) - 1`` lose digits only for small ``|x|``; at
    0.01 the loss is about two digits of float64's sixteen, and a literal's
    value is what the author meant.
    """
    if type(expr) is ast.UnaryOp and type(expr.op) in (ast.USub, ast.UAdd):
        expr = expr.operand
    return type(expr) is ast.Constant and type(expr.value) in (int, float) and abs(expr.value) >= 0.01


def sole_argument(op: Op) -> ast.expr | None:
    """The array ``op`` is applied to, when the call has no other argument."""
    call = op.call
    if call.keywords:
        return None
    if op.method:
        return op.input if not call.args else None
    if len(call.args) == 1 and type(call.args[0]) is not ast.Starred:
        return op.input
    return None


def direct_softmax(expr: ast.expr | None, ctx: Context) -> Op | None:
    """The softmax call ``expr`` is, if it is one."""
    if type(expr) is not ast.Call:
        return None
    op = ctx.op(expr)
    return op if op is not None and op.name == "softmax" else None


def softmax_to_log_softmax(op: Op, ctx: Context) -> str | None:
    """The source of a softmax call rewritten to call log_softmax with the same arguments."""
    call = op.call
    if op.method:
        return ctx.splice(call, [(call.func, f"{ctx.text(call.func.value)}.log_softmax")])
    callee = renamed_callee(op, ctx, op.qualname.rpartition(".")[0] + ".log_softmax")
    if callee is None:
        return None
    return ctx.splice(call, [(call.func, callee)])


def _probability_source(expr: ast.expr, ctx: Context) -> bool:
    while True:
        kind = type(expr)
        if kind is ast.Subscript:
            expr = expr.value
        elif kind is ast.Call and type(expr.func) is ast.Attribute and expr.func.attr in _INDEXING_METHODS:
            expr = expr.func.value
        else:
            break
    return ctx.tag(expr) in (PROB, SIGMOID)


def is_log_of_probability(expr: ast.expr, ctx: Context) -> bool:
    """``log(p)``, ``log(p[i, y])`` or ``log(1 - p)`` with ``p`` softmax or sigmoid output."""
    if type(expr) is not ast.Call:
        return False
    op = log_op(expr, ctx)
    if op is None:
        return False
    arg = op.input
    if type(arg) is ast.BinOp and type(arg.op) is ast.Sub and is_one(arg.left):
        arg = arg.right
    return _probability_source(arg, ctx)


def _strip_reductions(expr: ast.expr, ctx: Context) -> tuple[ast.expr, bool]:
    reduced = False
    while type(expr) is ast.Call:
        op = ctx.op(expr)
        if op is None or op.name not in _REDUCTIONS or op.input is None:
            break
        expr = op.input
        reduced = True
    return expr, reduced


def _terms(expr: ast.expr) -> list[ast.expr]:
    terms = []
    pending = [expr]
    while pending:
        node = pending.pop()
        if type(node) is ast.BinOp and type(node.op) in (ast.Add, ast.Sub, ast.Mult):
            pending.append(node.left)
            pending.append(node.right)
        else:
            terms.append(node)
    return terms


def is_manual_cross_entropy(node: ast.AST, ctx: Context) -> bool:
    """``-log(p[i, y]).mean()``, ``-(y * log(p)).sum()``, ``sum(-y * log(p))``, ``-y * log(p) - (1 - y) * log(1 - p)`` and kin."""
    kind = type(node)
    if kind is ast.BinOp:
        # Unreduced, per element: the outermost sum or difference of the terms.
        if type(node.op) not in (ast.Add, ast.Sub):
            return False
        parent = ctx.parent(node)
        if isinstance(parent, (ast.BinOp, ast.UnaryOp)) or (type(parent) is ast.Call and _is_reduction(parent, ctx)):
            return False
        terms = _terms(node)
        negations = [t for t in terms if type(t) is ast.UnaryOp and type(t.op) is ast.USub]
        if not negations:
            return False
        return any(is_log_of_probability(t, ctx) for t in terms) or any(
            is_log_of_probability(t.operand, ctx) for t in negations
        )
    if kind is ast.UnaryOp:
        if type(node.op) is not ast.USub:
            return False
        core, reduced = _strip_reductions(node.operand, ctx)
        if is_log_of_probability(core, ctx):
            return reduced or type(log_op(core, ctx).input) is ast.Subscript
        return reduced and type(core) is ast.BinOp and any(is_log_of_probability(t, ctx) for t in _terms(core))
    if kind is ast.Call:
        op = ctx.op(node)
        if op is None or op.name not in _REDUCTIONS:
            return False
        parent = ctx.parent(node)
        if type(parent) is ast.UnaryOp or (type(parent) is ast.Call and _is_reduction(parent, ctx)):
            return False
        core, _ = _strip_reductions(node, ctx)
        if type(core) is not ast.BinOp:
            return False
        terms = _terms(core)
        negated = any(type(t) is ast.UnaryOp and type(t.op) is ast.USub for t in terms)
        return negated and any(is_log_of_probability(t, ctx) for t in terms)
    return False


def _is_reduction(call: ast.Call, ctx: Context) -> bool:
    op = ctx.op(call)
    return op is not None and op.name in _REDUCTIONS


def within_manual_cross_entropy(node: ast.AST, ctx: Context) -> bool:
    """Whether ``node`` is part of an expression that the manual cross-entropy rule reports."""
    ancestor = ctx.parent(node)
    while isinstance(ancestor, ast.expr):
        if type(ancestor) in (ast.UnaryOp, ast.Call) and is_manual_cross_entropy(ancestor, ctx):
            return True
        ancestor = ctx.parent(ancestor)
    return False


class LogProbabilityLoss(Rule):
    """A loss that expects log-probabilities, given softmax output.

    Subclasses set ``kind``, the loss operation. The fix, when the softmax
    is the loss's direct argument, calls ``log_softmax`` in its place.
    """

    kind: str

    def check(self, node: ast.Call, ctx: Context) -> None:
        loss = ctx.loss_call(node)
        if loss is None or loss[0] != self.kind or loss[1] is None or ctx.tag(loss[1]) != PROB:
            return
        fix = None
        softmax = direct_softmax(loss[1], ctx)
        if softmax is not None:
            content = softmax_to_log_softmax(softmax, ctx)
            if content is not None:
                fix = ctx.fix("unsafe", "Use `log_softmax`", loss[1], content)
        ctx.report(self, loss[1], fix)
