"""What a run is told: the settings that apply to a file, and the error for bad ones."""

from __future__ import annotations

import dataclasses
from pathlib import Path

# ``--fail-on`` and ``fail-on``: which findings make the exit status 1.
FAIL_ON = ("error", "warning", "never")
# The operations a ``[tool.softmaxkit.lint.functions]`` entry may name: a
# declared wrapper is treated as the library function that computes it.
WRAPPER_OPERATIONS = (
    "binary_cross_entropy",
    "cross_entropy",
    "exp",
    "kl_div",
    "log",
    "log_softmax",
    "logsumexp",
    "nll_loss",
    "sigmoid",
    "softmax",
)


class UsageError(Exception):
    """Bad arguments or configuration: exit code 2."""


@dataclasses.dataclass
class Config:
    """The ``[tool.softmaxkit.lint]`` table of one pyproject.toml.

    ``fail_on`` is None when the table does not set it (the default policy,
    ``"error"``, applies); ``functions`` maps the dotted names of the
    project's own wrappers to the operations they compute.
    """

    root: Path | None = None
    select: list[str] | None = None
    ignore: list[str] = dataclasses.field(default_factory=list)
    exclude: list[str] = dataclasses.field(default_factory=list)
    fail_on: str | None = None
    functions: dict[str, str] = dataclasses.field(default_factory=dict)
