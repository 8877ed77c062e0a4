"""A process pool of readers sharing one table: every reader maps the same shared memory and
sees the table zero-copy; pins are per process."""

from __future__ import annotations

import multiprocessing as mp
import os
from typing import Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import cidcache
from conftest import Daemon, in_shm, unique

N = 200_000


def reader(args: Tuple[str, str, bytes]) -> Tuple[int, int, float, bool, int]:
    socket, store, key = args
    with cidcache.Client(socket=socket) as c:
        t = c.get_arrow(key)
        x = t.column("x").chunks[0]
        buf = x.buffers()[1]
        assert buf is not None
        zero_copy = in_shm(store, buf.address, buf.size)
        total = int(pc.sum(t.column("id")).as_py())
        pinned = c.pinned
        del t, x, buf
        return os.getpid(), total, float(np.sum(t_col(c, key))), zero_copy, pinned


def t_col(c: cidcache.Client, key: bytes) -> "np.ndarray[tuple[int], np.dtype[np.float64]]":
    a: "np.ndarray[tuple[int], np.dtype[np.float64]]" = c.get_arrow(key, columns=["x"]).column("x").to_numpy()
    return a


def test_process_pool_of_readers(daemon: Daemon) -> None:
    rng = np.random.default_rng(7)
    t = pa.table({"id": np.arange(N, dtype=np.int64), "x": rng.random(N)})
    key = unique("shared")
    with daemon.client() as c:
        c.put_arrow(key, t)
        ctx = mp.get_context("spawn")
        with ctx.Pool(4) as pool:
            results = pool.map(reader, [(daemon.socket, daemon.store, key)] * 8)
    expected_sum = N * (N - 1) // 2
    expected_x = float(np.sum(t.column("x").to_numpy()))
    assert len({pid for pid, *_ in results}) >= 2  # really several processes
    for _pid, total, xsum, zero_copy, pinned in results:
        assert total == expected_sum
        assert abs(xsum - expected_x) < 1e-6
        assert zero_copy
        assert pinned >= 1
