"""DspLockError keeps its reason apart from the metrics appended to its message."""

from __future__ import annotations

from dsp.errors import DspLockError


def test_reason_survives_a_reraise_with_more_metrics():
    exc = DspLockError("synchronisation failed (second attempt)", {"sync_pslr": 1.5})
    assert exc.reason == "synchronisation failed (second attempt)"
    assert str(exc) == "synchronisation failed (second attempt) (sync_pslr=1.5)"
    # what acquire() does when sync fails: the pilot metrics join the sync ones; parsing the
    # message (split at " (") cut the reason at its own parenthesis
    again = DspLockError(exc.reason, {"pilot_snr_db": 30.0, **exc.metrics})
    assert str(again) == ("synchronisation failed (second attempt) "
                          "(pilot_snr_db=30, sync_pslr=1.5)")


def test_reason_without_metrics_is_the_message():
    exc = DspLockError("pilot not found")
    assert exc.reason == str(exc) == "pilot not found" and exc.metrics == {}
