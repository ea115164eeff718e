"""Hostile inputs and outputs of the CLI: a full disk, FIFOs and devices, SIGTERM, outputs
checked before work, Ctrl-C during start-up, control characters in file names.

The full-disk tests write into a small tmpfs (mounted here: they need root, as in CI) and
run the writers in a subprocess, because libhdf5 meeting ENOSPC crashed the interpreter.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from qkd_hw.atomic import (
    RESERVE_MARGIN,
    AtomicFile,
    DiskFullError,
    atomic_write,
    remove_stale_temporaries,
)
from qkd_hw.cli import main as cli_main
from qkd_hw.cli.main import main, one_line
from qkd_hw.errors import TraceFormatError
from qkd_hw.raw_key import REQUIRED_ESTIMATES, RawKeyWriter, read_raw_key
from qkd_hw.trace_io import TraceReader
from tests.conftest import REPO, SHARED_TRACES

EST = dict.fromkeys(REQUIRED_ESTIMATES, 0.1)


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "qkd_hw.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _python(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------ full disk (tmpfs)
@pytest.fixture
def small_fs(tmp_path):
    """A 4 MiB tmpfs with about 1 MiB free; unmounted afterwards."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {r.stderr.strip()}")
    try:
        (mnt / "fill").write_bytes(b"\0" * (3 << 20))
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _left(mnt: Path) -> list[str]:
    return sorted(os.listdir(mnt))


def test_process_out_on_full_disk_is_one_line_exit_2(small_fs):
    # was: a libhdf5 message over two lines, then SIGBUS (exit -7)
    r = _cli("process", str(SHARED_TRACES["basic"]), "--out", str(small_fs / "raw.h5"))
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip()
    assert "\n" not in err
    assert "raw.h5" in err and "no space left" in err and "bytes free" in err
    assert _left(small_fs) == ["fill"]


def test_outputs_must_fit_together_before_processing(small_fs, capsys):
    # three plots of up to 1 MiB each (PNG of at most ~1.3 Mpx) do not fit 1 MiB
    plots = small_fs / "plots"
    rc = main(["process", str(SHARED_TRACES["basic"]), "--plot", str(plots)])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"plot {plots / 'constellation.png'}: no space left on the device" in err
    assert os.listdir(plots) == []


def test_raw_key_writer_on_full_disk_fails_cleanly(small_fs):
    # the writer itself (not only the CLI's check up front): a typed error, no crash at
    # interpreter exit (libhdf5 cannot close a file whose write failed: h5py#914)
    r = _python(f"""
        import numpy as np
        from qkd_hw.errors import TraceFormatError
        from qkd_hw.raw_key import RawKeyWriter
        n = 200_000
        try:
            with RawKeyWriter({str(small_fs / 'raw.h5')!r}) as w:
                w.append(np.ones(n, np.complex64), np.arange(n), np.arange(n, 2 * n))
        except TraceFormatError as exc:
            print(exc)
        """)
    assert r.returncode == 0, r.stderr
    assert "raw.h5: writing raw key failed: no space left on the device" in r.stdout
    assert r.stderr == ""
    assert _left(small_fs) == ["fill"]


def test_streaming_trace_writer_on_full_disk_fails_cleanly(small_fs):
    r = _python(f"""
        import numpy as np
        from qkd_hw.errors import TraceFormatError
        from qkd_hw.trace_io import TraceWriter, TxInfo
        tx = TxInfo(n_symbols=0, symbol_rate_hz=1e8, rolloff=0.2, signal_frequency_hz=2e8,
                    pilot_frequencies_hz=(3e8,), modulation_variance_snu=4.0,
                    efficiency=0.6, detection="heterodyne")
        try:
            with TraceWriter({str(small_fs / 'rec.h5')!r}, tx=tx, sample_rate_hz=1e9,
                             volts_per_code=1e-3, chunk_samples=1 << 14) as w:
                for _ in range(100):
                    w.append("signal", np.ones(1 << 16, np.int16))
        except TraceFormatError as exc:
            print(exc)
        """)
    assert r.returncode == 0, r.stderr
    assert "rec.h5: writing /adc/signal[" in r.stdout and "no space left" in r.stdout
    assert _left(small_fs) == ["fill"]


def test_simulate_on_full_disk_is_refused_before_simulating(small_fs):
    r = _cli("simulate", str(small_fs / "rec.h5"), "--symbols", "20000", "--seed", "1")
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip()
    # refused by the size estimate before simulating (qkd_hw.sim.simulate), which names the
    # free space, or by the writer's reservation ("no space left")
    assert "\n" not in err and "rec.h5" in err
    assert "free disk space" in err or "no space left" in err
    assert _left(small_fs) == ["fill"]


