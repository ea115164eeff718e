"""`qkd-hw postprocess`: JSON summary, files, exit 2 with one line on bad input.

Part A's reconciler is replaced by the test-only one (same interface) for these runs.
"""

from __future__ import annotations

import json
import math
import stat
import sys
import types
from pathlib import Path

import h5py
import numpy as np
import pytest

import qkd_hw.postprocessing as pp
from qkd_hw.cli.main import main
from qkd_hw.cli.postprocess import SUMMARY_KEYS
from qkd_hw.postprocessing.keyfile import read_key_file
from tests.qkd_hw.postprocessing import toy_reconcile
from tests.qkd_hw.postprocessing.helpers import make_raw_key


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "qkd_hw.postprocessing.reconcile", toy_reconcile)
    monkeypatch.setattr(pp, "reconcile", toy_reconcile, raising=False)


def test_json_summary_and_files(tmp_path: Path, toy: None, capsys) -> None:
    raw = make_raw_key(tmp_path / "raw.h5", 20_000)
    out = tmp_path / "KEY.h5"
    assert main(["postprocess", str(raw), "--out", str(out), "--json"]) == 0
    cap = capsys.readouterr()
    s = json.loads(cap.out)
    assert set(SUMMARY_KEYS) <= set(s)
    assert s["frames"] == 2 * 20_000 // 1024 and 0 < s["frames_kept"] <= s["frames"]
    assert s["frame_error_rate"] == pytest.approx(1 - s["frames_kept"] / s["frames"])
    assert s["keys_identical"] is True and s["final_key_bits"] > 0
    assert s["decoded_bits_per_second"] > 0 and s["seconds"] > 0
    # beta: key bits per value after leakage (7/8) over the capacity per real value
    assert s["beta"] == pytest.approx(0.875 / (0.5 * np.log2(1 + 0.5e4 / 1.01)), rel=1e-9)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert read_key_file(out)["bob"].shape == (s["final_key_bits"],)
    assert (tmp_path / "KEY.transcript.h5").is_file()
    assert cap.err == ""


def test_human_output_lists_the_summary(tmp_path: Path, toy: None, capsys) -> None:
    raw = make_raw_key(tmp_path / "raw.h5", 3_000)
    assert main(["postprocess", str(raw), "--out", str(tmp_path / "K.h5"),
                 "--transcript", str(tmp_path / "pub.h5")]) == 0
    text = capsys.readouterr().out
    for k in SUMMARY_KEYS:
        assert k in text
    assert (tmp_path / "pub.h5").is_file()


def _edit(path: Path, fn) -> Path:
    with h5py.File(path, "a") as f:
        fn(f)
    return path


def _nan_alice(f: h5py.File) -> None:
    a = f["alice/symbols"][()]
    a[17] = np.nan
    f["alice/symbols"][...] = a


def _short_alice(f: h5py.File) -> None:
    a = f["alice/symbols"][()]
    del f["alice/symbols"]
    f["alice/symbols"] = a[:-1]


def _nan_bob(f: h5py.File) -> None:
    b = f["bob/symbols"][()]
    b[3] = np.nan
    f["bob/symbols"][...] = b


def _real_alice(f: h5py.File) -> None:
    a = f["alice/symbols"][()]
    del f["alice/symbols"]
    f["alice/symbols"] = a.real


