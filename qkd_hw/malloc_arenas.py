"""One glibc malloc arena for the multi-threaded receiver, unless the program keeps its own.

glibc gives each thread that allocates an arena of its own (64 MB reserved, tens of MB
touched): the two-thread receiver's reader and helper threads raised the peak RSS by 10-12 MB
on a 1e8-sample recording. Their allocations are a few per chunk, so one shared arena costs
no time. The setting (``mallopt(M_ARENA_MAX, 1)``) is process-wide and cannot be undone for
arenas already made: a program that embeds the receiver and wants its threads' arenas (many
allocating threads of its own) sets :data:`KEEP_ARENAS_ENV` to ``1``; a ``MALLOC_ARENA_MAX``
in the environment (glibc's own tunable) is left in charge too.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

__all__ = ["KEEP_ARENAS_ENV", "limit_malloc_arenas"]

#: environment variable: ``1`` (or ``true``/``yes``) keeps glibc's arenas as the program set them
KEEP_ARENAS_ENV = "QKD_HW_KEEP_MALLOC_ARENAS"
_M_ARENA_MAX = -8   # glibc malloc.h


def limit_malloc_arenas() -> bool:
    """Set glibc's arena count to one, before the receiver's threads allocate.

    Returns
    -------
    bool
        Whether the limit was set: False if :data:`KEEP_ARENAS_ENV` asks to keep the arenas,
        ``MALLOC_ARENA_MAX`` is set, or there is no glibc.
    """
    if os.environ.get(KEEP_ARENAS_ENV, "").strip().lower() in ("1", "true", "yes"):
        return False
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    with contextlib.suppress(OSError, AttributeError):
        return bool(ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 1))
    return False