def test_reservation_is_released_on_commit(small_fs):
    (small_fs / "fill").unlink()
    n = 50_000
    with RawKeyWriter(small_fs / "k.h5") as w:
        w.append(np.ones(n, np.complex64), np.arange(n), np.arange(n, 2 * n))
        w.commit(EST)
    st = os.stat(small_fs / "k.h5")
    assert st.st_blocks * 512 - st.st_size < 8192  # the margin past HDF5's end is freed
    assert read_raw_key(small_fs / "k.h5").bob_symbols.shape == (n,)


def test_reserve_uses_the_last_bytes(small_fs):
    # streaming reservations grow by a quarter; near the end only what is needed is asked
    af = AtomicFile(small_fs / "x.bin")
    af.reserve(600 << 10)  # 856 KiB with the margin, of 1 MiB free
    free = os.statvfs(small_fs).f_bavail * os.statvfs(small_fs).f_frsize
    assert af._reserved // 4 > free  # the growth would not fit
    af.reserve(af._reserved - RESERVE_MARGIN + free // 2)  # what is needed does
    assert os.stat(af.tmp_path).st_blocks * 512 >= af._reserved
    with pytest.raises(DiskFullError):
        af.reserve(af._reserved + 2 * free)
    af.abort()
    assert _left(small_fs) == ["fill"]


def test_reserve_refuses_more_than_free(tmp_path):
    af = AtomicFile(tmp_path / "x.bin")
    with pytest.raises(DiskFullError, match="no space left on the device") as ei:
        af.reserve(1 << 62)
    assert ei.value.filename == str(tmp_path / "x.bin")
    af.abort()
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ non-regular inputs
@pytest.mark.parametrize("command", ["info", "process"])
def test_fifo_as_recording_is_refused_not_blocking(tmp_path, command):
    fifo = tmp_path / "rec.h5"
    os.mkfifo(fifo)
    r = _cli(command, str(fifo), timeout=120)  # was: blocked forever in open()
    assert r.returncode == 2
    assert r.stderr.strip() == f"qkd-hw {command}: error: {fifo}: is a FIFO (named pipe), " \
        f"not a {'qkd-trace or qkd-raw-key' if command == 'info' else 'qkd-trace'} file"


def test_fifo_as_raw_key_is_refused(tmp_path):
    fifo = tmp_path / "raw.h5"
    os.mkfifo(fifo)
    r = _python(f"""
        from qkd_hw.raw_key import read_raw_key
        from qkd_hw.errors import TraceFormatError
        try:
            read_raw_key({str(fifo)!r})
        except TraceFormatError as exc:
            print(exc)
        """, timeout=120)
    assert r.stdout.strip() == f"{fifo}: is a FIFO (named pipe), not a qkd-raw-key file"


def test_devices_sockets_directories_are_refused(tmp_path):
    sock_path = tmp_path / "s.h5"
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(sock_path))
        for path, what in (("/dev/null", "a character device"), (str(tmp_path), "a directory"),
                           (str(sock_path), "a socket")):
            with pytest.raises(TraceFormatError, match=f"is {what}, not a qkd-trace file"):
                TraceReader(path)
            with pytest.raises(TraceFormatError, match=f"is {what}, not a qkd-raw-key file"):
                read_raw_key(path)
    finally:
        sock.close()


# ------------------------------------------------------------------ SIGTERM, stale temporaries
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_during_process_out_cleans_up(tmp_path, signum):
    out = tmp_path / "raw.h5"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.Popen([sys.executable, "-m", "qkd_hw.cli.main", "process",
                          str(SHARED_TRACES["metro"]), "--out", str(out)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not any(n.startswith("raw.h5.tmp-") for n in os.listdir(tmp_path)):
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline, "the raw-key temporary never appeared"
            time.sleep(0.01)
        p.send_signal(signum)
        _, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
    # was: killed by the signal (-15) leaving raw.h5.tmp-<pid> (0600) behind
    assert p.returncode == 128 + signum
    assert err.strip() == f"qkd-hw process: terminated ({signal.Signals(signum).name})"
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("signum, expect", [(signal.SIGTERM, "Terminated"),
                                            (signal.SIGINT, "KeyboardInterrupt")])
def test_signal_inside_a_finaliser_is_not_lost(signum, expect):
    # an exception raised in __del__ or a weakref callback (h5py has many) is printed as
    # "Exception ignored" and dropped: the run went on and exited 0 (seen with SIGTERM
    # during process --out). It is deferred to the next safe place instead.
    r = _python(f"""
        import signal, sys, time
        from qkd_hw.cli import main as m
        m._set_handlers({{{int(signum)}: m._on_signal}})

        class Finalised:
            def __del__(self):
                signal.raise_signal({int(signum)})

        try:
            Finalised()
            for _ in range(60_000):
                time.sleep(0.001)
        except KeyboardInterrupt as exc:
            print(type(exc).__name__)
            sys.exit(0)
        print("lost")
        """)
    assert r.stdout.strip() == expect
    assert "Exception ignored" not in r.stderr


def test_closed_stdout_is_a_quiet_exit(shared_traces):
    r, w = os.pipe()
    os.close(r)  # the reader is gone before anything is written (``| head`` that exited)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        p = subprocess.run([sys.executable, "-m", "qkd_hw.cli.main", "info", "--json",
                            str(shared_traces["basic"])], env=env, stdout=w,
                           stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(w)
    assert p.returncode == 128 + signal.SIGPIPE  # was: 1 with a BrokenPipeError traceback
    assert p.stderr == ""


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = _dead_pid()
    target = tmp_path / "out.h5"
    stale = [tmp_path / f"out.h5.tmp-{dead}", tmp_path / f"out.h5.tmp-{dead}-2"]
    live = [tmp_path / f"out.h5.tmp-{os.getpid()}-7", tmp_path / "out.h5.tmp-1"]  # 1: init
    other = [tmp_path / f"other.h5.tmp-{dead}", tmp_path / f"out.h5.tmp-{dead}x"]
    for p in stale + live + other:
        p.write_bytes(b"x")
    with atomic_write(target) as tmp:
        tmp.write_bytes(b"new")
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in [target, *live, *other])
    assert remove_stale_temporaries(target) == []


