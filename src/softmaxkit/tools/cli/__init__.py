"""The ``softmaxkit`` command.

Each subcommand lives in its own module that exposes ``register(subparsers)``;
``register`` adds an argparse sub-parser whose ``func`` default takes the parsed
arguments and returns the exit code (0 ok, 1 findings or failure, 2 usage error).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys

# Modules that provide a subcommand, in the order ``--help`` lists them.
_SUBCOMMANDS = (
    "softmaxkit.tools.cli.demo",
    "softmaxkit.tools.cli.lint",
    "softmaxkit.tools.cli.check",
    "softmaxkit.tools.cli.calibrate",
    "softmaxkit.tools.cli.report",
)


def version() -> str:
    """The installed distribution's version (the one statement is in pyproject.toml)."""
    try:
        return importlib.metadata.version("softmaxkit")
    except importlib.metadata.PackageNotFoundError:
        # a source tree on sys.path that was never installed
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="softmaxkit",
        description="Exact, NaN-free softmax, cross-entropy and diagnostics.",
    )
    parser.add_argument("--version", action="version", version=f"softmaxkit {version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMANDS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
