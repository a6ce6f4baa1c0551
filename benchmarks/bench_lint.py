"""How fast ``softmaxkit lint`` is, and how right it is on real code.

Speed (the default): builds a synthetic tree by copying the test corpora's
Python files (buggy and clean) into nested folders of a temporary directory
until it holds the requested number of lines, then times the command-line
run over it, output discarded, in this process (target: under 10 s for
100,000 lines).

Precision and recall (``--corpus``): lints the real-code corpus of
``tests/tools/lint/realcode`` (files of public repositories, listed with
their commit and licence in ``manifest.json``, each folder with its own
``pyproject.toml`` where the repository has softmax or loss wrappers) and
compares the findings with the judged ones of ``judged.json``: a finding
matches a judged one on (file, notebook cell, line, code).

- precision = findings judged actionable / all findings;
- recall = findings judged actionable that were found / all actionable ones
  (``expected``), which includes the hazards read in the files that the
  linter does not report.

Findings are counted once per (file, cell, line, code). Every judgement
follows the rule ``JUDGING`` below: whether the failure the rule documents
can happen there, not whether the pattern matches.

Targets: both at least 90 %. It prints the false positives (findings judged
not actionable, and findings nobody judged yet), the misses and the speed on
the corpus, and writes ``benchmarks/results/lint.md``.

The corpus files are third-party code and are not part of the repository:
``--restore-corpus DIR`` writes them from clones of the repositories, one
per manifest entry at ``DIR/<name>`` (any git directory ``git -C`` accepts,
bare or not), at the recorded commits.

Run with:

    PYTHONPATH=src python benchmarks/bench_lint.py [--lines 100000] [--repeats 3]
    PYTHONPATH=src python benchmarks/bench_lint.py --corpus [--repeats 3]
    PYTHONPATH=src python benchmarks/bench_lint.py --restore-corpus DIR
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from _harness import (
    REPOSITORY,
    RESULTS,
    describe,
    interleaved,
    markdown_table,
    medians,
    timed,
)

from softmaxkit.tools.cli.lint import main as lint_main

CORPUS = REPOSITORY / "tests" / "tools" / "lint" / "corpus"
REALCODE = REPOSITORY / "tests" / "tools" / "lint" / "realcode"
TARGET_SECONDS = 10.0
TARGET_PRECISION = 0.90
TARGET_RECALL = 0.90
JUDGING = (
    "A finding is actionable when the failure its rule documents can happen for some value that reaches "
    "that code: trained weights, model outputs, data and function arguments can take any value. It is not "
    "actionable when the code itself rules the failure out: a causal, sliding-window or top-k mask keeps an "
    "entry in every row; the argument is integer-valued or rounded at once; every value is a literal constant "
    "of the notebook; the maximum is subtracted, or a clamp or offset guards the log; or the rewrite the rule "
    "asks for computes the same thing (softmax(log_probs / T) is softmax(logits / T))."
)
FILES_PER_FOLDER = 50


def build_tree(root: Path, lines_wanted: int) -> tuple[int, int]:
    sources = [p.read_text(encoding="utf-8") for p in sorted(CORPUS.glob("*/*.py"))]
    lines = files = 0
    while lines < lines_wanted:
        source = sources[files % len(sources)]
        folder = root / f"pkg{files // FILES_PER_FOLDER:04d}"
        folder.mkdir(exist_ok=True)
        (folder / f"module{files:05d}.py").write_text(source, encoding="utf-8")
        lines += source.count("\n")
        files += 1
    return lines, files


@dataclass(frozen=True)
class Case:
    """One command timed over the tree; ``setup`` takes the tree's root and returns the call, which returns the exit status."""

    what: str
    setup: Callable[[Path], Callable[[], int]]


def _lint(root: Path) -> Callable[[], int]:
    def call():
        with contextlib.redirect_stdout(io.StringIO()):
            return lint_main([str(root)])

    return call


CASES = [Case("lint", _lint)]


def timed_status(call: Callable[[], int], statuses: list[int]) -> float:
    """Seconds of one call; its exit status goes to ``statuses``."""
    start = time.perf_counter()
    statuses.append(call())
    return time.perf_counter() - start


def measure(root: Path, repeats: int) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Each case's times over ``repeats`` rounds after a warm-up (imports, file-system cache), and its last exit status."""
    statuses = {c.what: [] for c in CASES}
    runs = {c.what: functools.partial(timed_status, c.setup(root), statuses[c.what]) for c in CASES}
    times = interleaved(runs, repeats)
    return times, {what: s[-1] for what, s in statuses.items()}


