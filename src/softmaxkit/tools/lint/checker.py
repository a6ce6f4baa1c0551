"""Walks one parsed file statement by statement and hands each node to the rules that asked for its type."""

from __future__ import annotations

import ast

from softmaxkit.tools.lint.rule import Finding, Fix, Rule
from softmaxkit.tools.lint.semantic.model import SemanticModel
from softmaxkit.tools.lint.semantic.ops import Op
from softmaxkit.tools.lint.semantic.scopes import ClassInfo, FuncInfo, Scope, join
from softmaxkit.tools.lint.source import Locator

# Per node type, the fields that may hold nodes worth visiting: contexts
# (Load, Store) and operators (Add, USub) carry nothing a rule looks at, and
# walking them would be most of the work.
_CHILD_FIELDS: dict[type, tuple[str, ...]] = {}
_INERT = (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)
# Fields that hold plain values (names, flags) or inert nodes.
_INERT_FIELDS = frozenset(
    {"ctx", "op", "ops", "id", "attr", "arg", "name", "names", "module", "level", "conversion", "is_async", "kind", "type_comment"}
)


class Checker:
    """Runs the rules over one parsed file; the :class:`~softmaxkit.tools.lint.rule.Context` they receive.

    The file is walked twice. The first pass learns what module-level names,
    functions and classes hold, so that code above a definition sees it; the
    second pass hands the nodes to the rules.
    """

    def __init__(self, tree: ast.Module, source: str, rules: list[Rule]) -> None:
        self.tree = tree
        self.semantic = SemanticModel(tree)
        self.locator = Locator(source)
        self.imports = self.semantic.imports
        self.by_type: dict[type, list[Rule]] = {}
        for rule in rules:
            for node_type in rule.node_types:
                self.by_type.setdefault(node_type, []).append(rule)
        self.findings: list[Finding] = []
        self.parents: dict[ast.AST, ast.AST] = {}
        self.reporting = False

    def run(self) -> list[Finding]:
        self._module_pass()
        self.semantic.module_final = Scope(None)
        self.semantic.module_final.vars = dict(self.semantic.scope.vars)
        self.reporting = True
        self._module_pass()
        return self.findings

    # ---- the context rules query ------------------------------------------

    def tag(self, expr: ast.expr | None) -> object:
        return self.semantic.tag(expr)

    def op(self, call: ast.Call) -> Op | None:
        return self.semantic.op(call)

    def is_neg_inf(self, expr: ast.expr | None) -> bool:
        return self.semantic.is_neg_inf(expr)

    def loss_call(self, call: ast.Call) -> tuple[str, ast.expr | None] | None:
        return self.semantic.loss_call(call)

    def parent(self, node: ast.AST) -> ast.AST | None:
        return self.parents.get(node)

    def state(self, rule: Rule) -> dict:
        return self.semantic.scope.state.setdefault(rule, {})

    def text(self, node: ast.AST) -> str:
        return self.locator.text(node)

    def splice(self, node: ast.AST, edits: list[tuple[ast.AST, str]]) -> str:
        return self.locator.splice(node, edits)

    def atom(self, node: ast.expr) -> str:
        return self.locator.atom(node)

    def fix(self, applicability: str, message: str, node: ast.AST, content: str) -> Fix:
        return self.locator.fix(applicability, message, node, content)

    def report(self, rule: Rule, node: ast.AST, fix: Fix | None = None) -> None:
        row, column, end_row, end_column = self.locator.position(node)
        self.findings.append(
            Finding(rule.code, rule.name, rule.message, rule.severity, row, column, end_row, end_column, fix)
        )

    # ---- statements -------------------------------------------------------

    def _module_pass(self) -> None:
        self.semantic.scope = Scope(None)
        self._block(self.tree.body)
        self._end_scope(self.semantic.scope)

    def _block(self, statements: list[ast.stmt]) -> None:
        for statement in statements:
            self._statement(statement)

    def _statement(self, node: ast.stmt) -> None:
        semantic = self.semantic
        semantic.start_statement()
        kind = type(node)
        if kind is ast.Assign:
            self._dispatch(node.value, node)
            for target in node.targets:
                self._dispatch(target, node)
            tag = semantic.tag(node.value)
            for target in node.targets:
                semantic.bind(target, tag)
        elif kind is ast.AnnAssign:
            if node.value is not None:
                self._dispatch(node.value, node)
                semantic.bind(node.target, semantic.tag(node.value))
        elif kind is ast.AugAssign:
            self._dispatch(node, node)
            semantic.bind(node.target, semantic.binop_tag(node.target, node.op, node.value))
        elif kind is ast.Expr:
            self._dispatch(node.value, node)
            semantic.in_place(node.value)
        elif kind is ast.Return:
            if node.value is not None:
                self._dispatch(node.value, node)
            semantic.scope.returns.append(None if node.value is None else semantic.tag(node.value))
        elif kind is ast.FunctionDef or kind is ast.AsyncFunctionDef:
            self._header(node)
            semantic.scope.vars[node.name] = self._function(node, None, None)
        elif kind is ast.ClassDef:
            for expr in (*node.bases, *(k.value for k in node.keywords), *node.decorator_list):
                self._dispatch(expr, node)
            self._class(node)
        else:
            self._compound(node)

    def _compound(self, node: ast.stmt) -> None:
        """Branches, loops, ``with``, ``try`` and ``match``, in source order; other statements' expressions."""
        kind = type(node)
        if kind is ast.If or kind is ast.While:
            self._dispatch(node.test, node)
            self._block(node.body)
            self._block(node.orelse)
        elif kind is ast.For or kind is ast.AsyncFor:
            self._dispatch(node.iter, node)
            self.semantic.bind(node.target, None)
            self._block(node.body)
            self._block(node.orelse)
        elif kind is ast.With or kind is ast.AsyncWith:
            for item in node.items:
                self._dispatch(item.context_expr, node)
                if item.optional_vars is not None:
                    self.semantic.bind(item.optional_vars, None)
            self._block(node.body)
        elif kind is ast.Try or kind.__name__ == "TryStar":
            self._block(node.body)
            for handler in node.handlers:
                if handler.type is not None:
                    self._dispatch(handler.type, handler)
                if handler.name:
                    self.semantic.scope.vars[handler.name] = None
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

    def _function(self, node, cls: ClassInfo | None, self_name: str | None) -> FuncInfo:
        semantic = self.semantic
        info = semantic.function_info(node)
        outer = semantic.scope
        scope = semantic.function_scope(cls, self_name)
        args = node.args
        for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
            if arg is not None:
                scope.vars[arg.arg] = None
        semantic.scope = scope
        self._block(node.body)
        self._end_scope(scope)
        semantic.scope = outer
        info.return_tag = join(scope.returns)
        return info

    def _class(self, node: ast.ClassDef) -> None:
        semantic = self.semantic
        info = semantic.class_info(node)
        for base in node.bases:
            base_info = semantic.tag(base)
            if isinstance(base_info, ClassInfo):
                for name, tag in base_info.attrs.items():
                    info.attrs.setdefault(name, tag)
                for name, tag in base_info.methods.items():
                    info.methods.setdefault(name, tag)
                if info.call_tag is None:
                    info.call_tag = base_info.call_tag
        outer = semantic.scope
        outer.vars[node.name] = info
        methods = [s for s in node.body if type(s) in (ast.FunctionDef, ast.AsyncFunctionDef)]
        body_scope = Scope(outer)
        semantic.scope = body_scope
        self._block([s for s in node.body if type(s) not in (ast.FunctionDef, ast.AsyncFunctionDef)])
        self._end_scope(body_scope)
        semantic.scope = outer
        for name, tag in body_scope.vars.items():
            info.attrs.setdefault(name, tag)
        # __init__ first: it sets the attributes that the other methods call.
        methods.sort(key=lambda m: m.name != "__init__")
        for method in methods:
            self._method(method, info)

    def _method(self, method: ast.FunctionDef | ast.AsyncFunctionDef, info: ClassInfo) -> None:
        self.semantic.start_statement()
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


def _child_fields(kind: type) -> tuple[str, ...]:
    if issubclass(kind, _INERT) or kind is ast.Constant:
        return ()
    return tuple(field for field in kind._fields if field not in _INERT_FIELDS)
