"""What one receiver run measured, and its flat JSON-ready summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dsp.estimation import Estimates
from dsp.lock import Acquisition
from dsp.noise import NoiseStats
from qkd_hw.keyrate import KeyRate
from qkd_hw.receiver.diagnostics import Diagnostics

__all__ = ["ReceiverResult"]


@dataclass
class ReceiverResult:
    """Everything ``process_recording`` measured (SNU unless named otherwise)."""

    path: str
    estimates: Estimates
    key_rate: KeyRate | None
    key_rate_error: str | None
    asymptotic_key_rate_bits_per_symbol: float | None
    acquisition: Acquisition
    n0_codes2: float
    n0_std_codes2: float
    shot_noise: NoiseStats
    electronic_noise: NoiseStats
    electronic_noise_snu: float
    electronic_noise_std_snu: float
    #: sd of xi (SNU; None when t_hat = 0) and of T from the shot-noise calibration alone
    #: (outside the PE bounds, ``dsp.snu.calibration_std``)
    excess_noise_calibration_std_snu: float | None
    transmittance_calibration_std: float
    residual_phase_rad: float
    frequency_offset_hz: float
    #: excess noise (SNU) of the pilots' phase-noise tails in the quantum band, a floor of
    #: pilot-aided carrier recovery (``dsp.carrier.pilot_leakage_floor``; inf when t_hat = 0)
    pilot_leakage_floor_snu: float
    n_received: int
    n_pe_symbols: int
    n_key_symbols: int
    samples: int
    seconds: float
    timing_log: list
    raw_key_path: str | None
    diagnostics: Diagnostics
    #: seed of the disclosed subset (``dsp.pe.disclosed_mask``)
    pe_seed: int
    #: wall seconds per stage: "acquisition" (head read, lock, clock probe), "noise", "signal"
    #: (the streaming pass; of which "signal_read_wait" waiting for the reader thread,
    #: "signal_pe_sums" the pair sums, "pilot", "phase", "matched_filter", "timing" the DSP),
    #: "estimation" (incl. the raw-key file)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    #: per capture: fraction of samples at the ADC rails as measured here (``dsp.clipping``)
    #: and as the writer recorded it (``clipped_fraction`` attribute, None if absent)
    clipped_fraction: dict[str, float] = field(default_factory=dict)
    clipped_fraction_recorded: dict[str, float | None] = field(default_factory=dict)
    #: per noise capture: its volts_per_code over the signal's (its variance was scaled by
    #: the square to the signal's codes)
    volts_per_code_ratio: dict[str, float] = field(default_factory=dict)

    def calibration_std(self) -> tuple[float | None, float]:
        """sd of xi (SNU; None when t_hat = 0) and of T from the shot-noise calibration alone
        (outside the PE bounds, conventions.md)."""
        return self.excess_noise_calibration_std_snu, self.transmittance_calibration_std

    def summary(self) -> dict[str, Any]:
        """Flat, JSON-ready dict (the ``--json`` output of ``qkd-hw process``)."""
        e, a = self.estimates, self.acquisition
        d: dict[str, Any] = {
            "path": self.path,
            "transmittance": e.transmittance, "transmittance_min": e.transmittance_min,
            "excess_noise_snu": e.excess_noise_snu, "excess_noise_max_snu": e.excess_noise_max_snu,
            "excess_noise_out_snu": e.excess_noise_out_snu,
            "electronic_noise_snu": self.electronic_noise_snu,
            "electronic_noise_std_snu": self.electronic_noise_std_snu,
            # the shot-noise calibration's own uncertainty, outside the PE bounds
            "excess_noise_calibration_std_snu": self.excess_noise_calibration_std_snu,
            "transmittance_calibration_std": self.transmittance_calibration_std,
            "t_eff": e.t_eff, "t_eff_min": e.t_eff_min, "t_eff_std": e.t_eff_std,
            "snr": e.snr, "sigma2": e.sigma2, "sigma2_max": e.sigma2_max,
            "n_pe": e.n_pe, "eps_pe": e.eps_pe,
            "key_rate_bits_per_symbol": (self.key_rate.key_rate_bits_per_symbol
                                         if self.key_rate else None),
            "key_rate_error": self.key_rate_error,
            "asymptotic_key_rate_bits_per_symbol": self.asymptotic_key_rate_bits_per_symbol,
            "frequency_offset_hz": self.frequency_offset_hz,
            "acquisition_frequency_offset_hz": a.pilot.frequency_offset_hz,
            "coarse_frequency_offset_hz": a.pilot.coarse_offset_hz,
            "linewidth_hz": a.pilot.linewidth_hz,
            # the estimate's 2-sd bound at zero linewidth: a smaller estimate is not a measurement
            "linewidth_resolution_hz": a.pilot.linewidth_resolution_hz,
            "linewidth_below_resolution": a.pilot.linewidth_below_resolution,
            "delay_samples": a.tau0,
            "clock_offset_ppm": a.clock_offset_ppm,
            "clock_offset_std_ppm": a.clock_offset_std_ppm,
            "clock_probe_first_samples": [p[0] for p in a.clock_probes],
            "spectral_inversion": a.sync.inverted,
            "residual_phase_rad": self.residual_phase_rad,
            "pilot_leakage_floor_snu": self.pilot_leakage_floor_snu,
            "n0_codes2": self.n0_codes2, "n0_std_codes2": self.n0_std_codes2,
            "lock": a.lock_metrics,
            "pilot_cn0_dbhz": list(a.pilot.pilot_cn0_dbhz),
            "carrier": {"method": a.carrier.method, "decimation": a.carrier.decimation,
                        "overlap": getattr(a.carrier, "overlap", 1),
                        "window_blocks": a.carrier.window, "bandwidth_hz": a.carrier.bandwidth_hz,
                        "predicted_phase_var_rad2": a.carrier.predicted_phase_var},
            "n_symbols_received": self.n_received, "n_pe_symbols": self.n_pe_symbols,
            "n_key_symbols": self.n_key_symbols,
            "samples": self.samples, "seconds": self.seconds,
            "throughput_msps": self.samples / self.seconds / 1e6 if self.seconds > 0 else None,
            "stage_seconds": dict(self.stage_seconds),
            "raw_key_path": self.raw_key_path,
            "pe_seed": self.pe_seed,
            "clipped_fraction": dict(self.clipped_fraction),
            "clipped_fraction_recorded": dict(self.clipped_fraction_recorded),
            "volts_per_code_ratio": dict(self.volts_per_code_ratio),
        }
        if self.key_rate is not None:
            d["key_rate"] = {k: v for k, v in self.key_rate.as_dict().items()
                             if isinstance(v, int | float | str | None)}
        return d
