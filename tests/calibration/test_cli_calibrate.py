"""`qkd-hw calibrate NAME` on the shipped virtual lab: from an empty directory, record + PNG +
JSON keys; bad options and limits are one line, exit 2."""

from __future__ import annotations

import json

import h5py

from qkd_hw.cli.main import main


def test_calibrate_link_from_an_empty_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = main(["calibrate", "link", "--symbols", "30000", "--samples", "200000", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == (0 if out["passed"] else 1)
    for key in ("transmittance", "transmittance_std", "excess_noise_snu",
                "excess_noise_snu_std", "electronic_noise_snu", "electronic_noise_snu_std",
                "key_rate_bits_per_symbol"):
        assert key in out, key
    assert out["verdict"] in ("PASS", "FAIL") and out["checks"]
    d = tmp_path / "calibration"
    with h5py.File(d / "link.h5") as f:
        assert bool(f.attrs["complete"]) and f.attrs["utc_time"].endswith("Z")
        assert json.loads(f.attrs["results_json"])["transmittance"] == out["transmittance"]
    assert (d / "link.png").read_bytes()[:4] == b"\x89PNG"


def test_calibrate_noise_text_summary(tmp_path, capsys):
    assert main(["calibrate", "noise", "--out", str(tmp_path), "--samples", "100000"]) == 0
    text = capsys.readouterr().out
    assert "electronic_noise_snu" in text and "clearance_db" in text
    assert text.strip().splitlines()[-1] == "verdict: PASS"
    assert (tmp_path / "noise.png").exists() and (tmp_path / "noise.h5").exists()


def test_calibrate_refuses_a_bias_sweep_beyond_the_limit(tmp_path, capsys):
    rc = main(["calibrate", "bias", "--out", str(tmp_path), "--set", "bias_range_v=-12,12"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) <= 2
    assert "bias_v" in err and "-12" in err and "Traceback" not in err


def test_calibrate_unknown_option_is_one_line(capsys):
    assert main(["calibrate", "noise", "--set", "n_sample=5"]) == 2
    err = capsys.readouterr().err
    assert "n_sample" in err and "n_samples" in err and len(err.splitlines()) == 1


def test_calibrate_on_a_lab_config_without_virtual_table(tmp_path, capsys):
    # the client config of a running virtual lab reads like a real lab's: no [virtual], so
    # no truth to take the attenuation chain from
    from qkd_hw.lab import VirtualLab, example_path

    with VirtualLab(example_path(virtual=True)) as vlab:
        client = tmp_path / "client.toml"
        client.write_text(vlab.client_config_text)
        assert main(["calibrate", "modulation", "--lab", str(client),
                     "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "tap_db" in err and "--set" in err and "Traceback" not in err
        assert main(["calibrate", "noise", "--lab", str(client), "--out", str(tmp_path),
                     "--samples", "100000", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["electronic_noise_snu"] > 0
