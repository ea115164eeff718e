"""Sizes that cannot fit: a recording or a simulation the machine cannot hold is refused up
front, with one line naming the value, the size needed and the size available."""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest

from dsp.pipeline import ReceiverOptions
from dsp.rrc import MatchedFilterBank, ls_matched_taps
from qkd_hw.receiver import DEFAULT_CHUNK
from qkd_hw.sizes import STREAM_CHUNK_SAMPLES, receiver_memory_bytes
from tests.conftest import SHARED_TRACES

BASIC = SHARED_TRACES["basic"]  # 1 GS/s, 100 MBd, 1005234 signal samples, 1e5 symbols


def _cmd() -> list[str]:
    exe = shutil.which("qkd-hw")
    return [exe] if exe else [sys.executable, "-m", "qkd_hw.cli.main"]


def _run(args: list[str], *, vm_limit: int | None = None) -> subprocess.CompletedProcess:
    def limit() -> None:
        if vm_limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (vm_limit, vm_limit))
    return subprocess.run([*_cmd(), *args], capture_output=True, text=True, preexec_fn=limit)


def _variant(tmp_path: Path, name: str, *, n_symbols: int | None = None, **tx_attrs) -> Path:
    """basic.h5 with some /tx attributes changed (and /tx/symbols cut to n_symbols)."""
    out = tmp_path / name
    shutil.copyfile(BASIC, out)
    out.chmod(0o644)
    with h5py.File(out, "r+") as f:
        for k, v in tx_attrs.items():
            f["tx"].attrs[k] = v
        if n_symbols is not None:
            sym = f["tx/symbols"][:n_symbols]
            del f["tx/symbols"]
            f["tx"].create_dataset("symbols", data=sym)
    return out


def _one_line_error(res: subprocess.CompletedProcess, *needles: str) -> str:
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    for n in needles:
        assert n in res.stderr, res.stderr
    return res.stderr


@pytest.mark.parametrize("rate", [1.0, 1e3])
def test_absurd_symbol_rate_is_refused_by_info_verify_and_process(tmp_path, rate):
    # 1e9 / 1e6 samples per symbol: the matched-filter bank alone is 7e14 / 8e11 bytes
    # (256 phases x 32 symbols x sps taps x 100 B); before, info passed and process died
    # with a MemoryError traceback asking for 238 / 61 GiB
    bad = _variant(tmp_path, "rate.h5", symbol_rate_hz=rate)
    info = _one_line_error(_run(["info", "--verify", str(bad)]),
                           "'symbol_rate_hz' of /tx", "samples per symbol", "GiB of memory")
    proc = _one_line_error(_run(["process", str(bad), "--seed", "1"]))
    assert info.split("error: ", 1)[1] == proc.split("error: ", 1)[1]  # the same message
    need = float(info.split("need ~")[1].split(" GiB")[0])
    assert need > 1e9 * 32 * 256 * 48 / rate / 2**30   # at least the bank's kept tables


def test_memory_refusal_uses_the_process_limit(tmp_path):
    # 2e4 samples per symbol, one symbol: a consistent file whose bank needs ~8 GB; under a
    # 4 GB address-space limit (ulimit -v) both commands refuse and name the limit
    bad = _variant(tmp_path, "mem.h5", symbol_rate_hz=5e4, n_symbols=1)
    for args in (["info", "--verify", str(bad)], ["process", str(bad), "--seed", "1"]):
        _one_line_error(_run(args, vm_limit=4 << 30), "RLIMIT_AS (ulimit -v) is 4 GiB",
                        "matched-filter bank 7.63 GiB")