def speed(lines_wanted: int, repeats: int) -> None:
    """The synthetic-tree timing, printed."""
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        lines, files = build_tree(root, lines_wanted)
        times, statuses = measure(root, repeats)
    print(f"machine: {describe()}, Python {sys.version.split()[0]}")
    for what, median in medians(times).items():
        verdict = "meets" if median < TARGET_SECONDS else "MISSES"
        ts = times[what]
        print(f"tree: {lines} lines in {files} files (exit status {statuses[what]})")
        print(f"{what}: median {median:.2f} s over {repeats} runs (min {min(ts):.2f} s, max {max(ts):.2f} s)")
        print(f"speed: {lines / median:,.0f} lines/s; {median * 100_000 / lines:.2f} s per 100,000 lines")
        print(f"target: under {TARGET_SECONDS:.0f} s for 100,000 lines: {verdict}")


# --- the real-code corpus -------------------------------------------------------------------

# A finding's identity: (file relative to the corpus, notebook cell or None, line, code).
Key = tuple[str, "int | None", int, str]


def manifest(root: Path = REALCODE) -> list[dict]:
    """The corpus's repositories: name, url, commit, license and files (paths in the repository)."""
    return json.loads((root / "manifest.json").read_text(encoding="utf-8"))


def judged(root: Path = REALCODE) -> dict[str, dict[str, list[dict]]]:
    """Per corpus file (``<name>/<path>``): its ``expected`` and ``rejected`` findings."""
    return json.loads((root / "judged.json").read_text(encoding="utf-8"))


def corpus_files(root: Path = REALCODE) -> list[str]:
    """Every corpus file as ``<name>/<path>``, in manifest order."""
    return [f"{repo['name']}/{path}" for repo in manifest(root) for path in repo["files"]]


def missing_files(root: Path = REALCODE) -> list[str]:
    """The corpus files that are not on disk (see ``--restore-corpus``)."""
    return [f for f in corpus_files(root) if not (root / f).is_file()]


def restore(sources: Path, root: Path = REALCODE) -> int:
    """Writes every corpus file from the clone ``sources/<name>`` at the manifest's commit; returns the count."""
    count = 0
    for repo in manifest(root):
        clone = sources / repo["name"]
        for path in repo["files"]:
            data = subprocess.run(
                ["git", "-C", str(clone), "show", f"{repo['commit']}:{path}"], capture_output=True, check=True
            ).stdout
            target = root / repo["name"] / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            count += 1
    return count


def key(finding: dict, root: Path = REALCODE) -> Key:
    """The (file, cell, line, code) of a finding of ``--output-format json``."""
    name = Path(finding["filename"]).resolve().relative_to(root.resolve()).as_posix()
    return name, finding.get("cell"), finding["location"]["row"], finding["code"]


def judged_keys(table: dict[str, dict[str, list[dict]]], verdict: str) -> dict[Key, str]:
    """The judged findings of one verdict (``expected`` or ``rejected``), each with its reason."""
    return {
        (name, entry.get("cell"), entry["line"], entry["code"]): entry["why"]
        for name, entries in table.items()
        for entry in entries.get(verdict, [])
    }


def lint_json(paths: Iterable[Path]) -> tuple[list[dict], int, str]:
    """The findings of ``softmaxkit lint --output-format json --fail-on never PATHS``, the exit status and the standard error.

    Each file gets the configuration of the nearest ``pyproject.toml`` above it,
    as in any run. The status is 1 only for a file that could not be parsed or
    read (reported as a finding too), and 2 for a usage or configuration error.
    """
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = lint_main(["--output-format", "json", "--fail-on", "never", *map(str, paths)])
    text = out.getvalue()
    return (json.loads(text) if text.strip() else []), status, err.getvalue()


def lint_corpus(root: Path = REALCODE) -> list[dict]:
    """The linter's findings on the whole corpus; exits with the linter's message on a usage error."""
    findings, status, errors = lint_json(root / f for f in corpus_files(root))
    if status == 2:
        raise SystemExit(f"softmaxkit lint stopped with a usage error on the corpus:\n{errors}")
    return findings


@dataclass
class Score:
    """Findings against judgements, for one repository or all of them."""

    findings: int = 0
    matched: int = 0
    expected: int = 0

    @property
    def precision(self) -> float:
        return self.matched / self.findings if self.findings else 1.0

    @property
    def recall(self) -> float:
        return self.matched / self.expected if self.expected else 1.0


@dataclass
class Comparison:
    """The scores and the lists a maintainer reads: false positives, unjudged findings, misses."""

    by_repository: dict[str, Score]
    total: Score
    false_positives: list[tuple[Key, str]]
    unjudged: list[Key]
    misses: list[tuple[Key, str]]


def compare(findings: list[dict], table: dict[str, dict[str, list[dict]]], root: Path = REALCODE) -> Comparison:
    """Scores ``findings`` against the judgements ``table``."""
    expected, rejected = judged_keys(table, "expected"), judged_keys(table, "rejected")
    found = {key(f, root) for f in findings}
    repositories = [repo["name"] for repo in manifest(root)]
    by_repository = {name: Score() for name in repositories}
    total = Score()
    for k in found:
        for score in (by_repository[k[0].split("/", 1)[0]], total):
            score.findings += 1
            score.matched += k in expected
    for k in expected:
        for score in (by_repository[k[0].split("/", 1)[0]], total):
            score.expected += 1
    false_positives = sorted(((k, rejected[k]) for k in found if k in rejected), key=lambda kw: _order(kw[0]))
    unjudged = sorted((k for k in found if k not in expected and k not in rejected), key=_order)
    misses = sorted(((k, why) for k, why in expected.items() if k not in found), key=lambda kw: _order(kw[0]))
    return Comparison(by_repository, total, false_positives, unjudged, misses)


