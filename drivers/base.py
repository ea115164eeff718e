"""Driver base: one :class:`Instrument` class for VISA/SCPI and serial instruments alike.

What every driver gets from here
--------------------------------
* ``__init__`` never touches hardware; :meth:`Instrument.open` / :meth:`Instrument.close` and
  the context manager do (``with Driver(cfg) as inst: ...``).
* A per-instrument :class:`threading.RLock`: a query and its reply are one *transaction*; two
  threads never interleave inside it.
* Ctrl-C safety: inside a transaction SIGINT is deferred (main thread only, where Python runs
  signal handlers) until the reply is read or the read's deadline passes, then
  ``KeyboardInterrupt`` is raised. A read still waiting :data:`INTERRUPT_GRACE_S` after the
  interrupt (and after its own start) is abandoned instead -- a long binary fetch, a slow
  ``*OPC?`` -- and the link is marked dirty like after a timeout, so its late reply is never
  read as the next one's. A deferred interrupt also stops further retries.
* Deadlines (``config.timeout_s`` per reply, longer for binary blocks: see
  ``drivers/transport.py``) and bounded retries with resync/reconnect for
  transient faults (:class:`CommunicationError`, :class:`ProtocolError`) -- only for operations
  declared idempotent (queries, absolute settings). Non-idempotent commands (``INIT``, ``*TRG``,
  relative steps, uploads with side effects) are never resent; the error says so.
* After a failed exchange the link is marked *dirty*; the next transaction first calls
  ``transport.resync()`` (reconnect / device clear / drain) so a late reply to a timed-out query
  is never read as the reply to the next one. Bytes waiting before an exchange starts
  (``transport.has_stale_input()``, e.g. an extra reply line) trigger the same resync.
* DEBUG logging of all traffic on the logger ``drivers.<name>`` (binary payloads as length +
  excerpt).
* Lab-config limits enforced *before* anything is written: :class:`Property` runs the validator
  and the limit check, then calls the write.

How a serial driver plugs in
----------------------------
1. Write a transport (subclass :class:`drivers.transport.Transport`) around ``serial.Serial``:
   ``open/close/is_open/description/write/read_line/read_exact`` and, if the protocol needs
   it, extra framed methods (e.g. ``read_frame()`` for Interbus). Raise only
   :class:`CommunicationError` / :class:`InstrumentTimeoutError` (use ``self._error(...)``) and
   wrap ``serial.SerialException`` with ``raise ... from exc``. Override ``resync()`` to drain
   the input (``reset_input_buffer`` + read until quiet) instead of reconnecting, and
   ``has_stale_input()`` (``in_waiting > 0``) so unsolicited bytes are dropped before a query.
2. Subclass :class:`Instrument`, override :meth:`Instrument._make_transport` to build it from
   ``self.config`` (``resource`` = port, ``options`` = baudrate etc.; declare the allowed option
   names and types in ``OPTIONS``), and optionally ``_on_open`` (identify the device, check the
   model) and ``_on_close``.
3. Do every exchange through :meth:`Instrument.exchange`::

       def _read_register(self, reg: int) -> bytes:
           def op(t: Transport) -> bytes:
               t.write(frame)
               return parse(t.read_frame())          # raise ProtocolError on bad CRC etc.
           return self.exchange(f"read reg 0x{reg:02X}", op, idempotent=True)

   ``exchange`` takes the lock, defers Ctrl-C, resyncs a dirty link, retries idempotent ops,
   logs, and adds instrument name and command to every error.
4. Declare properties once with a :class:`Property` subclass implementing ``_read`` /
   ``_write`` (``ScpiProperty`` in ``drivers/scpi.py`` is the SCPI one), e.g.::

       class RegisterProperty(Property):
           def __init__(self, reg, scale, **kw): super().__init__(**kw); ...
           def _read(self, inst): return inst._read_register(self.reg) ...
           def _write(self, inst, value): inst._write_register(self.reg, ...)

       power_mw = RegisterProperty(0x17, 0.01, unit="mW", limit="power_mw",
                                   validator=Range(0, 40), doc="Output power set point")

   ``Range`` / ``OneOf`` / ``Boolean`` validators and the lab-config limit named by ``limit``
   run before ``_write`` is called, so a violation raises :class:`LimitError` with nothing sent.
   List every limit the driver checks in ``LIMITS = frozenset({"power_mw"})``: a lab config
   that sets a limit the driver does not declare is a ConfigError when the driver is built.
5. :func:`create_instrument` builds a driver from a lab-config entry (``driver = "<module>"``);
   keep one public Instrument subclass per module or set ``DRIVER = TheClass`` in it.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import FrameType
from typing import Any, ClassVar, Generic, Self, TypeVar, overload

from drivers.transport import Transport, excerpt
from qkd_hw.errors import (
    CommunicationError,
    ConfigError,
    InstrumentError,
    InstrumentStateError,
    LimitError,
    ProtocolError,
)
from qkd_hw.labconfig import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    DEFAULT_VISA_LIBRARY,
    LIMIT_QUANTITIES,
    InstrumentConfig,
    Interval,
    Limits,
    OptionValue,
)

__all__ = [
    "Boolean",
    "DynamicRange",
    "Instrument",
    "OneOf",
    "Property",
    "Range",
    "Validator",
    "create_instrument",
    "defer_sigint",
    "no_read_abort",
]

T = TypeVar("T")
R = TypeVar("R")


# --------------------------------------------------------------------------- Ctrl-C deferral


#: a read under way when Ctrl-C arrives (or started after it) gets this long to complete
#: before it is abandoned: a prompt reply is still read, a long wait is not sat out
INTERRUPT_GRACE_S = 0.75


class _SigintState:
    """Process-wide SIGINT deferral (signal handlers live in the main thread only)."""

    def __init__(self) -> None:
        self.depth = 0
        self.pending: list[FrameType | None] = []
        self.previous: Any = None
        self.first_at = 0.0  # time.monotonic() of the first pending SIGINT
        self.shielded = 0  # depth of no_read_abort() scopes

    def record(self, frame: FrameType | None) -> None:
        if not self.pending:
            self.first_at = time.monotonic()
        self.pending.append(frame)


_SIGINT = _SigintState()


def _interrupt_overdue(read_started: float) -> bool:
    """Transport hook: True if a deferred Ctrl-C has waited :data:`INTERRUPT_GRACE_S` for
    the read that started at ``read_started`` (main thread only: only it gets the interrupt)."""
    if (not _SIGINT.pending or _SIGINT.shielded
            or threading.current_thread() is not threading.main_thread()):
        return False
    return time.monotonic() - max(_SIGINT.first_at, read_started) >= INTERRUPT_GRACE_S


@contextlib.contextmanager
def no_read_abort() -> Iterator[None]:
    """Reads in this block are not abandoned on Ctrl-C (only their deadlines end them): for
    procedures that bring an instrument into a safe state (outputs off, delete a partial
    waveform), which an impatient second Ctrl-C must not cut short. Use inside a
    transaction, so that the interrupt is deferred until the block is done."""
    _SIGINT.shielded += 1
    try:
        yield
    finally:
        _SIGINT.shielded -= 1


class _Deferral:
    """Handle of one deferral scope; ``interrupted`` is True once a SIGINT arrived in it."""

    def __init__(self, active: bool) -> None:
        self.active = active

    @property
    def interrupted(self) -> bool:
        return self.active and bool(_SIGINT.pending)

    def deliver_pending(self) -> None:
        """Deliver a deferred SIGINT now, at a safe point between two exchanges, instead of at
        the exit of the outermost scope (which may be a caller's transaction around a long
        procedure). With Python's default handler this raises KeyboardInterrupt, so a procedure
        stopped by Ctrl-C never returns partial results as if complete; the outer exit does not
        deliver it again. An ignored SIGINT (SIG_IGN) is dropped; a custom handler is called."""
        if not self.interrupted:
            return
        frame = _SIGINT.pending[-1]
        _SIGINT.pending.clear()
        _deliver(_SIGINT.previous, frame)


def _deliver(handler: Any, frame: FrameType | None) -> None:
    """Run what SIGINT would have run without the deferral."""
    if callable(handler):
        handler(signal.SIGINT, frame)  # default_int_handler raises KeyboardInterrupt
    elif handler != signal.SIG_IGN:
        raise KeyboardInterrupt


@contextlib.contextmanager
def defer_sigint() -> Iterator[_Deferral]:
    """Defer SIGINT (Ctrl-C) for the duration of the block, then deliver it.

    Only the main thread can install signal handlers and only the main thread receives
    ``KeyboardInterrupt``; in other threads this is a no-op (their transactions cannot be split
    by Ctrl-C anyway). Nested scopes share one handler; the outermost re-delivers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield _Deferral(False)
        return
    if _SIGINT.depth == 0:
        try:
            previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, lambda _sig, frame: _SIGINT.record(frame))
        except (ValueError, OSError):  # e.g. embedded interpreter without signal support
            yield _Deferral(False)
            return
        _SIGINT.previous = previous
        _SIGINT.pending.clear()
    _SIGINT.depth += 1
    try:
        yield _Deferral(True)
    finally:
        _SIGINT.depth -= 1
        if _SIGINT.depth == 0:
            previous = _SIGINT.previous
            signal.signal(signal.SIGINT, previous)
            if _SIGINT.pending:
                frame = _SIGINT.pending[-1]
                _SIGINT.pending.clear()
                _deliver(previous, frame)


