"""Raw-key hand-off file: round trip, mode 0600 from creation, atomicity, corruptions."""

from __future__ import annotations

import itertools
import os
import re
import stat
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qkd_hw.errors import TraceFormatError
from qkd_hw.raw_key import REQUIRED_ESTIMATES, RawKeyWriter
from qkd_hw.trace_io import RawKey, read_raw_key, write_raw_key

# distinctive symbol values: an error message or repr containing them would leak key material
SECRET = 271.828125


def _raw(n: int = 1000, m: int = 300, seed: int = 0) -> RawKey:
    rng = np.random.default_rng(seed)
    idx = rng.permutation(n + m).astype(np.int64)
    sym = (rng.normal(size=n) + 1j * rng.normal(size=n)).astype(np.complex64)
    sym[0] = SECRET + 1j * SECRET
    est = {k: float(i) / 10 for i, k in enumerate(REQUIRED_ESTIMATES)}
    est.update(excess_noise_max_snu=0.05, transmittance_min=0.4, n_pe=m)
    return RawKey(estimates=est, bob_symbols=sym, bob_tx_index=np.sort(idx[:n]),
                  pe_tx_index=idx[n:])


@pytest.fixture
def umask0():
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_round_trip_and_mode_0600_with_permissive_umask(tmp_path, umask0):
    raw = _raw()
    p = tmp_path / "key.h5"
    write_raw_key(p, raw)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    got = read_raw_key(p)
    assert dict(got.estimates) == pytest.approx(dict(raw.estimates))
    assert got.bob_symbols.dtype == np.complex64
    np.testing.assert_array_equal(got.bob_symbols, raw.bob_symbols)
    assert got.bob_tx_index.dtype == np.int64 and got.pe_tx_index.dtype == np.int64
    np.testing.assert_array_equal(got.bob_tx_index, raw.bob_tx_index)
    np.testing.assert_array_equal(got.pe_tx_index, raw.pe_tx_index)
    with h5py.File(p, "r") as f:  # layout per spec, checked with raw h5py
        assert f.attrs["format"] == "qkd-raw-key" and f.attrs["format_version"] == 1
        assert f["bob/symbols"].dtype == np.complex64
        assert f["bob/tx_index"].dtype == np.int64 and f["pe/tx_index"].dtype == np.int64
        assert set(REQUIRED_ESTIMATES) <= set(f["estimates"].attrs)
    assert os.listdir(tmp_path) == ["key.h5"]
    assert str(SECRET)[:5] not in repr(got)


def test_replacing_world_readable_file_gives_0600(tmp_path, umask0):
    p = tmp_path / "key.h5"
    p.write_bytes(b"old")
    os.chmod(p, 0o644)
    write_raw_key(p, _raw())
    assert stat.S_IMODE(p.stat().st_mode) == 0o600


def test_key_file_is_0600_while_being_written(tmp_path, umask0, monkeypatch):
    """The temporary file already has mode 0600 when h5py opens it (no chmod afterwards)."""
    seen = []
    real_file = h5py.File

    def spy(name, mode="r", *a, **kw):
        if mode == "w":
            seen.append(stat.S_IMODE(os.stat(name).st_mode))
        return real_file(name, mode, *a, **kw)

    monkeypatch.setattr(h5py, "File", spy)
    write_raw_key(tmp_path / "key.h5", _raw())
    assert seen == [0o600]


