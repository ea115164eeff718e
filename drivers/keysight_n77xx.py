"""Keysight N7761A / N7762A / N7764A variable optical attenuators (1, 2, 4 channels; SCPI).

Protocol: Keysight "N7700A/N776xA Programming Guide" -- the VOA command set is the one of the
8163A/B, 8164A/B, 8166A/B mainframe attenuator modules ("8163A/B, 8164A/B & 8166A/B
Mainframes Programming Guide", section "Signal Conditioning: The INPut and OUTput commands").
Commands used here (``n`` = channel 1..N):

==========================================  =================================================
``:INPut<n>:ATTenuation <dB>`` / ``?``        attenuation factor, dB (``? MIN|MAX``)
``:INPut<n>:OFFSet <dB>`` / ``?``             attenuation offset, dB
``:INPut<n>:WAVelength <value>NM`` / ``?``    wavelength for the calibration; the query
                                              answers in metres (``+1.55000000E-006``)
``:OUTPut<n>:STATe ON|OFF`` / ``?``           shutter (``OFF`` = output blocked), ``1``/``0``
``*OPC?``                                     settled (attenuation filter moved)
``:SYSTem:ERRor?``                            error queue
==========================================  =================================================

Safety: the lab config's ``attenuation_db`` interval (typically a minimum so that the receiver's
detector is never over-driven) is checked before anything is sent. :meth:`set_attenuation`
waits for ``*OPC?`` so the attenuation is in effect when it returns.
"""

from __future__ import annotations

import re
from typing import ClassVar

from drivers.base import Range
from drivers.scpi import ScpiChannel, ScpiInstrument, ScpiProperty, format_number, parse_float
from qkd_hw.errors import ProtocolError

__all__ = ["KeysightN77xxVoa", "VoaChannel"]

CHANNELS_BY_MODEL = {"N7761A": 1, "N7762A": 2, "N7764A": 4}


def _metres_to_nm(text: str) -> float:
    return parse_float(text) * 1e9


def _nm_with_unit(value: float) -> str:
    return f"{format_number(float(value))}NM"


class VoaChannel(ScpiChannel):
    """One attenuator channel."""

    attenuation_db = ScpiProperty(
        ":INP{ch}:ATT", float, unit="dB", limit="attenuation_db", validator=Range(0.0, 45.0),
        doc="Attenuation factor (filter attenuation + offset).")
    offset_db = ScpiProperty(":INP{ch}:OFFS", float, unit="dB", validator=Range(-200.0, 200.0),
                             doc="Attenuation offset added to the filter attenuation.")
    wavelength_nm = ScpiProperty(
        ":INP{ch}:WAV", float, unit="nm", limit="wavelength_nm",
        validator=Range(1260.0, 1640.0), parse=_metres_to_nm, formatter=_nm_with_unit,
        doc="Wavelength the attenuation is calibrated for.")
    output_enabled = ScpiProperty(":OUTP{ch}:STAT", bool,
                                  doc="Shutter open (True) or closed (False).")

    parent: KeysightN77xxVoa

    def set_attenuation(self, value_db: float, *, wait: bool = True) -> None:
        """Set the attenuation and (by default) wait until the filter has settled."""
        with self.parent.transaction():
            self.attenuation_db = value_db
            if wait:
                self.parent.opc()


class KeysightN77xxVoa(ScpiInstrument):
    """Keysight N7761A/N7762A/N7764A. ``voa.channel(1).attenuation_db = 20``."""

    MODEL = "Keysight N776xA VOA"
    IDN_PATTERN: ClassVar[str] = r"^\s*(Keysight|Agilent) Technologies\s*,\s*N776[124]A\s*,"

    n_channels: int = 0

    def _setup(self) -> None:
        m = re.search(r"N776[124]A", self.identity or "")
        if m is None:  # cannot happen after IDN_PATTERN matched
            raise ProtocolError("model missing in *IDN?", instrument=self.name,
                                reply=self.identity)
        self.n_channels = CHANNELS_BY_MODEL[m.group(0)]
        self._channels = {i: VoaChannel(self, i) for i in range(1, self.n_channels + 1)}

    def channel(self, ch: int) -> VoaChannel:
        if not self.n_channels:
            from qkd_hw.errors import InstrumentStateError

            raise InstrumentStateError("open the VOA first (channel count comes from *IDN?)",
                                       instrument=self.name)
        if ch not in self._channels:
            raise ValueError(f"channel must be 1..{self.n_channels}, got {ch!r}")
        return self._channels[ch]

    def block_all(self) -> None:
        """Close every shutter (safe state)."""
        with self.transaction():
            for ch in range(1, self.n_channels + 1):
                self.channel(ch).output_enabled = False
