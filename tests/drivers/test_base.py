"""Driver base: life cycle, limits before I/O, Ctrl-C safety, locking, timeouts, retries,
resync after late replies, error wrapping -- all through real pyvisa-py to a loopback emulator.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from typing import ClassVar

import pytest

from drivers.base import Instrument, Range
from drivers.emulators.thorlabs_pm100d import PM100DEmulator
from drivers.thorlabs_pm100d import ThorlabsPM100D
from qkd_hw.errors import (
    CommunicationError,
    ConfigError,
    InstrumentReportedError,
    InstrumentStateError,
    InstrumentTimeoutError,
    LimitError,
    ProtocolError,
)
from qkd_hw.labconfig import InstrumentConfig, Limits
from tests.drivers.scpi_helpers import config, running

TIMEOUT = 0.4


@pytest.fixture
def emu():
    with running(PM100DEmulator()) as e:
        yield e


def make_pm(emu, **kw) -> ThorlabsPM100D:
    kw.setdefault("timeout_s", TIMEOUT)
    return ThorlabsPM100D(config("pm", "thorlabs_pm100d", emu.resource, **kw))


# ----------------------------------------------------------------------------- life cycle


def test_init_never_touches_hardware(emu):
    pm = make_pm(emu)
    time.sleep(0.05)
    assert emu.connections == 0 and emu.rx_bytes == 0
    assert not pm.is_open
    with pytest.raises(InstrumentStateError, match="not open"):
        pm.query("*IDN?")
    assert emu.rx_bytes == 0
    with pm:
        assert pm.is_open and emu.connections == 1
        with pytest.raises(InstrumentStateError, match="already open"):
            pm.open()
    assert not pm.is_open
    pm.close()  # idempotent


def test_init_with_unreachable_resource_is_fine_open_fails_wrapped():
    # a port nobody listens on (bind, read the port, close)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    pm = ThorlabsPM100D(config("pm", "thorlabs_pm100d",
                               f"TCPIP::127.0.0.1::{port}::SOCKET", timeout_s=0.3))
    t0 = time.perf_counter()
    with pytest.raises(CommunicationError) as ei:
        pm.open()
    assert time.perf_counter() - t0 < 3.0
    msg = str(ei.value)
    assert "instrument='pm'" in msg and f"127.0.0.1::{port}" in msg and "<open>" in msg
    assert ei.value.__cause__ is not None  # raise ... from the pyvisa(-py) error
    assert not pm.is_open


def test_wrong_instrument_is_refused_on_open(emu):
    emu.IDN = "Thorlabs,PM400,P1,1.0"
    pm = make_pm(emu)
    with pytest.raises(ProtocolError, match="not a Thorlabs PM100D") as ei:
        pm.open()
    assert ei.value.reply == "Thorlabs,PM400,P1,1.0"
    assert not pm.is_open


def test_driver_options_are_checked():
    class Dummy(Instrument):
        OPTIONS: ClassVar[dict[str, type]] = {"baudrate": int}

        def _make_transport(self):
            raise AssertionError("not reached")

    cfg = InstrumentConfig(name="d", driver="dummy", resource="x", options={"baud": 9600},
                           source="lab.toml")
    with pytest.raises(ConfigError, match=r"lab\.toml.*instruments\.d\.options\.baud"):
        Dummy(cfg)
    cfg = InstrumentConfig(name="d", driver="dummy", resource="x",
                           options={"baudrate": "fast"}, source="lab.toml")
    with pytest.raises(ConfigError, match="wrong type"):
        Dummy(cfg)


# ----------------------------------------------------------------------------- limits


def test_limit_violation_raises_before_any_byte(emu):
    pm = make_pm(emu, limits=Limits.of(wavelength_nm=(1500.0, 1600.0)))
    with pm:
        pm.wavelength_nm = 1550.0
        emu.clear_received()
        with pytest.raises(LimitError) as ei:
            pm.wavelength_nm = 1310.0
        time.sleep(0.05)
        assert emu.rx_bytes == 0 and emu.received == []
        msg = str(ei.value)
        assert "wavelength_nm" in msg and "1310" in msg and "test-lab.toml" in msg
        assert "[1500, 1600]" in msg
        # instrument range (from the sensor, read on open) is checked the same way
        with pytest.raises(LimitError, match="instrument range"):
            pm.averaging = 0
        with pytest.raises(LimitError, match="must be a number"):
            pm.averaging = "ten"
        time.sleep(0.05)
        assert emu.rx_bytes == 0
        assert emu.wavelength_nm == 1550.0


def test_dynamic_range_from_sensor(emu):
    with make_pm(emu) as pm:
        assert pm.wavelength_range_nm == (800.0, 1700.0)
        emu.clear_received()
        with pytest.raises(LimitError, match=r"\[800, 1700\]"):
            pm.wavelength_nm = 1750.0
        assert emu.rx_bytes == 0


# ----------------------------------------------------------------------------- error queue


def test_reported_error_after_setting_names_command_and_entry(emu):
    with make_pm(emu) as pm:
        emu.inject("error", match="SENS:AVER:COUN 5", code=-222)
        with pytest.raises(InstrumentReportedError) as ei:
            pm.averaging = 5
        e = ei.value
        assert e.command == "SENS:AVER:COUN 5"
        assert len(e.errors) == 1 and e.errors[0].startswith("-222,")
        # queue drained: the next setting is clean
        pm.averaging = 6
        assert pm.averaging == 6


def test_error_queue_drained_and_several_entries_reported(emu):
    with make_pm(emu) as pm:
        emu.push_error('-100,"Command error"')
        emu.push_error('-224,"Illegal parameter value"')
        with pytest.raises(InstrumentReportedError) as ei:
            pm.check_errors("after test")
        assert ei.value.errors == ('-100,"Command error"', '-224,"Illegal parameter value"')
        assert pm.read_error_queue() == []


# ----------------------------------------------------------------------------- faults


def test_missing_reply_retried_with_reconnect_within_bounds(emu):
    with make_pm(emu, retries=2) as pm:
        f = emu.inject("drop", match=r"SENS:CORR:WAV\?$")
        t0 = time.perf_counter()
        assert pm.wavelength_nm == 1550.0
        dt = time.perf_counter() - t0
        assert f.hits == 1
        assert TIMEOUT * 0.9 < dt < TIMEOUT + 1.0  # one timeout, then a fast retry
        assert emu.connections == 2  # resync of a socket = reconnect


def test_missing_reply_without_retries_times_out_in_time(emu):
    with make_pm(emu, retries=0) as pm:
        emu.inject("drop", match=r"SENS:AVER:COUN\?")
        t0 = time.perf_counter()
        with pytest.raises(InstrumentTimeoutError) as ei:
            _ = pm.averaging
        dt = time.perf_counter() - t0
        assert TIMEOUT * 0.9 < dt < TIMEOUT + 0.5
        assert ei.value.command == "SENS:AVER:COUN?" and ei.value.instrument == "pm"
        assert isinstance(ei.value.__cause__, CommunicationError)
        assert f"timeout after {TIMEOUT:g} s waiting for a reply line" in str(ei.value)


def test_bounded_retries_give_up(emu):
    with make_pm(emu, retries=2) as pm:
        f = emu.inject("drop", match=r"SENS:AVER:COUN\?", count=10)
        t0 = time.perf_counter()
        with pytest.raises(InstrumentTimeoutError, match="after 3 attempts"):
            _ = pm.averaging
        dt = time.perf_counter() - t0
        assert f.hits == 3
        assert dt < 3 * TIMEOUT + 1.5


def test_late_reply_is_never_attributed_to_the_next_query(emu):
    """A reply arriving after the timeout must not be read as the answer to the next query."""
    with make_pm(emu, retries=0) as pm:
        pm.averaging = 7
        emu.inject("delay", match=r"SENS:CORR:WAV\?$", seconds=TIMEOUT * 1.5)
        with pytest.raises(InstrumentTimeoutError):
            _ = pm.wavelength_nm  # reply "1.550000E+03" comes late
        time.sleep(TIMEOUT)  # the stale reply has arrived by now
        assert pm.averaging == 7  # and is not taken for this one
        assert pm.wavelength_nm == 1550.0


def test_garbled_reply_is_protocol_error_with_raw_bytes_then_retry_recovers(emu):
    with make_pm(emu, retries=0) as pm:
        emu.inject("garble", match=r"SENS:AVER:COUN\?", payload=b"\x8f\xfe#@!")
        with pytest.raises(ProtocolError) as ei:
            _ = pm.averaging
        assert ei.value.reply == b"\x8f\xfe#@!" and ei.value.command == "SENS:AVER:COUN?"
        assert pm.averaging == 1
    with make_pm(emu, retries=1) as pm:
        f = emu.inject("garble", match=r"SENS:AVER:COUN\?", payload=b"1.5.5")
        assert pm.averaging == 1
        assert f.hits == 1


def test_lost_connection_on_idempotent_setting_is_resent(emu):
    with make_pm(emu, retries=1) as pm:
        emu.inject("disconnect", match=r"SENS:AVER:COUN 12")
        pm.averaging = 12
        assert emu.averaging == 12
        assert emu.received.count(b"SENS:AVER:COUN 12") == 2


def test_lost_connection_on_non_idempotent_command_is_not_resent(emu):
    with make_pm(emu, retries=2) as pm:
        emu.inject("disconnect", match=r"ZERO:INIT")
        with pytest.raises(CommunicationError, match="not resent") as ei:
            pm.zero()
        assert ei.value.command == "SENS:CORR:COLL:ZERO:INIT"
        assert emu.received.count(b"SENS:CORR:COLL:ZERO:INIT") == 1
        # the link recovers on the next transaction
        assert pm.averaging == 1


def test_connection_dropped_by_instrument_between_transactions(emu):
    with make_pm(emu, retries=1) as pm:
        assert pm.averaging == 1
        emu.drop_connections()
        t0 = time.perf_counter()
        assert pm.wavelength_nm == 1550.0
        assert time.perf_counter() - t0 < TIMEOUT + 1.0


# ----------------------------------------------------------------------------- concurrency


def test_threads_never_interleave_query_and_reply():
    with running(PM100DEmulator(reply_jitter_s=0.002)) as emu:
        pm = make_pm(emu, timeout_s=2.0)
        emu.power_source = lambda e: 2.5e-4
        with pm:
            pm.averaging = 3
            expected = {
                "idn": (lambda: pm.query("*IDN?"), emu.IDN),
                "wav": (lambda: pm.wavelength_nm, 1550.0),
                "avg": (lambda: pm.averaging, 3),
                "pow": (lambda: pm.measure_power_w(), 2.5e-4),
                "unit": (lambda: pm.power_unit, "W"),
            }
            bad: list[str] = []
            counts = dict.fromkeys(expected, 0)

            def worker(key: str) -> None:
                fn, want = expected[key]
                for _ in range(25):
                    got = fn()
                    if got != want:
                        bad.append(f"{key}: got {got!r}")
                    counts[key] += 1

            threads = [threading.Thread(target=worker, args=(k,)) for k in expected]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert not any(t.is_alive() for t in threads)
            assert not bad, bad[:5]
            assert all(c == 25 for c in counts.values())


# ----------------------------------------------------------------------------- Ctrl-C


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals are delivered to the main thread only")
def test_ctrl_c_is_deferred_until_the_reply_is_read(emu):
    """SIGINT during a slow query: the reply is still read (no split transaction), then
    KeyboardInterrupt is raised; the next query is answered by its own reply."""
    delay = 0.6
    with make_pm(emu, timeout_s=2.0, retries=2) as pm:
        emu.inject("delay", match=r"SENS:CORR:WAV\?$", seconds=delay)
        timer = threading.Timer(0.15, os.kill, args=(os.getpid(), signal.SIGINT))
        handler_before = signal.getsignal(signal.SIGINT)
        t0 = time.perf_counter()
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            _ = pm.wavelength_nm
        dt = time.perf_counter() - t0
        timer.join()
        assert dt >= delay * 0.95  # interrupt waited for the reply
        assert signal.getsignal(signal.SIGINT) is handler_before  # handler restored
        assert not pm._dirty  # transaction completed cleanly
        conns = emu.connections
        assert pm.averaging == 1  # own reply, no resync needed
        assert emu.connections == conns


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals are delivered to the main thread only")
def test_ctrl_c_during_timeout_is_raised_after_the_timeout_without_retries(emu):
    with make_pm(emu, timeout_s=0.5, retries=3) as pm:
        f = emu.inject("drop", match=r"SENS:AVER:COUN\?", count=10)
        timer = threading.Timer(0.1, os.kill, args=(os.getpid(), signal.SIGINT))
        t0 = time.perf_counter()
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            _ = pm.averaging
        dt = time.perf_counter() - t0
        timer.join()
        assert f.hits == 1  # a pending interrupt stops further retries
        assert 0.45 < dt < 1.2


# ----------------------------------------------------------------------------- logging


def test_all_traffic_logged_at_debug(emu, caplog):
    with make_pm(emu) as pm:
        caplog.set_level(logging.DEBUG, logger="drivers.pm")
        pm.averaging = 4
        _ = pm.averaging
    lines = [r.getMessage() for r in caplog.records if r.name == "drivers.pm"]
    assert "-> b'SENS:AVER:COUN 4'" in lines
    assert "-> b'SENS:AVER:COUN?'" in lines
    assert "<- b'4'" in lines
    assert "<- b'0,\"No error\"'" in lines


def test_range_validator_is_standalone():
    r = Range(0, 10, integer=True)
    assert r(3.0, what="x", instrument="i") == 3
    with pytest.raises(LimitError, match="integer"):
        r(3.5, what="x", instrument="i")


# ----------------------------------------------------------------------------- factory


def test_create_instrument_from_lab_config(tmp_path, emu):
    from drivers.base import create_instrument
    from qkd_hw.labconfig import load_lab_config

    p = tmp_path / "lab.toml"
    p.write_text(f"""
