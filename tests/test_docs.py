"""Every code block in README.md and docs/ runs as written.

A page is one session: its ``python`` blocks run in order in one namespace,
inside a fresh working directory, so a later block may use what an earlier
one defined or wrote.  Blocks written as ``>>>`` sessions are doctests.  A
``text`` block right after a ``python`` block that prints is that block's
expected output.  A ``python`` block whose first line is ``# file: NAME`` is
also written to NAME in the page's directory.  A ``console`` block is a shell
session: each ``$ softmaxkit ...`` or ``$ torchrun ...`` line runs the
command in the page's directory, and what follows it is the expected output
(``...`` stands for any text).  docs/lint-rules.md holds
snippets for the linter, not programs: with the imports that page says its
examples assume, each rule's example must be reported by that rule and its
replacement must not.
"""

from __future__ import annotations

import contextlib
import doctest
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SESSION_PAGES = [p for p in PAGES if p.name != "lint-rules.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", flags=re.S | re.M)
MATCH = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
# Libraries a page may need that softmaxkit does not depend on; softmaxkit.torch
# and softmaxkit.jax need the library they are named after.
OPTIONAL = ("torch", "jax", "matplotlib", "transformers", "triton")
IMPORT = re.compile(r"^(?:>>> )?(?:from\s+([\w.]+)\s+import\b|import\s+(.+))")


def blocks(page: Path) -> list[tuple[str, str]]:
    """(language, text) of every fenced block of ``page``, in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(page.read_text(encoding="utf-8"))]


def optional_libraries(page: Path) -> set[str]:
    """The optional libraries that the ``python`` blocks of ``page`` import."""
    needed = set()
    for language, text in blocks(page):
        for line in text.splitlines() if language == "python" else []:
            match = IMPORT.match(line.strip())
            if match is None:
                continue
            modules = [match.group(1)] if match.group(1) else [part.split(" as ")[0].strip() for part in match.group(2).split(",")]
            for module in modules:
                parts = module.split(".")
                library = parts[1] if parts[0] == "softmaxkit" and len(parts) > 1 else parts[0]
                if library in OPTIONAL:
                    needed.add(library)
    return needed


def assert_output(expected: str, got: str, where: str) -> None:
    checker = doctest.OutputChecker()
    assert checker.check_output(expected, got, MATCH), f"{where}: expected\n{expected}\ngot\n{got}"


def run_doctest(text: str, namespace: dict, where: str) -> None:
    test = doctest.DocTestParser().get_doctest(text, namespace, where, where, 0)
    out = io.StringIO()
    result = doctest.DocTestRunner(optionflags=MATCH).run(test, out=out.write, clear_globs=False)
    assert result.failed == 0, out.getvalue()
    namespace.update(test.globs)  # DocTest ran on a copy; later blocks see its names


def run_console(text: str, cwd: Path, where: str) -> None:
    """Run each ``$ softmaxkit ...`` line and compare with the lines after it."""
    for command in re.split(r"^\$ ", text, flags=re.M)[1:]:
        line, _, expected = command.partition("\n")
        argv = shlex.split(line, comments=True)
        module = {"softmaxkit": "softmaxkit", "torchrun": "torch.distributed.run"}.get(argv[0])
        assert module is not None, f"{where}: only softmaxkit and torchrun commands are run: {line!r}"
        done = subprocess.run(
            [sys.executable, "-m", module, *argv[1:]], cwd=cwd, capture_output=True, text=True, timeout=120
        )
        assert "Traceback" not in done.stderr, f"{where}: {line}\n{done.stderr}"
        assert done.returncode in (0, 1), f"{where}: {line} exited {done.returncode}\n{done.stderr}"
        if expected.strip():
            assert_output(expected, done.stdout + done.stderr, f"{where}: {line}")


@pytest.mark.parametrize("page", SESSION_PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_runs_as_written(page, tmp_path, monkeypatch):
    for library in sorted(optional_libraries(page)):
        pytest.importorskip(library)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    printed = None
    for number, (language, text) in enumerate(blocks(page), start=1):
        where = f"{page.name} block {number}"
        if language == "python" and text.lstrip().startswith(">>>"):
            run_doctest(text, namespace, where)
            printed = None
        elif language == "python":
            name = re.match(r"# file: (\S+)\n", text)
            if name:
                (tmp_path / name.group(1)).write_text(text, encoding="utf-8")
            stdout = io.StringIO()
            with contextlib.redirect_stdout(stdout):
                exec(compile(text, where, "exec"), namespace)
            printed = stdout.getvalue() or None
        elif language == "text" and printed is not None:
            assert_output(text, printed, where)
            printed = None
        elif language == "console":
            run_console(text, tmp_path, where)


def rule_examples():
    from softmaxkit.tools.lint import ALL_RULES

    text = (ROOT / "docs" / "lint-rules.md").read_text(encoding="utf-8")
    assumed = re.search(r"^The examples assume (.*)\.$", text, flags=re.M).group(1)
    imports = "".join(f"{line}\n" for line in re.findall(r"`([^`]+)`", assumed))
    for rule in ALL_RULES:
        section = text.split(f"\n## {rule.code} ")[1].split("\n## ")[0]
        example = section.split("### Example\n")[1].split("### ")[0]
        instead = section.split("### Use instead\n")[1].split("### ")[0]
        example, instead = FENCE.search(example).group(2), FENCE.search(instead).group(2)
        if rule.code != "SMK000":  # the syntax-error example is not Python at all
            example, instead = imports + example, imports + instead
        yield rule.code, example, instead


@pytest.mark.parametrize("code, example, instead", list(rule_examples()), ids=lambda v: v if v.startswith("SMK") else "")
def test_lint_rule_examples(code, example, instead):
    from softmaxkit.tools.lint import ALL_RULES, check_source

    assert code in {f.code for f in check_source(example, ALL_RULES, "example.py")}, example
    assert code not in {f.code for f in check_source(instead, ALL_RULES, "instead.py")}, instead
