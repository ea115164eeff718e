"""The one exception hierarchy of qkd-hw.

Everything the project raises on purpose derives from :class:`QkdHwError`.
Errors from pyvisa, pyserial or h5py are wrapped with ``raise ... from`` so
that the original traceback stays attached.
"""

from __future__ import annotations


class QkdHwError(Exception):
    """Base class of every error qkd-hw raises on purpose."""


class ConfigError(QkdHwError):
    """A configuration file or value is invalid (unknown key, wrong type, out of range)."""


class TraceFormatError(QkdHwError):
    """A recorded-trace or raw-key file does not follow the format spec.

    The message names the file, and the dataset or attribute at fault.
    """


class ReceiverLockError(QkdHwError):
    """The DSP receiver could not lock (pilot not found, synchronisation failed).

    ``metrics`` holds the lock metrics (pilot SNR, correlation peak-to-side-lobe ratio, ...).
    """

    def __init__(self, message: str, metrics: dict[str, float] | None = None) -> None:
        super().__init__(message)
        self.metrics = dict(metrics or {})


class InstrumentError(QkdHwError):
    """An instrument misbehaved or refused a command.

    Carries the instrument name, the command sent and the raw reply (bytes or str)
    so the message always says who said what to whom.
    """

    def __init__(
        self,
        message: str,
        *,
        instrument: str | None = None,
        command: str | bytes | None = None,
        reply: str | bytes | None = None,
    ) -> None:
        self.instrument = instrument
        self.command = command
        self.reply = reply
        parts = [message]
        if instrument is not None:
            parts.append(f"instrument={instrument!r}")
        if command is not None:
            parts.append(f"command={command!r}")
        if reply is not None:
            parts.append(f"reply={reply!r}")
        super().__init__("; ".join(parts))


class CommunicationError(InstrumentError):
    """The link to the instrument failed (timeout, disconnect, port not found)."""


class ProtocolError(InstrumentError):
    """The instrument answered something the protocol does not allow (garbled, bad CRC)."""


class LimitError(InstrumentError):
    """A setting violates a limit of the lab config or of the instrument; nothing was sent."""


class InstrumentStateError(InstrumentError):
    """The driver is used in a state that does not allow the call (not open, already open)."""
