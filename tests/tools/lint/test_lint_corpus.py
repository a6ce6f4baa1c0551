"""The corpora: clean files give nothing; buggy files match their snapshots."""

from pathlib import Path

import pytest

from tests.tools.lint._lint_helpers import assert_matches_snapshot, expected_by_line, found_by_line, findings_in
from softmaxkit.tools.lint import output
from softmaxkit.tools.lint.selection import enabled_rules
from softmaxkit.tools.lint.settings import Config

CORPUS = Path(__file__).parent / "corpus"
BUGGY = sorted(p for p in (CORPUS / "buggy").iterdir() if p.suffix in (".py", ".ipynb"))
CLEAN = sorted(p for p in (CORPUS / "clean").iterdir() if p.suffix in (".py", ".ipynb"))


def _findings(path):
    return findings_in(path, enabled_rules(Config()))


def test_corpora_are_present():
    assert len(BUGGY) >= 6 and len(CLEAN) >= 6
    assert any(p.suffix == ".ipynb" for p in BUGGY) and any(p.suffix == ".ipynb" for p in CLEAN)


@pytest.mark.parametrize("path", CLEAN, ids=lambda p: p.name)
def test_clean_file_has_no_findings(path):
    assert output.concise(_findings(path)) == ""


@pytest.mark.parametrize("path", BUGGY, ids=lambda p: p.name)
def test_buggy_file_matches_snapshot(path):
    assert_matches_snapshot(_findings(path), path.with_name(path.name + ".expected"))


@pytest.mark.parametrize("path", BUGGY, ids=lambda p: p.name)
def test_buggy_findings_are_the_annotated_ones(path):
    # The snapshot could be regenerated blindly; the annotations in the
    # fixture say independently which line must give which code.
    assert found_by_line(_findings(path)) == expected_by_line(path)
