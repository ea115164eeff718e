"""SCPI over VISA: the common part of every SCPI driver.

* :class:`ScpiInstrument` -- identification check on open, ``write`` (+ error-queue check),
  ``query``, IEEE 488.2 definite-length binary blocks in both directions, ``*OPC?``.
* :class:`ScpiProperty` -- declare a setting/reading once::

      power_dbm = ScpiProperty("SOUR:POW", float, unit="dBm", limit="power_dbm",
                               validator=Range(-20, 13), doc="Output power")

  ``inst.power_dbm`` sends ``SOUR:POW?`` and parses the reply; ``inst.power_dbm = 3`` checks
  the validator and the lab-config limit (LimitError, nothing sent), sends ``SOUR:POW 3``
  and reads the error queue (``SYST:ERR?``) in the same transaction.

Retry policy: queries are idempotent and retried (after a reconnect) within
``config.retries``; property *settings* are absolute values ("set X to 3"), so resending one
after a lost connection leaves the instrument in the same state -- they are retried too.
Commands with an effect that accumulates or starts something (``INIT``, ``*TRG``, ``:SINGle``,
``*RST``, segment definitions) are sent with ``idempotent=False`` and never resent. So are
*destructive queries* -- replies that change state when read: ``SYST:ERR?`` removes the entry
it returns, event registers (``:ADER?``) clear on read. A retry after a late reply would read
the state *after* the lost one ("0, No error" for an error that went out with the lost reply);
after a lost ``SYST:ERR?`` reply ``check_errors``/``read_error_queue`` raise "error-queue state
unknown" instead. A setting and its ``SYST:ERR?`` form one retry unit: the resent setting is
executed again and reports its own error again, so an idempotent setting still retries.

Numbers in replies are parsed strictly (:func:`parse_float`): IEEE 488.2 <NR1>/<NR2>/<NR3>,
finite; SCPI special values (9.91E37 NaN, +/-9.9E37 INF) are "no valid value" errors unless a
caller allows them.

IEEE 488.2 block format (§7.7.6 / §8.7.9): ``#<n><len><data>`` with ``n`` in 1..9 the number
of digits of ``len``. The indefinite form ``#0`` is rejected (a truncated transfer could not be
detected).
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from drivers.base import Boolean, Instrument, Property, Range, Validator
from drivers.transport import Transport, VisaTransport, excerpt
from qkd_hw.errors import (
    CommunicationError,
    IncompleteReplyError,
    InstrumentError,
    InstrumentReportedError,
    InstrumentTimeoutError,
    ProtocolError,
)

__all__ = [
    "ScpiChannel",
    "ScpiInstrument",
    "ScpiProperty",
    "ScpiSpecialValueError",
    "format_block",
    "parse_bool",
    "parse_float",
    "parse_int",
    "read_block",
]

MAX_BLOCK_BYTES = 999_999_999  # 9 length digits


# --------------------------------------------------------------------------- reply parsing


#: IEEE 488.2 §8.7.2-8.7.4 numeric response data: <NR1> "12", <NR2> "3.5" / "-.5",
#: <NR3> "+1.55000000E-006". ASCII digits only: no "nan"/"inf", no "1_5", no hex.
_NR_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NR1_RE = re.compile(r"[+-]?[0-9]+")
_WS = " \t\r\n"

#: SCPI-99 vol. 1 §7.2.1.4/7.2.1.5: an instrument answers 9.91E37 for "not a number" and
#: +/-9.9E37 for +/-infinity (PM100D: no valid reading / over range). Other answers of that
#: magnitude are instrument-specific "invalid result" markers (Infiniium measurements:
#: 9.99999E+37). None of them is a measured value.
SCPI_SPECIAL_MAGNITUDE = 9.9e37
_SCPI_SPECIAL = {9.91e37: ("NaN", math.nan), 9.9e37: ("+INF", math.inf),
                 -9.9e37: ("-INF", -math.inf)}


class ScpiSpecialValueError(ValueError):
    """The reply is a SCPI special value (NaN 9.91E37, +/-INF +/-9.9E37, or another
    >= 9.9E37 "invalid" marker) where a number was expected. ``query_value`` turns it into an
    :class:`InstrumentReportedError` (the instrument said "no valid value"; not retried)."""

    def __init__(self, text: str, name: str) -> None:
        super().__init__(f"SCPI special value {name} ({text.strip(_WS)!r}): the instrument has "
                         f"no valid value (over range, no signal or no sensor?)")
        self.text = text
        self.name = name


def parse_float(text: str, *, allow_special: bool = False) -> float:
    """A SCPI <NR1>/<NR2>/<NR3> number; finite. ValueError (with the text) for anything else.

    SCPI special values (9.91E37 = NaN, +/-9.9E37 = +/-INF, other values >= 9.9E37) raise
    :class:`ScpiSpecialValueError` unless ``allow_special``; then they map to nan/+-inf (an
    unnamed marker to nan).
    """
    t = text.strip(_WS)
    if _NR_RE.fullmatch(t) is None:
        raise ValueError(f"not a SCPI number (NR1/NR2/NR3): {text!r}")
    value = float(t)
    if not math.isfinite(value):
        raise ValueError(f"number out of the floating-point range: {text!r}")
    if abs(value) >= SCPI_SPECIAL_MAGNITUDE:
        name, special = _SCPI_SPECIAL.get(value, ("invalid-result marker", math.nan))
        if allow_special:
            return special
        raise ScpiSpecialValueError(text, name)
    return value


def parse_int(text: str) -> int:
    """A SCPI integer: <NR1>, or <NR2>/<NR3> with an integral value ("+1.0E+01", as some
    instruments answer counts). ValueError (with the text) for anything else."""
    t = text.strip(_WS)
    if _NR1_RE.fullmatch(t) is not None:
        return int(t)
    f = parse_float(text)
    if not f.is_integer():
        raise ValueError(f"not an integer: {text!r}")
    return int(f)


def parse_bool(text: str) -> bool:
    t = text.strip().upper()
    if t in ("1", "ON", "+1"):
        return True
    if t in ("0", "OFF", "+0"):
        return False
    raise ValueError(f"not a SCPI boolean: {text!r}")


def format_number(value: float | int) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return format(value, ".12g")


# --------------------------------------------------------------------------- binary blocks


def format_block(data: bytes | bytearray | memoryview) -> bytes:
    """Header of a definite-length block for ``data`` (``#<n><len>``)."""
    n = len(data)
    if n > MAX_BLOCK_BYTES:
        raise ValueError(f"block of {n} bytes exceeds the 9-digit IEEE 488.2 limit")
    digits = str(n)
    return b"#" + str(len(digits)).encode() + digits.encode()


def read_block(t: Transport, *, max_bytes: int = MAX_BLOCK_BYTES,
               expect_terminator: bool = True) -> bytes:
    """Read one definite-length block ``#<n><len><data>`` and its message terminator.

    Raises ProtocolError (raw bytes excerpt in ``reply``) on a bad header, an indefinite
    block, a length above ``max_bytes`` or bytes other than the terminator after the block;
    IncompleteReplyError (a ProtocolError and a timeout) if the block is short or the
    terminator never comes (instrument stopped early, link died or stalled).
    """
    head = t.read_exact(2)
    if head[:1] != b"#" or not head[1:2].isdigit():
        raise ProtocolError("reply is not an IEEE 488.2 binary block (expected '#<digit>')",
                            reply=head)
    ndigits = int(head[1:2])
    if ndigits == 0:
        raise ProtocolError("indefinite-length block (#0) not supported; disable streaming",
                            reply=head)
    length_text = t.read_exact(ndigits)
    if not length_text.isdigit():
        raise ProtocolError("bad length field in binary block header", reply=head + length_text)
    length = int(length_text)
    if length > max_bytes:
        raise ProtocolError(f"binary block of {length} bytes exceeds the expected {max_bytes}",
                            reply=head + length_text)
    try:
        data = t.read_exact(length)
    except InstrumentError as exc:
        raise IncompleteReplyError(
            f"short binary block: expected {length} bytes ({exc.message})",
            instrument=exc.instrument,
            reply=head + length_text + (exc.reply if isinstance(exc.reply, bytes) else b""),
        ) from exc
    if expect_terminator:
        try:
            tail = t.read_exact(1)
            if tail == b"\r":
                tail = t.read_exact(1)
        except InstrumentError as exc:
            raise IncompleteReplyError(
                f"no message terminator after the {length}-byte block ({exc.message})",
                instrument=exc.instrument, reply=excerpt(data[-16:])) from exc
        if tail != b"\n":
            raise ProtocolError(
                f"extra bytes after a {length}-byte binary block (expected the terminator)",
                reply=tail + excerpt(data[-16:]))
    return data


# --------------------------------------------------------------------------- instrument


_ERR_RE = re.compile(r'^\s*([+-]?\d+)\s*(?:,\s*"?(.*?)"?\s*)?$')


def _error_entry(text: str) -> str:
    """An error-queue entry ``<code>[,"<message>"]`` (ValueError otherwise)."""
    if _ERR_RE.match(text) is None:
        raise ValueError("unparsable error-queue entry")
    return text


class ScpiInstrument(Instrument):
    """Base of SCPI instruments reached through VISA.

    Subclasses set ``MODEL``, ``IDN_PATTERN`` (regex matched against ``*IDN?``, case
    insensitive) and may override ``ERROR_QUERY`` (None if the instrument has no error queue)
    and ``_setup()`` (commands sent once after identification, e.g. data formats).
    """

    IDN_PATTERN: ClassVar[str] = r".*"
    ERROR_QUERY: ClassVar[str | None] = "SYST:ERR?"
    MAX_ERROR_READS: ClassVar[int] = 32
    READ_TERMINATION: ClassVar[str] = "\n"
    WRITE_TERMINATION: ClassVar[str] = "\n"

    identity: str | None = None

    def _make_transport(self) -> Transport:
        return VisaTransport(
            self.config.resource,
            timeout_s=self.config.timeout_s,
            visa_library=self.config.visa_library,
            read_termination=self.READ_TERMINATION,
            write_termination=self.WRITE_TERMINATION,
        )

    def _on_open(self) -> None:
        idn = self.query("*IDN?")
        if not re.match(self.IDN_PATTERN, idn, re.IGNORECASE):
            raise ProtocolError(f"not a {self.MODEL}: *IDN? does not match {self.IDN_PATTERN!r}",
                                instrument=self.name, command="*IDN?", reply=idn)
        self.identity = idn
        self.log.info("%s: connected to %s", self.name, idn)
        if self.ERROR_QUERY:
            try:
                stale = self.read_error_queue(after="<open>")
            except (CommunicationError, ProtocolError) as exc:
                # nothing was sent yet whose errors matter: a stale entry lost with the reply
                # only goes unlogged. Read the rest of the queue (the link is resynced).
                self.log.warning("%s: %s; reading the error queue again", self.name,
                                 exc.message)
                stale = self.read_error_queue(after="<open>")
            for err in stale:
                self.log.warning("%s: error left in the queue before open: %s", self.name, err)
        self._setup()

    def _setup(self) -> None:
        """Hook: instrument-wide settings the driver relies on (data format, headers off)."""

    # -- primitive exchanges --------------------------------------------------------------

    def _encode(self, command: str) -> bytes:
        try:
            return command.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError(f"SCPI commands are ASCII, got {command!r}") from None

    def _send(self, t: Transport, data: bytes) -> None:
        self._log_tx(data)
        t.write(data)

    def _recv_line(self, t: Transport) -> bytes:
        line = t.read_line()
        self._log_rx(line)
        return line

    def write(self, command: str, *, idempotent: bool = False, check_errors: bool = True) -> None:
        """Send a command (no reply) and read the error queue (if the instrument has one).

        The command and its first ``SYST:ERR?`` form one retry unit: if the link fails before
        the error-queue answer arrives, an idempotent command is resent together with the
        query (it is unknown whether the first copy arrived), a non-idempotent one is not.
        """
        self._write_raw(command, self._encode(command), idempotent=idempotent,
                        check_errors=check_errors)

    def _write_raw(self, label: str, raw: bytes, *, idempotent: bool,
                   check_errors: bool) -> None:
        if not (check_errors and self.ERROR_QUERY):
            self.exchange(label, lambda t: self._send(t, raw), idempotent=idempotent)
            return
        err_q = self._encode(self.ERROR_QUERY)

        def op(t: Transport) -> str:
            self._send(t, raw)
            self._send(t, err_q)
            line = self._recv_line(t)
            try:
                text = line.decode("ascii")
            except UnicodeDecodeError as exc:
                raise ProtocolError("unparsable error-queue entry", reply=excerpt(line)) from exc
            if _ERR_RE.match(text) is None:  # inside op: a garbled answer is retried
                raise ProtocolError("unparsable error-queue entry", reply=excerpt(line))
            return text

        with self.transaction():
            first = self.exchange(label, op, idempotent=idempotent)
            self._raise_reported(label, first)

    def query(self, command: str, *, idempotent: bool = True,
              timeout_s: float | None = None, retries: int | None = None) -> str:
        """Send a query and return its reply line (ASCII, without the termination)."""
        return self.query_value(command, lambda s: s, idempotent=idempotent,
                                timeout_s=timeout_s, retries=retries)

    def query_value(self, command: str, parse: Callable[[str], Any], *,
                    idempotent: bool = True, timeout_s: float | None = None,
                    retries: int | None = None) -> Any:
        """Query and parse; a reply ``parse`` rejects is a ProtocolError (retried if allowed)
        with the raw reply. A SCPI special value (9.91E37 "not a number" ...) where ``parse``
        wants a number is an InstrumentReportedError: a valid answer meaning "no valid value",
        not retried."""
        raw = self._encode(command)

        def op(t: Transport) -> Any:
            self._send(t, raw)
            line = self._recv_line(t)
            try:
                text = line.decode("ascii")
                return parse(text)
            except ScpiSpecialValueError as exc:
                raise InstrumentReportedError(str(exc), errors=(text.strip(_WS),),
                                              reply=text.strip(_WS)) from exc
            except (UnicodeDecodeError, ValueError) as exc:
                raise ProtocolError(f"unparsable reply ({exc})", reply=excerpt(line)) from exc

        with self._timeout(timeout_s):
            return self.exchange(command, op, idempotent=idempotent, retries=retries)

    def query_block(self, command: str, *, max_bytes: int = MAX_BLOCK_BYTES,
                    idempotent: bool = True) -> bytes:
        """Query returning a definite-length binary block (data only)."""
        raw = self._encode(command)

        def op(t: Transport) -> bytes:
            self._send(t, raw)
            data = read_block(t, max_bytes=max_bytes)
            self._log_rx(data)
            return data

        return self.exchange(command, op, idempotent=idempotent)

    def write_block(self, command_prefix: str, data: bytes | bytearray | memoryview, *,
                    idempotent: bool, check_errors: bool = True) -> None:
        """Send ``<command_prefix><#n len data>`` + termination, then check the error queue.

        ``command_prefix`` ends where the block starts, e.g. ``":TRAC1:DATA 1,0,"``.
        """
        payload = self._encode(command_prefix) + format_block(data) + bytes(data)
        label = f"{command_prefix}<block of {len(data)} bytes>"
        self._write_raw(label, payload, idempotent=idempotent, check_errors=check_errors)

    def opc(self, timeout_s: float | None = None) -> None:
        """Wait for pending operations (``*OPC?`` answers ``1`` when they are done)."""
        reply = self.query("*OPC?", timeout_s=timeout_s)
        if reply.strip() not in ("1", "+1"):
            raise ProtocolError("*OPC? did not answer 1", instrument=self.name,
                                command="*OPC?", reply=reply)

    @contextlib.contextmanager
    def _timeout(self, timeout_s: float | None) -> Iterator[None]:
        """Temporarily use another ``timeout_s`` (the deadline of each read; long operations
        such as ``*OPC?``), under the lock."""
        if timeout_s is None:
            yield
            return
        with self._lock:
            old = self.transport.timeout_s
            self.transport.timeout_s = timeout_s
            try:
                yield
            finally:
                self.transport.timeout_s = old

    # -- error queue ---------------------------------------------------------------------

    def _parse_error(self, reply: str) -> int:
        m = _ERR_RE.match(reply)
        if m is None:
            self._dirty = True
            raise ProtocolError("unparsable error-queue entry", instrument=self.name,
                                command=self.ERROR_QUERY, reply=reply)
        return int(m.group(1))

    def _next_error(self, after: str, read: list[str]) -> str:
        """One error-queue read. ``SYST:ERR?`` is destructive (it removes the entry it
        returns), so it is sent once and never resent: after a lost, late or garbled reply an
        entry may have left the queue unseen, and "no error" could not be told from "error
        lost". That is raised as the error-queue state being unknown (same class as the
        underlying link/protocol error, so ``except CommunicationError`` still catches it),
        naming the command checked and the entries ``read`` before."""
        assert self.ERROR_QUERY
        try:
            return self.query_value(self.ERROR_QUERY, _error_entry, idempotent=False)
        except (CommunicationError, ProtocolError) as exc:
            before = f"; entries read before: {'; '.join(read)}" if read else ""
            err = type(exc)(
                f"error-queue state unknown{' after ' + repr(after) if after else ''}: the "
                f"reply to {self.ERROR_QUERY} was lost or garbled ({exc.message}); an entry may "
                f"have been removed from the queue unseen, so 'no error' cannot be "
                f"concluded{before}",
                instrument=self.name, command=self.ERROR_QUERY, reply=exc.reply)
            err.entries_read = tuple(read)  # type: ignore[attr-defined]
            raise err from exc

    def read_error_queue(self, *, after: str = "") -> list[str]:
        """Read ``SYST:ERR?`` until it reports 0 (no error); return the entries read.

        A lost/garbled reply raises (error-queue state unknown, see ``_next_error``) instead
        of being retried: the retry could answer "0" for an entry the lost reply carried.
        """
        if not self.ERROR_QUERY:
            return []
        errors: list[str] = []
        with self.transaction():
            for _ in range(self.MAX_ERROR_READS):
                reply = self._next_error(after, errors)
                if self._parse_error(reply) == 0:
                    return errors
                errors.append(reply.strip())
        raise ProtocolError(f"error queue not empty after {self.MAX_ERROR_READS} reads",
                            instrument=self.name, command=self.ERROR_QUERY,
                            reply="; ".join(errors[-3:]))

    def _raise_reported(self, after: str, first: str) -> None:
        if self._parse_error(first) == 0:
            return
        errors = [first.strip()]
        unknown: InstrumentError | None = None
        try:
            errors += self.read_error_queue(after=after)
        except (CommunicationError, ProtocolError) as exc:
            # the instrument did report an error: report it, and that more may be lost
            errors += getattr(exc, "entries_read", ())
            unknown = exc
        more = f"; further entries unknown ({unknown.message})" if unknown else ""
        raise InstrumentReportedError(
            f"instrument reported {len(errors)} error(s): {'; '.join(errors)}{more}",
            errors=tuple(errors), instrument=self.name, command=after) from unknown

    def check_errors(self, after: str | None = None) -> None:
        """Raise InstrumentReportedError if the error queue holds entries. If the reply to
        ``SYST:ERR?`` is lost or garbled, raise (error-queue state unknown), never pass."""
        if not self.ERROR_QUERY:
            return
        with self.transaction():
            self._raise_reported(after or "", self._next_error(after or "", []))

    def wait_for(self, command: str, predicate: Callable[[str], bool], *, timeout_s: float,
                 poll_s: float = 0.01) -> str:
        """Poll ``command`` until ``predicate(reply)``; InstrumentTimeoutError after
        ``timeout_s``. The lock is released between polls so other threads get a turn."""
        deadline = time.monotonic() + timeout_s
        while True:
            reply = self.query(command)
            if predicate(reply):
                return reply
            if time.monotonic() >= deadline:
                raise InstrumentTimeoutError(
                    f"condition not reached within {timeout_s:g} s", instrument=self.name,
                    command=command, reply=reply)
            time.sleep(poll_s)


# --------------------------------------------------------------------------- property


_PARSERS: dict[type, Callable[[str], Any]] = {float: parse_float, int: parse_int,
                                              bool: parse_bool, str: lambda s: s.strip()}


class _KindCheck(Validator):
    """Type check of a property declared without a validator (describes nothing). Ints are
    bounded to 64 bits: no instrument takes more, and a huge int cannot even be formatted."""

    def __init__(self, kind: type) -> None:
        if kind is bool:
            self.check: Validator = Boolean()
        elif kind is int:
            self.check = Range(-(2**63), 2**63 - 1, integer=True)
        else:
            self.check = Range()

    def __call__(self, value: Any, *, what: str, instrument: str, inst: Any = None) -> Any:
        return self.check(value, what=what, instrument=instrument, inst=inst)


class ScpiProperty(Property[Any]):
    """A SCPI setting/reading declared once (see the module docstring).

    ``command`` is the header; the query is ``command + "?"`` (or ``query``), the setting is
    ``f"{command} {value}"`` (or ``set_format.format(value)``). ``kind`` is float, int, bool,
    str, or a dict mapping Python values to SCPI mnemonics (the reply is mapped back,
    abbreviations accepted). ``parse``/``formatter`` override the conversion (e.g. a reply in
    metres for a property in nm).
    """

    def __init__(
        self,
        command: str,
        kind: type | dict[Any, str] = float,
        *,
        query: str | None = None,
        set_format: str | None = None,
        unit: str = "",
        limit: str | None = None,
        validator: Validator | None = None,
        readonly: bool = False,
        writeonly: bool = False,
        check_errors: bool = True,
        doc: str = "",
        to_limit_unit: Callable[[Any], float] | None = None,
        parse: Callable[[str], Any] | None = None,
        formatter: Callable[[Any], str] | None = None,
    ) -> None:
        if isinstance(kind, dict) and validator is None:
            from drivers.base import OneOf

            validator = OneOf(list(kind))
        elif validator is None and formatter is None and kind in (float, int, bool):
            # a declared kind is checked too: "no" for a bool would be sent as 1, "abc" for a
            # float would fail in the formatting, both after the lock is taken
            validator = _KindCheck(kind)
        super().__init__(doc=doc, unit=unit, limit=limit, validator=validator,
                         readonly=readonly, writeonly=writeonly, to_limit_unit=to_limit_unit)
        self.command = command
        self.kind = kind
        self.query_cmd = query if query is not None else f"{command}?"
        self.set_format = set_format if set_format is not None else f"{command} {{}}"
        self.check_errors = check_errors
        self.custom_parse = parse
        self.custom_format = formatter

    def _parse(self, text: str) -> Any:
        if self.custom_parse is not None:
            return self.custom_parse(text)
        if isinstance(self.kind, dict):
            t = text.strip().upper()
            for py, mnemonic in self.kind.items():
                full = mnemonic.upper()
                short = "".join(c for c in mnemonic if not c.islower()).upper()
                if t in (full, short):
                    return py
            raise ValueError(f"not one of {list(self.kind.values())}: {text!r}")
        return _PARSERS[self.kind](text)

    def _format(self, value: Any) -> str:
        if self.custom_format is not None:
            return self.custom_format(value)
        if isinstance(self.kind, dict):
            return "".join(c for c in self.kind[value] if not c.islower()) or self.kind[value]
        if self.kind is bool:
            return "1" if value else "0"
        if self.kind in (float, int):
            return format_number(value)
        return str(value)

    def _read(self, inst: ScpiInstrument) -> Any:
        return inst.query_value(self.query_cmd, self._parse)

    def _write(self, inst: ScpiInstrument, value: Any) -> None:
        # "{ch}" stays for ScpiChannel.write to fill in
        inst.write(self.set_format.format(self._format(value), ch="{ch}"), idempotent=True,
                   check_errors=self.check_errors)


class ScpiChannel:
    """One channel of a multi-channel SCPI instrument (AWG output, scope input, VOA slot).

    :class:`ScpiProperty` declarations on a channel class use ``{ch}`` in the command
    (``":VOLT{ch}:AMPL"``); the channel fills in its number and forwards to the parent, so the
    parent's lock, retries, error-queue check and limits apply unchanged.
    """

    def __init__(self, parent: ScpiInstrument, ch: int) -> None:
        self.parent = parent
        self.ch = ch
        self.name = f"{parent.name}.ch{ch}"

    def check_limit(self, quantity: str, value: float, *, what: str = "", unit: str = "") -> None:
        self.parent.check_limit(quantity, value, what=what, unit=unit)

    def query_value(self, command: str, parse: Callable[[str], Any], **kw: Any) -> Any:
        return self.parent.query_value(command.format(ch=self.ch), parse, **kw)

    def query(self, command: str, **kw: Any) -> str:
        return self.parent.query(command.format(ch=self.ch), **kw)

    def write(self, command: str, **kw: Any) -> None:
        self.parent.write(command.format(ch=self.ch), **kw)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
