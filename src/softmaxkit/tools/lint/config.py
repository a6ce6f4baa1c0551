"""``[tool.softmaxkit.lint]``: finding the nearest pyproject.toml that configures a file."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from softmaxkit.tools.lint.selection import parse_selectors
from softmaxkit.tools.lint.settings import FAIL_ON, WRAPPER_OPERATIONS, Config, UsageError

_LIST_KEYS = ("exclude", "ignore", "select")
_CONFIG_KEYS = frozenset({*_LIST_KEYS, "fail-on", "functions"})
_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\Z")


class ConfigFinder:
    """Finds the nearest pyproject.toml with a ``[tool.softmaxkit.lint]`` table.

    A pyproject.toml that cannot be read or is not valid TOML may configure
    other tools only, so it does not stop the run: ``warn(path, text)`` is
    called once for it, and the search goes on in the folders above, as for
    a file without the table. A readable table with a bad key or value
    raises :class:`UsageError`.
    """

    def __init__(self, warn: Callable[[Path, str], None]) -> None:
        self._by_directory: dict[Path, Config] = {}
        self._warn = warn

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
                config = self._read(_shown(candidate))
                if config is not None:
                    break
            if current.parent == current:
                config = Config()
                break
            current = current.parent
        for seen in visited:
            self._by_directory[seen] = config
        return config

    def _read(self, path: Path) -> Config | None:
        """The configuration in ``path``, or None when it has none (or cannot be read)."""
        try:
            data = _load_toml(path)
        except _Unreadable as error:
            self._warn(path, f"not read ({error}); the configuration above it or the defaults apply")
            return None
        tool = data.get("tool")
        if not isinstance(tool, dict) or "softmaxkit" not in tool:
            return None
        ours = tool["softmaxkit"]
        if not isinstance(ours, dict):
            raise UsageError(f"{path} [tool.softmaxkit]: expected a table")
        if "lint" not in ours:
            return None
        return _parse_config(ours["lint"], path)


def _shown(path: Path) -> Path:
    """``path`` relative to the working directory when it lies below it, as the user named the files."""
    try:
        return path.relative_to(Path.cwd().resolve())
    except (ValueError, OSError):
        return path


class _Unreadable(Exception):
    """A pyproject.toml that cannot be opened or is not valid TOML."""


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
    except OSError as error:
        raise _Unreadable(error.strerror or str(error)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise _Unreadable(f"invalid TOML: {error}") from None


def _parse_config(table: object, path: Path) -> Config:
    origin = f"{path} [tool.softmaxkit.lint]"
    if not isinstance(table, dict):
        raise UsageError(f"{origin}: expected a table")
    unknown = sorted(set(table) - _CONFIG_KEYS)
    if unknown:
        allowed = ", ".join(sorted(_CONFIG_KEYS))
        raise UsageError(f"{origin}: unknown key {unknown[0]!r} (allowed: {allowed})")
    for key in _LIST_KEYS:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise UsageError(f"{origin}: {key} must be a list of strings, not {value!r}")
    fail_on = table.get("fail-on")
    if fail_on is not None and fail_on not in FAIL_ON:
        raise UsageError(f"{origin}: fail-on is {fail_on!r}; allowed: {', '.join(map(repr, FAIL_ON))}")
    return Config(
        root=path.parent.resolve(),
        select=parse_selectors(table["select"], f"{origin} select") if "select" in table else None,
        ignore=parse_selectors(table.get("ignore", []), f"{origin} ignore"),
        exclude=list(table.get("exclude", [])),
        fail_on=fail_on,
        functions=_parse_functions(table.get("functions", {}), f"{path} [tool.softmaxkit.lint.functions]"),
    )


def _parse_functions(table: object, origin: str) -> dict[str, str]:
    """``"mypkg.utils.softmax" = "softmax"`` entries: a wrapper's dotted name and the operation it computes."""
    if not isinstance(table, dict):
        raise UsageError(f"{origin}: expected a table of \"dotted.name\" = \"operation\", not {table!r}")
    for name, operation in table.items():
        if not _DOTTED_NAME.match(name):
            raise UsageError(f"{origin}: {name!r} is not a dotted name such as \"mypkg.utils.softmax\"")
        if operation not in WRAPPER_OPERATIONS:
            raise UsageError(
                f"{origin}: {name!r} = {operation!r} names no operation; allowed: {', '.join(WRAPPER_OPERATIONS)}"
            )
    return dict(table)
