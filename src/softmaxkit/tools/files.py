"""Opening a file from an untrusted place: regular files only, never blocking.

``softmaxkit check``, ``softmaxkit calibrate`` and ``softmaxkit lint`` read
paths they did not create.  A FIFO would block ``open`` until a writer
appears, and a device such as ``/dev/zero`` would be read until memory runs
out, so the path is examined before it is opened, opened with
``O_NONBLOCK`` and examined again on the open descriptor (the entry may have
been replaced in between).
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)


class UnusableFile(Exception):
    """Why a path cannot be read as a regular file.

    ``special`` is True where the entry holds no file content at all (a FIFO,
    a device, a directory, a broken or looping link, a vanished entry), and
    False where a regular file could not be read (permissions, I/O, size).
    """

    def __init__(self, reason: str, special: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.special = special


def open_regular(path: str | os.PathLike, max_size: int | None = None) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file.

    Raises :class:`UnusableFile` otherwise, or where the file is larger than
    ``max_size`` bytes.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise UnusableFile("broken symbolic link (its target does not exist)", True) from None
        raise UnusableFile("no such file", True) from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnusableFile("symbolic link loop", True) from None
        raise UnusableFile(f"cannot be read: {error.strerror or error}", False) from None
    _check(info, max_size)
    try:
        descriptor = os.open(path, _FLAGS)
    except OSError as error:
        raise UnusableFile(f"cannot be read: {error.strerror or error}", False) from None
    try:
        _check(os.fstat(descriptor), max_size)
    except BaseException:
        os.close(descriptor)
        raise
    return os.fdopen(descriptor, "rb")


def _check(info: os.stat_result, max_size: int | None) -> None:
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _KINDS if test(info.st_mode)), "a special file")
        raise UnusableFile(f"not a regular file ({kind})", True)
    if max_size is not None and info.st_size > max_size:
        raise UnusableFile(f"larger than the {max_size // 2**20} MiB limit ({info.st_size} bytes)", False)
