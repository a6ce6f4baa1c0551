"""Logits saved in a file, loaded as hostile input, for ``softmaxkit check`` and ``calibrate``.

The loader treats every file as hostile:

- Nothing from the file is ever run: NumPy arrays are parsed here from their
  header (object dtypes, which need unpickling, are refused) and ``.pt``
  files go through ``torch.load(..., weights_only=True)``.
- Only regular files are opened, and without blocking, so a FIFO or a device
  cannot make the command wait forever or read without end.
- What a file may expand to in memory is bounded *before* anything is
  allocated: the size each array declares (``.npy`` header shape times item
  size, a zip member's uncompressed size, a tensor's element count times its
  element size) is checked against a limit, the larger of 64 MiB and 16 times
  the file's size unless ``--max-bytes`` says otherwise.  A 1 KiB ``.pt``
  holding a stride-0 view of a gigabyte, or a 1 MiB ``.npz`` that inflates to
  a gigabyte, is refused without being materialised.
- Every failure is one line: :class:`BadFile` with the reason.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import warnings
import zipfile
from typing import Any, BinaryIO, Callable

import numpy as np

from softmaxkit.tools.files import UnusableFile, open_regular

# What a file may declare without --max-bytes: the larger of these.  An honest
# .npy, .pt or stored .npz declares about its own size; NumPy's compressed
# archives of real logits rarely shrink by more than a few times.
DEFAULT_FLOOR_BYTES = 64 * 2**20
DEFAULT_RATIO = 16

_TARGET_KEYS = ("targets", "labels")
_SUFFIXES = (".npy", ".npz", ".pt")
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
# Zip compression methods NumPy writes: stored and deflated.
_NPZ_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
# Longest piece of text from a file or an exception that goes into a message.
_MAX_SHOWN = 200
_CHUNK = 16 * 2**20


class BadFile(Exception):
    """A file that cannot be read or does not hold what the command expects."""


def add_max_bytes_option(parser: argparse.ArgumentParser) -> None:
    """The ``--max-bytes`` option of every command that reads a data file."""
    parser.add_argument(
        "--max-bytes",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help=(
            "largest total size the arrays in FILE may declare, in bytes or "
            "with a suffix K, M, G or T (powers of 1024), e.g. 4G (default: "
            "the larger of 64M and 16 times the file's size)"
        ),
    )


def parse_size(text: str) -> int:
    """``"4G"`` -> ``4 * 2**30``; argparse type of ``--max-bytes``."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*", text, flags=re.IGNORECASE)
    if m is None or int(m.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"expected a positive size such as 1000000, 512M or 4G; got {text!r}")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def shown(text: str) -> str:
    """``text`` safe for a one-line message: printable, and not too long."""
    out = text if text.isprintable() else repr(text)
    return out if len(out) <= _MAX_SHOWN else out[: _MAX_SHOWN - 3] + "..."


def run_on_file(command: str, path: str, doing: str, work: Callable[[], Any]) -> Any:
    """``work()``, or None after one line on stderr naming ``path`` when the file
    cannot be used: it is unreadable or holds the wrong thing (:class:`BadFile`,
    ``TypeError``, ``ValueError``) or does not fit in memory while ``doing``."""
    try:
        return work()
    except (BadFile, TypeError, ValueError) as exc:
        print(f"softmaxkit {command}: error: {shown(path)}: {exc}", file=sys.stderr)
    except MemoryError:
        print(f"softmaxkit {command}: error: {shown(path)}: out of memory while {doing}", file=sys.stderr)
    return None


def load(path: str, max_bytes: int | None = None) -> tuple[Any, Any]:
    """``(logits, targets or None)`` from a .npy, .npz or .pt file.

    Parameters
    ----------
    path : str
        The file; its suffix says the format.
    max_bytes : int, optional
        Largest total size the arrays read may declare.  Default: the larger
        of ``DEFAULT_FLOOR_BYTES`` (64 MiB) and ``DEFAULT_RATIO`` (16) times
        the file's size.

    Raises
    ------
    BadFile
        With a one-line reason when the file is missing, not a regular file,
        unreadable, corrupt, declares more than the limit, holds pickled
        objects, or lacks the expected arrays.
    """
    suffix = os.path.splitext(path)[1].lower()
    with _open_regular_file(path) as f:
        if suffix not in _SUFFIXES:
            raise BadFile(f"unsupported file type {shown(suffix or '(no suffix)')!r}; expected .npy, .npz or .pt")
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise BadFile(f"is empty; expected a {suffix} file")
        limit = _Limit(size, max_bytes)
        try:
            if suffix == ".npy":
                return _read_npy(f, "the array", size, limit), None
            if suffix == ".npz":
                return _load_npz(f, limit)
            return _load_pt(f, limit)
        except BadFile:
            raise
        except MemoryError:
            raise BadFile(f"cannot read as {suffix}: out of memory") from None
        # The readers turn every expected failure into BadFile; this catches
        # what a corrupt file makes the libraries raise besides (zlib.error,
        # NotImplementedError, RecursionError from a deeply nested header...).
        except Exception as exc:
            raise BadFile(f"cannot read as {suffix}: {_first_line(exc)}") from None


