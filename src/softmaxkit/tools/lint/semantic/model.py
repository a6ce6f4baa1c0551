"""Data flow within one file: what kind of values each expression holds.

A value kind ("tag") says, for example, that an expression holds softmax
probabilities or the exponential of unshifted logits. Tags follow local
variables in statement order, module-level names, ``self.attr`` assignments
made in any method of a class, ``nn.Sequential`` containers, and the return
values of functions and ``forward`` methods defined in the same file.

The analysis is flow-insensitive inside a statement and takes branches in
source order, which is enough for the straight-line code that builds losses.
The checker walks the statements and binds names here; rules ask questions.
"""

from __future__ import annotations

import ast

from softmaxkit.tools.lint.semantic.names import CLASSES, FUNCTIONS, LOSSES, PASSTHROUGH_METHODS, Imports
from softmaxkit.tools.lint.semantic.ops import Op, is_one, keyword, resolve
from softmaxkit.tools.lint.semantic.scopes import ClassInfo, FuncInfo, Instance, Scope, called
from softmaxkit.tools.lint.semantic.tags import (
    EXP,
    EXP_SHIFTED,
    INDEXABLE,
    LOGPROB,
    MASKED,
    MAX,
    PROB,
    SHIFTED,
    SIGMOID,
    SUM_EXP,
    SUM_EXP_SHIFTED,
    Calls,
    Loss,
)

_INF_NAMES = frozenset(
    {"math.inf", "numpy.inf", "numpy.Inf", "numpy.infty", "numpy.Infinity", "torch.inf", "jax.numpy.inf"}
)
_SELF_RETURNING = frozenset({"eval", "train", "to", "cuda", "cpu", "float", "double", "half", "requires_grad_"})
# Expressions whose tag depends on one of their operands'.
_LINKS = (ast.BinOp, ast.Call, ast.Attribute, ast.Subscript, ast.NamedExpr)