@pytest.mark.parametrize(("edit", "words"), [
    (lambda f: f.__delitem__("alice"), ["/alice", "alice"]),
    (_nan_alice, ["/alice/symbols", "non-finite", "17"]),
    (_short_alice, ["/alice/symbols", "length 2999", "3000"]),
    (_real_alice, ["/alice/symbols", "complex64"]),
    (_nan_bob, ["/bob/symbols", "non-finite"]),
])
def test_bad_raw_key_is_one_error_line(tmp_path: Path, toy: None, capsys, edit, words) -> None:
    raw = _edit(make_raw_key(tmp_path / "raw.h5", 3_000), edit)
    assert main(["postprocess", str(raw), "--out", str(tmp_path / "K.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(raw) in err
    for w in words:
        assert w in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.h5"]


def test_bad_arguments_exit_2(tmp_path: Path, toy: None, capsys) -> None:
    raw = make_raw_key(tmp_path / "raw.h5", 3_000)
    for argv, word in ((["--rate", "1.5"], "--rate"), (["--eps-pa", "0"], "--eps-pa"),
                       (["--transcript", str(raw)], "different files")):
        assert main(["postprocess", str(raw), "--out", str(tmp_path / "K.h5"), *argv]) == 2
        assert word in capsys.readouterr().err
    assert main(["postprocess", str(tmp_path / "missing.h5"), "--out",
                 str(tmp_path / "K.h5")]) == 2
    assert "no such file" in capsys.readouterr().err
    # a key that cannot be written is refused before the run: no transcript left behind
    assert main(["postprocess", str(raw), "--out", str(tmp_path / "no" / "K.h5"),
                 "--transcript", str(tmp_path / "T.h5")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "T.h5").exists()
    tiny = make_raw_key(tmp_path / "tiny.h5", 100)   # 200 values < one 1024-bit frame
    assert main(["postprocess", str(tiny), "--out", str(tmp_path / "K.h5")]) == 2
    assert "fewer than one frame" in capsys.readouterr().err
    assert not (tmp_path / "K.h5").exists()


def test_rate_option_reaches_the_code_choice(tmp_path: Path, toy: None, capsys) -> None:
    raw = make_raw_key(tmp_path / "raw.h5", 10_000)
    out = tmp_path / "K.h5"
    assert main(["postprocess", str(raw), "--out", str(out), "--rate", "0.75", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    p = read_key_file(out)["parameters"]
    assert p["code_rate"] == 0.75
    assert p["leak_ec_bits"] == s["frames_kept"] * 1024 // 4   # one parity per 4 bits


def test_rate_is_refused_when_the_code_cannot_be_chosen_by_rate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def choose_code(snr: float, *, frame_bits: int | None = None):
        return toy_reconcile.choose_code(snr, frame_bits=frame_bits)

    snr_only = types.SimpleNamespace(**{k: getattr(toy_reconcile, k) for k in (
        "BobReconciler", "AliceReconciler", "leakage_bits")}, choose_code=choose_code)
    monkeypatch.setitem(sys.modules, "qkd_hw.postprocessing.reconcile", snr_only)
    monkeypatch.setattr(pp, "reconcile", snr_only, raising=False)
    raw = make_raw_key(tmp_path / "raw.h5", 3_000)
    assert main(["postprocess", str(raw), "--out", str(tmp_path / "K.h5"), "--rate",
                 "0.5"]) == 2
    assert "no rate option" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.h5"]


def test_beta_is_refused_when_the_code_cannot_be_chosen_by_efficiency(
        tmp_path: Path, toy: None, capsys) -> None:
    raw = make_raw_key(tmp_path / "raw.h5", 3_000)
    assert main(["postprocess", str(raw), "--out", str(tmp_path / "K.h5"), "--beta",
                 "0.9"]) == 2
    assert "no beta option" in capsys.readouterr().err
    assert main(["postprocess", str(raw), "--out", str(tmp_path / "K.h5"), "--beta",
                 "1.2"]) == 2
    assert "--beta must be in (0, 1]" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.h5"]


def test_json_reports_the_adapted_code(tmp_path: Path, capsys) -> None:
    # the real reconciliation: snr ~0.79 per quadrature, the rate-0.1 mother (100 000 bits)
    # shortened to beta 0.2 (rate ~0.084); one frame
    raw = make_raw_key(tmp_path / "raw.h5", 50_000, va=5.0, T=0.5, xi=0.01, vel=0.1, eta=0.7)
    out = tmp_path / "K.h5"
    assert main(["postprocess", str(raw), "--out", str(out), "--rate", "0.1", "--beta", "0.2",
                 "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    c = 0.5 * np.log2(1 + read_key_file(out)["parameters"]["snr"])
    k, n = 10_000, 100_000
    short = math.ceil((k - 0.2 * c * n) / (1 - 0.2 * c))      # R_eff = (K - s)/(N - s) <= R
    short += (n - short) % 8                                    # N - s a multiple of 8
    assert (s["mother_rate"], s["code_length"], s["punctured"]) == (0.1, n, 0)
    assert s["shortened"] == short
    assert s["code_rate"] == (k - short) / (n - short) == pytest.approx(s["beta"] * c)
    assert s["frames"] == 1 and s["frames_kept"] == 1 and s["keys_identical"] is True