def _open_regular_file(path: str) -> BinaryIO:
    try:
        return open_regular(path)
    except UnusableFile as exc:
        raise BadFile(exc.reason) from None


class _Limit:
    """The most bytes the arrays of one file may declare, and their running total."""

    def __init__(self, file_size: int, max_bytes: int | None) -> None:
        if max_bytes is None:
            self.bytes = max(DEFAULT_FLOOR_BYTES, DEFAULT_RATIO * file_size)
            self.rule = f"the larger of 64 MiB and {DEFAULT_RATIO} times the file's {file_size} bytes"
        else:
            self.bytes = max_bytes
            self.rule = "set by --max-bytes"
        self.used = 0

    def check(self, what: str, nbytes: int) -> None:
        """BadFile if ``nbytes`` alone exceed the limit."""
        if nbytes > self.bytes:
            raise BadFile(
                f"{what} declares {nbytes} bytes ({_human(nbytes)}), over the limit of {self.bytes} bytes "
                f"({_human(self.bytes)}, {self.rule}); refused unread (--max-bytes raises the limit)"
            )

    def take(self, what: str, nbytes: int) -> None:
        """Count ``nbytes`` more; BadFile if the total exceeds the limit."""
        self.check(what if not self.used else f"{what} (with the arrays before it)", self.used + nbytes)
        self.used += nbytes


def _human(n: int) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return shown(text.splitlines()[0] if text else type(exc).__name__)


# -- NumPy ---------------------------------------------------------------------


def _read_npy(f: BinaryIO, what: str, available: int, limit: _Limit) -> np.ndarray:
    """The array of the .npy stream ``f``, which holds ``available`` bytes.

    The header is parsed first; the data is read only once its declared size
    is known to fit in the stream and under the limit.
    """
    try:
        version = np.lib.format.read_magic(f)
    except ValueError:
        raise BadFile(f"{what} is not a NumPy .npy array (no .npy signature)") from None
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        # Version 3.0 exists only for structured dtypes with non-Latin-1 field
        # names, which are not logits.
        raise BadFile(f"{what} is a .npy file of format version {version[0]}.{version[1]}; expected 1.0 or 2.0")
    try:
        # NumPy parses the header as a Python literal (never evaluates it) and
        # refuses headers over 10,000 characters.
        shape, fortran_order, dtype = readers[version](f)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError, EOFError) as exc:
        raise BadFile(f"{what} has an invalid .npy header: {_first_line(exc)}") from None
    if dtype.hasobject:
        raise BadFile(f"{what} holds Python objects (dtype {dtype}), which would need unpickling; refused")
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    present = available - f.tell()
    if nbytes > present:
        raise BadFile(
            f"{what} is truncated: its header declares shape {shape} of {dtype} ({nbytes} bytes) "
            f"but {max(present, 0)} bytes follow"
        )
    limit.take(what, _declared_bytes(shape, dtype.itemsize))
    array = np.empty(count, dtype=dtype)
    view = memoryview(array.view(np.uint8)) if nbytes else memoryview(b"")
    done = 0
    while done < nbytes:
        got = f.readinto(view[done : done + _CHUNK])
        if not got:
            raise BadFile(f"{what} is truncated: {done} of its {nbytes} bytes of data are present")
        done += got
    return array.reshape(shape[::-1]).transpose() if fortran_order else array.reshape(shape)


def _load_npz(f: BinaryIO, limit: _Limit) -> tuple[np.ndarray, np.ndarray | None]:
    what_it_is = "not a NumPy .npz archive (a zip of .npy files, as numpy.savez writes)"
    head = f.read(6)
    f.seek(0)
    if head == b"\x93NUMPY":
        raise BadFile(f"{what_it_is}: it holds a single .npy array")
    if not head.startswith(b"PK"):
        raise BadFile(what_it_is)
    try:
        archive = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise BadFile(f"{what_it_is}: {_first_line(exc)}") from None
    with archive:
        # numpy.load names each member by its file name without ".npy".
        members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
        names = list(members)
        if "logits" not in members:
            raise BadFile(f"no array named 'logits' (found: {_names(names)})")
        key = _target_key(names)
        logits = _read_member(archive, members["logits"], "'logits'", limit)
        targets = None if key is None else _read_member(archive, members[key], repr(key), limit)
    return logits, targets


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, what: str, limit: _Limit) -> np.ndarray:
    if info.flag_bits & 0x1:
        raise BadFile(f"{what} is an encrypted zip member; NumPy archives are never encrypted")
    if info.compress_type not in _NPZ_METHODS:
        raise BadFile(
            f"{what} uses zip compression method {info.compress_type}; NumPy archives use "
            f"{' or '.join(f'{name} ({n})' for n, name in _NPZ_METHODS.items())}"
        )
    # The member's declared size bounds what reading it can produce: zipfile
    # stops inflating there, so data that inflates further fails its checksum.
    limit.check(f"the zip member of {what}", info.file_size)
    try:
        with archive.open(info) as member:
            array = _read_npy(member, what, info.file_size, limit)
            # Reading to the end makes zipfile verify the member's CRC-32.
            while member.read(_CHUNK):
                pass
            return array
    except BadFile:
        raise
    except Exception as exc:
        raise BadFile(f"{what} cannot be read from the archive: {_first_line(exc)}") from None


