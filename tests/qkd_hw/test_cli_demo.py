"""`qkd-hw demo`: the whole chain on the virtual link lands on the simulator's truth."""

from __future__ import annotations

import json
import stat

import pytest

from qkd_hw.cli.main import main


def test_demo_json_matches_truth_and_writes_outputs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--symbols", "60000", "--seed", "3", "--json"]) == 0
    # strict JSON: NaN/Infinity (which json.loads would accept) must not appear
    report = json.loads(capsys.readouterr().out, parse_constant=_no_constant)
    assert report["truth_comparison"]["delay_samples"]["std"] is None
    cmp = report["truth_comparison"]
    # each deviation is (estimate - truth) / std with std from the estimator's own statistics
    # (see qkd_hw.cli.demo.comparison); |dev| < 5 fails with probability < 1e-6 per quantity
    # for an unbiased receiver.
    for name in ("transmittance", "excess_noise_snu", "electronic_noise_snu", "t_eff"):
        assert abs(cmp[name]["deviation_sigma"]) < 5, (name, cmp[name])
    assert cmp["frequency_offset_hz"]["estimate"] == pytest.approx(-17e6, abs=2e3)
    assert cmp["delay_samples"]["estimate"] == pytest.approx(2871.37, abs=0.2)
    raw = out / "demo-raw-key.h5"
    assert stat.S_IMODE(raw.stat().st_mode) == 0o600
    assert {p.rsplit("/", 1)[-1] for p in report["plots"]} >= {"constellation.png"}
    for p in report["plots"]:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_demo_rejects_bad_parameter(capsys):
    assert main(["demo", "--symbols", "60000", "--set", "transmitance=0.5"]) == 2
    err = capsys.readouterr().err
    assert "transmitance" in err and "transmittance" in err


def _no_constant(name):
    raise AssertionError(f"{name} in --json output: not JSON")


def test_demo_out_on_a_file_is_one_line_error(tmp_path, capsys):
    f = tmp_path / "a_file"
    f.write_text("keep")
    for out in (f, f / "sub"):
        assert main(["demo", "--out", str(out), "--symbols", "20000"]) == 2
        err = capsys.readouterr().err
        assert str(out) in err and "Traceback" not in err
    assert f.read_text() == "keep"
