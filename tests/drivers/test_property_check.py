"""Property.check: every value a property cannot take is a LimitError naming the property,
the instrument and the value -- never a raw OverflowError/ValueError -- and nothing is sent."""

from __future__ import annotations

from typing import ClassVar

import pytest

from drivers.emulators.keysight_m8195a import M8195AEmulator
from drivers.emulators.thorlabs_pm100d import PM100DEmulator
from drivers.keysight_m8195a import KeysightM8195A
from drivers.scpi import ScpiProperty
from drivers.thorlabs_pm100d import ThorlabsPM100D
from qkd_hw.errors import LimitError
from qkd_hw.labconfig import Limits
from tests.drivers.scpi_helpers import config, running


class _PlainPM(ThorlabsPM100D):
    """Properties declared with a kind and no validator."""

    LIMITS: ClassVar[frozenset[str]] = ThorlabsPM100D.LIMITS
    plain_float = ScpiProperty("SENS:CORR:LOSS:INP:MAGN", float)
    plain_int = ScpiProperty("SENS:AVER:COUN", int)


@pytest.fixture
def pm():
    with running(PM100DEmulator()) as emu, _PlainPM(
            config("pm", "thorlabs_pm100d", emu.resource,
                   limits=Limits.of(power_dbm=(None, 10.0)))) as inst:
        emu.clear_received()
        yield inst, emu


@pytest.fixture
def awg():
    with running(M8195AEmulator()) as emu, KeysightM8195A(
            config("awg", "keysight_m8195a", emu.resource,
                   limits=Limits.of(amplitude_v=(None, 0.5)))) as inst:
        emu.clear_received()
        yield inst, emu


HUGE = 10**400  # a Python int no float can hold
GIANT = 10**5000  # an int Python cannot even print (4300-digit limit)


def _id(value: object) -> str | None:
    """Test ids: big ints by size (pytest would print them, and cannot for GIANT)."""
    if isinstance(value, int) and abs(value) > 2**64:
        return f"int{value.bit_length()}bits"
    return None


@pytest.mark.parametrize(
    ("prop", "value", "match"),
    [
        # float with Range validator and a lab limit (was: raw OverflowError)
        ("amplitude_v", HUGE, "OverflowError"),
        ("amplitude_v", -HUGE, "OverflowError"),
        ("amplitude_v", "0.5", "must be a number"),
        ("amplitude_v", float("nan"), "must be finite"),
        # dict kind (mnemonics)
        ("dac_mode", HUGE, "not one of"),
        ("dac_mode", ["dual"], "not one of"),
        # bool kind without validator
        ("output_enabled", "off", "True/False"),
        ("output_enabled", 2, "True/False"),
    ],
    ids=_id,
)
def test_awg_properties_refuse_with_a_limit_error(awg, prop, value, match):
    inst, emu = awg
    target = inst if prop == "dac_mode" else inst.channel(1)
    with pytest.raises(LimitError, match=match) as ei:
        setattr(target, prop, value)
    assert ei.value.instrument in ("awg", "awg.ch1") and prop in ei.value.message
    assert emu.rx_bytes == 0


@pytest.mark.parametrize(
    ("prop", "value", "match"),
    [
        # int with an integer Range
        ("averaging", GIANT, "averaging"),
        ("averaging", "12", "must be a number"),
        ("averaging", 2.5, "must be an integer"),
        ("averaging", float("inf"), "must be finite"),
        # float with a conversion to the limit's unit (W -> dBm)
        ("range_w", HUGE, "OverflowError"),
        # float / int kind without validator (were sent, or failed while formatting)
        ("plain_float", HUGE, "OverflowError"),
        ("plain_float", "abc", "must be a number"),
        ("plain_int", GIANT, r"<int of \d+ bits>"),
        ("plain_int", 2**63, "outside the instrument range"),
        ("plain_int", "7", "must be a number"),
        ("plain_int", 1.5, "must be an integer"),
        # bool kind without validator
        ("auto_range", "no", "True/False"),
    ],
    ids=_id,
)
def test_pm_properties_refuse_with_a_limit_error(pm, prop, value, match):
    inst, emu = pm
    with pytest.raises(LimitError, match=match) as ei:
        setattr(inst, prop, value)
    assert ei.value.instrument == "pm" and prop in ei.value.message
    assert len(str(ei.value)) < 400  # the value is shown shortened
    assert emu.rx_bytes == 0


def test_valid_values_still_pass(pm, awg):
    inst, emu = pm
    inst.plain_int = 7
    inst.auto_range = False
    assert emu.averaging == 7 and emu.auto_range is False
    a, aemu = awg
    a.channel(1).amplitude_v = 1 // 4 + 0.25  # float
    a.channel(1).output_enabled = 1
    assert aemu.amplitude[1] == 0.25 and aemu.output[1] is True
