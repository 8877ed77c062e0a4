"""Test fixtures: real cidcached daemons (one per session, and private ones for tests that need
a particular configuration), each with its own store name, socket and data directory."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

import cidcache

REPO = Path(__file__).resolve().parents[2]


def daemon_binary() -> str:
    """cidcached: $CIDCACHED, else the workspace's debug build (built by the test command)."""
    env = os.environ.get("CIDCACHED")
    if env:
        return env
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    for profile in ("debug", "release"):
        p = target / profile / "cidcached"
        if p.exists():
            return str(p)
    raise RuntimeError("cidcached not found: build it (cargo build --bins) or set $CIDCACHED")


class Daemon:
    """A running cidcached with its own store, socket and data directory."""

    def __init__(self, *args: str, memory: str = "64M", runtime_dir: Optional[str] = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="cidcache-py-"))
        self.store = f"pyt_{uuid.uuid4().hex[:12]}"
        self.socket = str(self.dir / "s.sock")
        env = dict(os.environ, CIDCACHE_LOG="warn")
        if runtime_dir is not None:
            # The store's default socket under $XDG_RUNTIME_DIR (what Client() finds).
            env["XDG_RUNTIME_DIR"] = runtime_dir
            self.socket = os.path.join(runtime_dir, "cidcache", f"{self.store}.sock")
        self.data_dir = self.dir / "data"
        self.log = open(self.dir / "daemon.log", "wb")
        cmd: List[str] = [
            daemon_binary(),
            "--store",
            self.store,
            *([] if runtime_dir is not None else ["--socket", self.socket]),
            "--data-dir",
            str(self.data_dir),
            "-m",
            memory,
            *args,
        ]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, env=env
        )
        deadline = time.monotonic() + 60
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"cidcached did not start: {self.read_log()}")
            time.sleep(0.02)

    def client(self, read_only: bool = False) -> cidcache.Client:
        return cidcache.Client(socket=self.socket, read_only=read_only)

    def read_log(self) -> str:
        self.log.flush()
        return (self.dir / "daemon.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    d = Daemon("--arena-size", "16M", "--index-capacity", "16384")
    yield d
    d.stop()


@pytest.fixture
def client(daemon: Daemon) -> Iterator[cidcache.Client]:
    with daemon.client() as c:
        yield c


@pytest.fixture
def make_daemon() -> Iterator[Callable[..., Daemon]]:
    started: List[Daemon] = []

    def make(*args: str, memory: str = "64M", runtime_dir: Optional[str] = None) -> Daemon:
        d = Daemon(*args, memory=memory, runtime_dir=runtime_dir)
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()


def unique(prefix: str = "k") -> bytes:
    """A key no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:20]}".encode()


def shm_ranges(store: str) -> List[range]:
    """Address ranges of this process's mappings of the store's data segments."""
    prefix = f"/dev/shm/cidcache.{store}.d"
    out: List[range] = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5].startswith(prefix):
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                out.append(range(lo, hi))
    return out


def in_shm(store: str, address: int, size: int = 1) -> bool:
    return any(address in r and address + size - 1 in r for r in shm_ranges(store))


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def maybe(x: Optional[cidcache.Object]) -> cidcache.Object:
    assert x is not None
    return x
