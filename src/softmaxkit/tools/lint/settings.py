"""What a run is told: the settings that apply to a file, and the error for bad ones."""

from __future__ import annotations

import dataclasses
from pathlib import Path


class UsageError(Exception):
    """Bad arguments or configuration: exit code 2."""


@dataclasses.dataclass
class Config:
    """The ``[tool.softmaxkit.lint]`` table of one pyproject.toml."""

    root: Path | None = None
    select: list[str] | None = None
    ignore: list[str] = dataclasses.field(default_factory=list)
    exclude: list[str] = dataclasses.field(default_factory=list)
