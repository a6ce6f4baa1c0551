"""Data flow within one file: what kind of values each expression holds.

A value kind ("tag") says, for example, that an expression holds softmax
probabilities or the exponential of unshifted logits. Tags follow local
variables in statement order, module-level names, ``self.attr`` assignments
made in any method of a class, ``nn.Sequential`` containers, and the return
values of functions and ``forward`` methods defined in the same file.

The analysis is flow-insensitive inside a statement and takes branches in
source order, which is enough for the straight-line code that builds losses.
"""

from __future__ import annotations

import ast
import re
from typing import TYPE_CHECKING

from softmaxkit.tools.lint._names import (
    CLASSES,
    FUNCTIONS,
    LOSSES,
    METHODS,
    PASSTHROUGH_METHODS,
    Imports,
)
from softmaxkit.tools.lint._rule import Finding, Fix

if TYPE_CHECKING:
    from softmaxkit.tools.lint._rule import Rule

PROB = "prob"
LOGPROB = "logprob"
SIGMOID = "sigmoid"
EXP = "exp"
EXP_SHIFTED = "exp_shifted"
SUM_EXP = "sum_exp"
SUM_EXP_SHIFTED = "sum_exp_shifted"
SHIFTED = "shifted"
MAX = "max"
MASKED = "masked"

# Indexing a tensor keeps the kind of its values.
_INDEXABLE = frozenset({PROB, LOGPROB, SIGMOID, EXP, EXP_SHIFTED, SUM_EXP, SUM_EXP_SHIFTED, MAX, MASKED})
_INF_NAMES = frozenset(
    {"math.inf", "numpy.inf", "numpy.Inf", "numpy.infty", "numpy.Infinity", "torch.inf", "jax.numpy.inf"}
)
_SELF_RETURNING = frozenset({"eval", "train", "to", "cuda", "cpu", "float", "double", "half", "requires_grad_"})
_NEWLINE = re.compile(r"\r\n|\r|\n")


class Calls:
    """A callable object whose calls return values of kind ``result``."""

    __slots__ = ("result",)

    def __init__(self, result: object) -> None:
        self.result = result


