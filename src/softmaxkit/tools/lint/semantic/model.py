"""Data flow within one file: what kind of values each expression holds.

A value kind ("tag") says, for example, that an expression holds softmax
probabilities or the exponential of unshifted logits. Tags follow local
variables in statement order, module-level names, ``self.attr`` assignments
made in any method of a class (``register_buffer`` included), ``nn.Sequential``
containers, reshapes, indexing and concatenation, the return values of
functions and ``forward`` methods defined in the same file (tuples
included), and the parameters of those functions: a parameter holds the
join of what the file's calls pass it (``model(x)`` binds the parameter of
``forward``). A parameter of unknown origin on which the body calls a
method that only one class of the file defines is an instance of that
class. A module-level function that only applies a known operation to its
first parameter (``def log(x): return torch.log(x + 1e-8)``) counts as that
operation where it is called.

Branches are merged where they meet (after ``if``/``else``, loops, ``try``
and ``match``): a name keeps its kind after the join only when every branch
that reaches the join agrees on it; a branch that returns, raises, breaks or
continues does not reach it, and neither does one in which the name is
unbound. Agreement keeps the analysis precise: a value that is
probabilities on one path and logits on another is not reported. Scores
masked with ``-inf`` are the one exception: a fully masked row is a hazard
on the path that masks it, so ``if mask is not None: s = s.masked_fill(...)``
leaves ``s`` masked (see :func:`.scopes.join`). Where the branches test a
mode (``if self.mode == "mean":``) and disagree, the value is mode-dependent
(:class:`.tags.Modal`): it has the kind of a branch where code tests the
same name against the same constant (``if cfg.mode == "mean":``), and no
kind elsewhere.

The analysis is flow-insensitive inside a statement. The checker walks the
statements and binds names here, repeating its passes over the file until
the functions' facts settle (a bounded number of times); rules ask questions.
"""

from __future__ import annotations

import ast

from softmaxkit.tools.lint.semantic.names import CLASSES, FUNCTIONS, LOSSES, PASSTHROUGH_METHODS, Imports
from softmaxkit.tools.lint.semantic.ops import Op, is_one, keyword, resolve
from softmaxkit.tools.lint.semantic.scopes import ClassInfo, FuncInfo, Instance, Scope, called, join
from softmaxkit.tools.lint.semantic.tags import (
    EXP,
    EXP_SHIFTED,
    EXTENDED,
    INDEXABLE,
    INTEGER,
    LOGPROB,
    MASKED,
    MASKED_PARTIAL,
    MAX,
    OFFSETS,
    POSITIONS,
    PROB,
    RECIP_SUM_EXP,
    RECIP_SUM_EXP_SHIFTED,
    ROW_PRESERVING,
    SHIFTED,
    SIGMOID,
    STRUCTURAL,
    SUM_EXP,
    SUM_EXP_SHIFTED,
    TOPK,
    TOPK_MASK,
    VECTOR,
    MATRIX,
    CUMULATIVE_PROB,
    Bounded,
    Calls,
    Items,
    Loss,
    Modal,
)

