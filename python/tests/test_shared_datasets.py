"""Bad input for the shared-dataset story: a dataset deleted while worker processes read it, and
a worker killed mid-read. Real worker processes, a real daemon."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any, Dict, List

import fsspec
import numpy as np
import pyarrow as pa

import cidcache
from conftest import Daemon, unique, wait_for

ROWS = 300_000

# A worker: connects, takes the dataset (pinned while the table lives), reports, then reads it
# over and over ("mid-read") until told what to do next on its standard input.
WORKER = r"""
import json, sys
import numpy as np, pyarrow.compute as pc, pyarrow.dataset as ds
import fsspec
import cidcache

socket, key = sys.argv[1:3]
c = cidcache.Client(socket=socket)
t = c.get_arrow(key)  # one pin
# The same dataset through the cidcache:// filesystem (its own client): a second pin.
fs = fsspec.filesystem("cidcache", socket=socket)
t2 = ds.dataset(f"cidcache://{key}", format="arrow", filesystem=fs).to_table()

def checksum():
    a = sum(int(pc.sum(b.column(0)).as_py()) for b in t.to_batches())
    b = sum(int(pc.sum(b.column(0)).as_py()) for b in t2.to_batches())
    assert a == b
    return a

print(json.dumps({"ready": checksum(), "pinned": c.pinned + fs.client.pinned}), flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "read":            # the table held since before: still readable?
        print(json.dumps({"sum": checksum()}), flush=True)
    elif cmd == "reget":         # a new read of the key
        try:
            c.get_arrow(key)
            print(json.dumps({"reget": "ok"}), flush=True)
        except cidcache.Error as e:
            print(json.dumps({"reget": type(e).__name__, "msg": str(e)}), flush=True)
    elif cmd == "spin":          # read in a loop until killed
        print(json.dumps({"spinning": True}), flush=True)
        while True:
            checksum()
    elif cmd == "exit":
        break
del t, t2
"""


def dataset() -> pa.Table:
    rng = np.random.default_rng(5)
    return pa.table({
        "id": np.arange(ROWS, dtype=np.int64),
        "x": rng.random(ROWS),
        "s": pa.array([f"v{i % 1000}" for i in range(ROWS)]),
    })


class Worker:
    def __init__(self, daemon: Daemon, key: str) -> None:
        self.p = subprocess.Popen(
            [sys.executable, "-c", WORKER, daemon.socket, key],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )

    def recv(self) -> Dict[str, Any]:
        assert self.p.stdout is not None
        line = self.p.stdout.readline()
        assert line, f"worker exited ({self.p.wait()})"
        r: Dict[str, Any] = json.loads(line)
        return r

    def send(self, cmd: str) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()

    def ask(self, cmd: str) -> Dict[str, Any]:
        self.send(cmd)
        return self.recv()

    def close(self) -> None:
        if self.p.poll() is None:
            try:
                self.send("exit")
            except BrokenPipeError:
                pass
            self.p.wait(timeout=60)


def start_workers(daemon: Daemon, key: str, n: int) -> List[Worker]:
    ws = [Worker(daemon, key) for _ in range(n)]
    expected = ROWS * (ROWS - 1) // 2
    for w in ws:
        r = w.recv()
        assert r["ready"] == expected and r["pinned"] == 2
    return ws


def stat(c: cidcache.Client, name: str) -> int:
    return c.stats()[name]


def test_dataset_deleted_while_workers_read_it(make_daemon: Any) -> None:
    d = make_daemon("--arena-size", "16M")
    key = unique("ds-del").decode()
    expected = ROWS * (ROWS - 1) // 2
    with d.client() as c:
        c.put_arrow(key, dataset())
        ws = start_workers(d, key, 3)
        try:
            assert stat(c, "pins") == 6  # two per worker: the client's table, the fsspec one
            c.delete(key)
            # New reads get a clear error, in the workers and here; also through fsspec.
            for w in ws:
                r = w.ask("reget")
                assert r["reget"] == "NotFound", r
            assert c.get(key) is None
            try:
                c.get_arrow(key)
                raise AssertionError("get_arrow of a deleted key succeeded")
            except cidcache.NotFound as e:
                # The message names the key (a name key in its 0x-hex form) and says why.
                assert cidcache.format_key(cidcache.parse_key(key)) in str(e)
                assert "no tier holds it" in str(e)
            fs = fsspec.filesystem("cidcache", socket=d.socket, skip_instance_cache=True)
            try:
                with fs.open(f"cidcache://{key}"):
                    pass
                raise AssertionError("opening a deleted key succeeded")
            except FileNotFoundError as e:
                assert "no such object" in str(e)
            # What the workers hold stays readable: the pins keep the bytes.
            for w in ws:
                assert w.ask("read")["sum"] == expected
            assert stat(c, "hot.deferred_frees_pending") == 1
            assert stat(c, "pins") == 6
        finally:
            for w in ws:
                w.close()
        # The last pin gone, the memory is freed.
        wait_for(lambda: stat(c, "pins") == 0 and stat(c, "hot.deferred_frees_pending") == 0,
                 "the deleted dataset's memory to be freed")
        assert stat(c, "hot.bytes") == 0
        # And the key can be used again.
        c.put_arrow(key, dataset().slice(0, 10))
        assert c.get_arrow(key).num_rows == 10


def test_worker_killed_mid_read_leaks_no_pin(make_daemon: Any) -> None:
    d = make_daemon("--arena-size", "16M")
    key = unique("ds-kill").decode()
    expected = ROWS * (ROWS - 1) // 2
    with d.client() as c:
        c.put_arrow(key, dataset())
        ws = start_workers(d, key, 4)
        try:
            assert stat(c, "pins") == 8
            assert stat(c, "clients") == 9  # two per worker, and this one
            victim = ws[0]
            assert victim.ask("spin")["spinning"]
            os.kill(victim.p.pid, signal.SIGKILL)
            assert victim.p.wait(timeout=60) == -signal.SIGKILL
            # The coordinator notices the dead connection and drops its pins.
            wait_for(lambda: stat(c, "clients") == 7 and stat(c, "pins") == 6,
                     "the killed worker's session and pins to be released")
            # The others are unaffected: their tables, new reads, new workers.
            for w in ws[1:]:
                assert w.ask("read")["sum"] == expected
                assert w.ask("reget")["reget"] == "ok"
            late = start_workers(d, key, 1)
            ws.extend(late)
            assert stat(c, "pins") == 8
        finally:
            for w in ws:
                w.close()
        wait_for(lambda: stat(c, "pins") == 0, "every pin to be released")
        # Nothing leaked: deleting the dataset frees its memory at once.
        c.delete(key)
        wait_for(lambda: stat(c, "hot.deferred_frees_pending") == 0 and stat(c, "hot.bytes") == 0,
                 "the dataset's memory to be freed")