# --------------------------------------------------------------------------- validators


class Validator:
    """Checks and coerces a value before it is sent; raises LimitError (nothing sent)."""

    def __call__(self, value: Any, *, what: str, instrument: str, inst: Any = None) -> Any:
        """``inst`` is the instrument (or channel) the value is for, for dynamic ranges."""
        raise NotImplementedError

    def describe(self) -> str:
        return ""


def _as_number(value: Any, what: str, instrument: str, integer: bool) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:  # numpy scalars and friends
            import numbers

            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                value = float(value) if not integer else int(value)
            else:
                raise TypeError
        except (TypeError, ValueError):
            raise LimitError(f"{what} must be a number, got {type(value).__name__} {value!r}",
                             instrument=instrument) from None
    if isinstance(value, float) and not math.isfinite(value):
        raise LimitError(f"{what} must be finite, got {value!r}", instrument=instrument)
    if integer:
        if isinstance(value, float):
            if not value.is_integer():
                raise LimitError(f"{what} must be an integer, got {value!r}",
                                 instrument=instrument)
            value = int(value)
        return int(value)
    return float(value)


class Range(Validator):
    """``lo <= value <= hi`` (the instrument's own range); ``integer=True`` for counts."""

    def __init__(self, lo: float | None = None, hi: float | None = None, *,
                 integer: bool = False) -> None:
        self.lo, self.hi, self.integer = lo, hi, integer

    def __call__(self, value: Any, *, what: str, instrument: str, inst: Any = None
                 ) -> float | int:
        v = _as_number(value, what, instrument, self.integer)
        lo, hi = self.bounds(inst)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise LimitError(f"{what} = {v!r} outside the instrument range {Interval(lo, hi)}",
                             instrument=instrument)
        return v

    def bounds(self, inst: Any) -> tuple[float | None, float | None]:
        return self.lo, self.hi

    def describe(self) -> str:
        return str(Interval(self.lo, self.hi))


