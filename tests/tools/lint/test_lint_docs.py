"""Every rule is documented, in the same structure, in docs/lint-rules.md."""

import re
from pathlib import Path

import pytest

from softmaxkit.tools.lint import ALL_RULES, check_source
from softmaxkit.tools.lint.docs import SECTIONS, render_rules_markdown

DOCS = Path(__file__).resolve().parents[3] / "docs"


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.code)
def test_explanation_has_every_section_in_order(rule):
    text = rule.explanation()
    positions = [text.find(f"## {section}\n") for section in SECTIONS]
    assert -1 not in positions, rule.code
    assert positions == sorted(positions), rule.code


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.code)
def test_rule_metadata(rule):
    assert rule.code.startswith("SMK") and len(rule.code) == 6
    assert rule.fix_safety in ("safe", "unsafe", "none")
    assert rule.severity in ("error", "warning")
    assert "\n" not in rule.message
    assert f"The fix is {rule.fix_safety}" in rule.explanation() or rule.fix_safety == "none"


def test_codes_and_names_are_unique():
    assert len({r.code for r in ALL_RULES}) == len({r.name for r in ALL_RULES}) == len(ALL_RULES)


def test_rules_document_is_current():
    # Regenerate: python -m softmaxkit.tools.lint.docs > docs/lint-rules.md
    assert (DOCS / "lint-rules.md").read_text(encoding="utf-8") == render_rules_markdown()


def test_every_rule_is_in_the_rules_document():
    text = (DOCS / "lint-rules.md").read_text(encoding="utf-8")
    for rule in ALL_RULES:
        assert f"\n## {rule.code} {rule.name}\n" in text


def test_usage_document_names_every_format():
    text = (DOCS / "lint.md").read_text(encoding="utf-8")
    for word in ("concise", "full", "json", "sarif", "github", "noqa", "--fix", "--diff", "pyproject.toml"):
        assert word in text


def test_each_rule_has_its_own_module_named_after_it_in_code_order():
    from softmaxkit.tools.lint import rules

    expected = [f"{rule.code.lower()}_{rule.name.replace('-', '_')}" for rule in ALL_RULES]
    assert sorted(path.stem for path in Path(rules.__file__).parent.glob("smk*.py")) == expected
    assert [type(rule).__module__ for rule in ALL_RULES] == [f"{rules.__name__}.{name}" for name in expected]


_FENCE = re.compile(r"^```python\n(.*?)^```", flags=re.S | re.M)


def _section_code(rule, section):
    """The first ``python`` block of one section of the rule's explanation."""
    body = rule.explanation().split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return _FENCE.search(body).group(1)


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.code)
def test_example_gives_the_finding_and_its_replacement_none(rule):
    # As written, with no imports added: each example is self-contained.
    example = _section_code(rule, "Example")
    instead = _section_code(rule, "Use instead")
    assert rule.code in {f.code for f in check_source(example, ALL_RULES, "example.py")}, example
    assert check_source(instead, ALL_RULES, "instead.py") == [], instead
    if rule.code != "SMK000":
        assert "import " in example and "import " in instead


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.code)
def test_explanation_says_why_the_rule_has_its_severity(rule):
    article = "an" if rule.severity == "error" else "a"
    assert f"This rule is {article} {rule.severity}:" in rule.explanation(), rule.code
