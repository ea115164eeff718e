"""The HIL suite run against virtual labs aged on purpose (``[virtual]`` and
``[virtual.faults.<instrument>]``): exactly the checks of the broken part fail, their messages
name the instrument and the quantity, and every other instrument ends in its safe state.

Each run is the plugin's suite in a subprocess (``pytest -p calibration.hil.plugin --lab
aged.toml --junitxml ... --hil-history ...``), read back from the JUnit XML the scheduler reads
and from the history line the run appended. Not marked ``hil``: the nightly run (``-m hil``)
does not start these virtual labs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from calibration.hil.history import read_history
from qkd_hw.lab import example_path

HIL = Path(__file__).parent
SUITE = [str(HIL / f) for f in ("test_instrument_health.py", "test_lab_health.py",
                                "test_link_health.py", "test_zz_error_queues.py")]
REPO = HIL.parent.parent


def _aged(tmp: Path, replace: dict[str, str], extra: str = "") -> Path:
    """The shipped virtual lab with ``replace`` applied to its text and ``extra`` appended."""
    text = example_path(virtual=True).read_text()
    for old, new in replace.items():
        assert old in text, old  # the example changed: update the aged lab
        text = text.replace(old, new)
    path = tmp / "aged.toml"
    path.write_text(text + extra)
    return path


def _run_suite(tmp: Path, lab: Path, *extra: str) -> tuple[dict[str, str], dict]:
    """Run the suite on ``lab``; ``({test id: failure message}, history record)``."""
    junit, history = tmp / "hil.xml", tmp / "history.jsonl"
    cmd = [sys.executable, "-m", "pytest", "-p", "calibration.hil.plugin", "-m", "hil",
           "-q", "-p", "no:cacheprovider", f"--lab={lab}", f"--junitxml={junit}",
           f"--hil-history={history}", *extra, *SUITE]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert junit.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    failed = {}
    for case in ET.parse(junit).iter("testcase"):
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is not None:
            module = case.get("classname", "").rsplit(".", 1)[-1]
            failed[f"{module}::{case.get('name')}"] = (bad.get("message") or "") + (
                bad.text or "")
    lines = history.read_text().splitlines()
    assert len(lines) == 1
    return failed, json.loads(lines[0])


@pytest.mark.slow
def test_aged_detector_drifted_bias_and_laser_off_wavelength(tmp_path: Path):
    lab = _aged(tmp_path, {
        "electronic_noise_snu = 0.1   #": "electronic_noise_snu = 0.2   #",
        "detector_imbalance = 0.01 ": "detector_imbalance = 0.2 ",
        "bias_v_offset_v = 0.7 ": "bias_v_offset_v = 3.0 ",
    }, extra="""
[virtual.faults.detector]
readings = { temperature_c = 85.0 }

[virtual.faults.laser_lo]
readings = { wavelength_offset_pm = 250.0 }
""")
    failed, run = _run_suite(tmp_path, lab)
    assert set(failed) == {
        "test_instrument_health::test_detector_temperature",
        "test_instrument_health::test_detector_photocurrents_and_balance",
        "test_instrument_health::test_bias_lock_working_point_and_tap_power",
        "test_instrument_health::test_laser_temperature_and_wavelength[lo_laser]",
        "test_link_health::test_noise_levels_and_clearance",
        "test_link_health::test_short_link_run",  # its v_el: the detector's noise
    }, failed
    msg = failed
    assert "detector (detector): temperature_c = 85 degC" in msg[
        "test_instrument_health::test_detector_temperature"]
    assert "detector (detector): imbalance = 0.2" in msg[
        "test_instrument_health::test_detector_photocurrents_and_balance"]
    assert "bias_controller (bias_i): bias_voltage_v = 8" in msg[
        "test_instrument_health::test_bias_lock_working_point_and_tap_power"]
    laser = msg["test_instrument_health::test_laser_temperature_and_wavelength[lo_laser]"]
    assert "lo_laser (laser_lo): wavelength_offset_pm = 250 pm" in laser
    assert "module_temperature_c" not in laser  # its temperature is fine
    noise = msg["test_link_health::test_noise_levels_and_clearance"]
    assert "noise: electronic_noise_snu = " in noise  # 0.2 +- its sd
    assert "SNU (allowed [0, 0.15], baseline 0.1 +- 0.02): above the maximum 0.15" in noise
    assert "noise: clearance_db" in noise
    assert "link: electronic_noise_snu" in msg["test_link_health::test_short_link_run"]
    q = run["quantities"]
    assert q["signal_laser.wavelength_offset_pm"]["problems"] == []
    assert run["safe_state"] == {name: "ok" for name in run["safe_state"]}
    assert len(run["safe_state"]) == 9


@pytest.mark.slow
def test_instrument_that_does_not_answer(tmp_path: Path):
    lab = _aged(tmp_path, {}, extra="""
