"""Renders docs/lint-rules.md from the rule docstrings.

Regenerate with ``python -m softmaxkit.tools.lint.docs > docs/lint-rules.md``.
"""

from __future__ import annotations

import sys

from softmaxkit.tools.lint.rules import ALL_RULES

SECTIONS = ("What it does", "Why is this bad?", "Example", "Use instead", "Fix safety", "References")


def render_rules_markdown() -> str:
    out = [
        "# softmaxkit lint rules\n\n",
        "Generated from the rule docstrings; `softmaxkit lint --explain CODE` prints the same text.\n",
        "Fix: *safe* fixes apply with `--fix`, *unsafe* ones also need `--unsafe-fixes`, *none* means no fix.\n"
        "Level: an *error* is code that is wrong (or NaN) whenever it runs, a *warning* code that fails on some inputs.\n"
        "The examples assume nothing beyond their own imports: each gives its rule's finding as written, its replacement none.\n\n",
        "| Code | Name | Fix | Level | Message |\n",
        "| --- | --- | --- | --- | --- |\n",
    ]
    for rule in ALL_RULES:
        anchor = f"{rule.code.lower()}-{rule.name}"
        message = rule.message.replace("|", "\\|")
        out.append(f"| [{rule.code}](#{anchor}) | {rule.name} | {rule.fix_safety} | {rule.severity} | {message} |\n")
    for rule in ALL_RULES:
        body = rule.explanation().replace("\n## ", "\n### ")
        if body.startswith("## "):
            body = "#" + body
        out.append(f"\n## {rule.code} {rule.name}\n\n")
        out.append(f"Fix: {rule.fix_safety}. Level: {rule.severity}.\n\n{body}\n")
    return "".join(out)


if __name__ == "__main__":
    sys.stdout.write(render_rules_markdown())
