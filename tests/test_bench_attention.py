"""benchmarks/bench_attention.py runs: a quick pass over one case and one memory variant."""

import csv
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("ml_dtypes")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bench_attention as bench


def test_quick_run_writes_the_tables(tmp_path, capsys):
    assert (
        bench.main(["--quick", "-k", "train/float32/causal", "--out", str(tmp_path)])
        == 0
    )
    text = (tmp_path / "attention.md").read_text()
    assert "train/float32/causal/forward+backward" in text
    with open(tmp_path / "attention.csv") as f:
        rows = list(csv.DictReader(f))
    timing = {r["case"]: r for r in rows if r["library"] == ""}
    assert set(timing) == {
        "train/float32/causal/forward",
        "train/float32/causal/forward+backward",
    }
    # The NumPy function has no backward; every other library has both rows.
    assert timing["train/float32/causal/forward+backward"]["softmaxkit_s"] == ""
    for row in timing.values():
        for library in ("softmaxkit.torch", "torch math", "torch flash"):
            assert float(row[f"{library}_s"]) > 0
    accuracy = {
        r["library"]: r for r in rows if r["case"] == "train/float32/causal/accuracy"
    }
    assert set(accuracy) == set(bench.LIBRARIES)
    # softmaxkit's contract on the sampled rows: lse within 2 ULP, output within 2 u sum P|v|.
    for library in ("softmaxkit", "softmaxkit.torch"):
        assert (
            float(accuracy[library]["lse_ulp"]) <= 2
            and float(accuracy[library]["out_c"]) <= 2
        )
    assert accuracy["torch math"]["lse_ulp"] == ""
    assert math.isfinite(float(accuracy["torch flash"]["lse_ulp"]))


def test_memory_variant_in_a_fresh_interpreter():
    row = bench.measure_memory("softmaxkit", "forward", 64)
    assert row["library"] == "softmaxkit" and row["growth_mib"] >= 0
    assert row["scores_mib"] == bench.MEMORY_HEADS * 64 * 64 * 4 / 2**20


def test_padding_mask_hides_the_last_keys_of_later_rows():
    mask = bench.padding_mask(4, 16)
    assert mask.shape == (4, 1, 1, 16)
    assert mask.sum(-1).flatten().tolist() == [16, 14, 12, 10]
    assert bench.padding_mask(1, 16).sum().item() == 12
