"""Oracle (ideal) receiver of simulated recordings: what a perfect DSP would estimate.

It reads the recording *and its truth* and uses everything a real receiver
must estimate: the true per-sample phase ``theta_n`` (frequency offset +
laser phase), the true symbol instants ``delay + k fs / (Rs (1 + ppm 1e-6))``
and the known pilot tones, which it subtracts exactly. Then it

1. down-converts ``x[n] e^{-j (2 pi f_s n / fs + theta_n)}``,
2. applies the unit-energy RRC matched filter (same truncation as the
   transmitter, evaluated by linear interpolation in a 4096-per-symbol
   table of the closed form, independent of the simulator's 1024-phase
   synthesis table) at the true instants,
3. puts the shot-noise and electronic-noise captures through the same
   down-conversion and filter (no phase correction needed) at the same
   fractional instant pattern,
4. normalises to SNU and applies the estimators of ``conventions.md``.

The result is limited only by the statistics of the recording, which is
what the simulator tests check. With ``phase_lowpass_hz`` the receiver sees
the true phase only through a centred moving average (the "phase-noise
floor" of any pilot-aided receiver with that filter, see :func:`lowpass_phase`).

numpy/scipy plus one numba kernel (the matched filter at fractional
instants, ``_mf_kernel``, tested against a naive numpy version). In memory:
about 50 bytes per signal sample (1e7 samples: 0.5 GB, ~2 s); use
``max_symbols`` on longer recordings.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numba
import numpy as np
from scipy.ndimage import uniform_filter1d

from qkd_hw.errors import QkdHwError
from qkd_hw.sim.params import SimParams
from qkd_hw.sim.pulse import truncated_rrc
from qkd_hw.sim.simulate import true_phase
from qkd_hw.sim.waveform import NJIT_PARALLEL
from qkd_hw.trace_io import TraceReader, read_truth, read_truth_dataset

#: table resolution of the oracle's matched filter (points per symbol, linear interpolation)
MF_TABLE_RESOLUTION = 4096
_MIX_CHUNK = 1 << 20


@dataclass(frozen=True)
class OracleResult:
    """Estimates of the oracle receiver (conventions.md estimators and units).

    ``x`` and ``y`` (complex, SNU) are Alice's symbols and Bob's matched-filter
    outputs of the symbols used, if ``keep_symbols`` was set.
    """

    detection: str
    transmittance: float
    excess_noise_snu: float
    electronic_noise_snu: float
    t_eff: float
    sigma2: float
    snr: float
    n0_codes2: float  # shot-noise variance per quadrature at the matched-filter output
    m: int  # real (x, y) pairs used: 2 per symbol heterodyne, 1 homodyne
    n_symbols: int
    first_symbol: int
    n_shot: int  # matched-filter outputs (complex) of the shot-noise capture
    n_electronic: int
    x: np.ndarray | None = field(default=None, repr=False)
    y: np.ndarray | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, float | int | str]:
        return {k: getattr(self, k) for k in (
            "detection", "transmittance", "excess_noise_snu", "electronic_noise_snu", "t_eff",
            "sigma2", "snr", "n0_codes2", "m", "n_symbols", "first_symbol", "n_shot",
            "n_electronic")}


# ------------------------------------------------------------------------ matched filter
@numba.njit(**NJIT_PARALLEL)
def _mf_kernel(bb_re, bb_im, centres, tab, res, half, sps, out_re, out_im):  # pragma: no cover
    step = res / sps
    for k in numba.prange(centres.shape[0]):
        c = centres[k]
        n_lo = math.ceil(c - half * sps)
        n_hi = math.floor(c + half * sps)
        acc_re = 0.0
        acc_im = 0.0
        x0 = ((n_lo - c) / sps + half) * res
        for j in range(n_hi - n_lo + 1):
            x = x0 + j * step
            i = int(x)
            w = x - i
            h = tab[i] + w * (tab[i + 1] - tab[i])
            acc_re += h * bb_re[n_lo + j]
            acc_im += h * bb_im[n_lo + j]
        out_re[k] = acc_re
        out_im[k] = acc_im


def mf_table(rolloff: float, half_span: int, resolution: int = MF_TABLE_RESOLUTION) -> np.ndarray:
    """Truncated unit-energy RRC on ``u = -L + i / resolution`` (two guard zeros at the end)."""
    u = -half_span + np.arange(2 * half_span * resolution + 3) / resolution
    return truncated_rrc(u, rolloff, half_span)


def matched_filter(baseband: np.ndarray, centres: np.ndarray, *, rolloff: float,
                   half_span: int, sps: float,
                   resolution: int = MF_TABLE_RESOLUTION) -> np.ndarray:
    """Unit-energy RRC matched filter evaluated at fractional sample instants.

    ``y_k = sum_n z[n] p((n - c_k) / sps) / sqrt(sps)`` over ``|n - c_k| <= L sps``.

    Parameters
    ----------
    baseband : ndarray of complex, shape (n,)
        Down-converted samples z.
    centres : ndarray of float, shape (k,)
        Instants c_k in samples; each window must lie inside ``[0, n)``.
    rolloff, half_span, sps : float, int, float
        Pulse roll-off, half span L (symbols), samples per symbol.

    Returns
    -------
    ndarray of complex128, shape (k,)
    """
    z = np.asarray(baseband)
    c = np.ascontiguousarray(centres, dtype=np.float64)
    if z.ndim != 1 or c.ndim != 1:
        raise ValueError("baseband and centres must be 1-D")
    if c.size and (math.ceil(c.min() - half_span * sps) < 0
                   or math.floor(c.max() + half_span * sps) >= z.shape[0]):
        raise ValueError(f"matched-filter windows leave the {z.shape[0]}-sample array "
                         f"(centres {c.min():.1f}..{c.max():.1f}, half window "
                         f"{half_span * sps:.1f})")
    re = np.ascontiguousarray(z.real, dtype=np.float64)
    im = np.ascontiguousarray(z.imag if np.iscomplexobj(z) else np.zeros(z.shape),
                              dtype=np.float64)
    tab = mf_table(rolloff, half_span, resolution)
    out_re = np.empty(c.shape[0])
    out_im = np.empty(c.shape[0])
    _mf_kernel(re, im, c, tab, float(resolution), int(half_span), float(sps), out_re, out_im)
    return (out_re + 1j * out_im) / math.sqrt(sps)


# ------------------------------------------------------------------------ phase floor
def lowpass_phase(theta: np.ndarray, *, sample_rate_hz: float, frequency_offset_hz: float,
                  bandwidth_hz: float) -> np.ndarray:
    """The true phase seen through a centred moving average (the phase-noise floor).

    The known frequency-offset ramp is removed, the laser phase averaged over
    ``N = round(fs / (2 B))`` samples (a boxcar whose one-sided noise-equivalent
    bandwidth is ``B``; zero phase, so a ramp passes unchanged), the ramp added
    back. For a Wiener phase of linewidth ``dnu`` the residual error has
    variance ``2 pi dnu N / (12 fs)`` (``D tau / 12`` with ``D = 2 pi dnu``,
    ``tau = N / fs``), which in excess noise referred to the input is about
    ``V_A`` times that.
    """
    if not bandwidth_hz > 0:
        raise ValueError(f"bandwidth_hz must be > 0, got {bandwidth_hz!r}")
    n_avg = max(1, round(sample_rate_hz / (2.0 * bandwidth_hz)))
    ramp = 2.0 * math.pi * frequency_offset_hz / sample_rate_hz * np.arange(theta.shape[0])
    phi = np.asarray(theta, dtype=np.float64) - ramp
    return uniform_filter1d(phi, size=n_avg, mode="nearest") + ramp


# ------------------------------------------------------------------------ receiver
def oracle_receive(
    path: str | os.PathLike[str],
    *,
    max_symbols: int | None = None,
    phase_lowpass_hz: float | None = None,
    phase_estimate_rad: np.ndarray | None = None,
    remove_pilots: bool | str = True,
    keep_symbols: bool = False,
) -> OracleResult:
    """Run the oracle receiver on a simulated recording (needs ``/truth``).

    Parameters
    ----------
    path : path
        Recording written by :func:`qkd_hw.sim.simulate_recording`.
    max_symbols : int, optional
        Use only the first ``max_symbols`` symbols (and the signal they need).
    phase_lowpass_hz : float, optional
        See the true phase only through :func:`lowpass_phase` with this bandwidth.
    phase_estimate_rad : ndarray, optional
        Down-convert with this per-sample phase (same convention as
        ``/truth/phase_rad``, covering the signal) instead of the truth: everything
        else stays ideal, so the result isolates the cost of a receiver's phase
        estimate. Excludes ``phase_lowpass_hz``.
    remove_pilots : bool or "estimate"
        Subtract the known pilot tones before down-conversion (default: with the true
        phase, so the pilots vanish exactly). ``"estimate"``: subtract them with the phase the
        receiver de-rotates with (``phase_lowpass_hz`` / ``phase_estimate_rad``): what is left
        is ``A cos(w n + theta) - A cos(w n + theta_rx)``, the part of the pilots' phase noise
        the receiver cannot follow -- the pilot skirt every pilot-aided receiver sees, without
        the stop-band leakage of the pure tone through the oracle's (untapered) filter that
        ``False`` (no subtraction) adds.
    keep_symbols : bool
        Return Alice's and Bob's symbols in the result.
    """
    truth = read_truth(path)
    if truth is None or "seed" not in truth.extra:
        raise QkdHwError(f"{path}: no simulator truth in /truth (not made by qkd-hw simulate?)")
    params = SimParams.from_truth(truth)
    seed = int(truth.extra["seed"])
    with TraceReader(path) as rd:
        k_total = rd.tx.n_symbols
        k_use = k_total if max_symbols is None else min(k_total, int(max_symbols))
        sps = params.samples_per_symbol_eff
        stop = min(rd.adc["signal"].length,
                   math.floor(params.delay_samples + (k_use - 1) * sps
                              + params.half_span * sps) + 1)
        signal = rd.read("signal", 0, stop)
        shot = rd.read("shot_noise")
        elec = rd.read("electronic_noise")
        symbols = rd.symbols(0, k_use)
    theta = read_truth_dataset(path, "phase_rad")
    theta = true_phase(params, seed, stop) if theta is None else np.asarray(theta[:stop],
                                                                           np.float64)
    return oracle_from_arrays(signal, shot, elec, symbols, params, theta,
                              phase_lowpass_hz=phase_lowpass_hz,
                              phase_estimate_rad=phase_estimate_rad, remove_pilots=remove_pilots,
                              keep_symbols=keep_symbols)


def oracle_from_arrays(
    signal: np.ndarray,
    shot: np.ndarray,
    electronic: np.ndarray,
    symbols: np.ndarray,
    params: SimParams,
    theta: np.ndarray,
    *,
    phase_lowpass_hz: float | None = None,
    phase_estimate_rad: np.ndarray | None = None,
    remove_pilots: bool | str = True,
    keep_symbols: bool = False,
) -> OracleResult:
    """The oracle on in-memory captures (codes) and true phase ``theta`` (rad per sample).

    ``signal[n]`` must start at sample 0 of the recording; ``theta`` must
    cover it. Symbols whose matched-filter window leaves the signal are
    skipped (reported as ``first_symbol`` / ``n_symbols``).
    """
    p = params
    sps, half = p.samples_per_symbol_eff, p.half_span
    n_sig = signal.shape[0]
    if theta.shape[0] < n_sig:
        raise ValueError(f"theta has {theta.shape[0]} samples, the signal {n_sig}")
    theta = np.asarray(theta[:n_sig], dtype=np.float64)
    if remove_pilots not in (True, False, "estimate"):
        raise ValueError(f"remove_pilots must be True, False or 'estimate', got "
                         f"{remove_pilots!r}")
    theta_rx = _receiver_phase(theta, p, phase_lowpass_hz, phase_estimate_rad)
    bb = _baseband(signal, theta, theta_rx, p, remove_pilots)

    k = np.arange(symbols.shape[0])
    centres = p.delay_samples + k * sps
    ok = (np.ceil(centres - half * sps) >= 0) & (np.floor(centres + half * sps) < n_sig)
    if not ok.any():
        raise QkdHwError("no symbol has its whole matched-filter window inside the signal")
    first = int(np.argmax(ok))
    used = np.flatnonzero(ok)
    y_codes = matched_filter(bb, centres[used], rolloff=p.rolloff, half_span=half, sps=sps)

    var_sh, n_sh = _capture_variance(shot, p)
    var_el, n_el = _capture_variance(electronic, p)
    n0 = var_sh - var_el
    if not n0 > 0:
        raise QkdHwError(f"shot-noise variance {var_sh:.4g} <= electronic {var_el:.4g} codes^2")
    v_el = var_el / n0
    y = y_codes / math.sqrt(n0)
    a = symbols[used].astype(np.complex128)
    if p.detection == "heterodyne":
        xr = np.concatenate([a.real, a.imag])
        yr = np.concatenate([y.real, y.imag])
        share = 0.5
    else:
        xr, yr = a.real, y.real
        share = 1.0
    t_hat = float(np.dot(xr, yr) / np.dot(xr, xr))
    sigma2 = float(np.mean((yr - t_hat * xr) ** 2))
    return OracleResult(
        detection=p.detection,
        transmittance=t_hat ** 2 / (share * p.efficiency),
        excess_noise_snu=(sigma2 - 1.0 - v_el) / t_hat ** 2,
        electronic_noise_snu=v_el,
        t_eff=t_hat,
        sigma2=sigma2,
        snr=t_hat ** 2 * p.modulation_variance_snu / sigma2,
        n0_codes2=n0,
        m=int(xr.shape[0]),
        n_symbols=int(used.shape[0]),
        first_symbol=first,
        n_shot=n_sh,
        n_electronic=n_el,
        x=a if keep_symbols else None,
        y=y if keep_symbols else None,
    )


def _receiver_phase(theta: np.ndarray, p: SimParams, phase_lowpass_hz: float | None,
                    phase_estimate_rad: np.ndarray | None) -> np.ndarray:
    """The phase the oracle de-rotates by: the truth ``theta``, a given estimate, or the truth
    low-passed to ``phase_lowpass_hz``."""
    if phase_estimate_rad is not None:
        if phase_lowpass_hz is not None:
            raise ValueError("give phase_lowpass_hz or phase_estimate_rad, not both")
        theta_rx = np.asarray(phase_estimate_rad, dtype=np.float64)
        n_sig = theta.shape[0]
        if theta_rx.ndim != 1 or theta_rx.shape[0] < n_sig:
            raise ValueError(f"phase_estimate_rad must be 1-D with >= {n_sig} samples, "
                             f"got shape {theta_rx.shape}")
    elif phase_lowpass_hz is not None:
        theta_rx = lowpass_phase(theta, sample_rate_hz=p.sample_rate_hz,
                                 frequency_offset_hz=p.frequency_offset_hz,
                                 bandwidth_hz=phase_lowpass_hz)
    else:
        theta_rx = theta
    return theta_rx


def _baseband(signal: np.ndarray, theta: np.ndarray, theta_rx: np.ndarray, p: SimParams,
              remove_pilots: bool | str) -> np.ndarray:
    """The signal capture without its pilots (at the true or the receiver's phase), mixed to
    baseband and de-rotated by ``theta_rx``."""
    fs, n_sig = p.sample_rate_hz, signal.shape[0]
    bb = np.empty(n_sig, dtype=np.complex128)
    for a in range(0, n_sig, _MIX_CHUNK):  # chunked: temporaries stay small
        b = min(n_sig, a + _MIX_CHUNK)
        n = np.arange(a, b, dtype=np.float64)
        x = np.asarray(signal[a:b], dtype=np.float64)
        if remove_pilots:
            th_p = theta_rx[a:b] if remove_pilots == "estimate" else theta[a:b]
            for f_p, a_p, ph_p in zip(p.pilot_frequencies_hz, p.pilot_amplitudes_codes,
                                      p.pilot_phases_rad, strict=True):
                x = x - a_p * np.cos(2.0 * math.pi * _frac(f_p / fs * n) + th_p + ph_p)
        carrier = 2.0 * math.pi * _frac(p.signal_frequency_hz / fs * n)
        bb[a:b] = x * np.exp(-1j * (carrier + theta_rx[a:b]))
    return bb


def _capture_variance(capture: np.ndarray, p: SimParams) -> tuple[float, int]:
    """Per-quadrature variance of a noise capture through the same chain, and its count.

    Same down-conversion (signal IF, no phase) and matched filter at the same
    fractional pattern ``delay + k sps`` (shifted by whole samples so the
    windows fit); both quadratures pooled (the noise is phase-insensitive).
    """
    fs, sps, half = p.sample_rate_hz, p.samples_per_symbol_eff, p.half_span
    c = np.asarray(capture)
    bb = np.empty(c.shape[0], dtype=np.complex128)
    for a in range(0, c.shape[0], _MIX_CHUNK):
        b = min(c.shape[0], a + _MIX_CHUNK)
        n = np.arange(a, b, dtype=np.float64)
        bb[a:b] = c[a:b].astype(np.float64) * np.exp(
            -2j * math.pi * _frac(p.signal_frequency_hz / fs * n))
    c0 = (p.delay_samples % 1.0) + math.ceil(half * sps) + 1
    count = math.floor((c.shape[0] - 2 - half * sps - c0) / sps) + 1
    if count < 100:
        raise QkdHwError(f"noise capture of {c.shape[0]} samples is too short for the "
                         f"matched filter ({2 * half * sps:.0f} samples)")
    y = matched_filter(bb, c0 + np.arange(count) * sps, rolloff=p.rolloff, half_span=half,
                       sps=sps)
    return float((np.var(y.real) + np.var(y.imag)) / 2.0), count


def _frac(v: np.ndarray) -> np.ndarray:
    return v - np.floor(v)
