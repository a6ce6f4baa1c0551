"""--fix and --diff: rewrites are valid, clear their finding, and touch nothing else."""

import ast
import textwrap

import pytest

from softmaxkit.tools.cli.lint import fix_source
from softmaxkit.tools.lint import RULES, fix, lint_source

HEADER = (
    "import math\nimport numpy as np\nimport scipy.special\nimport torch\n"
    "import torch.nn.functional as F\nimport jax\nimport jax.numpy as jnp\n"
)

SAFE = [
    ("SMK102", "y = torch.log(F.softmax(x, dim=1))", "y = F.log_softmax(x, dim=1)"),
    ("SMK102", "y = x.softmax(-1).log()", "y = x.log_softmax(-1)"),
    ("SMK102", "y = F.softmax(x, 1).log()", "y = F.log_softmax(x, 1)"),
    ("SMK102", "y = np.log(scipy.special.softmax(x, axis=0))", "y = scipy.special.log_softmax(x, axis=0)"),
    ("SMK102", "y = jnp.log(jax.nn.softmax(x))", "y = jax.nn.log_softmax(x)"),
    ("SMK103", "y = torch.log(torch.sum(torch.exp(x), dim=1))", "y = torch.logsumexp(x, dim=1)"),
    ("SMK103", "y = (a + b).exp().sum(-1, keepdim=True).log()", "y = (a + b).logsumexp(-1, keepdim=True)"),
    ("SMK103", "y = np.log(np.sum(np.exp(x), axis=1))", "y = scipy.special.logsumexp(x, axis=1)"),
    ("SMK103", "y = jnp.log(jnp.sum(jnp.exp(x), 0))", "y = jax.nn.logsumexp(x, 0)"),
    ("SMK204", "y = F.binary_cross_entropy(torch.sigmoid(z), t, reduction='sum')",
     "y = F.binary_cross_entropy_with_logits(z, t, reduction='sum')"),
    ("SMK301", "y = np.log(1 + x)", "y = np.log1p(x)"),
    ("SMK301", "y = math.log(x * 2 + 1)", "y = math.log1p(x * 2)"),
    ("SMK301", "y = (1 + a * b).log()", "y = (a * b).log1p()"),
    ("SMK302", "y = torch.exp(x) - 1", "y = torch.expm1(x)"),
    ("SMK302", "y = 2 * (x.exp() - 1)", "y = 2 * (x.expm1())"),
    ("SMK303", "y = torch.log(torch.sigmoid(x))", "y = F.logsigmoid(x)"),
    ("SMK303", "y = x.sigmoid().log()", "y = F.logsigmoid(x)"),
    ("SMK303", "y = np.log(scipy.special.expit(x))", "y = scipy.special.log_expit(x)"),
]

UNSAFE = [
    ("SMK201", "y = F.cross_entropy(F.softmax(z, dim=1), t)", "y = F.cross_entropy(z, t)"),
    ("SMK202", "y = F.nll_loss(F.softmax(z, dim=1), t)", "y = F.nll_loss(F.log_softmax(z, dim=1), t)"),
    ("SMK205", "y = F.kl_div(z.softmax(-1), q)", "y = F.kl_div(z.log_softmax(-1), q)"),
]


@pytest.fixture(autouse=True)
def _every_rule_an_error(monkeypatch):
    # These tests are about files and fixes, not about the exit policy: every
    # finding counts as an error, whatever severity its rule has.
    for rule in RULES:
        monkeypatch.setattr(type(rule), "severity", "error")


def _codes(source):
    return [f.code for f in lint_source(source)]


def test_every_safe_rule_has_a_round_trip():
    covered = {code for code, _, _ in SAFE} | {code for code, _, _ in UNSAFE}
    assert covered == {rule.code for rule in RULES if rule.fix_safety != "none"}


@pytest.mark.parametrize("code, before, after", SAFE, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(SAFE)])
def test_safe_fix_round_trip(code, before, after):
    source = HEADER + before + "\n"
    assert code in _codes(source)
    fixed, count = fix_source(source, RULES)
    assert count >= 1
    assert fixed == HEADER + after + "\n"
    ast.parse(fixed)
    assert code not in _codes(fixed)


@pytest.mark.parametrize("code, before, after", UNSAFE, ids=[c for c, _, _ in UNSAFE])
def test_unsafe_fix_needs_the_flag(code, before, after):
    source = HEADER + before + "\n"
    assert fix_source(source, RULES) == (source, 0)
    fixed, count = fix_source(source, RULES, unsafe_fixes=True)
    assert (fixed, count) == (HEADER + after + "\n", 1)
    assert code not in _codes(fixed)


def test_fix_spells_the_new_function_with_the_imports_there_are():
    source = "import torch\ny = torch.log(torch.sigmoid(x))\n"
    assert fix_source(source, RULES) == ("import torch\ny = torch.nn.functional.logsigmoid(x)\n", 1)
    source = "from torch.nn.functional import softmax, log_softmax\nimport torch\ny = torch.log(softmax(x, 1))\n"
    assert fix_source(source, RULES)[0].endswith("y = log_softmax(x, 1)\n")


def test_no_fix_when_the_new_name_cannot_be_spelled():
    # numpy code with no scipy import: logsumexp has no name in this file.
    source = "import numpy as np\ny = np.log(np.sum(np.exp(x), axis=1))\n"
    (finding,) = lint_source(source)
    assert finding.code == "SMK103" and finding.fix is None
    # torch.logsumexp needs a dim.
    source = "import torch\ny = torch.log(torch.sum(torch.exp(x)))\n"
    (finding,) = lint_source(source)
    assert finding.fix is None
    source = "from torch.nn.functional import softmax\nfrom torch import log\ny = log(softmax(x, 1))\n"
    (finding,) = lint_source(source)
    assert finding.code == "SMK102" and finding.fix is None


