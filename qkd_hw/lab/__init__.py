"""Virtual lab: the instrument emulators started together behind one physics model of the link.

A lab config with a ``[virtual]`` table (``qkd-hw lab example --virtual``) describes it: the
same ``[instruments]`` and ``[roles]`` as a real lab's, plus the physical truth. Use it exactly
like a real lab, through the drivers and the *client* config that points at the emulators::

    from drivers.base import create_instrument
    from qkd_hw.lab import VirtualLab, virtual_lab

    with virtual_lab("virtual_lab.toml") as lab_config:       # client LabConfig
        with create_instrument(lab_config.role("digitizer")) as adc: ...

    with VirtualLab(config).start() as vlab:                    # the lab object itself
        vlab.client_config        # LabConfig of the emulators (vlab.client_config_text: TOML)
        vlab.emulator("awg")      # a running emulator by role (state, fault injection)
        vlab.state()              # LinkState: every setting the physics depends on, now
        vlab.model                # LinkModel: the equations (qkd_hw/lab/model.py)
        vlab.capture(n)           # n ADC codes of the present state, bypassing the digitizer
        vlab.truth()              # T, eta, xi, v_el (as measured), ... a receiver should find

``qkd-hw lab serve --lab CONFIG [--write-config PATH]`` runs one as a process.

The lab starts in the emulators' power-on state (lasers and detector off, AWG stopped, bias
controller OFF, VOA shutters closed, switch on port 1); ``[link]`` is not applied -- the
procedures bring the lab to its working point through the drivers, as in the real lab.

How a capture is produced
-------------------------
Nothing is precomputed: every measurement reads the emulators' present state
(:meth:`VirtualLab.state`) and evaluates :class:`~qkd_hw.lab.model.LinkModel`:

1. The digitizer's ``:SINGle`` asks the lab for ``:ACQ:POINts`` samples of the
   ``digitizer_channel`` (the other channels read 0 V; only that channel is acquired).
2. The AWG's playing segment of ``awg_i_channel`` (and ``awg_q_channel``) in volts
   (``M8195AEmulator.output_volts``: amplitude, offset, output relay and run state applied;
   stopped = no drive) is Alice's drive. It repeats cyclically and is sampled at the ADC
   instants ``k / f_adc + trigger_delay_s`` (linear interpolation), so upload the waveform
   at the AWG's sample rate, e.g. an IF signal with pilots.
3. The modulator (bias from the MBX emulator's working point), Alice's attenuation, the
   excess noise, fibre + VOA + switch, the LO (its laser's emission and power, saturation),
   laser phase noise and frequency offset, shot and electronic noise, and the digitizer's
   range/offset give int16 codes (fresh Gaussian noise per acquisition; ``[virtual] seed``
   makes the sequence of captures reproducible).

The power meter reads the modulator's mean output through its tap, the detector's DC monitor
the LO photocurrents, the bias controller's tap the modulator's output power. Every equation
is in :mod:`qkd_hw.lab.model`; every number in ``[virtual]`` (documented in the example).

Units and conventions: the model's field is in quadrature units per ADC sample (vacuum
quadrature variance 1, shared/spec/conventions.md); a matched filter of unit energy turns
it into per-symbol SNU, so what the receiver estimates is ``T = 10^(-(fiber_loss_db + VOA)/10)``
(switch on the signal port), ``eta = detector_efficiency``, ``xi = excess_noise_snu`` and
``v_el = electronic_noise_snu * lo_reference_mw / P_LO``.

Not modelled: detector/ADC bandwidth (white noise over 0..f_adc/2), the AWG's analog
response, separate I/Q bias points and the IQ phase bias, polarisation, the LO's relative
intensity noise. The instruments keep their own timing (VOA settling, MBX calibration).
"""

from qkd_hw.lab.model import LinkModel, LinkState
from qkd_hw.lab.snapshot import lab_snapshot
from qkd_hw.lab.virtual import VirtualLab, example_path, virtual_lab

__all__ = ["LinkModel", "LinkState", "VirtualLab", "example_path", "lab_snapshot",
           "virtual_lab"]
