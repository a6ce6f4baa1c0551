"""The error that stops a run before any file is checked."""

from __future__ import annotations


class UsageError(Exception):
    """Bad arguments or configuration: exit code 2."""
