"""Files, notebooks, ``# noqa``, rule selection and ``[tool.softmaxkit.lint]``."""

from __future__ import annotations

import ast
import dataclasses
import fnmatch
import io
import json
import os
import re
import tokenize
from pathlib import Path

from softmaxkit.tools.files import UnusableFile, open_regular
from softmaxkit.tools.lint.checker import Checker
from softmaxkit.tools.lint.rule import Finding, Rule
from softmaxkit.tools.lint._rules import RULES, SYNTAX_ERROR

# Folders that hold other people's code or build output, never linted when
# found inside a directory argument.
DEFAULT_EXCLUDE = (
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    ".tox",
    ".nox",
    ".eggs",
    "__pycache__",
    ".ipynb_checkpoints",
    ".mypy_cache",
    ".pytest_cache",
    "build",
    "dist",
    "node_modules",
    "site-packages",
)
_CONFIG_KEYS = frozenset({"select", "ignore", "exclude"})
_NOQA = re.compile(r"#\s*noqa(?::\s*(?P<codes>[A-Z]+[0-9]+(?:[\s,]+[A-Z]+[0-9]+)*))?", re.IGNORECASE)
_CODE = re.compile(r"[A-Z]+[0-9]+", re.IGNORECASE)
# Cell magics whose body is still Python.
_PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun", "debug"})
_MAGIC_ASSIGNMENT = re.compile(r"^(\s*[\w.,\s\[\]]+?=\s*)[!%]")
_NEWLINE = re.compile(r"\r\n|\r|\n")
_HELP_LINE = re.compile(r"^\s*[\w.]+\?{1,2}\s*$")
# The most bytes read from one file. Hand-written Python stays far below
# 10 MiB; notebooks carry their outputs (images, tables), so they get more.
MAX_SOURCE_BYTES = 10 * 2**20
MAX_NOTEBOOK_BYTES = 50 * 2**20


class UsageError(Exception):
    """Bad arguments or configuration: exit code 2."""


@dataclasses.dataclass
class Config:
    """The ``[tool.softmaxkit.lint]`` table of one pyproject.toml."""

    root: Path | None = None
    select: list[str] | None = None
    ignore: list[str] = dataclasses.field(default_factory=list)
    exclude: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class FileResult:
    """What linting one file gave.

    ``skipped`` says why a file was not read at all; ``unchecked`` is true
    when that file was a regular file whose code therefore went unchecked
    (unreadable, too large), false for entries that hold no code (a FIFO, a
    device, a broken symbolic link).
    """

    path: str
    findings: list[Finding]
    source: str | None = None
    encoding: str = "utf-8"
    notebook: bool = False
    skipped: str | None = None
    unchecked: bool = False