@pytest.mark.parametrize("attrs, needle", [
    ({"symbol_rate_hz": 6e8}, "1.67 samples per symbol at the sample rate 1e+09 Hz; the "
                              "receiver needs >= 2"),
    ({"rolloff": 0.0}, "'rolloff' of /tx: 0.0: the receiver's RRC matched filter needs"),
    ({"signal_frequency_hz": 4.8e8}, "quantum band [4.2e+08, 5.4e+08] Hz"),
    ({"pilot_frequency_hz": 1.6e8, "pilot_frequencies_hz": np.array([1.6e8])},
     "'pilot_frequency_hz' of /tx 1.6e+08 Hz lies inside the quantum band [9e+07, 2.1e+08]"),
])
def test_tx_values_the_receiver_cannot_use_are_refused_by_info(tmp_path, attrs, needle):
    # each passed `info` before (only each value's own range was checked)
    bad = _variant(tmp_path, "tx.h5", **attrs)
    _one_line_error(_run(["info", str(bad)]), needle)


def test_info_verify_refuses_a_capture_shorter_than_the_sync(tmp_path):
    # 1e7 Bd: 100 samples per symbol, the 1005234 samples hold 10052 of the 16384 symbols
    # the receiver synchronises on
    short = _variant(tmp_path, "short.h5", symbol_rate_hz=1e7)
    assert _run(["info", str(short)]).returncode == 0   # well-formed
    _one_line_error(_run(["info", "--verify", str(short)]),
                    "/adc/signal's 1005234 samples hold 1.01e+04 symbols",
                    "first 16384 of the 100000")


@pytest.mark.parametrize("opt", [ReceiverOptions(), ReceiverOptions(span_symbols=32, taper=5.0)],
                         ids=["least-squares", "kaiser"])
def test_bank_estimate_bounds_the_measured_bank(opt):
    # tracemalloc sees every numpy buffer the bank allocates while it is built (the
    # least-squares design's too: its cache emptied first)
    sps = 37.3
    ls_matched_taps.cache_clear()
    tracemalloc.start()
    try:
        MatchedFilterBank(samples_per_symbol=sps, rolloff=0.2, span_symbols=opt.span(0.2),
                          n_phases=256, mixer_cycles_per_sample=0.15, taper=opt.taper)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    est = receiver_memory_bytes(samples_per_symbol=sps, rolloff=0.2, n_symbols=10**5,
                                signal_length=10**6, options=opt).bank
    # the least-squares design's temporaries are a fit over 6.7-100 samples per symbol
    assert peak <= est <= (1.2 if opt.taper is not None else 1.3) * peak


def test_stream_chunk_is_the_receivers():
    assert STREAM_CHUNK_SAMPLES == DEFAULT_CHUNK


def test_span_of_a_tiny_rolloff_does_not_overflow():
    # ceil(6.4 / 1e-310) overflowed before the clip to [24, 96]
    assert ReceiverOptions().span(1e-310) == 96


# ----------------------------------------------------------------------------- simulate
def _free_gb(path: Path) -> float:
    return shutil.disk_usage(path).free / 1e9


@pytest.mark.parametrize("extra, gb", [
    (["--symbols", "1e12"], 2.8e4),   # 1e13 int16 samples + 1e12 complex64 symbols
    (["--symbols", "1000", "--set", "symbol_rate_hz=1"], 2.03e3),   # 1e9 samples per symbol
    (["--symbols", "1000", "--set", "delay_samples=1e12"], 2e3),
    (["--symbols", "1000", "--set", "tail_samples=1e12"], 2e3),
])
def test_simulate_refuses_outputs_larger_than_the_free_disk(tmp_path, extra, gb):
    # before: symbol_rate_hz=1 etc. started writing 2 TB; --symbols 1e12 failed at the
    # file-size limit with a multi-line error and two "Exception ignored" tracebacks
    assert gb > _free_gb(tmp_path)   # the premise: more than this disk holds
    out = tmp_path / "big.h5"
    err = _one_line_error(_run(["simulate", str(out), "--seed", "1", *extra]),
                          "the recording would take ~", f"free disk space at {tmp_path} is")
    need = float(err.split("take ~")[1].split(" GB")[0])
    assert need == pytest.approx(gb, rel=0.02)   # 2 B per int16 sample + 8 B per symbol
    assert list(tmp_path.iterdir()) == []


