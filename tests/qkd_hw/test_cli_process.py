"""`qkd-hw process`: JSON output, raw key, plots, lock failure exit code."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qkd_hw.cli.main import main
from qkd_hw.raw_key import read_raw_key
from qkd_hw.receiver import process_recording
from qkd_hw.trace_io import TraceReader, TraceWriter
from tests.conftest import REPO, SHARED_TRACES

REQUIRED = ("transmittance", "excess_noise_snu", "electronic_noise_snu", "t_eff", "snr",
            "frequency_offset_hz", "delay_samples", "key_rate_bits_per_symbol", "samples",
            "seconds", "transmittance_min", "excess_noise_max_snu", "lock", "n0_codes2")


def test_json_output_matches_library(capsys, tmp_path, monkeypatch):
    trace = SHARED_TRACES["basic"]
    out = tmp_path / "raw.h5"
    rc = main(["process", str(trace), "--json", "--pe-fraction", "0.4", "--seed", "5",
               "--out", str(out)])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    for k in REQUIRED:
        assert k in d, k
    assert d["locked"] is True
    ref = process_recording(trace, pe_fraction=0.4, seed=5)
    assert d["transmittance"] == pytest.approx(ref.estimates.transmittance, rel=1e-12)
    # --no-map reads the (contiguous, so otherwise mapped) signal: the same numbers
    def no_maps(*args, **kwargs):
        raise AssertionError("mapped despite --no-map")

    monkeypatch.setattr(TraceReader, "map_samples", no_maps)
    assert main(["process", str(trace), "--json", "--pe-fraction", "0.4", "--seed", "5",
                 "--no-map"]) == 0
    d_read = json.loads(capsys.readouterr().out)
    for k in ("transmittance", "excess_noise_snu", "electronic_noise_snu", "delay_samples"):
        assert d_read[k] == d[k], k
    assert d["excess_noise_snu"] == pytest.approx(ref.estimates.excess_noise_snu, rel=1e-12)
    assert d["samples"] == 1_005_234 + 2 * 1_000_000
    # the clock offset comes with its uncertainty and the probes that measured it; the
    # recording has no clock offset, so it is within 4 sd of 0
    assert d["clock_offset_ppm"] == ref.acquisition.clock_offset_ppm
    assert d["clock_probe_first_samples"] == [p[0] for p in ref.acquisition.clock_probes]
    assert len(d["clock_probe_first_samples"]) == 1
    assert 0 < d["clock_offset_std_ppm"] < 0.2
    assert abs(d["clock_offset_ppm"]) < 4 * d["clock_offset_std_ppm"]
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    raw = read_raw_key(out)
    assert raw.bob_symbols.shape[0] == d["n_key_symbols"]
    assert raw.pe_tx_index.shape[0] == d["n_pe_symbols"]


def test_human_output_and_plots(capsys, tmp_path):
    rc = main(["process", str(SHARED_TRACES["metro"]), "--plot", str(tmp_path / "plots"),
               "--phase-method", "kalman-rts"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "frequency offset" in text and "-17.00" in text
    assert re.search(r"\(linewidth ~1\d{3} Hz\)", text)   # metro: 1 kHz, measured
    assert re.search(r"clock offset [+-]\d\.\d{3} \+- \d\.\d{3} ppm \(1 late probe", text)
    for name in ("constellation.png", "pilot_phase.png", "spectrum.png"):
        data = (tmp_path / "plots" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def _no_pilot_trace(path):
    src = SHARED_TRACES["basic"]
    with TraceReader(src) as r:
        tx, fs, vpc = r.tx, r.sample_rate_hz, r.adc["signal"].volts_per_code
        shot, el, sym = r.read("shot_noise"), r.read("electronic_noise"), r.symbols()
    with TraceWriter(path, tx=tx, sample_rate_hz=fs, volts_per_code=vpc) as w:
        w.write_symbols(sym)
        w.append("signal", np.concatenate([shot, shot[:5234]]))
        w.append("shot_noise", shot)
        w.append("electronic_noise", el)


def test_lock_failure_exit_code_and_message(tmp_path, capsys):
    bad = tmp_path / "nopilot.h5"
    _no_pilot_trace(bad)
    rc = main(["process", str(bad), "--json", "--out", str(tmp_path / "raw.h5")])
    assert rc == 2
    cap = capsys.readouterr()
    assert "not locked" in cap.err and "pilot_snr_db" in cap.err
    d = json.loads(cap.out)
    assert d["locked"] is False and d["lock"]["pilot_snr_db"] < d["lock"]["pilot_snr_min_db"]
    assert "transmittance" not in d
    assert not (tmp_path / "raw.h5").exists()


def test_lock_failure_through_the_entry_point(tmp_path):
    bad = tmp_path / "nopilot.h5"
    _no_pilot_trace(bad)
    res = subprocess.run([sys.executable, "-m", "qkd_hw.cli.main", "process", str(bad)],
                         capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 2
    assert "pilot not found" in res.stderr and "Traceback" not in res.stderr
    assert res.stdout == ""


def test_bad_arguments(capsys):
    assert main(["process", str(SHARED_TRACES["basic"]), "--pe-fraction", "0"]) == 2
    assert "--pe-fraction" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["process", str(SHARED_TRACES["basic"]), "--phase-method", "magic"])


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if ".tmp" in p.name)


def test_plot_dir_is_a_regular_file(tmp_path, capsys):
    """--plot onto an existing regular file: one-line error naming it, exit 2, and nothing
    written (the check comes before processing, so no raw key is committed)."""
    not_a_dir = tmp_path / "notadir"
    not_a_dir.write_text("x\n")
    out = tmp_path / "raw.h5"
    rc = main(["process", str(SHARED_TRACES["basic"]), "--seed", "3", "--plot", str(not_a_dir),
               "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert str(not_a_dir) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert not_a_dir.read_text() == "x\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notadir"]
    # a plot directory below a regular file cannot be created either
    rc = main(["process", str(SHARED_TRACES["basic"]), "--seed", "3",
               "--plot", str(not_a_dir / "plots"), "--out", str(out)])
    assert rc == 2
    assert str(not_a_dir / "plots") in capsys.readouterr().err
    assert not out.exists()


def test_plot_target_is_a_directory(tmp_path, capsys):
    """A directory squatting on constellation.png: exit 2 naming it, no temporary file,
    no raw key and the squatter untouched."""
    plots = tmp_path / "plots"
    (plots / "constellation.png").mkdir(parents=True)
    out = tmp_path / "raw.h5"
    rc = main(["process", str(SHARED_TRACES["basic"]), "--seed", "3", "--plot", str(plots),
               "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert str(plots / "constellation.png") in err and "Traceback" not in err
    assert sorted(p.name for p in plots.iterdir()) == ["constellation.png"]
    assert (plots / "constellation.png").is_dir()
    assert not out.exists()


def test_plot_target_becomes_a_directory_during_processing(tmp_path, capsys, monkeypatch):
    """The squatter appears only after the up-front check (simulated by skipping it): the
    write itself fails cleanly, exit 2 naming the file, no temporary file left."""
    import qkd_hw.cli.process as cli_process

    monkeypatch.setattr(cli_process, "prepare_plot_dir", lambda d: d.mkdir(exist_ok=True))
    plots = tmp_path / "plots"
    (plots / "constellation.png").mkdir(parents=True)
    rc = main(["process", str(SHARED_TRACES["basic"]), "--seed", "3", "--plot", str(plots)])
    assert rc == 2
    err = capsys.readouterr().err
    assert str(plots / "constellation.png") in err and "Traceback" not in err
    assert sorted(p.name for p in plots.iterdir()) == ["constellation.png"]


def test_plot_write_failure_is_atomic(tmp_path, capsys, monkeypatch):
    """An OSError while a PNG is written (disk full, ...) is a one-line error naming the
    file; the temporary file is removed and no partial PNG appears under the final name."""
    from matplotlib.figure import Figure

    calls = []

    def failing_savefig(self, fname, *args, **kwargs):
        calls.append((str(fname), kwargs.get("format")))
        if len(calls) == 2:  # the second plot (pilot phase)
            with open(fname, "wb") as f:
                f.write(b"\x89PNG partial")
            raise OSError(28, "No space left on device")
        return original(self, fname, *args, **kwargs)

    original = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", failing_savefig)
    plots = tmp_path / "plots"
    rc = main(["process", str(SHARED_TRACES["basic"]), "--seed", "3", "--plot", str(plots)])
    assert rc == 2
    err = capsys.readouterr().err
    assert str(plots / "pilot_phase.png") in err and "No space left" in err
    assert len(calls) == 2
    # written under a temporary name beside the target, as PNG whatever that name ends in
    assert all(Path(f).parent == plots and Path(f).name != Path(f).name.split(".tmp")[0]
               for f, _ in calls)
    assert all(fmt == "png" for _, fmt in calls)
    assert sorted(p.name for p in plots.iterdir()) == ["constellation.png"]
    assert _leftovers(plots) == []


def test_seed_defaults_to_fresh_random(monkeypatch):
    """Without --seed the CLI passes seed=None (a fresh random disclosed subset per run,
    unknown to Eve beforehand), never a fixed public default; --seed is passed unchanged."""
    import qkd_hw.cli.main as cli_main
    import qkd_hw.cli.process as cli_process

    seen = []

    class StopError(Exception):
        pass

    def fake_process_recording(trace, **kwargs):
        seen.append(kwargs["seed"])
        raise StopError

    monkeypatch.setattr(cli_process, "process_recording", fake_process_recording)
    for argv, expected in ((["--pe-fraction", "0.5"], None), (["--seed", "0"], 0),
                           (["--seed", "17"], 17)):
        with pytest.raises(StopError):
            main(["process", str(SHARED_TRACES["basic"]), *argv])
        assert seen[-1] == expected
    args = cli_main.build_parser().parse_args(["process", "x.h5"])
    assert args.seed is None
    help_text = cli_main.build_parser()._subparsers._group_actions[0].choices["process"] \
        .format_help()
    assert "random" in help_text and "pe_seed" in help_text


def test_implausible_diagnostic_is_one_warning_line_and_in_the_json(capsys, monkeypatch):
    # a leakage floor above the excess noise's bound (a linewidth that cannot be right) is
    # reported as NaN with one stderr line, not a two-line Python warning
    from qkd_hw.receiver import estimate

    monkeypatch.setattr(estimate, "leakage_floor", lambda *a, **k: 2.46)
    code = main(["process", str(SHARED_TRACES["basic"]), "--json", "--seed", "1"])
    out, err = capsys.readouterr()
    assert code == 0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("qkd-hw process: warning: ")
    assert "pilot leakage floor 2.46 SNU" in lines[0]
    s = json.loads(out)
    assert s["pilot_leakage_floor_snu"] is None
    assert len(s["warnings"]) == 1 and "2.46" in s["warnings"][0]


def test_linewidth_below_resolution_is_a_bound_in_the_text():
    from qkd_hw.cli.process import _linewidth_text

    s = {"linewidth_hz": 0.19, "linewidth_resolution_hz": 0.29, "linewidth_below_resolution": True}
    assert _linewidth_text(s) == "< 0.29 Hz (below resolution)"
    s = {**s, "linewidth_hz": 31.0, "linewidth_resolution_hz": 48.3}
    assert _linewidth_text(s) == "< 48 Hz (below resolution)"
    assert _linewidth_text({**s, "linewidth_below_resolution": False}) == "~31 Hz"
