"""Common base of the drivers of serial instruments (a :class:`SerialTransport` per driver).

A serial driver declares its line settings as class attributes and does every exchange through
:meth:`SerialInstrument.serial_exchange`, which is the sequence all of them share: drop stale
input, log and write the request, then read the reply against a deadline of one timeout from
the write. The protocol-specific part (framing, tags, checksums) is the ``read`` callback.
``__init__`` builds the transport but never touches the port; :meth:`Instrument.open` does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from drivers.base import Instrument
from drivers.serial_transport import SerialTransport
from drivers.transport import Transport
from qkd_hw.errors import InstrumentStateError

__all__ = ["SerialInstrument", "remaining_s"]

R = TypeVar("R")


def remaining_s(deadline: float) -> float:
    """Seconds left until ``deadline`` (``time.monotonic`` clock), never negative."""
    return max(0.0, deadline - time.monotonic())


class SerialInstrument(Instrument):
    """Base of a driver on a serial port.

    Config: ``resource`` = serial port; option ``baudrate`` (default :attr:`BAUDRATE`).
    Subclasses set the line settings below and extend ``OPTIONS`` with
    ``{**SerialInstrument.OPTIONS, ...}``.
    """

    OPTIONS: ClassVar[Mapping[str, type | tuple[type, ...]]] = {"baudrate": int}
    #: default bit rate (option ``baudrate`` overrides it)
    BAUDRATE: ClassVar[int] = 115200
    #: appended to every request by the transport (``b""`` for binary frames)
    WRITE_TERMINATION: ClassVar[bytes] = b""
    #: any of these ends a line in ``read_line``
    READ_TERMINATIONS: ClassVar[bytes | tuple[bytes, ...]] = b"\n"
    #: silence that ends the drain of a resync, capped at the timeout; None: a full timeout
    #: (protocols whose replies carry no tag need the longer drain)
    QUIET_S: ClassVar[float | None] = None
    #: transport class (a subclass may resync differently)
    TRANSPORT: ClassVar[type[SerialTransport]] = SerialTransport

    def _make_transport(self) -> Transport:
        timeout = self.config.timeout_s
        return self.TRANSPORT(
            self.config.resource, timeout_s=timeout,
            baudrate=int(self.option("baudrate", self.BAUDRATE)),
            write_termination=self.WRITE_TERMINATION,
            read_terminations=self.READ_TERMINATIONS,
            quiet_s=None if self.QUIET_S is None else min(self.QUIET_S, timeout))

    def serial_exchange(self, command: str, request: bytes | Callable[[], bytes],
                        read: Callable[[SerialTransport, float], R], *, idempotent: bool,
                        retries: int | None = None) -> R:
        """One request and its reply as an :meth:`Instrument.exchange` (lock, Ctrl-C
        deferral, resync, retries, errors naming instrument and ``command``).

        Parameters
        ----------
        command : str
            Name of the exchange in logs and errors.
        request : bytes or callable
            Bytes written (the transport appends :attr:`WRITE_TERMINATION`), or a function
            called once per attempt that returns them (a request that differs per attempt).
        read : callable
            ``read(transport, deadline)`` reads and checks the reply; ``deadline`` is one
            timeout after the write (``time.monotonic`` clock, see :func:`remaining_s`).
        idempotent : bool
            Whether the request may be resent after a failure.
        retries : int, optional
            Overrides the lab-config retry count.

        Returns
        -------
        Whatever ``read`` returns for the attempt that succeeded.
        """
        def op(t: Transport) -> R:
            port = self._serial_transport(t)
            # stale bytes (a reply to an abandoned request) must not be read as this reply
            port.flush_input()
            wire = request() if callable(request) else request
            self._log_tx(wire)
            port.write(wire)
            return read(port, time.monotonic() + port.timeout_s)

        return self.exchange(command, op, idempotent=idempotent, retries=retries)

    def read_line_logged(self, t: SerialTransport) -> bytes:
        """One reply line (termination stripped), logged."""
        line = t.read_line()
        self._log_rx(line)
        return line

    def _serial_transport(self, t: Any) -> SerialTransport:
        if not isinstance(t, SerialTransport):
            raise InstrumentStateError(f"{type(self).__name__} needs a SerialTransport, got "
                                       f"{type(t).__name__}", instrument=self.name)
        return t
