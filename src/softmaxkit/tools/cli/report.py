"""``softmaxkit report RUN_DIR``: the summary and the curves of a ``softmaxkit.torch.monitor`` run."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from softmaxkit.tools.curves import RECORDS_FILE, RecordsError, plot, read_records, summarize

PNG_FILE = "softmax-health.png"

_DESCRIPTION = f"""\
Summarise the softmax health recorded by softmaxkit.torch.monitor in RUN_DIR
(its {RECORDS_FILE}): for each figure, its first, last, smallest and
largest value; the first recorded step with a NaN in the logits, a
non-finite gradient at the logits and a non-finite loss; and the first step
whose collapse fraction, and whose zero-gradient fraction, exceeds
--threshold.  Also writes a PNG of the curves (needs matplotlib).

RUN_DIR is the monitor's log_dir, or the .jsonl file itself.
Exit status: 0 summary printed (and PNG written), 1 the records could not be
read or the PNG could not be written, 2 usage error.
"""


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1]; got {text!r}") from None
    if not 0 <= value <= 1 or math.isnan(value):
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1]; got {text!r}")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report",
        help="summarise a softmaxkit.torch.monitor run and plot its curves",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", metavar="RUN_DIR", help=f"the monitor's log_dir (or its {RECORDS_FILE})")
    picture = parser.add_mutually_exclusive_group()
    picture.add_argument("--png", metavar="PATH", help=f"where to write the PNG (default: RUN_DIR/{PNG_FILE})")
    picture.add_argument("--no-png", action="store_true", help="print the summary only")
    parser.add_argument(
        "--threshold",
        type=_threshold,
        default=0.5,
        metavar="F",
        help="the level of the collapse and zero-gradient crossings (default: 0.5)",
    )
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="text table or JSON object (default: text)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        records = read_records(args.run)
    except RecordsError as exc:
        print(f"softmaxkit report: error: {exc}", file=sys.stderr)
        return 1
    summary = summarize(records, args.threshold)
    print(json.dumps(summary.to_dict(), indent=2) if args.format == "json" else summary)
    if args.no_png:
        return 0
    folder = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
    png = Path(args.png) if args.png else folder / PNG_FILE
    try:
        plot(records, png, summary, title=f"softmax health: {folder.name or folder.resolve().name}")
    except ImportError as exc:
        print(f"softmaxkit report: error: {exc} (or --no-png for the summary alone)", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"softmaxkit report: error: cannot write {png}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"\ncurves written to {png}", file=sys.stderr if args.format == "json" else sys.stdout)
    return 0
