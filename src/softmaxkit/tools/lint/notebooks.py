"""Jupyter notebooks and IPython syntax: the notebook's JSON, code cells with IPython syntax blanked out,
percent-format scripts, and where a cell's source lies in the notebook file."""

from __future__ import annotations

import json
import re

# Cell magics whose body is still Python.
_PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun", "debug"})
# Cells hold IPython syntax only when some line could start with it; the
# others are returned as they are, without scanning them character by character.
_MAYBE_IPYTHON = re.compile(r"^\s*[%!?]|=\s*[!%]|\?\s*$", re.M)
_MAGIC_ASSIGNMENT = re.compile(r"^(\s*[\w.,\s\[\]]+?=\s*)[!%]")
_HELP_LINE = re.compile(r"^\s*[\w.*]+\?{1,2}\s*$")
# ``# %%`` (jupytext, VS Code, Spyder, PyCharm) starts a cell of a percent-format script.
_PERCENT_CELL = re.compile(r"^#\s?%%")
# Outside a string: what can open or close a string, a bracket or a comment.
_CODE_TOKEN = re.compile(r"""('''|\"\"\"|'|")|[#\\()\[\]{}]""")
_STRING_END = {quote: re.compile(r"\\.|\\\Z|" + re.escape(quote), re.S) for quote in ("'''", '"""', "'", '"')}


class InvalidNotebook(Exception):
    """A notebook file that is not JSON or not shaped like a notebook; ``row`` and ``column`` say where, when known."""

    def __init__(self, message: str, row: int = 1, column: int = 1) -> None:
        super().__init__(message)
        self.row = row
        self.column = column


def load(raw: bytes) -> dict:
    """The notebook's JSON; raises ``InvalidNotebook`` saying what is wrong with it."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise InvalidNotebook(str(error)) from None
    except json.JSONDecodeError as error:
        raise InvalidNotebook(str(error), error.lineno, error.colno) from None
    except RecursionError:
        raise InvalidNotebook("its JSON is nested too deeply") from None
    problem = _problem(data)
    if problem is not None:
        raise InvalidNotebook(problem)
    return data


def _problem(data: object) -> str | None:
    """What is wrong with the notebook's outer structure, if anything."""
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        return "no list of cells"
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        return "its metadata is not an object"
    if not isinstance(metadata.get("language_info", {}), dict):
        return "its metadata.language_info is not an object"
    return None


def language(data: dict) -> str:
    """The kernel's language (``python`` when the notebook does not say)."""
    return data.get("metadata", {}).get("language_info", {}).get("name", "python")


def cell_lines(source: str) -> list[str] | None:
    r"""The cell's lines with IPython syntax blanked out; None for a non-Python cell.

    The lines keep their number, so positions in the result are positions in
    the cell. As in IPython, only the first line that is not blank can hold
    a cell magic (``%%bash``: the cell is not Python; ``%%time``: the line
    is blanked), and a line magic, shell command (``!ls``, ``files = !ls``)
    or help request (``x?``, ``??x``) is recognised only where a statement
    can start, not inside brackets or a string. A shell or magic line that
    ends with a backslash goes on to the next line, which is blanked too.

    >>> cell_lines("!pip install \\\n  numpy\nfiles = !ls\nx = (a\n     % b)")
    ['pass', '', 'files = None', 'x = (a', '     % b)']
    """
    lines = source.split("\n")
    first = next((number for number, line in enumerate(lines) if line.strip()), None)
    if first is not None and lines[first].lstrip().startswith("%%"):
        words = lines[first].lstrip()[2:].split()
        if not words or words[0] not in _PYTHON_CELL_MAGICS:
            return None
        lines[first] = ""
    if not _MAYBE_IPYTHON.search(source):
        return lines
    cleaned = []
    scanner = _Continuation()
    continued = False
    for line in lines:
        if continued:
            cleaned.append("")
            continued = line.endswith("\\")
            continue
        if scanner.at_statement_start():
            stripped = line.lstrip()
            indent = line[: len(line) - len(stripped)]
            if stripped.startswith(("%", "!", "?")) or _HELP_LINE.match(line):
                # ``pass`` keeps an indented block valid and the line numbers unchanged.
                cleaned.append(indent + "pass")
                continued = line.endswith("\\")
                continue
            match = _MAGIC_ASSIGNMENT.match(line)
            if match:
                cleaned.append(match.group(1) + "None")
                continued = line.endswith("\\")
                continue
        cleaned.append(line)
        scanner.feed(line)
    return cleaned


