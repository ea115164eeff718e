"""The receiver's one-malloc-arena setting and the ways to keep a program's own arenas.

Observed through glibc itself: ``malloc_info`` lists one ``<heap>`` per arena, and a thread
that allocates gets a new arena unless ``M_ARENA_MAX`` caps them. Fresh interpreters (the
setting is process-wide and cannot be undone).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from qkd_hw.malloc_arenas import KEEP_ARENAS_ENV

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc malloc only")

_CHILD = """
import ctypes, os, sys, tempfile, threading
from qkd_hw.malloc_arenas import limit_malloc_arenas

print(int(limit_malloc_arenas()))
def work():
    for _ in range(100):
        bytearray(1 << 16)
ths = [threading.Thread(target=work) for _ in range(3)]
for t in ths:
    t.start()
for t in ths:
    t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
path = os.path.join(tempfile.mkdtemp(), "info.xml")
f = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, f)
libc.fclose(f)
print(open(path).read().count("<heap nr="))
"""


def _arenas(env: dict[str, str]) -> tuple[bool, int]:
    """(whether the limit was set, arenas after three allocating threads)."""
    base = {k: v for k, v in os.environ.items()
            if k not in (KEEP_ARENAS_ENV, "MALLOC_ARENA_MAX")}
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                         check=True, timeout=60, env={**base, **env}).stdout.split()
    return bool(int(out[0])), int(out[1])


def test_receiver_limits_arenas_to_one_by_default():
    assert _arenas({}) == (True, 1)


@pytest.mark.parametrize("env", [{KEEP_ARENAS_ENV: "1"}, {"MALLOC_ARENA_MAX": "4"}])
def test_program_keeps_its_arenas(env):
    limited, arenas = _arenas(env)
    assert not limited
    assert arenas > 1   # the threads got arenas of their own
