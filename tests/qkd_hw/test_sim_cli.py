"""``qkd-hw simulate``: every parameter round-trips; bad input is exit 2 with nothing written."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest

from qkd_hw.cli.main import main
from qkd_hw.sim import SimParams
from qkd_hw.trace_io import TraceReader, read_truth

# a non-default value for every parameter
EVERY = {
    "detection": "homodyne", "transmittance": "0.3", "excess_noise_snu": "0.04",
    "electronic_noise_snu": "0.07", "modulation_variance_snu": "3.5", "efficiency": "0.65",
    "sample_rate_hz": "800e6", "symbol_rate_hz": "90e6", "rolloff": "0.35",
    "rrc_span_symbols": "24", "signal_frequency_hz": "140e6",
    "pilot_frequencies_hz": "270e6,35e6", "pilot_powers_dbsn": "15,9",
    "pilot_phases_rad": "0.5,-0.25", "frequency_offset_hz": "4e6", "linewidth_hz": "2500",
    "delay_samples": "1999.25", "tail_samples": "5000", "clock_offset_ppm": "-12.5",
    "adc_dtype": "int16", "adc_bits": "14", "adc_shot_noise_rms_codes": "120",
    "adc_full_scale_vpp": "0.8", "shot_noise_samples": "123457",
    "electronic_noise_samples": "54321",
    "lead_samples": "1000", "preamble_kind": "noise", "preamble_samples": "500",
    "preamble_power_dbsn": "25", "pilot_gate": "data",
}


def test_every_parameter_is_covered():
    assert set(EVERY) == set(SimParams.names())
    d, e = SimParams(), SimParams(**EVERY)
    for k in EVERY:  # and every value differs from the default
        if k != "adc_dtype":  # int16 here (14 bits); the others in test_other_adc_dtypes
            assert getattr(e, k) != getattr(d, k), k


def test_simulate_round_trips_every_parameter(tmp_path, capsys):
    out = tmp_path / "rt.h5"
    argv = ["simulate", str(out), "--symbols", "3000", "--seed", "42", "--json"]
    for k, v in EVERY.items():
        argv += ["--set", f"{k}={v}"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    expected = SimParams(**EVERY)
    truth = read_truth(out)
    assert SimParams.from_truth(truth) == expected
    assert report["params"] == expected.to_json()
    assert report["output"]["seed"] == 42 and report["output"]["n_symbols"] == 3000
    assert truth.extra["seed"] == 42 and truth.extra["n_symbols"] == 3000
    assert truth.t_eff == pytest.approx(math.sqrt(0.65 * 0.3))  # homodyne: eta T
    assert truth.delay_samples == 1999.25 and truth.frequency_offset_hz == 4e6
    with TraceReader(out) as rd:
        tx = rd.tx
        assert (tx.detection, tx.symbol_rate_hz, tx.rolloff, tx.signal_frequency_hz) == \
            ("homodyne", 90e6, 0.35, 140e6)
        assert tx.pilot_frequencies_hz == (270e6, 35e6)
        assert (tx.modulation_variance_snu, tx.efficiency, tx.n_symbols) == (3.5, 0.65, 3000)
        assert rd.sample_rate_hz == 800e6
        assert rd.adc["signal"].volts_per_code == pytest.approx(0.8 / 2 ** 14)
        assert rd.adc["shot_noise"].length == 123457
        assert rd.adc["electronic_noise"].length == 54321
        assert rd.adc["signal"].length == expected.signal_samples(3000)
        shot = rd.read("shot_noise").astype(float)
    # the ADC gain: shot capture rms = sigma_shot * sqrt(1 + v_el) (quantisation included)
    assert shot.std() == pytest.approx(120 * math.sqrt(1.07), rel=0.01)


@pytest.mark.parametrize("dtype, bits, rms", [("float32", 16, 40.0), ("int8", 8, 6.0)])
def test_other_adc_dtypes(tmp_path, dtype, bits, rms):
    out = tmp_path / "d.h5"
    assert main(["simulate", str(out), "--symbols", "2000", "--seed", "1",
                 "--set", f"adc_dtype={dtype}", "--set", f"adc_bits={bits}",
                 "--set", f"adc_shot_noise_rms_codes={rms}", "--set", "pilot_powers_dbsn=6",
                 "--set", "electronic_noise_snu=0.2"]) == 0
    with TraceReader(out) as rd:
        assert rd.adc["signal"].dtype == np.dtype(dtype)
    assert SimParams.from_truth(read_truth(out)).adc_dtype == dtype


BAD = [
    (["--set", "foo=1"], "unknown simulator parameter 'foo'; allowed: detection, "),
    (["--set", "transmittance=abc"], "transmittance: cannot interpret 'abc' as a number"),
    (["--set", "transmittance=1.5"], "transmittance = 1.5 is out of range; allowed (0, 1]"),
    (["--set", "rolloff=0"], "sinc"),
    (["--set", "detection=intradyne"], "detection must be one of ['heterodyne', 'homodyne']"),
    (["--set", "pilot_frequencies_hz=200e6"], "overlaps the quantum band"),
    (["--set", "signal_frequency_hz=460e6"], "must lie inside (0, 500) MHz"),
    (["--set", "pilot_frequencies_hz=250e6,250e6"], "repeat"),
    (["--set", "pilot_powers_dbsn=10,12"], "pilot_powers_dbsn needs 1 entry (one per pilot"),
    (["--set", "electronic_noise_snu=8e-4"], "below 0.000884 SNU, the least the ADC allows"),
    (["--set", "adc_bits=17"], "adc_bits = 17 is out of range; allowed [2, 16] for adc_dtype"),
    (["--set", "shot_noise_samples=1.5"], "shot_noise_samples: cannot interpret '1.5'"),
    (["--set", "transmittance"], "--set expects name=value"),
    (["--set", "linewidth_hz=1", "--set", "linewidth_hz=2"], "set twice"),
    (["--set", "tail_samples=10"], "tail_samples=10 is shorter than half the pulse"),
]


@pytest.mark.parametrize("extra, message", BAD)
def test_bad_parameters_exit_2_and_write_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "bad.h5"
    rc = main(["simulate", str(out), "--symbols", "100", "--seed", "1", *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err
    assert err.count("\n") == 1  # one line, no traceback
    assert list(tmp_path.iterdir()) == []


def test_console_script_exit_code_and_argparse_errors(tmp_path):
    exe = shutil.which("qkd-hw")
    cmd = [exe] if exe else [sys.executable, "-m", "qkd_hw.cli.main"]
    out = tmp_path / "x.h5"
    res = subprocess.run([*cmd, "simulate", str(out), "--symbols", "100", "--seed", "1",
                          "--set", "nope=3"], capture_output=True, text=True)
    assert res.returncode == 2 and "unknown simulator parameter 'nope'" in res.stderr
    assert "Traceback" not in res.stderr
    res = subprocess.run([*cmd, "simulate", str(out), "--symbols", "0", "--seed", "1"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "must be >= 1" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_list_params(capsys):
    assert main(["simulate", "--list-params"]) == 0
    text = capsys.readouterr().out
    for name in SimParams.names():
        assert name in text
