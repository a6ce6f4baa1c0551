"""Odd trees and inputs: symlinks, special files, malformed notebooks, deep nesting, --fix safety."""

import json
import os
import socket
import stat
import sys
import threading

import pytest

from softmaxkit.tools.lint import RULES, files, fix, lint_source, linter

needs_libcst = pytest.mark.skipif(not fix.libcst_available(), reason="--fix and --diff need LibCST")
# Symlinks, FIFOs, sockets and /dev/zero as a POSIX system has them.
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file types")

HEADER = "import numpy as np\nimport torch\nimport torch.nn.functional as F\n"
FIXABLE = HEADER + "y = torch.log(F.softmax(x, dim=1))\n"
FIXED = HEADER + "y = F.log_softmax(x, dim=1)\n"
# A file with one finding, to show the run went on past the odd entry.
REAL = "import numpy as np\ny = np.log(1 + x)\n"


@pytest.fixture(autouse=True)
def _every_rule_an_error(monkeypatch):
    # These tests are about files and fixes, not about the exit policy: every
    # finding counts as an error, whatever severity its rule has.
    for rule in RULES:
        monkeypatch.setattr(type(rule), "severity", "error")


def _warnings(err):
    return [line for line in err.splitlines() if line.startswith("softmaxkit lint: warning: ")]


# ---- --fix and symlinks ------------------------------------------------------


@posix_only
@needs_libcst
@pytest.mark.parametrize("mode", ["--fix", "--diff"])
def test_fix_does_not_write_through_a_symlink_to_a_file_outside(run_lint, tmp_path, mode):
    # --fix rewrote ../other/model.py through the link repo/innocent.py.
    (tmp_path / "other").mkdir()
    (tmp_path / "repo").mkdir()
    victim = tmp_path / "other" / "model.py"
    victim.write_text(FIXABLE, encoding="utf-8")
    link = tmp_path / "repo" / "innocent.py"
    link.symlink_to(victim)
    code, out, err = run_lint(tmp_path / "repo", mode)
    assert victim.read_text(encoding="utf-8") == FIXABLE
    assert link.is_symlink()
    if mode == "--fix":
        assert code == 1 and f"{link}:4:5: SMK102" in out
    else:
        # --fix would change nothing, so --diff has nothing to show.
        assert (code, out) == (0, "")
    (warning,) = _warnings(err)
    assert str(link) in warning and "symbolic link" in warning


@posix_only
@needs_libcst
def test_fix_writes_a_link_target_found_in_its_own_right(run_lint, tmp_path):
    # The rule refuses links, not files: the target, walked to directly, is fixed.
    target = tmp_path / "model.py"
    target.write_text(FIXABLE, encoding="utf-8")
    (tmp_path / "alias.py").symlink_to(target)
    _, out, err = run_lint(tmp_path, "--fix")
    assert target.read_text(encoding="utf-8") == FIXED
    assert (tmp_path / "alias.py").is_symlink()
    assert "1 fixed" in out
    (warning,) = _warnings(err)
    assert "alias.py" in warning


@posix_only
def test_write_refused_when_the_real_path_is_outside_every_root(tmp_path):
    # A directory swapped for a link after the walk must not carry a write outside.
    (tmp_path / "other").mkdir()
    (tmp_path / "repo").mkdir()
    (tmp_path / "other" / "model.py").write_text(FIXABLE, encoding="utf-8")
    (tmp_path / "repo" / "sub").symlink_to(tmp_path / "other")
    roots = [(tmp_path / "repo").resolve()]
    reason = fix.write_refusal(tmp_path / "repo" / "sub" / "model.py", roots)
    assert reason is not None and "outside" in reason
    (tmp_path / "repo" / "inside.py").write_text(FIXABLE, encoding="utf-8")
    assert fix.write_refusal(tmp_path / "repo" / "inside.py", roots) is None


@needs_libcst
def test_interrupted_fix_leaves_the_file_whole(run_lint, tmp_path, monkeypatch):
    # --fix wrote in place, so a failure part way left a truncated file.
    path = tmp_path / "m.py"
    path.write_text(FIXABLE, encoding="utf-8")

    def interrupted(source, destination):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", interrupted)
    code, out, err = run_lint(path, "--fix")
    assert path.read_text(encoding="utf-8") == FIXABLE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.py"]
    assert code == 1 and "SMK102" in out
    (warning,) = _warnings(err)
    assert "No space left on device" in warning


