import json
import os
import re
import textwrap

from softmaxkit.tools.lint import lint_source, output
from softmaxkit.tools.lint.linter import lint_file

# Set to regenerate the snapshots after a deliberate change, then review the diff.
UPDATE = os.environ.get("SOFTMAXKIT_UPDATE_SNAPSHOTS") == "1"
_EXPECT = re.compile(r"# expect: ((?:SMK\d{3}\s*)+)")


def codes(source, **options):
    """The codes found in ``source`` (dedented), in order."""
    return [f.code for f in lint_source(textwrap.dedent(source), **options)]


def findings_in(path, rules):
    """The findings of ``rules`` in the file, named by the file's name alone, in order."""
    findings = lint_file(path, rules).findings
    for finding in findings:
        finding.filename = path.name
    return sorted(findings, key=lambda f: f.sort_key())


def assert_matches_snapshot(findings, snapshot):
    """The findings, as ``--output-format full`` prints them, equal the snapshot file's text."""
    text = output.full(findings) + output.summary(findings)
    if UPDATE:
        snapshot.write_text(text, encoding="utf-8")
    assert snapshot.is_file(), f"{snapshot.name} is missing; write it with SOFTMAXKIT_UPDATE_SNAPSHOTS=1"
    assert text == snapshot.read_text(encoding="utf-8")


def found_by_line(findings):
    """The findings' codes: {(cell, row): sorted codes}."""
    found = {}
    for finding in findings:
        found.setdefault((finding.cell, finding.row), []).append(finding.code)
    return {key: sorted(value) for key, value in found.items()}


def expected_by_line(path):
    """``# expect: CODE ...`` comments: {(cell, row): sorted codes}."""
    if path.suffix == ".ipynb":
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
