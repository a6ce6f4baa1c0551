"""``softmaxkit lint``: the command-line front end."""

from __future__ import annotations

import argparse
import difflib
import importlib.metadata
import sys
from pathlib import Path

from softmaxkit.tools.lint import output
from softmaxkit.tools.lint.config import ConfigFinder
from softmaxkit.tools.lint.files import collect_files
from softmaxkit.tools.lint.fix import (
    MISSING_LIBCST,
    apply_fixes,
    libcst_available,
    write_atomic,
    write_refusal,
)
from softmaxkit.tools.lint.linter import FileResult, check_source, lint_file
from softmaxkit.tools.lint.noqa import apply_noqa
from softmaxkit.tools.lint.rule import Finding, Rule
from softmaxkit.tools.lint.rules import ALL_RULES, PARSE_FAILURE, find_rule
from softmaxkit.tools.lint.selection import enabled_rules, parse_selectors
from softmaxkit.tools.lint.settings import FAIL_ON, UsageError
from softmaxkit.tools.lint.source import split_lines

_DESCRIPTION = """\
Find numerically unstable or wrong uses of softmax, log, exp and
cross-entropy in Python files and Jupyter notebooks (code cells).

Each rule is an error (the code is wrong whenever it runs) or a warning (it
can fail on some inputs). Exit status: 0 when nothing fails the run, 1 when
something does: by default an error, not a warning (see --fail-on); always
a file that cannot be parsed (SMK000) or a Python file or notebook that
cannot be read. 2 for a usage or configuration error. Entries that are not
regular files (FIFOs, devices, broken symbolic links) are skipped with a
warning and do not change the status.
"""

_EPILOG = """\
Configuration: [tool.softmaxkit.lint] in the nearest pyproject.toml above each
file, with keys select, ignore and exclude (lists of strings), fail-on
(error, warning or never) and a [tool.softmaxkit.lint.functions] table that
declares the project's own wrappers ("mypkg.utils.softmax" = "softmax").
Suppress one finding with `# noqa` or `# noqa: SMK102` on its first line.
Rules and their fixes: softmaxkit lint --list-rules, softmaxkit lint --explain CODE.
"""

