"""Calibration procedures that lab engineers run (drivers + dsp + qkd_hw core)."""