class SemanticModel:
    """The scopes of one file and the kinds of value its expressions hold.

    ``scope`` is the scope of the statement being checked. ``module_final``
    holds the module's names after a whole pass, so that a function body
    sees names assigned below its definition.
    """

    def __init__(self, tree: ast.Module) -> None:
        self.imports = Imports(tree)
        self.scope = Scope(None)
        self.module_final: Scope | None = None
        self.infos: dict[ast.AST, FuncInfo | ClassInfo] = {}
        self.ops: dict[ast.Call, Op | None] = {}
        self.memo: dict[ast.AST, object] = {}

    # ---- binding (called by the checker) ------------------------------------

    def start_statement(self) -> None:
        """Forgets the tags of the previous statement, which a later one may rebind."""
        self.memo.clear()

    def bind(self, target: ast.expr, tag: object) -> None:
        """Records that assigning to ``target`` stored a value of kind ``tag``."""
        kind = type(target)
        if kind is ast.Name:
            self.scope.vars[target.id] = tag
        elif kind is ast.Attribute:
            scope = self.scope
            if scope.cls is not None and type(target.value) is ast.Name and target.value.id == scope.self_name:
                scope.cls.attrs[target.attr] = tag
        elif kind is ast.Tuple or kind is ast.List:
            for element in target.elts:
                self.bind(element, None)
        elif kind is ast.Starred:
            self.bind(target.value, None)

    def in_place(self, expr: ast.expr) -> None:
        """Records what an expression statement that modifies a name in place (``masked_fill_``) stored."""
        if type(expr) is not ast.Call:
            return
        op = self.op(expr)
        if op is not None and op.name == "masked_fill_" and type(op.input) is ast.Name:
            self.scope.vars[op.input.id] = MASKED if self.is_neg_inf(op.arg(1, "value")) else None

    def function_info(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> FuncInfo:
        """The record of a function, kept from one pass to the next."""
        info = self.infos.get(node)
        if info is None:
            info = self.infos[node] = FuncInfo()
        return info

    def class_info(self, node: ast.ClassDef) -> ClassInfo:
        """The record of a class, kept from one pass to the next."""
        info = self.infos.get(node)
        if info is None:
            info = self.infos[node] = ClassInfo()
        return info

    def function_scope(self, cls: ClassInfo | None, self_name: str | None) -> Scope:
        """A scope for a function body defined in the current scope; a method passes its class."""
        outer = self.scope
        parent = self.module_final if (self.module_final is not None and outer.parent is None) else outer
        if cls is None:
            cls, self_name = outer.cls, outer.self_name
        return Scope(parent, cls, self_name)

    # ---- expressions ------------------------------------------------------

    def tag(self, expr: ast.expr | None) -> object:
        """The kind of values ``expr`` holds, or None when unknown."""
        if expr is None:
            return None
        memo = self.memo
        if expr in memo:
            return memo[expr]
        # ``_tag`` recurses a few frames per link of a chain (each term of a
        # long sum, each call of a method chain): tagging the links from the
        # innermost out lets each one find the next already in the memo, so
        # the depth stays small however long the chain.
        chain = []
        link = _inner(expr)
        while link is not None and link not in memo:
            chain.append(link)
            link = _inner(link)
        for link in reversed(chain):
            memo[link] = self._tag(link)
        tag = memo[expr] = self._tag(expr)
        return tag

    def _tag(self, expr: ast.expr) -> object:
        kind = type(expr)
        if kind is ast.Name:
            return self.scope.lookup(expr.id)
        if kind is ast.Call:
            return self._call_tag(expr)
        if kind is ast.Attribute:
            scope = self.scope
            value = expr.value
            if scope.cls is not None and type(value) is ast.Name and value.id == scope.self_name:
                return scope.cls.attrs.get(expr.attr)
            base = self.tag(value)
            if expr.attr in ("values", "data"):
                return base if type(base) is str else None
            if type(base) is Instance:
                return base.info.attrs.get(expr.attr)
            return None
        if kind is ast.Subscript:
            base = self.tag(expr.value)
            return base if base in INDEXABLE else None
        if kind is ast.BinOp:
            return self.binop_tag(expr.left, expr.op, expr.right)
        if kind is ast.NamedExpr:
            return self.tag(expr.value)
        return None

    def binop_tag(self, left: ast.expr, op: ast.operator, right: ast.expr) -> object:
        """The kind of ``left <op> right`` (also of an augmented assignment)."""
        kind = type(op)
        if kind is ast.Sub:
            if self.is_max_like(right):
                return SHIFTED
            return MASKED if self.tag(left) == MASKED else None
        lt = self.tag(left)
        rt = self.tag(right)
        if kind is ast.Div:
            if lt in (EXP, EXP_SHIFTED) and rt in (SUM_EXP, SUM_EXP_SHIFTED):
                return PROB
            if lt == MASKED:
                return MASKED
            if is_one(left) and type(right) is ast.BinOp and type(right.op) is ast.Add:
                if any(self._is_exp_call(side) for side in (right.left, right.right)):
                    return SIGMOID
            return None
        if kind is ast.Add:
            if MASKED in (lt, rt):
                return MASKED
            if lt in (SUM_EXP, SUM_EXP_SHIFTED) and type(right) is ast.Constant:
                return lt
            return None
        if kind is ast.Mult and MASKED in (lt, rt):
            return MASKED
        return None

    def _is_exp_call(self, expr: ast.expr) -> bool:
        if type(expr) is not ast.Call:
            return False
        op = self.op(expr)
        return op is not None and op.name == "exp"

    def _call_tag(self, call: ast.Call) -> object:
        func = call.func
        scope = self.scope
        if scope.cls is not None:
            if type(func) is ast.Name and func.id == scope.self_name:
                return scope.cls.call_tag
            if type(func) is ast.Attribute and type(func.value) is ast.Name and func.value.id == scope.self_name:
                attr = scope.cls.attrs.get(func.attr)
                if attr is not None:
                    return called(attr)
                return scope.cls.methods.get(func.attr)
        op = self.op(call)
        if op is not None:
            return self._op_tag(op)
        qualname = self.imports.qualname(func)
        if qualname is not None:
            kind = CLASSES.get(qualname)
            return None if kind is None else self._construct(kind, call)
        if type(func) is ast.Attribute and func.attr in PASSTHROUGH_METHODS:
            base = self.tag(func.value)
            if type(base) is str or type(base) is Instance:
                return base
        result = called(self.tag(func))
        if result is not None:
            return result
        if type(func) is ast.Attribute:
            base = self.tag(func.value)
            if type(base) is Instance:
                if func.attr in _SELF_RETURNING:
                    return base
                return base.info.methods.get(func.attr)
        return None

    def _construct(self, kind: str, call: ast.Call) -> object:
        if kind == "softmax":
            return Calls(PROB)
        if kind == "log_softmax":
            return Calls(LOGPROB)
        if kind == "sigmoid":
            return Calls(SIGMOID)
        if kind == "sequential":
            if call.args:
                last = self.tag(call.args[-1])
                if type(last) is Calls:
                    return last
                if type(last) is Instance:
                    return Calls(last.info.call_tag)
            return None
        if kind in LOSSES:
            return Loss(kind)
        return None

    def _op_tag(self, op: Op) -> object:
        name = op.name
        if name == "softmax":
            return PROB
        if name == "log_softmax":
            return LOGPROB
        if name == "sigmoid":
            return SIGMOID
        if name == "exp":
            if op.input is None or op.library == "math":
                return None
            return EXP_SHIFTED if self.is_shifted(op.input) else EXP
        if name == "sum":
            inner = self.tag(op.input)
            if inner == EXP:
                return SUM_EXP
            if inner == EXP_SHIFTED:
                return SUM_EXP_SHIFTED
            return None
        if name in ("max", "logsumexp"):
            return MAX
        if name in ("masked_fill", "masked_fill_"):
            return MASKED if self.is_neg_inf(op.arg(1, "value")) else None
        if name == "where":
            if self.is_neg_inf(op.arg(0, "input", "x")) or self.is_neg_inf(op.arg(1, "other", "y")):
                return MASKED
        return None

    def op(self, call: ast.Call) -> Op | None:
        """The known operation ``call`` performs, if any."""
        ops = self.ops
        if call in ops:
            return ops[call]
        result = ops[call] = resolve(call, self.imports, self.scope.self_name)
        return result

    def is_shifted(self, expr: ast.expr) -> bool:
        """Whether ``expr`` is ``x - max(x)`` (or ``x - logsumexp(x)``)."""
        if self.tag(expr) == SHIFTED:
            return True
        return type(expr) is ast.BinOp and type(expr.op) is ast.Sub and self.is_max_like(expr.right)

    def is_max_like(self, expr: ast.expr) -> bool:
        """Whether ``expr`` contains a maximum or a logsumexp, called or held in a name."""
        for node in ast.walk(expr):
            kind = type(node)
            if kind is ast.Call:
                op = self.op(node)
                if op is not None and op.name in ("max", "logsumexp"):
                    return True
            elif kind is ast.Name and self.tag(node) == MAX:
                return True
        return False

    def is_neg_inf(self, expr: ast.expr | None) -> bool:
        """Whether ``expr`` is a spelling of -inf (or a constant tensor holding it)."""
        kind = type(expr)
        if kind is ast.UnaryOp:
            return type(expr.op) is ast.USub and self._is_inf(expr.operand)
        if kind is ast.Call:
            qualname = self.imports.qualname(expr.func)
            if qualname == "builtins.float":
                return _float_literal(expr) in ("-inf", "-infinity")
            if FUNCTIONS.get(qualname) == "constant":
                return any(self.is_neg_inf(arg) for arg in expr.args)
        if kind is ast.Attribute:
            return self.imports.qualname(expr) == "numpy.NINF"
        return False

    def _is_inf(self, expr: ast.expr) -> bool:
        kind = type(expr)
        if kind is ast.Call:
            return self.imports.qualname(expr.func) == "builtins.float" and _float_literal(expr) in ("inf", "infinity")
        if kind is ast.Attribute:
            return self.imports.qualname(expr) in _INF_NAMES
        return False

    def loss_call(self, call: ast.Call) -> tuple[str, ast.expr | None] | None:
        """``(kind, input)`` when ``call`` computes a torch loss, else None."""
        op = self.op(call)
        if op is not None:
            return (op.name, op.input) if op.name in LOSSES else None
        callee = self.tag(call.func)
        if type(callee) is Loss:
            args = call.args
            first = args[0] if args and type(args[0]) is not ast.Starred else keyword(call, ("input",))
            return callee.kind, first
        return None


def _inner(expr: ast.expr) -> ast.expr | None:
    """The operand that ``SemanticModel._tag`` follows first when it recurses, if any."""
    kind = type(expr)
    if kind is ast.BinOp:
        return expr.left if type(expr.left) in _LINKS else expr.right if type(expr.right) in _LINKS else None
    if kind is ast.Call:
        return expr.func
    if kind is ast.Attribute or kind is ast.Subscript or kind is ast.NamedExpr:
        return expr.value
    return None


def _float_literal(call: ast.Call) -> str | None:
    if len(call.args) == 1 and type(call.args[0]) is ast.Constant and type(call.args[0].value) is str:
        return call.args[0].value.strip().lower()
    return None
