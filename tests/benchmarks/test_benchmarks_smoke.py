"""Smoke tests of the benchmark scripts: each script's core and its CLI run on tiny recordings
(seconds), so the scripts cannot rot. The figures themselves are measured by running the
scripts (benchmarks/README.md), never asserted here against speed targets."""

from __future__ import annotations

import json
import math
import subprocess

import pytest

from benchmarks import busy, memory, scaling, stage_cpu, throughput
from benchmarks.common import ensure_recording, recording_samples
from dsp.pipeline import ReceiverOptions

SMALL = 4e5     # signal samples: 40k symbols (the acquisition uses the whole recording)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("bench")


def test_recordings_are_cached_and_sized(workdir):
    p1 = ensure_recording(workdir, signal_samples=SMALL, seed=1)
    mtime = p1.stat().st_mtime_ns
    p2 = ensure_recording(workdir, signal_samples=SMALL, seed=1)
    assert p2 == p1 and p2.stat().st_mtime_ns == mtime          # reused, not rewritten
    n = recording_samples(p1)
    assert SMALL <= n["signal"] < SMALL + 10_000                 # + the simulator's tail
    assert n["shot_noise"] == n["electronic_noise"] == 1_000_000
    assert ensure_recording(workdir, signal_samples=SMALL, seed=2) != p1


def test_throughput_core_and_report(workdir, capsys):
    out = throughput.run(workdir, SMALL, cold_compile=False, log=lambda m: None)
    nb, npr, mc = out["numba"], out["numpy"], out["baseline"]
    total = sum(out["recording_samples"].values())
    assert nb["samples"] == npr["samples"] == mc["samples"] == total
    for r in (nb, npr):
        assert r["seconds"] > 0 and r["msps"] == pytest.approx(total / r["seconds"] / 1e6)
    # the baseline copies all three int16 captures; its rates are of those bytes (no
    # comparison of timings: the machine is shared)
    assert mc["bytes"] == 2 * mc["samples"]
    assert mc["memcpy_msps"] == pytest.approx(total / mc["memcpy_seconds"] / 1e6)
    assert mc["hdf5_read_msps"] == pytest.approx(total / mc["hdf5_read_seconds"] / 1e6)
    assert nb["vs_memcpy"] == pytest.approx(nb["msps"] / mc["memcpy_msps"])
    assert out["compile"]["cached"]["first_call_s"] > 0 and "cold" not in out["compile"]
    # the comparison runs the same tracker on both sides: the one the receiver reports it ran
    # is the numpy reference's, which is the receiver's default (so no extra numba run)
    assert nb["phase_method"] == throughput.REFERENCE_METHOD == ReceiverOptions().phase_method
    assert "numba_ref_method" not in out
    # same samples on both sides: the ratio of rates is the inverse ratio of wall times
    assert out["speedup_numba_vs_numpy"] == pytest.approx(npr["seconds"] / nb["seconds"])
    # the same steps: estimates agree (tolerances derived in test_numpy_reference.py)
    d = out["estimate_differences"]
    assert abs(d["t_eff"]) < 3e-5 * nb["estimates"]["t_eff"]
    assert abs(d["excess_noise_snu"]) < 1e-3
    throughput.report(out)
    text = capsys.readouterr().out
    assert "MS/s" in text and "numba vs numpy" in text and "excess_noise_snu" in text
    json.dumps(out, default=float)


def test_throughput_cli_json(workdir, tmp_path, capsys):
    js = tmp_path / "t.json"
    rc = throughput.main(["--workdir", str(workdir), "--samples", str(SMALL), "--skip-numpy",
                          "--skip-cold-compile", "--json", str(js)])
    assert rc == 0
    text = capsys.readouterr().out
    assert text.startswith("# qkd-hw receiver throughput\n# command: ")
    assert "numba 0." in text and "threads" in text and "cpu:" in text
    out = json.loads(js.read_text())
    assert out["numba"]["msps"] > 0 and "numpy" not in out
    assert out["environment"]["numba_threads"] >= 1


def test_memory_core_report_and_cli(workdir, tmp_path, capsys):
    out = memory.run(workdir, [2 * SMALL, SMALL], raw_key=True, log=lambda m: None)
    assert out["raw_key_out"] and not list(workdir.glob("raw-key-*"))   # cleaned up
    rows = out["rows"]
    assert [r["signal_samples"] for r in rows] == sorted(r["signal_samples"] for r in rows)
    for r in rows:
        # the high-water mark includes the baseline; the polled peak cannot exceed it
        assert r["peak_rss"] >= r["baseline_rss"] > 50e6
        assert r["peak_rss_polled"] <= r["peak_rss"] * 1.01
        assert math.isfinite(r["excess_noise_snu"])
    assert out["max_peak_rss"] == max(r["peak_rss"] for r in rows)
    assert math.isfinite(out["slope_bytes_per_signal_sample"])
    memory.report(out)
    assert "peak RSS MB" in capsys.readouterr().out
    js = tmp_path / "m.json"
    assert memory.main(["--workdir", str(workdir), "--samples", str(SMALL),
                        "--json", str(js)]) == 0
    assert json.loads(js.read_text())["rows"][0]["signal_samples"] == rows[0]["signal_samples"]


