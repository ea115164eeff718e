"""Acquisition through the virtual lab: the recording processes like a simulated one of the same
physics (and agrees with the lab's truth); Ctrl-C and an instrument fault in the middle of a
capture leave every instrument as before and a partial file marked incomplete."""

from __future__ import annotations

import contextlib
import io
import json
import math
import signal
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

from qkd_hw.cli.main import main
from qkd_hw.errors import InstrumentError, TraceFormatError
from qkd_hw.lab import VirtualLab, example_path
from qkd_hw.lab.acquisition import AcquisitionPlan, acquire, incomplete_path
from qkd_hw.lab.session import LabSession
from qkd_hw.lab.transmitter import TxDesign, make_waveform, virtual_tx_levels
from qkd_hw.labconfig import load_lab_config
from qkd_hw.receiver import process_recording
from qkd_hw.trace_io import TraceReader, TraceWriter, TxInfo

N_SYMBOLS = 20_000
TX_MW = 20.0


@pytest.fixture(scope="module")
def vlab() -> Iterator[VirtualLab]:
    with VirtualLab(load_lab_config(example_path(virtual=True))) as lab:
        yield lab


def plan(**kw: object) -> AcquisitionPlan:
    return AcquisitionPlan(**{"n_symbols": N_SYMBOLS, "tx_power_mw": TX_MW, **kw})


def run(vlab: VirtualLab, out: Path, progress=None, **kw: object):
    physics = vlab.physics
    with LabSession(vlab.client_config, progress=progress) as session:
        return acquire(session, out, plan(**kw), rng=np.random.default_rng(5),
                       amplitude_for=lambda wf: virtual_tx_levels(physics, wf,
                                                                  tx_power_mw=TX_MW))


def snapshot(vlab: VirtualLab) -> dict:
    with LabSession(vlab.client_config) as session:
        snap = json.loads(session.snapshot_json())
    return snap["instruments"]


def info(path: Path) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["info", str(path)])
    return code, err.getvalue()