def test_failed_write_leaves_no_file_and_keeps_existing(tmp_path, monkeypatch):
    p = tmp_path / "key.h5"
    write_raw_key(p, _raw(seed=1))
    before = p.read_bytes()

    def broken(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(h5py.Group, "create_dataset", broken)
    with pytest.raises(KeyboardInterrupt):
        write_raw_key(p, _raw(seed=2))
    assert p.read_bytes() == before
    assert os.listdir(tmp_path) == ["key.h5"]


@pytest.mark.parametrize(("change", "pattern"), [
    ({"estimates": {"snr": 1.0}}, r"/estimates: missing required estimates \['transmittance'"),
    ({"estimates": {**{k: 1.0 for k in REQUIRED_ESTIMATES}, "t_eff": float("nan")}},
     "'t_eff' of /estimates.*nan"),
    ({"estimates": {**{k: 1.0 for k in REQUIRED_ESTIMATES}, "snr": "high"}},
     "'snr' of /estimates: expected a real number"),
    ({"bob_symbols": np.ones(1000)}, "/bob/symbols: must be complex64"),
    ({"bob_symbols": np.ones((10, 100), np.complex64)}, "/bob/symbols: must be 1-D"),
    ({"bob_symbols": np.ones(0, np.complex64), "bob_tx_index": np.ones(0, np.int64)},
     "/bob/symbols: is empty"),
    ({"bob_tx_index": np.arange(999)}, "/bob/tx_index: length 999 differs"),
    ({"bob_tx_index": np.arange(1000.0)}, "/bob/tx_index: must be integer"),
    ({"bob_tx_index": np.arange(-1, 999)}, "/bob/tx_index: negative index -1"),
    ({"bob_tx_index": np.r_[np.arange(999), 5]}, "/bob/tx_index: index 5 appears more"),
    ({"pe_tx_index": np.array([2000, 3, 2000])}, "/pe/tx_index: index 2000 appears"),
    ({"bob_tx_index": np.arange(1000), "pe_tx_index": np.array([5000, 17])},
     r"/bob/tx_index: 1 indices also in /pe/tx_index \(first 17\)"),
    # dense indices (a streamed block): the mark-array check, same message
    ({"bob_tx_index": np.arange(1000), "pe_tx_index": np.array([1003, 999, 17, 1001])},
     r"/bob/tx_index: 2 indices also in /pe/tx_index \(first 17\)"),
])
def test_writer_validates(tmp_path, change, pattern):
    base = _raw()
    fields = {"estimates": base.estimates, "bob_symbols": base.bob_symbols,
              "bob_tx_index": base.bob_tx_index, "pe_tx_index": base.pe_tx_index, **change}
    p = tmp_path / "key.h5"
    with pytest.raises(TraceFormatError) as ei:
        write_raw_key(p, RawKey(**fields))
    msg = str(ei.value)
    assert msg.startswith(f"{p}: ") and re.search(pattern, msg), msg
    assert "271.8" not in msg
    assert os.listdir(tmp_path) == []


def _set(obj, key, value):
    def mutate(f):
        f[obj].attrs[key] = value
    return mutate


def _replace(name, make):
    def mutate(f):
        data = make(f[name][()])
        del f[name]
        f.create_dataset(name, data=data)
    return mutate


def _delete(name, attr=None):
    def mutate(f):
        if attr is None:
            del f[name]
        else:
            del f[name].attrs[attr]
    return mutate


@pytest.mark.parametrize(("mutate", "pattern"), [
    (_set("/", "format", "qkd-trace"), "'format' of /: expected 'qkd-raw-key', got 'qkd-trace'"),
    (_set("/", "format_version", 2), "'format_version' of /: unsupported version 2"),
    (_delete("estimates", "snr"), r"/estimates: missing required estimates \['snr'\]"),
    (_set("estimates", "snr", np.inf), "'snr' of /estimates.*inf"),
    (_delete("estimates"), "/estimates: missing required group"),
    (_delete("bob/symbols"), "/bob/symbols: missing required dataset"),
    (_delete("pe"), "/pe: missing required group"),
    (_delete("pe/tx_index"), "/pe/tx_index: missing required dataset"),
    (_replace("bob/symbols", lambda a: a.real.astype(np.float64)),
     "/bob/symbols: dtype must be complex64, got float64"),
    (_replace("bob/symbols", lambda a: a[:-1]), "/bob/tx_index: length 1000 differs"),
    (_replace("bob/tx_index", lambda a: a.astype(np.float64)),
     "/bob/tx_index: dtype must be int64"),
    (_replace("bob/tx_index", lambda a: a.reshape(10, 100)), "/bob/tx_index: must be a 1-D"),
    (_replace("pe/tx_index", lambda a: np.r_[a, a[:1]]), "/pe/tx_index: index .* appears more"),
    (_replace("bob/symbols", lambda a: np.r_[a[:-1], np.complex64(np.nan)]),
     "/bob/symbols: 1 non-finite symbols, first at index 999"),
])
def test_reader_rejects_corruptions(tmp_path, mutate, pattern):
    p = tmp_path / "key.h5"
    write_raw_key(p, _raw())
    os.chmod(p, 0o600)
    with h5py.File(p, "r+") as f:
        mutate(f)
    with pytest.raises(TraceFormatError) as ei:
        read_raw_key(p)
    msg = str(ei.value)
    assert msg.startswith(f"{p}: ") and re.search(pattern, msg), msg
    assert "271.8" not in msg


def test_reader_rejects_non_files(tmp_path: Path):
    with pytest.raises(TraceFormatError, match="no such file"):
        read_raw_key(tmp_path / "nope.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all" * 100)
    with pytest.raises(TraceFormatError, match=r"junk\.h5: not an HDF5 file"):
        read_raw_key(tmp_path / "junk.h5")
    with pytest.raises(TraceFormatError, match="is a directory"):
        read_raw_key(tmp_path)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 400), m=st.integers(0, 400), seed=st.integers(0, 2**32 - 1),
       sort=st.booleans())
