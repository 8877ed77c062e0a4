"""cidcache-specific Plasma tests: `cidcached plasma` driven by the unmodified pyarrow 11
plasma client, with the native side exercised through the `cidcache` CLI.

Environment: CIDCACHED_BIN and CIDCACHE_BIN name the two binaries (run.sh sets them).
"""
import ctypes
import multiprocessing as mp
import os
import signal
import socket
import struct
import subprocess
import tempfile
import time

import numpy as np
import pytest

import pyarrow.plasma as plasma

CIDCACHED = os.environ["CIDCACHED_BIN"]
CIDCACHE = os.environ["CIDCACHE_BIN"]
FFI = ctypes.CDLL(os.environ["CIDCACHE_FFI_LIB"])  # libcidcache.so (native puts)
FFI.cidcache_connect.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint32,
                                 ctypes.POINTER(ctypes.c_void_p)]
FFI.cidcache_put.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                             ctypes.c_char_p, ctypes.c_size_t]
FFI.cidcache_disconnect.argtypes = [ctypes.c_void_p]


class Store:
    """A `cidcached plasma` process with a private Plasma socket and native socket."""

    def __init__(self, memory=100_000_000, extra=()):
        self.dir = tempfile.mkdtemp(prefix="cidplasma-")
        self.sock = os.path.join(self.dir, "plasma.sock")
        self.native = os.path.join(self.dir, "native.sock")
        self.proc = subprocess.Popen(
            [CIDCACHED, "plasma", "-s", self.sock, "-m", str(memory),
             "--native-socket", self.native, *extra],
            env={**os.environ, "CIDCACHE_LOG": "warn"},
        )
        deadline = time.time() + 10
        while not (os.path.exists(self.sock) and os.path.exists(self.native)):
            assert self.proc.poll() is None, "cidcached exited"
            assert time.time() < deadline, "cidcached did not start"
            time.sleep(0.02)

    def client(self):
        return plasma.connect(self.sock)

    def native_get(self, oid, timeout_ms=0):
        return subprocess.run(
            [CIDCACHE, "--socket", self.native, "get", "0x" + oid.binary().hex(),
             "--timeout-ms", str(timeout_ms)],
            capture_output=True, check=True).stdout

    def native_put(self, key, data):
        """Stores `data` under the raw key through the C ABI (the CLI's put takes CIDs only)."""
        h = ctypes.c_void_p()
        assert FFI.cidcache_connect(self.native.encode(), None, 0, ctypes.byref(h)) == 0
        try:
            assert FFI.cidcache_put(h, key, len(key), data, len(data)) == 0
        finally:
            FFI.cidcache_disconnect(h)

    def stop(self):
        assert self.proc.poll() is None, "cidcached died during the test"
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=5) == 0


@pytest.fixture
def store():
    s = Store()
    yield s
    s.stop()


def random_id():
    return plasma.ObjectID(np.random.bytes(20))


def test_plasma_put_native_get(store):
    c = store.client()
    oid = random_id()
    data = np.random.bytes(100_000)
    buf = c.create(oid, len(data))
    np.frombuffer(buf, dtype=np.uint8)[:] = np.frombuffer(data, dtype=np.uint8)
    c.seal(oid)
    assert store.native_get(oid) == data
    # Small objects through CreateAndSeal too.
    oid2 = random_id()
    c.create_and_seal(oid2, b"hello plasma")
    assert store.native_get(oid2) == b"hello plasma"


def test_native_put_plasma_get(store):
    c = store.client()
    oid = random_id()
    data = np.random.bytes(50_000)
    store.native_put(oid.binary(), data)
    assert c.contains(oid)
    [buf] = c.get_buffers([oid], timeout_ms=0)
    assert buf is not None and bytes(buf) == data
    assert oid in c.list()
    # The id is taken in both worlds.
    with pytest.raises(plasma.PlasmaObjectExists):
        c.create(oid, 10)
    del buf


def test_plasma_get_waits_for_native_put(store):
    c = store.client()
    oid = random_id()

    def later():
        time.sleep(0.3)
        store.native_put(oid.binary(), b"late bytes")

    import threading
    t = threading.Thread(target=later)
    t.start()
    t0 = time.time()
    [buf] = c.get_buffers([oid], timeout_ms=5000)
    t.join()
    assert buf is not None and bytes(buf) == b"late bytes"
    assert time.time() - t0 < 4


