"""The real-code corpus: every finding judged, and precision and recall at their targets.

The corpus (tests/tools/lint/realcode) is files of public repositories with
softmax, cross-entropy and attention code, recorded in ``manifest.json`` with
their commit and licence; ``judged.json`` says which findings are actionable
(``expected``, the known hazards, found or not) and which are not
(``rejected``). The files themselves are third-party code kept out of the
repository; without them (a fresh clone) the tests that lint them skip, and
``python benchmarks/bench_lint.py --restore-corpus DIR`` writes them.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import bench_lint

REALCODE = bench_lint.REALCODE
MANIFEST = bench_lint.manifest()
JUDGED = bench_lint.judged()
FILES = bench_lint.corpus_files()
MISSING = bench_lint.missing_files()
CODES = re.compile(r"SMK\d{3}")


def test_manifest_records_each_repository():
    assert len(MANIFEST) >= 10
    assert len({repo["name"] for repo in MANIFEST}) == len(MANIFEST)
    for repo in MANIFEST:
        assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repo["url"]), repo
        assert re.fullmatch(r"[0-9a-f]{40}", repo["commit"]), repo["name"]
        assert repo["license"].strip(), f"{repo['name']}: no licence recorded"
        assert repo["files"] and len(set(repo["files"])) == len(repo["files"]), repo["name"]
    assert any(f.endswith(".ipynb") for f in FILES)


def test_corpus_files_are_all_present_or_all_absent():
    # absent: a clone without the third-party files; partly absent is a broken corpus
    assert len(MISSING) in (0, len(FILES)), f"missing corpus files: {MISSING}"


def test_judged_entries_are_well_formed():
    assert set(JUDGED) == set(FILES), "judged.json must have one entry per manifest file"
    for name, verdicts in JUDGED.items():
        assert set(verdicts) == {"expected", "rejected"}, name
        keys = [(e["cell"], e["line"], e["code"]) for v in verdicts.values() for e in v]
        assert len(keys) == len(set(keys)), f"{name}: a finding judged twice"
        for entry in (e for v in verdicts.values() for e in v):
            assert set(entry) == {"line", "cell", "code", "why"}, (name, entry)
            assert isinstance(entry["line"], int) and entry["line"] >= 1, (name, entry)
            assert (entry["cell"] is None) == name.endswith(".py"), (name, entry)
            assert CODES.fullmatch(entry["code"]) and entry["why"].strip(), (name, entry)
    assert sum(len(v["expected"]) for v in JUDGED.values()) >= 10


needs_files = pytest.mark.skipif(
    bool(MISSING), reason="the corpus files are not here: python benchmarks/bench_lint.py --restore-corpus DIR"
)


def _lines(name, cell):
    text = (REALCODE / name).read_text(encoding="utf-8")
    if cell is None:
        return text.split("\n")
    source = json.loads(text)["cells"][cell - 1]["source"]
    return ("".join(source) if isinstance(source, list) else source).split("\n")


@needs_files
def test_judged_lines_hold_code():
    for name, verdicts in JUDGED.items():
        for entry in (e for v in verdicts.values() for e in v):
            lines = _lines(name, entry["cell"])
            assert entry["line"] <= len(lines) and lines[entry["line"] - 1].strip(), (name, entry)


@needs_files
def test_a_run_over_the_tree_skips_the_corpus():
    # the corpus's pyproject.toml excludes everything under it from directory walks
    findings, status, errors = bench_lint.lint_json([REALCODE])
    assert (findings, status) == ([], 0), errors


def test_pytest_collects_nothing_from_the_corpus():
    # --co (collect only), -p no:cacheprovider and -n 0: no cache and no workers
    command = [sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:cacheprovider", "-n", "0", str(REALCODE)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REALCODE.parents[3], check=False)
    assert result.returncode == 5, result.stdout + result.stderr  # 5: no tests collected


@pytest.fixture(scope="module")
def comparison():
    if MISSING:
        pytest.skip("the corpus files are not here: python benchmarks/bench_lint.py --restore-corpus DIR")
    return bench_lint.compare(bench_lint.lint_corpus(), JUDGED)


def test_every_finding_is_judged(comparison):
    unjudged = "\n".join(bench_lint.where(k) for k in comparison.unjudged)
    assert not comparison.unjudged, (
        "findings on the real-code corpus that nobody judged: read the code at each, decide whether the "
        "documented failure can happen there, and add it to tests/tools/lint/realcode/judged.json under "
        f"'expected' or 'rejected' with a one-line 'why':\n{unjudged}"
    )


def test_precision_and_recall_meet_the_targets(comparison):
    total = comparison.total
    false_positives = "\n".join(f"{bench_lint.where(k)}: {why}" for k, why in comparison.false_positives)
    misses = "\n".join(f"{bench_lint.where(k)}: {why}" for k, why in comparison.misses)
    assert total.precision >= bench_lint.TARGET_PRECISION and total.recall >= bench_lint.TARGET_RECALL, (
        f"precision {total.precision:.1%} ({total.matched}/{total.findings}), "
        f"recall {total.recall:.1%} ({total.matched}/{total.expected}); targets 90 %\n"
        f"false positives:\n{false_positives}\nmisses:\n{misses}"
    )
