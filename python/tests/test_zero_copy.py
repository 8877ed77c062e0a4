"""Zero-copy: buffer views and Arrow tables point into the store's shared memory (checked by
address against /proc/self/maps), and pins live exactly as long as some view does."""

from __future__ import annotations

import ctypes
import gc
import os
from typing import Any, cast

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

import cidcache
from conftest import Daemon, in_shm, maybe, shm_ranges, unique


def address_of(view: memoryview) -> int:
    # ctypes needs a writable buffer for from_buffer; numpy gives the address of read-only ones.
    return int(np.frombuffer(view, dtype=np.uint8).ctypes.data)


def test_memoryview_and_numpy_are_zero_copy(daemon: Daemon) -> None:
    with daemon.client() as c:
        k = unique()
        data = os.urandom(64 << 10)
        c.put(k, data)
        o = maybe(c.get(k))
        m = memoryview(o)
        assert m.readonly and m.nbytes == len(data) and m.format == "B"
        a = np.frombuffer(cast(Any, o), dtype=np.uint8)
        assert in_shm(daemon.store, address_of(m), len(data))
        assert int(a.ctypes.data) == address_of(m)
        assert a.tobytes() == data
        # Two gets of the same object see the same bytes at the same address.
        o2 = maybe(c.get(k))
        assert address_of(memoryview(o2)) == address_of(m)
        # A writable view is refused: sealed objects are immutable.
        with pytest.raises(TypeError):
            (ctypes.c_char * len(data)).from_buffer(o)
        with pytest.raises(TypeError):
            m[0] = 1
        with pytest.raises(ValueError):
            a.setflags(write=True)


def test_pin_held_while_any_view_lives(daemon: Daemon) -> None:
    with daemon.client() as c:
        k = unique()
        c.put(k, b"p" * 1000)
        base = c.pinned
        o = maybe(c.get(k))
        assert c.pinned == base + 1
        m = memoryview(o)
        a = np.frombuffer(cast(Any, o), dtype=np.uint8)[10:20]
        del o
        gc.collect()
        assert c.pinned == base + 1  # views keep it pinned
        with pytest.raises(BufferError):
            # release() refuses while views are alive (only reachable through the views now).
            m.obj.release()  # type: ignore[attr-defined]
        del m
        gc.collect()
        assert c.pinned == base + 1  # the numpy slice still holds it
        assert a.tobytes() == b"p" * 10
        del a
        gc.collect()
        assert c.pinned == base
        # Deleting the key while a view lives: the view stays valid.
        o = maybe(c.get(k))
        v = memoryview(o)
        c.delete(k)
        assert c.get(k) is None
        assert bytes(v[:3]) == b"ppp"
        del o, v
        gc.collect()
        assert c.pinned == base


def test_arrow_table_buffers_lie_in_shared_memory(daemon: Daemon) -> None:
    n = 100_000
    t = pa.table(
        {
            "id": pa.array(np.arange(n, dtype=np.int64)),
            "x": pa.array(np.random.default_rng(1).random(n)),
            "name": pa.array([f"n{i % 100}" for i in range(n)]),
        }
    )
    with daemon.client() as c:
        k = unique("tab")
        c.put_arrow(k, t)
        base = c.pinned
        got = c.get_arrow(k)
        assert got.equals(t)
        checked = 0
        for col in got.columns:
            for chunk in col.chunks:
                for buf in chunk.buffers():
                    if buf is not None and buf.size > 0:
                        assert in_shm(daemon.store, buf.address, buf.size), col
                        checked += 1
        assert checked >= 4
        assert c.pinned > base
        del got, col, chunk, buf
        gc.collect()
        assert c.pinned == base


def test_get_arrow_stream_to_polars_and_back(daemon: Daemon) -> None:
    df = pl.DataFrame({"a": list(range(1000)), "b": [f"s{i}" for i in range(1000)]})
    with daemon.client() as c:
        k = unique("pl")
        c.put_arrow(k, df)  # polars implements __arrow_c_stream__
        s = c.get_arrow_stream(k)
        assert s.num_rows == 1000 and s.column_names == ["a", "b"]
        back = pl.DataFrame(pa.table(s))
        assert back.equals(df)
        # polars reads the capsule stream directly too.
        assert pl.DataFrame(c.get_arrow_stream(k)).equals(df)
        # A RecordBatch (via __arrow_c_array__) and a RecordBatchReader.
        rb = pa.record_batch({"z": [1, 2, 3]})
        k2 = unique("rb")
        c.put_arrow(k2, rb)
        assert c.get_arrow(k2).to_pydict() == {"z": [1, 2, 3]}
        k3 = unique("rdr")
        c.put_arrow(k3, pa.RecordBatchReader.from_batches(rb.schema, [rb, rb]))
        assert c.get_arrow(k3).num_rows == 6


def test_projection_and_filter(daemon: Daemon) -> None:
    t = pa.table({"x": list(range(100)), "y": [i * 2 for i in range(100)], "s": ["a", "b"] * 50})
    with daemon.client() as c:
        k = unique("scan")
        c.put_arrow(k, t)
        r = c.get_arrow(k, columns=["y"], filter=[("x", ">=", 90), "s = a"])
        assert r.column_names == ["y"]
        assert r.column("y").to_pylist() == [180, 184, 188, 192, 196]
        r = c.get_arrow(k, filter="x<3")
        assert r.num_rows == 3
        # The projection alone is zero-copy.
        r = c.get_arrow(k, columns=["x"])
        buf = r.column("x").chunks[0].buffers()[1]
        assert buf is not None and in_shm(daemon.store, buf.address, buf.size)
        with pytest.raises(cidcache.InvalidArgument):
            c.get_arrow(k, columns=["nope"])
        with pytest.raises(cidcache.InvalidArgument):
            c.get_arrow(k, filter=("x", "~", 1))
        with pytest.raises(cidcache.NotFound):
            c.get_arrow(unique())
        # Not an Arrow object.
        k2 = unique()
        c.put(k2, b"raw bytes")
        with pytest.raises(cidcache.InvalidArgument):
            c.get_arrow(k2)


def test_warm_tier_objects_are_promoted_transparently(make_daemon: object) -> None:
    from conftest import Daemon as D

    d: D = make_daemon("--arena-size", "1M", memory="4M")  # type: ignore[operator]
    t = pa.table({"x": np.arange(50_000, dtype=np.int64), "y": np.arange(50_000) % 7})
    with d.client() as c:
        k = unique("warm")
        c.put_arrow(k, t)
        raw = unique("raw")
        c.put(raw, b"r" * 100_000)
        # Fill the hot tier until both are demoted to the warm tier.
        i = 0
        while any(e.key in (k, raw) for e in c.list()):
            c.put(unique("fill"), os.urandom(256 << 10))
            i += 1
            assert i < 1000, "the objects were never evicted"
        assert c.contains(k) and c.contains(raw)  # in the warm tier
        # A projected, filtered read scans the warm file.
        r = c.get_arrow(k, columns=["x"], filter=("y", "=", 3))
        assert r.column("x").to_pylist() == [i for i in range(50_000) if i % 7 == 3]
        # A plain read promotes it and maps it zero-copy.
        got = c.get_arrow(k)
        assert got.equals(t)
        b = got.column("x").chunks[0].buffers()[1]
        assert b is not None and in_shm(d.store, b.address, b.size)
        assert bytes(maybe(c.get(raw))) == b"r" * 100_000
        del got, b, r
    gc.collect()
    assert shm_ranges(d.store) == []  # everything unmapped once the client is gone