_INF_NAMES = frozenset(
    {"math.inf", "numpy.inf", "numpy.Inf", "numpy.infty", "numpy.Infinity", "torch.inf", "jax.numpy.inf"}
)
_SELF_RETURNING = frozenset({"eval", "train", "to", "cuda", "cpu", "float", "double", "half", "requires_grad_"})
# Expressions whose tag depends on one of their operands'.
_LINKS = (ast.BinOp, ast.Call, ast.Attribute, ast.Subscript, ast.NamedExpr, ast.UnaryOp, ast.IfExp)
# Methods whose result is an integer, or a tensor of integers.
_INTEGER_METHODS = frozenset({"size", "numel", "dim", "long", "int", "__len__", "bit_length"})
_INTEGER_ATTRIBUTES = frozenset({"shape", "ndim", "size"})
# Arithmetic that keeps integers integers.
_INTEGER_OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod, ast.Pow)
# Methods of torch.nn.Module and of common objects: calling one says nothing about the class.
_COMMON_METHODS = frozenset(
    {
        "forward",
        "train",
        "eval",
        "to",
        "cuda",
        "cpu",
        "float",
        "half",
        "parameters",
        "named_parameters",
        "modules",
        "children",
        "state_dict",
        "load_state_dict",
        "zero_grad",
        "step",
        "reset",
        "reset_parameters",
        "init_weights",
        "extra_repr",
        "update",
        "get",
        "run",
        "close",
        "save",
        "load",
    }
)
_RECIPROCALS = {SUM_EXP: RECIP_SUM_EXP, SUM_EXP_SHIFTED: RECIP_SUM_EXP_SHIFTED}
_RECIPROCAL_OF = {recip: total for total, recip in _RECIPROCALS.items()}
# Array constructors whose argument may be a literal list of numbers.
_LITERAL_ARRAYS = frozenset({"torch.tensor", "torch.as_tensor", "numpy.array", "jax.numpy.array"})
# Literal inputs below these bounds cannot saturate a float32 sigmoid or overflow (or wholly underflow) exp.
_SIGMOID_SAFE = 15.0
_EXP_SAFE = 80.0
# Operations whose one-line wrappers (``def log(x): return torch.log(x + 1e-8)``) count as the operation.
_WRAPPABLE = frozenset(
    {"softmax", "log_softmax", "logsumexp", "sigmoid", "exp", "log", "cross_entropy", "nll_loss", "binary_cross_entropy", "kl_div"}
)
# Kinds that parameters carry from the calls of a function into its body.
_CARRIED = frozenset(
    {PROB, LOGPROB, SIGMOID, EXP, EXP_SHIFTED, SUM_EXP, SUM_EXP_SHIFTED, MASKED, MASKED_PARTIAL, STRUCTURAL, TOPK, TOPK_MASK}
)
# What a recursive call passes when it hands a parameter on unchanged.
_SAME = object()
# Kinds a tuple-returning call gives its first element: ``m, _ = x.max(dim)``.
_FIRST_OF_PAIR = frozenset({MAX, TOPK})


