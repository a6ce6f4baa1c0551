"""``softmaxkit report RUN_DIR`` on hand-written monitor records (no torch needed)."""

import json
import math
import sys

import pytest

from softmaxkit.tools.cli import main
from softmaxkit.tools.curves import RECORDS_FILE, read_records, summarize


def record(step, **figures):
    base = {
        "step": step,
        "time": 1.0e9 + step,
        "rows": 8,
        "regular_rows": 8,
        "loss": 2.0 / (step + 1),
        "collapse_fraction": 0.0,
        "zero_grad_fraction": 0.0,
        "nan_count": 0,
        "grad_norm": 1.0 / (step + 1),
        "grad_nonfinite": 0,
    }
    base.update(figures)
    return base


def write_run(folder, records):
    folder.mkdir(parents=True, exist_ok=True)
    # NaN as Python's json module writes it, as the monitor does
    (folder / RECORDS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


@pytest.fixture
def run(tmp_path):
    return write_run(
        tmp_path / "run",
        [
            record(0),
            record(10, collapse_fraction=0.25),
            record(20, collapse_fraction=0.75, zero_grad_fraction=0.6),
            record(30, collapse_fraction=1.0, zero_grad_fraction=1.0, nan_count=3, loss=math.nan, grad_norm=math.nan, grad_nonfinite=8),
        ],
    )


def test_summary_lists_each_figure_and_the_first_steps(run, capsys):
    assert main(["report", str(run), "--no-png"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("4 records, steps 0 to 30\n")
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    # first, last, min, max; min and max over finite values only
    assert lines["loss"] == ["2", "nan", "0.0952381", "2"]
    assert lines["collapse_fraction"] == ["0", "1", "0", "1"]
    assert "first NaN in the logits                  step 30" in out
    assert "first non-finite gradient at the logits  step 30" in out
    assert "first non-finite loss                    step 30" in out
    assert "collapse fraction first above 0.5        step 20" in out
    assert "zero-gradient fraction first above 0.5   step 20" in out


def test_threshold_and_json(run, capsys):
    assert main(["report", str(run / RECORDS_FILE), "--no-png", "--threshold", "0.2", "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["collapse_above"] == 10 and summary["zero_grad_above"] == 20
    assert summary["metrics"]["grad_norm"]["max"] == 1.0 and summary["metrics"]["grad_norm"]["min_step"] == 20
    assert summary["first_nan_logits"] == 30


def test_png_is_written(run, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert main(["report", str(run)]) == 0
    png = run / "softmax-health.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"curves written to {png}" in capsys.readouterr().out
    elsewhere = tmp_path / "curves.png"
    assert main(["report", str(run), "--png", str(elsewhere)]) == 0
    assert elsewhere.stat().st_size > 10_000


def test_without_matplotlib_the_summary_and_a_clear_error(run, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert main(["report", str(run)]) == 1
    captured = capsys.readouterr()
    assert "4 records" in captured.out
    assert "the PNG needs matplotlib: pip install 'softmaxkit[monitor]' (or --no-png" in captured.err


@pytest.mark.parametrize(
    "contents, message",
    [
        (None, "no softmax-health.jsonl in"),
        ("", "no records"),
        ('{"step": 0}\n{"step": \n', "line 2: not JSON"),
        ('{"step": true}\n', "line 1: not a record"),
        ("[1, 2]\n", "line 1: not a record"),
    ],
)
def test_unreadable_records_exit_1_with_one_line(tmp_path, capsys, contents, message):
    folder = tmp_path / "run"
    folder.mkdir()
    if contents is not None:
        (folder / RECORDS_FILE).write_text(contents)
    assert main(["report", str(folder)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("softmaxkit report: error: ") and message in err and err.count("\n") == 1


def test_missing_run_and_unwritable_png(tmp_path, run, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().err
    pytest.importorskip("matplotlib")
    assert main(["report", str(run), "--png", str(tmp_path / "no" / "such" / "dir.png")]) == 1
    assert "cannot write" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--threshold", "2"], ["--threshold", "x"], ["--png", "a.png", "--no-png"], []])
def test_usage_errors_exit_2(run, argv):
    with pytest.raises(SystemExit) as exc:
        main(["report", *([str(run)] if argv else []), *argv])
    assert exc.value.code == 2


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["report", "--help"])
    assert exc.value.code == 0
    assert "RUN_DIR" in capsys.readouterr().out


def test_summarize_ignores_figures_that_are_not_numbers():
    s = summarize([{"step": 0, "loss": None}, {"step": 1, "loss": 1.5}])
    (loss,) = s.metrics
    assert (loss.first, loss.last, loss.min_step) == (1.5, 1.5, 1)


def test_min_and_max_are_over_finite_values_even_after_a_nan_first():
    s = summarize([{"step": 0, "loss": math.nan}, {"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}])
    (loss,) = s.metrics
    assert math.isnan(loss.first) and (loss.min, loss.min_step, loss.max, loss.max_step) == (1.0, 2, 2.0, 1)
    assert s.first_nonfinite_loss == 0


def test_read_records_reads_what_the_monitor_writes(run):
    records = read_records(run)
    assert [r["step"] for r in records] == [0, 10, 20, 30] and math.isnan(records[-1]["loss"])
