"""``softmaxkit calibrate FILE.npz``: temperature scaling from the command line."""

from __future__ import annotations

import argparse
import sys
import warnings
import zipfile

import numpy as np


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {value}")
    return value


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="fit a softmax temperature to held-out logits and labels",
        description=(
            "Fit a temperature T by minimising the held-out negative log-likelihood "
            "(temperature scaling) and print T with the NLL and the expected "
            "calibration error before and after.  FILE.npz must hold an array "
            "'logits' of shape (N, C) (classes along --axis) and an integer array "
            "'labels' of shape (N,)."
        ),
        epilog="Exit status: 0 ok, 1 unreadable or invalid data, 2 usage error.",
    )
    parser.add_argument("file", metavar="FILE.npz", help="archive with arrays 'logits' and 'labels'")
    parser.add_argument("--plot", metavar="OUT.png", help="also write the reliability diagram after scaling (needs softmaxkit[plot])")
    parser.add_argument("--bins", type=_positive_int, default=15, metavar="N", help="confidence bins for the ECE (default 15)")
    parser.add_argument("--axis", type=int, default=-1, help="class axis of the logits (default -1)")
    parser.set_defaults(func=run)


def _load(path: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot be opened ({exc.strerror or exc})") from None
    # np.load reads any other file as a pickle and, with pickles refused,
    # would blame pickling; say what the file is not instead.
    if not (magic.startswith(b"PK") or magic == b"\x93NUMPY"):
        raise ValueError(f"{path}: not a NumPy .npz archive (write one with numpy.savez(path, logits=..., labels=...))")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: cannot be read as a NumPy .npz archive ({exc})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: holds a single array; expected an .npz archive with arrays 'logits' and 'labels' (numpy.savez)")
    with archive:
        missing = [k for k in ("logits", "labels") if k not in archive.files]
        if missing:
            found = ", ".join(repr(k) for k in archive.files) or "none"
            raise ValueError(f"{path}: missing array(s) {', '.join(map(repr, missing))}; found {found}")
        try:
            return archive["logits"], archive["labels"]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{path}: cannot read its arrays ({exc})") from None


def run(args: argparse.Namespace) -> int:
    from softmaxkit._core import softmax
    from softmaxkit.calibration import fit_temperature, reliability_diagram

    try:
        logits, labels = _load(args.file)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            fit = fit_temperature(logits, labels, axis=args.axis, n_bins=args.bins)
        if args.plot:
            probs = softmax(np.asarray(logits, dtype=np.float64), axis=args.axis, temperature=fit.temperature)
            title = f"after temperature scaling: T = {fit.temperature:.4g}\nECE {fit.ece_before:.4f} -> {fit.ece_after:.4f}"
            reliability_diagram(probs, labels, args.bins, axis=args.axis, title=title).savefig(args.plot, dpi=120)
    except (ValueError, TypeError, ImportError, OSError) as exc:
        print(f"softmaxkit calibrate: error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.file}")
    print(fit)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if args.plot:
        print(f"reliability diagram written to {args.plot}")
    return 0
