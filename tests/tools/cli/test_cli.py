"""The ``softmaxkit`` command: demo, --help, --version, exit codes."""

import re
import subprocess
import sys

import pytest

import softmaxkit
from softmaxkit.tools.cli import main


def test_demo_runs_and_shows_failure_and_exact_values(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    naive = out.split("1. The textbook recipe")[1].split("2. softmaxkit")[0]
    # the naive path fails visibly: row 1's probabilities, the loss and the gradient
    assert re.search(r"^  row 1 +nan +0 +0$", naive, flags=re.M)
    assert re.search(r"^mean loss .* inf$", naive, flags=re.M)
    assert re.search(r"^gradient .* row 1 +nan +0 +-0\.333333$", naive, flags=re.M)
    assert out.count("667.2748786602") == 2  # softmaxkit's mean loss equals the reference
    assert "-2.0611537e-09" in out  # the confident float32 target gradient, not 0
    assert "the nearest float32 to it" in out
    assert "Temperature" in out and "entropy" in out


def test_demo_shows_torch_nan_beside_softmaxkit_torch(capsys):
    pytest.importorskip("torch")
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    section = out.split("5. PyTorch")[1].split("6. Where next")[0]
    assert re.search(r"^fully masked row.* +\[nan, nan, nan\] +\[0, 0, 0\]$", section, flags=re.M)
    assert re.search(r"^every target ignored.* +nan +0$", section, flags=re.M)
    assert re.search(r"^\+inf logit.* +\[nan, nan, nan\] +\[1, 0, 0\]$", section, flags=re.M)
    # torch's target gradient of a confident float32 row is 0; softmaxkit's is exact
    assert re.search(r"^confident row.* +\[0, 2\.0612e-09\] +\[-2\.0612e-09, 2\.0612e-09\]$", section, flags=re.M)


def test_demo_without_torch(capsys, monkeypatch):
    # The torch-free CI runs the demo: the NumPy sections still run.
    monkeypatch.setitem(sys.modules, "torch", None)
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "skipped: PyTorch is not installed" in out
    assert "667.2748786602" in out and "6. Where next" in out


def test_demo_ends_with_where_to_go_next(capsys):
    assert main(["demo"]) == 0
    tail = capsys.readouterr().out.split("6. Where next")[1]
    for tool in ("softmaxkit check FILE", "softmaxkit.torch.watch(model)", "softmaxkit.torch.monitor(", "softmaxkit lint PATH"):
        assert sum(line.lstrip().startswith(tool) for line in tail.splitlines()) == 1, tool


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"softmaxkit {softmaxkit.__version__}"


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "softmaxkit", "demo", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "demo" in out.stdout


def test_check_and_calibrate_share_one_file_loader():
    # The two commands once had loaders of their own, with different formats
    # and different holes; they must read files with the same code.
    from softmaxkit.tools.cli import calibrate as _calibrate_cli
    from softmaxkit.tools.cli import check as _check

    assert _calibrate_cli.load is _check.load
    assert _calibrate_cli.add_max_bytes_option is _check.add_max_bytes_option