class SemanticModel:
    """The scopes of one file and the kinds of value its expressions hold.

    ``scope`` is the scope of the statement being checked. ``module_final``
    holds the module's names after a whole pass, so that a function body
    sees names assigned below its definition.
    """

    def __init__(self, tree: ast.Module, functions: dict[str, str] | None = None) -> None:
        self.imports = Imports(tree)
        self.functions = {**FUNCTIONS, **functions} if functions else FUNCTIONS
        self.wrappers = _wrappers(tree, self.imports, self.functions)
        self.scope = Scope(None)
        self.module_final: Scope | None = None
        self.infos: dict[ast.AST, FuncInfo | ClassInfo] = {}
        self.ops: dict[ast.Call, Op | None] = {}
        self.memo: dict[ast.AST, object] = {}
        # What each call of a function of the file passed, in the current pass.
        self.sites: dict[FuncInfo, list[dict[str, object]]] = {}
        # The function whose body is being walked, if any.
        self.function: FuncInfo | None = None
        # The modes tested by the enclosing ``if`` statements: ``if cfg.mode == "mean"`` gives {"mode": "mean"}.
        self.modes: dict[str, object] = {}
        # Methods that exactly one class of the file defines, and that class.
        self.unique_methods: dict[str, ClassInfo] = {}
        # The names of the methods and instance attributes of the file's classes:
        # ``x.name(...)`` can call a function of the file only with one of these.
        self.member_names: set[str] | None = None

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
            if type(tag) is Items and len(tag.tags) == len(target.elts):
                for element, item in zip(target.elts, tag.tags):
                    self.bind(element, item)
                return
            # ``m, _ = x.max(dim)`` and ``v, _ = torch.topk(x, k)``: the values come first.
            first = tag if tag in _FIRST_OF_PAIR else None
            for element in target.elts:
                self.bind(element, first)
                first = None
        elif kind is ast.Starred:
            self.bind(target.value, None)

    def assign(self, target: ast.expr, value: ast.expr) -> None:
        """Records the assignment ``target = value``."""
        kind = type(target)
        if (kind is ast.Tuple or kind is ast.List) and type(value) in (ast.Tuple, ast.List):
            if len(value.elts) == len(target.elts) and not any(type(e) is ast.Starred for e in target.elts):
                tags = [self.tag(element) for element in value.elts]
                for element, tag in zip(target.elts, tags):
                    self.bind(element, tag)
                return
        if kind is ast.Subscript:
            # ``logits[logits < v[:, [-1]]] = -float("inf")`` masks the array in place.
            if self.is_neg_inf(value) and type(target.value) in (ast.Name, ast.Attribute):
                index = target.slice
                if type(index) is ast.Tuple and any(type(e) is ast.Slice for e in index.elts):
                    # ``logits[:, suppressed] = -inf``, ``logits[k, a:b] = -inf``: the same
                    # columns of each row, never all of them.
                    tag = MASKED if self.tag(target.value) == MASKED else MASKED_PARTIAL
                else:
                    tag = self.masked(target.value, index)
                self.bind(target.value, tag)
            return
        self.bind(target, self.tag(value))

    def bind_loop(self, target: ast.expr, iterable: ast.expr) -> None:
        """Records the target of ``for target in iterable``: indices of ``range`` and ``enumerate`` are integers."""
        first = None
        if type(iterable) is ast.Call:
            qualname = self.imports.qualname(iterable.func)
            if qualname == "builtins.range":
                self.bind(target, INTEGER)
                return
            if qualname == "builtins.enumerate":
                first = INTEGER
        if first is not None and type(target) is ast.Tuple and target.elts:
            self.bind(target.elts[0], first)
            for element in target.elts[1:]:
                self.bind(element, None)
            return
        self.bind(target, None)

    def in_place(self, expr: ast.expr) -> None:
        """Records what an expression statement that modifies a name in place (``masked_fill_``) stored."""
        if type(expr) is not ast.Call:
            return
        op = self.op(expr)
        if op is not None and op.name == "masked_fill_" and type(op.input) is ast.Name:
            value = op.arg(1, "value")
            self.scope.vars[op.input.id] = self.masked(op.input, op.arg(0, "mask")) if self.is_neg_inf(value) else None
            return
        func = expr.func
        scope = self.scope
        if (
            type(func) is ast.Attribute
            and func.attr == "register_buffer"
            and scope.cls is not None
            and type(func.value) is ast.Name
            and func.value.id == scope.self_name
            and len(expr.args) >= 2
            and type(expr.args[0]) is ast.Constant
            and type(expr.args[0].value) is str
        ):
            scope.cls.attrs[expr.args[0].value] = self.tag(expr.args[1])

    def function_info(self, node: ast.FunctionDef | ast.AsyncFunctionDef, method: bool = False) -> FuncInfo:
        """The record of a function, kept from one pass to the next; a method's leaves out ``self``."""
        info = self.infos.get(node)
        if info is None:
            args = node.args
            params = tuple(arg.arg for arg in (*args.posonlyargs, *args.args))
            info = self.infos[node] = FuncInfo(params[1:] if method else params)
        return info

    def learn_classes(self) -> None:
        """Notes which methods exactly one class of the file defines (after a pass has seen them all)."""
        owners: dict[str, list[ClassInfo]] = {}
        members: set[str] = set()
        for info in self.infos.values():
            if type(info) is ClassInfo:
                members.update(info.functions)
                members.update(info.attrs)
                for name in info.functions:
                    if not name.startswith("__") and name not in _COMMON_METHODS:
                        owners.setdefault(name, []).append(info)
        self.unique_methods = {name: infos[0] for name, infos in owners.items() if len(infos) == 1}
        self.member_names = members

    def _duck_type(self, info: FuncInfo, param: str) -> Instance | None:
        """An instance of the one class of the file that defines a method the body calls on ``param``, if any.

        ``def run_epoch(model, ...)`` that calls ``model.inference(...)``, in a
        file where only ``CnnPredictor`` defines ``inference``, takes ``model``
        to be a ``CnnPredictor``.
        """
        unique = self.unique_methods
        owners = {id(unique[name]): unique[name] for name in info.method_calls.get(param, ()) if name in unique}
        if len(owners) != 1:
            return None
        return Instance(next(iter(owners.values())))

    def call_site(self, call: ast.Call) -> None:
        """Records what ``call`` passes to the parameters of a function of the file, if it calls one."""
        func = call.func
        if self.unique_methods and self.function is not None and type(func) is ast.Attribute and type(func.value) is ast.Name:
            self.function.method_calls.setdefault(func.value.id, set()).add(func.attr)
        info = self._callee(func)
        if info is None:
            return
        params = info.params
        passed: dict[str, object] = {}
        args = call.args
        if any(type(a) is ast.Starred for a in args) or any(k.arg is None for k in call.keywords):
            self.sites.setdefault(info, []).append(passed)
            return
        recursive = info is self.function
        for name, arg in zip(params, args):
            # A recursive call that passes a parameter on unchanged adds nothing to what it holds.
            passed[name] = _SAME if recursive and type(arg) is ast.Name and arg.id == name else self.tag(arg)
        for item in call.keywords:
            value = item.value
            passed[item.arg] = _SAME if recursive and type(value) is ast.Name and value.id == item.arg else self.tag(value)
        self.sites.setdefault(info, []).append(passed)

    def _callee(self, func: ast.expr) -> FuncInfo | None:
        kind = type(func)
        if kind is ast.Name:
            if func.id in self.wrappers:
                # Its calls are the operation it wraps, checked where they are made.
                return None
            target = self.scope.lookup(func.id)
        elif kind is ast.Attribute:
            members = self.member_names
            if members is not None and func.attr not in members:
                return None
            scope = self.scope
            value = func.value
            if scope.cls is not None and type(value) is ast.Name and value.id == scope.self_name:
                own = scope.cls.functions.get(func.attr)
                if own is not None:
                    return own
                target = scope.cls.attrs.get(func.attr)
            else:
                if type(value) is not ast.Name:
                    return None
                base = self.scope.lookup(value.id)
                if type(base) is not Instance:
                    return None
                return base.info.functions.get(func.attr)
        else:
            return None
        kind = type(target)
        if kind is FuncInfo:
            return target
        if kind is ClassInfo:
            return target.functions.get("__init__")
        if kind is Instance:
            functions = target.info.functions
            return functions.get("forward") or functions.get("__call__")
        return None

    def settle_calls(self) -> bool:
        """Gives each function's parameters the join of this pass's calls; whether any changed."""
        changed = False
        sites = self.sites
        for info in self.infos.values():
            if type(info) is not FuncInfo:
                continue
            calls = sites.get(info, ())
            tags = {}
            for name in info.params:
                tag = join([site.get(name) for site in calls if site.get(name) is not _SAME])
                if _carries(tag):
                    tags[name] = tag
            if tags != info.param_tags:
                info.param_tags = tags
                changed = True
            if self.unique_methods:
                duck = {}
                for name in info.params:
                    if name not in tags:
                        instance = self._duck_type(info, name)
                        if instance is not None:
                            duck[name] = instance
                if duck != info.duck:
                    info.duck = duck
                    changed = True
        self.sites = {}
        return changed

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

    def resolve(self, tag: object) -> object:
        """The kind of a mode-dependent value under the modes the enclosing ``if`` statements test."""
        if type(tag) is not Modal or not self.modes:
            return tag
        modes = self.modes
        tested = False
        for (name, constant), kind in tag.cases.items():
            if name in modes:
                if modes[name] == constant:
                    return kind
                tested = True
        return tag.default if tested else tag

    def _tag(self, expr: ast.expr) -> object:
        kind = type(expr)
        if kind is ast.Name:
            tag = self.scope.lookup(expr.id)
            return self.resolve(tag) if type(tag) is Modal else tag
        if kind is ast.Call:
            tag = self._call_tag(expr)
            return self.resolve(tag) if type(tag) is Modal else tag
        if kind is ast.Attribute:
            scope = self.scope
            value = expr.value
            if scope.cls is not None and type(value) is ast.Name and value.id == scope.self_name:
                return scope.cls.attrs.get(expr.attr)
            attr = expr.attr
            if attr in _INTEGER_ATTRIBUTES:
                return INTEGER
            base = self.tag(value)
            if attr in ("values", "data", "T", "mT"):
                return base if type(base) is str else None
            if type(base) is Instance:
                return base.info.attrs.get(attr)
            return None
        if kind is ast.Subscript:
            base = self.tag(expr.value)
            if type(base) is Items:
                index = expr.slice
                if type(index) is ast.Constant and type(index.value) is int and -len(base.tags) <= index.value < len(base.tags):
                    return base.tags[index.value]
                return None
            return base if base in INDEXABLE else None
        if kind is ast.Tuple:
            tags = tuple(self.tag(element) for element in expr.elts)
            return Items(tags) if any(tag is not None for tag in tags) else None
        if kind is ast.IfExp:
            return join([self.tag(expr.body), self.tag(expr.orelse)])
        if kind is ast.BinOp:
            return self.binop_tag(expr.left, expr.op, expr.right)
        if kind is ast.Compare:
            return self._compare_tag(expr)
        if kind is ast.UnaryOp:
            operand = self.tag(expr.operand)
            if type(expr.op) in (ast.Not, ast.Invert):
                return operand if operand in ROW_PRESERVING else None
            return operand if operand == INTEGER else None
        if kind is ast.NamedExpr:
            return self.tag(expr.value)
        if kind is ast.Constant:
            return INTEGER if type(expr.value) is int else None
        return None

    def _compare_tag(self, expr: ast.Compare) -> object:
        """Masks: ``bias[:, :, :T, :T] == 0`` is causal, ``logits < v[:, [-1]]`` top-k, ``j > i`` positional.

        Thresholds relative to the row maximum (``(m - s) / f > eps``) and to
        the cumulative probability (top-p, ``cumsum(softmax(s)) > p``) keep
        the row's largest entry, like top-k masks.
        """
        operands = [expr.left, *expr.comparators]
        tags = [self.tag(operand) for operand in operands]
        if STRUCTURAL in tags:
            return STRUCTURAL
        if TOPK in tags or TOPK_MASK in tags or CUMULATIVE_PROB in tags:
            return TOPK_MASK
        if tags.count(POSITIONS) >= 2 or OFFSETS in tags:
            return STRUCTURAL
        if any(self._relative_to_max(operand) for operand in operands):
            return TOPK_MASK
        return None

    def _relative_to_max(self, expr: ast.expr) -> bool:
        """Whether the arithmetic of ``expr`` (not the arguments of its calls) involves a maximum."""
        pending = [expr]
        while pending:
            node = pending.pop()
            if type(node) is ast.BinOp:
                pending.append(node.left)
                pending.append(node.right)
            elif type(node) is ast.UnaryOp:
                pending.append(node.operand)
            elif self.tag(node) == MAX:
                return True
        return False

    def binop_tag(self, left: ast.expr, op: ast.operator, right: ast.expr) -> object:
        """The kind of ``left <op> right`` (also of an augmented assignment)."""
        kind = type(op)
        if kind is ast.Sub:
            if self.is_max_like(right):
                return SHIFTED
        lt = self.tag(left)
        rt = self.tag(right)
        if kind in _INTEGER_OPERATORS and lt == INTEGER and rt == INTEGER:
            return INTEGER
        if type(lt) is Bounded or type(rt) is Bounded:
            return _bounded(kind, _bound(left, lt), _bound(right, rt))
        if kind is ast.Sub and lt == POSITIONS and rt == POSITIONS:
            return OFFSETS
        if kind is ast.Sub or kind is ast.Add:
            for moving in (POSITIONS, OFFSETS):
                if moving in (lt, rt) and lt in (moving, INTEGER) and rt in (moving, INTEGER):
                    return moving
        if kind is ast.Sub:
            return lt if lt in (MASKED, MASKED_PARTIAL) else None
        if kind is ast.BitAnd or kind is ast.BitOr:
            return lt if lt == rt and lt in ROW_PRESERVING else None
        if kind is ast.Pow and _is_minus_one(right) and lt in _RECIPROCALS:
            return _RECIPROCALS[lt]
        if kind is ast.Div:
            if lt in (EXP, EXP_SHIFTED) and rt in (SUM_EXP, SUM_EXP_SHIFTED):
                return PROB
            if is_one(left) and rt in _RECIPROCALS:
                return _RECIPROCALS[rt]
            if lt in (MASKED, SHIFTED):
                # Dividing by a (positive) temperature keeps shifted logits at most 0.
                return lt
            if is_one(left) and type(right) is ast.BinOp and type(right.op) is ast.Add:
                if any(self._is_exp_call(side) for side in (right.left, right.right)):
                    return SIGMOID
            return None
        if kind is ast.Add:
            if MASKED in (lt, rt):
                return MASKED
            if MASKED_PARTIAL in (lt, rt):
                return MASKED_PARTIAL
            # An additive causal mask: ``qk + mask[:n, :n]`` with ``mask = full(-inf).triu_(1)``.
            if STRUCTURAL in (lt, rt):
                return MASKED_PARTIAL
            if lt in (SUM_EXP, SUM_EXP_SHIFTED) and rt in (SUM_EXP, SUM_EXP_SHIFTED):
                # A partition function summed in parts: ``exp(a).sum() + exp(b).sum()``.
                return SUM_EXP if SUM_EXP in (lt, rt) else SUM_EXP_SHIFTED
            if lt in (SUM_EXP, SUM_EXP_SHIFTED) and type(right) is ast.Constant:
                return lt
            if rt in (SUM_EXP, SUM_EXP_SHIFTED) and type(left) is ast.Constant:
                return rt
            return None
        if kind is ast.Mult:
            if MASKED in (lt, rt):
                return MASKED
            if MASKED_PARTIAL in (lt, rt):
                return MASKED_PARTIAL
            # ``e * e.sum() ** -1`` is ``e / e.sum()``.
            if lt in (EXP, EXP_SHIFTED) and self.reciprocal_tag(right) in (SUM_EXP, SUM_EXP_SHIFTED):
                return PROB
            if rt in (EXP, EXP_SHIFTED) and self.reciprocal_tag(left) in (SUM_EXP, SUM_EXP_SHIFTED):
                return PROB
            # Weighted exponentials, ``pi * exp(log_prob)``, overflow like the exponentials.
            if lt in (EXP, EXP_SHIFTED) and rt in (None, INTEGER):
                return lt
            if rt in (EXP, EXP_SHIFTED) and lt in (None, INTEGER):
                return rt
        return None

    def reciprocal_tag(self, expr: ast.expr) -> object:
        """The kind of ``y`` when ``expr`` holds ``y ** -1`` (or ``1 / y``) of a sum of exponentials, else None."""
        return _RECIPROCAL_OF.get(self.tag(expr))

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
        if type(func) is ast.Attribute:
            attr = func.attr
            if attr in PASSTHROUGH_METHODS:
                base = self.tag(func.value)
                if type(base) in (str, Instance, Bounded):
                    return base
                if base is None:
                    return _rank_of(attr, call)
            elif attr == "div" and call.args and self.tag(func.value) == SHIFTED:
                return SHIFTED
            elif attr in _INTEGER_METHODS or (attr == "astype" and call.args and names_integer_type(call.args[0])):
                return INTEGER
            elif attr == "astype" and call.args and _names_extended(call.args[0]):
                return EXTENDED
        result = called(self.tag(func))
        if result is not None:
            return result
        if type(func) is ast.Attribute:
            base = self.tag(func.value)
            if type(base) is Instance:
                if func.attr in _SELF_RETURNING:
                    return base
                return base.info.methods.get(func.attr)
            # ``D = D.to(device)`` keeps an ``nn.Sequential(..., nn.Sigmoid())`` what it was.
            if type(base) is Calls and func.attr in _SELF_RETURNING:
                return base
        return None

    def _construct(self, kind: str, call: ast.Call) -> object:
        if kind == "softmax":
            return Calls(PROB, call)
        if kind == "log_softmax":
            return Calls(LOGPROB, call)
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
            inner = self.tag(op.input)
            return None if type(inner) is Bounded and inner.bound < _SIGMOID_SAFE else SIGMOID
        if name == "exp":
            if op.input is None or op.library == "math":
                return None
            inner = self.tag(op.input)
            if (type(inner) is Bounded and inner.bound < _EXP_SAFE) or inner == EXTENDED:
                return None
            return EXP_SHIFTED if self.is_shifted(op.input) else EXP
        if name == "constant":
            if _names_extended(keyword(op.call, ("dtype",))):
                return EXTENDED
            if op.qualname in _LITERAL_ARRAYS and op.input is not None:
                bound = _literal_bound(op.input)
                return None if bound is None else Bounded(bound)
            return None
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
            if self.is_neg_inf(op.arg(1, "value")):
                return self.masked(op.input, op.arg(0, "mask"))
            # ``masked_fill(maxes, maxes.abs() == inf, 0)``: still a maximum to shift by.
            return MAX if self.tag(op.input) == MAX else None
        if name == "where":
            call = op.call
            condition = op.input if call.args else keyword(call, ("condition",))
            args = call.args
            x = args[1] if len(args) > 1 else keyword(call, ("input", "x"))
            y = args[2] if len(args) > 2 else keyword(call, ("other", "y"))
            if self.is_neg_inf(y):
                return self.masked(x, condition)
            if self.is_neg_inf(x):
                return self.masked(y, condition)
            return None
        if name == "apply_module":
            return called(self.tag(op.input))
        if name == "reshape":
            inner = self.tag(op.input)
            return inner if inner in INDEXABLE else None
        if name == "concat":
            parts = op.input
            if type(parts) in (ast.List, ast.Tuple) and parts.elts:
                inner = join([self.tag(part) for part in parts.elts])
                return inner if inner in INDEXABLE else None
            return None
        if name == "topk":
            return TOPK
        if name == "cumsum":
            return CUMULATIVE_PROB if self.tag(op.input) == PROB else None
        if name == "tril" or name == "triu":
            return STRUCTURAL
        if name == "arange":
            return POSITIONS
        if name == "vector":
            # ``torch.zeros(n)``: one size argument, so one axis.
            call = op.call
            if len(call.args) == 1 and type(call.args[0]) not in (ast.Tuple, ast.List, ast.Starred) and not any(
                k.arg in ("size", None) for k in call.keywords
            ):
                return VECTOR
            return None
        if name == "integer":
            return INTEGER
        return None

    def masked(self, scores: ast.expr | None, mask: ast.expr | None) -> str:
        """The kind of ``scores`` once the entries ``mask`` selects (or keeps) are set to ``-inf``.

        Causal, band and top-k masks leave every row an entry; any other
        mask, or one applied to scores already masked so, may empty a row.
        """
        if self.tag(scores) == MASKED or mask is None or self.tag(mask) not in ROW_PRESERVING:
            return MASKED
        return MASKED_PARTIAL

    def op(self, call: ast.Call) -> Op | None:
        """The known operation ``call`` performs, if any."""
        ops = self.ops
        if call in ops:
            return ops[call]
        result = resolve(call, self.imports, self.scope.self_name, self.functions)
        func = call.func
        if result is None and type(func) is ast.Name and func.id in self.wrappers:
            args = call.args
            if args and type(args[0]) is not ast.Starred:
                result = Op(self.wrappers[func.id], call, False, "", args[0], args[1:])
        ops[call] = result
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
            if self.functions.get(qualname) == "constant":
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


