"""Which files a run checks, and reading them with a size limit."""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

from softmaxkit.tools.files import UnusableFile, open_regular
from softmaxkit.tools.lint.config import ConfigFinder
from softmaxkit.tools.lint.settings import Config, UsageError

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
# The most bytes read from one file. Hand-written Python stays far below
# 10 MiB; notebooks carry their outputs (images, tables), so they get more.
MAX_SOURCE_BYTES = 10 * 2**20
MAX_NOTEBOOK_BYTES = 50 * 2**20


class Unreadable(Exception):
    """A file that was not read: ``reason`` says why; ``unchecked`` is false for entries that hold no code."""

    def __init__(self, reason: str, unchecked: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unchecked = unchecked


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

    Anything else raises ``Unreadable`` (see :func:`open_regular`: a FIFO or
    a device, ``/dev/zero`` behind a symbolic link say, is never read).
    """
    try:
        with open_regular(path, limit) as file:
            data = file.read(limit + 1)
    except UnusableFile as error:
        raise Unreadable(error.reason, not error.special) from None
    except OSError as error:
        raise Unreadable(f"cannot be read: {error.strerror or error}", True) from None
    if len(data) > limit:
        raise Unreadable(f"larger than the {limit // 2**20} MiB limit", True)
    return data