def test_recording_estimates_match_simulation_and_truth(vlab: VirtualLab, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from qkd_hw.lab import acquisition
    from qkd_hw.sim.params import SimParams
    from qkd_hw.sim.simulate import simulate_recording

    monkeypatch.setattr(acquisition, "SYMBOL_CHUNK", 3000)  # /tx/symbols in several appends

    truth: dict = {}

    def progress(msg: str) -> None:  # the truth of the state the signal was captured in
        if msg.startswith("capture signal: done"):
            truth.update(vlab.truth())

    out = tmp_path / "lab.h5"
    res = run(vlab, out, progress)
    assert res.lengths["signal"] >= N_SYMBOLS * 10
    with h5py.File(out) as f:
        assert bool(f.attrs["complete"]) is True
        # the symbols as the digitizer saw them: the segment's, from the lead on, cyclically
        design = TxDesign.from_link(vlab.config.link, pilot_to_signal_db=8.0)
        seg = make_waveform(design, res.segment_symbols, np.random.default_rng(5)).symbols
        idx = (np.arange(N_SYMBOLS) + plan().lead_symbols) % res.segment_symbols
        np.testing.assert_array_equal(f["tx/symbols"][()], seg[idx].astype(np.complex64))
        snap = json.loads(f["meta/snapshot"][()].decode())
        assert snap["instruments"]["switch"]["properties"]["channel"]["value"] in (1, 2)
        assert "[link]" in f["meta/lab_config"][()].decode()
    lab = process_recording(out, pe_fraction=1.0, seed=1).summary()

    t_true, xi_true = truth["transmittance"], truth["excess_noise_snu"]
    vel_true = truth["electronic_noise_snu"]
    # the simulator with the same physics: pilot at the same level over the shot noise
    # pilot power per sample A^2 = 10^0.8 * 2 V_A / sps; at the detector A^2 eta T / 2
    sim_pilot_dbsn = 10 * math.log10(10 ** 0.8 * 2 * 5.0 / 10 * 0.7 * t_true / 2)
    params = SimParams(transmittance=t_true, excess_noise_snu=xi_true,
                       electronic_noise_snu=vel_true, modulation_variance_snu=5.0,
                       efficiency=0.7, linewidth_hz=1e3, adc_bits=16,
                       adc_shot_noise_rms_codes=truth["shot_noise_rms_codes"],
                       pilot_powers_dbsn=(sim_pilot_dbsn,), shot_noise_samples=res.lengths[
                           "shot_noise"], electronic_noise_samples=res.lengths["shot_noise"])
    sim_path = tmp_path / "sim.h5"
    simulate_recording(sim_path, params, seed=3, n_symbols=N_SYMBOLS)
    sim = process_recording(sim_path, pe_fraction=1.0, seed=1).summary()

    for r in (lab, sim):
        # statistical sigmas: t from the receiver; xi from the variance of 2 n quadrature
        # samples of total noise sigma2 referred to the input (divide by t^2)
        s_t = 4 * r["t_eff_std"] * math.sqrt(t_true * 0.7 / 2) / 0.7   # T = 2 t^2 / eta
        s_xi = math.sqrt(2 / (2 * N_SYMBOLS)) * 1.2 / (0.7 * t_true / 2)
        assert r["transmittance"] == pytest.approx(t_true, abs=4 * s_t)
        assert r["excess_noise_snu"] == pytest.approx(xi_true, abs=4 * s_xi)
        assert r["electronic_noise_snu"] == pytest.approx(
            vel_true, abs=5 * r["electronic_noise_std_snu"])
    s_t = 4 * lab["t_eff_std"] * math.sqrt(t_true * 0.7 / 2) / 0.7
    assert lab["transmittance"] == pytest.approx(sim["transmittance"], abs=4 * math.sqrt(2) * s_t)
    assert lab["excess_noise_snu"] == pytest.approx(sim["excess_noise_snu"],
                                                    abs=4 * math.sqrt(2) * s_xi)


def _check_interrupted(vlab: VirtualLab, before: dict, out: Path, old: bytes) -> None:
    assert snapshot(vlab) == before                      # every setting back
    assert not vlab.emulator("awg").running              # nothing plays
    assert out.read_bytes() == old                       # OUT untouched
    side = incomplete_path(out)
    with h5py.File(side) as f:
        assert bool(f.attrs["complete"]) is False
        assert "meta/snapshot" in f
    with pytest.raises(TraceFormatError, match=r"complete.*interrupted"):
        TraceReader(side)
    code, err = info(side)
    assert code == 2 and "complete" in err and "interrupted" in err


@pytest.mark.parametrize("how", ["raise", "signal"])
def test_ctrl_c_in_the_middle_restores_and_marks_incomplete(vlab: VirtualLab, tmp_path: Path,
                                                            how: str) -> None:
    before = snapshot(vlab)
    out = tmp_path / "run.h5"
    out.write_bytes(b"an earlier recording")

    def progress(msg: str) -> None:
        if msg.startswith("capture shot_noise:") and "fetched" in msg:
            if how == "raise":
                raise KeyboardInterrupt
            signal.raise_signal(signal.SIGINT)  # a real Ctrl-C, delivered where it lands

    with pytest.raises(KeyboardInterrupt):
        run(vlab, out, progress, chunk_samples=1 << 16)
    _check_interrupted(vlab, before, out, b"an earlier recording")
    with h5py.File(incomplete_path(out)) as f:   # the signal was in full, the rest was not
        assert f["adc/signal"].shape[0] > N_SYMBOLS * 10
        assert 0 < f["adc/shot_noise"].shape[0] < f["adc/signal"].shape[0]


def test_instrument_fault_in_the_middle_restores_and_marks_incomplete(vlab: VirtualLab,
                                                                      tmp_path: Path) -> None:
    before = snapshot(vlab)
    out = tmp_path / "run.h5"
    out.write_bytes(b"x")
    adc = vlab.emulator("digitizer")
    fetched: list[str] = []

    def progress(msg: str) -> None:
        if msg.startswith("capture signal:") and "fetched" in msg and not fetched:
            fetched.append(msg)   # from the second chunk on, every transfer breaks off
            adc.inject("cut_block", match="WAV:DATA", count=100)

    try:
        with pytest.raises(InstrumentError):
            run(vlab, out, progress, chunk_samples=1 << 16)
    finally:
        adc.faults.clear()
    _check_interrupted(vlab, before, out, b"x")


# -- TraceWriter's acquisition additions (no lab needed) ---------------------------------------

WTX = TxInfo(symbol_rate_hz=1e8, rolloff=0.2, signal_frequency_hz=1.5e8,
             pilot_frequencies_hz=(2.5e8,), modulation_variance_snu=5.0, efficiency=0.7,
             detection="heterodyne", n_symbols=0)


def _writer(out: Path) -> TraceWriter:
    return TraceWriter(out, tx=WTX, sample_rate_hz=1e9, volts_per_code=1e-5,
                       incomplete_path=incomplete_path(out))


def _fill(w: TraceWriter, rng: np.random.Generator) -> None:
    for name in ("signal", "shot_noise", "electronic_noise"):
        w.append(name, rng.integers(-3000, 3000, 20_000).astype(np.int16))
    w.write_symbols((rng.normal(size=500) + 1j * rng.normal(size=500)).astype(np.complex64))


def test_writer_meta_and_complete_true_when_whole(tmp_path: Path) -> None:
    out = tmp_path / "rec.h5"
    with _writer(out) as w:
        w.write_meta("snapshot", '{"instruments": {}}')
        w.write_meta("lab_config", "[lab]\nname = \"é\"\n")
        _fill(w, np.random.default_rng(0))
    with h5py.File(out) as f:
        assert bool(f.attrs["complete"]) is True
        assert f["meta/lab_config"][()].decode() == "[lab]\nname = \"é\"\n"
    with TraceReader(out) as r:
        assert r.complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.h5"]


def test_writer_keeps_the_partial_file_at_the_side_name(tmp_path: Path) -> None:
    out = tmp_path / "rec.h5"
    out.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), _writer(out) as w:
        w.write_meta("snapshot", "{}")
        w.append("signal", np.zeros(1000, np.int16))
        raise KeyboardInterrupt
    assert out.read_bytes() == b"old"
    side = incomplete_path(out)
    assert side.name == "rec.incomplete.h5"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.h5", "rec.incomplete.h5"]
    with h5py.File(side) as f:
        assert bool(f.attrs["complete"]) is False
        assert f["adc/signal"].shape == (1000,)
    with pytest.raises(TraceFormatError, match="complete"):
        TraceReader(side)
    # without incomplete_path nothing is kept (the writer's old behaviour stays)
    with pytest.raises(KeyboardInterrupt), TraceWriter(
            tmp_path / "other.h5", tx=WTX, sample_rate_hz=1e9, volts_per_code=1e-5) as w:
        raise KeyboardInterrupt
    assert not (tmp_path / "other.h5").exists()
    assert not (tmp_path / "other.incomplete.h5").exists()


