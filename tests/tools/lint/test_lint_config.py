"""``[tool.softmaxkit.lint]``: declared wrappers, and pyproject.toml files that cannot be read."""

import json
import textwrap

import pytest

from softmaxkit.tools.lint import linter
from softmaxkit.tools.lint.settings import WRAPPER_OPERATIONS

LOG1P = "import numpy as np\ny = np.log(1 + p)\n"
FUNCTIONS = """\
[tool.softmaxkit.lint.functions]
"fairseq.utils.softmax" = "softmax"
"mypkg.losses.xent" = "cross_entropy"
"""


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _warnings(err):
    return [line for line in err.splitlines() if line.startswith("softmaxkit lint: warning: ")]


@pytest.fixture
def checkers(monkeypatch):
    """The ``functions`` each Checker was built with, in order."""
    seen = []
    real = linter.Checker

    def checker(tree, source, rules, functions=None):
        seen.append(functions)
        return real(tree, source, rules, functions=functions)

    monkeypatch.setattr(linter, "Checker", checker)
    return seen


# ---- [tool.softmaxkit.lint.functions] ------------------------------------------------------


def test_declared_wrappers_reach_the_checker(run_lint, tmp_path, checkers):
    write(tmp_path / "pyproject.toml", FUNCTIONS)
    write(tmp_path / "m.py", LOG1P)
    write(tmp_path / "nb.ipynb", json.dumps({"cells": [{"cell_type": "code", "source": LOG1P}], "metadata": {}}))
    run_lint(tmp_path)
    expected = {"fairseq.utils.softmax": "softmax", "mypkg.losses.xent": "cross_entropy"}
    assert checkers == [expected, expected]


def test_declared_wrappers_reach_the_checker_when_fixing(run_lint, tmp_path, checkers):
    pytest.importorskip("libcst")
    write(tmp_path / "pyproject.toml", FUNCTIONS)
    write(tmp_path / "m.py", LOG1P)
    run_lint(tmp_path, "--fix")
    assert len(checkers) >= 3 and all(functions and "fairseq.utils.softmax" in functions for functions in checkers)


def test_without_declared_wrappers_the_checker_gets_none(run_lint, tmp_path, checkers):
    write(tmp_path / "pyproject.toml", '[tool.softmaxkit.lint]\nignore = ["SMK1"]\n')
    write(tmp_path / "m.py", LOG1P)
    run_lint(tmp_path)
    assert checkers == [{}]


def test_declared_wrapper_is_checked_as_the_operation(run_lint, tmp_path):
    # A project's own softmax fed to cross_entropy went unreported (fairseq's utils.softmax).
    source = "import torch.nn.functional as F\nfrom fairseq import utils\nloss = F.cross_entropy(utils.softmax(x, dim=-1), y)\n"
    path = write(tmp_path / "m.py", source)
    assert "SMK201" not in run_lint(path)[1]
    write(tmp_path / "pyproject.toml", FUNCTIONS)
    code, out, _ = run_lint(path, "--fail-on", "warning")
    assert code == 1 and f"{path}:3:24: SMK201 " in out


@pytest.mark.parametrize(
    "table, message",
    [
        ('"mypkg.f" = "sofmax"', "'mypkg.f' = 'sofmax' names no operation; allowed: " + ", ".join(WRAPPER_OPERATIONS)),
        ('"mypkg.f" = 1', "'mypkg.f' = 1 names no operation"),
        ('"mypkg..f" = "softmax"', "'mypkg..f' is not a dotted name"),
        ('"my pkg.f" = "softmax"', "'my pkg.f' is not a dotted name"),
    ],
)
def test_bad_wrapper_declaration_is_a_usage_error(run_lint, tmp_path, table, message):
    write(tmp_path / "pyproject.toml", f"[tool.softmaxkit.lint.functions]\n{table}\n")
    code, _, err = run_lint(write(tmp_path / "m.py", LOG1P))
    assert code == 2
    assert f"[tool.softmaxkit.lint.functions]: {message}" in err


def test_functions_that_is_not_a_table_is_a_usage_error(run_lint, tmp_path):
    write(tmp_path / "pyproject.toml", '[tool.softmaxkit.lint]\nfunctions = ["mypkg.f"]\n')
    code, _, err = run_lint(write(tmp_path / "m.py", LOG1P))
    assert code == 2 and "expected a table" in err


# ---- pyproject.toml files that cannot be read -----------------------------------------------


def test_broken_unrelated_pyproject_only_warns_once(run_lint, tmp_path):
    # A broken pyproject.toml that had nothing to do with softmaxkit aborted the run.
    broken = write(tmp_path / "pkg" / "pyproject.toml", "[project\nname = 'x'\n")
    write(tmp_path / "pkg" / "a.py", LOG1P)
    write(tmp_path / "pkg" / "sub" / "b.py", LOG1P)
    code, out, err = run_lint(tmp_path / "pkg", "--fail-on", "warning")
    assert code == 1
    assert out.count("SMK301") == 2
    (warning,) = _warnings(err)
    assert warning.startswith(f"softmaxkit lint: warning: {broken}: not read (invalid TOML: ")
    assert "line 1" in warning


def test_broken_pyproject_is_passed_over_for_the_configuration_above(run_lint, tmp_path):
    write(tmp_path / "pyproject.toml", '[tool.softmaxkit.lint]\nignore = ["SMK301"]\n')
    write(tmp_path / "pkg" / "pyproject.toml", "not = toml = at all\n")
    path = write(tmp_path / "pkg" / "a.py", LOG1P)
    code, out, err = run_lint(path, "--fail-on", "warning")
    assert (code, out) == (0, "All checks passed!\n")
    assert len(_warnings(err)) == 1


def test_unreadable_pyproject_only_warns(run_lint, tmp_path, monkeypatch):
    broken = write(tmp_path / "pyproject.toml", '[tool.softmaxkit.lint]\nignore = ["SMK301"]\n')
    real_open = open

    def refusing_open(file, *args, **kwargs):
        if str(file) == str(broken):
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refusing_open)
    code, out, err = run_lint(write(tmp_path / "a.py", LOG1P), "--fail-on", "warning")
    assert code == 1 and "SMK301" in out
    (warning,) = _warnings(err)
    assert str(broken) in warning and "Permission denied" in warning


@pytest.mark.parametrize(
    "text, message",
    [
        ("[tool]\nsoftmaxkit = 3\n", "[tool.softmaxkit]: expected a table"),
        ("[tool.softmaxkit]\nlint = 3\n", "[tool.softmaxkit.lint]: expected a table"),
        ('[tool.softmaxkit.lint]\nselect = ["SMK1"]\nfail_on = "warning"\n', "unknown key 'fail_on'"),
    ],
)
def test_readable_table_with_bad_content_is_a_usage_error(run_lint, tmp_path, text, message):
    write(tmp_path / "pyproject.toml", text)
    code, _, err = run_lint(write(tmp_path / "a.py", LOG1P))
    assert code == 2 and message in err


def test_tool_table_of_another_shape_is_not_ours(run_lint, tmp_path):
    write(tmp_path / "pyproject.toml", 'tool = "something else"\n')
    code, _, err = run_lint(write(tmp_path / "a.py", LOG1P), "--fail-on", "warning")
    assert code == 1 and err == ""