class DynamicRange(Range):
    """Like Range, but the bounds are read from an attribute of the instrument at check time
    (e.g. the wavelength range of the sensor found on open). Falls back to ``lo``/``hi``
    while the attribute is None."""

    def __init__(self, attribute: str, lo: float | None = None, hi: float | None = None, *,
                 integer: bool = False) -> None:
        super().__init__(lo, hi, integer=integer)
        self.attribute = attribute

    def bounds(self, inst: Any) -> tuple[float | None, float | None]:
        got = getattr(inst, self.attribute, None) if inst is not None else None
        return tuple(got) if got is not None else (self.lo, self.hi)  # type: ignore[return-value]

    def describe(self) -> str:
        return f"queried from the instrument ({self.attribute}), within {super().describe()}"


class OneOf(Validator):
    """Value must be one of ``choices`` (strings compared case-insensitively)."""

    def __init__(self, choices: Sequence[Any]) -> None:
        self.choices = tuple(choices)

    def __call__(self, value: Any, *, what: str, instrument: str, inst: Any = None) -> Any:
        for c in self.choices:
            if value == c or (isinstance(value, str) and isinstance(c, str)
                              and value.upper() == c.upper()):
                return c
        raise LimitError(f"{what} = {value!r} not one of {list(self.choices)}",
                         instrument=instrument)

    def describe(self) -> str:
        return f"one of {list(self.choices)}"