def _rank_of(method: str, call: ast.Call) -> str | None:
    """``MATRIX`` for ``x.view(n, -1)``, ``x.reshape(n, m)`` and ``x.flatten(1)``: arrays known to have two axes."""
    args = call.args
    if call.keywords or any(type(a) is ast.Starred for a in args):
        return None
    if method in ("view", "reshape") and len(args) == 2:
        return MATRIX
    if method == "flatten" and len(args) == 1 and type(args[0]) is ast.Constant and args[0].value == 1:
        return MATRIX
    return None


def _wrappers(tree: ast.Module, imports: Imports, functions: dict[str, str]) -> dict[str, str]:
    """Module-level functions that only apply a known operation to their first parameter.

    ``def log(x): return torch.log(x + 1e-8)`` maps ``"log"`` to ``"log"``:
    a call ``log(z)`` is then checked as the logarithm of ``z``, where it is
    made, rather than inside the function for all its callers at once.
    """
    wrappers = {}
    for node in tree.body:
        if type(node) is not ast.FunctionDef or not node.args.args:
            continue
        body = node.body
        if len(body) > 1 and type(body[0]) is ast.Expr and type(body[0].value) is ast.Constant:
            body = body[1:]
        if len(body) != 1 or type(body[0]) is not ast.Return or type(body[0].value) is not ast.Call:
            continue
        op = resolve(body[0].value, imports, None, functions)
        if op is None or op.name not in _WRAPPABLE:
            continue
        argument = op.input
        if type(argument) is ast.BinOp and type(argument.op) is ast.Add:
            # ``log(x + eps)``: the offset guards underflow, not overflow or NaN.
            if type(argument.right) is ast.Constant:
                argument = argument.left
            elif type(argument.left) is ast.Constant:
                argument = argument.right
        if type(argument) is ast.Name and argument.id == node.args.args[0].arg:
            wrappers[node.name] = op.name
    return wrappers


