"""Calls to known operations, in function or method spelling."""

from __future__ import annotations

import ast

from softmaxkit.tools.lint.semantic.names import FUNCTIONS, METHODS, Imports


class Op:
    """A call to a known operation, in function or method spelling.

    ``input`` is the array operated on: the first argument of a function, the
    receiver of a method. ``rest`` holds the remaining positional arguments.
    ``qualname`` is empty for a function of the file that wraps the
    operation (see :attr:`wrapper`).
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
        return keyword(self.call, keywords)

    @property
    def wrapper(self) -> bool:
        """Whether the call is to a function of the file that wraps the operation; fixes leave those alone."""
        return self.qualname == ""

    @property
    def library(self) -> str | None:
        """The library called: "numpy", "torch", "jax.numpy", "scipy", "math"; methods are torch."""
        if self.method:
            return "torch"
        root, _, rest = self.qualname.partition(".")
        if root == "jax" and rest.startswith("numpy."):
            return "jax.numpy"
        return root


def resolve(
    call: ast.Call, imports: Imports, self_name: str | None, functions: dict[str, str] = FUNCTIONS
) -> Op | None:
    """The known operation ``call`` performs, if any.

    ``self_name`` names the method's instance; ``functions`` maps qualified
    names to operations (:data:`.names.FUNCTIONS` and the user's wrappers).
    """
    func = call.func
    qualname = imports.qualname(func)
    if qualname is not None:
        name = functions.get(qualname)
        if name is None:
            return None
        args = call.args
        if args and type(args[0]) is not ast.Starred:
            return Op(name, call, False, qualname, args[0], args[1:])
        return Op(name, call, False, qualname, keyword(call, ("input", "x", "a", "logits", "tensors", "arrays")), args)
    if type(func) is ast.Attribute:
        name = METHODS.get(func.attr)
        if name is None:
            return None
        receiver = func.value
        # ``self.softmax(h)`` calls a submodule, not Tensor.softmax.
        if type(receiver) is ast.Name and receiver.id == self_name:
            return None
        return Op(name, call, True, None, receiver, call.args)
    return None


def keyword(call: ast.Call, names: tuple[str, ...]) -> ast.expr | None:
    """The value of the first keyword argument of ``call`` named one of ``names``."""
    for item in call.keywords:
        if item.arg in names:
            return item.value
    return None


def is_one(expr: ast.expr) -> bool:
    """Whether ``expr`` is the literal 1 (or 1.0)."""
    return type(expr) is ast.Constant and type(expr.value) in (int, float) and expr.value == 1
