"""Scopes, and what the functions and classes defined in the file return."""

from __future__ import annotations

from typing import TYPE_CHECKING

from softmaxkit.tools.lint.semantic.tags import Calls

if TYPE_CHECKING:
    from softmaxkit.tools.lint.rule import Rule


class FuncInfo:
    """A function of the file: the kind of value it returns."""

    __slots__ = ("return_tag",)

    def __init__(self) -> None:
        self.return_tag: object = None


class ClassInfo:
    """A class of the file: its attributes, its methods' results and what calling an instance gives."""

    __slots__ = ("attrs", "methods", "call_tag")

    def __init__(self) -> None:
        self.attrs: dict[str, object] = {}
        self.methods: dict[str, object] = {}
        self.call_tag: object = None


class Instance:
    """An instance of a class of the file."""

    __slots__ = ("info",)

    def __init__(self, info: ClassInfo) -> None:
        self.info = info


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
    """The kind a function returns, given the kinds of its ``return`` statements."""
    # A function has a kind only when every return agrees: a forward that
    # returns logits in training and probabilities otherwise is fine.
    if not tags:
        return None
    first = tags[0]
    if first is None or any(tag is not first for tag in tags):
        return None
    return first