# Fixing may uncover a fix that an outer one overlapped; a few rounds settle it.
_FIX_ROUNDS = 10


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "lint",
        help="find numerically unstable softmax, log, exp and cross-entropy code",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help="files or directories (default: .)")
    parser.add_argument(
        "--output-format",
        choices=output.FORMATS,
        default="concise",
        help="concise (default): one line per finding; full: with the source line; "
        "json, sarif (2.1.0), github (Actions annotations)",
    )
    parser.add_argument(
        "--fail-on",
        choices=FAIL_ON,
        help="which findings make the exit status 1: error (default; warnings are reported and exit 0), "
        "warning (either), never (only SMK000 and unreadable files do); overrides fail-on in pyproject.toml",
    )
    parser.add_argument("--select", metavar="CODES", help="comma-separated codes or prefixes to check (SMK1, SMK203, ALL)")
    parser.add_argument("--ignore", metavar="CODES", help="comma-separated codes or prefixes not to check")
    parser.add_argument("--fix", action="store_true", help="apply safe fixes in place (needs softmaxkit[lint])")
    parser.add_argument("--unsafe-fixes", action="store_true", help="with --fix or --diff, apply unsafe fixes too")
    parser.add_argument("--diff", action="store_true", help="print the fixes as a unified diff; write nothing")
    parser.add_argument("--explain", metavar="CODE", help="explain a rule (code or name) and exit")
    parser.add_argument("--list-rules", action="store_true", help="list the rules and exit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except UsageError as error:
        print(f"softmaxkit lint: error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    out = sys.stdout
    if args.explain is not None:
        rule = find_rule(args.explain)
        if rule is None:
            raise UsageError(f"unknown rule {args.explain!r} (see --list-rules)")
        out.write(f"# {rule.name} ({rule.code})\n\nFix: {rule.fix_safety}.\n\n{rule.explanation()}\n")
        return 0
    if args.list_rules:
        for rule in ALL_RULES:
            out.write(f"{rule.code}  {rule.name:<38} fix: {rule.fix_safety:<6} {rule.severity}\n")
        return 0
    select = parse_selectors(args.select, "--select")
    ignore = parse_selectors(args.ignore, "--ignore")
    fixing = args.fix or args.diff
    if fixing and not libcst_available():
        raise UsageError(MISSING_LIBCST)
    configs = ConfigFinder(_warn)
    paths = args.paths or ["."]
    files = collect_files(paths, configs)
    roots = [Path(name).resolve() for name in paths]
    findings: list[Finding] = []
    fixed: list[Finding] = []
    diffs = []
    unchecked = 0
    failed = False
    positions: output.Positions = {}
    for path in files:
        config = configs.for_path(path)
        rules = enabled_rules(config, select, ignore)
        result = lint_file(path, rules, config.functions)
        if result.skipped is not None:
            _warn(path, f"skipped, {result.skipped}")
            unchecked += result.unchecked
            continue
        if fixing and not result.notebook and result.source is not None:
            result, applied = _fix_file(path, result, rules, config.functions, args, roots, diffs)
            fixed.extend(applied)
        findings.extend(result.findings)
        positions[result.path] = result.file_positions
        policy = args.fail_on or config.fail_on or "error"
        failed = failed or any(fails(finding, policy) for finding in result.findings)
    findings.sort(key=Finding.sort_key)
    if args.diff:
        out.write("".join(diffs))
        count = len(diffs)
        print(f"Would fix {count} {'file' if count == 1 else 'files'}." if count else "No fixes available.", file=sys.stderr)
        return 1 if diffs or unchecked else 0
    _write(out, args, findings, fixed, unchecked, positions)
    return 1 if failed or unchecked else 0


def fails(finding: Finding, policy: str) -> bool:
    """Whether ``finding`` makes the exit status 1 under ``--fail-on policy``.

    ``error`` fails on errors, ``warning`` on errors and warnings, ``never``
    on neither. SMK000 fails under every policy: its file went unchecked.

    >>> warning = Finding("SMK301", "log-one-plus", "...", "warning", 1, 1, 1, 2)
    >>> fails(warning, "error"), fails(warning, "warning")
    (False, True)
    """
    if finding.code == PARSE_FAILURE.code:
        return True
    return policy == "warning" or (policy == "error" and finding.severity == "error")


def _fix_file(
    path: Path,
    result: FileResult,
    rules: list[Rule],
    functions: dict[str, str],
    args: argparse.Namespace,
    roots: list[Path],
    diffs: list[str],
) -> tuple[FileResult, list[Finding]]:
    """Fixes one linted file, or adds its diff to ``diffs`` with ``--diff``.

    Returns the result to report (the file linted again once fixes were
    written) and the findings whose fixes were written.
    """
    try:
        new_source, applied = _fix_rounds(result.source, rules, args.unsafe_fixes, functions)
    except RecursionError:
        # LibCST's visitor recurses per node: about 70 nested calls are too many.
        _warn(path, "not fixed, too deeply nested for the fixer")
        return result, []
    if not applied:
        return result, []
    refusal = write_refusal(path, roots)
    if refusal is not None:
        _warn(path, f"not fixed, {refusal}")
        return result, []
    if args.diff:
        diffs.append(_diff(result.path, result.source, new_source))
        return result, []
    try:
        write_atomic(path, new_source.encode(result.encoding))
    except OSError as error:
        _warn(path, f"not fixed, could not write it: {error}")
        return result, []
    return lint_file(path, rules, functions), applied


def _warn(path: Path, text: str) -> None:
    print(f"softmaxkit lint: warning: {path}: {text}", file=sys.stderr)


def _write(
    out,
    args: argparse.Namespace,
    findings: list[Finding],
    fixed: list[Finding],
    unchecked: int,
    positions: output.Positions,
) -> None:
    fmt = args.output_format
    if fmt == "json":
        out.write(output.as_json(findings))
    elif fmt == "sarif":
        out.write(output.as_sarif(findings, _version(), positions))
    elif fmt == "github":
        out.write(output.github(findings, positions))
    else:
        render = output.full if fmt == "full" else output.concise
        out.write(render(findings, args.unsafe_fixes))
        out.write(output.summary(findings, fixed, args.unsafe_fixes, fix_mode=args.fix, unchecked=unchecked))


def fix_source(
    source: str, rules: list[Rule], unsafe_fixes: bool = False, functions: dict[str, str] | None = None
) -> tuple[str, int]:
    """Applies the fixes of ``rules`` to ``source`` until none is left; returns it and the count.

    ``functions`` declares the project's wrappers, as for ``check_source``.
    """
    source, done = _fix_rounds(source, rules, unsafe_fixes, functions)
    return source, len(done)


def _fix_rounds(
    source: str, rules: list[Rule], unsafe_fixes: bool, functions: dict[str, str] | None
) -> tuple[str, list[Finding]]:
    """The fixed source and the findings whose fixes were applied."""
    done: list[Finding] = []
    for _ in range(_FIX_ROUNDS):
        findings = check_source(source, rules, functions=functions)
        fixable = {
            id(f.fix): f
            for f in apply_noqa(findings, split_lines(source))
            if f.fix is not None and (f.fix.applicability == "safe" or unsafe_fixes)
        }
        if not fixable:
            break
        source, applied = apply_fixes(source, [f.fix for f in fixable.values()])
        if not applied:
            break
        done.extend(fixable[id(fix)] for fix in applied)
    return source, done


def _diff(name: str, old: str, new: str) -> str:
    text = "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), fromfile=name, tofile=name
        )
    )
    return text if text.endswith("\n") else text + "\n"


def _version() -> str | None:
    try:
        return importlib.metadata.version("softmaxkit")
    except importlib.metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    """Runs ``softmaxkit lint`` alone, without the other subcommands."""
    parser = argparse.ArgumentParser(prog="softmaxkit")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["lint", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)