def test_round_trip_property(tmp_path, n, m, seed, sort):
    rng = np.random.default_rng(seed)
    idx = rng.permutation(n + m + rng.integers(0, 50)).astype(np.int64)
    bob = np.sort(idx[:n]) if sort else idx[:n]
    sym = (rng.normal(size=n) + 1j * rng.normal(size=n)).astype(np.complex64)
    est = {k: float(rng.normal()) for k in REQUIRED_ESTIMATES}
    p = tmp_path / "k.h5"
    write_raw_key(p, RawKey(est, sym, bob, idx[n:n + m]))
    got = read_raw_key(p)
    assert dict(got.estimates) == est
    np.testing.assert_array_equal(got.bob_symbols, sym)
    np.testing.assert_array_equal(got.bob_tx_index, bob)
    np.testing.assert_array_equal(got.pe_tx_index, idx[n:n + m])


# --------------------------------------------------------------------- streaming writer


def _blocks(raw: RawKey, n_blocks: int):
    """Split a RawKey (sorted indices) into n_blocks consecutive index ranges."""
    edges = np.linspace(0, max(raw.bob_tx_index.max(), raw.pe_tx_index.max()) + 1,
                        n_blocks + 1).astype(np.int64)
    for lo, hi in itertools.pairwise(edges):
        kb = (raw.bob_tx_index >= lo) & (raw.bob_tx_index < hi)
        kp = (raw.pe_tx_index >= lo) & (raw.pe_tx_index < hi)
        yield raw.bob_symbols[kb], raw.bob_tx_index[kb], raw.pe_tx_index[kp]


def _sorted_raw(seed: int = 3) -> RawKey:
    rng = np.random.default_rng(seed)
    n_all = 5000
    idx = np.arange(n_all, dtype=np.int64)
    disclosed = rng.random(n_all) < 0.3
    sym = (rng.normal(size=n_all) + 1j * rng.normal(size=n_all)).astype(np.complex64)
    return RawKey(estimates={k: 0.1 for k in REQUIRED_ESTIMATES}, bob_symbols=sym[~disclosed],
                  bob_tx_index=idx[~disclosed], pe_tx_index=idx[disclosed])


