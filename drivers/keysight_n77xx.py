"""Keysight N7761A / N7762A / N7764A variable optical attenuators (1, 2, 4 channels; SCPI).

Protocol: Keysight "N7700A/N776xA Programming Guide" -- the VOA command set is the one of the
8163A/B, 8164A/B, 8166A/B mainframe attenuator modules ("8163A/B, 8164A/B & 8166A/B
Mainframes Programming Guide", section "Signal Conditioning: The INPut and OUTput commands").
Commands used here (``n`` = channel 1..N):

==========================================  =================================================
``:INPut<n>:ATTenuation <dB>`` / ``?``        attenuation factor, dB (``? MIN|MAX``: range)
``:INPut<n>:OFFSet <dB>`` / ``?``             attenuation offset, dB (-200..200)
``:INPut<n>:WAVelength <value>NM`` / ``?``    wavelength for the calibration; the query
                                              answers in metres (``+1.55000000E-006``)
``:OUTPut<n>:STATe ON|OFF`` / ``?``           shutter (``OFF`` = output blocked), ``1``/``0``
``*OPC?``                                     settled (attenuation filter moved)
``:SYSTem:ERRor?``                            error queue
==========================================  =================================================

Attenuation factor and offset (manual, ``:INPut:ATTenuation`` / ``:INPut:OFFSet``): the
attenuation factor set and read with ``:INP:ATT`` is ``alpha = alpha_filter + alpha_offset``.
The light only sees ``alpha_filter``; the offset (to account for external losses) "does not
affect the filter attenuation" -- changing it moves the attenuation factor, not the filter.
``ATT? MIN`` (= ``DEF``) is the value where ``alpha_filter = 0 dB`` (the offset), ``ATT? MAX``
the value where the filter is at its greatest: the allowed range moves with the offset.

Safety: the lab config's ``attenuation_db`` interval (typically a minimum so that the receiver's
detector is never over-driven) bounds the *filter* attenuation ``alpha - alpha_offset``, the
one that reaches the light. Setting :attr:`VoaChannel.attenuation_db` first reads the offset
and the range (``OFFS?``, ``ATT? MIN``, ``ATT? MAX``; read-only queries, in the same transaction
as the setting, so an offset changed from the front panel or by ``OFFS:DISP`` is seen) and
checks the instrument range and the limit before the setting is sent. Setting the offset needs
no check: it leaves the filter where it is. :meth:`set_attenuation` waits for ``*OPC?`` so the
attenuation is in effect when it returns.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from drivers.base import Range, no_read_abort
from drivers.scpi import ScpiChannel, ScpiInstrument, ScpiProperty, format_number, parse_float
from qkd_hw.errors import LimitError, ProtocolError

__all__ = ["KeysightN77xxVoa", "VoaChannel"]

CHANNELS_BY_MODEL = {"N7761A": 1, "N7762A": 2, "N7764A": 4}


def _metres_to_nm(text: str) -> float:
    return parse_float(text) * 1e9


def _nm_with_unit(value: float) -> str:
    return f"{format_number(float(value))}NM"


class _AttenuationFactor(ScpiProperty):
    """``:INP<n>:ATT``: checked against the range and offset read from the instrument."""

    def __set__(self, inst: VoaChannel, value: Any) -> None:
        value = self.check(inst, value)  # a finite number; no I/O yet
        inst._set_attenuation_factor(self, value)


class VoaChannel(ScpiChannel):
    """One attenuator channel."""

    attenuation_db = _AttenuationFactor(
        ":INP{ch}:ATT", float, unit="dB", validator=Range(),
        doc="Attenuation factor alpha = filter attenuation + offset. Instrument range: "
            "``ATT? MIN`` (filter at 0 dB, = the offset) .. ``ATT? MAX``, read before each "
            "setting. Lab-config limit ``attenuation_db`` on the filter attenuation "
            "(alpha - offset).")
    offset_db = ScpiProperty(
        ":INP{ch}:OFFS", float, unit="dB", validator=Range(-200.0, 200.0),
        doc="Attenuation offset added to the filter attenuation. Changing it moves the "
            "attenuation factor, not the filter (manual), so the lab limit is not involved.")
    wavelength_nm = ScpiProperty(
        ":INP{ch}:WAV", float, unit="nm", limit="wavelength_nm",
        validator=Range(1260.0, 1640.0), parse=_metres_to_nm, formatter=_nm_with_unit,
        doc="Wavelength the attenuation is calibrated for.")
    output_enabled = ScpiProperty(":OUTP{ch}:STAT", bool,
                                  doc="Shutter open (True) or closed (False).")

    parent: KeysightN77xxVoa

    def filter_attenuation_db(self) -> float:
        """The attenuation the light sees (without insertion loss): ``ATT?`` - ``OFFS?``."""
        with self.parent.transaction():
            return (self.query_value(":INP{ch}:ATT?", parse_float)
                    - self.query_value(":INP{ch}:OFFS?", parse_float))

    def _set_attenuation_factor(self, prop: ScpiProperty, value: float) -> None:
        what = f"{type(self).__name__}.attenuation_db"
        with self.parent.transaction():
            offset = self.query_value(":INP{ch}:OFFS?", parse_float)
            lo = self.query_value(":INP{ch}:ATT? MIN", parse_float)
            hi = self.query_value(":INP{ch}:ATT? MAX", parse_float)
            if not lo <= hi:
                raise ProtocolError(f"attenuation range {lo:g}..{hi:g} dB is not a range",
                                    instrument=self.name, command=f":INP{self.ch}:ATT? MIN/MAX")
            if not lo <= value <= hi:
                raise LimitError(
                    f"{what} = {value!r} dB outside the instrument range [{lo:g}, {hi:g}] "
                    f"(ATT? MIN/MAX with offset {offset:g} dB); nothing was sent",
                    instrument=self.name)
            self.check_limit("attenuation_db", value - offset, unit="dB",
                             what=f"{what} = {value!r} dB with offset {offset:g} dB: filter "
                                  f"attenuation")
            prop._write(self, value)

    def set_attenuation(self, value_db: float, *, wait: bool = True) -> None:
        """Set the attenuation and (by default) wait until the filter has settled."""
        with self.parent.transaction():
            self.attenuation_db = value_db
            if wait:
                self.parent.opc()


class KeysightN77xxVoa(ScpiInstrument):
    """Keysight N7761A/N7762A/N7764A. ``voa.channel(1).attenuation_db = 20``."""

    MODEL = "Keysight N776xA VOA"
    LIMITS: ClassVar[frozenset[str]] = frozenset({"attenuation_db", "wavelength_nm"})
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
        """Close every shutter (safe state). Ctrl-C waits until all are closed."""
        with self.transaction(), no_read_abort():
            for ch in range(1, self.n_channels + 1):
                self.channel(ch).output_enabled = False
