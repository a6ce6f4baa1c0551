"""Output formats: concise, full, json, sarif, github.

Every format says each finding's severity: concise and full mark a warning
with ``warning:`` before its message (an unmarked finding is an error),
json has a ``severity`` field, SARIF a ``level``, and GitHub annotations are
``::error`` or ``::warning``.

A notebook finding's ``row`` and ``column`` count within its cell. The
formats read by other tools (github, sarif) point at the notebook file
itself; ``positions`` gives, per notebook, the file's line and column for
each ``(cell, row, column)`` (see ``FileResult.file_positions``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from softmaxkit.tools.lint.rule import Finding
from softmaxkit.tools.lint.rules import ALL_RULES

FORMATS = ("concise", "full", "json", "sarif", "github")
_SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
# Per notebook file name: (cell, row, column) -> the file's (line, column).
Positions = dict[str, dict[tuple[int, int, int], tuple[int, int]]]


def _where(finding: Finding) -> str:
    cell = f"cell {finding.cell}:" if finding.cell is not None else ""
    return f"{finding.filename}:{cell}{finding.row}:{finding.column}"


def _marker(finding: Finding, unsafe_fixes: bool) -> str:
    fix = finding.fix
    if fix is not None and (fix.applicability == "safe" or unsafe_fixes):
        return " [*]"
    return ""


def _headline(finding: Finding, unsafe_fixes: bool) -> str:
    label = " warning:" if finding.severity == "warning" else ""
    return f"{_where(finding)}: {finding.code}{_marker(finding, unsafe_fixes)}{label} {finding.message}\n"


def concise(findings: list[Finding], unsafe_fixes: bool = False) -> str:
    """One line per finding: ``path:row:column: CODE [*] warning: message`` (``[*]``: fixable)."""
    return "".join(_headline(f, unsafe_fixes) for f in findings)


def full(findings: list[Finding], unsafe_fixes: bool = False) -> str:
    """Each finding's line as in :func:`concise`, then its source line underlined and its fix."""
    out = []
    for f in findings:
        out.append(_headline(f, unsafe_fixes))
        line = f.line_text.expandtabs(1)
        if line:
            number = str(f.row)
            gutter = " " * len(number)
            end = f.end_column if f.end_row == f.row else len(line.rstrip()) + 1
            width = max(1, end - f.column)
            out.append(f"{gutter} |\n{number} | {line}\n{gutter} | {' ' * (f.column - 1)}{'^' * width}\n")
        if f.fix is not None:
            out.append(f"{' ' * len(str(f.row))} = fix ({f.fix.applicability}): {f.fix.message}\n")
        out.append("\n")
    return "".join(out)


def _counted(findings: Sequence[Finding]) -> str:
    """``2 errors``, ``1 warning`` or ``2 errors and 1 warning``."""
    warnings = sum(1 for f in findings if f.severity == "warning")
    errors = len(findings) - warnings
    parts = []
    if errors or not warnings:
        parts.append(f"{errors} {'error' if errors == 1 else 'errors'}")
    if warnings:
        parts.append(f"{warnings} {'warning' if warnings == 1 else 'warnings'}")
    return " and ".join(parts)


def summary(
    findings: list[Finding],
    fixed: Sequence[Finding] = (),
    unsafe_fixes: bool = False,
    fix_mode: bool = False,
    unchecked: int = 0,
) -> str:
    """The closing lines: errors and warnings found, fixed and fixable, and files not checked.

    ``fixed`` are the findings ``--fix`` removed, ``unchecked`` counts the
    files that could not be read. Example: ``Found 2 errors and 1 warning.``
    """
    count = len(findings)
    skipped = f"{unchecked} {'file' if unchecked == 1 else 'files'} not checked (see the warnings).\n" if unchecked else ""
    if count == 0 and not fixed:
        return "No errors found.\n" + skipped if unchecked else "All checks passed!\n"
    if fix_mode:
        return f"Found {_counted([*findings, *fixed])} ({len(fixed)} fixed, {count} remaining).\n" + skipped
    lines = [f"Found {_counted(findings)}.\n"]
    safe = sum(1 for f in findings if f.fix is not None and f.fix.applicability == "safe")
    unsafe = sum(1 for f in findings if f.fix is not None and f.fix.applicability == "unsafe")
    fixable = safe + (unsafe if unsafe_fixes else 0)
    if fixable:
        lines.append(f"[*] {fixable} fixable with the `--fix` option.\n")
    if unsafe and not unsafe_fixes:
        lines.append(f"({unsafe} more fixable with `--fix --unsafe-fixes`.)\n")
    lines.append(skipped)
    return "".join(lines)