def _carries(tag: object, seen: set[int] | None = None) -> bool:
    """Whether a parameter is worth binding to ``tag``: a kind some rule acts on, not a size or a config object.

    Binding fewer parameters keeps the passes over a file few: each change
    to what a parameter holds repeats a pass. ``seen`` holds the classes
    already looked into: a method may return an instance of its own class.
    """
    kind = type(tag)
    if kind is str:
        return tag in _CARRIED
    if kind is Instance:
        info = tag.info
        seen = set() if seen is None else seen
        if id(info) in seen:
            return False
        seen.add(id(info))
        return any(_carries(t, seen) for t in (info.call_tag, *info.methods.values(), *info.attrs.values()))
    if kind is Items:
        return any(_carries(t, seen) for t in tag.tags)
    return kind is Calls or kind is Loss or kind is Modal or kind is FuncInfo or kind is ClassInfo


def _literal_bound(expr: ast.expr) -> float | None:
    """The largest magnitude in a literal (nested lists of numbers), or None when it is not one."""
    kind = type(expr)
    if kind is ast.Constant:
        value = expr.value
        return abs(value) if type(value) in (int, float) else None
    if kind is ast.UnaryOp and type(expr.op) in (ast.USub, ast.UAdd):
        return _literal_bound(expr.operand)
    if (kind is ast.List or kind is ast.Tuple) and expr.elts:
        bounds = [_literal_bound(element) for element in expr.elts]
        return None if None in bounds else max(bounds)
    return None


