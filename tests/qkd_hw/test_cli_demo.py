"""`qkd-hw demo`: the whole link on the virtual lab, from an empty directory, lands on the
virtual lab's truth and leaves the report folder."""

from __future__ import annotations

import json
import stat
import tomllib

import h5py

from qkd_hw.cli.main import SUBCOMMANDS, main
from tests.conftest import REPO


def _no_constant(name):
    raise AssertionError(f"{name} in --json output: not JSON")


def test_demo_json_from_an_empty_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--symbols", "40000", "--noise-samples", "200000", "--seed", "3",
                 "--json"]) == 0
    # strict JSON: NaN/Infinity (which json.loads would accept) must not appear
    report = json.loads(capsys.readouterr().out, parse_constant=_no_constant)
    cmp = report["truth_comparison"]
    # (estimate - truth) / std, std from the estimators' statistics (calibration.link);
    # |dev| < 5 fails with probability < 1e-6 per quantity for an unbiased receiver
    for name in ("transmittance", "excess_noise_snu", "electronic_noise_snu",
                 "electronic_noise_snu (noise calibration)"):
        assert abs(cmp[name]["deviation_sigma"]) < 5, (name, cmp[name])
    assert cmp["transmittance"]["truth"] == 10 ** -0.5     # fiber_loss_db = 5, VOA 0 dB
    assert cmp["excess_noise_snu"]["truth"] == 0.02
    out = tmp_path / "qkd-hw-demo"
    assert stat.S_IMODE((out / "link-raw-key.h5").stat().st_mode) == 0o600
    for name in ("noise.h5", "modulation.h5", "link.h5"):
        with h5py.File(out / name) as f:
            assert bool(f.attrs["complete"]), name
    assert {p.rsplit("/", 1)[-1] for p in report["plots"]} >= {"constellation.png",
                                                                "link.png"}
    for p in report["plots"]:
        with open(tmp_path / p if not p.startswith("/") else p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # the finite-size rate of 4e4 symbols is negative: the demo says which block would do
    assert report["key_rate"]["finite_size_bits_per_symbol"] < 0
    assert report["key_rate"]["block_needed_symbols"] >= 10 ** 6
    assert report["timing"]["receiver_msps"] > 0


def test_demo_text_explains_the_key_rate_and_ends_with_a_verdict(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--symbols", "20000",
                 "--noise-samples", "100000"]) == 0
    text = capsys.readouterr().out
    assert "negative at this block size" in text and "gives a key from blocks of" in text
    assert text.strip().splitlines()[-1].startswith("verdict: ")
    assert "0 MSa/s" not in text


def test_demo_rejects_bad_parameter(capsys):
    assert main(["demo", "--symbols", "60000", "--set", "excess_noise=0.5"]) == 2
    err = capsys.readouterr().err
    assert "excess_noise" in err and "excess_noise_snu" in err and len(err.splitlines()) == 1


def test_demo_out_on_a_file_is_one_line_error(tmp_path, capsys):
    f = tmp_path / "a_file"
    f.write_text("keep")
    for out in (f, f / "sub"):
        assert main(["demo", "--out", str(out), "--symbols", "20000"]) == 2
        err = capsys.readouterr().err
        assert str(out) in err and "Traceback" not in err
    assert f.read_text() == "keep"


def test_readme_first_command_installs_and_runs_the_demo():
    # the first command a newcomer meets (issue 14): the first indented code line of the
    # README, and the console script it names leads to this subcommand
    lines = (REPO / "README.md").read_text().splitlines()
    first = next(s.strip() for s in lines if s.startswith("    ") and s.strip())
    assert first == "pip install -e . && qkd-hw demo"
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["qkd-hw"] == "qkd_hw.cli.main:main"
    assert "demo" in SUBCOMMANDS
