"""fit_temperature, expected_calibration_error, reliability_diagram and `softmaxkit calibrate`."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest

import softmaxkit as smk
from softmaxkit.tools import cli


def ece_reference(probs, labels, n_bins, norm="l1"):
    """The definition, one sample at a time: bin i is (i/n, (i+1)/n]."""
    bins = [[] for _ in range(n_bins)]
    edges = np.linspace(0, 1, n_bins + 1)
    for p, y in zip(probs, labels):
        conf = max(p)
        i = next(b for b in range(n_bins) if conf <= edges[b + 1])
        bins[i].append((conf, float(int(np.argmax(p)) == y)))
    gaps = [(len(b), abs(np.mean([a for _, a in b]) - np.mean([c for c, _ in b]))) for b in bins if b]
    if norm == "max":
        return max(g for _, g in gaps)
    return sum(n * g for n, g in gaps) / len(labels)


def overconfident_data(factor, n=40_000, classes=6, seed=0):
    """Labels drawn from softmax(z); the 'model' reports z * factor."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, classes)) * 1.5
    return z * factor, smk.sample(z, rng=rng)


class TestExpectedCalibrationError:
    @pytest.mark.parametrize("n_bins", [1, 7, 15])
    @pytest.mark.parametrize("norm", ["l1", "max"])
    def test_against_definition(self, n_bins, norm):
        rng = np.random.default_rng(n_bins)
        probs = smk.softmax(rng.normal(size=(300, 4)) * 2)
        labels = rng.integers(0, 4, 300)
        got = smk.expected_calibration_error(probs, labels, n_bins, norm)
        assert got == pytest.approx(ece_reference(probs, labels, n_bins, norm), abs=1e-15)

    def test_hand_computed(self):
        probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
        labels = np.array([0, 1, 0, 1])
        # Bins (0.8, 0.9]: acc 0.5, conf 0.9; (0.5, 0.6]: acc 1, conf 0.6; (0.6, 0.7]: acc 1, conf 0.7.
        assert smk.expected_calibration_error(probs, labels, n_bins=10) == pytest.approx((2 * 0.4 + 0.4 + 0.3) / 4)
        assert smk.expected_calibration_error(probs, labels, n_bins=10, norm="max") == pytest.approx(0.4)

    def test_bins_are_closed_on_the_right(self):
        # Confidence exactly 0.5 belongs to (0, 0.5], not (0.5, 1]: accuracy 1 there, gap 0.5.
        probs = np.array([[0.5, 0.5], [1.0, 0.0]])
        labels = np.array([0, 0])
        assert smk.expected_calibration_error(probs, labels, n_bins=2, norm="max") == 0.5
        assert smk.expected_calibration_error(probs, labels, n_bins=2) == 0.25

    def test_class_axis(self):
        rng = np.random.default_rng(0)
        probs = smk.softmax(rng.normal(size=(50, 3)))
        labels = rng.integers(0, 3, 50)
        assert smk.expected_calibration_error(probs.T, labels, axis=0) == smk.expected_calibration_error(probs, labels)

    @pytest.mark.parametrize(
        ("kwargs", "exc", "pattern"),
        [
            ({"n_bins": 0}, ValueError, r"n_bins must be an int in \[1, 1000000\]; got 0"),
            ({"n_bins": 2.5}, TypeError, "n_bins must be an int"),
            ({"norm": "l2"}, ValueError, "norm must be one of 'l1', 'max'; got 'l2'"),
            ({"probs": np.array([[1.5, -0.5]])}, ValueError, r"probs must be probabilities in \[0, 1\]; got 1.5"),
            ({"labels": np.array([2])}, ValueError, r"labels\[0\] \(flattened\) = 2 is not a class index: allowed 0 to 1"),
            ({"labels": np.array([0.0])}, TypeError, "labels must hold integer class indices"),
            ({"labels": np.array([0, 1])}, ValueError, r"labels must have shape \(1,\)"),
        ],
    )
    def test_invalid(self, kwargs, exc, pattern):
        args = {"probs": np.array([[0.7, 0.3]]), "labels": np.array([0])} | kwargs
        with pytest.raises(exc, match=pattern):
            smk.expected_calibration_error(**args)

    @pytest.mark.parametrize("n_bins", [2**63, 2**100])
    def test_huge_n_bins_is_refused_by_name(self, n_bins):
        # n_bins=2**63 raised IndexError from inside NumPy, 2**100 NumPy's
        # "Maximum allowed size exceeded"; neither named the argument.
        with pytest.raises(ValueError, match=rf"n_bins must be an int in \[1, 1000000\]; got {n_bins}"):
            smk.expected_calibration_error(np.array([[0.7, 0.3]]), np.array([0]), n_bins=n_bins)

    def test_uint64_labels_above_int64_are_shown_as_given(self):
        # uint64 labels >= 2**63 were cast to int64 first, and the message
        # showed the wrapped negative value.
        labels = np.array([0, 2**63 + 1], dtype=np.uint64)
        with pytest.raises(ValueError, match=r"labels\[1\] \(flattened\) = 9223372036854775809 is not a class index"):
            smk.expected_calibration_error(np.array([[0.7, 0.3], [0.5, 0.5]]), labels)