[virtual.faults.power_meter]
answers = false
""")
    failed, run = _run_suite(tmp_path, lab)
    assert set(failed) == {
        "test_lab_health::test_instrument_answers_identifies_and_is_left_unchanged"
        "[power_meter]",
        "test_zz_error_queues::test_error_queue_empty_after_the_run[power_meter]",
        "test_link_health::test_short_link_run",  # the V_A calibration reads the power meter
    }, failed
    assert "power_meter (thorlabs_pm100d at " in failed[
        "test_lab_health::test_instrument_answers_identifies_and_is_left_unchanged"
        "[power_meter]"]
    assert "does not answer" in failed[
        "test_lab_health::test_instrument_answers_identifies_and_is_left_unchanged"
        "[power_meter]"]
    assert "power_meter" in failed["test_link_health::test_short_link_run"]
    safe = run["safe_state"]
    assert safe.pop("power_meter").startswith("not made safe")
    assert safe == {name: "ok" for name in safe} and len(safe) == 8


def test_read_only_runs_only_what_changes_nothing(tmp_path: Path):
    lab = _aged(tmp_path, {}, extra="""
[virtual.faults.laser_tx]
readings = { module_temperature_c = 70.0 }
""")
    failed, run = _run_suite(tmp_path, lab, "--read-only")
    assert set(failed) == {
        "test_instrument_health::test_laser_temperature_and_wavelength[signal_laser]"}
    assert "signal_laser (laser_tx): module_temperature_c = 70 degC" in next(
        iter(failed.values()))
    changing = {t for t in run["tests"] if "link_health" in t or "power_follows" in t}
    assert changing and all(run["tests"][t] == "skipped" for t in changing)
    assert run["read_only"] and run["safe_state"] == {}  # nothing changed: nothing switched off


INTERRUPTED = '''
import pytest

from drivers.base import create_instrument


@pytest.mark.hil
@pytest.mark.changes_state
def test_left_lasers_on_then_ctrl_c(hil):
    for role in ("lo_laser", "signal_laser"):  # behind the session's back: no restore
        with create_instrument(hil.lab.role(role)) as laser:
            laser.emission = True
    raise KeyboardInterrupt
'''


def test_interrupted_run_ends_with_every_instrument_safe(tmp_path: Path):
    (tmp_path / "test_interrupted.py").write_text(INTERRUPTED)
    history = tmp_path / "history.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "calibration.hil.plugin", "-q",
         "-p", "no:cacheprovider", f"--hil-history={history}", f"--rootdir={tmp_path}",
         str(tmp_path / "test_interrupted.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "KeyboardInterrupt" in proc.stdout, proc.stdout[-2000:]
    (run,) = read_history(history)
    assert run["safe_state"] == {name: "ok" for name in run["safe_state"]}
    assert {"laser_lo", "laser_tx"} <= set(run["safe_state"])


BOGUS = '''
import pytest

from drivers.base import create_instrument


@pytest.mark.hil
def test_leave_an_error_in_the_voa_queue(lab):
    with create_instrument(lab.role("voa")) as voa:
        voa.write(":BOGUS:COMMAND 1", check_errors=False)
'''


def test_error_left_in_a_queue_fails_that_instrument_only(tmp_path: Path):
    (tmp_path / "test_a_bogus.py").write_text(BOGUS)
    junit = tmp_path / "hil.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "calibration.hil.plugin", "-q",
         "-p", "no:cacheprovider", f"--junitxml={junit}", f"--rootdir={tmp_path}",
         str(tmp_path / "test_a_bogus.py"), str(HIL / "test_zz_error_queues.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    failed = {c.get("name"): c.find("failure").get("message")
              for c in ET.parse(junit).iter("testcase") if c.find("failure") is not None}
    assert list(failed) == ["test_error_queue_empty_after_the_run[voa]"], failed
    assert "voa (keysight_n77xx): error queue not empty" in failed[
        "test_error_queue_empty_after_the_run[voa]"]
