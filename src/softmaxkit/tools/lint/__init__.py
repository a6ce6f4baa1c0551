"""Static checks for numerically unstable or wrong softmax, log, exp and cross-entropy code.

``softmaxkit lint`` is the command line; ``lint_source`` checks a string.
Detection uses only the standard library's ``ast``; fixes need LibCST
(``pip install 'softmaxkit[lint]'``).

``__all__`` is the public interface. The modules hold the implementation:
``checker`` walks a parsed file and hands nodes to ``rules`` (one module per
rule), which query the ``semantic`` model and build fixes from ``source``;
``linter`` checks one file, ``files`` and ``notebooks`` read them,
``settings``, ``config`` (pyproject.toml), ``selection`` and ``noqa`` decide what is reported, ``output``
formats it and ``fix`` applies fixes.
"""

from __future__ import annotations

from softmaxkit.tools.lint.linter import check_source
from softmaxkit.tools.lint.noqa import apply_noqa
from softmaxkit.tools.lint.rule import Context, Finding, Fix, Rule
from softmaxkit.tools.lint.rules import ALL_RULES, RULES, find_rule
from softmaxkit.tools.lint.selection import enabled_rules, parse_selectors
from softmaxkit.tools.lint.settings import Config
from softmaxkit.tools.lint.source import split_lines

__all__ = [
    "ALL_RULES",
    "Context",
    "Finding",
    "Fix",
    "RULES",
    "Rule",
    "find_rule",
    "lint_source",
]


def lint_source(
    source: str,
    filename: str = "<string>",
    select: list[str] | None = None,
    ignore: list[str] | None = None,
) -> list[Finding]:
    """Findings for Python source, sorted by position, with ``# noqa`` applied.

    ``select`` and ``ignore`` take rule codes or prefixes such as ``"SMK1"``.
    """
    rules = enabled_rules(Config(), parse_selectors(select, "select"), parse_selectors(ignore, "ignore"))
    findings = apply_noqa(check_source(source, rules, filename), split_lines(source))
    for finding in findings:
        finding.filename = filename
    return sorted(findings, key=Finding.sort_key)
