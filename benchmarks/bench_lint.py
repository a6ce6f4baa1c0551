"""How fast ``softmaxkit lint`` checks a 100,000-line tree (target: under 10 s).

Builds a synthetic tree by copying the test corpora's Python files (buggy and
clean) into nested folders of a temporary directory until it holds the
requested number of lines, then times the command-line run over it, output
discarded, in this process. Run with:

    PYTHONPATH=src python benchmarks/bench_lint.py [--lines 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from _harness import REPOSITORY, describe, interleaved, medians

from softmaxkit.tools.cli.lint import main as lint_main

CORPUS = REPOSITORY / "tests" / "tools" / "lint" / "corpus"
TARGET_SECONDS = 10.0
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        lines, files = build_tree(root, args.lines)
        times, statuses = measure(root, args.repeats)
    print(f"machine: {describe()}, Python {sys.version.split()[0]}")
    for what, median in medians(times).items():
        verdict = "meets" if median < TARGET_SECONDS else "MISSES"
        ts = times[what]
        print(f"tree: {lines} lines in {files} files (exit status {statuses[what]})")
        print(f"{what}: median {median:.2f} s over {args.repeats} runs (min {min(ts):.2f} s, max {max(ts):.2f} s)")
        print(f"speed: {lines / median:,.0f} lines/s; {median * 100_000 / lines:.2f} s per 100,000 lines")
        print(f"target: under {TARGET_SECONDS:.0f} s for 100,000 lines: {verdict}")


if __name__ == "__main__":
    main()
