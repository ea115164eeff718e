"""Host driver of the DSP receiver: read a recording, stream it through ``dsp.pipeline``,
estimate the parameters and the key rate, hand over the raw key.

The flow reads in one direction (ARCHITECTURE.md, "Receiver"):

* ``source``: where samples and Alice's symbols come from (:class:`RecordingSource`;
  :class:`Hdf5Source` for a recording, :class:`ArraySource` for arrays in memory);
* ``process``: the orchestrator, acquire -> SNU calibration (``dsp.snu``) -> stream ->
  estimate -> key rate -> raw key; ``symbols`` (Alice's symbols read ahead in blocks) and
  ``readahead`` (the reader thread) serve its streaming pass;
* ``estimate``: parameter estimation, its sanity checks, key rate, leakage floor;
* ``result``: :class:`ReceiverResult` and its JSON summary (formatting only);
* ``diagnostics``: the small samples behind the plots.

``dsp`` does no file I/O; this package does the reading, converts the DSP's lock failures into
:class:`qkd_hw.errors.ReceiverLockError` and writes the raw key file.
"""

from __future__ import annotations

from qkd_hw.receiver.diagnostics import Diagnostics
from qkd_hw.receiver.hdf5_source import Hdf5Source, link_of, trace_stores
from qkd_hw.receiver.process import DEFAULT_CHUNK, process_recording, process_source
from qkd_hw.receiver.result import ReceiverResult
from qkd_hw.receiver.source import ArraySource, CaptureInfo, RecordingSource

__all__ = ["DEFAULT_CHUNK", "ArraySource", "CaptureInfo", "Diagnostics", "Hdf5Source",
           "ReceiverResult", "RecordingSource", "process_recording", "process_source"]

# the names the streaming tests use for the recording's link and its signal stores
_link = link_of
_stores = trace_stores
