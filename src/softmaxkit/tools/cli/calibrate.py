"""``softmaxkit calibrate FILE``: temperature scaling and conformal prediction sets from the command line.

Every number is computed, then printed, before the optional plot is drawn:
a plot that cannot be made or written (no matplotlib, an unwritable path)
costs the plot only.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from softmaxkit.frontend import validate
from softmaxkit.tools.logits_file import BadFile, add_max_bytes_option, load, run_on_file, shown

# Angelopoulos & Bates's RAPS example on ImageNet uses these.
_LAM = 0.01
_K_REG = 5

_DESCRIPTION = """\
Fit a temperature T by minimising the held-out negative log-likelihood
(temperature scaling) and print T with the NLL and the expected calibration
error before and after.

FILE is read exactly as by 'softmaxkit check' (the same loader): a regular
.npz with arrays 'logits' and 'labels' (or 'targets'), or a .pt dict with
those keys; a .npy file holds logits only and is refused for want of labels.
No code from FILE is run, and its arrays may declare at most the larger of
64 MiB and 16 times the file's size unless --max-bytes says otherwise.
Logits have shape (N, C) (classes along --axis, further axes are rows too)
and labels shape (N,).

--conformal ALPHA also reports split conformal prediction sets: one
numpy.random.default_rng(SEED) draws a permutation of the rows, whose first
N // 2 calibrate and whose other N - N // 2 evaluate; the table gives the
coverage (fraction of evaluation labels in their set, at least 1 - ALPHA on
average over splits) and the mean set size for LAC, APS and RAPS, each
non-randomised and (APS, RAPS) randomised, the latter drawing their
uniforms from the same generator, calibration then evaluation, in the
table's order.  The sets use the file's logits as they are (T = 1): a
temperature fitted on the same rows would break the exchangeability the
guarantee rests on.

