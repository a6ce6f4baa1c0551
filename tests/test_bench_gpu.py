"""benchmarks/bench_gpu.py: the smoke run (Triton's interpreter on the CPU), and how failing variants are reported."""

import csv
import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")
pytest.importorskip("mpmath")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_gpu as bench

CASES = [f"{op} 2x512" for op in ("softmax", "log_softmax")]
LOSSES = ["cross-entropy fwd+bwd 2x1024", "linear cross-entropy fwd+bwd N=4 V=512 H=64"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The tables of one ``--smoke`` run in a fresh interpreter, which sets the interpreter switches itself."""
    out = tmp_path_factory.mktemp("gpu")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TRITON_INTERPRET", "SOFTMAXKIT_TRITON_ON_CPU")
    }
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    script = ROOT / "benchmarks" / "bench_gpu.py"
    done = subprocess.run(
        [sys.executable, str(script), "--smoke", "--out", str(out)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    with open(out / "gpu.csv") as f:
        rows = list(csv.DictReader(f))
    return (out / "gpu.md").read_text(), rows


def _row(rows, case, dtype, variant):
    found = [
        r
        for r in rows
        if r["case"] == case and r["dtype"] == dtype and r["variant"] == variant
    ]
    assert len(found) == 1, (case, dtype, variant)
    return found[0]


def test_smoke_run_times_every_case_against_the_copy_yardstick(smoke):
    text, rows = smoke
    assert "Smoke run" in text and "## Accuracy on confident rows" in text
    for case in CASES:
        for dtype in ("bfloat16", "float32"):
            copy = _row(rows, case, dtype, "copy_ (yardstick)")
            for variant in ("softmaxkit", "torch eager", "torch compiled"):
                row = _row(rows, case, dtype, variant)
                assert float(row["time_s"]) > 0 and row["status"] == ""
                assert float(row["of_copy"]) == pytest.approx(
                    float(row["gbs"]) / float(copy["gbs"])
                )
            assert (
                float(_row(rows, case, dtype, "softmaxkit")["softmaxkit_over_this"])
                == 1
            )
    for case in LOSSES:
        for variant in ("softmaxkit", "torch eager", "torch compiled"):
            row = _row(rows, case, "bfloat16", variant)
            assert float(row["time_s"]) > 0 and row["status"] == ""
            assert float(row["gradients_mib"]) > 0 and row["peak_mib"] != ""
    assert _row(rows, LOSSES[0], "bfloat16", "softmaxkit")["gbs"] != ""


def test_peers_not_installed_are_reported_in_their_rows(smoke):
    _, rows = smoke
    expected = {
        "Liger-Kernel": ("liger_kernel", CASES[:1] + LOSSES),
        "Cut Cross-Entropy": ("cut_cross_entropy", LOSSES[1:]),
    }
    for variant, (module, cases) in expected.items():
        if importlib.util.find_spec(module) is not None:
            continue
        for case in cases:
            assert _row(rows, case, "bfloat16", variant)["status"] == "not installed"


def test_accuracy_rows_hold_a_number_for_each_metric(smoke):
    _, rows = smoke
    accuracy = {
        (r["dtype"], r["variant"]): r for r in rows if r["section"] == "accuracy"
    }
    metrics = [f"{m}_ulp" for m in bench.METRICS]
    for dtype in ("float32", "bfloat16"):
        for library in ("softmaxkit", "torch eager", "torch compiled"):
            assert all(float(accuracy[dtype, library][m]) >= 0 for m in metrics), (
                dtype,
                library,
            )
    # torch's float32 log_softmax at the maximum of a confident row is 0 where the exact value is tiny.
    assert float(accuracy["float32", "torch eager"]["log_softmax_ulp"]) > 1e6


def test_a_failing_variant_is_reported_and_left_out_of_later_rounds():
    calls = {"ok": 0, "oom": 0, "broken": 0}

    def count(name, error=None):
        def call():
            calls[name] += 1
            if error is not None:
                raise error

        return call

    device = bench.Device("cpu")
    measured = {
        "ok": count("ok"),
        "oom": count(
            "oom",
            torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        ),
        "broken": count("broken", ValueError("a | b\nsecond line")),
    }
    times, errors = bench.measure(device, measured, number=2, rounds=3)
    assert set(times) == {"ok"} and len(times["ok"]) == 3
    assert calls == {"ok": 8, "oom": 1, "broken": 1}
    assert errors == {"oom": "out of memory", "broken": "failed: ValueError: a / b"}


def test_softmaxkit_failures_make_the_exit_status():
    rows = [
        {"variant": "softmaxkit", "case": "softmax", "dtype": "float32", "status": ""},
        {
            "variant": "Liger-Kernel",
            "case": "softmax",
            "dtype": "float32",
            "status": "out of memory",
        },
        {
            "variant": "softmaxkit",
            "case": "confident rows",
            "dtype": "bfloat16",
            "softmax_ulp": 0.5,
            "ce_loss_ulp": "failed: E",
        },
        {
            "variant": "softmaxkit",
            "case": "cross-entropy",
            "dtype": "bfloat16",
            "status": "out of memory",
        },
    ]
    assert bench.softmaxkit_failures(rows) == [
        "confident rows bfloat16: failed: E",
        "cross-entropy bfloat16: out of memory",
    ]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_a_full_run_needs_cuda():
    with pytest.raises(SystemExit, match="no CUDA device"):
        bench.configure(smoke=False)


def test_a_peer_that_cannot_be_imported_is_reported(tmp_path, monkeypatch):
    (tmp_path / "peer_for_bench_gpu.py").write_text(
        "raise RuntimeError('built for another torch')\n"
    )
    (tmp_path / "peer_needing_more.py").write_text(
        "import module_nowhere_to_be_found\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert bench.peer_module("package_nowhere_to_be_found.functional") == (
        None,
        "not installed",
    )
    assert bench.peer_module("peer_for_bench_gpu") == (
        None,
        "import failed: RuntimeError: built for another torch",
    )
    module, reason = bench.peer_module("peer_needing_more")
    assert module is None and reason.startswith("import failed: ModuleNotFoundError")
    assert bench.peer_module("json")[0] is importlib.import_module("json")