def test_fix_preserves_formatting_and_comments():
    source = textwrap.dedent(
        """\
        import torch  # the framework
        import torch.nn.functional as F


        def head(x,   y):   # odd spacing stays
            # a comment before
            out = torch.log(F.softmax(
                x,  # the logits
                dim=1,
            ))
            other = (torch.exp(y) - 1)  # trailing
            return out,other
        """
    )
    fixed, count = fix_source(source, RULES)
    assert count == 2
    assert fixed == textwrap.dedent(
        """\
        import torch  # the framework
        import torch.nn.functional as F


        def head(x,   y):   # odd spacing stays
            # a comment before
            out = F.log_softmax(
                x,  # the logits
                dim=1,
            )
            other = (torch.expm1(y))  # trailing
            return out,other
        """
    )


def test_fix_in_a_continuation_line_of_a_nested_block():
    source = textwrap.dedent(
        """\
        import torch
        import torch.nn.functional as F
        class M:
            def f(self, x):
                if x is not None:
                    return g(1,
                             torch.log(F.softmax(
                                 x, dim=1)))
        """
    )
    fixed, _ = fix_source(source, RULES)
    assert fixed == source.replace("torch.log(F.softmax(", "F.log_softmax(").replace("dim=1)))", "dim=1))")


def test_nested_fixes_are_all_applied():
    source = HEADER + "y = np.log(1 + (np.exp(x) - 1))\n"
    fixed, count = fix_source(source, RULES)
    assert fixed == HEADER + "y = np.log1p(np.expm1(x))\n"
    assert count == 2


def test_noqa_line_is_not_fixed():
    source = HEADER + "y = np.log(1 + x)  # noqa: SMK301\n"
    assert fix_source(source, RULES) == (source, 0)


def test_cli_fix_writes_and_reports(run_lint, tmp_path):
    path = tmp_path / "m.py"
    path.write_text(HEADER + "y = np.log(1 + x)\np = F.softmax(z)\n", encoding="utf-8")
    code, out, _ = run_lint(path, "--fix")
    assert code == 1
    assert path.read_text(encoding="utf-8") == HEADER + "y = np.log1p(x)\np = F.softmax(z)\n"
    assert "SMK104" in out and "SMK301" not in out
    assert out.endswith("Found 2 errors (1 fixed, 1 remaining).\n")


def test_cli_fix_everything_exits_0(run_lint, tmp_path):
    path = tmp_path / "m.py"
    path.write_text(HEADER + "y = np.log(1 + x)\n", encoding="utf-8")
    code, out, _ = run_lint(path, "--fix")
    assert code == 0
    assert out == "Found 1 error (1 fixed, 0 remaining).\n"


def test_cli_fix_keeps_crlf_and_encoding(run_lint, tmp_path):
    path = tmp_path / "m.py"
    path.write_bytes((HEADER + "# é\ny = np.log(1 + x)\n").replace("\n", "\r\n").encode("utf-8"))
    run_lint(path, "--fix")
    assert path.read_bytes() == (HEADER + "# é\ny = np.log1p(x)\n").replace("\n", "\r\n").encode("utf-8")


def test_diff_does_not_write(run_lint, tmp_path):
    path = tmp_path / "m.py"
    original = HEADER + "y = np.log(1 + x)\n"
    path.write_text(original, encoding="utf-8")
    code, out, _ = run_lint(path, "--diff")
    assert code == 1
    assert path.read_text(encoding="utf-8") == original
    assert f"--- {path}\n+++ {path}\n" in out
    assert "-y = np.log(1 + x)\n+y = np.log1p(x)\n" in out


def test_diff_with_nothing_to_fix_exits_0(run_lint, tmp_path):
    path = tmp_path / "m.py"
    path.write_text(HEADER + "p = F.softmax(z)\n", encoding="utf-8")
    code, out, _ = run_lint(path, "--diff")
    assert (code, out) == (0, "")


def test_fix_leaves_notebooks_alone(run_lint, tmp_path):
    path = tmp_path / "nb.ipynb"
    text = (
        '{"cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": null,'
        ' "source": ["import numpy as np\\n", "y = np.log(1 + x)\\n"]}],'
        ' "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    )
    path.write_text(text, encoding="utf-8")
    code, out, _ = run_lint(path, "--fix")
    assert code == 1
    assert path.read_text(encoding="utf-8") == text
    assert "SMK301" in out


def test_missing_libcst_is_a_usage_error(run_lint, tmp_path, monkeypatch):
    monkeypatch.setattr("softmaxkit.tools.cli.lint.libcst_available", lambda: False)
    path = tmp_path / "m.py"
    path.write_text(HEADER + "y = np.log(1 + x)\n", encoding="utf-8")
    code, _, err = run_lint(path, "--fix")
    assert code == 2
    assert "pip install 'softmaxkit[lint]'" in err
    assert fix.MISSING_LIBCST in err


def test_cli_fix_summary_for_one_unfixed_error_is_singular(run_lint, tmp_path):
    # --fix with one unfixable finding printed "Found 1 errors (0 fixed, 1 remaining)."
    path = tmp_path / "m.py"
    path.write_text(HEADER + "p = F.softmax(z)\n", encoding="utf-8")
    code, out, _ = run_lint(path, "--fix")
    assert code == 1
    assert out.endswith("Found 1 error (0 fixed, 1 remaining).\n")
