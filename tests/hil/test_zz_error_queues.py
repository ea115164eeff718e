"""HIL, last (file order): every SCPI instrument's error queue is empty after the run.

The driver drains the queue when it opens (``SYST:ERR?`` until 0) and logs each stale entry
as a warning: those warnings are the errors the run left. Reading the queue removes what it
reads and changes no setting: read-only."""

from __future__ import annotations

import logging

import pytest

from drivers.base import create_instrument
from drivers.scpi import ScpiInstrument
from qkd_hw.labconfig import LabConfig

pytestmark = pytest.mark.hil


def test_error_queue_empty_after_the_run(lab: LabConfig, instrument_name: str,
                                         caplog: pytest.LogCaptureFixture):
    cfg = lab.instruments[instrument_name]
    try:
        inst = create_instrument(cfg)
    except Exception as exc:
        pytest.fail(f"{instrument_name}: error queue: cannot create the driver: {exc}",
                    pytrace=False)
    if not isinstance(inst, ScpiInstrument):
        pytest.skip(f"{instrument_name} ({cfg.driver}) has no SCPI error queue")
    try:
        with caplog.at_level(logging.WARNING), inst:
            errors = [r.getMessage() for r in caplog.records
                      if "error left in the queue" in r.getMessage()]
            errors += inst.read_error_queue(after="<HIL run>")
    except Exception as exc:
        pytest.fail(f"{instrument_name}: error queue: does not answer: {exc}", pytrace=False)
    assert not errors, f"{instrument_name} ({cfg.driver}): error queue not empty: {errors}"
