"""``# noqa`` and ``# noqa: CODE`` comments, which suppress findings on their line."""

from __future__ import annotations

import re

from softmaxkit.tools.lint.rule import Finding
from softmaxkit.tools.lint.rules import PARSE_FAILURE

_NOQA = re.compile(r"#\s*noqa(?::\s*(?P<codes>[A-Z]+[0-9]+(?:[\s,]+[A-Z]+[0-9]+)*))?", re.IGNORECASE)
_CODE = re.compile(r"[A-Z]+[0-9]+", re.IGNORECASE)


def _suppressed(finding: Finding, line: str) -> bool:
    if "noqa" not in line.lower():
        return False
    match = _NOQA.search(line)
    if match is None:
        return False
    codes = match.group("codes")
    if codes is None:
        return True
    return finding.code in {code.upper() for code in _CODE.findall(codes)}


def apply_noqa(findings: list[Finding], lines: list[str]) -> list[Finding]:
    """The findings that no ``# noqa`` comment suppresses; records each one's line."""
    kept = []
    for finding in findings:
        line = lines[finding.row - 1] if 0 < finding.row <= len(lines) else ""
        finding.line_text = line
        if finding.code == PARSE_FAILURE.code or not _suppressed(finding, line):
            kept.append(finding)
    return kept
