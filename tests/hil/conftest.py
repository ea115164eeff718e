"""The hardware-in-the-loop suite: the same tests against the real lab or the virtual one.

The fixtures (``hil``, ``lab``), ``--lab``/``--read-only``/``--hil-history`` and the markers
come from the plugin :mod:`calibration.hil.plugin` (entry point ``pytest11``; also loaded by
``addopts`` in pyproject.toml). Without ``--lab`` (CI, a laptop) the shipped virtual lab is
started. See README_hil.md for the nightly command.
"""
