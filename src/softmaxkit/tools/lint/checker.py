"""Walks one parsed file statement by statement and hands each node to the rules that asked for its type."""

from __future__ import annotations

import ast

from softmaxkit.tools.lint.rule import Finding, Fix, Rule
from softmaxkit.tools.lint.semantic.model import SemanticModel
from softmaxkit.tools.lint.semantic.ops import Op
from softmaxkit.tools.lint.semantic.scopes import ClassInfo, FuncInfo, Scope, join
from softmaxkit.tools.lint.semantic.tags import INTEGER, Modal
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
# Reporting passes over one file at most: a fact learned in one pass (what a
# function returns, what its callers pass) may change what the next pass
# learns; real code settles in one or two.
MAX_PASSES = 4
_ENDS_BLOCK = (ast.Return, ast.Raise, ast.Continue, ast.Break)
_UNBOUND = object()


class Checker:
    """Runs the rules over one parsed file; the :class:`~softmaxkit.tools.lint.rule.Context` they receive.

    The first pass learns what module-level names, functions and classes
    hold, so that code above a definition sees it. Reporting passes follow:
    each hands the nodes to the rules and records what every call of a
    function of the file passes to its parameters. When a pass changed what
    the file's functions, classes and module-level names hold (a parameter
    bound by a call, a return value that depends on it), its findings are
    dropped and the pass repeats, at most ``MAX_PASSES`` times.

    ``functions`` maps qualified names of the user's own wrappers to the
    operation each computes (``{"fairseq.utils.softmax": "softmax"}``), used
    like the library functions the linter knows.
    """

    def __init__(
        self, tree: ast.Module, source: str, rules: list[Rule], functions: dict[str, str] | None = None
    ) -> None:
        self.tree = tree
        self.semantic = SemanticModel(tree, functions)
        self.locator = Locator(source)
        self.imports = self.semantic.imports
        self.by_type: dict[type, list[Rule]] = {}
        for rule in rules:
            for node_type in rule.node_types:
                self.by_type.setdefault(node_type, []).append(rule)
        self.findings: list[Finding] = []
        self.file_states: dict[Rule, dict] = {}
        self.parents: dict[ast.AST, ast.AST] = {}
        self.reporting = False

    def run(self) -> list[Finding]:
        semantic = self.semantic
        self._module_pass()
        semantic.settle_calls()
        self.reporting = True
        for _ in range(MAX_PASSES):
            before = self._facts()
            semantic.module_final = Scope(None)
            semantic.module_final.vars = dict(semantic.scope.vars)
            self.findings = []
            self.file_states = {}
            semantic.learn_classes()
            self._module_pass()
            for rule, state in self.file_states.items():
                rule.end_file(self, state)
            calls_changed = semantic.settle_calls()
            if not calls_changed and self._facts() == before:
                break
        return self.findings

    def _facts(self) -> tuple:
        """What the passes learn about the file as a whole, to tell whether a pass changed it."""
        facts = []
        for info in self.semantic.infos.values():
            if type(info) is FuncInfo:
                facts.append(info.return_tag)
            else:
                facts.append((info.call_tag, dict(info.attrs), dict(info.methods)))
        return (dict(self.semantic.scope.vars), facts)

    # ---- the context rules query ------------------------------------------

    def tag(self, expr: ast.expr | None) -> object:
        return self.semantic.tag(expr)

    def op(self, call: ast.Call) -> Op | None:
        return self.semantic.op(call)

    def is_neg_inf(self, expr: ast.expr | None) -> bool:
        return self.semantic.is_neg_inf(expr)

    def reciprocal_tag(self, expr: ast.expr) -> object:
        return self.semantic.reciprocal_tag(expr)

    def loss_call(self, call: ast.Call) -> tuple[str, ast.expr | None] | None:
        return self.semantic.loss_call(call)

    def parent(self, node: ast.AST) -> ast.AST | None:
        return self.parents.get(node)

    def state(self, rule: Rule) -> dict:
        return self.semantic.scope.state.setdefault(rule, {})

    def file_state(self, rule: Rule) -> dict:
        state = self.file_states.get(rule)
        if state is None:
            state = self.file_states[rule] = {}
        return state

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
            for target in node.targets:
                semantic.assign(target, node.value)
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
            tag = None if node.value is None else semantic.tag(node.value)
            if len(semantic.modes) == 1 and tag is not None:
                # ``if self.mode == "mean": return torch.sigmoid(x)``: returned in that mode only.
                tag = Modal({next(iter(semantic.modes.items())): tag}, None)
            semantic.scope.returns.append(tag)
        elif kind is ast.FunctionDef or kind is ast.AsyncFunctionDef:
            self._header(node)
            semantic.scope.vars[node.name] = self._function(node, None, None, semantic.function_info(node))
        elif kind is ast.ClassDef:
            for expr in (*node.bases, *(k.value for k in node.keywords), *node.decorator_list):
                self._dispatch(expr, node)
            self._class(node)
        else:
            self._compound(node)

    def _compound(self, node: ast.stmt) -> None:
        """Branches, loops, ``with``, ``try`` and ``match``, merged where they meet; other statements' expressions."""
        kind = type(node)
        if kind is ast.If:
            self._dispatch(node.test, node)
            self._if(node)
        elif kind is ast.While:
            self._dispatch(node.test, node)
            # The body may run no time at all.
            self._branches([node.body, []])
            self._block(node.orelse)
        elif kind is ast.For or kind is ast.AsyncFor:
            self._dispatch(node.iter, node)
            self.semantic.bind_loop(node.target, node.iter)
            self._branches([node.body, []])
            self._block(node.orelse)
        elif kind is ast.With or kind is ast.AsyncWith:
            for item in node.items:
                self._dispatch(item.context_expr, node)
                if item.optional_vars is not None:
                    self.semantic.bind(item.optional_vars, None)
            self._block(node.body)
        elif kind is ast.Try or kind.__name__ == "TryStar":
            self._try(node)
        elif kind is ast.Match:
            self._dispatch(node.subject, node)
            for case in node.cases:
                if case.guard is not None:
                    self._dispatch(case.guard, case)
            exhaustive = any(type(c.pattern) is ast.MatchAs and c.pattern.pattern is None for c in node.cases)
            self._branches([case.body for case in node.cases] + ([] if exhaustive else [[]]))
        else:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.expr):
                    self._dispatch(child, node)

    def _branches(self, blocks: list[list[ast.stmt]]) -> None:
        """Runs each block from the same names and merges the names of those that reach their end."""
        scope = self.semantic.scope
        start = scope.vars
        ends = []
        for block in blocks:
            if not block:
                ends.append(start)
                continue
            scope.vars = dict(start)
            self._block(block)
            if not _ends(block):
                ends.append(scope.vars)
        scope.vars = _merge(ends) if ends else start

    def _if(self, node: ast.If) -> None:
        """An ``if``/``elif``/``else`` chain: each branch from the same names, merged where they meet.

        A branch under a test of a mode (``if cfg.mode == "mean":``) makes the
        names whose kinds differ between branches mode-dependent. The chain
        is walked as a list, however many ``elif`` it has.
        """
        semantic = self.semantic
        scope = semantic.scope
        start = scope.vars
        outer_modes = semantic.modes
        ends: list[tuple[tuple[str, object] | None, dict]] = []
        link = node
        while True:
            scope.vars = dict(start)
            if link is not node:
                self._dispatch(link.test, link)
            mode = _mode(link.test)
            if mode is not None:
                semantic.modes = {**outer_modes, mode[0]: mode[1]}
            self._block(link.body)
            semantic.modes = outer_modes
            if not _ends(link.body):
                ends.append((mode, scope.vars))
            orelse = link.orelse
            if len(orelse) == 1 and type(orelse[0]) is ast.If:
                link = orelse[0]
                continue
            if orelse:
                scope.vars = dict(start)
                self._block(orelse)
                if not _ends(orelse):
                    ends.append((None, scope.vars))
            else:
                ends.append((None, start))
            break
        if not ends:
            scope.vars = start
        elif all(mode is None for mode, _ in ends):
            scope.vars = _merge([names for _, names in ends])
        else:
            scope.vars = _merge_modes(ends)

    def _try(self, node: ast.Try) -> None:
        """The body, then each handler from any point of the body, then ``else``; ``finally`` after their join."""
        semantic = self.semantic
        scope = semantic.scope
        start = scope.vars
        scope.vars = dict(start)
        self._block(node.body)
        body_end = scope.vars
        handler_start = _merge([start, body_end])
        ends = []
        for handler in node.handlers:
            if handler.type is not None:
                self._dispatch(handler.type, handler)
            scope.vars = dict(handler_start)
            if handler.name:
                scope.vars[handler.name] = None
            self._block(handler.body)
            if not _ends(handler.body):
                ends.append(scope.vars)
        scope.vars = body_end
        self._block(node.orelse)
        if not _ends(node.body) and not _ends(node.orelse):
            ends.append(scope.vars)
        scope.vars = _merge(ends) if ends else body_end
        self._block(node.finalbody)

    def _header(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        args = node.args
        for expr in (*node.decorator_list, *args.defaults, *(d for d in args.kw_defaults if d is not None)):
            self._dispatch(expr, node)

    def _function(self, node, cls: ClassInfo | None, self_name: str | None, info: FuncInfo) -> FuncInfo:
        semantic = self.semantic
        outer = semantic.scope
        scope = semantic.function_scope(cls, self_name)
        args = node.args
        params = info.param_tags
        for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
            if arg is not None:
                name = arg.arg
                tag = params.get(name)
                if tag is None:
                    tag = info.duck.get(name) or _annotated(arg)
                scope.vars[name] = tag
        if self_name is not None:
            scope.vars[self_name] = None
        semantic.scope = scope
        outer_function, outer_modes = semantic.function, semantic.modes
        semantic.function, semantic.modes = info, {}
        self._block(node.body)
        self._end_scope(scope)
        semantic.scope = outer
        semantic.function, semantic.modes = outer_function, outer_modes
        info.return_tag = _join_returns(scope.returns)
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
        function = self.semantic.function_info(method, method=self_name is not None)
        info.functions[method.name] = function
        result = self._function(method, info, self_name, function).return_tag
        info.methods[method.name] = result
        if method.name in ("forward", "__call__"):
            info.call_tag = result

    def _end_scope(self, scope: Scope) -> None:
        if self.reporting:
            for rule, state in scope.state.items():
                rule.end_scope(self, state)

    def _dispatch(self, expr: ast.AST, parent: ast.AST) -> None:
        if not self.reporting:
            # The first pass walks no expressions, but records the calls that
            # make up whole statements (``train(model, loader)``), so that the
            # first reporting pass usually finds the parameters bound already.
            if type(expr) is ast.Call:
                self.semantic.call_site(expr)
            return
        by_type = self.by_type
        parents = self.parents
        call_site = self.semantic.call_site
        parents[expr] = parent
        stack = [expr]
        while stack:
            node = stack.pop()
            kind = type(node)
            if kind is ast.Call:
                call_site(node)
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


def _ends(block: list[ast.stmt]) -> bool:
    """Whether control never leaves ``block`` at its end (it returns, raises, breaks or continues)."""
    while block:
        last = block[-1]
        if type(last) in _ENDS_BLOCK:
            return True
        if type(last) is not ast.If or not _ends(last.body):
            return False
        # An ``elif`` chain nests in ``orelse``: follow it without recursing.
        block = last.orelse
    return False


def _merge_modes(ends: list[tuple[tuple[str, object] | None, dict[str, object]]]) -> dict[str, object]:
    """The names after an ``if`` chain with mode tests: a kind per mode where the branches disagree."""
    merged = {}
    for name in {name for _, names in ends for name in names}:
        reached = [(mode, names[name]) for mode, names in ends if name in names]
        tags = [tag for _, tag in reached]
        joined = join(tags)
        if joined is not None or all(tag is None for tag in tags):
            merged[name] = joined
            continue
        cases = {mode: tag for mode, tag in reached if mode is not None}
        default = join([tag for mode, tag in reached if mode is None])
        merged[name] = Modal(cases, default) if cases else None
    return merged


def _merge(ends: list[dict[str, object]]) -> dict[str, object]:
    """The names after branches meet: each keeps the join of its kinds in the branches where it is bound."""
    if len(ends) == 1:
        return ends[0]
    merged = dict(ends[0])
    for end in ends[1:]:
        for name, tag in end.items():
            held = merged.get(name, _UNBOUND)
            if held is _UNBOUND:
                merged[name] = tag
            elif held is not tag:
                merged[name] = join([held, tag])
    return merged


def _annotated(arg: ast.arg) -> str | None:
    """The kind a parameter's annotation promises: ``num_words: int`` is an integer."""
    annotation = arg.annotation
    return INTEGER if type(annotation) is ast.Name and annotation.id == "int" else None


def _mode(test: ast.expr) -> tuple[str, object] | None:
    """``("mode", "mean")`` for a test ``x.mode == "mean"`` (or ``mode == "mean"``), else None."""
    if type(test) is not ast.Compare or len(test.ops) != 1 or type(test.ops[0]) is not ast.Eq:
        return None
    subject, constant = test.left, test.comparators[0]
    if type(constant) is not ast.Constant or type(constant.value) not in (str, int):
        return None
    if type(subject) is ast.Attribute:
        return subject.attr, constant.value
    if type(subject) is ast.Name:
        return subject.id, constant.value
    return None


def _join_returns(returns: list[object]) -> object:
    """The kind a function returns: the join of its returns, mode-dependent where returns under mode tests differ."""
    joined = join([_unmoded(tag) for tag in returns])
    if joined is not None or not any(type(tag) is Modal for tag in returns):
        return joined
    cases = {}
    rest = []
    for tag in returns:
        if type(tag) is Modal and tag.default is None and len(tag.cases) == 1:
            cases.update(tag.cases)
        else:
            rest.append(tag)
    return Modal(cases, join(rest)) if cases else None


def _unmoded(tag: object) -> object:
    """A return made under a mode test, taken on every path (as if the test were unknown)."""
    if type(tag) is Modal and tag.default is None and len(tag.cases) == 1:
        return next(iter(tag.cases.values()))
    return tag


def _child_fields(kind: type) -> tuple[str, ...]:
    if issubclass(kind, _INERT) or kind is ast.Constant:
        return ()
    return tuple(field for field in kind._fields if field not in _INERT_FIELDS)
