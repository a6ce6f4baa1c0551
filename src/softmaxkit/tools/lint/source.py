"""Source text: lines, node positions in characters, and fixes built from the text."""

from __future__ import annotations

import ast
import re

from softmaxkit.tools.lint.rule import Fix

_NEWLINE = re.compile(r"\r\n|\r|\n")


def split_lines(source: str) -> list[str]:
    """Lines as the parser counts them (``str.splitlines`` also splits on form feeds)."""
    return _NEWLINE.split(source)


class Locator:
    """Finds the text of nodes in one source string.

    ``ast`` counts columns in UTF-8 bytes; positions here count characters,
    as editors and the output formats do.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines = split_lines(source)
        self._line_starts: list[int] | None = None

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

    def text(self, node: ast.AST) -> str:
        """The source of ``node``."""
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
        """A fix that replaces the source of ``node`` with ``content``."""
        row, column, end_row, end_column = self.position(node)
        return Fix(applicability, message, (row, column), (end_row, end_column), content)

    def _offsets(self, node: ast.AST) -> tuple[int, int]:
        if self._line_starts is None:
            starts = [0]
            starts.extend(match.end() for match in _NEWLINE.finditer(self.source))
            self._line_starts = starts
        row, column, end_row, end_column = self.position(node)
        return self._line_starts[row - 1] + column - 1, self._line_starts[end_row - 1] + end_column - 1