The numbers are printed before --plot draws the reliability diagrams
(before and after scaling, side by side), so a failed plot loses nothing.
"""


def _parsed(convert, check):
    """An argparse type: ``convert`` the text, then ``check`` it; a usage error names the value."""

    def parse(text: str) -> Any:
        try:
            value: Any = convert(text)
        except ValueError:
            # refused by the check below, whose message shows the text
            value = text
        try:
            return check(value)
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _alpha(value: Any) -> float:
    from softmaxkit.tools.conformal import _alpha

    return _alpha(value, "ALPHA")


_bins = _parsed(int, lambda v: validate.count(v, "N", 1))


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="fit a softmax temperature to held-out logits and labels; conformal prediction sets",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 ok, 1 unreadable or invalid data or a failed plot, 2 usage error.",
    )
    parser.add_argument("file", metavar="FILE", help="an .npz or .pt file with 'logits' and 'labels'")
    parser.add_argument(
        "--plot", metavar="OUT.png", help="also write the reliability diagrams before and after scaling (needs softmaxkit[plot])"
    )
    parser.add_argument("--bins", type=_bins, default=15, metavar="N", help="confidence bins for the ECE (default 15)")
    parser.add_argument("--axis", type=int, default=-1, help="class axis of the logits (default -1)")
    parser.add_argument(
        "--conformal",
        type=_parsed(float, _alpha),
        metavar="ALPHA",
        help="also report conformal prediction sets at miscoverage ALPHA in (0, 1) on a seeded half/half split",
    )
    parser.add_argument(
        "--seed",
        type=_parsed(int, lambda v: validate.count(v, "SEED", 0)),
        default=0,
        metavar="SEED",
        help="seed of the --conformal split and uniforms (default 0)",
    )
    parser.add_argument(
        "--lam",
        type=_parsed(float, lambda v: validate.non_negative(v, "LAM")),
        default=_LAM,
        metavar="LAM",
        help=f"RAPS penalty per rank beyond --k-reg (default {_LAM})",
    )
    parser.add_argument(
        "--k-reg",
        type=_parsed(int, lambda v: validate.count(v, "K", 0)),
        default=_K_REG,
        metavar="K",
        help=f"RAPS ranks without penalty (default {_K_REG})",
    )
    add_max_bytes_option(parser)
    parser.set_defaults(func=run)


def _load(path: str, max_bytes: int | None) -> tuple[Any, Any]:
    logits, labels = load(path, max_bytes)
    if labels is None:
        raise BadFile("holds no labels: calibrate needs an array (or dict key) 'labels' or 'targets' beside 'logits'")
    return logits, labels


@dataclass(frozen=True)
class _SetRow:
    name: str
    coverage: float
    mean_size: float


@dataclass(frozen=True)
class _ConformalReport:
    alpha: float
    seed: int
    n_calibration: int
    n_evaluation: int
    rank: int
    rows: tuple[_SetRow, ...]

    def __str__(self) -> str:
        n = self.n_calibration
        width = max(len("score"), *(len(r.name) for r in self.rows))
        lines = [
            f"conformal sets, alpha = {self.alpha:g}: {n} rows calibrate, {self.n_evaluation} evaluate "
            f"(seed {self.seed}), logits at T = 1",
            f"rank k = ceil((n + 1)(1 - alpha)) = {self.rank}; mean coverage over splits k / (n + 1) = {self.rank / (n + 1):.6f}",
            f"{'score':{width}}  {'coverage':>10}  {'mean size':>10}",
        ]
        lines += [f"{r.name:{width}}  {r.coverage:>10.6f}  {r.mean_size:>10.4f}" for r in self.rows]
        return "\n".join(lines)


def _conformal_report(logits: Any, labels: Any, axis: int, alpha: float, seed: int, lam: float, k_reg: int) -> _ConformalReport:
    """The documented split: a permutation from ``default_rng(seed)``, its first half calibrates."""
    from softmaxkit.tools import conformal
    from softmaxkit.tools.calibration import _labels, _require_samples, _rows

    x, rest = _rows(logits, axis, "logits")
    _require_samples(x, rest, "logits")
    y = _labels(labels, rest, x.shape[-1])
    total = x.shape[0]
    if total < 2:
        raise ValueError(f"--conformal needs at least 2 rows, to calibrate on half and evaluate on the other; got {total}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(total)
    cal, ev = order[: total // 2], order[total // 2 :]
    settings = (
        ("LAC", dict(score="lac")),
        ("APS", dict(score="aps")),
        ("APS, randomised", dict(score="aps", randomized=True)),
        (f"RAPS (lam={lam:g}, k_reg={k_reg})", dict(score="raps", lam=lam, k_reg=k_reg)),
        (f"RAPS (lam={lam:g}, k_reg={k_reg}), randomised", dict(score="raps", lam=lam, k_reg=k_reg, randomized=True)),
    )
    rows = []
    for name, kwargs in settings:
        fitted = conformal.calibrate(x[cal], y[cal], alpha, rng=rng, **kwargs)
        sets = fitted.predict_sets(x[ev], rng=rng)
        rows.append(_SetRow(name, conformal.coverage(sets, y[ev]), float(np.mean(conformal.set_sizes(sets)))))
    return _ConformalReport(alpha, seed, len(cal), len(ev), fitted.rank, tuple(rows))


def run(args: argparse.Namespace) -> int:
    from softmaxkit.tools.calibration import fit_temperature, temperature_scaling_diagram

    def work():
        logits, labels = _load(args.file, args.max_bytes)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            fit = fit_temperature(logits, labels, axis=args.axis, n_bins=args.bins)
        sets = None
        if args.conformal is not None:
            sets = _conformal_report(logits, labels, args.axis, args.conformal, args.seed, args.lam, args.k_reg)
        return logits, labels, fit, caught, sets

    result = run_on_file("calibrate", args.file, "fitting", work)
    if result is None:
        return 1
    logits, labels, fit, caught, sets = result
    print(f"{args.file}")
    print(fit)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if sets is not None:
        print()
        print(sets)
    if args.plot:
        # What is printed is flushed first: the plot may fail, or take long.
        sys.stdout.flush()
        try:
            fig = temperature_scaling_diagram(logits, labels, fit.temperature, args.bins, axis=args.axis)
            fig.savefig(args.plot, dpi=120)
        except (ImportError, OSError, ValueError) as exc:
            print(f"softmaxkit calibrate: error: {shown(args.plot)}: {exc}", file=sys.stderr)
            return 1
        print(f"reliability diagram written to {args.plot}")
    return 0
