"""`softmaxkit check FILE`: reports, one-line errors, and no code run from files."""

import json

import numpy as np
import pytest

from softmaxkit.tools.cli import main

LOGITS = np.array([[30.0, 0.0], [1.0, 0.0]], dtype=np.float32)
TARGETS = np.array([0, 0])


class WritesMarker:
    """Unpickling this calls open(marker, "w"), which creates the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def run(capsys, *argv):
    code = main(["check", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, out, err, *fragments):
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("softmaxkit check: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


class TestReports:
    def test_npy_logits(self, tmp_path, capsys):
        path = tmp_path / "logits.npy"
        np.save(path, LOGITS)
        code, out, err = run(capsys, path)
        assert code == 0 and err == ""
        assert "1 of 2 rows (50%)" in out
        assert "zero target grad" not in out

    @pytest.mark.parametrize("key", ["targets", "labels"])
    def test_npz_with_targets(self, tmp_path, capsys, key):
        path = tmp_path / "batch.npz"
        np.savez(path, logits=LOGITS, **{key: TARGETS})
        code, out, _ = run(capsys, path)
        assert code == 0
        assert "zero target grad  1 of 2 rows (50%)" in out

    def test_json_and_axis(self, tmp_path, capsys):
        path = tmp_path / "batch.npz"
        np.savez(path, logits=LOGITS.T.copy(), targets=TARGETS)
        code, out, _ = run(capsys, path, "--axis", "0", "--format", "json")
        assert code == 0
        report = json.loads(out)
        assert report["axis"] == 0 and report["collapsed_rows"] == 1 and report["zero_grad_rows"] == 1

    def test_ignore_index(self, tmp_path, capsys):
        path = tmp_path / "batch.npz"
        np.savez(path, logits=LOGITS, targets=np.array([5, 0]))
        code, out, _ = run(capsys, path, "--ignore-index", "5", "--format", "json")
        assert code == 0 and json.loads(out)["target_rows"] == 1


class TestTorchFiles:
    torch = pytest.importorskip("torch")

    def test_tensor(self, tmp_path, capsys):
        path = tmp_path / "logits.pt"
        self.torch.save(self.torch.tensor(LOGITS), path)
        code, out, _ = run(capsys, path)
        assert code == 0 and "1 of 2 rows (50%)" in out

    def test_dict_with_labels(self, tmp_path, capsys):
        path = tmp_path / "batch.pt"
        self.torch.save({"logits": self.torch.tensor(LOGITS), "labels": self.torch.tensor(TARGETS)}, path)
        code, out, _ = run(capsys, path)
        assert code == 0 and "zero target grad  1 of 2 rows (50%)" in out

    @pytest.mark.parametrize(
        "obj, fragment",
        [
            ([1.0, 2.0], "holds a list; expected a tensor or a dict with key 'logits'"),
            ({"scores": 1}, "no key 'logits' (found: scores)"),
            ({"logits": [1.0, 2.0]}, "'logits' is a list, not a tensor"),
        ],
    )
    def test_wrong_contents(self, tmp_path, capsys, obj, fragment):
        path = tmp_path / "bad.pt"
        self.torch.save(obj, path)
        assert_one_line_error(*run(capsys, path), fragment)

    def test_corrupt(self, tmp_path, capsys):
        path = tmp_path / "bad.pt"
        path.write_bytes(b"not a torch file")
        assert_one_line_error(*run(capsys, path), "cannot read as .pt")


class TestBadFiles:
    def test_missing(self, tmp_path, capsys):
        assert_one_line_error(*run(capsys, tmp_path / "none.npy"), "no such file")

    def test_directory(self, tmp_path, capsys):
        assert_one_line_error(*run(capsys, tmp_path), "not a regular file (a directory)")

    def test_unsupported_suffix(self, tmp_path, capsys):
        path = tmp_path / "logits.csv"
        path.write_text("1,2\n")
        assert_one_line_error(*run(capsys, path), "unsupported file type '.csv'")

    def test_corrupt_npy(self, tmp_path, capsys):
        path = tmp_path / "bad.npy"
        path.write_bytes(b"\x93NUMPY garbage")
        assert_one_line_error(*run(capsys, path), "the array is a .npy file of format version 32.103")

    def test_npz_without_logits(self, tmp_path, capsys):
        path = tmp_path / "bad.npz"
        np.savez(path, scores=LOGITS, labels=TARGETS)
        assert_one_line_error(*run(capsys, path), "no array named 'logits' (found: scores, labels)")

    def test_npz_with_targets_and_labels(self, tmp_path, capsys):
        path = tmp_path / "bad.npz"
        np.savez(path, logits=LOGITS, targets=TARGETS, labels=TARGETS)
        assert_one_line_error(*run(capsys, path), "both 'targets' and 'labels'")

    def test_strings_are_not_logits(self, tmp_path, capsys):
        path = tmp_path / "words.npy"
        np.save(path, np.array(["a", "b"]))
        assert_one_line_error(*run(capsys, path), "logits must be a real floating or integer array")

    @pytest.mark.skipif(np.finfo(np.longdouble).eps == np.finfo(np.float64).eps, reason="long double is float64 here")
    def test_long_double_npy_names_its_dtype(self, tmp_path, capsys):
        # `check` of a '<f16' .npy printed "math domain error".
        path = tmp_path / "wide.npy"
        np.save(path, np.ones((2, 3), np.longdouble))
        assert_one_line_error(*run(capsys, path), f"logits dtype {np.dtype(np.longdouble).name}")

    def test_targets_out_of_range(self, tmp_path, capsys):
        path = tmp_path / "bad.npz"
        np.savez(path, logits=LOGITS, targets=np.array([0, 9]))
        assert_one_line_error(*run(capsys, path), "targets[1] = 9 is not a class index")


class TestNoCodeRunFromFiles:
    def test_npy_object_array_is_refused(self, tmp_path, capsys):
        marker = tmp_path / "marker"
        path = tmp_path / "evil.npy"
        np.save(path, np.array([WritesMarker(marker)], dtype=object), allow_pickle=True)
        assert_one_line_error(*run(capsys, path), "the array holds Python objects")
        assert not marker.exists()
        # The payload is live: loading it with pickle allowed creates the marker.
        np.load(path, allow_pickle=True)[0].close()
        assert marker.exists()

    def test_npz_object_array_is_refused(self, tmp_path, capsys):
        marker = tmp_path / "marker"
        path = tmp_path / "evil.npz"
        np.savez(path, logits=np.array([WritesMarker(marker)], dtype=object))
        assert_one_line_error(*run(capsys, path), "'logits' holds Python objects")
        assert not marker.exists()

    def test_pt_pickle_is_refused(self, tmp_path, capsys):
        torch = pytest.importorskip("torch")
        marker = tmp_path / "marker"
        path = tmp_path / "evil.pt"
        torch.save({"logits": WritesMarker(marker)}, path)
        assert_one_line_error(*run(capsys, path), "weights_only=True")
        assert not marker.exists()
        torch.load(path, weights_only=False)["logits"].close()
        assert marker.exists()


class TestUsage:
    def test_help(self, capsys):
        with pytest.raises(SystemExit) as exc:
            main(["check", "--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: softmaxkit check")
        assert ".npz  arrays named 'logits'" in out
        assert max(len(line) for line in out.splitlines()) <= 80

    @pytest.mark.parametrize(
        "argv", [["check"], ["check", "x.npy", "--format", "xml"], ["check", "x.npy", "--axis", "a"]]
    )
    def test_usage_errors_exit_2(self, capsys, argv):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert "usage: softmaxkit check" in capsys.readouterr().err

    @pytest.mark.parametrize("text, size", [("1000", 1000), ("64M", 64 * 2**20), ("4g", 4 * 2**30), ("2 GiB", 2 * 2**30)])
    def test_max_bytes_sizes(self, text, size):
        from softmaxkit.tools.logits_file import parse_size

        assert parse_size(text) == size

    @pytest.mark.parametrize("text", ["0", "-5", "1.5G", "lots", "4X"])
    def test_bad_max_bytes_is_a_usage_error(self, capsys, text):
        with pytest.raises(SystemExit) as exc:
            main(["check", "x.npy", "--max-bytes", text])
        assert exc.value.code == 2
        assert "--max-bytes: expected a positive size" in capsys.readouterr().err

    def test_max_bytes_lowers_the_limit(self, tmp_path, capsys):
        path = tmp_path / "logits.npy"
        np.save(path, np.zeros((4, 256), np.float32))
        assert_one_line_error(
            *run(capsys, path, "--max-bytes", "1K"),
            "the array declares 4096 bytes (4 KiB), over the limit of 1024 bytes (1 KiB, set by --max-bytes)",
        )

    def test_zero_length_axes_count_as_one(self, tmp_path, capsys):
        # A (2**40, 0) array holds no data, but its rows would still cost
        # memory in the report: it declares 2**40 rows' worth.
        path = tmp_path / "rows.npy"
        np.save(path, np.zeros((2**40, 0), np.float32))
        assert_one_line_error(*run(capsys, path), f"the array declares {2**42} bytes")

    def test_listed_in_top_level_help(self, capsys):
        with pytest.raises(SystemExit):
            main(["--help"])
        assert "check" in capsys.readouterr().out


HAZARDS = np.array(
    [[30.0, 0.0, 1.0], [1.0, 0.5, np.nan], [-np.inf, -np.inf, -np.inf], [100.0, 1.0, 2.0], [1.0, 2.0, 3.0]],
    dtype=np.float32,
)


class TestFailOn:
    @pytest.fixture
    def clean(self, tmp_path):
        path = tmp_path / "clean.npz"
        np.savez(path, logits=np.array([[1.0, 0.5, 0.0], [0.0, 2.0, 1.0]], np.float32), targets=np.array([0, 1]))
        return path

    @pytest.mark.parametrize(
        "logits, condition",
        [
            (np.array([[1.0, np.nan]], np.float32), "nan"),
            (np.array([[1.0, np.inf]], np.float32), "overflow"),
            (np.array([[100.0, 99.5]], np.float32), "overflow"),
            (np.array([[30.0, 0.0]], np.float32), "collapse"),
        ],
    )
    def test_each_condition_fails_only_when_listed(self, tmp_path, capsys, logits, condition):
        path = tmp_path / "logits.npy"
        np.save(path, logits)
        others = [c for c in ("nan", "overflow", "collapse") if c != condition]
        code, out, _ = run(capsys, path, "--fail-on", ",".join(others))
        assert code == 0 and "check failed" not in out
        code, out, _ = run(capsys, path, "--fail-on", condition)
        assert code == 1
        assert out.rstrip().endswith(f"check failed: {condition} found (--fail-on {condition})")
        assert f"[fails: --fail-on {condition}]" in out

    def test_zero_grad(self, tmp_path, capsys):
        path = tmp_path / "batch.npz"
        np.savez(path, logits=np.array([[20.0, 0.0], [1.0, 0.0]], np.float32), targets=np.array([0, 1]))
        assert run(capsys, path, "--fail-on", "zero-grad")[0] == 1
        np.savez(path, logits=np.array([[20.0, 0.0], [1.0, 0.0]], np.float32), targets=np.array([1, 1]))
        assert run(capsys, path, "--fail-on", "zero-grad")[0] == 0  # a wrong confident row keeps its gradient

    def test_zero_grad_without_targets_is_an_error(self, tmp_path, capsys):
        path = tmp_path / "logits.npy"
        np.save(path, LOGITS)
        assert_one_line_error(*run(capsys, path, "--fail-on", "zero-grad"), "--fail-on zero-grad needs targets")

    def test_clean_file_passes_everything(self, clean, capsys):
        code, out, _ = run(capsys, clean, "--fail-on", "nan,overflow,collapse,zero-grad")
        assert code == 0 and "found" not in out

    def test_default_never_fails(self, tmp_path, capsys):
        path = tmp_path / "batch.npz"
        np.savez(path, logits=HAZARDS, targets=np.array([0, 1, 2, 0, 2]))
        code, out, _ = run(capsys, path)
        assert code == 0 and "[fails" not in out and "check failed" not in out

    def test_every_finding_has_one_line_of_advice(self, tmp_path, capsys):
        path = tmp_path / "batch.npz"
        logits = np.concatenate([HAZARDS, np.array([[np.inf, 0.0, 0.0], [-200.0, -200.0, -201.0]], np.float32)])
        np.savez(path, logits=logits, targets=np.array([0, 1, 2, 0, 2, 0, 0]))
        code, out, _ = run(capsys, path)
        assert code == 0
        lines = out.split("\n\n")[1].splitlines()
        found, advice = lines[0::2], lines[1::2]
        assert len(found) == len(advice) == 7  # NaN, +inf, overflow, underflow, masked, collapse, zero grad
        assert all(line.startswith("found  ") for line in found)
        assert all(line.startswith("  do   ") and "softmaxkit" in line for line in advice)
        assert "use softmaxkit.torch.cross_entropy, which keeps the gradient of confident rows" in out
        assert "softmaxkit.torch.watch" in advice[0]

    def test_json(self, tmp_path, capsys):
        path = tmp_path / "batch.npz"
        np.savez(path, logits=HAZARDS, targets=np.array([0, 1, 2, 0, 2]))
        code, out, _ = run(capsys, path, "--format", "json", "--fail-on", "collapse,nan")
        report = json.loads(out)
        assert code == 1 and report["failed"] == ["collapse", "nan"]
        conditions = {f["condition"]: f["fails"] for f in report["findings"]}
        assert conditions == {"nan": True, "overflow": False, None: False, "collapse": True, "zero-grad": False}
        assert all(f["advice"] for f in report["findings"])

    @pytest.mark.parametrize("text", ["nan,bogus", "", ",", "NaN"])
    def test_unknown_condition_is_a_usage_error(self, capsys, text):
        with pytest.raises(SystemExit) as exc:
            main(["check", "x.npy", "--fail-on", text])
        assert exc.value.code == 2
        assert "--fail-on: expected a comma-separated list of nan, overflow, collapse, zero-grad" in capsys.readouterr().err


class TestShift:
    def lm_batch(self):
        # Position t predicts token t + 1: the logits at (0, 1) are confident
        # in class 3, which is the label at (0, 2).
        logits = np.zeros((2, 4, 5), np.float32)
        logits[0, 1, 3] = 40.0
        labels = np.ones((2, 4), np.int64)
        labels[0, 2] = 3
        labels[:, 0] = -100  # the first label has no logits before it
        return logits, labels

    def test_pairs_logits_with_the_next_label(self, tmp_path, capsys):
        logits, labels = self.lm_batch()
        path = tmp_path / "lm.npz"
        np.savez(path, logits=logits, labels=labels)
        code, out, _ = run(capsys, path, "--shift", "--format", "json")
        report = json.loads(out)
        assert code == 0 and report["shape"] == [2, 3, 5]
        assert (report["target_rows"], report["zero_grad_rows"]) == (6, 1)
        code, out, _ = run(capsys, path, "--format", "json")
        report = json.loads(out)
        assert (report["target_rows"], report["zero_grad_rows"]) == (6, 0)  # unshifted: -100 rows left out
        assert run(capsys, path, "--shift", "--fail-on", "zero-grad")[0] == 1

    def test_class_axis_first(self, tmp_path, capsys):
        logits, labels = self.lm_batch()
        path = tmp_path / "lm.npz"
        np.savez(path, logits=np.moveaxis(logits, -1, 1).copy(), labels=labels)  # (B, V, T): no
        code, out, _ = run(capsys, path, "--shift", "--axis", "1", "--format", "json")
        # With the classes on axis 1 the axis before them is the batch axis.
        assert code == 0 and json.loads(out)["shape"] == [1, 5, 4]

    def test_torch_file(self, tmp_path, capsys):
        torch = pytest.importorskip("torch")
        logits, labels = self.lm_batch()
        path = tmp_path / "lm.pt"
        torch.save({"logits": torch.from_numpy(logits), "labels": torch.from_numpy(labels)}, path)
        code, out, _ = run(capsys, path, "--shift", "--format", "json")
        assert code == 0 and json.loads(out)["zero_grad_rows"] == 1

    def test_needs_targets(self, tmp_path, capsys):
        path = tmp_path / "logits.npy"
        np.save(path, np.zeros((2, 3, 4), np.float32))
        assert_one_line_error(*run(capsys, path, "--shift"), "--shift pairs logits with the next position's targets")

    def test_needs_a_sequence_axis(self, tmp_path, capsys):
        path = tmp_path / "batch.npz"
        np.savez(path, logits=LOGITS, targets=TARGETS)
        assert_one_line_error(*run(capsys, path, "--shift", "--axis", "0"), "--shift needs a sequence axis before the class axis")