def test_native_get_waits_for_plasma_seal(store):
    c = store.client()
    oid = random_id()
    buf = c.create(oid, 4)
    p = subprocess.Popen(
        [CIDCACHE, "--socket", store.native, "get", "0x" + oid.binary().hex(),
         "--timeout-ms", "5000"], stdout=subprocess.PIPE)
    time.sleep(0.3)
    np.frombuffer(buf, dtype=np.uint8)[:] = np.frombuffer(b"abcd", dtype=np.uint8)
    c.seal(oid)
    out, _ = p.communicate(timeout=10)
    assert out == b"abcd"


def test_plasma_delete_and_evict_visible_natively(store):
    c = store.client()
    oid = random_id()
    c.create_and_seal(oid, b"x" * 1000)
    assert store.native_get(oid) == b"x" * 1000
    c.delete([oid])
    r = subprocess.run(
        [CIDCACHE, "--socket", store.native, "get", "0x" + oid.binary().hex()],
        capture_output=True)
    assert r.returncode != 0
    oid2 = random_id()
    c.create_and_seal(oid2, b"y" * 1000)
    assert c.evict(1) == 1000
    assert not c.contains(oid2)


def _get_forever(sock, oid_bytes):
    c = plasma.connect(sock)
    c.get([plasma.ObjectID(oid_bytes)])  # blocks: the object never comes


def test_client_killed_during_get(store):
    oid = random_id()
    p = mp.get_context("fork").Process(target=_get_forever, args=(store.sock, oid.binary()))
    p.start()
    time.sleep(0.5)
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    c = store.client()
    c.create_and_seal(oid, b"after the death")
    assert store.native_get(oid) == b"after the death"
    assert c.get_buffers([oid])[0].to_pybytes() == b"after the death"


def _create_and_die(sock, oid_bytes):
    c = plasma.connect(sock)
    c.create(plasma.ObjectID(oid_bytes), 1000)
    os._exit(0)


def test_unsealed_freed_when_creator_dies(store):
    oid = random_id()
    p = mp.get_context("fork").Process(target=_create_and_die, args=(store.sock, oid.binary()))
    p.start()
    p.join()
    time.sleep(0.2)
    c = store.client()
    assert oid not in c.list()
    c.create_and_seal(oid, b"reused id")
    assert store.native_get(oid) == b"reused id"


def frame(msg_type, body):
    return struct.pack("<qqq", 0, msg_type, len(body)) + body


@pytest.mark.parametrize("payload", [
    frame(1, b"\xff" * 40),                      # Create with garbage offsets
    frame(9, b"\x04\x00\x00\x00" + b"\x00" * 4),  # Get with a broken vtable
    struct.pack("<qqq", 7, 19, 0),               # bad version
    frame(99, b""),                              # unknown type
    struct.pack("<qqq", 0, 1, -5),               # negative length
    struct.pack("<qqq", 0, 1, 1 << 60),          # absurd length
    b"\x00" * 7,                                 # truncated header then EOF
])
def test_malformed_frames_do_not_disturb_others(store, payload):
    good = store.client()
    oid = random_id()
    good.create_and_seal(oid, b"survivor")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(store.sock)
    s.sendall(payload)
    s.settimeout(2)
    try:
        s.recv(100)  # the store closes the connection (or ignores it)
    except (socket.timeout, ConnectionResetError):
        pass
    s.close()
    assert store.proc.poll() is None
    [buf] = good.get_buffers([oid], timeout_ms=0)
    assert bytes(buf) == b"survivor"
    other = store.client()
    assert other.contains(oid)


def test_several_clients_and_notifications(store):
    a, b = store.client(), store.client()
    b.subscribe()
    ids = [random_id() for _ in range(20)]
    for i, oid in enumerate(ids):
        a.create_and_seal(oid, bytes([i]) * (i + 1))
    for i, oid in enumerate(ids):
        got, dsize, msize = b.get_next_notification()
        assert got == oid and dsize == i + 1 and msize == 0
    for i, oid in enumerate(ids):
        assert b.get_buffers([oid])[0].to_pybytes() == bytes([i]) * (i + 1)


def test_exact_accounting_and_full_store():
    s = Store(memory=1_000_000)
    try:
        c = s.client()
        big = random_id()
        c.create_and_seal(big, b"\x00" * 1_000_000)  # exactly -m fits
        buf = c.get_buffers([big])[0]
        with pytest.raises(plasma.PlasmaStoreFull):
            c.create(random_id(), 10)  # everything is held
        del buf
        c.create_and_seal(random_id(), b"1" * 10)  # evicts the big one
        assert not c.contains(big)
    finally:
        s.stop()


def test_sigkill_leaves_no_segments():
    s = Store()
    c = s.client()
    c.create_and_seal(random_id(), b"z" * 1000)
    s.proc.kill()
    s.proc.wait()
    deadline = time.time() + 5
    while os.path.exists(s.native) and time.time() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(s.native), "the native socket of a killed store was not removed"
