"""``softmaxkit check FILE``: the report of :func:`softmaxkit.diagnose` on saved logits."""

from __future__ import annotations

import argparse
import json
from typing import Any

from softmaxkit.tools.logits_file import add_max_bytes_option, load, run_on_file
from softmaxkit.tools.report import diagnose

_DESCRIPTION = """\
Print what the logits saved in FILE would do to a naive softmax: their range,
NaN and inf counts, fully masked rows, whether exp() overflows or underflows
in their dtype, the fraction of rows whose float32 softmax collapses to
one-hot, the largest top-1 minus top-2 margin and, when the file holds
targets, the fraction of rows whose naive float32 gradient p_t - 1 is 0.

FILE is a regular file, one of:
  .npy  an array of logits
  .npz  arrays named 'logits' and, optionally, 'targets' or 'labels'
  .pt   a tensor of logits, or a dict with the same keys (needs PyTorch)

No code from FILE is ever run: pickled objects are refused.  Arrays may
declare at most the larger of 64 MiB and 16 times the file's size in all
(--max-bytes sets another limit); larger files are refused unread.
Exit status: 0 report printed, 1 the file could not be used, 2 usage error.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check",
        help="report on logits saved in a .npy, .npz or .pt file",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", metavar="FILE", help="a .npy, .npz or .pt file holding logits")
    parser.add_argument("--axis", type=int, default=-1, help="the class axis of the logits (default: -1)")
    parser.add_argument(
        "--ignore-index",
        type=int,
        default=-100,
        metavar="N",
        help="targets equal to N are left out of the target figures (default: -100)",
    )
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="text block or JSON object (default: text)"
    )
    add_max_bytes_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    def work():
        logits, targets = load(args.file, args.max_bytes)
        return diagnose(logits, targets, axis=args.axis, ignore_index=args.ignore_index)

    report = run_on_file("check", args.file, "analysing the logits", work)
    if report is None:
        return 1
    print(json.dumps(report.to_dict(), indent=2) if args.format == "json" else report)
    return 0
