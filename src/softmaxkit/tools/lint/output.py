"""Output formats: concise, full, json, sarif, github."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

from softmaxkit.tools.lint.rule import Finding
from softmaxkit.tools.lint.rules import ALL_RULES

FORMATS = ("concise", "full", "json", "sarif", "github")
_SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"


def _where(finding: Finding) -> str:
    cell = f"cell {finding.cell}:" if finding.cell is not None else ""
    return f"{finding.filename}:{cell}{finding.row}:{finding.column}"


def _marker(finding: Finding, unsafe_fixes: bool) -> str:
    fix = finding.fix
    if fix is not None and (fix.applicability == "safe" or unsafe_fixes):
        return " [*]"
    return ""


def concise(findings: list[Finding], unsafe_fixes: bool = False) -> str:
    return "".join(
        f"{_where(f)}: {f.code}{_marker(f, unsafe_fixes)} {f.message}\n" for f in findings
    )


def full(findings: list[Finding], unsafe_fixes: bool = False) -> str:
    out = []
    for f in findings:
        out.append(f"{_where(f)}: {f.code}{_marker(f, unsafe_fixes)} {f.message}\n")
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


def summary(
    findings: list[Finding],
    fixed: int = 0,
    unsafe_fixes: bool = False,
    fix_mode: bool = False,
    unchecked: int = 0,
) -> str:
    """The closing lines; ``unchecked`` counts the files that could not be read."""
    count = len(findings)
    skipped = f"{unchecked} {'file' if unchecked == 1 else 'files'} not checked (see the warnings).\n" if unchecked else ""
    if count == 0 and fixed == 0:
        return "No errors found.\n" + skipped if unchecked else "All checks passed!\n"
    noun = "error" if count == 1 else "errors"
    if fix_mode:
        total = count + fixed
        return f"Found {total} {'error' if total == 1 else 'errors'} ({fixed} fixed, {count} remaining).\n" + skipped
    lines = [f"Found {count} {noun}.\n"]
    safe = sum(1 for f in findings if f.fix is not None and f.fix.applicability == "safe")
    unsafe = sum(1 for f in findings if f.fix is not None and f.fix.applicability == "unsafe")
    fixable = safe + (unsafe if unsafe_fixes else 0)
    if fixable:
        lines.append(f"[*] {fixable} fixable with the `--fix` option.\n")
    if unsafe and not unsafe_fixes:
        lines.append(f"({unsafe} more fixable with `--fix --unsafe-fixes`.)\n")
    lines.append(skipped)
    return "".join(lines)


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


def as_sarif(findings: list[Finding], version: str | None) -> str:
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
        text = f.message if f.cell is None else f"cell {f.cell}: {f.message}"
        result = {
            "ruleId": f.code,
            "ruleIndex": index[f.code],
            "level": f.severity,
            "message": {"text": text},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": _uri(f.filename)},
                        "region": {
                            "startLine": f.row,
                            "startColumn": f.column,
                            "endLine": f.end_row,
                            "endColumn": f.end_column,
                        },
                    }
                }
            ],
        }
        if f.cell is not None:
            result["properties"] = {"cell": f.cell}
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


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github(findings: list[Finding]) -> str:
    out = []
    for f in findings:
        text = f.message if f.cell is None else f"cell {f.cell}: {f.message}"
        properties = ",".join(
            [
                f"file={_escape_property(f.filename)}",
                f"line={f.row}",
                f"col={f.column}",
                f"endLine={f.end_row}",
                f"endColumn={f.end_column}",
                f"title={f.code}",
            ]
        )
        out.append(f"::{f.severity} {properties}::{_escape_data(f'{f.code} {text}')}\n")
    return "".join(out)