class Boolean(Validator):
    def __call__(self, value: Any, *, what: str, instrument: str, inst: Any = None) -> bool:
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return bool(value)
        raise LimitError(f"{what} must be True/False, got {value!r}", instrument=instrument)


# --------------------------------------------------------------------------- property descriptor


_LIMIT_UNITS = {"dbm": "dBm", "mw": "mW", "db": "dB", "nm": "nm", "hz": "Hz", "v": "V",
                "ma": "mA", "c": "degC"}


def limit_unit(quantity: str) -> str:
    """Unit of a lab-config limit, from its name (``power_dbm`` -> ``dBm``); "" if none."""
    return _LIMIT_UNITS.get(quantity.rsplit("_", 1)[-1], "") if "_" in quantity else ""


def _short_repr(value: Any, limit: int = 40) -> str:
    """``repr`` for an error message, shortened (a 400-digit int would drown the message;
    ints above 4300 digits have no repr at all in Python >= 3.11)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<int of {value.bit_length()} bits>"
    try:
        text = repr(value)
    except Exception:  # a foreign object's __repr__ must not replace the LimitError
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else f"{text[: limit // 2]}...{text[-limit // 2:]}"


class Property(Generic[T]):
    """A setting/reading declared once on the driver class.

    Subclasses implement ``_read(inst)`` and ``_write(inst, value)``; this class does the
    validation (instrument range), the lab-config limit (``limit=<quantity>``) and the docs.
    ``readonly`` / ``writeonly`` restrict access. The limit check compares the value in the
    property's own unit against ``config.limits[limit]``; pass ``to_limit_unit`` if they differ.
    """

    def __init__(
        self,
        *,
        doc: str = "",
        unit: str = "",
        limit: str | None = None,
        validator: Validator | None = None,
        readonly: bool = False,
        writeonly: bool = False,
        to_limit_unit: Callable[[Any], float] | None = None,
    ) -> None:
        if limit is not None and limit not in LIMIT_QUANTITIES:
            raise ValueError(f"unknown limit quantity {limit!r}; known: {sorted(LIMIT_QUANTITIES)}")
        self.unit = unit
        self.limit = limit
        self.validator = validator
        self.readonly = readonly
        self.writeonly = writeonly
        self.to_limit_unit = to_limit_unit
        self.name = "?"
        self.__doc__ = self._compose_doc(doc)

    def _compose_doc(self, doc: str) -> str:
        bits = [doc.strip()] if doc else []
        if self.unit:
            bits.append(f"Unit: {self.unit}.")
        if self.validator is not None and self.validator.describe():
            bits.append(f"Instrument range: {self.validator.describe()}.")
        if self.limit:
            bits.append(f"Lab-config limit: ``{self.limit}``.")
        if self.readonly:
            bits.append("Read-only.")
        return " ".join(bits)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, inst: None, owner: type) -> Property[T]: ...
    @overload
    def __get__(self, inst: Instrument, owner: type) -> T: ...

    def __get__(self, inst: Instrument | None, owner: type) -> Any:
        if inst is None:
            return self
        if self.writeonly:
            raise AttributeError(f"{type(inst).__name__}.{self.name} is write-only")
        return self._read(inst)

    def __set__(self, inst: Instrument, value: Any) -> None:
        if self.readonly:
            raise AttributeError(f"{type(inst).__name__}.{self.name} is read-only")
        value = self.check(inst, value)
        self._write(inst, value)

    def check(self, inst: Instrument, value: Any) -> Any:
        """Validator then lab-config limit; returns the coerced value. No I/O.

        Every refusal is a LimitError naming the property, the instrument and the value,
        also a value no conversion can take (``10**400`` for a float: OverflowError).
        """
        what = f"{type(inst).__name__}.{self.name}"
        try:
            if self.validator is not None:
                value = self.validator(value, what=what, instrument=inst.name, inst=inst)
            self.check_lab_limit(inst, value, what)
        except LimitError:
            raise
        except (ArithmeticError, TypeError, ValueError) as exc:
            raise LimitError(f"{what} = {_short_repr(value)} refused: {type(exc).__name__}: "
                             f"{exc}; nothing was sent", instrument=inst.name) from None
        return value

    def check_lab_limit(self, inst: Instrument, value: Any, what: str = "") -> None:
        """LimitError if ``value`` violates this property's lab-config ``limit`` (if any), in
        the limit's unit (``to_limit_unit``). No I/O. Drivers that quantise call it again on
        the value actually sent."""
        if self.limit is None:
            return
        what = what or f"{type(inst).__name__}.{self.name}"
        if self.to_limit_unit is None:
            inst.check_limit(self.limit, value, what=what, unit=self.unit)
        else:  # name both units: "range_w (0.5 W) in dBm = 26.99 dBm violates ..."
            unit = limit_unit(self.limit)
            shown = f"{value!r} {self.unit}".rstrip()
            inst.check_limit(self.limit, self.to_limit_unit(value),
                             what=f"{what} ({shown}) in {unit or self.limit}", unit=unit)

    def _read(self, inst: Any) -> T:
        raise NotImplementedError

    def _write(self, inst: Any, value: T) -> None:
        raise NotImplementedError


# --------------------------------------------------------------------------- instrument


class Instrument:
    """Base of every driver. See the module docstring.

    Subclasses set ``MODEL`` (human-readable) and ``OPTIONS`` (allowed ``config.options`` and
    their types) and implement :meth:`_make_transport`.
    """

    MODEL: ClassVar[str] = "instrument"
    OPTIONS: ClassVar[Mapping[str, type | tuple[type, ...]]] = {}
    #: Lab-config limit names this driver enforces (``limit=`` on its properties, also on its
    #: channel classes, and its ``check_limit`` calls). A configured limit not listed here is a
    #: ConfigError when the driver is built: it would be silently ignored otherwise.
    LIMITS: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = cls.LIMITS
        if not isinstance(declared, frozenset):
            raise TypeError(f"{cls.__name__}.LIMITS must be a frozenset of limit names")
        unknown = sorted(declared - set(LIMIT_QUANTITIES))
        if unknown:
            raise TypeError(f"{cls.__name__}.LIMITS: unknown limit(s) {unknown}; known: "
                            f"{sorted(LIMIT_QUANTITIES)}")
        for klass in cls.__mro__:
            for attr, prop in vars(klass).items():
                if isinstance(prop, Property) and prop.limit and prop.limit not in declared:
                    raise TypeError(f"{cls.__name__}.{attr} checks limit {prop.limit!r} that "
                                    f"{cls.__name__}.LIMITS does not declare")

    def __init__(self, config: InstrumentConfig, *, transport: Transport | None = None) -> None:
        if not isinstance(config, InstrumentConfig):
            raise TypeError(f"config must be an InstrumentConfig, got {type(config).__name__}")
        self.config = config
        self.name = config.name
        self.log = logging.getLogger(f"drivers.{config.name}")
        self._lock = threading.RLock()
        self._dirty = False
        self._open = False
        self._check_options()
        self._check_limits_enforced()
        self.transport = transport if transport is not None else self._make_transport()
        self.transport.instrument_name = self.name
        self.transport.interrupt_check = _interrupt_overdue

    @classmethod
    def from_resource(
        cls,
        resource: str,
        *,
        name: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        visa_library: str = DEFAULT_VISA_LIBRARY,
        limits: Limits | None = None,
        options: Mapping[str, OptionValue] | None = None,
    ) -> Self:
        """Build without a lab-config file (scripts, tests)."""
        cfg = InstrumentConfig(
            name=name or cls.__name__.lower(),
            driver=cls.__module__.rsplit(".", 1)[-1],
            resource=resource,
            timeout_s=timeout_s,
            retries=retries,
            visa_library=visa_library,
            limits=limits or Limits(),
            options=options or {},
        )
        return cls(cfg)

    # -- configuration -------------------------------------------------------------------

    @property
    def limits(self) -> Limits:
        return self.config.limits

    @property
    def timeout_s(self) -> float:
        return self.transport.timeout_s

    def _check_options(self) -> None:
        for key, value in self.config.options.items():
            if key not in self.OPTIONS:
                raise ConfigError(
                    f"{self.config.source}: unknown key 'instruments.{self.name}.options.{key}' "
                    f"for driver {self.config.driver!r} (allowed: {sorted(self.OPTIONS) or 'none'})"
                )
            expected = self.OPTIONS[key]
            if isinstance(value, bool) and expected is not bool and not (
                    isinstance(expected, tuple) and bool in expected):
                ok = False
            else:
                ok = isinstance(value, expected)
            if not ok:
                raise ConfigError(
                    f"{self.config.source}: instruments.{self.name}.options.{key} has wrong "
                    f"type {type(value).__name__} (expected {expected})"
                )

    def option(self, key: str, default: Any = None) -> Any:
        return self.config.options.get(key, default)

    def _check_limits_enforced(self) -> None:
        """ConfigError for a configured limit this driver does not enforce (see ``LIMITS``)."""
        for quantity in self.config.limits.intervals:
            if quantity not in self.LIMITS:
                enforced = ", ".join(sorted(self.LIMITS)) or "none"
                raise ConfigError(
                    f"{self.config.source}: instruments.{self.name}.limits.{quantity}: driver "
                    f"{self.config.driver!r} ({type(self).__name__}) does not enforce limit "
                    f"{quantity!r}, it would be silently ignored (limits it enforces: "
                    f"{enforced})"
                )

    def check_limit(self, quantity: str, value: float, *, what: str = "", unit: str = "") -> None:
        """LimitError if ``value`` is outside the lab-config limit ``quantity`` (if any)."""
        if quantity not in self.LIMITS:  # a driver bug: the config could never set this limit
            raise TypeError(f"{type(self).__name__} checks limit {quantity!r} but its LIMITS "
                            f"does not declare it")
        interval = self.config.limits.get(quantity)
        if interval is None:
            return
        if value not in interval:
            raise LimitError(
                f"{what or quantity} = {value!r}{' ' + unit if unit else ''} violates lab-config "
                f"limit {quantity} {interval} ({self.config.source}, instruments.{self.name}."
                f"limits.{quantity}); nothing was sent",
                instrument=self.name,
            )

    def _make_transport(self) -> Transport:
        raise NotImplementedError(f"{type(self).__name__} must implement _make_transport()")

    # -- life cycle ----------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._open

    def open(self) -> Self:
        """Connect and run the driver's ``_on_open`` (identify, clear errors). Returns self."""
        with self._lock, defer_sigint():
            if self._open:
                raise InstrumentStateError(f"{self.MODEL} is already open", instrument=self.name)
            self.log.debug("open %s", self.transport.description)
            try:
                self.transport.open()
            except InstrumentError as exc:
                raise exc.with_context(instrument=self.name, command="<open>") from exc
            self._open = True
            self._dirty = False
            try:
                self._on_open()
            except BaseException:
                self._open = False
                self.transport.close()
                raise
        return self

    def close(self) -> None:
        """Run ``_on_close`` (best effort) and disconnect. Idempotent."""
        with self._lock, defer_sigint():
            if not self._open:
                return
            try:
                self._on_close()
            except InstrumentError as exc:
                self.log.warning("%s: error while closing ignored: %s", self.name, exc)
            finally:
                self._open = False
                self.transport.close()
                self.log.debug("closed")

    def _on_open(self) -> None:
        """Hook: called with the transport open (identify the device, clear its errors)."""

    def _on_close(self) -> None:
        """Hook: called before the transport is closed (errors are logged, not raised)."""

    def __enter__(self) -> Self:
        if not self._open:
            self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<{type(self).__name__} {self.name!r} {self.transport.description} {state}>"

    # -- transactions --------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_Deferral]:
        """Lock + Ctrl-C deferral around several exchanges that belong together (e.g. a setting
        and its error-queue check). Re-entrant."""
        with self._lock, defer_sigint() as deferral:
            if not self._open:
                raise InstrumentStateError(
                    f"{self.MODEL} is not open (use open() or a with-block)", instrument=self.name)
            yield deferral

    def exchange(
        self,
        command: str,
        op: Callable[[Transport], R],
        *,
        idempotent: bool,
        retries: int | None = None,
    ) -> R:
        """Run ``op(transport)`` as one transaction: lock, Ctrl-C deferral, resync of a dirty
        link, bounded retries (idempotent ops only), errors tagged with instrument and
        ``command``. ``op`` writes the command and reads/parses its reply."""
        n_retries = self.config.retries if retries is None else retries
        attempts = 1 + (n_retries if idempotent else 0)
        with self.transaction() as deferral:
            for attempt in range(1, attempts + 1):
                t0 = time.perf_counter()
                try:
                    if not self._dirty and self.transport.has_stale_input():
                        self.log.warning("%s: unsolicited bytes waiting before %r; resync",
                                         self.name, command)
                        self._dirty = True
                    if self._dirty:
                        self.log.debug("resync before %r", command)
                        self.transport.resync()
                        self._dirty = False
                    return op(self.transport)
                except (CommunicationError, ProtocolError) as exc:
                    # whatever is in flight now belongs to a failed exchange
                    self._dirty = True
                    final = attempt == attempts or deferral.interrupted
                    if not final:
                        self.log.warning("%s: %s failed after %.3f s (%s); retry %d/%d",
                                         self.name, command, time.perf_counter() - t0,
                                         exc.message, attempt, attempts - 1)
                        continue
                    err = exc.with_context(instrument=self.name, command=command)
                    if not idempotent and isinstance(exc, CommunicationError):
                        err = type(err)(
                            f"{err.message} [not resent: effect of a non-idempotent command is "
                            f"unknown]",
                            instrument=err.instrument, command=err.command, reply=err.reply)
                    elif attempts > 1:
                        err = type(err)(f"{err.message} [after {attempts} attempts]",
                                        instrument=err.instrument, command=err.command,
                                        reply=err.reply)
                    raise err from exc
                except InstrumentError as exc:
                    raise exc.with_context(instrument=self.name, command=command) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    # -- snapshot ------------------------------------------------------------------------

    def snapshot_identity(self) -> str | None:
        """What the instrument says it is (``*IDN?`` reply, serial number), read on open;
        None when the driver has none. Drivers with another source override this."""
        for attr in ("identity", "serial_number"):
            value = self.__dict__.get(attr)
            if isinstance(value, str | tuple | list) and value:
                return value if isinstance(value, str) else ",".join(map(str, value))
        return None

    def snapshot(self, *, role: str | None = None) -> dict[str, Any]:
        """Every declared setting and reading as a JSON-able dict (QCoDeS-style).

        ``{"name", "role", "driver", "model", "resource", "identity", "properties":
        {name: {"value": ..., "unit": ...}}, "channels": {"1": {name: ...}}}``. Every readable
        :class:`Property` of the class (and of its channels, for drivers with
        ``N_CHANNELS`` and ``channel(n)``) is read once; a property that cannot be read is
        recorded as ``{"error": message}`` so that one failing reading neither hides the
        others nor passes for a value.
        """
        with self.transaction():
            snap: dict[str, Any] = {
                "name": self.name, "role": role, "driver": self.config.driver,
                "model": self.MODEL, "resource": self.config.resource,
                "identity": self.snapshot_identity(), "properties": _read_properties(self)}
            # channel objects: a ``channel(n)`` method (on the class: on the switch,
            # ``channel`` is a Property whose read would be I/O) and a channel count
            n_channels = self.__dict__.get("n_channels") or getattr(self, "N_CHANNELS", None)
            if isinstance(n_channels, int) and n_channels > 0 and inspect.isfunction(
                    getattr(type(self), "channel", None)):
                snap["channels"] = {str(ch): _read_properties(self.channel(ch))  # type: ignore[attr-defined]
                                    for ch in range(1, n_channels + 1)}
        return snap

    # -- traffic logging helpers for subclasses ----------------------------------------

    def _log_tx(self, data: bytes) -> None:
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("-> %r", data if len(data) <= 256 else
                           f"<{len(data)} bytes> {excerpt(data)!r}")

    def _log_rx(self, data: bytes) -> None:
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("<- %r", data if len(data) <= 256 else
                           f"<{len(data)} bytes> {excerpt(data)!r}")


