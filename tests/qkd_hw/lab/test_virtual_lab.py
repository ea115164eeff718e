"""The virtual lab through the drivers: every measurement follows the instruments' state and
the config's [virtual] physics. References are the documented equations evaluated here from
the config's numbers (qkd_hw/lab/model.py docstring), not the model's code."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator

import numpy as np
import pytest

from drivers.base import create_instrument
from drivers.thorlabs_mbx import MzmMode
from qkd_hw.errors import ConfigError
from qkd_hw.lab import VirtualLab, example_path, virtual_lab
from qkd_hw.lab.snapshot import lab_snapshot_json
from qkd_hw.labconfig import LabConfig, load_lab_config

N = 200_000  # samples per capture: variance estimates to ~0.3 % (1 sigma)
RANGE_V = 0.8  # digitizer range: one code is RANGE_V / 65536 V
FS = 64e9  # ADC at the AWG's rate: record sample k sees AWG sample k
H_NU = 6.62607015e-34 * 299_792_458.0 / 1550e-9


def config(**virtual: float) -> LabConfig:
    base = load_lab_config(example_path(virtual=True))
    assert base.virtual is not None
    return dataclasses.replace(base, virtual=dataclasses.replace(base.virtual, **virtual))


class Bench:
    """The virtual lab's instruments opened through their drivers (client config)."""

    def __init__(self, lab: VirtualLab) -> None:
        self.lab = lab
        assert lab.client_config is not None
        cfg = lab.client_config
        self.inst = {role: create_instrument(cfg.role(role)).open()
                     for role in ("lo_laser", "signal_laser", "detector", "digitizer", "switch",
                                  "voa", "awg", "bias_controller", "power_meter")}
        self.adc = self.inst["digitizer"]
        self.adc.sample_rate_hz = FS
        self.adc.record_length = N
        self.adc.channel(1).range_v = RANGE_V
        self.inst["detector"].enabled = True
        self.inst["voa"].channel(1).output_enabled = True
        self.inst["voa"].channel(1).set_attenuation(0.0)

    def close(self) -> None:
        for inst in self.inst.values():
            inst.close()

    def lo(self, mw: float | None) -> None:
        laser = self.inst["lo_laser"]
        if mw is None:
            laser.emission = False
            return
        laser.power_setpoint_mw = mw
        laser.emission = True

    def capture(self) -> np.ndarray:
        return self.adc.acquire(1, timeout_s=10).astype(np.float64)

    def volts_var(self) -> float:
        """Variance of a capture in V^2 (the 1/12 code^2 of rounding removed)."""
        x = self.capture()
        return (x.var() - 1 / 12) * (RANGE_V / 65536) ** 2


@pytest.fixture(scope="module")
def lab() -> Iterator[VirtualLab]:
    cfg = config(laser_linewidth_hz=0.0, frequency_offset_hz=0.0, tx_attenuation_db=40.0,
                 fiber_loss_db=3.0)
    with VirtualLab(cfg).start() as vlab:
        yield vlab


@pytest.fixture(scope="module")
def bench(lab: VirtualLab) -> Iterator[Bench]:
    b = Bench(lab)
    yield b
    b.close()


def shot_var_v2(p, lo_mw: float) -> float:
    """Shot + electronic noise variance at the detector output (V^2), documented model."""
    return p.shot_noise_rms_v ** 2 * (min(lo_mw, p.lo_saturation_mw) / p.lo_reference_mw
                                      + p.electronic_noise_snu)


# -- LO, detector ------------------------------------------------------------------------------


def test_lo_power_sets_the_noise_variance_linearly_until_the_detector_saturates(bench):
    p = bench.lab.physics
    bench.inst["switch"].select_channel(2)  # blocked: shot noise only
    powers = [1.0, 2.0, 4.0, 8.0, 16.0, 20.0]
    got = []
    for mw in powers:
        bench.lo(mw)
        got.append(bench.volts_var())
    for mw, var in zip(powers, got, strict=True):
        assert var == pytest.approx(shot_var_v2(p, mw), rel=0.02), mw
    # linear below saturation: slope shot_noise_rms_v^2 / lo_reference_mw per mW
    slope = np.polyfit(powers[:4], got[:4], 1)[0]
    assert slope == pytest.approx(p.shot_noise_rms_v ** 2 / p.lo_reference_mw, rel=0.03)
    # beyond lo_saturation_mw (12 mW) the variance no longer grows
    assert got[5] == pytest.approx(got[4], rel=0.02)
    assert got[5] < 0.8 * (got[0] + slope * (20.0 - 1.0))


