"""SCPI emulator framing: a definite block whose last data byte is '\\r' (0x0D) right before
the message terminator keeps that byte (the AWG segment of a random waveform ends in int8
code 13 in about 1 % of uploads; the emulator used to strip it as a CR of a CRLF
terminator and refused the block: -160 "block length n-1 != n")."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.emulators.keysight_m8195a import M8195AEmulator
from drivers.keysight_m8195a import KeysightM8195A
from tests.drivers.scpi_helpers import config, running


@pytest.mark.parametrize("last", [13, 10, 35])   # '\r', '\n', '#'
def test_block_ending_in_a_terminator_byte_uploads_intact(last: int) -> None:
    with running(M8195AEmulator()) as emu:
        awg = KeysightM8195A(config("awg", "keysight_m8195a", emu.resource, timeout_s=2.0))
        with awg:
            codes = (np.arange(1280) % 100 - 50).astype(np.int8)
            codes[-1] = last
            codes[511] = 13          # also the last byte of the first chunk
            awg.channel(1).upload(codes, segment=1, chunk_samples=512)
        assert bytes(emu.segments[1][1]) == codes.view(np.uint8).tobytes()


def test_text_message_with_crlf_still_loses_the_cr() -> None:
    with running(M8195AEmulator()) as emu:
        awg = KeysightM8195A(config("awg", "keysight_m8195a", emu.resource, timeout_s=2.0))
        with awg:
            awg.write(":VOLT1:AMPL 0.25\r")
            assert awg.channel(1).amplitude_v == pytest.approx(0.25)