def _order(k: Key) -> tuple:
    return k[0], k[1] or 0, k[2], k[3]


def where(k: Key) -> str:
    """``file:line`` or ``file[cell N]:line``, and the code."""
    name, cell, line, code = k
    return f"{name}{'' if cell is None else f'[cell {cell}]'}:{line} {code}"


def corpus_lines(root: Path = REALCODE) -> int:
    """Lines of the corpus's Python files and of its notebooks' code cells."""
    lines = 0
    for name in corpus_files(root):
        text = (root / name).read_text(encoding="utf-8")
        if name.endswith(".ipynb"):
            for cell in json.loads(text)["cells"]:
                if cell.get("cell_type") == "code":
                    source = cell.get("source", "")
                    lines += len(("".join(source) if isinstance(source, list) else source).splitlines())
        else:
            lines += len(text.splitlines())
    return lines


def _percent(x: float) -> str:
    return f"{100 * x:.1f} %"


def _against(what: str, value: float, target: float) -> str:
    verdict = "meets" if value >= target else "MISSES"
    return f"- {what} {_percent(value)} (target at least {_percent(target)}): {verdict}"


def report(comparison: Comparison, lines: int, files: int, seconds: float) -> str:
    """The markdown of ``benchmarks/results/lint.md``."""
    columns = ["repository", "findings", "actionable", "not actionable", "known hazards", "missed", "precision", "recall"]
    scores = [*comparison.by_repository.items(), ("**all**", comparison.total)]
    rows = [
        (name, s.findings, s.matched, s.findings - s.matched, s.expected, s.expected - s.matched,
         _percent(s.precision) if s.findings else "-", _percent(s.recall) if s.expected else "-")
        for name, s in scores
    ]
    total = comparison.total
    corpus = (
        f"Corpus: tests/tools/lint/realcode, {len(comparison.by_repository)} repositories, {files} files, "
        f"{lines:,} lines of code (notebooks: code cells). Findings match judged.json on (file, cell, line, "
        "code); `python benchmarks/bench_lint.py --corpus` regenerates this page."
    )
    text = [
        "# softmaxkit lint on real code",
        "",
        f"Machine: {describe()}, Python {sys.version.split()[0]}.",
        corpus,
        "",
        f"Judging: {JUDGING}",
        "",
        *markdown_table(columns, rows, "lrrrrrrr"),
        "",
        _against("precision", total.precision, TARGET_PRECISION),
        _against("recall", total.recall, TARGET_RECALL),
        f"- speed on the corpus: {lines / seconds:,.0f} lines/s ({seconds:.2f} s, median of the timed runs)",
        "",
        "## False positives",
        "",
        *(
            [f"- {where(k)}: {why}" for k, why in comparison.false_positives]
            + [f"- {where(k)}: not judged yet" for k in comparison.unjudged]
            or ["None."]
        ),
        "",
        "## Misses",
        "",
        *([f"- {where(k)}: {why}" for k, why in comparison.misses] or ["None."]),
    ]
    return "\n".join(text) + "\n"


def corpus(repeats: int, out: Path) -> None:
    """Precision, recall and speed on the real-code corpus, printed and written to ``out/lint.md``."""
    absent = missing_files()
    if absent:
        raise SystemExit(
            f"{len(absent)} corpus files are missing (first: {absent[0]}); they are not part of the "
            "repository: write them with --restore-corpus DIR from clones of the manifest's repositories"
        )
    paths = [REALCODE / f for f in corpus_files()]
    findings = lint_corpus()
    times = interleaved({"corpus": functools.partial(timed, functools.partial(lint_json, paths))}, repeats)
    seconds = medians(times)["corpus"]
    comparison = compare(findings, judged())
    text = report(comparison, corpus_lines(), len(paths), seconds)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lint.md").write_text(text, encoding="utf-8")
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=100_000, help="size of the synthetic tree (speed run)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--corpus", action="store_true", help="precision and recall on the real-code corpus")
    parser.add_argument("--restore-corpus", type=Path, metavar="DIR", help="write the corpus files from DIR/<name>")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for lint.md (with --corpus)")
    args = parser.parse_args()
    if args.restore_corpus:
        print(f"wrote {restore(args.restore_corpus)} corpus files")
    elif args.corpus:
        corpus(args.repeats, args.out)
    else:
        speed(args.lines, args.repeats)


if __name__ == "__main__":
    main()
