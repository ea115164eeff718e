"""Helpers for the serial-driver tests: emulator + driver pairs and timing bounds."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from drivers.emulators.serial_transport import PtyEmulator
from drivers.serial_transport import POLL_S
from qkd_hw.labconfig import Limits

E = TypeVar("E", bound=PtyEmulator)

#: per-read timeout used in the tests (short, so that fault tests stay fast)
TIMEOUT_S = 0.3
RETRIES = 2


@contextlib.contextmanager
def connected(driver_cls: type, emulator: E, *, limits: Limits | None = None,
              timeout_s: float = TIMEOUT_S, retries: int = RETRIES,
              options: dict[str, Any] | None = None) -> Iterator[Any]:
    """The emulator running and a driver open on its port; both closed afterwards."""
    with emulator:
        inst = driver_cls.from_resource(emulator.port, name="dut", timeout_s=timeout_s,
                                        retries=retries, limits=limits, options=options)
        with inst:
            yield inst


def worst_case_s(attempts: int, timeout_s: float, quiet_s: float, extra: float = 0.0) -> float:
    """Upper bound of a transaction that times out on every attempt: per attempt the read
    timeout plus the drain of the resync (quiet period, at most 4 quiet + 0.1 s when bytes keep
    coming), plus pyserial's poll slice, plus scheduling slack."""
    per_attempt = timeout_s + (4 * quiet_s + 0.1) + 3 * POLL_S
    return attempts * per_attempt + extra + 0.5


class Timer:
    def __enter__(self) -> Timer:
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.monotonic() - self.t0


def run_threads(fn: Callable[[int], None], n: int) -> list[BaseException]:
    """Run ``fn(i)`` in ``n`` threads; return the exceptions they raised."""
    errors: list[BaseException] = []
    lock = threading.Lock()

    def target(i: int) -> None:
        try:
            fn(i)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return errors