def test_streaming_writer_equals_one_shot_with_rotation(tmp_path, umask0):
    raw = _sorted_raw()
    rot = np.exp(0.7j)
    one = tmp_path / "one.h5"
    write_raw_key(one, RawKey(raw.estimates, (raw.bob_symbols * np.complex64(rot)),
                              raw.bob_tx_index, raw.pe_tx_index))
    streamed = tmp_path / "streamed.h5"
    with RawKeyWriter(streamed, chunk=777) as w:   # chunk not aligned with the blocks
        for blk in _blocks(raw, 7):
            w.append(*blk)
        w.commit(raw.estimates, rotation=rot)
    a, b = read_raw_key(one), read_raw_key(streamed)
    np.testing.assert_array_equal(a.bob_tx_index, b.bob_tx_index)
    np.testing.assert_array_equal(a.pe_tx_index, b.pe_tx_index)
    # both rotate in complex64: identical up to one rounding of the product
    np.testing.assert_allclose(b.bob_symbols, a.bob_symbols, rtol=0, atol=1e-6)
    assert stat.S_IMODE(streamed.stat().st_mode) == 0o600


def test_streaming_writer_with_alice_keeps_her_symbols_unrotated(tmp_path, umask0):
    """/alice/symbols (spec: optional, one host holding both sides) are Alice's symbols of
    the key indices as given, block after block; the rotation is Bob's carrier phase only."""
    from qkd_hw.postprocessing.keyfile import read_alice_symbols

    raw = _sorted_raw()
    alice_all = (np.arange(5000) * (1 + 2j)).astype(np.complex64)   # Alice's symbol k: k(1+2j)
    target = tmp_path / "key.h5"
    with RawKeyWriter(target, chunk=777, alice=True) as w:
        for sym, bob, pe in _blocks(raw, 7):
            w.append(sym, bob, pe, alice_symbols=alice_all[bob])
        w.commit(raw.estimates, rotation=np.exp(0.7j))
    n = raw.bob_symbols.shape[0]
    np.testing.assert_array_equal(read_alice_symbols(target, n), alice_all[raw.bob_tx_index])
    np.testing.assert_array_equal(read_raw_key(target).bob_tx_index, raw.bob_tx_index)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


@pytest.mark.parametrize("alice_writer, alice_len, match", [
    (True, None, "Alice's symbols missing"), (False, 0, "opened without alice=True"),
    (True, -1, "block length")])
def test_streaming_writer_alice_mismatch_is_refused_before_writing(tmp_path, alice_writer,
                                                                    alice_len, match):
    raw = _sorted_raw()
    sym, bob, pe = next(_blocks(raw, 2))
    alice = None if alice_len is None else np.zeros(sym.shape[0] + alice_len, np.complex64)
    target = tmp_path / "key.h5"
    with pytest.raises(ValueError, match=match), RawKeyWriter(target, alice=alice_writer) as w:
        w.append(sym, bob, pe, alice_symbols=alice)
    assert list(tmp_path.iterdir()) == []


def test_streaming_writer_rejects_out_of_order_and_leaves_nothing(tmp_path):
    raw = _sorted_raw()
    blocks = list(_blocks(raw, 3))
    target = tmp_path / "key.h5"
    with pytest.raises(TraceFormatError, match=r"not after the last appended index"), \
            RawKeyWriter(target) as w:
        w.append(*blocks[1])
        w.append(*blocks[0])
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_streaming_writer_never_committed_leaves_nothing(tmp_path):
    raw = _sorted_raw()
    target = tmp_path / "key.h5"
    target.write_bytes(b"previous key file")
    with RawKeyWriter(target) as w:
        w.append(*next(_blocks(raw, 2)))
    assert target.read_bytes() == b"previous key file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.h5"]


@pytest.mark.parametrize("rotation", [float("nan"), complex(1, float("inf")), 2.0, 0.5j,
                                      1.00001, 0.0])
