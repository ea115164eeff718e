"""Shared helpers of the SCPI driver tests: emulator + driver pairs over real pyvisa-py."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from qkd_hw.labconfig import InstrumentConfig, Limits


def config(name: str, driver: str, resource: str, *, timeout_s: float = 0.5, retries: int = 2,
           limits: Limits | None = None) -> InstrumentConfig:
    return InstrumentConfig(name=name, driver=driver, resource=resource, timeout_s=timeout_s,
                            retries=retries, limits=limits or Limits(), source="test-lab.toml")


@contextlib.contextmanager
def running(emulator: Any) -> Iterator[Any]:
    """Start an emulator; on exit stop it and check that no thread of it survived."""
    before = {t.ident for t in threading.enumerate()}
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            leaked = [t.name for t in threading.enumerate()
                      if t.ident not in before and type(emulator).__name__ in t.name]
            if not leaked:
                break
            time.sleep(0.01)
        assert not leaked, f"emulator threads leaked: {leaked}"


def sent(emu: Any, *, skip_error_queries: bool = False) -> list[bytes]:
    """Messages the emulator received (optionally without the SYST:ERR? checks)."""
    msgs = list(emu.received)
    if skip_error_queries:
        msgs = [m for m in msgs if m != b"SYST:ERR?"]
    return msgs