def test_stale_temporary_of_a_long_name_is_removed(tmp_path):
    target = tmp_path / ("k" * 250 + ".h5")
    # above pid_max, so never a live process and longer than any real PID (a PID counter
    # that has wrapped hands out 3-digit PIDs, and the cut below needs a shorter one)
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    dead = 10 ** len(str(pid_max)) + 7
    with atomic_write(target) as tmp:  # its hashed name, with our PID
        tmp.write_bytes(b"x")
        stale = Path(str(tmp).replace(f".tmp-{os.getpid()}", f".tmp-{dead}"))
        stale.write_bytes(b"old")
    assert remove_stale_temporaries(target) == [stale]
    assert os.listdir(tmp_path) == [target.name]
    # a writer whose PID had fewer digits cut the name elsewhere: same hash tag
    head = stale.name.rpartition(".tmp-")[0]
    cut, tag = head.rsplit("~", 1)
    small = next(pid for pid in range(999, 99, -1) if not _alive(pid))
    assert len(str(small)) < len(str(dead))
    shorter = tmp_path / f"{cut}k~{tag}.tmp-{small}-1"
    other = tmp_path / f"{cut}~{'0' * 12}.tmp-{dead}"  # another long target
    for p in (shorter, other):
        p.write_bytes(b"old")
    assert remove_stale_temporaries(target) == [shorter]
    assert other.exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------ outputs checked first
def test_process_checks_every_output_before_writing_any(tmp_path, capsys):
    plots = tmp_path / "plots"
    plots.mkdir()
    os.mkfifo(plots / "spectrum.png")
    key = tmp_path / "raw.h5"
    rc = main(["process", str(SHARED_TRACES["basic"]), "--out", str(key), "--plot", str(plots)])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"qkd-hw process: error: plot {plots / 'spectrum.png'}: exists and is not "
                   "a regular file (device, FIFO or socket); refusing to replace it")
    assert not key.exists()  # was: the raw key written, then the plot failed
    assert sorted(os.listdir(tmp_path)) == ["plots"]


@pytest.mark.parametrize("out, message", [
    ("nodir/raw.h5", "its directory does not exist"),
    ("/dev/null", "exists and is not a regular file"),
    ("plots/constellation.png", "same file as the raw key output"),
])
def test_process_output_refusals(tmp_path, capsys, monkeypatch, out, message):
    monkeypatch.chdir(tmp_path)
    rc = main(["process", str(SHARED_TRACES["basic"]), "--out", out, "--plot", "plots"])
    assert rc == 2
    assert message in capsys.readouterr().err


# ------------------------------------------------------------------ start-up, message lines
def test_ctrl_c_while_importing_is_one_line_exit_130(monkeypatch, capsys):
    def interrupted(name):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main.importlib, "import_module", interrupted)
    assert main(["info", "x.h5"]) == 130  # was: a KeyboardInterrupt traceback
    assert capsys.readouterr().err == "qkd-hw: interrupted\n"


def test_file_name_with_newline_stays_one_line(tmp_path, capsys):
    bad = tmp_path / "a\nb\x1b[2J.h5"
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err  # was: two lines, raw escape code
    assert "a\\nb\\x1b[2J.h5: no such file" in err


def test_info_summary_of_a_file_named_with_newline_is_one_line(tmp_path, capsys):
    p = tmp_path / "x\ny.h5"
    shutil.copyfile(SHARED_TRACES["basic"], p)
    assert main(["info", str(p)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"{tmp_path}/x\\ny.h5: qkd-trace version 1, ")


def test_one_line_escapes_only_control_characters():
    assert one_line("é ü\tx\r\n\u2028") == "é ü\\tx\\r\\n\\u2028"


def test_sigterm_handler_is_restored_after_main(capsys):
    before = signal.getsignal(signal.SIGTERM)
    main(["info", "/nonexistent.h5"])
    assert signal.getsignal(signal.SIGTERM) is before
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)  # never replaced by an output
