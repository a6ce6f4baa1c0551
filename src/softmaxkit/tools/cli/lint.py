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
from softmaxkit.tools.lint.rules import ALL_RULES, find_rule
from softmaxkit.tools.lint.selection import enabled_rules, parse_selectors
from softmaxkit.tools.lint.settings import UsageError
from softmaxkit.tools.lint.source import split_lines

_DESCRIPTION = """\
Find numerically unstable or wrong uses of softmax, log, exp and
cross-entropy in Python files and Jupyter notebooks (code cells).

Exit status: 0 when nothing is found, 1 when something is (or a file cannot
be parsed, or a Python file cannot be read), 2 for a usage or configuration
error. Entries that are not regular files (FIFOs, devices, broken symbolic
links) are skipped with a warning and do not change the status.
"""

_EPILOG = """\
Configuration: [tool.softmaxkit.lint] in the nearest pyproject.toml above each
file, with keys select, ignore and exclude (lists of strings).
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
    configs = ConfigFinder()
    paths = args.paths or ["."]
    files = collect_files(paths, configs)
    roots = [Path(name).resolve() for name in paths]
    findings: list[Finding] = []
    fixed = 0
    diffs = []
    unchecked = 0
    for path in files:
        rules = enabled_rules(configs.for_path(path), select, ignore)
        result = lint_file(path, rules)
        if result.skipped is not None:
            _warn(path, f"skipped, {result.skipped}")
            unchecked += result.unchecked
            continue
        if fixing and not result.notebook and result.source is not None:
            result, applied = _fix_file(path, result, rules, args, roots, diffs)
            fixed += applied
        findings.extend(result.findings)
    findings.sort(key=Finding.sort_key)
    if args.diff:
        out.write("".join(diffs))
        count = len(diffs)
        print(f"Would fix {count} {'file' if count == 1 else 'files'}." if count else "No fixes available.", file=sys.stderr)
        return 1 if diffs or unchecked else 0
    _write(out, args, findings, fixed, unchecked)
    return 1 if findings or unchecked else 0


def _fix_file(
    path: Path, result: FileResult, rules: list[Rule], args: argparse.Namespace, roots: list[Path], diffs: list[str]
) -> tuple[FileResult, int]:
    """Fixes one linted file, or adds its diff to ``diffs`` with ``--diff``.

    Returns the result to report (the file linted again once fixes were
    written) and the number of fixes written.
    """
    try:
        new_source, applied = fix_source(result.source, rules, args.unsafe_fixes)
    except RecursionError:
        # LibCST's visitor recurses per node: about 70 nested calls are too many.
        _warn(path, "not fixed, too deeply nested for the fixer")
        return result, 0
    if not applied:
        return result, 0
    refusal = write_refusal(path, roots)
    if refusal is not None:
        _warn(path, f"not fixed, {refusal}")
        return result, 0
    if args.diff:
        diffs.append(_diff(result.path, result.source, new_source))
        return result, 0
    try:
        write_atomic(path, new_source.encode(result.encoding))
    except OSError as error:
        _warn(path, f"not fixed, could not write it: {error}")
        return result, 0
    return lint_file(path, rules), applied


def _warn(path: Path, text: str) -> None:
    print(f"softmaxkit lint: warning: {path}: {text}", file=sys.stderr)


def _write(out, args: argparse.Namespace, findings: list[Finding], fixed: int, unchecked: int) -> None:
    fmt = args.output_format
    if fmt == "json":
        out.write(output.as_json(findings))
    elif fmt == "sarif":
        out.write(output.as_sarif(findings, _version()))
    elif fmt == "github":
        out.write(output.github(findings))
    else:
        render = output.full if fmt == "full" else output.concise
        out.write(render(findings, args.unsafe_fixes))
        out.write(output.summary(findings, fixed, args.unsafe_fixes, fix_mode=args.fix, unchecked=unchecked))


def fix_source(source: str, rules: list[Rule], unsafe_fixes: bool = False) -> tuple[str, int]:
    """Applies the fixes of ``rules`` to ``source`` until none is left; returns it and the count."""
    total = 0
    for _ in range(_FIX_ROUNDS):
        findings = check_source(source, rules)
        fixes = [
            f.fix
            for f in apply_noqa(findings, split_lines(source))
            if f.fix is not None and (f.fix.applicability == "safe" or unsafe_fixes)
        ]
        if not fixes:
            break
        source, applied = apply_fixes(source, fixes)
        if not applied:
            break
        total += applied
    return source, total


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