def _jsonable(value: Any) -> Any:
    """A property value as JSON: enums by name (flags as their integer and names), numpy
    scalars as Python numbers, tuples as lists; non-finite floats as strings ("nan")."""
    import enum

    if isinstance(value, enum.Flag):
        return {"value": int(value), "flags": [f.name for f in type(value) if f in value]}
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else repr(value)
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if hasattr(value, "item"):  # numpy scalar
        return _jsonable(value.item())
    if hasattr(value, "__dict__"):  # small value objects (dataclasses)
        return {k: _jsonable(v) for k, v in vars(value).items() if not k.startswith("_")}
    return repr(value)


def _read_properties(obj: Any) -> dict[str, Any]:
    """``{name: {"value", "unit"}}`` of every readable Property declared on ``obj``'s class."""
    out: dict[str, Any] = {}
    for klass in reversed(type(obj).__mro__):
        for attr, prop in vars(klass).items():
            if not isinstance(prop, Property) or prop.writeonly:
                continue
            try:
                entry = {"value": _jsonable(prop.__get__(obj, type(obj)))}
            except InstrumentError as exc:
                entry = {"error": str(exc)}
            if prop.unit:
                entry["unit"] = prop.unit
            out[attr] = entry
    return out


def create_instrument(config: InstrumentConfig) -> Instrument:
    """The driver named by ``config.driver`` (module ``drivers.<driver>``), not yet opened.

    The module must define exactly one public :class:`Instrument` subclass (or name it in a
    module-level ``DRIVER`` attribute). Unknown drivers are a ConfigError naming the file.
    """
    import importlib

    if not config.driver.isidentifier():
        raise ConfigError(f"{config.source}: instruments.{config.name}.driver "
                          f"{config.driver!r} is not a module name")
    try:
        module = importlib.import_module(f"drivers.{config.driver}")
    except ModuleNotFoundError as exc:
        if exc.name != f"drivers.{config.driver}":
            raise
        raise ConfigError(f"{config.source}: instruments.{config.name}.driver: no driver "
                          f"module drivers/{config.driver}.py") from None
    cls = getattr(module, "DRIVER", None)
    if cls is None:
        found = [obj for obj in vars(module).values()
                 if isinstance(obj, type) and issubclass(obj, Instrument)
                 and obj.__module__ == module.__name__ and not obj.__name__.startswith("_")]
        if len(found) != 1:
            raise ConfigError(f"{config.source}: instruments.{config.name}.driver: module "
                              f"drivers.{config.driver} defines {len(found)} instrument "
                              f"classes; set DRIVER in it")
        cls = found[0]
    return cls(config)