class TestFitTemperature:
    @pytest.mark.parametrize("factor", [3.0, 0.5])
    def test_recovers_the_overconfidence_factor(self, factor):
        logits, labels = overconfident_data(factor)
        fit = smk.fit_temperature(logits, labels)
        assert fit.temperature == pytest.approx(factor, rel=0.02)
        assert fit.nll_after < fit.nll_before
        assert fit.ece_after < fit.ece_before
        assert fit.ece_after < 0.02

    def test_result_fields_agree_with_the_public_functions(self):
        logits, labels = overconfident_data(2.0, n=3000)
        fit = smk.fit_temperature(logits, labels, n_bins=10)
        T = fit.temperature
        assert fit.nll_after == pytest.approx(float(smk.cross_entropy(logits / T, labels)), rel=1e-12)
        assert fit.nll_before == pytest.approx(float(smk.cross_entropy(logits, labels)), rel=1e-12)
        assert fit.ece_after == smk.expected_calibration_error(smk.softmax(logits, temperature=T), labels, 10)
        assert (fit.n_samples, fit.n_classes, fit.n_bins) == (3000, 6, 10)
        # A minimum: nearby temperatures do no better.
        for t in (T * 0.99, T * 1.01):
            assert float(smk.cross_entropy(logits / t, labels)) > fit.nll_after
        with pytest.raises(dataclasses.FrozenInstanceError):
            fit.temperature = 1.0
        text = str(fit)
        assert f"T = {T:.6g}" in text and "NLL" in text and "ECE (10 bins)" in text and f"{fit.ece_after:.6f}" in text

    def test_deterministic_and_kind_independent(self):
        logits, labels = overconfident_data(1.5, n=2000)
        a = smk.fit_temperature(logits, labels)
        assert smk.fit_temperature(logits, labels) == a
        torch = pytest.importorskip("torch")
        assert smk.fit_temperature(torch.tensor(logits), torch.tensor(labels)).temperature == a.temperature

    @pytest.mark.parametrize("dtype", ["bfloat16", "float8_e4m3fn"])
    def test_torch_dtypes_without_numpy_counterpart(self, dtype):
        # torch bfloat16 (and float8) logits raised torch's "Got unsupported
        # ScalarType BFloat16" from the host copy, which went through NumPy.
        torch = pytest.importorskip("torch")
        logits, labels = overconfident_data(2.0, n=1000)
        t = torch.tensor(logits).to(getattr(torch, dtype))
        expected = smk.fit_temperature(t.double().numpy(), labels)
        assert smk.fit_temperature(t, torch.tensor(labels)) == expected
        probs = smk.softmax(t.float()).to(getattr(torch, dtype))
        ece = smk.expected_calibration_error(probs, labels)
        assert ece == smk.expected_calibration_error(probs.double().numpy(), labels)

    def test_class_axis_and_float32(self):
        logits, labels = overconfident_data(2.0, n=2000)
        a = smk.fit_temperature(logits.astype(np.float32), labels)
        b = smk.fit_temperature(logits.astype(np.float32).T, labels, axis=0)
        assert a.temperature == b.temperature

    def test_separable_data_stops_at_the_bound_with_a_warning(self):
        logits = np.array([[2.0, 0.0], [0.0, 3.0]])
        with pytest.warns(RuntimeWarning, match="still decreasing at the bound temperature=0.01"):
            fit = smk.fit_temperature(logits, np.array([0, 1]), bounds=(0.01, 100.0))
        assert fit.temperature == 0.01

    def test_masked_classes(self):
        logits, labels = overconfident_data(2.0, n=4000)
        masked = np.concatenate([logits, np.full((len(labels), 1), -np.inf)], axis=1)
        assert smk.fit_temperature(masked, labels).temperature == pytest.approx(smk.fit_temperature(logits, labels).temperature, rel=1e-6)

    @pytest.mark.parametrize(
        ("logits", "labels", "exc", "pattern"),
        [
            (np.array([[0.0, -np.inf]]), np.array([1]), ValueError, r"labels\[0\] = 1 has probability 0 at every temperature"),
            (np.array([[0.0, np.nan]]), np.array([0]), ValueError, "logits must not be NaN"),
            (np.zeros((0, 3)), np.zeros(0, dtype=int), ValueError, "at least one sample"),
            (np.zeros((2, 3)), np.array([0.0, 1.0]), TypeError, "labels must hold integer class indices"),
            (np.zeros(()), np.zeros((), dtype=int), ValueError, "logits must have a class axis"),
        ],
    )
    def test_invalid_data(self, logits, labels, exc, pattern):
        with pytest.raises(exc, match=pattern):
            smk.fit_temperature(logits, labels)

    def test_one_dimensional_empty_logits(self):
        # fit_temperature(np.zeros(0), ...) raised NumPy's "cannot reshape
        # array of size 0 into shape (0)".
        with pytest.raises(ValueError, match=r"logits must hold at least one sample and one class; got shape \(0,\)"):
            smk.fit_temperature(np.zeros(0), np.zeros((), dtype=int))

    @pytest.mark.parametrize("n_bins", [2**63, 2**100])
    def test_huge_n_bins_is_refused_by_name(self, n_bins):
        # As for expected_calibration_error: an IndexError or NumPy's size error.
        with pytest.raises(ValueError, match=rf"n_bins must be an int in \[1, 1000000\]; got {n_bins}"):
            smk.fit_temperature(np.zeros((2, 3)), np.array([0, 1]), n_bins=n_bins)

    @pytest.mark.parametrize("tol", [1e-16, 1e-17, 1e-300, 5e-324])
    def test_tiny_tol_terminates(self, monkeypatch, tol):
        # tol <= 1e-16 never returned: the bracket on log T cannot shrink
        # below the float64 spacing, so `while b - a > tol` looped forever.
        # Each step costs one NLL evaluation; count them instead of timing.
        from softmaxkit.tools import calibration

        calls = []
        real = calibration._mean_nll

        def counted(*args):
            calls.append(1)
            if len(calls) > 5000:
                raise AssertionError("fit_temperature does not stop")
            return real(*args)

        monkeypatch.setattr(calibration, "_mean_nll", counted)
        logits, labels = overconfident_data(3.0, n=200)
        loose = smk.fit_temperature(logits, labels, tol=1e-12).temperature
        fit = smk.fit_temperature(logits, labels, tol=tol)
        assert fit.temperature == pytest.approx(loose, rel=1e-9)

    @pytest.mark.parametrize(
        ("kwargs", "exc", "pattern"),
        [
            ({"bounds": (2.0, 1.0)}, ValueError, r"bounds must satisfy 0 < low < high < inf; got \(2.0, 1.0\)"),
            ({"bounds": 3.0}, TypeError, "bounds must be a pair"),
            ({"tol": 0.0}, ValueError, "tol must be finite and > 0; got 0.0"),
            ({"n_bins": -1}, ValueError, r"n_bins must be an int in \[1, 1000000\]; got -1"),
        ],
    )
    def test_invalid_parameters(self, kwargs, exc, pattern):
        with pytest.raises(exc, match=pattern):
            smk.fit_temperature(np.zeros((2, 3)), np.array([0, 1]), **kwargs)


