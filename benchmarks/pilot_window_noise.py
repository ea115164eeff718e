"""Phase noise of the combined pilot windows against the truth, per hop x overlap (issue 19,
row 17 of ``dsp_penalty``): raw and leak-cancelled per-pilot phasors (``pilot_decimate``,
``cancel_pilot_leakage``) combined with the acquisition's weights, and the joint estimate of
their common phasor (``joint_pilot``, what the receiver uses), summed over ``h`` hops as the
Kalman-RTS tracker does; reported as r_s (the window's phase variance times its length)
over the bound's r_s = (1 + v_el) / sum P.

Usage: ``python -m benchmarks.pilot_window_noise [case] [n_symbols]`` (case = index into
``dsp_penalty.matrix()``, default 17; 2e5 symbols).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):   # `python benchmarks/pilot_window_noise.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.dsp_penalty import matrix
from dsp.pilot import cancel_pilot_leakage, joint_pilot, pilot_decimate, pilot_model
from qkd_hw.receiver import process_recording
from qkd_hw.sim.params import SimParams
from qkd_hw.sim.simulate import simulate_recording, true_phase
from qkd_hw.trace_io import TraceReader

HOPS = ((25, 1), (14, 3), (13, 3), (12, 3), (9, 3), (7, 5), (5, 5))
#: samples skipped at both ends (the tracker's edges are not the question here)
EDGE = 20000


def window_noise(x: np.ndarray, theta: np.ndarray, acq, fs: float, H: int, h: int,
                 r_bound: float) -> dict[str, float]:
    """r_s of the raw, the cancelled and the joint combined windows of h hops of H samples
    over the bound's r_s."""
    n = x.shape[0]
    off = acq.pilot.frequency_offset_hz
    freqs = [f + off for f in acq.link.pilot_frequencies_hz]
    e = np.exp(1j * (theta - 2 * np.pi * off / fs * np.arange(n)))
    j0 = -(-(acq.pilot.span_samples[0] + EDGE) // H)
    nj = (n - j0 * H - EDGE) // H
    zs = [pilot_decimate(x, fs, frequency_hz=f, decimation=H, first_sample=0,
                         first_block=j0, n_blocks=nj) for f in freqs]
    cz = cancel_pilot_leakage([z.copy() for z in zs], [f / fs for f in freqs], H, j0)
    truth = e[j0 * H:(j0 + nj) * H].reshape(nj, H).mean(axis=1)

    def win(z: np.ndarray) -> np.ndarray:
        return sum(z[i:z.shape[0] - (h - 1) + i] for i in range(h))

    out = {}
    joint = joint_pilot(zs, [f / fs for f in freqs], pilot_model(acq.pilot),
                        list(acq.pilot.pilot_weights), H, j0)
    for name, zz in (("raw", zs), ("cancelled", cz), ("joint", None)):
        comb = win(joint if zz is None else
                   sum(w * z for w, z in zip(acq.pilot.pilot_weights, zz, strict=True)))
        err = np.angle(comb * np.conj(win(truth)))
        err = np.angle(np.exp(1j * (err - np.angle(np.mean(np.exp(1j * err))))))
        out[name] = float(np.var(err) * H * h / r_bound)
    return out


def main(argv: list[str]) -> int:
    case = int(argv[0]) if argv else 17
    n_symbols = int(float(argv[1])) if len(argv) > 1 else 200_000
    p = SimParams(**matrix()[case])
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.h5"
        simulate_recording(path, p, seed=1, n_symbols=n_symbols, truth_phase=False)
        with TraceReader(path) as rd:
            x = rd.read("signal")
        acq = process_recording(path, pe_fraction=1.0).acquisition
    theta = true_phase(p, 1, x.shape[0])
    pw = [10 ** (v / 10) for v in p.pilot_powers_dbsn]
    if len(pw) == 1:
        pw = pw * len(p.pilot_frequencies_hz)
    r_bound = (1 + p.electronic_noise_snu) / sum(pw)
    print(f"case {case}: bound's r_s {r_bound:.4e}; weights "
          f"{[round(abs(w), 3) for w in acq.pilot.pilot_weights]}")
    for H, h in HOPS:
        got = window_noise(x, theta, acq, p.sample_rate_hz, H, h, r_bound)
        print(f"hop {H} x {h}: r_s / bound's: raw {got['raw']:.3f}, cancelled "
              f"{got['cancelled']:.3f}, joint {got['joint']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
