import argparse

import pytest

from softmaxkit.tools.cli import lint as cli


@pytest.fixture
def run_lint(capsys):
    """Runs ``softmaxkit lint ARGS``; returns (exit code, stdout, stderr)."""

    def run(*args):
        parser = argparse.ArgumentParser(prog="softmaxkit")
        cli.register(parser.add_subparsers(dest="command"))
        try:
            parsed = parser.parse_args(["lint", *map(str, args)])
            code = parsed.func(parsed)
        except SystemExit as exit:
            code = exit.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run

