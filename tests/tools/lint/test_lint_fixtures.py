"""One fixture per rule, ``fixtures/SMKNNN.py``, checked with that rule alone.

A fixture holds cases the rule must report, each in a function named
``reported_N`` with ``# expect: SMKNNN`` on the reported line, and look-alikes
it must not report, in functions named ``not_reported_N``. Its findings must
match both the annotations and the snapshot ``SMKNNN.expected``.
"""

from pathlib import Path

import pytest

from tests.tools.lint._lint_helpers import assert_matches_snapshot, expected_by_line, found_by_line, findings_in
from softmaxkit.tools.lint import ALL_RULES, RULES

FIXTURES = Path(__file__).parent / "fixtures"


def _fixture(rule):
    path = FIXTURES / f"{rule.code}.py"
    assert path.is_file(), f"{rule.code} has no fixture {path.name}"
    return path


def _findings(rule):
    # SMK000 needs no rule to run: a file that does not parse always gives it.
    return findings_in(_fixture(rule), [r for r in RULES if r is rule])


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.code)
def test_fixture_matches_snapshot(rule):
    assert_matches_snapshot(_findings(rule), FIXTURES / f"{rule.code}.expected")


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.code)
def test_fixture_findings_are_the_annotated_ones(rule):
    assert found_by_line(_findings(rule)) == expected_by_line(_fixture(rule))


def _cases(path):
    """{function name: its rows} for the fixture's top-level functions (text-based: SMK000 does not parse)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    starts = [(row, line[4 : line.index("(")]) for row, line in enumerate(lines, 1) if line.startswith("def ")]
    ends = [row for row, _ in starts[1:]] + [len(lines) + 1]
    return {name: range(start, end) for (start, name), end in zip(starts, ends)}


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.code)
def test_fixture_has_cases_that_fire_and_cases_that_must_not(rule):
    cases = _cases(_fixture(rule))
    expected_rows = {row for _, row in expected_by_line(_fixture(rule))}
    reported = [name for name in cases if name.startswith("reported_")]
    not_reported = [name for name in cases if name.startswith("not_reported_")]
    assert reported and not_reported and len(reported) + len(not_reported) == len(cases), sorted(cases)
    for name in reported:
        assert expected_rows & set(cases[name]), f"{name} expects no finding"
    for name in not_reported:
        assert not expected_rows & set(cases[name]), f"{name} expects a finding"


def test_every_fixture_belongs_to_a_rule():
    codes = {rule.code for rule in ALL_RULES}
    assert {path.stem for path in FIXTURES.iterdir() if path.suffix in (".py", ".expected")} <= codes
