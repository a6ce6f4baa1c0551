"""The rule interface and what a rule reports."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from softmaxkit.tools.lint._flow import Context


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


class Rule:
    """One check. The class docstring is the rule's explanation (``--explain``).

    Subclasses set ``code``, ``name``, ``message``, ``fix_safety`` ("safe",
    "unsafe" or "none": the best fix the rule can offer) and ``node_types``,
    and implement ``check``. Rules that decide only at the end of a scope (a
    guard may come after the line it protects) also implement ``end_scope``.
    """

    code: ClassVar[str]
    name: ClassVar[str]
    message: ClassVar[str]
    fix_safety: ClassVar[str] = "none"
    severity: ClassVar[str] = "error"
    node_types: ClassVar[tuple[type[ast.AST], ...]] = ()

    def check(self, node: ast.AST, ctx: Context) -> None:
        raise NotImplementedError

    def end_scope(self, ctx: Context, state: dict) -> None:
        """Called when a scope that has ``state`` for this rule ends."""

    @classmethod
    def explanation(cls) -> str:
        return inspect.cleandoc(cls.__doc__ or "")