# -- units ------------------------------------------------------------------------------------


def mw_to_dbm(mw: float) -> float:
    """Optical power mW -> dBm (``10 log10(P / 1 mW)``); -inf for 0 or less."""
    return 10.0 * math.log10(mw) if mw > 0 else -math.inf


# -- quantisation to the register step -------------------------------------------------------


def _per_unit(scale: float) -> int | None:
    """``1 / scale`` when it is a whole number (0.1, 0.01, 0.001, 1), else None."""
    inv = 1.0 / scale
    n = round(inv)
    return n if n >= 1 and abs(inv - n) <= 1e-9 * inv else None


def count_value(count: int, scale: float) -> float:
    """Value of a register count: ``count * scale``, computed as ``count / (1 / scale)`` when
    that is a whole number, so that 3 x 0.1 is 0.3 (the float a lab limit of 0.3 is read as),
    not 0.30000000000000004."""
    n = _per_unit(scale)
    return count / n if n is not None else count * scale


def quantise_inside(value: float, scale: float, check: Callable[[float, str], None],
                    what: str) -> int:
    """Register count to send for ``value`` (value = count x ``scale``), checked as sent.

    The lab limits apply to the value the module receives, not to the request: the nearest
    count is sent when its value passes ``check`` (which raises LimitError for a value beyond
    a limit); otherwise the count on the other side of the request, i.e. the request is
    rounded towards the inside of the limit (a request the limit allows is kept, within one
    step, rather than refused). LimitError from ``check`` when neither count passes (a limit
    narrower than one step); ``what`` names the setting in that message.
    """
    n = _per_unit(scale)
    exact = value * n if n is not None else value / scale
    nearest = round(exact)
    other = math.floor(exact) if nearest > exact else math.ceil(exact)
    counts = [nearest] if other == nearest else [nearest, other]
    for i, count in enumerate(counts):
        try:
            check(count_value(count, scale), what)
        except LimitError:
            if i == len(counts) - 1:
                raise
            continue
        return count
    raise AssertionError("unreachable")