def test_lo_off_leaves_the_electronic_noise_only(bench):
    p = bench.lab.physics
    bench.inst["switch"].select_channel(1)
    bench.lo(None)
    assert bench.volts_var() == pytest.approx(
        p.electronic_noise_snu * p.shot_noise_rms_v ** 2, rel=0.02)


def test_truth_states_the_electronic_noise_the_captures_show(bench):
    bench.inst["switch"].select_channel(2)
    bench.lo(3.0)
    truth = bench.lab.truth()
    shot = bench.capture().var()
    bench.lo(None)
    el = bench.capture().var()
    assert truth["electronic_noise_snu"] == pytest.approx(el / (shot - el), rel=0.03)
    assert truth["shot_noise_rms_codes"] ** 2 == pytest.approx(shot - el, rel=0.02)
    assert bench.lab.truth()["electronic_noise_snu"] is None  # LO off: no shot-noise unit
    bench.inst["switch"].select_channel(1)
    assert truth["transmittance"] == 0.0  # it was taken on the blocking port


def test_detector_photocurrents_follow_the_lo(bench):
    p = bench.lab.physics
    det = bench.inst["detector"]
    for mw in (2.0, 7.5):
        bench.lo(mw)
        half_ua = p.responsivity_a_per_w * mw / 2 * 1e3
        assert det.dc_current_ua(1) == pytest.approx(half_ua * (1 + p.detector_imbalance),
                                                     abs=1e-3)
        assert det.dc_current_ua(2) == pytest.approx(half_ua * (1 - p.detector_imbalance),
                                                     abs=1e-3)


# -- signal path -------------------------------------------------------------------------------