def test_cli_acquire_then_process(tmp_path: Path) -> None:
    out = tmp_path / "cli.h5"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["acquire", str(out), "--symbols", "10000", "--json"]) == 0
    summary = json.loads(buf.getvalue())
    assert summary["virtual_lab"] is True and summary["n_symbols"] == 10_000
    assert 0.075 <= summary["awg_amplitude_v"] <= 1.0
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["process", str(out), "--json"]) == 0
    processed = json.loads(buf.getvalue())
    # qkd-hw process runs on it unchanged; T of the virtual lab: fibre 5 dB, VOA 0 dB
    assert processed["locked"] is True
    assert processed["transmittance"] == pytest.approx(10 ** -0.5, abs=0.05)


def test_cli_acquire_with_a_lab_config(vlab: VirtualLab, tmp_path: Path) -> None:
    """A config without [virtual] (here: the running virtual lab's client config) is used as a
    real lab: the AWG amplitude and Tx power are the ones given, nothing is computed."""
    lab_toml = tmp_path / "client.toml"
    lab_toml.write_text(vlab.client_config_text)
    before = snapshot(vlab)
    out = tmp_path / "real.h5"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["acquire", "--lab", str(lab_toml), str(out), "--symbols", "5000",
                     "--awg-amplitude-v", "0.5", "--tx-power-mw", "12.5", "--json"]) == 0
    summary = json.loads(buf.getvalue())
    assert summary["virtual_lab"] is False
    assert summary["awg_amplitude_v"] == pytest.approx(0.5)
    assert summary["tx_power_mw"] == pytest.approx(12.5)
    with TraceReader(out) as r:
        assert r.complete and r.tx.n_symbols == 5000
    assert snapshot(vlab) == before
