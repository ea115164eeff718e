"""The nightly hardware-in-the-loop suite's machinery: pytest plugin, checks, history, report.

It lives in :mod:`calibration` because its health checks run the calibration procedures
(noise, linearity, link) and the package graph lets only ``calibration`` and ``qkd_hw.cli``
import them (tests/test_style.py). The tests themselves are ``tests/hil``.

* :mod:`calibration.hil.plugin` -- the pytest plugin (entry point ``pytest11``):
  ``--lab CONFIG``, ``--read-only``, ``--hil-history FILE``, the ``hil`` and
  ``changes_state`` markers, the lab fixtures, the safe state at the end.
* :mod:`calibration.hil.checks` -- a measured quantity against its ``[hil]`` threshold and
  the previous nights (drift).
* :mod:`calibration.hil.history` -- the history store (JSON lines, one run per line).
* :mod:`calibration.hil.report` -- trend plots and the one-page summary
  (``qkd-hw hil report``).
"""
