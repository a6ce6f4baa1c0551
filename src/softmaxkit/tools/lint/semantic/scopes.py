"""Scopes, and what the functions and classes defined in the file return."""

from __future__ import annotations

from typing import TYPE_CHECKING

from softmaxkit.tools.lint.semantic.tags import MASKED, MASKED_PARTIAL, Calls

if TYPE_CHECKING:
    from softmaxkit.tools.lint.rule import Rule


class FuncInfo:
    """A function of the file: the kind of value it returns and of what its callers pass.

    ``params`` names the parameters in the order positional arguments bind
    them (``self`` left out of a method's); ``param_tags`` holds, for each
    parameter, the join of what the file's calls pass it (None when a call
    passes something unknown, or nothing); ``duck`` the parameters of
    unknown origin on which the body calls a method that only one class of
    the file defines.
    """

    __slots__ = ("return_tag", "params", "param_tags", "method_calls", "duck")

    def __init__(self, params: tuple[str, ...] = ()) -> None:
        self.return_tag: object = None
        self.params = params
        self.param_tags: dict[str, object] = {}
        # The methods the body calls on each plain name (``model.inference(x)``),
        # and the parameters those calls show to be instances of a class of the file.
        self.method_calls: dict[str, set[str]] = {}
        self.duck: dict[str, Instance] = {}


class ClassInfo:
    """A class of the file: its attributes, its methods' results and what calling an instance gives."""

    __slots__ = ("attrs", "methods", "call_tag", "functions")

    def __init__(self) -> None:
        self.attrs: dict[str, object] = {}
        self.methods: dict[str, object] = {}
        self.call_tag: object = None
        # The methods' records by name, so that calls bind their parameters.
        self.functions: dict[str, FuncInfo] = {}


class Instance:
    """An instance of a class of the file."""

    __slots__ = ("info",)

    def __init__(self, info: ClassInfo) -> None:
        self.info = info

    def __eq__(self, other: object) -> bool:
        return type(other) is Instance and other.info is self.info

    def __hash__(self) -> int:
        return id(self.info)


class Scope:
    """The names bound in a module, class or function body, and what it returns.

    ``cls`` and ``self_name`` are set inside a method, so that ``self.attr``
    finds the class's attributes; ``state`` holds each rule's per-scope data.
    """

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


def called(tag: object) -> object:
    """The tag of what calling a value of kind ``tag`` returns."""
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


def join(tags: list[object]) -> object:
    """The kind of a value that may come from any of ``tags``: their common kind, or None.

    Used wherever paths meet: the ``return`` statements of a function, the
    calls of a function (for each parameter), the branches of an ``if``.
    A value has a kind only when every path agrees: a forward that returns
    logits in training and probabilities otherwise is fine. Masked scores are
    the exception: a row emptied on one path gives NaN on that path, so
    scores masked with ``-inf`` on any path stay masked after the join
    (``if mask is not None: s = s.masked_fill(...)``).
    """
    if not tags:
        return None
    if MASKED in tags:
        return MASKED
    if MASKED_PARTIAL in tags:
        return MASKED_PARTIAL
    first = tags[0]
    if first is None:
        return None
    for tag in tags:
        if tag is not first and tag != first:
            return None
    return first