@needs_libcst
def test_fix_keeps_the_file_mode(run_lint, tmp_path):
    # The fixed file is a new file renamed over the old one; it must keep the old permissions.
    path = tmp_path / "m.py"
    path.write_text(FIXABLE, encoding="utf-8")
    path.chmod(0o751)
    run_lint(path, "--fix")
    assert path.read_text(encoding="utf-8") == FIXED
    assert stat.S_IMODE(path.stat().st_mode) == 0o751


# ---- odd entries in the tree ------------------------------------------------------


def _dangling(directory):
    (directory / "broken.py").symlink_to(directory / "missing" / "x.py")
    return "broken.py", "does not exist"


def _loop(directory):
    (directory / "a.py").symlink_to(directory / "b.py")
    (directory / "b.py").symlink_to(directory / "a.py")
    return "a.py", "loop"


def _device(directory):
    (directory / "zero.py").symlink_to("/dev/zero")
    return "zero.py", "character device"


def _socket(directory):
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(directory / "sock.py"))
    server.close()
    return "sock.py", "socket"


@posix_only
@pytest.mark.parametrize("make", [_dangling, _loop, _device, _socket], ids=lambda f: f.__name__.strip("_"))
def test_special_entry_is_skipped_with_a_warning(run_lint, tmp_path, make):
    # Each of these aborted the run with a traceback (or read /dev/zero until memory ran out).
    (tmp_path / "real.py").write_text(REAL, encoding="utf-8")
    name, reason = make(tmp_path)
    code, out, err = run_lint(tmp_path)
    assert code == 1
    assert f"{tmp_path / 'real.py'}:2:5: SMK301" in out
    warnings = _warnings(err)
    assert len(warnings) == (2 if make is _loop else 1)
    assert str(tmp_path / name) in warnings[0] and reason in warnings[0]


@posix_only
def test_fifo_is_skipped_without_blocking(run_lint, tmp_path):
    # Reading a FIFO named pipe.py blocked the run for ever.
    (tmp_path / "real.py").write_text(REAL, encoding="utf-8")
    fifo = tmp_path / "pipe.py"
    os.mkfifo(fifo)
    # A writer that opens and closes the FIFO at once turns a blocking read into
    # an empty file, so the old behaviour fails this test instead of hanging it.
    writer = threading.Thread(target=lambda: os.close(os.open(fifo, os.O_WRONLY)), daemon=True)
    writer.start()
    try:
        code, out, err = run_lint(tmp_path)
    finally:
        # An open reader lets the writer's open return, whenever it started.
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        writer.join()
        os.close(reader)
    assert code == 1 and "real.py:2:5: SMK301" in out
    (warning,) = _warnings(err)
    assert str(fifo) in warning and "FIFO" in warning


@posix_only
def test_skipped_special_entry_does_not_fail_a_clean_run(run_lint, tmp_path):
    # A dangling link raised FileNotFoundError; now only a warning, and exit 0 when all else is clean.
    (tmp_path / "clean.py").write_text("import torch\ny = torch.logsumexp(x, 1)\n", encoding="utf-8")
    _dangling(tmp_path)
    code, out, err = run_lint(tmp_path)
    assert (code, out) == (0, "All checks passed!\n")
    assert len(_warnings(err)) == 1


def test_file_over_the_size_limit_is_skipped_and_fails_the_run(run_lint, tmp_path):
    # An endless or huge file was read whole into memory.
    big = tmp_path / "big.py"
    with open(big, "wb") as file:
        file.truncate(files.MAX_SOURCE_BYTES + 1)  # sparse: no disk space used
    code, out, err = run_lint(tmp_path)
    assert code == 1
    # "All checks passed!" would contradict the exit status.
    assert out == "No errors found.\n1 file not checked (see the warnings).\n"
    (warning,) = _warnings(err)
    assert str(big) in warning and "MiB" in warning


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_skipped_and_fails_the_run(run_lint, tmp_path):
    # A PermissionError on one file aborted the run.
    (tmp_path / "real.py").write_text(REAL, encoding="utf-8")
    locked = tmp_path / "locked.py"
    locked.write_text(REAL, encoding="utf-8")
    locked.chmod(0)
    code, out, err = run_lint(tmp_path)
    assert code == 1 and "real.py:2:5: SMK301" in out
    (warning,) = _warnings(err)
    assert str(locked) in warning


