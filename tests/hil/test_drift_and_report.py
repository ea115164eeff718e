"""Drift against stored runs, the history file, ``qkd-hw hil report`` and the ``[hil]`` /
``[virtual.faults]`` tables. Not marked ``hil``: no lab of the night is involved."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from calibration.hil.checks import drift_problem, evaluate
from calibration.hil.history import HistoryError, append_run, read_history
from calibration.hil.report import series
from qkd_hw.cli.main import main
from qkd_hw.errors import ConfigError
from qkd_hw.lab import example_path
from qkd_hw.labconfig import Threshold, lab_config_to_toml, parse_lab_config_text

HIL = Path(__file__).parent
REPO = HIL.parent.parent
TEMP = Threshold(min=15.0, max=40.0, baseline=25.0, tolerance=3.0)


def _night(day: int, value: float) -> dict:
    return {"utc": f"2026-12-0{day}T02:00:00Z", "lab": "virtual", "config": "lab.toml",
            "read_only": True, "tests": {}, "safe_state": {},
            "quantities": {"lo_laser.module_temperature_c": {
                "value": value, "unit": "degC", "threshold": vars(TEMP) | {}, "problems": []}}}


def test_drift_alarm_inside_the_absolute_range():
    nights = [("n1", 22.0), ("n2", 22.8), ("n3", 23.6), ("n4", 24.4)]
    # 25.2: inside [15, 40] and inside baseline 25 +- 3, but 3.2 above night 1
    assert TEMP.problem(25.2) is None
    alarm = drift_problem(25.2, nights, 3.0)
    assert alarm is not None and "+3.2" in alarm and "n1" in alarm
    assert drift_problem(25.2, nights[1:], 3.0) is None  # 2.4 above night 2: no alarm
    assert drift_problem(25.2, [], 3.0) is None


def test_evaluate_names_the_quantity_value_and_range():
    c = evaluate("detector.temperature_c", 85.0, "degC",
                 {"detector.temperature_c": Threshold(15.0, 45.0, 31.5, 3.0)}, [], 7, "det")
    assert c.message == ("detector (det): temperature_c = 85 degC (allowed [15, 45], baseline "
                         "31.5 +- 3): above the maximum 45")
    missing = evaluate("detector.temperature_c", 31.5, "degC", {}, [], 7)
    assert "no threshold" in missing.message and "[hil.detector]" in missing.message


def test_history_round_trip_and_bad_line(tmp_path: Path):
    path = tmp_path / "h.jsonl"
    assert read_history(path) == []
    append_run(path, _night(1, 22.0))
    append_run(path, _night(2, 22.8))
    assert [r["utc"][:10] for r in read_history(path)] == ["2026-12-01", "2026-12-02"]
    with path.open("a") as fh:
        fh.write('{"utc": "x"\n')
    with pytest.raises(HistoryError, match=r"h\.jsonl:3: not a JSON line"):
        read_history(path)


@pytest.mark.slow
def test_creeping_quantity_raises_the_alarm_and_the_report_shows_it(tmp_path: Path, capsys):
    history = tmp_path / "history.jsonl"
    for day, value in enumerate((22.0, 22.8, 23.6, 24.4), 1):
        append_run(history, _night(day, value))
    lab = tmp_path / "lab.toml"
    lab.write_text(example_path(virtual=True).read_text()
                   + "\n[virtual.faults.laser_lo]\nreadings = { module_temperature_c = 25.2 }\n")
    test = "test_instrument_health.py::test_laser_temperature_and_wavelength"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "calibration.hil.plugin", "-q",
         "-p", "no:cacheprovider", f"--lab={lab}", f"--hil-history={history}", "--read-only",
         str(HIL / test)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert ("lo_laser (laser_lo): module_temperature_c = 25.2 degC (allowed [15, 40], "
            "baseline 25 +- 3): drift: moved by +3.2 since 2026-12-01T02:00:00Z"
            in proc.stdout), proc.stdout[-2000:]
    assert "1 failed, 1 passed" in proc.stdout  # the signal laser did not move
    runs = read_history(history)
    assert len(runs) == 5
    pts = series(runs, "lo_laser.module_temperature_c")
    assert [v for _, v, _ in pts] == pytest.approx([22.0, 22.8, 23.6, 24.4, 25.2])
    assert pts[-1][2][0].startswith("drift")

    out = tmp_path / "report"
    assert main(["hil", "report", str(history), "--out", str(out)]) == 0
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "lo_laser.module_temperature_c.png" in pngs
    assert len(pngs) == len({k for r in runs for k in r["quantities"]})
    assert all((out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    summary = (out / "summary.md").read_text()
    row = next(line for line in summary.splitlines()
               if line.startswith("| lo_laser.module_temperature_c |"))
    assert "| 25.2 | degC | 24.4 | DRIFT (drift: moved by +3.2" in row
    assert "5 runs" in summary
    capsys.readouterr()
    assert main(["hil", "report", str(history), "--out", str(out), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["runs"] == 5 and sorted(Path(q).name for q in d["plots"]) == pngs


def test_report_of_a_bad_history_is_one_error_line(tmp_path: Path, capsys):
    bad = tmp_path / "h.jsonl"
    bad.write_text(json.dumps({"utc": "2026-12-01T00:00:00Z"}) + "\n")
    assert main(["hil", "report", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "h.jsonl:1: not a HIL run" in err[0]
    assert main(["hil", "report", str(tmp_path / "none.jsonl"), "--out",
                 str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r" / "summary.md").exists()


def test_hil_and_faults_tables_parse_and_write_back():
    text = example_path(virtual=True).read_text() + (
        "\n[virtual.faults.detector]\nanswers = false\nreadings = { temperature_c = 85.0 }\n")
    cfg = parse_lab_config_text(text)
    assert cfg.hil is not None and cfg.hil.drift_nights == 7
    assert cfg.hil.thresholds["detector.temperature_c"] == Threshold(15.0, 45.0, 31.5, 3.0)
    assert cfg.faults["detector"].answers is False
    assert dict(cfg.faults["detector"].readings) == {"temperature_c": 85.0}
    again = parse_lab_config_text(lab_config_to_toml(cfg))
    assert again.hil == cfg.hil
    assert {n: (f.answers, dict(f.readings)) for n, f in again.faults.items()} == \
        {"detector": (False, {"temperature_c": 85.0})}


@pytest.mark.parametrize(("extra", "error"), [
    ("[hil.detector]\ntemperature_c = { max = 1.0, maxi = 2.0 }\n",
     r"unknown key 'hil\.detector\.temperature_c\.maxi'"),
    ("[hil.detector]\ntemperature_c = { tolerance = 0.0 }\n",
     r"hil\.detector\.temperature_c\.tolerance must be > 0"),
    ("[hil.detector]\ntemperature_c = { min = 5.0, max = 1.0 }\n", r"min 5 > max 1"),
    ("[virtual.faults.nosuch]\nanswers = false\n", r"virtual\.faults\.nosuch: no instrument"),
    ("[virtual.faults.detector]\nanswers = 0\n", r"answers must be true or false"),
])
def test_bad_hil_or_fault_tables_are_config_errors(extra: str, error: str):
    text = example_path(virtual=True).read_text().split("\n[hil]")[0] + "\n" + extra
    with pytest.raises(ConfigError, match=error):
        parse_lab_config_text(text)
