"""Benchmark suite over recorded traces (``qkd-hw bench``).

* :mod:`qkd_hw.bench.child`: what a fresh interpreter measures on one recording (JIT compile
  apart, warm throughput per stage, peak RSS, copy-rate ceiling, numpy reference);
* :mod:`qkd_hw.bench.suite`: runs the child over a list of recordings, adds the truth errors;
* :mod:`qkd_hw.bench.truth_errors`: estimate minus ``/truth`` in standard deviations;
* :mod:`qkd_hw.bench.history`: the JSON-lines history, regression flags, plots;
* :mod:`qkd_hw.bench.numpy_reference`: the receiver's steps in plain numpy/scipy.
"""
