"""Archive mode (`qkd-hw process --archive DIR --summary OUT`) on a local Dask cluster.

The reference is the receiver run on each file one by one in this process with the same seed:
the archive must give the same estimates (same data, same disclosed subset), keep a corrupted
and a truncated file as error rows next to the others, and skip on a re-run what is done.
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import pytest

from qkd_hw.archive import COLUMNS, read_summary, write_summary
from qkd_hw.cli.main import main
from qkd_hw.receiver import process_recording
from qkd_hw.sim.params import SimParams
from qkd_hw.sim.simulate import simulate_recording

pytest.importorskip("dask.distributed", reason="archive extra (pip install -e '.[archive]')")

SEED = 11
#: ~1e5 signal samples each (10 samples per symbol), short noise captures
SMALL = {"shot_noise_samples": 100_000, "electronic_noise_samples": 100_000}
COMPARED = ("transmittance", "excess_noise_snu", "electronic_noise_snu", "t_eff", "n_pe",
            "key_rate_bits_per_symbol")


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("archive")
    for i, (t, xi) in enumerate([(0.5, 0.02), (0.3, 0.05), (0.6, 0.01)]):
        simulate_recording(d / f"rec{i}.h5", SimParams(transmittance=t, excess_noise_snu=xi,
                                                       **SMALL),
                           seed=20 + i, n_symbols=10_000, truth_phase=False)
    (d / "sub").mkdir()
    (d / "sub" / "corrupt.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 40)
    data = (d / "rec0.h5").read_bytes()
    (d / "truncated.h5").write_bytes(data[:len(data) // 2])
    return d


def _rows(path: Path) -> dict[str, dict]:
    return {Path(r["file"]).name: r for r in read_summary(path)}


def test_archive_matches_one_by_one_and_keeps_bad_files(archive, tmp_path, capsys):
    out = tmp_path / "summary.csv"
    code = main(["process", "--archive", str(archive), "--summary", str(out),
                 "--seed", str(SEED), "--workers", "2"])
    err = capsys.readouterr().err
    assert code == 2   # two recordings failed, each named
    rows = _rows(out)
    assert set(rows) == {"rec0.h5", "rec1.h5", "rec2.h5", "corrupt.h5", "truncated.h5"}
    for name in ("corrupt.h5", "truncated.h5"):
        assert rows[name]["status"] == "error"
        assert name in rows[name]["error"] and "TraceFormatError" in rows[name]["error"]
        assert f"{name}: FAILED" in err
        assert rows[name]["transmittance"] is None
    for i in range(3):
        one = process_recording(archive / f"rec{i}.h5", seed=SEED).summary()
        row = rows[f"rec{i}.h5"]
        assert row["status"] == "ok" and row["error"] == ""
        assert row["pe_seed"] == SEED
        for k in COMPARED:   # CSV keeps repr precision: the same numbers
            assert row[k] == one[k], k
    # three different links: the estimates are each file's own
    assert len({rows[f"rec{i}.h5"]["transmittance"] for i in range(3)}) == 3


def test_archive_resumes_and_writes_hdf5(archive, tmp_path, capsys):
    # an HDF5 summary inside the archive folder is not taken for a recording on the re-run
    out = archive / "summary.h5"
    assert main(["process", "--archive", str(archive), "--summary", str(out),
                 "--seed", str(SEED), "--workers", "2"]) == 2
    first = _rows(out)
    # a row already ok is not processed again: mark one, the mark must survive the re-run
    rows = read_summary(out)
    for r in rows:
        if r["file"].endswith("rec1.h5"):
            r["transmittance"] = 0.123
    write_summary(out, rows)
    capsys.readouterr()
    assert main(["process", "--archive", str(archive), "--summary", str(out),
                 "--seed", str(SEED), "--workers", "2"]) == 2
    again = _rows(out)
    assert "summary.h5" not in again
    assert again["rec1.h5"]["transmittance"] == 0.123
    assert again["rec0.h5"] == first["rec0.h5"]
    # only the failed ones were tried again
    out_lines = capsys.readouterr().out
    assert "rec0.h5: ok" not in out_lines and "rec1.h5" not in out_lines
    assert again["corrupt.h5"]["status"] == "error"
    out.unlink()   # the folder is shared by the module's tests


def test_summary_round_trip_csv_and_hdf5(tmp_path):
    rows = [{**dict.fromkeys(COLUMNS), "file": "/a,b \"q\".h5", "status": "ok", "error": "",
             "pe_seed": 2**62 + 1, "samples": 10, "transmittance": 0.1 + 0.2, "n_pe": 7},
            {**dict.fromkeys(COLUMNS), "file": "/c.h5", "status": "error",
             "error": "TraceFormatError: /c.h5: bad\nline"}]
    for name in ("s.csv", "s.h5"):
        write_summary(tmp_path / name, rows)
        back = read_summary(tmp_path / name)
        assert back[0]["file"] == rows[0]["file"] and back[0]["pe_seed"] == 2**62 + 1
        assert back[0]["transmittance"] == 0.1 + 0.2 and back[0]["n_pe"] == 7
        assert back[1]["error"] == rows[1]["error"] and back[1]["transmittance"] is None
    with open(tmp_path / "s.csv", newline="") as f:
        assert next(csv.reader(f)) == list(COLUMNS)


def test_summary_with_other_extension_or_foreign_file_is_one_error_line(archive, tmp_path,
                                                                           capsys):
    bad = tmp_path / "summary.txt"
    assert main(["process", "--archive", str(archive), "--summary", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "summary.txt" in err[0] and ".csv" in err[0]
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("a,b\n1,2\n")
    assert main(["process", "--archive", str(archive), "--summary", str(foreign)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "foreign.csv" in err[0]
    assert foreign.read_text() == "a,b\n1,2\n"


def test_without_dask_the_command_says_how_to_install_it(archive, tmp_path, capsys,
                                                          monkeypatch):
    # None in sys.modules makes `import dask.distributed` raise ImportError, as when the
    # archive extra is not installed
    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    out = tmp_path / "summary.csv"
    assert main(["process", "--archive", str(archive), "--summary", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install -e ".[archive]"' in err[0]
    assert not out.exists()


def test_local_cluster_on_loopback_only_and_an_existing_scheduler(archive, tmp_path):
    psutil = pytest.importorskip("psutil")
    from qkd_hw.archive import connect

    one = tmp_path / "one"
    one.mkdir()
    shutil.copyfile(archive / "rec2.h5", one / "rec2.h5")
    client, cluster = connect("local", 1)
    try:
        procs = [psutil.Process(), *psutil.Process().children(recursive=True)]
        listening = {c.laddr.ip for p in procs for c in p.net_connections("inet")
                     if c.status == psutil.CONN_LISTEN}
        # --scheduler ADDRESS: the tasks go to that (already running) cluster
        out = tmp_path / "s.csv"
        assert main(["process", "--archive", str(one), "--summary", str(out), "--seed",
                     str(SEED), "--scheduler", cluster.scheduler_address]) == 0
    finally:
        client.close()
        cluster.close()
    assert listening and listening <= {"127.0.0.1", "::1"}
    row = _rows(out)["rec2.h5"]
    assert row["transmittance"] == process_recording(one / "rec2.h5",
                                                     seed=SEED).summary()["transmittance"]


def test_archive_folder_missing_is_one_error_line(tmp_path, capsys):
    assert main(["process", "--archive", str(tmp_path / "nope"), "--summary",
                 str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]


def test_process_needs_a_trace_or_an_archive(archive, tmp_path, capsys):
    assert main(["process"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TRACE.h5" in err[0] and "--archive" in err[0]
    rec = str(archive / "rec0.h5")
    assert main(["process", rec, "--archive", str(archive), "--summary",
                 str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not both" in err[0]
    assert main(["process", "--archive", str(archive)]) == 2
    assert "--summary" in capsys.readouterr().err