class _Continuation:
    """Follows Python lines to tell whether the next one starts a statement.

    It does not when a bracket or a triple-quoted string is still open, or
    the line ended with a backslash.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.quote: str | None = None
        self.backslash = False

    def at_statement_start(self) -> bool:
        return self.depth == 0 and self.quote is None and not self.backslash

    def feed(self, line: str) -> None:
        self.backslash = False
        position = 0
        while position < len(line):
            if self.quote is not None:
                match = _STRING_END[self.quote].search(line, position)
                if match is None:
                    if len(self.quote) == 1:
                        self.quote = None  # an unterminated string: the parser will say so
                    return
                position = match.end()
                if match.group() == self.quote:
                    self.quote = None
                elif match.group() == "\\":
                    self.backslash = len(self.quote) == 1
                    return
                continue
            match = _CODE_TOKEN.search(line, position)
            if match is None:
                return
            position = match.end()
            token = match.group()
            if match.group(1):
                self.quote = match.group(1)
            elif token == "#":
                return
            elif token == "\\":
                self.backslash = position == len(line)
            elif token in "([{":
                self.depth += 1
            else:
                self.depth = max(0, self.depth - 1)


def script_lines(source: str) -> list[str] | None:
    r"""A Python file's lines with IPython syntax blanked out; None when there is none to blank.

    A percent-format script (cells begun by ``# %%`` lines) is read cell by
    cell: a cell that starts with a cell magic other than ``%%time`` and the
    like is blanked whole. The lines keep their number.

    >>> script_lines("# %%\n%matplotlib inline\n# %%\n%%bash\nls\n")
    ['# %%', 'pass', '# %%', '', '', '']
    """
    lines = source.split("\n")
    starts = [0, *(number for number, line in enumerate(lines) if number and _PERCENT_CELL.match(line)), len(lines)]
    cleaned: list[str] = []
    for start, end in zip(starts, starts[1:]):
        cell = lines[start:end]
        header = [cell.pop(0)] if cell and _PERCENT_CELL.match(cell[0]) else []
        body = cell_lines("\n".join(cell)) if cell else []
        cleaned.extend(header)
        cleaned.extend([""] * len(cell) if body is None else body)
    return None if cleaned == lines else cleaned


# A JSON token: a string, a structural character, or a literal (number, true, false, null).
_JSON_TOKEN = re.compile(r'\s*(?:("[^"\\]*(?:\\.[^"\\]*)*")|([{}\[\],:])|([^\s{}\[\],:"]+))', re.S)
_JSON_COLON = re.compile(r"\s*:\s*")
# A piece of a JSON string's text: a run without escapes, a surrogate pair, or one escape.
_JSON_PIECE = re.compile(r"[^\\]+|\\u[dD][89abAB]\w\w\\u[dD][c-fC-F]\w\w|\\u\w{4}|\\.", re.S)


class SourceMap:
    """Where the source of each code cell lies in the notebook file's text.

    nbformat writes a cell's source as a list of strings, one line of the
    cell per line of the file when the JSON is indented; a single string is
    allowed too and lies on one line of the file. ``text`` is the file
    decoded, already known to be valid JSON.
    """

    def __init__(self, text: str) -> None:
        self.strings = _source_strings(text)
        self._decoded: dict[int, list[str]] = {}

    def position(self, cell: int, row: int, column: int) -> tuple[int, int] | None:
        r"""The file's line and column (from 1, in characters) of a position in a cell.

        ``row`` and ``column`` count from 1 within the cell's source. None
        when the cell's source is not in the file as a string or a list of
        strings.

        >>> text = '{"cells": [\n {"source": ["import numpy as np\\n",\n             "y = np.log(1 + x)"]}]}'
        >>> SourceMap(text).position(1, 2, 5)
        (3, 19)
        """
        strings = self.strings.get(cell)
        if not strings:
            return None
        decoded = self._decoded.get(cell)
        if decoded is None:
            decoded = self._decoded[cell] = [json.loads(raw) for _, _, raw in strings]
        offset = _offset("".join(decoded), row, column)
        last = len(strings) - 1
        for number, ((line, quote, raw), text) in enumerate(zip(strings, decoded)):
            if offset < len(text) or number == last:
                # A JSON string holds no newline: the whole string lies on its line.
                return line, quote + 1 + _raw_index(raw[1:-1], offset)
            offset -= len(text)
        return None


def _offset(source: str, row: int, column: int) -> int:
    """The index in ``source`` of a 1-based row and column (the start of the source when out of range)."""
    start = 0
    for _ in range(row - 1):
        start = source.find("\n", start) + 1
        if start == 0:
            return 0
    return min(start + column - 1, len(source))


def _raw_index(raw: str, wanted: int) -> int:
    """The index in a JSON string's escaped text of the ``wanted``-th character of its value."""
    index = count = 0
    for piece in _JSON_PIECE.finditer(raw):
        text = piece.group()
        size = len(text) if text[0] != "\\" else 1
        if count + size > wanted:
            return index + wanted - count
        count += size
        index = piece.end()
    return index


def _source_strings(text: str) -> dict[int, list[tuple[int, int, str]]]:
    """Per cell (from 1), the strings of its ``source``: the line and column of each one's opening quote, and its escaped text.

    Only ``cells`` and each cell's ``source`` are walked token by token; any
    other value (outputs, metadata) is skipped by the C decoder in one call.
    """
    found: dict[int, list[tuple[int, int, str]]] = {}
    skip = json.JSONDecoder().raw_decode
    # One frame per open container: [is an object, current key or index, expecting a key].
    stack: list[list] = []
    position = 0
    line, line_start = 1, 0

    def advance(end: int) -> None:
        nonlocal position, line, line_start
        newlines = text.count("\n", position, end)
        if newlines:
            line += newlines
            line_start = text.rfind("\n", position, end) + 1
        position = end

    while True:
        match = _JSON_TOKEN.match(text, position)
        if match is None:
            return found
        start = match.start(match.lastindex)
        advance(start)
        position = match.end()
        string, mark = match.group(1), match.group(2)
        if mark in ("{", "["):
            if _is_cell_source(stack):
                found[stack[1][1] + 1] = []
            stack.append([mark == "{", 0, mark == "{"])
        elif mark in ("}", "]"):
            stack.pop()
            if not stack:
                return found
        elif mark == ",":
            frame = stack[-1]
            if frame[0]:
                frame[2] = True
            else:
                frame[1] += 1
        elif string is not None and stack and stack[-1][0] and stack[-1][2]:
            key = stack[-1][1] = json.loads(string)
            stack[-1][2] = False
            wanted = (len(stack) == 1 and key == "cells") or _is_cell_source(stack)
            if not wanted:
                advance(_JSON_COLON.match(text, position).end())
                advance(skip(text, position)[1])
        elif string is not None:
            if _is_cell_source(stack):
                found[stack[1][1] + 1] = [(line, start - line_start + 1, string)]
            elif len(stack) == 4 and _is_cell_source(stack[:3]) and not stack[3][0]:
                found[stack[1][1] + 1].append((line, start - line_start + 1, string))


def _is_cell_source(stack: list[list]) -> bool:
    """Whether the value about to be read is ``cells[i]["source"]``."""
    return (
        len(stack) == 3
        and stack[0][0]
        and stack[0][1] == "cells"
        and not stack[1][0]
        and stack[2][0]
        and stack[2][1] == "source"
    )
