"""The rule interface: what a rule is given (``Context``) and what it reports (``Finding``, ``Fix``)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from softmaxkit.tools.lint.semantic.names import Imports
    from softmaxkit.tools.lint.semantic.ops import Op


@dataclasses.dataclass(frozen=True)
class Fix:
    """A rewrite of one source range.

    Rows count from 1 and columns from 1, in characters; ``end`` is exclusive.
    """

    applicability: str
    message: str
    start: tuple[int, int]
    end: tuple[int, int]
    content: str


@dataclasses.dataclass
class Finding:
    """One problem found: where it is (rows and columns from 1, in characters) and its fix, if any."""

    code: str
    name: str
    message: str
    severity: str
    row: int
    column: int
    end_row: int
    end_column: int
    fix: Fix | None = None
    filename: str = ""
    cell: int | None = None
    line_text: str = ""

    def sort_key(self) -> tuple:
        return (self.filename, self.cell or 0, self.row, self.column, self.code)


class Context(Protocol):
    """What a rule may ask about the file being checked, and how it reports.

    The checker (:class:`softmaxkit.tools.lint.checker.Checker`) hands one to
    every ``Rule.check`` and ``Rule.end_scope`` call.
    """

    imports: Imports

    def tag(self, expr: ast.expr | None) -> object:
        """The kind of values ``expr`` holds (see :mod:`.semantic.tags`), or None when unknown."""

    def op(self, call: ast.Call) -> Op | None:
        """The known operation ``call`` performs, if any."""

    def is_neg_inf(self, expr: ast.expr | None) -> bool:
        """Whether ``expr`` is a spelling of -inf (or a constant tensor holding it)."""

    def reciprocal_tag(self, expr: ast.expr) -> object:
        """The kind of ``y`` when ``expr`` holds ``y ** -1`` (or ``1 / y``) of a sum of exponentials, else None."""

    def loss_call(self, call: ast.Call) -> tuple[str, ast.expr | None] | None:
        """``(kind, input)`` when ``call`` computes a torch loss, else None."""

    def parent(self, node: ast.AST) -> ast.AST | None:
        """The node that holds ``node``, within the statement being checked."""

    def state(self, rule: Rule) -> dict:
        """Per-scope storage for a rule that decides at the end of the scope."""

    def file_state(self, rule: Rule) -> dict:
        """Per-file storage for a rule that decides at the end of the file."""

    def text(self, node: ast.AST) -> str:
        """The source of ``node``."""

    def splice(self, node: ast.AST, edits: list[tuple[ast.AST, str]]) -> str:
        """The source of ``node`` with each sub-node in ``edits`` replaced."""

    def atom(self, node: ast.expr) -> str:
        """The source of ``node``, parenthesized unless it binds tightest."""

    def fix(self, applicability: str, message: str, node: ast.AST, content: str) -> Fix:
        """A fix that replaces the source of ``node`` with ``content``."""

    def report(self, rule: Rule, node: ast.AST, fix: Fix | None = None) -> None:
        """Records a finding of ``rule`` at ``node``."""


class Rule:
    """One check. The class docstring is the rule's explanation (``--explain``).

    Subclasses set ``code``, ``name``, ``message``, ``fix_safety`` ("safe",
    "unsafe" or "none": the best fix the rule can offer), ``severity``
    ("error": the code is wrong, or NaN, whenever it runs; "warning": it
    fails only on some inputs) and ``node_types``, and implement ``check``. Rules that decide only at the end of a scope (a
    guard may come after the line it protects) also implement ``end_scope``.
    """

    code: ClassVar[str]
    name: ClassVar[str]
    message: ClassVar[str]
    fix_safety: ClassVar[str] = "none"
    severity: ClassVar[str]
    node_types: ClassVar[tuple[type[ast.AST], ...]] = ()

    def check(self, node: ast.AST, ctx: Context) -> None:
        raise NotImplementedError

    def end_scope(self, ctx: Context, state: dict) -> None:
        """Called when a scope that has ``state`` for this rule ends."""

    def end_file(self, ctx: Context, state: dict) -> None:
        """Called at the end of the file when this rule has ``file_state``."""

    @classmethod
    def explanation(cls) -> str:
        return inspect.cleandoc(cls.__doc__ or "")
