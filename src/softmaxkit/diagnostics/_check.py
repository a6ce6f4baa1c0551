"""``softmaxkit check FILE``: the diagnose report for logits saved in a file.

Loading never runs code from the file: NumPy files are read with
``allow_pickle=False`` and ``.pt`` files with ``torch.load(...,
weights_only=True)``, so a pickle that would call a function is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import numpy as np

from softmaxkit.diagnostics._report import diagnose

_DESCRIPTION = """\
Print what the logits saved in FILE would do to a naive softmax: their range,
NaN and inf counts, fully masked rows, whether exp() overflows or underflows
in their dtype, the fraction of rows whose float32 softmax collapses to
one-hot, the largest top-1 minus top-2 margin and, when the file holds
targets, the fraction of rows whose naive float32 gradient p_t - 1 is 0.

FILE is one of:
  .npy  an array of logits
  .npz  arrays named 'logits' and, optionally, 'targets' or 'labels'
  .pt   a tensor of logits, or a dict with the same keys (needs PyTorch)

No code from FILE is ever run: pickled objects are refused.
Exit status: 0 report printed, 1 the file could not be used, 2 usage error.
"""

_TARGET_KEYS = ("targets", "labels")


class _BadFile(Exception):
    """A file that cannot be read or does not hold what ``check`` expects."""


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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        logits, targets = load(args.file)
        report = diagnose(logits, targets, axis=args.axis, ignore_index=args.ignore_index)
    except (_BadFile, TypeError, ValueError) as exc:
        print(f"softmaxkit check: error: {args.file}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.to_dict(), indent=2) if args.format == "json" else report)
    return 0


def load(path: str) -> tuple[Any, Any]:
    """``(logits, targets or None)`` from a .npy, .npz or .pt file.

    Raises
    ------
    _BadFile
        With a one-line reason when the file is missing, unreadable, holds
        pickled objects, or lacks the expected arrays.
    """
    if not os.path.exists(path):
        raise _BadFile("no such file")
    if os.path.isdir(path):
        raise _BadFile("is a directory, not a file")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".npy":
        return _load_npy(path), None
    if suffix == ".npz":
        return _load_npz(path)
    if suffix == ".pt":
        return _load_pt(path)
    raise _BadFile(f"unsupported file type {suffix or '(no suffix)'!r}; expected .npy, .npz or .pt")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _load_npy(path: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    # np.load raises OSError, ValueError (pickled objects, bad header) or
    # EOFError; every one of them means "not a usable .npy file".
    except Exception as exc:
        raise _BadFile(f"cannot read as .npy: {_first_line(exc)}") from None


def _load_npz(path: str) -> tuple[Any, Any]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if "logits" not in names:
                raise _BadFile(f"no array named 'logits' (found: {', '.join(names) or 'none'})")
            key = _target_key(names)
            return archive["logits"], None if key is None else archive[key]
    except _BadFile:
        raise
    # A corrupt archive, a member that is not a .npy, or an object array.
    except Exception as exc:
        raise _BadFile(f"cannot read as .npz: {_first_line(exc)}") from None


def _target_key(names: list[str]) -> str | None:
    present = [k for k in _TARGET_KEYS if k in names]
    if len(present) > 1:
        raise _BadFile("holds both 'targets' and 'labels'; keep one")
    return present[0] if present else None


def _load_pt(path: str) -> tuple[Any, Any]:
    try:
        import torch
    except ImportError:
        raise _BadFile("reading .pt files needs PyTorch: pip install 'softmaxkit[torch]'") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    # weights_only=True refuses any pickle that would build arbitrary objects
    # (pickle.UnpicklingError); corrupt files raise RuntimeError or EOFError.
    except Exception as exc:
        raise _BadFile(f"cannot read as .pt with weights_only=True: {_first_line(exc)}") from None
    if isinstance(obj, torch.Tensor):
        return obj, None
    if isinstance(obj, dict):
        names = [str(k) for k in obj]
        if "logits" not in obj:
            raise _BadFile(f"the dict has no key 'logits' (found: {', '.join(names) or 'none'})")
        key = _target_key(names)
        logits = obj["logits"]
        targets = None if key is None else obj[key]
        for name, value in (("logits", logits), (key, targets)):
            if value is not None and not isinstance(value, torch.Tensor):
                raise _BadFile(f"{name!r} is a {type(value).__name__}, not a tensor")
        return logits, targets
    raise _BadFile(f"holds a {type(obj).__name__}; expected a tensor or a dict with key 'logits'")
