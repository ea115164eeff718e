"""Instrument drivers (one module per instrument model) and their protocol-level emulators."""
