"""`qkd-hw lab example` and `qkd-hw lab serve`: the printed configs load; serve writes a client
config whose instruments answer, and stops cleanly on SIGTERM / Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drivers.base import create_instrument
from qkd_hw.cli.main import main
from qkd_hw.lab import example_path
from qkd_hw.labconfig import load_lab_config, parse_lab_config_text

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("virtual", [False, True])
def test_example_prints_the_shipped_config(capsys, virtual):
    argv = ["lab", "example", *(["--virtual"] if virtual else [])]
    assert main(argv) == 0
    text = capsys.readouterr().out
    cfg = parse_lab_config_text(text)
    assert (cfg.virtual is not None) == virtual
    assert cfg == parse_lab_config_text(example_path(virtual).read_text())
    assert cfg.roles.instruments["lo_laser"] == "laser_lo"
    assert cfg.roles.ports["switch_block_port"] != cfg.roles.ports["switch_signal_port"]


def test_example_json_names_the_file_and_holds_its_text(capsys):
    assert main(["lab", "example", "--virtual", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert Path(d["path"]) == example_path(True)
    assert d["toml"] == example_path(True).read_text()


def test_serve_without_virtual_table_is_one_error_line(capsys):
    assert main(["lab", "serve", "--lab", str(example_path(virtual=False))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no [virtual] table" in err[0] and "real_lab.toml" in err[0]


def test_serve_with_an_unwritable_client_config_is_one_error_line(tmp_path, capsys):
    target = tmp_path / "missing-dir" / "client.toml"
    argv = ["lab", "serve", "--lab", str(example_path(virtual=True)), "--write-config",
            str(target)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("qkd-hw lab: error: --write-config") and str(target) in err[-1]
    assert not target.exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_runs_until_signalled_and_cleans_up(tmp_path, sig):
    client = tmp_path / "client.toml"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "qkd_hw.cli.main", "lab", "serve", "--lab",
         str(example_path(virtual=True)), "--write-config", str(client)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not client.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "virtual lab did not start"
            time.sleep(0.1)
        cfg = load_lab_config(client)
        assert cfg.virtual is None and set(cfg.instruments) == {
            "laser_tx", "laser_lo", "bias_i", "awg", "adc", "power_meter", "voa", "switch",
            "detector"}
        with create_instrument(cfg.role("voa")) as voa:  # a live emulator answers
            voa.channel(1).set_attenuation(7.0)
            assert voa.channel(1).attenuation_db == pytest.approx(7.0)
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert b"Traceback" not in err and err.decode().strip().endswith("stopped")
    assert not client.exists()  # its addresses died with the lab


def test_serve_prints_the_client_config_without_write_config(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "qkd_hw.cli.main", "lab", "serve", "--lab",
         str(example_path(virtual=True))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # printed after the config is flushed to stdout
        assert b"running" in line, line
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    cfg = parse_lab_config_text(out.decode())
    assert cfg.virtual is None
    assert all(inst.resource != "virtual" for inst in cfg.instruments.values())
    assert cfg.role("digitizer").resource.startswith("TCPIP::127.0.0.1::")
