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


class ResourceError(QkdHwError):
    """A run would need more memory or disk than there is; refused before it starts.

    The message names the input, the size needed and the size available.
    """


class ReceiverLockError(QkdHwError):
    """The DSP receiver could not lock (pilot not found, synchronisation failed).

    ``metrics`` holds the lock metrics (pilot SNR, correlation peak-to-side-lobe ratio, ...).
    """

    def __init__(self, message: str, metrics: dict[str, float] | None = None) -> None:
        super().__init__(message)
        self.metrics = dict(metrics or {})


class RecordingSanityError(QkdHwError):
    """The receiver locked but the recording cannot be what it claims: a clipped capture, a
    noise capture that is the signal, estimates outside what physics allows. No key rate and
    no raw key come from it.

    ``metrics`` holds the numbers behind the verdict (clipped fractions, the estimate and its
    uncertainty, ...).
    """

    def __init__(self, message: str, metrics: dict[str, float] | None = None) -> None:
        super().__init__(message)
        self.metrics = dict(metrics or {})


class ReconciliationError(QkdHwError):
    """Reconciliation input is unusable (wrong frame length, non-finite values, a public
    message that does not match the code, an SNR outside the codes' range)."""


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
        self.message = message
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

    def with_context(
        self,
        *,
        instrument: str | None = None,
        command: str | bytes | None = None,
        reply: str | bytes | None = None,
    ) -> InstrumentError:
        """A copy of this error (same class) with missing context filled in.

        Transports raise without knowing the command; the driver adds it and re-raises the
        copy ``from`` the original, so the message still names instrument, command and reply.
        """
        new = type(self).__new__(type(self))
        InstrumentError.__init__(
            new,
            self.message,
            instrument=self.instrument if self.instrument is not None else instrument,
            command=self.command if self.command is not None else command,
            reply=self.reply if self.reply is not None else reply,
        )
        for key, value in vars(self).items():
            if key not in vars(new):
                setattr(new, key, value)
        return new


class CommunicationError(InstrumentError):
    """The link to the instrument failed (timeout, disconnect, port not found)."""


class InstrumentTimeoutError(CommunicationError):
    """No (complete) reply within the configured timeout."""


class ProtocolError(InstrumentError):
    """The instrument answered something the protocol does not allow (garbled, bad CRC)."""


class IncompleteReplyError(ProtocolError, InstrumentTimeoutError):
    """A reply stopped before the protocol says it is complete (binary block shorter than its
    header announced, missing terminator). Both a protocol violation and a timeout: caught by
    ``except ProtocolError`` and by ``except CommunicationError``."""


class LimitError(InstrumentError):
    """A setting violates a limit of the lab config or of the instrument; nothing was sent."""


class InstrumentStateError(InstrumentError):
    """The driver is used in a state that does not allow the call (not open, already open)."""


class InstrumentReportedError(InstrumentError):
    """The instrument accepted the bytes but reported an error (e.g. an entry in its SCPI error
    queue read with ``SYST:ERR?``). ``errors`` holds the raw error-queue entries in order."""

    def __init__(self, message: str, *, errors: tuple[str, ...] = (), **context) -> None:
        super().__init__(message, **context)
        self.errors = tuple(errors)


class BenchError(QkdHwError):
    """``qkd-hw bench`` / archive mode: an unusable input path, history file or option."""
