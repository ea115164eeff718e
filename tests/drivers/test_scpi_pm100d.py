"""Thorlabs PM100D: bytes on the wire against the manual's command set, round trips through
pyvisa-py to the emulator, reply parsing."""

from __future__ import annotations

import math

import pytest

from drivers.emulators.thorlabs_pm100d import PM100DEmulator
from drivers.thorlabs_pm100d import ThorlabsPM100D
from qkd_hw.errors import InstrumentReportedError, LimitError
from qkd_hw.labconfig import Limits
from tests.drivers.scpi_helpers import config, running, sent

ERR = b"SYST:ERR?"


@pytest.fixture
def pair():
    with running(PM100DEmulator()) as emu:
        pm = ThorlabsPM100D(config("pm", "thorlabs_pm100d", emu.resource, timeout_s=1.0))
        with pm:
            emu.clear_received()
            yield pm, emu


def test_open_sequence_bytes():
    with running(PM100DEmulator()) as emu:
        with ThorlabsPM100D(config("pm", "thorlabs_pm100d", emu.resource)) as pm:
            assert pm.identity == PM100DEmulator.IDN
        assert sent(emu) == [b"*IDN?", ERR, b"SENS:POW:UNIT W", ERR, b"SENS:CORR:WAV? MIN",
                             b"SENS:CORR:WAV? MAX"]
        assert emu.unit == "W"


@pytest.mark.parametrize(
    ("prop", "value", "set_bytes", "query_bytes", "state", "expected"),
    [
        ("wavelength_nm", 1310.5, b"SENS:CORR:WAV 1310.5", b"SENS:CORR:WAV?",
         "wavelength_nm", 1310.5),
        ("auto_range", False, b"SENS:POW:RANG:AUTO 0", b"SENS:POW:RANG:AUTO?", "auto_range",
         False),
        ("averaging", 250, b"SENS:AVER:COUN 250", b"SENS:AVER:COUN?", "averaging", 250),
        # the meter rounds a range request up to its next range (5 mW here)
        ("range_w", 1e-3, b"SENS:POW:RANG:UPP 0.001", b"SENS:POW:RANG:UPP?", "range_w", 5e-3),
    ],
)
def test_property_bytes_and_round_trip(pair, prop, value, set_bytes, query_bytes, state,
                                       expected):
    pm, emu = pair
    setattr(pm, prop, value)
    assert sent(emu) == [set_bytes, ERR]
    assert getattr(emu, state) == expected
    emu.clear_received()
    assert getattr(pm, prop) == expected
    assert sent(emu) == [query_bytes]


def test_auto_range_on_round_trip_and_manual_range_switches_it_off(pair):
    pm, _emu = pair
    pm.auto_range = True
    assert pm.auto_range is True
    pm.range_w = 4e-5
    assert pm.auto_range is False and pm.range_w == pytest.approx(5e-5)


def test_power_unit_is_read_only(pair):
    pm, _emu = pair
    assert pm.power_unit == "W"
    with pytest.raises(AttributeError, match="read-only"):
        pm.power_unit = "DBM"


def test_measure_power_bytes_and_value(pair):
    pm, emu = pair
    emu.power_source = lambda e: 3.25e-4
    emu.true_wavelength_nm = 1550.0
    assert pm.measure_power_w() == pytest.approx(3.25e-4, rel=1e-6)
    assert sent(emu) == [b"SENS:AVER:COUN?", b"MEAS:POW?"]
    assert pm.measure_power_dbm() == pytest.approx(10 * math.log10(0.325), abs=1e-5)


def test_wrong_wavelength_setting_gives_the_documented_wrong_reading(pair):
    pm, emu = pair
    emu.power_source = lambda e: 1e-3
    emu.true_wavelength_nm = 1550.0
    pm.wavelength_nm = 1310.0
    # emulator's responsivity model: R(1550)/R(1310)
    r = lambda wl: 0.5 + 0.5 * (wl - 900) / 700  # noqa: E731
    assert pm.measure_power_w() == pytest.approx(1e-3 * r(1550) / r(1310), rel=1e-6)


