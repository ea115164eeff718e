"""`qkd-hw keyrate`: JSON/table output, finite-size options, errors, plot."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import pytest

from qkd_hw.cli.main import main
from qkd_hw.keyrate import asymptotic_key_rate, finite_size_key_rate

EXAMPLE = ["--modulation-variance", "5", "--transmittance", "0.5", "--excess-noise", "0.02",
           "--efficiency", "0.7", "--electronic-noise", "0.05", "--beta", "0.95",
           "--detection", "heterodyne"]
PARAMS = dict(modulation_variance_snu=5.0, transmittance=0.5, excess_noise_snu=0.02,
              efficiency=0.7, electronic_noise_snu=0.05, beta=0.95, detection="heterodyne")


def run(capsys, *argv):
    code = main(["keyrate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_asymptotic(capsys):
    code, out, _ = run(capsys, *EXAMPLE, "--json")
    assert code == 0
    d = json.loads(out)  # exactly one JSON object
    ref = asymptotic_key_rate(**PARAMS)
    assert d["key_rate_bits_per_symbol"] == ref.key_rate_bits_per_symbol
    assert d["i_ab"] == ref.i_ab and d["chi_be"] == ref.chi_be
    assert d["key_rate_bits_per_symbol"] == pytest.approx(0.95 * d["i_ab"] - d["chi_be"])
    for k, v in PARAMS.items():
        assert d[k] == v
    assert d["block_size"] is None and d["secure"] is True
    assert d["channel_loss_db"] == pytest.approx(10 * math.log10(2))
    assert 0.02 < d["max_tolerable_excess_noise_snu"] < 1


def test_json_finite_size(capsys):
    code, out, _ = run(capsys, *EXAMPLE, "--block-size", "1e9", "--pe-fraction", "0.1",
                       "--eps-pe", "1e-9", "--json")
    assert code == 0
    d = json.loads(out)
    ref = finite_size_key_rate(**PARAMS, block_size=10**9, n_pe=2 * 10**8, eps_pe=1e-9)
    assert d["n_pe"] == 2 * 10**8 and d["n_key"] == 9 * 10**8 and d["eps_pe"] == 1e-9
    assert d["key_rate_bits_per_symbol"] == ref.key_rate_bits_per_symbol
    assert d["key_rate_bits_per_symbol"] < d["asymptotic_key_rate_bits_per_symbol"]
    assert d["eps_pa"] == d["eps_bar"] == 1e-10


def test_json_maps_infinities_to_null(capsys):
    code, out, _ = run(capsys, *EXAMPLE, "--block-size", "40", "--n-pe", "20", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["key_rate_bits_per_symbol"] is None and d["secure"] is False


def test_table_and_distance(capsys):
    argv = list(EXAMPLE)
    k = argv.index("--transmittance")
    argv[k:k + 2] = ["--distance-km", "25"]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert "K = secret key rate" in out and "25 km at 0.2 dB/km" in out
    ref = asymptotic_key_rate(**{**PARAMS, "transmittance": 10 ** (-0.5)})
    assert f"{ref.key_rate_bits_per_symbol:.6f} bit/symbol" in out


@pytest.mark.parametrize("flag,value,needle", [
    ("--transmittance", "-0.5", "transmittance"),
    ("--efficiency", "1.2", "efficiency"),
    ("--electronic-noise", "-1", "electronic_noise"),
    ("--beta", "1.5", "beta"),
])
def test_bad_values_exit_2_with_named_error(capsys, flag, value, needle):
    argv = list(EXAMPLE)
    argv[argv.index(flag) + 1] = value
    code, out, err = run(capsys, *argv, "--json")
    assert code == 2 and out == ""
    assert needle in err and "Traceback" not in err


def test_unknown_detection_and_bad_counts_are_usage_errors(capsys):
    argv = list(EXAMPLE)
    argv[argv.index("--detection") + 1] = "intradyne"
    with pytest.raises(SystemExit) as info:
        main(["keyrate", *argv])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["keyrate", *EXAMPLE, "--block-size", "1.5e3x"])
    code, _, err = run(capsys, *EXAMPLE, "--block-size", "1000", "--pe-fraction", "1.5")
    assert code == 2 and "pe-fraction" in err


def test_plot_written_atomically(capsys, tmp_path):
    png = tmp_path / "rate.png"
    code, out, _ = run(capsys, *EXAMPLE, "--block-size", "1e8", "--plot", str(png),
                       "--max-distance-km", "60", "--json")
    assert code == 0 and json.loads(out)["plot"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["rate.png"]
    code, _, err = run(capsys, *EXAMPLE, "--plot", str(tmp_path / "missing" / "x.png"))
    assert code == 2 and "cannot write plot" in err


def test_entry_point_subprocess():
    exe = shutil.which("qkd-hw")
    cmd = [exe] if exe else [sys.executable, "-m", "qkd_hw.cli.main"]
    res = subprocess.run([*cmd, "keyrate", *EXAMPLE, "--json"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["key_rate_bits_per_symbol"] == pytest.approx(
        asymptotic_key_rate(**PARAMS).key_rate_bits_per_symbol, rel=1e-15)


def test_finite_size_options_without_block_size_are_refused(capsys):
    # they would be silently ignored by the asymptotic rate
    for opt in (["--eps-pe", "1e-5"], ["--eps-pa", "1e-5"], ["--eps-bar", "1e-5"]):
        assert main(["keyrate", *EXAMPLE, *opt]) == 2
        assert opt[0] in capsys.readouterr().err
