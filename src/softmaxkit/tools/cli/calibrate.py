"""``softmaxkit calibrate FILE``: temperature scaling from the command line."""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

from softmaxkit.frontend import validate
from softmaxkit.tools.logits_file import BadFile, add_max_bytes_option, load, run_on_file, shown


def _bins(text: str) -> int:
    """argparse type of ``--bins``: an int >= 1 (fit_temperature checks the upper bound)."""
    try:
        value: Any = int(text)
    except ValueError:
        # refused by the check below, whose message shows the text
        value = text
    try:
        return validate.count(value, "N", 1)
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="fit a softmax temperature to held-out logits and labels",
        description=(
            "Fit a temperature T by minimising the held-out negative log-likelihood "
            "(temperature scaling) and print T with the NLL and the expected "
            "calibration error before and after.  FILE is read as by 'softmaxkit "
            "check' (a regular .npz or .pt file; no code from it is run; arrays "
            "may declare at most the larger of 64 MiB and 16 times the file's "
            "size unless --max-bytes says otherwise) and must hold logits of "
            "shape (N, C) (classes along --axis) and integer labels of shape "
            "(N,): an .npz with arrays 'logits' and 'labels' (or 'targets'), or "
            "a .pt dict with those keys."
        ),
        epilog="Exit status: 0 ok, 1 unreadable or invalid data, 2 usage error.",
    )
    parser.add_argument("file", metavar="FILE", help="an .npz or .pt file with 'logits' and 'labels'")
    parser.add_argument("--plot", metavar="OUT.png", help="also write the reliability diagram after scaling (needs softmaxkit[plot])")
    parser.add_argument("--bins", type=_bins, default=15, metavar="N", help="confidence bins for the ECE (default 15)")
    parser.add_argument("--axis", type=int, default=-1, help="class axis of the logits (default -1)")
    add_max_bytes_option(parser)
    parser.set_defaults(func=run)


def _load(path: str, max_bytes: int | None) -> tuple[Any, Any]:
    logits, labels = load(path, max_bytes)
    if labels is None:
        raise BadFile("holds no labels: calibrate needs an array (or dict key) 'labels' or 'targets' beside 'logits'")
    return logits, labels


def run(args: argparse.Namespace) -> int:
    from softmaxkit.frontend.softmax import softmax
    from softmaxkit.tools.calibration import fit_temperature, reliability_diagram

    def work():
        logits, labels = _load(args.file, args.max_bytes)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            fit = fit_temperature(logits, labels, axis=args.axis, n_bins=args.bins)
        return logits, labels, fit, caught

    result = run_on_file("calibrate", args.file, "fitting", work)
    if result is None:
        return 1
    logits, labels, fit, caught = result
    if args.plot:
        try:
            probs = softmax(logits, axis=args.axis, temperature=fit.temperature)
            title = f"after temperature scaling: T = {fit.temperature:.4g}\nECE {fit.ece_before:.4f} -> {fit.ece_after:.4f}"
            reliability_diagram(probs, labels, args.bins, axis=args.axis, title=title).savefig(args.plot, dpi=120)
        except (ImportError, OSError, ValueError) as exc:
            print(f"softmaxkit calibrate: error: {shown(args.plot)}: {exc}", file=sys.stderr)
            return 1
    print(f"{args.file}")
    print(fit)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if args.plot:
        print(f"reliability diagram written to {args.plot}")
    return 0
