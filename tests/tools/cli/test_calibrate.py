"""`softmaxkit calibrate`: the --conformal table, printing before plotting, the side-by-side diagrams, the shared loader."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

import softmaxkit as smk
from softmaxkit import conformal
from softmaxkit.tools import cli


def heldout(rows=3000, classes=6, seed=0):
    """Labels drawn from softmax(z); the saved logits are 2 z (over-confident)."""
    rng = np.random.default_rng(seed)
    z = 1.5 * rng.normal(size=(rows, classes))
    return 2.0 * z, smk.sample(z, rng=rng)


@pytest.fixture
def npz(tmp_path):
    logits, labels = heldout()
    path = tmp_path / "heldout.npz"
    np.savez(path, logits=logits, labels=labels)
    return path, logits, labels


TABLE_ROW = re.compile(r"^(\S.*?)\s+(\d\.\d{6})\s+(\d+\.\d{4})$", flags=re.M)


def table(out):
    """{score name: (coverage, mean size)} from the --conformal table."""
    return {m.group(1): (float(m.group(2)), float(m.group(3))) for m in TABLE_ROW.finditer(out)}


def documented_split(logits, labels, alpha, seed, lam=0.01, k_reg=5):
    """The split --help describes, with the library: one generator draws the
    permutation, then the uniforms of each randomised score in table order."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    cal, ev = order[: len(labels) // 2], order[len(labels) // 2 :]
    raps = f"RAPS (lam={lam:g}, k_reg={k_reg})"
    settings = [
        ("LAC", dict(score="lac")),
        ("APS", dict(score="aps")),
        ("APS, randomised", dict(score="aps", randomized=True)),
        (raps, dict(score="raps", lam=lam, k_reg=k_reg)),
        (raps + ", randomised", dict(score="raps", lam=lam, k_reg=k_reg, randomized=True)),
    ]
    expected = {}
    for name, kwargs in settings:
        sets = conformal.calibrate(logits[cal], labels[cal], alpha, rng=rng, **kwargs).predict_sets(logits[ev], rng=rng)
        expected[name] = (round(conformal.coverage(sets, labels[ev]), 6), round(float(conformal.set_sizes(sets).mean()), 4))
    return expected


@pytest.mark.parametrize("alpha, seed", [(0.1, 0), (0.25, 7)])
def test_conformal_table_is_the_documented_split(npz, capsys, alpha, seed):
    path, logits, labels = npz
    assert cli.main(["calibrate", str(path), "--conformal", str(alpha), "--seed", str(seed)]) == 0
    out = capsys.readouterr().out
    assert str(smk.fit_temperature(logits, labels)) in out
    assert f"conformal sets, alpha = {alpha:g}: 1500 rows calibrate, 1500 evaluate (seed {seed}), logits at T = 1" in out
    k = int(np.ceil(1501 * (1 - alpha)))
    assert f"rank k = ceil((n + 1)(1 - alpha)) = {k}; mean coverage over splits k / (n + 1) = {k / 1501:.6f}" in out
    assert table(out) == documented_split(logits, labels, alpha, seed)


def test_other_seeds_and_raps_settings_change_the_table(npz, capsys):
    path, logits, labels = npz
    cli.main(["calibrate", str(path), "--conformal", "0.1"])
    first = table(capsys.readouterr().out)
    cli.main(["calibrate", str(path), "--conformal", "0.1", "--seed", "1", "--lam", "0.5", "--k-reg", "1"])
    second = table(capsys.readouterr().out)
    assert "RAPS (lam=0.5, k_reg=1)" in second and second["LAC"] != first["LAC"]
    assert second == documented_split(logits, labels, 0.1, 1, lam=0.5, k_reg=1)


def test_class_axis_and_pt_files(tmp_path, capsys):
    # calibrate reads what check reads, through the same loader: a .pt dict with 'targets' too.
    torch = pytest.importorskip("torch")
    logits, labels = heldout(rows=400)
    np.savez(tmp_path / "rows.npz", logits=logits, labels=labels)
    torch.save({"logits": torch.tensor(logits.T.copy()), "targets": torch.tensor(labels)}, tmp_path / "columns.pt")
    assert cli.main(["calibrate", str(tmp_path / "rows.npz"), "--conformal", "0.2"]) == 0
    rows = table(capsys.readouterr().out)
    assert cli.main(["calibrate", str(tmp_path / "columns.pt"), "--conformal", "0.2", "--axis", "0"]) == 0
    assert table(capsys.readouterr().out) == rows


