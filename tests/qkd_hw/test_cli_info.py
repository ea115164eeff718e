"""`qkd-hw info`: summary of a recording (and of a raw-key file), exit 2 on a bad file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from qkd_hw.cli.main import main
from qkd_hw.raw_key import REQUIRED_ESTIMATES
from qkd_hw.trace_io import ADC_DATASETS, RawKey, write_raw_key


def test_info_json_matches_raw_h5py(shared_traces, capsys):
    path = shared_traces["metro"]
    assert main(["info", str(path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    with h5py.File(path, "r") as f:
        assert d["format"] == f.attrs["format"]
        assert d["format_version"] == f.attrs["format_version"]
        assert d["description"] == f.attrs["description"]
        for name in ADC_DATASETS:
            ds = f["adc"][name]
            a = d["adc"][name]
            assert a["length"] == ds.shape[0]
            assert a["dtype"] == str(ds.dtype)
            assert a["sample_rate_hz"] == ds.attrs["sample_rate_hz"]
            assert a["duration_s"] == pytest.approx(ds.shape[0] / ds.attrs["sample_rate_hz"])
        tx = f["tx"].attrs
        for k in ("symbol_rate_hz", "rolloff", "signal_frequency_hz", "modulation_variance_snu",
                  "efficiency", "detection"):
            assert d["tx"][k] == tx[k], k
        assert d["tx"]["pilot_frequencies_hz"] == [tx["pilot_frequency_hz"]]
        assert d["tx"]["n_symbols"] == f["tx/symbols"].shape[0]
        assert d["has_truth"] == ("truth" in f)
        assert d["samples_per_symbol"] == pytest.approx(
            f["adc/signal"].attrs["sample_rate_hz"] / tx["symbol_rate_hz"])
        assert d["size_bytes"] == path.stat().st_size
        symbols = f["tx/symbols"][:3]
    text = json.dumps(d)
    for s in symbols:  # no key-like data in the summary
        assert f"{s.real:.4f}"[:6] not in text


def test_info_text_and_verify_via_entry_point(shared_traces):
    res = subprocess.run([sys.executable, "-m", "qkd_hw.cli.main", "info",
                          str(shared_traces["basic"]), "--verify"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "qkd-trace version 1" in out and "heterodyne" in out
    with h5py.File(shared_traces["basic"], "r") as f:
        n_signal = f["adc/signal"].shape[0]
    assert f"{n_signal} samples" in out
    assert "truth: present" in out and "verify:" in out


def test_info_bad_file_exit_2_one_line(tmp_path, shared_traces, capsys):
    p = tmp_path / "bad.h5"
    shutil.copyfile(shared_traces["pristine"], p)
    with h5py.File(p, "r+") as f:
        f["tx"].attrs["detection"] = "foo"
    assert main(["info", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert str(p) in err and "'detection' of /tx" in err and "foo" in err
    assert main(["info", str(tmp_path / "missing.h5"), "--json"]) == 2
    assert "missing.h5: no such file" in capsys.readouterr().err


def test_info_verify_finds_nan(tmp_path, capsys):
    from tests.qkd_hw.trace_helpers import write_raw_trace

    p = tmp_path / "f.h5"
    data = write_raw_trace(p, dtype="float32")
    sig = data["signal"].copy()
    sig[123] = np.nan
    with h5py.File(p, "r+") as f:
        f["adc/signal"][...] = sig
    assert main(["info", str(p)]) == 0  # metadata is fine
    capsys.readouterr()
    assert main(["info", str(p), "--verify"]) == 2
    assert "index 123" in capsys.readouterr().err


def test_info_on_raw_key_shows_counts_not_symbols(tmp_path, capsys):
    p = tmp_path / "key.h5"
    sym = np.full(50, 123.456 + 654.321j, np.complex64)
    est = {k: 0.5 for k in REQUIRED_ESTIMATES}
    write_raw_key(p, RawKey(est, sym, np.arange(50), np.arange(50, 60)))
    assert main(["info", str(p), "--json"]) == 0
    out = capsys.readouterr().out
    d = json.loads(out)
    assert d["n_key_symbols"] == 50 and d["n_pe_symbols"] == 10 and d["mode"] == "0o600"
    assert d["estimates"] == est
    assert "123.4" not in out and "654.3" not in out


def test_info_json_is_strict_with_non_finite_extra_estimates(tmp_path, capsys):
    # the reader keeps extra /estimates attributes as read, NaN included; JSON has no NaN
    import h5py

    p = tmp_path / "key.h5"
    est = {k: 0.5 for k in REQUIRED_ESTIMATES}
    write_raw_key(p, RawKey(est, np.ones(5, np.complex64), np.arange(5), np.arange(5, 8)))
    with h5py.File(p, "a") as f:
        f["estimates"].attrs["t_eff_upper"] = np.nan
    assert main(["info", str(p), "--json"]) == 0

    def no_constant(name):
        raise AssertionError(f"{name} in --json output")
    d = json.loads(capsys.readouterr().out, parse_constant=no_constant)
    assert d["estimates"]["t_eff_upper"] is None and d["estimates"]["snr"] == 0.5
