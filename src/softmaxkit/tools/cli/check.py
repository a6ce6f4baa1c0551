"""``softmaxkit check FILE``: the report of :func:`softmaxkit.diagnose` on saved logits.

After the report, each hazard found is one line, followed by one line of
what to do about it; ``--fail-on`` turns chosen hazards into exit status 1,
for CI.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from softmaxkit.tools.logits_file import BadFile, add_max_bytes_option, load, run_on_file
from softmaxkit.tools.report import LogitReport, diagnose

# The conditions --fail-on accepts, in the order findings are printed.
CONDITIONS = ("nan", "overflow", "collapse", "zero-grad")

_DESCRIPTION = """\
Print what the logits saved in FILE would do to a naive softmax: their range,
NaN and inf counts, fully masked rows, whether exp() overflows or underflows
in their dtype, the fraction of rows whose float32 softmax collapses to
one-hot, the largest top-1 minus top-2 margin and, when the file holds
targets, the fraction of rows whose naive float32 gradient p_t - 1 is 0.
Each hazard found is then listed with what to do about it.

FILE is a regular file, one of:
  .npy  an array of logits
  .npz  arrays named 'logits' and, optionally, 'targets' or 'labels'
  .pt   a tensor of logits, or a dict with the same keys (needs PyTorch)

--fail-on names the hazards that fail the check (exit status 1):
  nan        some logit is NaN
  overflow   some logit is +inf, or exp() of it overflows the dtype
  collapse   some row's float32 softmax is exactly one-hot
  zero-grad  some row's naive float32 gradient p_t - 1 is 0 (needs targets)

No code from FILE is ever run: pickled objects are refused.  Arrays may
declare at most the larger of 64 MiB and 16 times the file's size in all
(--max-bytes sets another limit); larger files are refused unread.
Exit status: 0 report printed (and no --fail-on hazard found), 1 a --fail-on
hazard was found or the file could not be used, 2 usage error.
"""


@dataclass(frozen=True)
class Finding:
    """One hazard in a report: its ``--fail-on`` name (None if it has none), what was found, what to do."""

    condition: str | None
    what: str
    advice: str

    def to_dict(self, fail_on: tuple[str, ...]) -> dict[str, Any]:
        return {"condition": self.condition, "what": self.what, "advice": self.advice, "fails": self.condition in fail_on}


def findings(report: LogitReport) -> list[Finding]:
    """The hazards in ``report``, each with one line of what to do, in softmaxkit's terms."""
    out = []
    if report.nan_count:
        out.append(Finding(
            "nan",
            f"{_count(report.nan_count, 'NaN logit')}",
            "the NaN was made before the softmax: run the model under softmaxkit.torch.watch, which names the "
            "module (and the step) that made it",
        ))
    if report.posinf_count:
        out.append(Finding(
            "overflow",
            f"{_count(report.posinf_count, '+inf logit')}: a naive softmax gives inf / inf = NaN in their rows",
            "use softmaxkit.softmax or softmaxkit.torch.softmax, which share the mass of a row among its +inf "
            "entries; or find what overflowed with softmaxkit.torch.watch",
        ))
    if report.overflow_count:
        out.append(Finding(
            "overflow",
            f"{_count(report.overflow_count, 'logit')} above {report.overflow_threshold:.6g}: exp() overflows in {report.dtype}",
            "use softmaxkit's softmax, log_softmax and cross_entropy (softmaxkit.torch for tensors), which "
            "subtract the row max and never overflow",
        ))
    if report.underflow_rows:
        out.append(Finding(
            None,
            f"{_count(report.underflow_rows, 'row')} whose every exp() rounds to 0 in {report.dtype}: a naive softmax "
            f"gives 0 / 0 = NaN",
            "use softmaxkit's softmax, log_softmax and cross_entropy, which subtract the row max",
        ))
    if report.masked_rows:
        out.append(Finding(
            None,
            f"{_count(report.masked_rows, 'fully masked row')} (every logit -inf): torch and NumPy softmax give NaN there",
            "use softmaxkit.softmax or softmaxkit.torch.softmax: a fully masked row gets 0 (log_softmax -inf) "
            "and a zero gradient",
        ))
    if report.collapsed_rows:
        out.append(Finding(
            "collapse",
            f"softmax collapse in {_share(report.collapsed_rows, report.regular_rows)}: the float32 softmax is "
            f"exactly one-hot",
            "use softmaxkit.torch.cross_entropy, which keeps the gradient of confident rows; and watch the "
            "logits' scale (softmaxkit.torch.monitor tracks the collapse fraction over training)",
        ))
    if report.zero_grad_rows:
        out.append(Finding(
            "zero-grad",
            f"the naive float32 gradient p_t - 1 is exactly 0 in {_share(report.zero_grad_rows, report.target_rows)}: "
            f"they no longer learn",
            "use softmaxkit.torch.cross_entropy, which computes the target gradient from the other classes' "
            "mass and keeps it",
        ))
    return out


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _share(part: int, whole: int | None) -> str:
    return f"{part} of {whole} rows ({100 * part / whole:.3g}%)"


