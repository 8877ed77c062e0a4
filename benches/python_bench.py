#!/usr/bin/env python3
"""Benchmarks of the Python package (run by hand, release builds):

    cargo build --release --bins
    python3 -m venv target/py-bench && target/py-bench/bin/pip install pyarrow numpy ./python
    target/py-bench/bin/python benches/python_bench.py [--quick]

Starts its own cidcached (target/release/cidcached, or $CIDCACHED) with a private store and
prints, with the load average of the machine before and after:
  * get of a 4 KiB hot object through Python (median per call; bytes key and CID-string key);
  * get_arrow of Arrow tables of 1, 10 and 100 MB (median per call, pyarrow.Table and the raw
    ArrowStream), to show whether the cost depends on the size;
  * put_many of 4 KiB objects (objects per second, batches of 1,000);
  * cidcache.compat.ParquetCIDCache with the loops ipfs_kit_py's figures come from
    (put_metadata, get_metadata, batch_put_metadata of 1,000 rows), beside ipfs_kit_py's
    published numbers (1,250-1,330 put_metadata/s, 1,540-1,610 get_metadata/s, 34,500 rows/s).
Timing is per block of calls (time.perf_counter_ns around a loop), the median over blocks.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List

import cidcache
from cidcache.compat import ParquetCIDCache

REPO = Path(__file__).resolve().parents[1]


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


CPU: Dict[str, float] = {}


def per_call_ns(fn: Callable[[], Any], calls: int, blocks: int, name: str = "") -> float:
    """Median over `blocks` of the mean time of `calls` calls of fn, in ns (wall clock; the
    calling thread's CPU time per call is recorded in CPU[name], which a loaded machine
    inflates less)."""
    samples = []
    cpu = []
    for _ in range(blocks):
        c0 = time.thread_time_ns()
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter_ns() - t0) / calls)
        cpu.append((time.thread_time_ns() - c0) / calls)
    if name:
        CPU[name] = statistics.median(cpu)
    return statistics.median(samples)


def fmt_ns(ns: float) -> str:
    if ns < 1_000:
        return f"{ns:.0f} ns"
    if ns < 1_000_000:
        return f"{ns / 1000:.2f} µs"
    return f"{ns / 1e6:.2f} ms"


class Daemon:
    def __init__(self, memory: str) -> None:
        exe = os.environ.get("CIDCACHED", str(REPO / "target" / "release" / "cidcached"))
        self.dir = tempfile.mkdtemp(prefix="cidcache-pybench-")
        self.socket = os.path.join(self.dir, "s.sock")
        self.store = f"pybench_{uuid.uuid4().hex[:8]}"
        self.proc = subprocess.Popen(
            [exe, "--store", self.store, "--socket", self.socket, "--data-dir",
             os.path.join(self.dir, "data"), "-m", memory, "--index-capacity", "262144"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None:
                raise SystemExit(f"{exe} did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def bench_get(c: cidcache.Client, quick: bool) -> Dict[str, float]:
    data = os.urandom(4096)
    cid = c.put_content(data)
    binary = cidcache.parse_key(cid)
    calls, blocks = (1000, 50) if quick else (10_000, 200)
    get = c.get
    n1, n2, n3 = "get 4 KiB hot, bytes key", "get 4 KiB hot, CID str key", "get + memoryview, bytes key"
    out = {
        n1: per_call_ns(lambda: get(binary), calls, blocks, n1),
        n2: per_call_ns(lambda: get(cid), calls, blocks, n2),
        n3: per_call_ns(lambda: memoryview(get(binary)), calls, blocks, n3),  # type: ignore[arg-type]
    }
    import numpy as np

    n4 = "get + numpy.frombuffer, bytes key"
    out[n4] = per_call_ns(
        lambda: np.frombuffer(get(binary), dtype=np.uint8), calls, blocks, n4  # type: ignore[arg-type]
    )
    return out


def bench_get_arrow(c: cidcache.Client, quick: bool) -> Dict[str, float]:
    import numpy as np
    import pyarrow as pa

    out: Dict[str, float] = {}
    sizes = (1, 10, 100)
    for mb in sizes:
        rows = mb * 1_000_000 // 16
        t = pa.table({"id": np.arange(rows, dtype=np.int64), "x": np.random.default_rng(1).random(rows)})
        key = f"table-{mb}MB".encode()
        c.put_arrow(key, t)
        del t
        n = 5 if quick else 30
        a, b = f"get_arrow {mb} MB -> pyarrow.Table", f"get_arrow_stream {mb} MB (no pyarrow)"
        out[a] = per_call_ns(lambda: c.get_arrow(key), 1, n, a)
        out[b] = per_call_ns(lambda: c.get_arrow_stream(key), 1, n, b)
        c.delete(key)
        gc.collect()
    # With a string column: decoding validates offsets and UTF-8 until issue 20 lands.
    rows = 100_000_000 // 40
    t = pa.table({"id": np.arange(rows, dtype=np.int64), "s": pa.array(np.char.mod("%020d", np.arange(rows)).astype(object))})
    key = b"table-100MB-strings"
    c.put_arrow(key, t)
    del t
    n = 5 if quick else 20
    a = "get_arrow 100 MB with a string column -> pyarrow.Table"
    out[a] = per_call_ns(lambda: c.get_arrow(key), 1, n, a)
    c.delete(key)
    return out


def bench_put_many(c: cidcache.Client, quick: bool) -> Dict[str, float]:
    batch = 1000
    rounds = 10 if quick else 50
    payload = [os.urandom(4096) for _ in range(batch)]
    rates = []
    for r in range(rounds):
        items = [(f"pm-{r}-{i}".encode(), payload[i]) for i in range(batch)]
        t0 = time.perf_counter_ns()
        res = c.put_many(items)
        dt = time.perf_counter_ns() - t0
        assert all(x is None for x in res), res[:3]
        rates.append(batch / (dt / 1e9))
        for k, _ in items:
            c.delete(k)
    return {"put_many 4 KiB x1000 (objects/s, median round)": statistics.median(rates)}


def metadata(i: int) -> Dict[str, Any]:
    return {
        "size_bytes": 1024 + i,
        "mimetype": "application/octet-stream",
        "filename": f"file_{i}.bin",
        "source": "ipfs",
        "storage_tier": "memory",
        "is_pinned": False,
        "heat_score": 0.0,
    }


def bench_compat(c: cidcache.Client, quick: bool) -> Dict[str, float]:
    n = 2_000 if quick else 20_000
    cids = [cidcache.cid_of(f"compat {i} {uuid.uuid4()}".encode()) for i in range(n)]
    mds = [metadata(i) for i in range(n)]
    out: Dict[str, float] = {}
    cache = ParquetCIDCache(client=c)
    t0 = time.perf_counter()
    for cid, md in zip(cids, mds):
        cache.put_metadata(cid, md)
    cache.sync()
    out["compat put_metadata (/s, incl. sends of 1,000-row batches)"] = n / (time.perf_counter() - t0)
    # Reads of rows in the store's catalog (every call a round trip).
    t0 = time.perf_counter()
    for cid in cids:
        m = cache.get_metadata(cid)
    assert m is not None
    out["compat get_metadata from the catalog (/s)"] = n / (time.perf_counter() - t0)
    # The same loop right after the puts, as in ipfs_kit_py (rows still buffered are read here).
    fresh = ParquetCIDCache(client=c, batch_size=n + 1)
    for cid, md in zip(cids, mds):
        fresh.put_metadata(cid, md)
    t0 = time.perf_counter()
    for cid in cids:
        fresh.get_metadata(cid)
    out["compat get_metadata of buffered rows (/s)"] = n / (time.perf_counter() - t0)
    fresh.sync()
    # batch_put_metadata of 1,000 rows (new CIDs each round), sent at once.
    rounds = 5 if quick else 20
    rates = []
    for r in range(rounds):
        m = {cidcache.cid_of(f"batch {r} {i} {uuid.uuid4()}".encode()): metadata(i) for i in range(1000)}
        t0 = time.perf_counter()
        cache.batch_put_metadata(m)
        cache.sync()
        rates.append(1000 / (time.perf_counter() - t0))
    out["compat batch_put_metadata of 1,000 (rows/s, median round, sent)"] = statistics.median(rates)
    t0 = time.perf_counter()
    for i in range(0, n, 1000):
        cache.batch_get_metadata(cids[i : i + 1000])
    out["compat batch_get_metadata of 1,000 (rows/s)"] = n / (time.perf_counter() - t0)
    cache.close()
    return out


IPFS_KIT = {
    "compat put_metadata (/s, incl. sends of 1,000-row batches)": (1_250, 1_330),
    "compat get_metadata from the catalog (/s)": (1_540, 1_610),
    "compat get_metadata of buffered rows (/s)": (1_540, 1_610),
    "compat batch_put_metadata of 1,000 (rows/s, median round, sent)": (34_500, 34_500),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    ap.add_argument("--only", choices=["get", "arrow", "put_many", "compat"], action="append")
    a = ap.parse_args()
    only = set(a.only or ["get", "arrow", "put_many", "compat"])
    print(f"python {sys.version.split()[0]}, cidcache {cidcache.__version__}, load average before: {loadavg()}")
    d = Daemon("2G")
    try:
        with cidcache.Client(socket=d.socket) as c:
            results: Dict[str, float] = {}
            if "get" in only:
                results.update(bench_get(c, a.quick))
            if "arrow" in only:
                results.update(bench_get_arrow(c, a.quick))
            if "put_many" in only:
                results.update(bench_put_many(c, a.quick))
            if "compat" in only:
                results.update(bench_compat(c, a.quick))
    finally:
        d.stop()
    print(f"load average after: {loadavg()}\n")
    for k, v in results.items():
        if "/s" in k:
            ref = IPFS_KIT.get(k)
            extra = f"   ({v / ref[1]:.0f}x-{v / ref[0]:.0f}x ipfs_kit_py's {ref[0]:,}-{ref[1]:,}/s)" if ref else ""
            print(f"{k:68} {v:>14,.0f}{extra}")
        else:
            cpu = CPU.get(k)
            print(f"{k:68} {fmt_ns(v):>14}" + (f"   (CPU {fmt_ns(cpu)})" if cpu is not None else ""))


if __name__ == "__main__":
    main()