class Loss:
    """An instance of a torch loss class."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind


class FuncInfo:
    __slots__ = ("return_tag",)

    def __init__(self) -> None:
        self.return_tag: object = None


class ClassInfo:
    __slots__ = ("attrs", "methods", "call_tag")

    def __init__(self) -> None:
        self.attrs: dict[str, object] = {}
        self.methods: dict[str, object] = {}
        self.call_tag: object = None


class Instance:
    __slots__ = ("info",)

    def __init__(self, info: ClassInfo) -> None:
        self.info = info


class Scope:
    __slots__ = ("vars", "parent", "cls", "self_name", "returns", "state")

    def __init__(self, parent: Scope | None, cls: ClassInfo | None = None, self_name: str | None = None) -> None:
        self.vars: dict[str, object] = {}
        self.parent = parent
        self.cls = cls
        self.self_name = self_name
        self.returns: list[object] = []
        self.state: dict[Rule, dict] = {}

    def lookup(self, name: str) -> object:
        scope = self
        while scope is not None:
            if name in scope.vars:
                return scope.vars[name]
            scope = scope.parent
        return None


class Op:
    """A call to a known operation, in function or method spelling.

    ``input`` is the array operated on: the first argument of a function, the
    receiver of a method. ``rest`` holds the remaining positional arguments.
    """

    __slots__ = ("name", "call", "method", "qualname", "input", "rest")

    def __init__(self, name, call, method, qualname, input, rest) -> None:
        self.name = name
        self.call = call
        self.method = method
        self.qualname = qualname
        self.input = input
        self.rest = rest

    def arg(self, index: int, *keywords: str) -> ast.expr | None:
        if index < len(self.rest) and type(self.rest[index]) is not ast.Starred:
            return self.rest[index]
        return _keyword(self.call, keywords)

    @property
    def library(self) -> str | None:
        """The library called: "numpy", "torch", "jax.numpy", "scipy", "math"; methods are torch."""
        if self.method:
            return "torch"
        root, _, rest = self.qualname.partition(".")
        if root == "jax" and rest.startswith("numpy."):
            return "jax.numpy"
        return root


def _keyword(call: ast.Call, names: tuple[str, ...]) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg in names:
            return keyword.value
    return None


# Expressions whose tag depends on one of their operands'.
_LINKS = (ast.BinOp, ast.Call, ast.Attribute, ast.Subscript, ast.NamedExpr)


def _inner(expr: ast.expr) -> ast.expr | None:
    """The operand that ``Analysis._tag`` follows first when it recurses, if any."""
    kind = type(expr)
    if kind is ast.BinOp:
        return expr.left if type(expr.left) in _LINKS else expr.right if type(expr.right) in _LINKS else None
    if kind is ast.Call:
        return expr.func
    if kind is ast.Attribute or kind is ast.Subscript or kind is ast.NamedExpr:
        return expr.value
    return None


def _join(tags: list[object]) -> object:
    # A function has a kind only when every return agrees: a forward that
    # returns logits in training and probabilities otherwise is fine.
    if not tags:
        return None
    first = tags[0]
    if first is None or any(tag is not first for tag in tags):
        return None
    return first


def is_one(expr: ast.expr) -> bool:
    return type(expr) is ast.Constant and type(expr.value) in (int, float) and expr.value == 1


class Analysis:
    """Runs the rules over one parsed file; also the context rules query."""

    def __init__(self, tree: ast.Module, source: str, rules: list[Rule]) -> None:
        self.tree = tree
        self.source = source
        self.lines = _NEWLINE.split(source)
        self.imports = Imports(tree)
        self.by_type: dict[type, list[Rule]] = {}
        for rule in rules:
            for node_type in rule.node_types:
                self.by_type.setdefault(node_type, []).append(rule)
        self.findings: list[Finding] = []
        self.parents: dict[ast.AST, ast.AST] = {}
        self.infos: dict[ast.AST, object] = {}
        self.ops: dict[ast.Call, Op | None] = {}
        self.memo: dict[ast.AST, object] = {}
        self.reporting = False
        self.scope = Scope(None)
        self.module_final = Scope(None)
        self._line_starts: list[int] | None = None

    def run(self) -> list[Finding]:
        # The first pass learns what module-level names, functions and classes
        # hold, so that code above a definition sees it; the second reports.
        self._module_pass()
        self.module_final.vars = dict(self.scope.vars)
        self.reporting = True
        self._module_pass()
        return self.findings

    def _module_pass(self) -> None:
        self.scope = Scope(None)
        self._block(self.tree.body)
        self._end_scope(self.scope)

    # ---- statements -------------------------------------------------------

    def _block(self, statements: list[ast.stmt]) -> None:
        for statement in statements:
            self._statement(statement)

    def _statement(self, node: ast.stmt) -> None:
        self.memo.clear()
        kind = type(node)
        if kind is ast.Assign:
            self._dispatch(node.value, node)
            for target in node.targets:
                self._dispatch(target, node)
            tag = self.tag(node.value)
            for target in node.targets:
                self._bind(target, tag)
        elif kind is ast.AnnAssign:
            if node.value is not None:
                self._dispatch(node.value, node)
                self._bind(node.target, self.tag(node.value))
        elif kind is ast.AugAssign:
            self._dispatch(node, node)
            tag = self.binop_tag(node.target, node.op, node.value)
            self._bind(node.target, tag)
        elif kind is ast.Expr:
            self._dispatch(node.value, node)
            self._in_place(node.value)
        elif kind is ast.Return:
            if node.value is not None:
                self._dispatch(node.value, node)
            self.scope.returns.append(None if node.value is None else self.tag(node.value))
        elif kind is ast.FunctionDef or kind is ast.AsyncFunctionDef:
            self._header(node)
            info = self._function(node, None, None)
            self.scope.vars[node.name] = info
        elif kind is ast.ClassDef:
            for expr in (*node.bases, *(k.value for k in node.keywords), *node.decorator_list):
                self._dispatch(expr, node)
            self._class(node)
        elif kind is ast.If or kind is ast.While:
            self._dispatch(node.test, node)
            self._block(node.body)
            self._block(node.orelse)
        elif kind is ast.For or kind is ast.AsyncFor:
            self._dispatch(node.iter, node)
            self._bind(node.target, None)
            self._block(node.body)
            self._block(node.orelse)
        elif kind is ast.With or kind is ast.AsyncWith:
            for item in node.items:
                self._dispatch(item.context_expr, node)
                if item.optional_vars is not None:
                    self._bind(item.optional_vars, None)
            self._block(node.body)
        elif kind is ast.Try or kind.__name__ == "TryStar":
            self._block(node.body)
            for handler in node.handlers:
                if handler.type is not None:
                    self._dispatch(handler.type, handler)
                if handler.name:
                    self.scope.vars[handler.name] = None
                self._block(handler.body)
            self._block(node.orelse)
            self._block(node.finalbody)
        elif kind is ast.Match:
            self._dispatch(node.subject, node)
            for case in node.cases:
                if case.guard is not None:
                    self._dispatch(case.guard, case)
                self._block(case.body)
        else:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.expr):
                    self._dispatch(child, node)

    def _header(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        args = node.args
        for expr in (*node.decorator_list, *args.defaults, *(d for d in args.kw_defaults if d is not None)):
            self._dispatch(expr, node)

    def _bind(self, target: ast.expr, tag: object) -> None:
        kind = type(target)
        if kind is ast.Name:
            self.scope.vars[target.id] = tag
        elif kind is ast.Attribute:
            scope = self.scope
            if scope.cls is not None and type(target.value) is ast.Name and target.value.id == scope.self_name:
                scope.cls.attrs[target.attr] = tag
        elif kind is ast.Tuple or kind is ast.List:
            for element in target.elts:
                self._bind(element, None)
        elif kind is ast.Starred:
            self._bind(target.value, None)

    def _in_place(self, expr: ast.expr) -> None:
        if type(expr) is not ast.Call:
            return
        op = self.op(expr)
        if op is not None and op.name == "masked_fill_" and type(op.input) is ast.Name:
            self.scope.vars[op.input.id] = MASKED if self.is_neg_inf(op.arg(1, "value")) else None

    def _function(self, node, cls: ClassInfo | None, self_name: str | None) -> FuncInfo:
        info = self.infos.get(node)
        if info is None:
            info = self.infos[node] = FuncInfo()
        outer = self.scope
        parent = self.module_final if (self.reporting and outer.parent is None) else outer
        if cls is None:
            cls, self_name = outer.cls, outer.self_name
        scope = Scope(parent, cls, self_name)
        args = node.args
        for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
            if arg is not None:
                scope.vars[arg.arg] = None
        self.scope = scope
        self._block(node.body)
        self._end_scope(scope)
        self.scope = outer
        info.return_tag = _join(scope.returns)
        return info

    def _class(self, node: ast.ClassDef) -> None:
        info = self.infos.get(node)
        if info is None:
            info = self.infos[node] = ClassInfo()
        for base in node.bases:
            base_info = self.tag(base)
            if isinstance(base_info, ClassInfo):
                for name, tag in base_info.attrs.items():
                    info.attrs.setdefault(name, tag)
                for name, tag in base_info.methods.items():
                    info.methods.setdefault(name, tag)
                if info.call_tag is None:
                    info.call_tag = base_info.call_tag
        outer = self.scope
        outer.vars[node.name] = info
        methods = [s for s in node.body if type(s) in (ast.FunctionDef, ast.AsyncFunctionDef)]
        body_scope = Scope(outer)
        self.scope = body_scope
        self._block([s for s in node.body if type(s) not in (ast.FunctionDef, ast.AsyncFunctionDef)])
        self._end_scope(body_scope)
        self.scope = outer
        for name, tag in body_scope.vars.items():
            info.attrs.setdefault(name, tag)
        # __init__ first: it sets the attributes that the other methods call.
        methods.sort(key=lambda m: m.name != "__init__")
        for method in methods:
            self.memo.clear()
            self._header(method)
            self_name = None
            static = any(type(d) is ast.Name and d.id == "staticmethod" for d in method.decorator_list)
            positional = [*method.args.posonlyargs, *method.args.args]
            if positional and not static:
                self_name = positional[0].arg
            result = self._function(method, info, self_name).return_tag
            info.methods[method.name] = result
            if method.name in ("forward", "__call__"):
                info.call_tag = result

    def _end_scope(self, scope: Scope) -> None:
        if self.reporting:
            for rule, state in scope.state.items():
                rule.end_scope(self, state)

    def _dispatch(self, expr: ast.AST, parent: ast.AST) -> None:
        if not self.reporting:
            return
        by_type = self.by_type
        parents = self.parents
        parents[expr] = parent
        stack = [expr]
        while stack:
            node = stack.pop()
            kind = type(node)
            rules = by_type.get(kind)
            if rules:
                for rule in rules:
                    rule.check(node, self)
            fields = _CHILD_FIELDS.get(kind)
            if fields is None:
                fields = _CHILD_FIELDS[kind] = _child_fields(kind)
            for field in fields:
                value = getattr(node, field)
                if type(value) is list:
                    for child in value:
                        if child is not None:
                            parents[child] = node
                            stack.append(child)
                elif value is not None:
                    parents[value] = node
                    stack.append(value)

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
            return base if base in _INDEXABLE else None
        if kind is ast.BinOp:
            return self.binop_tag(expr.left, expr.op, expr.right)
        if kind is ast.NamedExpr:
            return self.tag(expr.value)
        return None

    def binop_tag(self, left: ast.expr, op: ast.operator, right: ast.expr) -> object:
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
                    return _called(attr)
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
        called = _called(self.tag(func))
        if called is not None:
            return called
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
        result = ops[call] = self._op(call)
        return result

    def _op(self, call: ast.Call) -> Op | None:
        func = call.func
        qualname = self.imports.qualname(func)
        if qualname is not None:
            name = FUNCTIONS.get(qualname)
            if name is None:
                return None
            args = call.args
            if args and type(args[0]) is not ast.Starred:
                return Op(name, call, False, qualname, args[0], args[1:])
            return Op(name, call, False, qualname, _keyword(call, ("input", "x", "a")), args)
        if type(func) is ast.Attribute:
            name = METHODS.get(func.attr)
            if name is None:
                return None
            receiver = func.value
            # ``self.softmax(h)`` calls a submodule, not Tensor.softmax.
            if type(receiver) is ast.Name and receiver.id == self.scope.self_name:
                return None
            return Op(name, call, True, None, receiver, call.args)
        return None

    def is_shifted(self, expr: ast.expr) -> bool:
        """Whether ``expr`` is ``x - max(x)`` (or ``x - logsumexp(x)``)."""
        if self.tag(expr) == SHIFTED:
            return True
        return type(expr) is ast.BinOp and type(expr.op) is ast.Sub and self.is_max_like(expr.right)

    def is_max_like(self, expr: ast.expr) -> bool:
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
            first = args[0] if args and type(args[0]) is not ast.Starred else _keyword(call, ("input",))
            return callee.kind, first
        return None

    # ---- reporting and fixes ---------------------------------------------

    def parent(self, node: ast.AST) -> ast.AST | None:
        return self.parents.get(node)

    def state(self, rule: Rule) -> dict:
        """Per-scope storage for a rule that decides at the end of the scope."""
        return self.scope.state.setdefault(rule, {})

    def position(self, node: ast.AST) -> tuple[int, int, int, int]:
        """1-based row and column (in characters) of the start and end of ``node``."""
        return (
            node.lineno,
            self._column(node.lineno, node.col_offset) + 1,
            node.end_lineno,
            self._column(node.end_lineno, node.end_col_offset) + 1,
        )

    def _column(self, row: int, byte_offset: int) -> int:
        line = self.lines[row - 1]
        if line.isascii():
            return byte_offset
        return len(line.encode()[:byte_offset].decode("utf-8", "replace"))

    def report(self, rule: Rule, node: ast.AST, fix: Fix | None = None) -> None:
        row, column, end_row, end_column = self.position(node)
        self.findings.append(
            Finding(rule.code, rule.name, rule.message, rule.severity, row, column, end_row, end_column, fix)
        )

    def text(self, node: ast.AST) -> str:
        start, end = self._offsets(node)
        return self.source[start:end]

    def splice(self, node: ast.AST, edits: list[tuple[ast.AST, str]]) -> str:
        """The source of ``node`` with each sub-node in ``edits`` replaced."""
        start, end = self._offsets(node)
        pieces = []
        cursor = start
        for sub, replacement in sorted(edits, key=lambda edit: self._offsets(edit[0])):
            sub_start, sub_end = self._offsets(sub)
            pieces.append(self.source[cursor:sub_start])
            pieces.append(replacement)
            cursor = sub_end
        pieces.append(self.source[cursor:end])
        return "".join(pieces)

    def atom(self, node: ast.expr) -> str:
        """The source of ``node``, parenthesized unless it binds tightest."""
        text = self.text(node)
        if type(node) in (ast.Name, ast.Attribute, ast.Call, ast.Subscript, ast.Constant, ast.List, ast.Dict):
            return text
        return f"({text})"

    def fix(self, applicability: str, message: str, node: ast.AST, content: str) -> Fix:
        row, column, end_row, end_column = self.position(node)
        return Fix(applicability, message, (row, column), (end_row, end_column), content)

    def _offsets(self, node: ast.AST) -> tuple[int, int]:
        if self._line_starts is None:
            starts = [0]
            starts.extend(match.end() for match in _NEWLINE.finditer(self.source))
            self._line_starts = starts
        row, column, end_row, end_column = self.position(node)
        return self._line_starts[row - 1] + column - 1, self._line_starts[end_row - 1] + end_column - 1


# Per node type, the fields that may hold nodes worth visiting: contexts
# (Load, Store) and operators (Add, USub) carry nothing a rule looks at, and
# walking them would be most of the work.
_CHILD_FIELDS: dict[type, tuple[str, ...]] = {}
_INERT = (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)
# Fields that hold plain values (names, flags) or inert nodes.
_INERT_FIELDS = frozenset(
    {"ctx", "op", "ops", "id", "attr", "arg", "name", "names", "module", "level", "conversion", "is_async", "kind", "type_comment"}
)


def _child_fields(kind: type) -> tuple[str, ...]:
    if issubclass(kind, _INERT) or kind is ast.Constant:
        return ()
    return tuple(field for field in kind._fields if field not in _INERT_FIELDS)


def _called(tag: object) -> object:
    kind = type(tag)
    if kind is Calls:
        return tag.result
    if kind is ClassInfo:
        return Instance(tag)
    if kind is Instance:
        return tag.info.call_tag
    if kind is FuncInfo:
        return tag.return_tag
    return None


def _float_literal(call: ast.Call) -> str | None:
    if len(call.args) == 1 and type(call.args[0]) is ast.Constant and type(call.args[0].value) is str:
        return call.args[0].value.strip().lower()
    return None