def test_npy_files_are_read_and_refused_for_want_of_labels(tmp_path, capsys):
    logits, _ = heldout(rows=10)
    np.save(tmp_path / "logits.npy", logits)
    assert cli.main(["check", str(tmp_path / "logits.npy")]) == 0
    capsys.readouterr()
    assert cli.main(["calibrate", str(tmp_path / "logits.npy")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("softmaxkit calibrate: error: ") and "holds no labels" in err and err.count("\n") == 1


def test_too_few_rows_to_split(tmp_path, capsys):
    np.savez(tmp_path / "one.npz", logits=np.array([[1.0, 0.0]]), labels=np.array([0]))
    assert cli.main(["calibrate", str(tmp_path / "one.npz"), "--conformal", "0.1"]) == 1
    assert "--conformal needs at least 2 rows, to calibrate on half and evaluate on the other; got 1" in capsys.readouterr().err


def test_numbers_are_printed_before_the_plot_is_drawn(npz, tmp_path, capsys, monkeypatch):
    path, logits, labels = npz
    seen = {}

    def failing_plot(*args, **kwargs):
        seen["printed"] = capsys.readouterr().out
        raise ValueError("the plot failed")

    monkeypatch.setattr("softmaxkit.tools.calibration.temperature_scaling_diagram", failing_plot)
    out_png = tmp_path / "rel.png"
    assert cli.main(["calibrate", str(path), "--conformal", "0.1", "--plot", str(out_png)]) == 1
    fit = smk.fit_temperature(logits, labels)
    assert str(fit) in seen["printed"] and "APS, randomised" in seen["printed"]
    captured = capsys.readouterr()
    assert captured.err == f"softmaxkit calibrate: error: {out_png}: the plot failed\n"
    assert "written" not in captured.out and not out_png.exists()


def test_unwritable_plot_and_missing_matplotlib_keep_the_numbers(npz, tmp_path, capsys, monkeypatch):
    path, logits, labels = npz
    fit = str(smk.fit_temperature(logits, labels))
    assert cli.main(["calibrate", str(path), "--plot", str(tmp_path / "no" / "such" / "dir.png")]) == 1
    captured = capsys.readouterr()
    assert fit in captured.out and "No such file or directory" in captured.err
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert cli.main(["calibrate", str(path), "--plot", str(tmp_path / "rel.png")]) == 1
    captured = capsys.readouterr()
    assert fit in captured.out
    assert "temperature_scaling_diagram needs matplotlib: pip install 'softmaxkit[plot]'" in captured.err


def test_plot_shows_before_and_after_side_by_side(npz, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    from softmaxkit.tools.calibration import temperature_scaling_diagram

    path, logits, labels = npz
    out_png = tmp_path / "rel.png"
    assert cli.main(["calibrate", str(path), "--bins", "10", "--plot", str(out_png)]) == 0
    assert capsys.readouterr().out.endswith(f"reliability diagram written to {out_png}\n")
    height, width = imread(out_png).shape[:2]
    assert (width, height) == (1200, 720)

    fit = smk.fit_temperature(logits, labels, n_bins=10)
    fig = temperature_scaling_diagram(logits, labels, fit.temperature, 10)
    before_top, before_counts, after_top, after_counts = fig.axes
    assert before_top.get_title() == "before temperature scaling: T = 1"
    assert after_top.get_title() == f"after temperature scaling: T = {fit.temperature:.4g}"
    legends = [" ".join(t.get_text() for t in ax.get_legend().get_texts()) for ax in (before_top, after_top)]
    assert f"ECE = {fit.ece_before:.4f}" in legends[0] and f"ECE = {fit.ece_after:.4f}" in legends[1]
    assert sum(p.get_height() for p in before_counts.patches) == sum(p.get_height() for p in after_counts.patches) == len(labels)
    # left half before, right half after
    fig.draw_without_rendering()
    assert before_top.get_window_extent().x1 <= after_top.get_window_extent().x0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--conformal", "0"], "argument --conformal: ALPHA must be in (0, 1), exclusive; got 0.0"),
        (["--conformal", "1"], "argument --conformal: ALPHA must be in (0, 1), exclusive; got 1.0"),
        (["--conformal", "nan"], "argument --conformal: ALPHA must be in (0, 1), exclusive; got nan"),
        (["--conformal", "ten"], "argument --conformal: ALPHA must be a real number; got 'ten'"),
        (["--conformal", "0.1", "--seed", "-1"], "argument --seed: SEED must be an int >= 0; got -1"),
        (["--conformal", "0.1", "--seed", "x"], "argument --seed: SEED must be an int >= 0; got 'x'"),
        (["--conformal", "0.1", "--lam", "-1"], "argument --lam: LAM must be finite and >= 0; got -1.0"),
        (["--conformal", "0.1", "--k-reg", "1.5"], "argument --k-reg: K must be an int >= 0; got '1.5'"),
    ],
)
def test_usage_errors_say_what_is_allowed(args, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["calibrate", "x.npz", *args])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_help_documents_the_split(capsys):
    with pytest.raises(SystemExit):
        cli.main(["calibrate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "numpy.random.default_rng(SEED) draws a permutation of the rows, whose first N // 2 calibrate" in text
    assert "The numbers are printed before --plot draws the reliability diagrams" in text