def _bound(expr: ast.expr, tag: object) -> float | None:
    if type(tag) is Bounded:
        return tag.bound
    if type(expr) is ast.Constant and type(expr.value) in (int, float):
        return abs(expr.value)
    return None


def _bounded(kind: type, left: float | None, right: float | None) -> Bounded | None:
    """The bound of ``left <op> right`` for bounded operands, when the operator keeps one."""
    if left is None or right is None:
        return None
    if kind is ast.Add or kind is ast.Sub:
        return Bounded(left + right)
    if kind is ast.Mult:
        return Bounded(left * right)
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
    if kind is ast.UnaryOp:
        return expr.operand
    if kind is ast.IfExp:
        return expr.orelse
    return None


def _type_name(expr: ast.expr | None) -> str | None:
    """The last part of a type's spelling: ``int``, ``np.int64`` and ``"int64"`` give ``int``, ``int64``, ``int64``."""
    kind = type(expr)
    if kind is ast.Name:
        return expr.id
    if kind is ast.Attribute:
        return expr.attr
    if kind is ast.Constant and type(expr.value) is str:
        return expr.value
    return None


def _names_extended(expr: ast.expr | None) -> bool:
    """Whether ``expr`` names an extended-precision type: ``np.float128``, ``np.longdouble``."""
    return type(expr) is not ast.Name and _type_name(expr) in ("float128", "longdouble", "longfloat")


def _is_minus_one(expr: ast.expr) -> bool:
    return type(expr) is ast.UnaryOp and type(expr.op) is ast.USub and is_one(expr.operand)


def names_integer_type(expr: ast.expr) -> bool:
    """Whether ``expr`` names an integer type: ``int``, ``np.int64``, ``"int32"``, ``torch.long``."""
    name = _type_name(expr)
    return name is not None and (name.startswith(("int", "uint")) or name in ("long", "short"))


def _float_literal(call: ast.Call) -> str | None:
    if len(call.args) == 1 and type(call.args[0]) is ast.Constant and type(call.args[0].value) is str:
        return call.args[0].value.strip().lower()
    return None