class TestReliabilityDiagram:
    def test_figure(self, tmp_path):
        pytest.importorskip("matplotlib")
        from matplotlib.figure import Figure

        logits, labels = overconfident_data(3.0, n=2000)
        fig = smk.reliability_diagram(smk.softmax(logits), labels, n_bins=10, title="overconfident")
        assert isinstance(fig, Figure)
        top, bottom = fig.axes
        assert top.get_title() == "overconfident"
        assert sum(p.get_height() for p in bottom.patches) == 2000
        ece = smk.expected_calibration_error(smk.softmax(logits), labels, 10)
        assert any(f"{ece:.4f}" in t.get_text() for t in top.get_legend().get_texts())
        fig.savefig(tmp_path / "r.png")
        assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def test_missing_matplotlib_names_the_extra(self, monkeypatch):
        monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
        with pytest.raises(ImportError, match=r"pip install 'softmaxkit\[plot\]'"):
            smk.reliability_diagram(np.array([[0.5, 0.5]]), np.array([0]))


class TestCli:
    @pytest.fixture(autouse=True)
    def only_calibrate(self, monkeypatch):
        # Build the parser from this subcommand alone, so the test does not
        # depend on the other subcommands' modules.
        monkeypatch.setattr(cli, "_SUBCOMMANDS", ("softmaxkit.tools.cli.calibrate",))

    def test_registered(self):
        # The fixture replaced the tuple; read the module's own listing.
        with open(cli.__file__) as f:
            assert '"softmaxkit.tools.cli.calibrate",' in f.read()

    def test_report_and_plot(self, tmp_path, capsys):
        logits, labels = overconfident_data(3.0, n=5000)
        path = tmp_path / "heldout.npz"
        np.savez(path, logits=logits.astype(np.float32), labels=labels)
        pytest.importorskip("matplotlib")
        assert cli.main(["calibrate", str(path), "--bins", "10", "--plot", str(tmp_path / "rel.png")]) == 0
        out = capsys.readouterr().out
        fit = smk.fit_temperature(logits.astype(np.float32), labels, n_bins=10)
        assert str(fit) in out
        assert (tmp_path / "rel.png").exists()

    @pytest.mark.parametrize(
        ("content", "pattern"),
        [
            (None, "no such file"),
            (b"not an archive", "not a NumPy .npz archive"),
            ({"logits": np.zeros((2, 3))}, "holds no labels"),
            ({"labels": np.zeros(2, dtype=int)}, "no array named 'logits' (found: labels)"),
            ({"logits": np.zeros((2, 3)), "labels": np.array([0, 7])}, "= 7 is not a class index"),
            ({"logits": np.array([object()]), "labels": np.array([0])}, "holds Python objects"),
            # uint64 labels >= 2**63 were shown wrapped: -9223372036854775807.
            ({"logits": np.zeros((2, 3)), "labels": np.array([2**63 + 1, 0], np.uint64)}, "= 9223372036854775809 is not"),
        ],
    )
    def test_bad_files_exit_1_without_traceback(self, tmp_path, capsys, content, pattern):
        path = tmp_path / "data.npz"
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            np.savez(path, **content)
        assert cli.main(["calibrate", str(path)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"softmaxkit calibrate: error: {path}: ") and pattern in err and "Traceback" not in err
        assert err.count("\n") == 1

    def test_targets_key_and_pt_files_as_in_check(self, tmp_path, capsys):
        # calibrate reads files with check's loader: the same formats and keys.
        logits, labels = overconfident_data(2.0, n=500)
        path = tmp_path / "heldout.npz"
        np.savez(path, logits=logits, targets=labels)
        assert cli.main(["calibrate", str(path)]) == 0
        expected = str(smk.fit_temperature(logits, labels))
        assert expected in capsys.readouterr().out
        torch = pytest.importorskip("torch")
        path = tmp_path / "heldout.pt"
        torch.save({"logits": torch.tensor(logits), "labels": torch.tensor(labels)}, path)
        assert cli.main(["calibrate", str(path)]) == 0
        assert expected in capsys.readouterr().out

    @pytest.mark.parametrize("args", [["calibrate"], ["calibrate", "x.npz", "--bins", "0"], ["calibrate", "x.npz", "--nope"]])
    def test_usage_errors_exit_2(self, args, capsys):
        with pytest.raises(SystemExit) as info:
            cli.main(args)
        assert info.value.code == 2

    @pytest.mark.parametrize(("text", "shown"), [("0", "0"), ("-3", "-3"), ("2.5", "'2.5'"), ("many", "'many'")])
    def test_bins_usage_error_says_what_is_allowed(self, text, shown, capsys):
        with pytest.raises(SystemExit) as info:
            cli.main(["calibrate", "x.npz", "--bins", text])
        assert info.value.code == 2
        assert f"argument --bins: N must be an int >= 1; got {shown}" in capsys.readouterr().err