def upload_gaussian(bench: Bench, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A random drive on both AWG channels (int8 codes, 65536 samples); returns the volts
    each channel outputs (M8195A: code / 127 * amplitude / 2)."""
    awg = bench.inst["awg"]
    rng = np.random.default_rng(seed)
    volts = []
    for ch in (1, 2):
        codes = np.clip(np.rint(rng.normal(0, 40, 65536)), -127, 127).astype(np.int8)
        awg.channel(ch).upload(codes)
        awg.channel(ch).amplitude_v = 1.0
        awg.channel(ch).output_enabled = True
        volts.append(codes / 127.0 * 1.0 / 2)
    awg.sample_rate_hz = FS
    awg.start()
    return volts[0], volts[1]


def reference_field(p, d_i: np.ndarray, d_q: np.ndarray, theta: float, n: int) -> np.ndarray:
    """Alice's documented output field per ADC sample for the drive ``d`` (cyclic)."""
    kappa = math.pi * p.rf_gain / (2 * p.modulator_v_pi_rf_v)
    m = (np.cos(theta + kappa * d_i) + 1j * np.cos(theta + kappa * d_q)) / math.sqrt(2)
    p_alice = 10e-3 * 10 ** (-p.tx_attenuation_db / 10)  # 10 mW set point
    s = 2 * math.sqrt(p_alice / (H_NU * FS)) * m
    return np.resize(s, n)


def transmittance_estimate(bench: Bench, s: np.ndarray, shot_var_codes: float) -> float:
    """Naive T: least squares of the capture on Re s, Im s (constant phase), amplitude
    sigma_shot sqrt(eta T)."""
    x = bench.capture()
    x -= x.mean()
    a = np.column_stack([s.real, s.imag])
    coef, *_ = np.linalg.lstsq(a, x, rcond=None)
    amp2 = float(coef @ coef)
    return amp2 / (shot_var_codes * bench.lab.physics.detector_efficiency)


@pytest.fixture(scope="module")
def modulated(bench):
    bench.inst["signal_laser"].power_setpoint_mw = 10.0
    bench.inst["signal_laser"].emission = True
    mbx = bench.inst["bias_controller"]
    mbx.mode = MzmMode.AUTO_NULL
    d_i, d_q = upload_gaussian(bench)
    bench.lo(5.0)
    # the shot noise alone, measured: LO on and signal blocked, minus LO off
    bench.inst["switch"].select_channel(2)
    shot = bench.capture().var()
    bench.lo(None)
    el = bench.capture().var()
    bench.lo(5.0)
    bench.inst["switch"].select_channel(1)
    s = reference_field(bench.lab.physics, d_i, d_q, math.pi / 2, N)
    return s, shot - el


def test_switch_on_the_blocking_port_removes_the_signal(bench, modulated):
    s, _shot = modulated

    def correlation() -> float:
        x = bench.capture()
        x -= x.mean()
        c = [np.dot(x, q) / math.sqrt(np.dot(x, x) * np.dot(q, q)) for q in (s.real, s.imag)]
        return math.hypot(*c)

    bench.inst["switch"].select_channel(1)
    assert correlation() > 20 / math.sqrt(N)
    bench.inst["switch"].select_channel(2)
    assert correlation() < 4 / math.sqrt(N)
    bench.inst["switch"].select_channel(1)


@pytest.mark.parametrize("voa_db", [0.0, 3.0, 10.0])
def test_voa_and_fibre_set_the_transmittance_of_a_capture(bench, modulated, voa_db):
    s, shot = modulated
    p = bench.lab.physics
    bench.inst["voa"].channel(1).set_attenuation(voa_db)
    try:
        t_hat = transmittance_estimate(bench, s, shot)
    finally:
        bench.inst["voa"].channel(1).set_attenuation(0.0)
    expected = 10 ** (-(p.fiber_loss_db + voa_db) / 10)
    # statistics: per-sample SNR eta T |s|^2 ~ 1e-2 .. 1e-1 over 2e5 samples: a few per cent
    assert t_hat == pytest.approx(expected, rel=0.06)


def test_power_meter_sees_the_modulation_depth_at_the_null(bench, modulated):
    p = bench.lab.physics
    awg = bench.inst["awg"]
    rng = np.random.default_rng(1)  # the drive upload_gaussian played
    d = [np.clip(np.rint(rng.normal(0, 40, 65536)), -127, 127) / 127 / 2 for _ in (1, 2)]
    kappa = math.pi * p.rf_gain / (2 * p.modulator_v_pi_rf_v)
    # at the null cos(pi/2 + kappa d) = -sin(kappa d): only the modulation reaches the tap

    def expected_w(scale: float) -> float:
        depth = np.mean((np.sin(kappa * scale * d[0]) ** 2
                         + np.sin(kappa * scale * d[1]) ** 2) / 2)
        return 10e-3 * float(depth) * 10 ** (-p.power_meter_tap_db / 10)

    assert bench.inst["power_meter"].measure_power_w() == pytest.approx(expected_w(1), rel=1e-5)
    for ch in (1, 2):  # half the drive: about a quarter of the depth
        awg.channel(ch).amplitude_v = 0.5
    try:
        got = bench.inst["power_meter"].measure_power_w()
        assert got == pytest.approx(expected_w(0.5), rel=1e-5)
        assert got == pytest.approx(expected_w(1) / 4, rel=0.02)
    finally:
        for ch in (1, 2):
            awg.channel(ch).amplitude_v = 1.0


# -- bias working point ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def offset_bench() -> Iterator[Bench]:
    """A lab whose lasers beat at 32 MHz: a leaked carrier is a tone in DFT bin 100."""
    cfg = config(laser_linewidth_hz=0.0, frequency_offset_hz=32e6, tx_attenuation_db=40.0,
                 fiber_loss_db=3.0)
    with VirtualLab(cfg).start() as lab:
        b = Bench(lab)
        b.inst["signal_laser"].power_setpoint_mw = 10.0
        b.inst["signal_laser"].emission = True
        b.inst["switch"].select_channel(1)
        b.lo(5.0)
        yield b
        b.close()


@pytest.mark.parametrize("bias_v", [5.7, 5.2, 3.0])
def test_bias_working_point_sets_power_meter_and_carrier_leakage(offset_bench, bias_v):
    bench = offset_bench
    p = bench.lab.physics
    mbx, pm = bench.inst["bias_controller"], bench.inst["power_meter"]
    mbx.hold_voltage_v = bias_v
    mbx.mode = MzmMode.MANUAL  # the AWG is stopped: no drive, the carrier alone
    theta = math.pi * (bias_v - p.bias_v_offset_v) / (2 * p.bias_v_pi_v)
    carrier = math.cos(theta) ** 2  # |M|^2 at d = 0, both arms
    expected_w = 10e-3 * carrier * 10 ** (-p.power_meter_tap_db / 10)
    assert pm.measure_power_w() == pytest.approx(expected_w, rel=1e-5, abs=1e-12)
    assert mbx.tap_power_mw == pytest.approx(10.0 * carrier, abs=2e-3)
    # at the detector: a tone at the beat frequency of amplitude sigma_shot sqrt(eta T) |s|
    x = bench.capture()
    tone = 2 * abs(np.dot(x, np.exp(-2j * math.pi * 100 * np.arange(N) / N))) / N
    sigma = p.shot_noise_rms_v * math.sqrt(5.0 / p.lo_reference_mw) / (RANGE_V / 65536)
    s_abs = 2 * math.sqrt(10e-3 * 10 ** (-p.tx_attenuation_db / 10) / (H_NU * FS) * carrier)
    expected = sigma * math.sqrt(p.detector_efficiency * 10 ** (-p.fiber_loss_db / 10)) * s_abs
    # rms of the noise (shot + electronic) in one DFT bin, as an amplitude
    noise = 2 * math.sqrt(shot_var_v2(p, 5.0) / N) / (RANGE_V / 65536)
    assert abs(tone - expected) < 0.01 * expected + 4 * noise


def test_lab_snapshot_names_roles_and_reads_the_instruments_state(bench):
    cfg = bench.lab.client_config
    bench.inst["voa"].channel(1).set_attenuation(4.5)
    try:
        by_name = {cfg.role(role).name: inst for role, inst in bench.inst.items()}
        snap = json.loads(lab_snapshot_json(cfg, by_name))
    finally:
        bench.inst["voa"].channel(1).set_attenuation(0.0)
    insts = snap["instruments"]
    assert {v["role"] for v in insts.values()} == set(bench.inst)
    voa = insts[cfg.role("voa").name]
    assert voa["channels"]["1"]["attenuation_db"]["value"] == pytest.approx(4.5)
    assert insts[cfg.role("digitizer").name]["properties"]["sample_rate_hz"]["value"] == FS
    assert insts[cfg.role("lo_laser").name]["identity"]  # the module's serial number


# -- the [virtual] table -----------------------------------------------------------------------


@pytest.mark.parametrize("v_el", [0.05, 0.4])
def test_a_changed_virtual_value_changes_the_measurement(v_el):
    with VirtualLab(config(electronic_noise_snu=v_el)).start() as lab:
        b = Bench(lab)
        try:
            b.lo(None)
            assert b.volts_var() == pytest.approx(v_el * lab.physics.shot_noise_rms_v ** 2,
                                                  rel=0.02)
        finally:
            b.close()


def test_virtual_lab_context_gives_the_client_config_of_running_emulators():
    with virtual_lab(example_path(virtual=True)) as cfg:
        assert cfg.virtual is None
        assert cfg.roles.instruments["lo_laser"] == "laser_lo"
        with create_instrument(cfg.role("switch")) as sw:
            sw.select_channel(3)
            assert sw.read_channel() == 3


def test_a_config_without_virtual_table_is_refused():
    with pytest.raises(ConfigError, match=r"no \[virtual\] table"):
        VirtualLab(load_lab_config(example_path(virtual=False)))


def test_a_role_with_a_driver_the_model_does_not_know_is_refused():
    base = config()
    roles = dict(base.roles.instruments, lo_laser="bias_i")
    bad = dataclasses.replace(base, roles=dataclasses.replace(base.roles, instruments=roles))
    with pytest.raises(ConfigError, match=r"roles\.lo_laser = 'bias_i' has driver"):
        VirtualLab(bad)


def test_excess_noise_is_xi_referred_to_the_input_in_the_heterodyne_convention():
    # conventions.md: Var(z) = 1 + v_el + t^2 xi with t^2 = eta T / 2 (heterodyne). White
    # excess noise in the field lands in the IF band and in its image, which one balanced
    # detector folds together: the detected excess over the shot noise must be eta T xi / 2
    # (it was eta T xi: a receiver measured twice the configured xi)
    from qkd_hw.lab.model import LinkModel, LinkState

    xi = 2.0
    cfg = config(excess_noise_snu=xi, electronic_noise_snu=0.0, fiber_loss_db=3.0)
    p = cfg.virtual
    model = LinkModel(p, switch_signal_port=1)
    st = LinkState(tx_power_mw=10.0, lo_power_mw=5.0, bias_v=p.bias_v_offset_v + p.bias_v_pi_v,
                   drive_i=None, drive_q=None, awg_sample_rate_hz=FS, voa_transmission=1.0,
                   switch_port=1, detector_enabled=True, detector_gain_v_per_a=1e4,
                   adc_sample_rate_hz=FS, adc_range_v=RANGE_V, adc_offset_v=0.0)
    n = 2_000_000
    assert np.abs(model.alice_field(st, 1000)).max() < 1e-6   # no drive at the null
    x = model.detector_volts(st, n, np.random.default_rng(3))
    excess = x.var() / model.shot_noise_rms_v(st) ** 2 - 1.0
    t2 = p.detector_efficiency * model.transmittance(st) / 2
    # sd of a variance ratio from n samples: sqrt(2/n) (1 + excess)
    assert excess == pytest.approx(t2 * xi, abs=5 * math.sqrt(2 / n) * (1 + excess))
    assert model.truth(st)["excess_noise_snu"] == xi
