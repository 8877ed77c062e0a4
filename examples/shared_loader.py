#!/usr/bin/env python3
"""N worker processes read the record batches of one dataset through cidcache.

The first worker to touch the dataset finds it missing and loads it: from the store's Parquet
warm tier (the daemon promotes it into shared memory) or, when no tier holds it, from the
Parquet file, which it stores with ``put_arrow``. Every other worker waits for that one load and
then reads the same bytes in shared memory, zero-copy: no worker holds a private copy.

    python examples/shared_loader.py --spawn --workers 4          # one command, prints figures

``--spawn`` starts a private cidcached (``$CIDCACHED``, else target/release or target/debug) in a
temporary directory, runs the loaders twice (a cold store: the first worker puts the dataset;
then after a daemon restart: the dataset is in the warm tier and the first touch promotes it) and
stops it. Without ``--spawn`` it uses the store named by ``--store`` / ``--socket``.
Needs: the cidcache package (``pip install './python[arrow]'``), pyarrow, numpy.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import cidcache


def make_parquet(path: str, rows: int, seed: int = 19) -> None:
    """A dataset with numeric and string columns, the same for a given seed."""
    rng = np.random.default_rng(seed)
    ids = np.arange(rows, dtype=np.int64)
    t = pa.table(
        {
            "id": ids,
            "x": rng.random(rows),
            "label": pc.binary_join_element_wise(
                "item-", pc.cast(pa.array(rng.integers(0, 1 << 30, rows)), pa.string()), ""
            ),
        }
    )
    pq.write_table(t, path, row_group_size=64 * 1024)


def load(client: cidcache.Client, key: str, parquet: str) -> tuple[pa.Table, str]:
    """The dataset as a table in shared memory, and how this worker got it.

    ``found``: it was in shared memory, or in the warm tier (the daemon promotes it once, whoever
    asks, and every asker waits for that one promotion); ``put``: this worker read the Parquet
    file and stored it; ``waited``: another worker was storing it.
    """
    obj = client.get(key)  # a hit, or the daemon promotes from the warm tier and answers
    how = "found"
    if obj is None:
        try:
            client.put_arrow(key, pq.read_table(parquet))
            how = "put"
        except cidcache.AlreadyExists:
            # Someone else is storing it: wait for the seal (a notification, not polling).
            obj = client.get(key, timeout=600)
            if obj is None:
                raise cidcache.NotFound(f"{key}: deleted while loading") from None
            how = "waited"
    del obj
    return client.get_arrow(key), how


def worker(args: Dict[str, Any], barrier: Any, results: Any) -> None:
    # Warm the imports pyarrow loads lazily, so that the figures are the reads'.
    pa.table({"x": [1.0]}).to_batches()[0].column(0).to_numpy().sum()
    with cidcache.Client(args["store"], socket=args["socket"]) as c:
        barrier.wait()  # every worker connected: start together
        t0 = time.monotonic()
        cpu0 = time.process_time()
        table, how = load(c, args["key"], args["parquet"])
        first = None
        batches = 0
        rows = 0
        checksum = 0.0
        for batch in table.to_batches(max_chunksize=args["batch_rows"]):
            if first is None:
                first = time.monotonic()
            x = batch.column(1).to_numpy()  # zero-copy view of shared memory
            checksum += float(x.sum())
            rows += batch.num_rows
            batches += 1
        done = time.monotonic()
        buf = table.column("x").chunks[0].buffers()[1]
        zero_copy = in_shm(c.store, buf.address) if buf is not None else False
        del table, buf
        results.put({
            "pid": os.getpid(),
            "how": how,
            "first_batch_s": (first or done) - t0,
            "first_batch_at": first or done,
            "wall_s": done - t0,
            "cpu_s": time.process_time() - cpu0,
            "batches": batches,
            "rows": rows,
            "checksum": checksum,
            "zero_copy": zero_copy,
        })


def in_shm(store: str, address: int) -> bool:
    """Whether address lies in one of this process's mappings of the store's data segments."""
    prefix = f"/dev/shm/cidcache.{store}.d"
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5].startswith(prefix):
                lo, hi = (int(v, 16) for v in parts[0].split("-"))
                if lo <= address < hi:
                    return True
    return False


def run_workers(n: int, store: Optional[str], socket: Optional[str], key: str, parquet: str,
                batch_rows: int) -> List[Dict[str, Any]]:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    spec = dict(store=store, socket=socket, key=key, parquet=parquet, batch_rows=batch_rows)
    procs = [ctx.Process(target=worker, args=(spec, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    out = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"worker {p.pid} failed with exit code {p.exitcode}")
    return out


def report(title: str, results: List[Dict[str, Any]]) -> None:
    first = min(r["first_batch_at"] for r in results)
    print(f"\n{title}")
    print(f"{'worker':>6} {'how':>9} {'first batch':>12} {'after #1':>10} {'wall':>9} "
          f"{'CPU':>8} {'batches':>8} {'batches/s':>10} zero-copy")
    for i, r in enumerate(sorted(results, key=lambda r: r["first_batch_at"]), 1):
        print(f"{i:>6} {r['how']:>9} {r['first_batch_s'] * 1e3:>10.2f}ms "
              f"{(r['first_batch_at'] - first) * 1e3:>8.2f}ms {r['wall_s'] * 1e3:>7.1f}ms "
              f"{r['cpu_s'] * 1e3:>6.1f}ms {r['batches']:>8} "
              f"{r['batches'] / max(r['wall_s'], 1e-9):>10.0f} {r['zero_copy']}")
    sums = {round(r["checksum"], 3) for r in results}
    print(f"all workers saw the same data: {len(sums) == 1} "
          f"({results[0]['rows']} rows, checksum {results[0]['checksum']:.3f})")


def daemon_binary() -> str:
    if os.environ.get("CIDCACHED"):
        return os.environ["CIDCACHED"]
    root = Path(__file__).resolve().parents[1]
    target = Path(os.environ.get("CARGO_TARGET_DIR", root / "target"))
    for profile in ("release", "debug"):
        if (target / profile / "cidcached").exists():
            return str(target / profile / "cidcached")
    sys.exit("cidcached not found: cargo build --release --bins, or set $CIDCACHED")


class Daemon:
    def __init__(self, tmp: str, store: str, memory: str) -> None:
        self.socket = os.path.join(tmp, "s.sock")
        self.args = [daemon_binary(), "--store", store, "--socket", self.socket,
                     "--data-dir", os.path.join(tmp, "data"), "-m", memory]
        self.log = open(os.path.join(tmp, "daemon.log"), "ab")
        self.start()

    def start(self) -> None:
        env = dict(os.environ, CIDCACHE_LOG="warn")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log, env=env)
        deadline = time.monotonic() + 60
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("cidcached did not start; see daemon.log")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM: the daemon demotes its hot tier to the warm tier and exits."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=300)
        if os.path.exists(self.socket):
            os.unlink(self.socket)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--rows", type=int, default=2_000_000, help="rows of the generated dataset")
    ap.add_argument("--batch-rows", type=int, default=64 * 1024)
    ap.add_argument("--parquet", help="Parquet file to load (default: generate one)")
    ap.add_argument("--key", help="key of the dataset in the store (default: a new name)")
    ap.add_argument("--store")
    ap.add_argument("--socket")
    ap.add_argument("--spawn", action="store_true", help="start a private cidcached")
    ap.add_argument("--memory", default="1G", help="hot-tier size of the --spawn'ed daemon")
    ap.add_argument("--json", help="write the results as JSON to this file")
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="cidcache-loader-")
    try:
        parquet = a.parquet or os.path.join(tmp, "dataset.parquet")
        if not a.parquet:
            make_parquet(parquet, a.rows)
        print(f"dataset {parquet}: {os.path.getsize(parquet) / 1e6:.1f} MB Parquet, "
              f"{a.workers} workers")
        key = a.key or f"datasets/example-{uuid.uuid4().hex[:8]}"
        out: Dict[str, Any] = {}
        if a.spawn:
            store = f"loader_{uuid.uuid4().hex[:10]}"
            d = Daemon(tmp, store, a.memory)
            try:
                out["cold"] = run_workers(a.workers, None, d.socket, key, parquet, a.batch_rows)
                report("cold store: the first worker reads the Parquet file and puts the dataset",
                       out["cold"])
                d.stop()  # persists the hot tier to the warm tier (Parquet files)
                d.start()
                out["warm"] = run_workers(a.workers, None, d.socket, key, parquet, a.batch_rows)
                report("after a restart: the first touch promotes the dataset from the warm tier",
                       out["warm"])
                out["hot"] = run_workers(a.workers, None, d.socket, key, parquet, a.batch_rows)
                report("hot: every worker hits shared memory", out["hot"])
            finally:
                d.stop()
        else:
            out["run"] = run_workers(a.workers, a.store, a.socket, key, parquet, a.batch_rows)
            report(f"key {key}", out["run"])
        ok = all(r["zero_copy"] for rs in out.values() for r in rs)
        same = len({round(r["checksum"], 3) for rs in out.values() for r in rs}) == 1
        if a.json:
            with open(a.json, "w") as f:
                json.dump(out, f, indent=1)
        if not (ok and same):
            sys.exit("FAILED: a worker read a private copy or different data")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
