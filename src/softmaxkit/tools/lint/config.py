"""``[tool.softmaxkit.lint]``: finding the nearest pyproject.toml that configures a file."""

from __future__ import annotations

from pathlib import Path

from softmaxkit.tools.lint.selection import parse_selectors
from softmaxkit.tools.lint.settings import Config, UsageError

_CONFIG_KEYS = frozenset({"select", "ignore", "exclude"})


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