def test_file_that_fails_to_open_is_skipped_and_fails_the_run(run_lint, tmp_path, monkeypatch):
    # Any error opening one file aborted the run (as root, simulated: root reads any file).
    (tmp_path / "real.py").write_text(REAL, encoding="utf-8")
    locked = tmp_path / "locked.py"
    locked.write_text(REAL, encoding="utf-8")
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(locked))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    code, out, err = run_lint(tmp_path)
    assert code == 1 and "real.py:2:5: SMK301" in out and "locked.py" not in out
    (warning,) = _warnings(err)
    assert str(locked) in warning and "Permission denied" in warning


def test_directory_named_like_a_python_file_is_walked(run_lint, tmp_path):
    (tmp_path / "x.py").mkdir()
    (tmp_path / "x.py" / "inner.py").write_text(REAL, encoding="utf-8")
    code, out, err = run_lint(tmp_path)
    assert code == 1 and "inner.py:2:5: SMK301" in out
    assert _warnings(err) == []


@posix_only
def test_named_special_file_is_a_usage_error(run_lint, tmp_path):
    # A FIFO named on the command line was reported as missing.
    fifo = tmp_path / "pipe.py"
    os.mkfifo(fifo)
    code, _, err = run_lint(fifo)
    assert code == 2 and "not a regular file or directory" in err


# ---- notebooks of unexpected shape ------------------------------------------------