[instruments.pm]
driver = "thorlabs_pm100d"
resource = "{emu.resource}"
timeout_s = 0.5
[instruments.pm.limits]
wavelength_nm = {{ min = 1500, max = 1600 }}
[instruments.ghost]
driver = "no_such_model"
resource = "x"
""")
    cfg = load_lab_config(p)
    pm = create_instrument(cfg.instrument("pm"))
    assert isinstance(pm, ThorlabsPM100D) and not pm.is_open and emu.connections == 0
    with pm, pytest.raises(LimitError, match=r"lab\.toml"):
        pm.wavelength_nm = 1310
    with pytest.raises(ConfigError, match=r"lab\.toml.*no driver module drivers/no_such_model"):
        create_instrument(cfg.instrument("ghost"))


def test_garbled_error_queue_answer_after_a_setting_is_retried_with_the_setting(emu):
    with make_pm(emu, retries=1) as pm:
        emu.clear_received()
        f = emu.inject("garble", match=r"^SYST:ERR\?$", payload=b"\xff\xfe")
        pm.averaging = 9
        assert f.hits == 1
        assert emu.received == [b"SENS:AVER:COUN 9", b"SYST:ERR?"] * 2
        assert emu.averaging == 9


def test_extra_reply_line_is_discarded_not_read_by_the_next_query(emu, caplog):
    with make_pm(emu, retries=0) as pm:
        emu.inject("garble", match=r"SENS:AVER:COUN\?", payload=b"1\n2.0E+00")
        assert pm.averaging == 1
        time.sleep(0.05)
        assert pm.wavelength_nm == 1550.0  # not the stray "2.0E+00"
        assert any("unsolicited bytes" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals are delivered to the main thread only")
def test_defer_sigint_nested_scopes_deliver_once_at_the_outermost_exit():
    from drivers.base import defer_sigint

    reached = []
    with pytest.raises(KeyboardInterrupt), defer_sigint() as outer:
        with defer_sigint() as inner:  # nested on purpose
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
            assert inner.interrupted and outer.interrupted
        reached.append("inner exited without raising")
    assert reached == ["inner exited without raising"]
    # in a worker thread the deferral is a no-op (Python delivers signals to the main thread)
    seen = []
    t = threading.Thread(target=lambda: seen.append(defer_sigint().__enter__().active))
    t.start()
    t.join()
    assert seen == [False]


# ----------------------------------------------------------------------------- declared limits


UNENFORCED_LAB = """
[instruments.pm]
driver = "thorlabs_pm100d"
resource = "{resource}"
timeout_s = 0.5
[instruments.pm.limits]
wavelength_nm = {{ min = 1500, max = 1600 }}
{extra}
"""


@pytest.mark.parametrize("extra", ["current_ma = { max = 1.0 }",
                                   "attenuation_db = { min = 10.0 }"])
def test_configured_limit_the_driver_does_not_enforce_is_a_config_error(tmp_path, emu, extra):
    from drivers.base import create_instrument
    from qkd_hw.labconfig import load_lab_config

    p = tmp_path / "lab.toml"
    p.write_text(UNENFORCED_LAB.format(resource=emu.resource, extra=extra))
    cfg = load_lab_config(p).instrument("pm")
    quantity = extra.split()[0]
    with pytest.raises(ConfigError) as ei:
        create_instrument(cfg)
    msg = str(ei.value)
    assert str(p) in msg and f"instruments.pm.limits.{quantity}" in msg
    assert "thorlabs_pm100d" in msg and "does not enforce" in msg
    assert "power_dbm" in msg and "wavelength_nm" in msg  # the ones it does enforce
    # the same for a driver built in code
    with pytest.raises(ConfigError, match=quantity):
        ThorlabsPM100D.from_resource(emu.resource, limits=Limits.of(**{quantity: (0.0, 1.0)}))
    assert emu.connections == 0


def test_driver_declares_its_limits_and_checks_only_declared_ones():
    import types

    class Dummy(Instrument):
        LIMITS = frozenset({"bias_v"})

    cfg = InstrumentConfig(name="d", driver="dummy", resource="x",
                           limits=Limits.of(bias_v=(-1.0, 1.0)), source="lab.toml")
    d = Dummy(cfg, transport=types.SimpleNamespace())  # no I/O in this test
    with pytest.raises(LimitError, match="bias_v"):
        d.check_limit("bias_v", 2.0)
    # checking a limit the class does not declare is a driver bug, loud at once
    with pytest.raises(TypeError, match="does not declare"):
        d.check_limit("power_dbm", 0.0)
    # unknown names and properties with an undeclared limit fail at class creation
    with pytest.raises(TypeError, match="unknown limit"):
        type("Bad", (Instrument,), {"LIMITS": frozenset({"volts"})})
    from drivers.base import Property

    with pytest.raises(TypeError, match="power_dbm"):
        type("Bad", (Instrument,), {"p": Property(limit="power_dbm")})


def test_every_driver_declares_exactly_the_limits_it_checks():
    """Cross-check the declaration against the source: ``limit="..."`` on properties (also on
    channel classes) and ``check_limit("...")`` calls."""
    import importlib
    import pkgutil
    import re
    from pathlib import Path

    import drivers

    modules = [importlib.import_module(f"drivers.{info.name}")
               for info in pkgutil.iter_modules(drivers.__path__)]
    classes = {o for m in modules for o in vars(m).values() if isinstance(o, type)
               and issubclass(o, Instrument) and o.__module__ == m.__name__}
    # drivers = the leaves; bases (Instrument, ScpiInstrument, InterbusInstrument) are not
    leaves = {c for c in classes if not any(o is not c and issubclass(o, c) for o in classes)}
    seen = 0
    for module in modules:
        classes = [c for c in leaves if c.__module__ == module.__name__]
        if not classes:
            continue
        source = Path(module.__file__).read_text()
        used = set(re.findall(r"""\blimit=["'](\w+)["']""", source))
        used |= set(re.findall(r"""check_limit\(\s*["'](\w+)["']""", source))
        for cls in classes:
            seen += 1
            assert used <= cls.LIMITS, f"{cls.__name__} checks {used - cls.LIMITS} undeclared"
            own = {n for n in cls.LIMITS if n not in getattr(cls.__base__, "LIMITS", ())}
            assert own <= used, f"{cls.__name__} declares {own - used} it never checks"
    assert seen >= 8


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals are delivered to the main thread only")
def test_deferred_interrupt_delivered_at_a_safe_point_inside_nested_scopes():
    """A procedure that stops early on Ctrl-C raises KeyboardInterrupt itself (inside an outer
    scope too) instead of returning partial results; the outer exit does not raise again."""
    from drivers.base import defer_sigint

    handler_before = signal.getsignal(signal.SIGINT)
    reached = []
    # two nested deferral scopes (outer, inner)
    with pytest.raises(KeyboardInterrupt) as ei, defer_sigint(), defer_sigint() as inner:
        inner.deliver_pending()  # nothing pending: no-op
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert inner.interrupted
        inner.deliver_pending()
        reached.append("returned")
    assert reached == []
    assert ei.value.__context__ is None  # delivered once
    assert signal.getsignal(signal.SIGINT) is handler_before
    # SIGINT ignored by the application: nothing is raised, the scope goes on
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with defer_sigint() as d:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
            d.deliver_pending()
            reached.append("ignored")
    finally:
        signal.signal(signal.SIGINT, handler_before)
    assert reached == ["ignored"]
