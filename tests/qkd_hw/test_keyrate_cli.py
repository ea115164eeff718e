"""`qkd-hw keyrate`: JSON/table output, finite-size options, errors, plot."""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import subprocess
import sys
import warnings

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


def _subprocess(*argv):
    exe = shutil.which("qkd-hw")
    cmd = [exe] if exe else [sys.executable, "-m", "qkd_hw.cli.main"]
    return subprocess.run([*cmd, "keyrate", *argv], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args,needle", [
    # printed 15 numpy warning lines before the error
    (["--modulation-variance", "1e300"], "modulation_variance_snu must be in (0, 10000]"),
    # K 1.2e-14 > I_AB and "secure": true (the 80 dB floor bypassed through eta)
    (["--transmittance", "1e-8", "--efficiency", "1e-8", "--excess-noise", "0",
      "--electronic-noise", "0", "--beta", "1"], "efficiency * transmittance"),
    (["--excess-noise", "1e300"], "excess_noise_snu must be in [0, 1e+06]"),   # K NaN
    (["--electronic-noise", "1e300"], "electronic_noise_snu must be in [0, 1e+06]"),
    # a numpy overflow warning, then "transmittance must be in (0, 1], got 0.0"
    (["--distance-km", "10", "--loss-db-per-km", "1e308"], "--loss-db-per-km"),
    (["--distance-km", "1e300"], "--distance-km 1e+300"),
])
def test_extremes_are_one_error_line_exit_2(capsys, args, needle):
    opts = dict(zip(EXAMPLE[::2], EXAMPLE[1::2], strict=True))
    if "--distance-km" in args:
        del opts["--transmittance"]
    for k, v in zip(args[::2], args[1::2], strict=True):
        opts[k] = v
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run(capsys, *[x for kv in opts.items() for x in kv], "--json")
    assert code == 2 and out == "" and not caught
    lines = err.splitlines()
    assert len(lines) == 1 and needle in lines[0], err


def test_huge_modulation_variance_end_to_end():
    # the installed entry point: stderr is exactly the one error line
    res = _subprocess(*EXAMPLE, "--modulation-variance", "1e300")
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == ("qkd-hw keyrate: error: modulation_variance_snu must be in (0, 10000], "
                          "got 1e+300 (beyond it float64 loses the symplectic eigenvalues' "
                          "precision)\n")


def test_plot_refuses_to_replace_a_fifo(capsys, tmp_path):
    # the plot was written under a temporary name and renamed over the FIFO
    fifo = tmp_path / "rate.png"
    os.mkfifo(fifo)
    code, out, err = run(capsys, *EXAMPLE, "--plot", str(fifo))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and f"cannot write plot {fifo}" in err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["rate.png"]


@pytest.mark.parametrize("args", [
    ["--modulation-variance", "1e4", "--transmittance", "1", "--excess-noise", "0"],
    ["--transmittance", "1e-8", "--efficiency", "1", "--block-size", "1e12"],
    ["--excess-noise", "1e6", "--electronic-noise", "1e6"],
    ["--block-size", "10", "--n-pe", "2"],        # no key certified: -inf rate
    ["--block-size", "9e15", "--eps-pe", "1e-300", "--eps-pa", "1e-300", "--eps-bar", "1e-300"],
])
def test_json_is_strict_at_the_extremes(capsys, args):
    opts = dict(zip(EXAMPLE[::2], EXAMPLE[1::2], strict=True))
    for k, v in zip(args[::2], args[1::2], strict=True):
        opts[k] = v
    code, out, _ = run(capsys, *[x for kv in opts.items() for x in kv], "--json")
    assert code == 0

    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    d = json.loads(out, parse_constant=refuse)
    k = d["key_rate_bits_per_symbol"]
    assert d["secure"] == (k is not None and k > d["rounding_error_bits"])
    if d["chi_be"] is not None:
        assert d["chi_be"] >= 0 and k <= d["beta"] * d["i_ab"]


def test_table_says_why_a_positive_rate_is_no_key(capsys):
    # homodyne at the 80 dB floor, at the excess noise where the rate vanishes: float64 gives
    # K = +3.8e-16 (exact: -1.0e-14), inside its rounding error
    from qkd_hw.keyrate import max_tolerable_excess_noise

    kw = dict(modulation_variance_snu=10.0, transmittance=1e-8, efficiency=1.0,
              electronic_noise_snu=0.0, beta=0.95, detection="homodyne")
    xi0 = max_tolerable_excess_noise(**kw)
    code, out, _ = run(capsys, "--modulation-variance", "10", "--transmittance", "1e-8",
                       "--efficiency", "1", "--electronic-noise", "0", "--beta", "0.95",
                       "--detection", "homodyne", "--excess-noise", repr(xi0))
    assert code == 0 and "(no secret key: within its rounding error" in out


def test_huge_pe_count_message_stays_short(capsys):
    code, _, err = run(capsys, *EXAMPLE, "--block-size", "1e9", "--n-pe", "1e300")
    assert code == 2 and "n_pe must be <= 2^63 - 1" in err and len(err) < 200
