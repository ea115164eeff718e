"""Matched-filter span against truncation penalty: analytic terms and paired pipeline runs.

Analytic (``--analytic``): for each roll-off and span, the receiver's taps
(``dsp.rrc.MatchedFilterBank``: the least-squares design, or the Kaiser-tapered RRC with
``--taper``) against the simulator's transmit pulse (``qkd_hw.sim.pulse.truncated_rrc``, its
automatic span), averaged over timing offsets ``mu = p / 8``:

* ``isi`` = V_A sum_{j != 0} q_j^2 / q_0^2 (mSNU at the channel input, V_A 5): the
  inter-symbol interference of the truncated / shaped filter, which the estimators count as
  excess noise;
* ``loss`` = 1 - q_0^2: the mismatch loss (unit-energy taps; the transmittance estimate falls
  by this fraction, excess noise does not move: the noise is calibrated through the same taps);
* ``stop`` = the largest |H(f)|^2 relative to the pass band beyond the band edge plus a
  guard (dB); a pilot of P dB over the per-sample shot noise leaks
  ``10^(P/10) sps |H|^2 / (2 t^2)`` SNU (channel input, heterodyne, t^2 = eta T / 2);
* ``leak`` = that leakage at the pilots of the DSP-penalty table's links (mSNU), at 22 dB.

Paired (``--paired``): one simulated recording per (penalty-table row, seed), the pipeline
run with each span on it, xi with the oracle's shot-noise calibration; the differences between
spans are paired (same noise), the ``impl`` column's change.

Usage::

    python -m benchmarks.mf_span --analytic [--rolloffs 0.1,0.2] [--spans 12,16] [--taper 5]
    python -m benchmarks.mf_span --paired --rows 1,4 --spans 32,16 [--seeds 1,2] [--symbols 1e6]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):   # `python benchmarks/mf_span.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from dsp.options import ReceiverOptions
from dsp.rrc import MatchedFilterBank
from qkd_hw.sim.pulse import auto_span_symbols, truncated_rrc

VA = 5.0
T_EFF2 = 0.7 * 0.5 / 2          # heterodyne t^2 of the penalty table (eta 0.7, T 0.5)
#: (sample rate, symbol rate, signal frequency, pilot frequencies) per roll-off (the table's links)
TABLE_LINKS = {0.1: (1e9, 150e6, 150e6, (300e6,)), 0.2: (1e9, 100e6, 150e6, (250e6, 320e6)),
               0.3: (2.5e9, 250e6, 300e6, (500e6,)), 0.4: (2e9, 200e6, 300e6, (480e6,)),
               0.5: (1e9, 50e6, 150e6, (250e6,))}


def filter_terms(rolloff: float, span: int, sps: float, *, taper: float | None = None,
                 pilot_offsets_rs: tuple[float, ...] = (), pilot_dbsn: float = 22.0,
                 guards_rs: tuple[float, ...] = (0.1, 0.15, 0.2, 0.4), n_mu: int = 8) -> dict:
    """Analytic truncation terms of the receiver's matched filter (see the module docstring).

    ``pilot_offsets_rs``: pilot minus signal frequency, in symbol rates.
    """
    bank = MatchedFilterBank(samples_per_symbol=sps, rolloff=rolloff, span_symbols=span,
                             n_phases=n_mu, mixer_cycles_per_sample=0.0, taper=taper)
    half_tx = auto_span_symbols(rolloff, VA) // 2
    d = np.arange(-bank.half + 1, bank.half + 1, dtype=np.float64)
    j = np.arange(-(half_tx + span), half_tx + span + 1)
    isi = q0s = 0.0
    leak = np.zeros(len(pilot_offsets_rs))
    nf = 1 << 16
    f = np.arange(nf // 2 + 1) / nf * sps            # symbol rates
    stop = np.zeros(len(guards_rs))
    for p in range(n_mu):
        tau = p / n_mu - d
        h = bank.taps[p].real
        tx = truncated_rrc(j[:, None] - tau[None, :] / sps, rolloff, half_tx) / math.sqrt(sps)
        q = tx @ h
        q0 = q[half_tx + span]
        isi += (np.sum(q * q) - q0 * q0) / q0 ** 2 / n_mu
        q0s += q0 * q0 / n_mu
        hf = np.abs(np.fft.rfft(h, nf)) ** 2 / sps
        for i, g in enumerate(guards_rs):
            stop[i] = max(stop[i], hf[f >= (1 + rolloff) / 2 + g].max())
        for i, off in enumerate(pilot_offsets_rs):
            hp = abs(np.sum(h * np.exp(2j * np.pi * off / sps * tau))) ** 2 / sps
            leak[i] += 10 ** (pilot_dbsn / 10) * sps * hp / (2 * T_EFF2) / n_mu
    return {"rolloff": rolloff, "span": span, "taps": bank.n_taps, "sps": sps,
            "isi_msnu": 1e3 * VA * isi, "loss": 1 - q0s,
            "stop_db": {g: 10 * math.log10(s) for g, s in zip(guards_rs, stop, strict=True)},
            "leak_msnu": 1e3 * float(np.sum(leak))}


def analytic(rolloffs, spans, taper) -> list[dict]:
    rows = []
    for b in rolloffs:
        fs, rs, fsig, pilots = TABLE_LINKS.get(b, (1e9, 100e6, 150e6, (250e6,)))
        for s in spans or [ReceiverOptions().span(b)]:
            r = filter_terms(b, s, fs / rs, taper=taper,
                             pilot_offsets_rs=tuple((fp - fsig) / rs for fp in pilots))
            rows.append(r)
            print(f"beta {b:g} span {s} ({r['taps']} taps, sps {r['sps']:.3g}, "
                  f"{'LS' if taper is None else f'kaiser {taper:g}'}): isi {r['isi_msnu']:.4f} "
                  f"mSNU, loss {r['loss']:.1e}, stop " + " ".join(
                      f"{g:g}:{v:.0f}" for g, v in r["stop_db"].items())
                  + f" dB, leak {r['leak_msnu']:.4f} mSNU", flush=True)
    return rows


def old_span(rolloff: float) -> int:
    """The default span before the least-squares taps (Kaiser beta 5): 6.4 / rolloff rounded
    up to even, clipped to [24, 96]."""
    s = math.ceil(min(6.4 / rolloff, 96))
    return int(min(max(s + (s % 2), 24), 96))


def _variant(s: str, rolloff: float, taper: float | None) -> dict:
    # "old": the previous default (Kaiser 5, old_span); "0": the default; else a span
    if s == "old":
        return {"span_symbols": old_span(rolloff), "taper": 5.0}
    opt = {"span_symbols": int(s)} if int(s) else {}
    return {**opt, "taper": taper} if taper is not None else opt


def paired(rows, spans, seeds, n_symbols, taper) -> list[dict]:
    from benchmarks.dsp_penalty import common_calibration_xi, matrix
    from qkd_hw.receiver import process_recording
    from qkd_hw.sim.oracle import oracle_from_arrays
    from qkd_hw.sim.params import SimParams
    from qkd_hw.sim.simulate import simulate_recording, true_phase
    from qkd_hw.trace_io import TraceReader
    cases = matrix()
    out = []
    with tempfile.TemporaryDirectory(prefix="mf-span-") as tmp:
        for ri in rows:
            for seed in seeds:
                p = SimParams(**cases[ri])
                path = Path(tmp) / "rec.h5"
                t0 = time.perf_counter()
                simulate_recording(path, p, seed=seed, n_symbols=n_symbols, truth_phase=False)
                with TraceReader(path) as rd:
                    sig, shot = rd.read("signal"), rd.read("shot_noise")
                    elec, sym = rd.read("electronic_noise"), rd.symbols()
                o = oracle_from_arrays(sig, shot, elec, sym, p, true_phase(p, seed, sig.shape[0]))
                res = {"row": ri, "seed": seed, "rolloff": p.rolloff}
                for s in spans:
                    opt = _variant(s, p.rolloff, taper)
                    r = process_recording(path, pe_fraction=1.0, options=ReceiverOptions(**opt))
                    xi, t = common_calibration_xi(r, o.n0_codes2, o.electronic_noise_snu)
                    res[f"xi:{s}"] = 1e3 * (xi - o.excess_noise_snu)
                    res[f"T:{s}"] = t
                path.unlink()
                xi0, t0_ = res[f"xi:{spans[0]}"], res[f"T:{spans[0]}"]
                print(f"row {ri} beta {p.rolloff:g} seed {seed}: P - O " + " ".join(
                    f"span {s}: {res[f'xi:{s}']:+.3f} (d {res[f'xi:{s}'] - xi0:+.3f}, "
                    f"dT/T {res[f'T:{s}'] / t0_ - 1:+.1e})" for s in spans)
                    + f" mSNU [{time.perf_counter() - t0:.0f} s]", flush=True)
                out.append(res)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--analytic", action="store_true")
    ap.add_argument("--paired", action="store_true")
    ap.add_argument("--rolloffs", default="0.1,0.2,0.3,0.35,0.4,0.5")
    ap.add_argument("--spans", default="", help="comma list (0 = the default span; with "
                    "--paired, old = the previous default: Kaiser 5, old_span)")
    ap.add_argument("--taper", type=float, default=None, help="Kaiser beta (default: LS taps)")
    ap.add_argument("--rows", default="1,4,7,10,13")
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--symbols", type=float, default=1e6)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    spans = [int(s) for s in a.spans.split(",") if s and s != "old"]
    res = []
    if a.analytic:
        res += analytic([float(b) for b in a.rolloffs.split(",")], spans, a.taper)
    if a.paired:
        res += paired([int(r) for r in a.rows.split(",")], a.spans.split(",") if a.spans else ["0"],
                      [int(s) for s in a.seeds.split(",")], int(a.symbols), a.taper)
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