def _cell(source):
    return {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": source}


NOTEBOOKS = {
    "source_int": {"cells": [_cell(5)]},
    "source_null": {"cells": [_cell(None)]},
    "source_list_of_int": {"cells": [_cell([1, 2])]},
    "metadata_list": {"metadata": [], "cells": []},
    "language_info_str": {"metadata": {"language_info": "python"}, "cells": []},
    "cells_object": {"cells": {"0": _cell("x = 1\n")}},
    "cell_not_object": {"cells": [5]},
    "top_level_list": [_cell("x = 1\n")],
}


@pytest.mark.parametrize("name", [*NOTEBOOKS, "deep"])
def test_notebook_of_unexpected_shape_is_smk000(run_lint, tmp_path, name):
    # Valid JSON of the wrong shape raised AttributeError, TypeError or RecursionError.
    path = tmp_path / f"{name}.ipynb"
    if name == "deep":
        path.write_text('{"cells": ' + "[" * 5000 + "]" * 5000 + "}", encoding="utf-8")
    else:
        path.write_text(json.dumps(NOTEBOOKS[name]), encoding="utf-8")
    (tmp_path / "real.py").write_text(REAL, encoding="utf-8")
    code, out, err = run_lint(tmp_path)
    assert code == 1
    assert "real.py:2:5: SMK301" in out
    (line,) = [line for line in out.splitlines() if line.startswith(str(path))]
    assert " SMK000 invalid notebook: " in line


def test_notebook_bad_cell_does_not_hide_the_others(run_lint, tmp_path):
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": [_cell(None), _cell(REAL)]}), encoding="utf-8")
    code, out, _ = run_lint(path)
    assert code == 1
    assert f"{path}:cell 1:1:1: SMK000 invalid notebook: " in out
    assert f"{path}:cell 2:2:5: SMK301" in out


# ---- deep nesting -------------------------------------------------------------


@pytest.fixture
def default_recursion_limit():
    # The deep cases are sized for Python's default limit of 1000; an earlier
    # torch.compile in the same process raises it to 2000, and at that depth
    # the analysis simply succeeds.
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    yield
    sys.setrecursionlimit(before)


DEEP = {
    "unary_memory_error": "y = " + "-" * 10_000 + "x\n",
    "ternary_memory_error": "y = " + "a if b else " * 10_000 + "c\n",
    "unary_recursion_error": "y = " + "-" * 4_000 + "x\n",
    "binop_parse": "y = " + " + ".join(["a"] * 5_000) + "\n",
    "attribute_chain": "y = a" + ".b" * 5_000 + "\n",
    "subscript_chain": "y = a" + "[0]" * 5_000 + "\n",
    "call_chain": "y = f" + "()" * 5_000 + "\n",
}


@pytest.mark.usefixtures("default_recursion_limit")
@pytest.mark.parametrize("name", DEEP)
def test_deep_nesting_is_smk000(name):
    # ast.parse raised MemoryError or RecursionError, or the analysis overflowed, and the run aborted.
    (finding,) = lint_source(HEADER + DEEP[name])
    assert finding.code == "SMK000"
    assert "too deeply nested" in finding.message


LONG_CHAINS = {
    "sum": ("y = torch.exp(" + " + ".join(["a"] * 1_000) + ") - 1\n", "SMK302"),
    "power": ("y = np.log(1 + " + " ** ".join(["a"] * 1_000) + ")\n", "SMK301"),
    "method_chain": ("y = x" + ".exp()" * 500 + ".sum().log()\n", "SMK103"),
    "attribute_chain": ("y = F.softmax(a" + ".b" * 1_000 + ", dim=1).log()\n", "SMK102"),
}


@pytest.mark.parametrize("name", LONG_CHAINS)
def test_long_chain_is_analysed(name):
    # The analysis recursed a few frames per link: a sum of 330 terms raised RecursionError.
    source, code = LONG_CHAINS[name]
    assert [f.code for f in lint_source(HEADER + source)] == [code]


def test_recursion_in_the_analysis_is_smk000(monkeypatch):
    # The last line of defence, should a rule recurse over a deep tree.
    def overflow(self):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(linter.Checker, "run", overflow)
    (finding,) = lint_source(REAL)
    assert (finding.code, finding.message) == ("SMK000", "too deeply nested to analyse")


@pytest.mark.usefixtures("default_recursion_limit")
def test_deep_file_does_not_stop_the_run(run_lint, tmp_path):
    (tmp_path / "deep.py").write_text(HEADER + DEEP["binop_parse"], encoding="utf-8")
    (tmp_path / "real.py").write_text(REAL, encoding="utf-8")
    code, out, _ = run_lint(tmp_path)
    assert code == 1
    assert f"{tmp_path / 'deep.py'}:1:1: SMK000 " in out
    assert "real.py:2:5: SMK301" in out


@pytest.mark.usefixtures("default_recursion_limit")
def test_deep_notebook_cell_is_smk000(run_lint, tmp_path):
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": [_cell(DEEP["binop_parse"]), _cell(REAL)]}), encoding="utf-8")
    code, out, _ = run_lint(path)
    assert code == 1
    assert f"{path}:cell 1:1:1: SMK000 " in out
    assert f"{path}:cell 2:2:5: SMK301" in out


NESTED_70 = HEADER + "y = " + "torch.log(F.softmax(" * 70 + "x" + ", dim=1))" * 70 + "\n"


@pytest.mark.usefixtures("default_recursion_limit")
@needs_libcst
@pytest.mark.parametrize("mode", ["--fix", "--diff"])
def test_fix_too_deep_for_the_fixer_leaves_the_file_with_a_warning(run_lint, tmp_path, mode):
    # LibCST's visitor raised RecursionError on 70 nested log(softmax(...)) calls.
    path = tmp_path / "nested.py"
    path.write_text(NESTED_70, encoding="utf-8")
    code, out, err = run_lint(path, mode)
    assert path.read_text(encoding="utf-8") == NESTED_70
    if mode == "--fix":
        assert code == 1 and out.count(" SMK102 ") == 70
    else:
        assert (code, out) == (0, "")
    (warning,) = _warnings(err)
    assert str(path) in warning and "too deeply nested" in warning


# ---- IPython syntax in .py files -------------------------------------------------


def test_python_file_with_ipython_magics_is_linted(run_lint, tmp_path):
    # A .py file holding `%matplotlib inline` was one SMK000 and nothing else was checked.
    path = tmp_path / "script.py"
    path.write_text("%matplotlib inline\nimport numpy as np\n!ls\nfiles = !ls\ny = np.log(1 + x)\n", encoding="utf-8")
    code, out, _ = run_lint(path)
    assert code == 1
    # As in notebooks, findings come without fixes: LibCST cannot parse the file.
    assert out.splitlines()[0] == f"{path}:5:5: SMK301 `log(1 + x)` loses precision for small `x`; use `log1p(x)`"
    assert "SMK000" not in out


def test_python_file_with_magics_reports_its_real_syntax_error(run_lint, tmp_path):
    path = tmp_path / "script.py"
    path.write_text("%matplotlib inline\nimport numpy as np\ndef f(:\n    pass\n", encoding="utf-8")
    code, out, _ = run_lint(path)
    assert code == 1
    assert out.startswith(f"{path}:3:7: SMK000 SyntaxError")