def _fail_on(text: str) -> tuple[str, ...]:
    """argparse type of ``--fail-on``: a comma-separated list of conditions."""
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [n for n in names if n not in CONDITIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(CONDITIONS)}; got {text!r}"
        )
    return names


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
        "--fail-on",
        type=_fail_on,
        default=(),
        metavar="LIST",
        help="exit with status 1 when one of these hazards is found: a comma-separated list of "
        "nan, overflow, collapse, zero-grad (default: none; the exit status is 0)",
    )
    parser.add_argument(
        "--shift",
        action="store_true",
        help="causal language-model labels: compare the logits at position t with the target at t + 1 "
        "(logits[:, :-1] with labels[:, 1:], along the axis before the class axis)",
    )
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="text block or JSON object (default: text)"
    )
    add_max_bytes_option(parser)
    parser.set_defaults(func=run)


def shift_targets(logits: Any, targets: Any, axis: int) -> tuple[Any, Any]:
    """Pair each position's logits with the next position's target, as a causal LM is trained.

    The sequence axis is the one just before the class axis ``axis``: the
    logits lose their last position and the targets their first.
    """
    if targets is None:
        raise BadFile("--shift pairs logits with the next position's targets, and the file holds no targets or labels")
    ndim = len(logits.shape)
    class_axis = axis % ndim if -ndim <= axis < ndim else None
    if class_axis is None or class_axis == 0:
        raise BadFile(
            f"--shift needs a sequence axis before the class axis; the logits have shape {tuple(logits.shape)} "
            f"and --axis is {axis}"
        )
    seq = class_axis - 1
    drop_last = (slice(None),) * seq + (slice(None, -1),)
    drop_first = (slice(None),) * seq + (slice(1, None),)
    return logits[drop_last], targets[drop_first]


def run(args: argparse.Namespace) -> int:
    def work():
        logits, targets = load(args.file, args.max_bytes)
        if args.shift:
            logits, targets = shift_targets(logits, targets, args.axis)
        if "zero-grad" in args.fail_on and targets is None:
            raise BadFile("--fail-on zero-grad needs targets, and the file holds no targets or labels")
        return diagnose(logits, targets, axis=args.axis, ignore_index=args.ignore_index)

    report = run_on_file("check", args.file, "analysing the logits", work)
    if report is None:
        return 1
    found = findings(report)
    failed = [c for c in args.fail_on if any(f.condition == c for f in found)]
    if args.format == "json":
        out = report.to_dict()
        out["findings"] = [f.to_dict(args.fail_on) for f in found]
        out["failed"] = failed
        print(json.dumps(out, indent=2))
    else:
        print(report)
        if found:
            print()
        for f in found:
            tag = f"   [fails: --fail-on {f.condition}]" if f.condition in args.fail_on else ""
            print(f"found  {f.what}{tag}\n  do   {f.advice}")
        if failed:
            print(f"\ncheck failed: {', '.join(failed)} found (--fail-on {','.join(args.fail_on)})")
    return 1 if failed else 0
