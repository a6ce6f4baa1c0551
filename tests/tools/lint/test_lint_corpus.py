"""The corpora: clean files give nothing; buggy files match their snapshots."""

import os
import re
from pathlib import Path

import pytest

from softmaxkit.tools.lint import output
from softmaxkit.tools.lint.config import Config
from softmaxkit.tools.lint.linter import lint_file
from softmaxkit.tools.lint.selection import enabled_rules

CORPUS = Path(__file__).parent / "corpus"
BUGGY = sorted(p for p in (CORPUS / "buggy").iterdir() if p.suffix in (".py", ".ipynb"))
CLEAN = sorted(p for p in (CORPUS / "clean").iterdir() if p.suffix in (".py", ".ipynb"))
# Set to regenerate the snapshots after a deliberate change, then review the diff.
UPDATE = os.environ.get("SOFTMAXKIT_UPDATE_SNAPSHOTS") == "1"
_EXPECT = re.compile(r"# expect: ((?:SMK\d{3}\s*)+)")


def _findings(path):
    findings = lint_file(path, enabled_rules(Config())).findings
    for finding in findings:
        finding.filename = path.name
    return sorted(findings, key=lambda f: f.sort_key())


def test_corpora_are_present():
    assert len(BUGGY) >= 6 and len(CLEAN) >= 6
    assert any(p.suffix == ".ipynb" for p in BUGGY) and any(p.suffix == ".ipynb" for p in CLEAN)


@pytest.mark.parametrize("path", CLEAN, ids=lambda p: p.name)
def test_clean_file_has_no_findings(path):
    assert output.concise(_findings(path)) == ""


@pytest.mark.parametrize("path", BUGGY, ids=lambda p: p.name)
def test_buggy_file_matches_snapshot(path):
    findings = _findings(path)
    text = output.full(findings) + output.summary(findings)
    snapshot = path.with_name(path.name + ".expected")
    if UPDATE:
        snapshot.write_text(text, encoding="utf-8")
    assert text == snapshot.read_text(encoding="utf-8")


def _expected_by_line(path):
    """``# expect: CODE ...`` comments: {(cell, row): sorted codes}."""
    if path.suffix == ".ipynb":
        import json

        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        sources = [(n, "".join(c["source"])) for n, c in enumerate(cells, 1) if c["cell_type"] == "code"]
    else:
        sources = [(None, path.read_text(encoding="utf-8"))]
    expected = {}
    for cell, source in sources:
        for row, line in enumerate(source.split("\n"), 1):
            match = _EXPECT.search(line)
            if match:
                expected[(cell, row)] = sorted(match.group(1).split())
    return expected


@pytest.mark.parametrize("path", BUGGY, ids=lambda p: p.name)
def test_buggy_findings_are_the_annotated_ones(path):
    # The snapshot could be regenerated blindly; the annotations in the
    # fixture say independently which line must give which code.
    found = {}
    for finding in _findings(path):
        found.setdefault((finding.cell, finding.row), []).append(finding.code)
    assert {key: sorted(value) for key, value in found.items()} == _expected_by_line(path)
