"""Input handling: IPython syntax in notebooks and scripts, percent-format scripts, and notebook
findings placed on their line of the .ipynb file."""

import ast
import json
import warnings

import pytest

from softmaxkit.tools.lint import RULES, notebooks

LOG1P = "np.log(1 + p)"


def _notebook(path, sources, indent=1):
    """Writes a notebook of code cells (a markdown cell first) as nbformat does; returns its path."""
    cells = [{"cell_type": "markdown", "metadata": {}, "source": ["# Title\n", "text"]}]
    for source in sources:
        cells.append({"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source})
    data = {"cells": cells, "metadata": {"language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(data, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _lines(source):
    """A cell's source in nbformat's list form: one string per line, each but the last ending in a newline."""
    return source.splitlines(keepends=True)


@pytest.fixture(autouse=True)
def _every_rule_an_error(monkeypatch):
    # The exit status and the labels here do not depend on each rule's severity.
    for rule in RULES:
        monkeypatch.setattr(type(rule), "severity", "error")


# ---- IPython syntax -------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, expected",
    [
        # A shell line ending in a backslash goes on to the next line (it was an SMK000).
        ("!pip install \\\n    torch \\\n    numpy\nimport numpy", ["pass", "", "", "import numpy"]),
        ("files = !ls \\\n  -la\nn = 1", ["files = None", "", "n = 1"]),
        ("%env A=1\ny = %env A\nz = !echo", ["pass", "y = None", "z = None"]),
        ("for f in fs:\n    !echo $f\n    %time g(f)", ["for f in fs:", "    pass", "    pass"]),
        # Help requests, before or after the name.
        ("np.log?\n??np.exp\nnp.*exp*?\nx = 1", ["pass", "pass", "pass", "x = 1"]),
        # A cell magic after blank lines, whose body is Python.
        ("\n%%time\nx = 1", ["", "", "x = 1"]),
        # Inside brackets, a continued string or a triple-quoted string, % and ! are Python.
        ("x = (a\n     % b)\ny = [1,\n!= 2]", ["x = (a", "     % b)", "y = [1,", "!= 2]"]),
        ("x = 'a' \\\n   % b", ["x = 'a' \\", "   % b"]),
        ('s = """\n!not a magic\n%no\n"""\n%who', ['s = """', "!not a magic", "%no", '"""', "pass"]),
        ("s = 'it\\'s ('\n%who", ["s = 'it\\'s ('", "pass"]),
        ("d = {'a': 1,  # (\n     'b': 2}\n%who", ["d = {'a': 1,  # (", "     'b': 2}", "pass"]),
        ("x = 1\n", ["x = 1", ""]),
    ],
)
def test_ipython_syntax_is_blanked_where_a_statement_starts(source, expected):
    assert notebooks.cell_lines(source) == expected


@pytest.mark.parametrize("source", ["%%bash\necho hi", "\n\n%%bash\necho hi", "  %%writefile a.txt\nhello"])
def test_cell_magic_of_another_language_skips_the_cell(source):
    assert notebooks.cell_lines(source) is None


def test_notebook_with_shell_continuations_and_magics_is_checked(run_lint, tmp_path):
    # IPython `!cmd \` continuations were reported as syntax errors, and nothing else in the cell was checked.
    path = _notebook(
        tmp_path / "nb.ipynb",
        [
            _lines("!pip install \\\n    torch \\\n    numpy\nimport numpy as np\n" + LOG1P),
            _lines("\n%%bash\nfor f in *; do\n  echo $f\ndone"),
            _lines("np.log?\nfiles = !ls \\\n  -la\ny = (1\n     % 2, np.log(1 + p))"),
        ],
    )
    code, out, _ = run_lint(path)
    assert code == 1
    assert "SMK000" not in out
    assert [line.split(": ")[0] for line in out.splitlines()[:-1]] == [
        f"{path}:cell 2:5:1",
        f"{path}:cell 4:5:11",
    ]


def test_python_file_with_a_shell_continuation_is_checked(run_lint, tmp_path):
    path = tmp_path / "script.py"
    path.write_text(f"%matplotlib inline\n!pip install \\\n  numpy\nimport numpy as np\ny = {LOG1P}\n", encoding="utf-8")
    code, out, _ = run_lint(path)
    assert code == 1
    assert out.splitlines()[0].startswith(f"{path}:5:5: SMK301 ")


def test_percent_format_script_is_read_cell_by_cell(run_lint, tmp_path):
    path = tmp_path / "analysis.py"
    path.write_text(
        "# %%\nimport numpy as np\n%matplotlib inline\n"
        "# %% [markdown]\n# Some text\n"
        "# %%\n%%bash\nfor f in *; do echo $f; done\n"
        f"# %%\ny = {LOG1P}\n",
        encoding="utf-8",
    )
    code, out, _ = run_lint(path)
    assert code == 1
    assert out.splitlines()[0].startswith(f"{path}:10:5: SMK301 ")
    assert "SMK000" not in out


def test_percent_format_script_keeps_its_line_numbers():
    source = "# %%\nx = 1\n# %%\n%%bash\nls -l\n\n# %%\ny = 2\n"
    cleaned = notebooks.script_lines(source)
    assert cleaned == ["# %%", "x = 1", "# %%", "", "", "", "# %%", "y = 2", ""]
    ast.parse("\n".join(cleaned))
    assert notebooks.script_lines("# %%\nx = 1\n") is None


# ---- notebook findings on their line of the .ipynb file ----------------------------------


def _oracle(path, cell_text, needle):
    """Line and column (from 1) of ``needle`` on the line of the file that holds ``cell_text``."""
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if cell_text in line:
            return number, line.index(needle, line.index(cell_text[:8])) + 1
    raise AssertionError(f"{cell_text!r} not in {path}")


def _annotations(out):
    found = []
    for line in out.splitlines():
        head, _, message = line.partition("::")[2].partition("::")
        fields = dict(item.split("=", 1) for item in head.split(" ", 1)[1].split(","))
        found.append((fields, message))
    return found


@pytest.mark.parametrize("indent", [1, None], ids=["indented", "one-line"])
def test_github_annotation_points_at_the_line_of_the_notebook_file(run_lint, tmp_path, indent):
    # The GitHub format gave notebook findings their line within the cell.
    tricky = 's = "é\\t" + "\\"quoted\\"" ; y = ' + LOG1P
    path = _notebook(
        tmp_path / "nb.ipynb",
        [_lines("import numpy as np\nx = 1\n"), _lines("z = 2\n" + tricky + "\n"), "a = 3\nb = " + LOG1P + "\n"],
        indent=indent,
    )
    code, out, _ = run_lint(path, "--output-format", "github")
    assert code == 1
    (first, message), (second, message2) = _annotations(out)
    expected = _oracle(path, json.dumps(tricky, ensure_ascii=False)[1:-1], LOG1P)
    assert (int(first["line"]), int(first["col"])) == expected
    assert (int(first["endLine"]), int(first["endColumn"])) == (expected[0], expected[1] + len(LOG1P))
    assert message.startswith("SMK301 cell 3, line 2: ")
    # The single-string form lies on one line of the file, after an escaped newline.
    expected = _oracle(path, "a = 3\\nb = ", LOG1P)
    assert (int(second["line"]), int(second["col"])) == expected
    assert message2.startswith("SMK301 cell 4, line 2: ")


def test_sarif_region_is_in_the_notebook_file_and_the_cell_region_in_properties(run_lint, tmp_path):
    path = _notebook(tmp_path / "nb.ipynb", [_lines("import numpy as np\n"), _lines("x = 1\ny = " + LOG1P + "\n")])
    _, out, _ = run_lint(path, "--output-format", "sarif")
    (result,) = json.loads(out)["runs"][0]["results"]
    line, column = _oracle(path, "y = " + LOG1P, LOG1P)
    region = result["locations"][0]["physicalLocation"]["region"]
    assert region == {"startLine": line, "startColumn": column, "endLine": line, "endColumn": column + len(LOG1P)}
    assert result["properties"] == {
        "cell": 3,
        "cellRegion": {"startLine": 2, "startColumn": 5, "endLine": 2, "endColumn": 5 + len(LOG1P)},
    }
    assert result["message"]["text"].startswith("cell 3, line 2: ")


def test_json_keeps_the_cell_and_the_line_within_it(run_lint, tmp_path):
    path = _notebook(tmp_path / "nb.ipynb", [_lines("import numpy as np\nx = 1\ny = " + LOG1P + "\n")])
    _, out, _ = run_lint(path, "--output-format", "json")
    (finding,) = json.loads(out)
    assert (finding["cell"], finding["location"], finding["severity"]) == (2, {"row": 3, "column": 5}, "error")


def test_syntax_error_in_a_cell_is_annotated_on_its_line(run_lint, tmp_path):
    path = _notebook(tmp_path / "nb.ipynb", [_lines("x = 1\n"), _lines("a = 1\ndef f(:\n    pass\n")])
    _, out, _ = run_lint(path, "--output-format", "github")
    ((fields, message),) = _annotations(out)
    assert int(fields["line"]) == _oracle(path, "def f(:", "def")[0]
    assert message.startswith("SMK000 cell 3, line 2: SyntaxError")


def test_notebook_that_is_not_json_is_annotated_where_the_decoder_stopped(run_lint, tmp_path):
    path = tmp_path / "nb.ipynb"
    path.write_text('{\n "cells": [\n  {"cell_type": "code",, "source": []}\n ]\n}\n', encoding="utf-8")
    code, out, _ = run_lint(path, "--output-format", "github")
    assert code == 1
    assert out.startswith(f"::error file={path},line=3,col=24,endLine=3,endColumn=24,title=SMK000::SMK000 invalid notebook: ")


def test_source_map_finds_the_cells_whatever_the_order_of_the_keys():
    decoy = {"cells": [{"cell_type": "code", "source": ["decoy\n"]}]}
    cells = [
        {"source": ["a\n", "b = 1"], "outputs": [{"text": ["b = 1\n"], "data": {"source": ["x"]}}]},
        {"outputs": [{"text": ["out\n"] * 3}], "metadata": decoy, "source": "c\nd = 2"},
    ]
    text = json.dumps({"metadata": decoy, "nbformat": 4, "cells": cells}, indent=2)
    lines = text.split("\n")
    places = notebooks.SourceMap(text)
    row = next(n for n, line in enumerate(lines, 1) if '"b = 1"' in line)
    assert places.position(1, 2, 5) == (row, lines[row - 1].index('"b = 1"') + 6)
    row = next(n for n, line in enumerate(lines, 1) if "d = 2" in line)
    assert places.position(2, 2, 1) == (row, lines[row - 1].index("d = 2") + 1)


def test_source_map_of_a_cell_without_source_strings():
    text = json.dumps({"cells": [{"cell_type": "code", "source": 5}, {"cell_type": "code", "source": ["x\n", "y"]}]})
    places = notebooks.SourceMap(text)
    assert places.position(1, 1, 1) is None
    assert places.position(2, 2, 1) == (1, text.index('"y"') + 2)
    # A position past the end of the cell falls back to the start of the cell.
    assert places.position(2, 9, 1) == (1, text.index('"x\\n"') + 2)


def test_compiler_warnings_about_the_linted_file_are_not_printed(run_lint, tmp_path):
    # Files with '\m' in a string made the run print DeprecationWarning or SyntaxWarning lines.
    path = tmp_path / "w.py"
    path.write_text('x = "\\m"\nif x is 1:\n    pass\n', encoding="utf-8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run_lint(path)
    assert (code, out, err, caught) == (0, "All checks passed!\n", "", [])
