"""Checking one file: parsing it, running the rules, and mapping notebook cells back."""

from __future__ import annotations

import ast
import dataclasses
import io
import tokenize
import warnings
from pathlib import Path

from softmaxkit.tools.lint import notebooks
from softmaxkit.tools.lint.checker import Checker
from softmaxkit.tools.lint.files import MAX_NOTEBOOK_BYTES, MAX_SOURCE_BYTES, Unreadable, read_file
from softmaxkit.tools.lint.noqa import apply_noqa
from softmaxkit.tools.lint.rule import Finding, Rule
from softmaxkit.tools.lint.rules import PARSE_FAILURE
from softmaxkit.tools.lint.source import split_lines


@dataclasses.dataclass
class FileResult:
    """What linting one file gave.

    ``skipped`` says why a file was not read at all; ``unchecked`` is true
    when that file was a regular file whose code therefore went unchecked
    (unreadable, too large), false for entries that hold no code (a FIFO, a
    device, a broken symbolic link). In a notebook, ``file_positions`` maps
    each ``(cell, row, column)`` where a finding starts or ends to the line
    and column of the notebook file that hold it.
    """

    path: str
    findings: list[Finding]
    source: str | None = None
    encoding: str = "utf-8"
    notebook: bool = False
    skipped: str | None = None
    unchecked: bool = False
    file_positions: dict[tuple[int, int, int], tuple[int, int]] = dataclasses.field(default_factory=dict)


def parse_failure(message: str, row: int = 1, column: int = 1, cell: int | None = None) -> Finding:
    """An SMK000 finding: the file (or cell) could not be checked."""
    rule = PARSE_FAILURE
    return Finding(rule.code, rule.name, message, rule.severity, row, column, row, column, cell=cell)


