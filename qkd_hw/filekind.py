"""What a path is when it is not a regular file, asked before the file is opened: opening a
FIFO blocks until a writer appears, and a device reads forever."""

from __future__ import annotations

import os
import stat

__all__ = ["non_regular_kind"]

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


def non_regular_kind(path: str | os.PathLike[str]) -> str | None:
    """None for a regular file (symbolic links followed), else what it is ("a FIFO (named
    pipe)", "a directory", ...). ``OSError`` of ``os.stat`` (e.g. FileNotFoundError) passes."""
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")