def test_busy_cli_json(workdir, tmp_path, capsys):
    # the busy loop runs during the measured runs and is stopped after (no process left)
    js = tmp_path / "b.json"
    rec = ensure_recording(workdir, signal_samples=SMALL, seed=1)
    assert busy.main([str(rec), "--repeat", "1", "--json", str(js)]) == 0
    out = json.loads(js.read_text())
    assert out["busy"] and set(out["msps"]) == {"here threads=1", "here threads=2"}
    assert all(v[0] > 0 for v in out["msps"].values())
    assert "busy; load average" in capsys.readouterr().out
    assert not [p for p in busy.mp.active_children() if p.is_alive()]


def test_stage_cpu_accounts_each_step_once_and_restores(workdir, tmp_path, capsys):
    # exclusive times: the steps' sum cannot exceed the threads' CPU; wrappers removed after
    import dsp.matched_filter
    import dsp.stream

    rec = ensure_recording(workdir, signal_samples=SMALL, seed=1)
    js = tmp_path / "c.json"
    assert stage_cpu.main([str(rec), "--json", str(js)]) == 0
    out = json.loads(js.read_text())
    steps, calls = out["steps_cpu_s"], out["steps_calls"]
    for label in ("matched filter (symbols, early/late)", "pilot down-conversion + rail count",
                  "PE sums", "acquisition: pilot search", "acquisition: head synchronisation"):
        assert calls[label] >= 1 and steps[label] >= 0
    assert sum(steps.values()) <= out["process_cpu_s"] + 0.01
    assert dsp.stream.matched_filter_at is dsp.matched_filter.matched_filter_at
    assert "in the steps above" in capsys.readouterr().out


def test_scaling_study_in_a_new_workdir(tmp_path, capsys):
    # the default cache folder does not exist on a fresh machine: the study creates it
    workdir = tmp_path / "new" / "cache"
    out = tmp_path / "s"
    assert scaling.main(["--workdir", str(workdir), "--samples", "2e5", "--threads", "1",
                         "--repeat", "1", "--out", str(out)]) == 0
    (row,) = json.loads(out.with_suffix(".json").read_text())["rows"]
    (rec,) = workdir.glob("*.h5")
    n = recording_samples(rec)
    # one bench-suite point: every ADC sample counted, the rate over the fastest warm call
    assert row["signal_samples"] == n["signal"] and row["samples"] == sum(n.values())
    assert row["samples_per_second"] == pytest.approx(row["samples"] / row["seconds"])
    assert row["threads"] == 1 and row["peak_memory_bytes"] > 50e6
    for name in ("s_length.png", "s_threads.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "load average" in text and "CPU s" in text
    assert row["cpu_seconds_all"] and min(row["cpu_seconds_all"]) > 0


def test_scaling_ab_runs_the_named_tree(workdir, tmp_path, capsys):
    # the child imports the receiver of the tree given, not the caller's: a symlink to this
    # checkout is another path (same numba cache), so only --tree can make the child report it
    tree = tmp_path / "tree"
    tree.symlink_to(scaling.REPO, target_is_directory=True)
    rec = ensure_recording(workdir, signal_samples=SMALL, seed=1)
    out = tmp_path / "s"
    assert scaling.main(["--workdir", str(workdir), "--recording", str(rec), "--threads", "1",
                         "--repeat", "1", "--tree", f"link={tree}", "--out", str(out)]) == 0
    (row,) = json.loads(out.with_name("s_ab.json").read_text())["rows"]
    assert row["tree"] == "link" and row["source_tree"] == str(tree)
    # the first call ran on the warm-up recording: no compile time is claimed for this one
    assert row["compile_seconds"] is None and row["signal_samples"] == recording_samples(rec)[
        "signal"]
    text = capsys.readouterr().out
    assert "x first" in text and "% of copy" in text and "load average" in text


def test_scaling_tree_from_a_commit(tmp_path):
    try:
        sha = subprocess.run(["git", "-C", str(scaling.REPO), "rev-parse", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    name, d = scaling.resolve_tree(sha[:9], tmp_path)
    assert name == sha[:9] and d == tmp_path / sha[:12]
    committed = subprocess.run(["git", "-C", str(scaling.REPO), "show",
                                f"{sha}:qkd_hw/bench/suite.py"], capture_output=True,
                               check=True).stdout
    assert (d / "qkd_hw/bench/suite.py").read_bytes() == committed
    stamp = (d / "qkd_hw").stat().st_mtime_ns
    assert scaling.resolve_tree(sha[:9], tmp_path)[1] == d            # unpacked once
    assert (d / "qkd_hw").stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # nothing half-written
    for bad in ("no-such-rev-xyz", f"x={tmp_path / 'missing'}"):
        with pytest.raises(SystemExit, match=r"--tree .*(nor a commit|not a folder)"):
            scaling.resolve_tree(bad, tmp_path)