def _in_file(finding: Finding, positions: Positions | None) -> tuple[int, int, int, int] | None:
    """Start and end line and column of ``finding`` in its file; None for a notebook finding not mapped."""
    if finding.cell is None:
        return finding.row, finding.column, finding.end_row, finding.end_column
    places = (positions or {}).get(finding.filename, {})
    start = places.get((finding.cell, finding.row, finding.column))
    if start is None:
        return None
    end = places.get((finding.cell, finding.end_row, finding.end_column), start)
    return (*start, *end)


def _text(finding: Finding) -> str:
    """The message, led by the cell and the line within it for a notebook finding."""
    if finding.cell is None:
        return finding.message
    return f"cell {finding.cell}, line {finding.row}: {finding.message}"


def _position(row: int, column: int) -> dict:
    return {"row": row, "column": column}


def as_json(findings: list[Finding]) -> str:
    records = []
    for f in findings:
        fix = None
        if f.fix is not None:
            fix = {
                "applicability": f.fix.applicability,
                "message": f.fix.message,
                "edits": [
                    {
                        "content": f.fix.content,
                        "location": _position(*f.fix.start),
                        "end_location": _position(*f.fix.end),
                    }
                ],
            }
        records.append(
            {
                "filename": f.filename,
                "cell": f.cell,
                "code": f.code,
                "name": f.name,
                "severity": f.severity,
                "message": f.message,
                "location": _position(f.row, f.column),
                "end_location": _position(f.end_row, f.end_column),
                "noqa_row": f.row,
                "fix": fix,
            }
        )
    return json.dumps(records, indent=2) + "\n"


def _uri(filename: str) -> str:
    path = Path(filename)
    if path.is_absolute():
        return path.as_uri()
    return quote(path.as_posix())


def as_sarif(findings: list[Finding], version: str | None, positions: Positions | None = None) -> str:
    """A SARIF 2.1.0 log with one run.

    A notebook finding's region is its place in the notebook file; the cell
    and the region within the cell are in its ``properties``.
    """
    rules = []
    index = {}
    for i, rule in enumerate(ALL_RULES):
        index[rule.code] = i
        rules.append(
            {
                "id": rule.code,
                "name": rule.name,
                "shortDescription": {"text": rule.message},
                "fullDescription": {"text": rule.explanation()},
                "help": {"text": rule.explanation(), "markdown": rule.explanation()},
                "defaultConfiguration": {"level": rule.severity},
                "properties": {"fix": rule.fix_safety},
            }
        )
    results = []
    for f in findings:
        location: dict = {"artifactLocation": {"uri": _uri(f.filename)}}
        place = _in_file(f, positions)
        if place is not None:
            location["region"] = _region(*place)
        result = {
            "ruleId": f.code,
            "ruleIndex": index[f.code],
            "level": f.severity,
            "message": {"text": _text(f)},
            "locations": [{"physicalLocation": location}],
        }
        if f.cell is not None:
            result["properties"] = {"cell": f.cell, "cellRegion": _region(f.row, f.column, f.end_row, f.end_column)}
        results.append(result)
    driver = {"name": "softmaxkit", "rules": rules}
    if version:
        driver["version"] = version
    log = {
        "$schema": _SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{"tool": {"driver": driver}, "results": results}],
    }
    return json.dumps(log, indent=2) + "\n"


def _region(row: int, column: int, end_row: int, end_column: int) -> dict:
    return {"startLine": row, "startColumn": column, "endLine": end_row, "endColumn": end_column}


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github(findings: list[Finding], positions: Positions | None = None) -> str:
    """GitHub Actions workflow commands: ``::error file=...,line=...::CODE message`` (``::warning`` for warnings).

    A notebook finding points at its line of the notebook file, and its
    message names the cell and the line within it.
    """
    out = []
    for f in findings:
        properties = [f"file={_escape_property(f.filename)}"]
        place = _in_file(f, positions)
        if place is not None:
            row, column, end_row, end_column = place
            properties += [f"line={row}", f"col={column}", f"endLine={end_row}", f"endColumn={end_column}"]
        properties.append(f"title={f.code}")
        out.append(f"::{f.severity} {','.join(properties)}::{_escape_data(f'{f.code} {_text(f)}')}\n")
    return "".join(out)