class _Unreadable(Exception):
    def __init__(self, reason: str, unchecked: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unchecked = unchecked


# ---- selection ---------------------------------------------------------------


def parse_selectors(values: list[str] | str | None, origin: str) -> list[str] | None:
    """Rule codes or prefixes (``SMK1``, ``ALL``) from a list or a comma-separated string."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    prefixes = []
    for value in values:
        for part in str(value).split(","):
            part = part.strip().upper()
            if not part:
                continue
            prefix = "" if part == "ALL" else part
            if not any(rule.code.startswith(prefix) for rule in RULES):
                raise UsageError(f"{origin}: {part!r} matches no rule code (see `softmaxkit lint --list-rules`)")
            prefixes.append(prefix)
    return prefixes


def _longest(code: str, prefixes: list[str]) -> int:
    return max((len(p) for p in prefixes if code.startswith(p)), default=-1)


def enabled_rules(
    config: Config, select: list[str] | None = None, ignore: list[str] | None = None
) -> list[Rule]:
    """The rules to run: the configuration's selection, then the command line's.

    Within one layer the more specific selector wins, so ``select = ["SMK1"]``
    with ``ignore = ["SMK"]`` keeps SMK1xx. A command-line ``--select``
    replaces the configuration's selection; ``--ignore`` removes from it.
    """

    def layer(codes: list[str], chosen: list[str], dropped: list[str]) -> list[str]:
        return [c for c in codes if _longest(c, chosen) > _longest(c, dropped)]

    codes = [rule.code for rule in RULES]
    if select is not None:
        codes = layer(codes, select, ignore or [])
    else:
        codes = layer(codes, config.select if config.select is not None else ["SMK"], config.ignore)
        codes = layer(codes, [""], ignore or [])
    return [rule for rule in RULES if rule.code in codes]


# ---- configuration ---------------------------------------------------------------


def _load_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise UsageError(
                f"{path}: reading pyproject.toml on Python 3.10 needs the tomli package (pip install tomli)"
            ) from None
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise UsageError(f"{path}: {error}") from None


class ConfigFinder:
    """Finds the nearest pyproject.toml with a ``[tool.softmaxkit.lint]`` table."""

    def __init__(self) -> None:
        self._by_directory: dict[Path, Config] = {}

    def for_path(self, path: Path) -> Config:
        # A file's own name is never resolved: a symbolic link takes the
        # configuration of the folder it sits in, and a link loop cannot raise.
        directory = (path if path.is_dir() else path.parent).resolve()
        visited = []
        config = None
        current = directory
        while config is None:
            if current in self._by_directory:
                config = self._by_directory[current]
                break
            visited.append(current)
            candidate = current / "pyproject.toml"
            if candidate.is_file():
                table = _load_toml(candidate).get("tool", {}).get("softmaxkit", {}).get("lint")
                if table is not None:
                    config = _parse_config(table, candidate)
                    break
            if current.parent == current:
                config = Config()
                break
            current = current.parent
        for seen in visited:
            self._by_directory[seen] = config
        return config


def _parse_config(table: object, path: Path) -> Config:
    origin = f"{path} [tool.softmaxkit.lint]"
    if not isinstance(table, dict):
        raise UsageError(f"{origin}: expected a table")
    unknown = sorted(set(table) - _CONFIG_KEYS)
    if unknown:
        raise UsageError(f"{origin}: unknown key {unknown[0]!r} (allowed: exclude, ignore, select)")
    for key, value in table.items():
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise UsageError(f"{origin}: {key} must be a list of strings")
    return Config(
        root=path.parent.resolve(),
        select=parse_selectors(table["select"], f"{origin} select") if "select" in table else None,
        ignore=parse_selectors(table.get("ignore", []), f"{origin} ignore"),
        exclude=list(table.get("exclude", [])),
    )


# ---- files ---------------------------------------------------------------


def _excluded(path: Path, config: Config) -> bool:
    if path.name in DEFAULT_EXCLUDE:
        return True
    if not config.exclude:
        return False
    relative = None
    if config.root is not None:
        try:
            relative = (path.parent.resolve() / path.name).relative_to(config.root).as_posix()
        except ValueError:
            pass
    for pattern in config.exclude:
        pattern = pattern.rstrip("/")
        if fnmatch.fnmatch(path.name, pattern):
            return True
        if relative is not None and fnmatch.fnmatch(relative, pattern):
            return True
    return False


def collect_files(paths: list[str], configs: ConfigFinder) -> list[Path]:
    """Python files and notebooks under ``paths``; files named explicitly are always linted."""
    files = []
    for name in paths:
        path = Path(name)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            for directory, subdirectories, filenames in os.walk(path):
                here = Path(directory)
                config = configs.for_path(here)
                subdirectories[:] = sorted(d for d in subdirectories if not _excluded(here / d, config))
                for filename in sorted(filenames):
                    candidate = here / filename
                    if candidate.suffix in (".py", ".ipynb") and not _excluded(candidate, config):
                        files.append(candidate)
        elif path.exists():
            raise UsageError(f"{name}: not a regular file or directory")
        else:
            raise UsageError(f"{name}: no such file or directory")
    return files


def read_file(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes.

    Anything else raises ``_Unreadable`` (see :func:`open_regular`: a FIFO or
    a device, ``/dev/zero`` behind a symbolic link say, is never read).
    """
    try:
        with open_regular(path, limit) as file:
            data = file.read(limit + 1)
    except UnusableFile as error:
        raise _Unreadable(error.reason, not error.special) from None
    except OSError as error:
        raise _Unreadable(f"cannot be read: {error.strerror or error}", True) from None
    if len(data) > limit:
        raise _Unreadable(f"larger than the {limit // 2**20} MiB limit", True)
    return data


# ---- linting ---------------------------------------------------------------


def _syntax_error(message: str, row: int = 1, column: int = 1, cell: int | None = None) -> Finding:
    rule = SYNTAX_ERROR
    return Finding(rule.code, rule.name, message, rule.severity, row, column, row, column, cell=cell)


def _parse(source: str, filename: str = "<string>") -> ast.Module | Finding:
    """The module, or the SMK000 finding that says why there is none."""
    try:
        return ast.parse(source, filename)
    except SyntaxError as error:
        return _syntax_error(f"SyntaxError: {error.msg}", error.lineno or 1, error.offset or 1)
    except ValueError as error:
        return _syntax_error(f"SyntaxError: {error}")
    except (RecursionError, MemoryError):
        # The parser gives up on deep nesting (thousands of levels) with one of
        # these rather than a SyntaxError; MemoryError is its stack's limit.
        return _syntax_error("too deeply nested to parse")


def check_source(source: str, rules: list[Rule], filename: str = "<string>") -> list[Finding]:
    """Findings for Python source, before ``# noqa`` is applied.

    Source the parser rejects gives one SMK000 finding, and so does a tree
    the analysis cannot follow without overflowing Python's recursion limit
    (it follows long chains without recursing, so this is a safety net).
    """
    tree = _parse(source, filename)
    if isinstance(tree, Finding):
        return [tree]
    if not rules:
        return []
    try:
        return Checker(tree, source, rules).run()
    except RecursionError:
        return [_syntax_error("too deeply nested to analyse")]


def split_lines(source: str) -> list[str]:
    """Lines as the parser counts them (``str.splitlines`` also splits on form feeds)."""
    return _NEWLINE.split(source)


def _suppressed(finding: Finding, line: str) -> bool:
    if "noqa" not in line.lower():
        return False
    match = _NOQA.search(line)
    if match is None:
        return False
    codes = match.group("codes")
    if codes is None:
        return True
    return finding.code in {code.upper() for code in _CODE.findall(codes)}


def apply_noqa(findings: list[Finding], lines: list[str]) -> list[Finding]:
    """The findings that no ``# noqa`` comment suppresses; records each one's line."""
    kept = []
    for finding in findings:
        line = lines[finding.row - 1] if 0 < finding.row <= len(lines) else ""
        finding.line_text = line
        if finding.code == SYNTAX_ERROR.code or not _suppressed(finding, line):
            kept.append(finding)
    return kept


def lint_python(path: Path, rules: list[Rule]) -> FileResult:
    try:
        raw = read_file(path, MAX_SOURCE_BYTES)
    except _Unreadable as error:
        return FileResult(str(path), [], skipped=error.reason, unchecked=error.unchecked)
    try:
        encoding = tokenize.detect_encoding(io.BytesIO(raw).readline)[0]
        source = raw.decode(encoding)
    except (SyntaxError, LookupError, UnicodeDecodeError) as error:
        return FileResult(str(path), [_syntax_error(f"could not decode the file: {error}")])
    lines = split_lines(source)
    findings = check_source(source, rules, str(path))
    if len(findings) == 1 and findings[0].message.startswith("SyntaxError"):
        findings = _check_ipython(lines, rules, str(path)) or findings
    for finding in findings:
        finding.filename = str(path)
    return FileResult(str(path), apply_noqa(findings, lines), source, encoding)


def _check_ipython(lines: list[str], rules: list[Rule], filename: str) -> list[Finding] | None:
    """Findings for a file that is Python once IPython syntax is blanked out as in notebook cells.

    None when there is no such syntax to blank. Like a notebook's, the
    findings have no fix: LibCST cannot parse the file to apply one.
    """
    cleaned = _cell_lines("\n".join(lines))
    if cleaned is None or cleaned == lines:
        return None
    findings = check_source("\n".join(cleaned), rules, filename)
    for finding in findings:
        finding.fix = None
    return findings


def _cell_lines(source: str) -> list[str] | None:
    """The cell's lines with IPython syntax blanked out; None for a non-Python cell."""
    lines = source.split("\n")
    first = lines[0].strip() if lines else ""
    if first.startswith("%%"):
        words = first[2:].split()
        if not words or words[0] not in _PYTHON_CELL_MAGICS:
            return None
        lines[0] = ""
    cleaned = []
    for line in lines:
        stripped = line.lstrip()
        indent = line[: len(line) - len(stripped)]
        if stripped.startswith(("%", "!")) or _HELP_LINE.match(line):
            # ``pass`` keeps an indented block valid and the line numbers unchanged.
            cleaned.append(indent + "pass")
        else:
            match = _MAGIC_ASSIGNMENT.match(line)
            cleaned.append(match.group(1) + "None" if match else line)
    return cleaned


def lint_notebook(path: Path, rules: list[Rule]) -> FileResult:
    """Lints the code cells as one module, so names flow from cell to cell."""
    name = str(path)
    result = FileResult(name, [], notebook=True)
    try:
        data = json.loads(read_file(path, MAX_NOTEBOOK_BYTES).decode("utf-8"))
    except _Unreadable as error:
        return FileResult(name, [], notebook=True, skipped=error.reason, unchecked=error.unchecked)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        result.findings.append(_syntax_error(f"invalid notebook: {error}"))
        return _named(result)
    except RecursionError:
        result.findings.append(_syntax_error("invalid notebook: its JSON is nested too deeply"))
        return _named(result)
    problem = _notebook_problem(data)
    if problem is not None:
        result.findings.append(_syntax_error(f"invalid notebook: {problem}"))
        return _named(result)
    language = data.get("metadata", {}).get("language_info", {}).get("name", "python")
    if language != "python":
        return result
    sources: dict[int, str] = {}
    module_lines: list[str] = []
    origins: list[tuple[int, int]] = []
    for number, cell in enumerate(data["cells"], 1):
        if not isinstance(cell, dict):
            result.findings.append(_syntax_error("invalid notebook: the cell is not an object", cell=number))
            continue
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        if isinstance(source, list) and all(isinstance(line, str) for line in source):
            source = "".join(source)
        if not isinstance(source, str):
            message = "invalid notebook: the cell's source is not a string or a list of strings"
            result.findings.append(_syntax_error(message, cell=number))
            continue
        lines = _cell_lines(source)
        if lines is None:
            continue
        tree = _parse("\n".join(lines))
        if isinstance(tree, Finding):
            tree.cell = number
            result.findings.append(tree)
            continue
        sources[number] = source
        module_lines.extend(lines)
        origins.extend((number, row) for row in range(1, len(lines) + 1))
    findings = check_source("\n".join(module_lines), rules, name)
    for finding in findings:
        cell, row = origins[finding.row - 1]
        end_cell, end_row = origins[finding.end_row - 1]
        finding.cell = cell
        finding.end_row = end_row if end_cell == cell else row
        finding.row = row
        # Fixes rewrite files; a notebook's JSON is left alone.
        finding.fix = None
        result.findings.extend(apply_noqa([finding], sources[cell].split("\n")))
    return _named(result)


def _notebook_problem(data: object) -> str | None:
    """What is wrong with the notebook's outer structure, if anything."""
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        return "no list of cells"
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        return "its metadata is not an object"
    if not isinstance(metadata.get("language_info", {}), dict):
        return "its metadata.language_info is not an object"
    return None


def _named(result: FileResult) -> FileResult:
    for finding in result.findings:
        finding.filename = result.path
    return result


def lint_file(path: Path, rules: list[Rule]) -> FileResult:
    """Lints one file; one that cannot be read comes back with ``skipped`` set."""
    if path.suffix == ".ipynb":
        return lint_notebook(path, rules)
    return lint_python(path, rules)