def test_simulate_refuses_a_truth_phase_larger_than_memory(tmp_path):
    # /truth/phase_rad is kept whole in memory (float64 per signal sample): 1e8 symbols are
    # 1e9 samples, ~24 GB with the ramp added to it; refused under a 4 GB limit
    out = tmp_path / "phase.h5"
    _one_line_error(_run(["simulate", str(out), "--seed", "1", "--symbols", "1e8",
                          "--truth-phase"], vm_limit=4 << 30),
                    "simulating would need ~22.7 GiB of memory", "RLIMIT_AS (ulimit -v) is 4 GiB")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("setting, needle", [
    ("symbol_rate_hz=1e-300", "symbol_rate_hz = 1e-300 is inf samples per symbol"),
    ("tail_samples=1e300", "tail_samples = 1e+300 is out of range; allowed [0, 1e+12]"),
    ("shot_noise_samples=1e300", "shot_noise_samples = 1e+300 is out of range"),
    ("pilot_powers_dbsn=40", "73% of the signal samples or more would clip"),
])
def test_simulate_refuses_absurd_parameters_in_one_line(tmp_path, setting, needle):
    # before: an OverflowError traceback (1e-300), a 301-digit number in the message
    # (1e300), a recording whose signal capture was 73-100 % clipped (40-60 dB pilots)
    out = tmp_path / "x.h5"
    _one_line_error(_run(["simulate", str(out), "--seed", "1", "--symbols", "1000",
                          "--set", setting]), needle)
    assert list(tmp_path.iterdir()) == []


def test_declared_captures_past_the_file_size_limit_are_refused_before_writing(tmp_path):
    # a file-size limit (ulimit -f 1 MB; the file system's largest file behaves the same)
    # below the 8 MB of captures: their storage is allocated whole at the first write, so
    # HDF5 could neither write nor close the file; before, a 2-line error, two "Exception
    # ignored" tracebacks when h5py collected the ids, and a segfault at exit (rc -11)
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    out = tmp_path / "f.h5"
    res = subprocess.run([*_cmd(), "simulate", str(out), "--seed", "1", "--symbols", "200000",
                          "--no-progress"], capture_output=True, text=True, preexec_fn=limit)
    _one_line_error(res, "cannot create recording: the declared captures take 0.008011 GB, "
                         "the file-size limit (ulimit -f) is 0.001049 GB")
    assert list(tmp_path.iterdir()) == []


_WRITE_BIG_SPS = """
import sys
import numpy as np
from qkd_hw.trace_io import TraceWriter, TxInfo
tx = TxInfo(symbol_rate_hz=5e4, rolloff=0.2, signal_frequency_hz=1.5e8,
            pilot_frequencies_hz=(2.5e8,), modulation_variance_snu=5.0, efficiency=0.7,
            detection="heterodyne", n_symbols=1)
with TraceWriter(sys.argv[1], tx=tx, sample_rate_hz=1e9, volts_per_code=1e-3) as w:
    for name in ("signal", "shot_noise", "electronic_noise"):
        w.append(name, np.zeros(1_000_000, np.int16))
    w.write_symbols(np.ones(1, np.complex64))
"""


def test_writer_keeps_a_recording_only_processing_cannot_fit(tmp_path):
    # 2e4 samples per symbol: well-formed, but processing needs ~16 GB; under a 4 GB limit
    # the writer's final re-open refused it and discarded the finished file
    out = tmp_path / "w.h5"
    res = subprocess.run([sys.executable, "-c", _WRITE_BIG_SPS, str(out)], capture_output=True,
                         text=True, preexec_fn=lambda: resource.setrlimit(
                             resource.RLIMIT_AS, (4 << 30, 4 << 30)))
    assert res.returncode == 0, res.stderr
    assert out.is_file()