def parse(source: str, filename: str = "<string>") -> ast.Module | Finding:
    """The module, or the SMK000 finding that says why there is none.

    The compiler's warnings about the file (an invalid escape sequence,
    ``is`` with a literal) are not the linter's to print.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(source, filename)
    except SyntaxError as error:
        return parse_failure(f"SyntaxError: {error.msg}", error.lineno or 1, error.offset or 1)
    except ValueError as error:
        return parse_failure(f"SyntaxError: {error}")
    except (RecursionError, MemoryError):
        # The parser gives up on deep nesting (thousands of levels) with one of
        # these rather than a SyntaxError; MemoryError is its stack's limit.
        return parse_failure("too deeply nested to parse")


def check_source(
    source: str, rules: list[Rule], filename: str = "<string>", functions: dict[str, str] | None = None
) -> list[Finding]:
    """Findings for Python source, before ``# noqa`` is applied.

    ``functions`` maps the dotted names of a project's own wrappers to the
    operations they compute (``{"mypkg.utils.softmax": "softmax"}``, from
    ``[tool.softmaxkit.lint.functions]``). Source the parser rejects gives
    one SMK000 finding, and so does a tree the analysis cannot follow
    without overflowing Python's recursion limit (it follows long chains
    without recursing, so this is a safety net).
    """
    tree = parse(source, filename)
    if isinstance(tree, Finding):
        return [tree]
    if not rules:
        return []
    try:
        return Checker(tree, source, rules, functions=functions).run()
    except RecursionError:
        return [parse_failure("too deeply nested to analyse")]


def lint_file(path: Path, rules: list[Rule], functions: dict[str, str] | None = None) -> FileResult:
    """Lints one file; one that cannot be read comes back with ``skipped`` set.

    ``functions`` is passed on to :func:`check_source`.
    """
    if path.suffix == ".ipynb":
        return lint_notebook(path, rules, functions)
    return lint_python(path, rules, functions)


def lint_python(path: Path, rules: list[Rule], functions: dict[str, str] | None = None) -> FileResult:
    try:
        raw = read_file(path, MAX_SOURCE_BYTES)
    except Unreadable as error:
        return FileResult(str(path), [], skipped=error.reason, unchecked=error.unchecked)
    try:
        encoding = tokenize.detect_encoding(io.BytesIO(raw).readline)[0]
        source = raw.decode(encoding)
    except (SyntaxError, LookupError, UnicodeDecodeError) as error:
        return FileResult(str(path), [parse_failure(f"could not decode the file: {error}")])
    lines = split_lines(source)
    findings = check_source(source, rules, str(path), functions)
    if len(findings) == 1 and findings[0].message.startswith("SyntaxError"):
        findings = _check_ipython(lines, rules, str(path), functions) or findings
    for finding in findings:
        finding.filename = str(path)
    return FileResult(str(path), apply_noqa(findings, lines), source, encoding)


def _check_ipython(
    lines: list[str], rules: list[Rule], filename: str, functions: dict[str, str] | None
) -> list[Finding] | None:
    """Findings for a file that is Python once IPython syntax is blanked out as in notebook cells.

    A percent-format script (``# %%`` cells) is read cell by cell, so a
    ``%%bash`` cell is left out whole. None when there is no such syntax to
    blank. Like a notebook's, the findings have no fix: LibCST cannot parse
    the file to apply one.
    """
    cleaned = notebooks.script_lines("\n".join(lines))
    if cleaned is None:
        return None
    findings = check_source("\n".join(cleaned), rules, filename, functions)
    for finding in findings:
        finding.fix = None
    return findings


def lint_notebook(path: Path, rules: list[Rule], functions: dict[str, str] | None = None) -> FileResult:
    """Lints the code cells as one module, so names flow from cell to cell."""
    name = str(path)
    result = FileResult(name, [], notebook=True)
    try:
        raw = read_file(path, MAX_NOTEBOOK_BYTES)
        data = notebooks.load(raw)
    except Unreadable as error:
        return FileResult(name, [], notebook=True, skipped=error.reason, unchecked=error.unchecked)
    except notebooks.InvalidNotebook as error:
        result.findings.append(parse_failure(f"invalid notebook: {error}", error.row, error.column))
        return _named(result)
    if notebooks.language(data) != "python":
        return result
    module, origins, sources = _join_cells(data["cells"], result.findings)
    for finding in check_source(module, rules, name, functions):
        cell, row = origins[finding.row - 1]
        end_cell, end_row = origins[finding.end_row - 1]
        finding.cell = cell
        if end_cell != cell:
            finding.end_row, finding.end_column = row, len(sources[cell].split("\n")[row - 1]) + 1
        else:
            finding.end_row = end_row
        finding.row = row
        # Fixes rewrite files; a notebook's JSON is left alone.
        finding.fix = None
        result.findings.extend(apply_noqa([finding], sources[cell].split("\n")))
    if any(finding.cell is not None for finding in result.findings):
        places = notebooks.SourceMap(raw.decode("utf-8"))
        for finding in result.findings:
            if finding.cell is not None:
                for key in ((finding.cell, finding.row, finding.column), (finding.cell, finding.end_row, finding.end_column)):
                    position = places.position(*key)
                    if position is not None:
                        result.file_positions[key] = position
    return _named(result)


def _join_cells(cells: list, problems: list[Finding]) -> tuple[str, list[tuple[int, int]], dict[int, str]]:
    """The code cells that parse, as one module.

    Returns the module's source, the ``(cell, row)`` each of its lines comes
    from, and each cell's own source. A cell that cannot be read or parsed
    adds a finding to ``problems`` instead.
    """
    sources: dict[int, str] = {}
    module_lines: list[str] = []
    origins: list[tuple[int, int]] = []
    for number, cell in enumerate(cells, 1):
        if not isinstance(cell, dict):
            problems.append(parse_failure("invalid notebook: the cell is not an object", cell=number))
            continue
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        if isinstance(source, list) and all(isinstance(line, str) for line in source):
            source = "".join(source)
        if not isinstance(source, str):
            message = "invalid notebook: the cell's source is not a string or a list of strings"
            problems.append(parse_failure(message, cell=number))
            continue
        lines = notebooks.cell_lines(source)
        if lines is None:
            continue
        tree = parse("\n".join(lines))
        if isinstance(tree, Finding):
            tree.cell = number
            problems.append(tree)
            continue
        sources[number] = source
        module_lines.extend(lines)
        origins.extend((number, row) for row in range(1, len(lines) + 1))
    return "\n".join(module_lines), origins, sources


def _named(result: FileResult) -> FileResult:
    for finding in result.findings:
        finding.filename = result.path
    return result