def test_commit_rejects_non_unit_rotation_before_writing(tmp_path, rotation):
    """|rotation| = 1 is checked before any symbol is touched; the writer stays usable."""
    raw = _sorted_raw()
    target = tmp_path / "key.h5"
    w = RawKeyWriter(target)
    w.append(raw.bob_symbols, raw.bob_tx_index, raw.pe_tx_index)
    with pytest.raises(ValueError, match=re.escape(repr(rotation))):
        w.commit(raw.estimates, rotation=rotation)
    assert not target.exists()
    w.commit(raw.estimates, rotation=1j)  # nothing was rotated by the refused call
    np.testing.assert_array_equal(read_raw_key(target).bob_symbols, raw.bob_symbols * 1j)


def test_refused_rotation_in_with_block_leaves_nothing(tmp_path):
    raw = _sorted_raw()
    target = tmp_path / "key.h5"
    target.write_bytes(b"previous key file")
    with pytest.raises(ValueError, match="rotation"), RawKeyWriter(target) as w:
        w.append(raw.bob_symbols, raw.bob_tx_index, raw.pe_tx_index)
        w.commit(raw.estimates, rotation=2.0)
    w.abort()  # idempotent after the with block aborted
    assert target.read_bytes() == b"previous key file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.h5"]


def test_reader_accepts_extra_estimates(tmp_path):
    """Extra /estimates attributes are allowed by the spec: numbers kept, others skipped."""
    p = tmp_path / "key.h5"
    raw = _raw()
    write_raw_key(p, raw)
    with h5py.File(p, "r+") as f:
        g = f["estimates"]
        g.attrs["phase_method"] = "kalman"
        g.attrs["t_eff_std"] = np.nan
        g.attrs["xi_bounds"] = np.array([0.01, 0.03])
        g.attrs["n_blocks"] = np.int64(7)
    got = read_raw_key(p)
    assert set(got.estimates) == set(raw.estimates) | {"t_eff_std", "n_blocks"}
    assert np.isnan(got.estimates["t_eff_std"]) and got.estimates["n_blocks"] == 7.0
    assert {k: got.estimates[k] for k in raw.estimates} == pytest.approx(dict(raw.estimates))


@pytest.mark.parametrize("value", ["high", np.nan, np.array([1.0, 2.0])])
def test_reader_still_checks_required_estimates(tmp_path, value):
    p = tmp_path / "key.h5"
    write_raw_key(p, _raw())
    with h5py.File(p, "r+") as f:
        f["estimates"].attrs["snr"] = value
    with pytest.raises(TraceFormatError, match="'snr' of /estimates"):
        read_raw_key(p)


@pytest.mark.parametrize(("n_sym", "bob"), [(10, np.empty(0, np.int64)),
                                            (0, np.arange(3)), (4, np.arange(3))])
def test_append_checks_symbol_count_even_for_empty_block(tmp_path, n_sym, bob):
    target = tmp_path / "key.h5"
    sym = np.ones(n_sym, np.complex64)
    with pytest.raises(ValueError, match=rf"block length {bob.size} differs from its "
                                         rf"{n_sym} symbols"), RawKeyWriter(target) as w:
        w.append(sym, bob, np.arange(100, 110))
    assert list(tmp_path.iterdir()) == []


def test_small_key_file_is_small(tmp_path):
    """Chunks are allocated whole: a 10-symbol key must not take megabytes."""
    p = tmp_path / "small.h5"
    write_raw_key(p, RawKey({k: 0.1 for k in REQUIRED_ESTIMATES}, np.ones(10, np.complex64),
                            np.arange(10), np.arange(10, 15)))
    assert p.stat().st_size < 64 * 1024
    streamed = tmp_path / "streamed.h5"
    with RawKeyWriter(streamed) as w:  # block size unknown in advance: default chunk
        w.append(np.ones(10, np.complex64), np.arange(10), np.arange(10, 15))
        w.commit({k: 0.1 for k in REQUIRED_ESTIMATES}, rotation=1j)
    assert streamed.stat().st_size < 2 * 2**20
    np.testing.assert_array_equal(read_raw_key(streamed).bob_symbols, np.full(10, 1j))