def _names(names: list[str]) -> str:
    if not names:
        return "none"
    listed = ", ".join(shown(n) for n in names[:10])
    return listed if len(names) <= 10 else f"{listed} and {len(names) - 10} more"


def _target_key(names: list[str]) -> str | None:
    present = [k for k in _TARGET_KEYS if k in names]
    if len(present) > 1:
        raise BadFile("holds both 'targets' and 'labels'; keep one")
    return present[0] if present else None


# -- PyTorch -------------------------------------------------------------------


def _load_pt(f: BinaryIO, limit: _Limit) -> tuple[Any, Any]:
    try:
        import torch
    except ImportError:
        raise BadFile("reading .pt files needs PyTorch: pip install 'softmaxkit[torch]'") from None
    if f.read(2) == b"PK":
        # torch's zip format: the records inflate to their declared sizes,
        # which are checked before torch reads any of them.
        f.seek(0)
        try:
            with zipfile.ZipFile(f) as archive:
                declared = sum(info.file_size for info in archive.infolist())
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise BadFile(f"cannot read as .pt: not a valid zip archive ({_first_line(exc)})") from None
        limit.check("the archive's records", declared)
    f.seek(0)
    try:
        # torch warns about deprecated storage classes and prototype layouts
        # while loading; the file's fate is decided below, in one line.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BadFile(f"cannot read as .pt: {_torch_refusal(exc)}") from None
    if isinstance(obj, torch.Tensor):
        return _checked_tensor(torch, obj, "the tensor", limit), None
    if isinstance(obj, dict):
        names = [str(k) for k in obj]
        if "logits" not in obj:
            raise BadFile(f"the dict has no key 'logits' (found: {_names(names)})")
        key = _target_key(names)
        logits = _checked_tensor(torch, obj["logits"], "'logits'", limit)
        targets = None if key is None else _checked_tensor(torch, obj[key], repr(key), limit)
        return logits, targets
    raise BadFile(f"holds a {type(obj).__name__}; expected a tensor or a dict with key 'logits'")


def _torch_refusal(exc: BaseException) -> str:
    """Why torch.load refused, in one line that never advises ``weights_only=False``."""
    text = str(exc)
    m = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if m:
        return (
            f"its pickle asks for the Python global {shown(m.group(1))}, which is not allowed in a "
            f"weights-only load (torch.load with weights_only=True); nothing from the file was run"
        )
    if "TorchScript" in text:
        return "it is a TorchScript archive (a saved program), not saved tensors"
    m = re.search(r"WeightsUnpickler error: ([^\n]*)", text)
    if m:
        reason = m.group(1).split(". Please", 1)[0].split(" Please", 1)[0]
        return f"torch.load with weights_only=True refused it: {shown(reason)}"
    line = _first_line(exc)
    if "weights_only" in line:
        return "torch.load with weights_only=True refused it"
    return line


def _checked_tensor(torch: Any, value: Any, what: str, limit: _Limit) -> Any:
    if not isinstance(value, torch.Tensor):
        raise BadFile(f"{what} is a {type(value).__name__}, not a tensor")
    if value.is_nested:
        raise BadFile(f"{what} is a nested tensor; expected a dense (strided) tensor")
    if value.layout != torch.strided:
        raise BadFile(f"{what} is a sparse tensor (layout {value.layout}); expected a dense (strided) tensor")
    if value.is_quantized:
        raise BadFile(f"{what} is a quantized tensor; expected real floating or integer values")
    if value.device.type == "meta":
        raise BadFile(f"{what} is a meta tensor, which holds no data")
    # A view declares its full extent even when its storage is tiny (a
    # stride-0 tensor): the report would materialise all of it.
    limit.take(what, _declared_bytes(tuple(value.shape), value.element_size()))
    return value


def _declared_bytes(shape: tuple[int, ...], itemsize: int) -> int:
    """What an array of ``shape`` may cost to analyse: its size, with each
    zero-length axis counted as length 1, since a (2**31, 0) array holds no
    data but its rows still get per-row figures."""
    return math.prod(max(int(n), 1) for n in shape) * itemsize
