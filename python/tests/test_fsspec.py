"""The cidcache:// fsspec filesystem, read by real pyarrow.dataset, pandas and (when installed)
DuckDB, against a real daemon."""

from __future__ import annotations

import gc
import io
from typing import Any, Iterator

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import cidcache
from cidcache.fsspec import CidcacheFileSystem
from conftest import Daemon, in_shm, unique


def table(n: int = 20_000) -> pa.Table:
    rng = np.random.default_rng(19)
    return pa.table(
        {
            "id": np.arange(n, dtype=np.int64),
            "x": rng.random(n),
            "name": pa.array([f"row-{i % 977}" for i in range(n)]),
        }
    )


def parquet_bytes(t: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(t, sink, row_group_size=5_000)
    return sink.getvalue()


@pytest.fixture
def fs(daemon: Daemon) -> Iterator[Any]:
    f = fsspec.filesystem("cidcache", socket=daemon.socket)
    yield f


def test_entry_point_registers_the_protocol(daemon: Daemon) -> None:
    # Found through the fsspec.specs entry point of the installed package, not by an import here.
    assert fsspec.get_filesystem_class("cidcache") is CidcacheFileSystem
    f = fsspec.filesystem("cidcache", socket=daemon.socket)
    assert isinstance(f, CidcacheFileSystem)


def test_pyarrow_dataset_reads_an_arrow_object_zero_copy(daemon: Daemon, fs: Any) -> None:
    t = table()
    key = unique("fs-arrow").decode()
    with daemon.client() as c:
        c.put_arrow(key, t)
    d = ds.dataset(f"cidcache://{key}", format="arrow", filesystem=fs)
    got = d.to_table()
    assert got.equals(t)
    # The batches pyarrow decoded lie in the store's shared memory: read_buffer handed it views.
    buf = got.column("x").chunks[0].buffers()[1]
    assert buf is not None and in_shm(daemon.store, buf.address, buf.size)
    assert fs.client.pinned >= 1
    del got, buf, d
    gc.collect()
    assert fs.client.pinned == 0


def test_pyarrow_dataset_and_pandas_read_parquet_by_cid(daemon: Daemon, fs: Any) -> None:
    t = table()
    with daemon.client() as c:
        cid = c.put_content(parquet_bytes(t))
    assert cid.startswith("b")
    got = ds.dataset(f"cidcache://{cid}", format="parquet", filesystem=fs).to_table()
    assert got.equals(t)
    df = pd.read_parquet(f"cidcache://{cid}", storage_options={"socket": daemon.socket})
    pd.testing.assert_frame_equal(df, t.to_pandas())
    filtered = ds.dataset(f"cidcache://{cid}", format="parquet", filesystem=fs).to_table(
        filter=ds.field("id") < 10, columns=["id", "name"]
    )
    assert filtered.column("id").to_pylist() == list(range(10))
    assert fs.info(f"cidcache://{cid}")["size"] == len(parquet_bytes(t))
    assert fs.exists(f"cidcache://{cid}")
    assert any(e == cid for e in fs.ls("", detail=False))


def test_duckdb_reads_cidcache_paths(daemon: Daemon, fs: Any) -> None:
    duckdb = pytest.importorskip("duckdb")
    t = table(5_000)
    with daemon.client() as c:
        cid = c.put_content(parquet_bytes(t))
    con = duckdb.connect()
    con.register_filesystem(fs)
    n, s = con.execute(f"select count(*), sum(id) from read_parquet('cidcache://{cid}')").fetchone()
    assert (n, s) == (5_000, 5_000 * 4_999 // 2)


def test_write_then_read_and_immutable(fs: Any) -> None:
    key = unique("fs-w").decode()
    fs.pipe_file(f"cidcache://{key}", b"hello world")
    assert fs.cat_file(f"cidcache://{key}") == b"hello world"
    assert fs.cat_file(f"cidcache://{key}", start=6) == b"world"
    with fs.open(f"cidcache://{key}", "rb") as f:
        f.seek(-5, io.SEEK_END)
        assert f.read() == b"world"
        f.seek(0)
        assert f.read(5) == b"hello"
        assert f.tell() == 5
    with pytest.raises(FileExistsError, match="immutable"):
        fs.pipe_file(f"cidcache://{key}", b"again")
    fs.rm(f"cidcache://{key}")
    assert not fs.exists(f"cidcache://{key}")


def test_missing_key_is_a_clear_error(daemon: Daemon, fs: Any) -> None:
    path = "cidcache://no-such-dataset-" + unique().decode()
    with pytest.raises(FileNotFoundError, match="no such object in store"):
        fs.open(path)
    with pytest.raises(FileNotFoundError, match="no-such-dataset"):
        pd.read_parquet(path, storage_options={"socket": daemon.socket})
    with pytest.raises(FileNotFoundError):
        ds.dataset(path, format="parquet", filesystem=fs).to_table()
    with pytest.raises(FileNotFoundError, match="no such object"):
        fs.rm(path)
    assert not fs.exists(path)
    # The same through the client.
    with daemon.client() as c, pytest.raises(cidcache.NotFound):
        c.get_arrow(path[len("cidcache://") :])


def test_bad_paths_and_modes(fs: Any) -> None:
    with pytest.raises(FileNotFoundError, match="empty key"):
        fs.open("cidcache://")
    with pytest.raises(FileNotFoundError, match="not a valid key"):
        fs.open("cidcache://" + "x" * 64)
    with pytest.raises(ValueError, match="modes"):
        fs.open("cidcache://k", "ab")


def test_closed_file_refuses_reads_but_buffers_stay_valid(daemon: Daemon, fs: Any) -> None:
    key = unique("fs-c").decode()
    fs.pipe_file(f"cidcache://{key}", b"abcdef" * 1000)
    f = fs.open(f"cidcache://{key}")
    view = f.read_buffer(6)
    f.close()
    with pytest.raises(ValueError, match="closed"):
        f.read(1)
    # The view handed out keeps the object pinned and readable after the file closed.
    assert bytes(view) == b"abcdef"
    del view, f
    gc.collect()
    assert fs.client.pinned == 0