def test_over_range_reading_is_an_error_not_a_number(pair):
    pm, emu = pair
    emu.power_source = lambda e: 2e-2
    pm.range_w = 5e-3
    with pytest.raises(InstrumentReportedError, match="over range") as ei:
        pm.measure_power_w()
    assert ei.value.command == "MEAS:POW?"


def test_averaging_extends_the_timeout(pair):
    pm, emu = pair
    # 5000 samples x 0.3 ms = 1.5 s > the 1 s timeout: the driver must wait for it
    pm.averaging = 5000
    emu.power_source = lambda e: 1e-4
    assert pm.measure_power_w() == pytest.approx(1e-4)


def test_zero_and_sensor_info(pair):
    pm, emu = pair
    pm.zero(timeout_s=2.0)
    assert sent(emu)[:2] == [b"SENS:CORR:COLL:ZERO:INIT", ERR]
    assert set(sent(emu)[2:]) == {b"SENS:CORR:COLL:ZERO:STAT?"}
    emu.clear_received()
    info = pm.sensor_info()
    assert info["name"] == "S144C" and info["serial"] == "190523456"
    assert sent(emu) == [b"SYST:SENS:IDN?"]


def test_emulator_rejects_what_the_manual_rejects(pair):
    pm, _emu = pair
    # bypassing the driver's validator, the instrument itself refuses and reports -222
    with pytest.raises(InstrumentReportedError, match="-222"):
        pm.write("SENS:CORR:WAV 2000", idempotent=True)
    with pytest.raises(InstrumentReportedError, match="-113"):
        pm.write("SENS:BOGUS 1")
    with pytest.raises(LimitError):
        pm.wavelength_nm = float("nan")


# -- lab-config power_dbm limit on the range (W on the wire, dBm in the lab config) ------------


@pytest.fixture
def limited():
    with running(PM100DEmulator()) as emu:
        pm = ThorlabsPM100D(config("pm", "thorlabs_pm100d", emu.resource, timeout_s=1.0,
                                   limits=Limits.of(power_dbm=(-40.0, -10.0))))
        with pm:
            emu.clear_received()
            yield pm, emu


@pytest.mark.parametrize("range_w", [0.5, 1.01e-4, 9.9e-8])  # +27 dBm, -9.96 dBm, -40.04 dBm
def test_range_outside_the_power_dbm_limit_is_refused_before_any_byte(limited, range_w):
    pm, emu = limited
    with pytest.raises(LimitError, match=r"power_dbm.*test-lab\.toml") as ei:
        pm.range_w = range_w
    assert f"range_w ({range_w!r} W) in dBm = " in str(ei.value)
    assert emu.rx_bytes == 0
    assert emu.range_w == 5e-3 and emu.auto_range is True


@pytest.mark.parametrize("range_w", [1e-4, 1e-7, 5e-6])  # -10 dBm, -40 dBm (bounds), -23 dBm
def test_range_inside_the_power_dbm_limit_is_sent_in_watts(limited, range_w):
    pm, emu = limited
    pm.range_w = range_w
    assert sent(emu) == [f"SENS:POW:RANG:UPP {range_w:.12g}".encode(), ERR]
    assert emu.auto_range is False and emu.range_w >= range_w


@pytest.mark.parametrize("payload", [b"nan", b"inf", b"9.91E+37", b"2000"])
def test_sensor_range_that_is_not_a_range_is_refused_on_open(payload):
    """The sensor range bounds every wavelength setting: a NaN bound would disable it (r06)."""
    from qkd_hw.errors import InstrumentError

    with running(PM100DEmulator()) as emu:
        emu.inject("garble", match=r"WAV\? MIN", payload=payload, count=10)
        pm = ThorlabsPM100D(config("pm", "thorlabs_pm100d", emu.resource, timeout_s=1.0,
                                   retries=0))
        with pytest.raises(InstrumentError, match="WAV") as ei:
            pm.open()
        assert not isinstance(ei.value, LimitError)
        assert not pm.is_open and pm.wavelength_range_nm is None
