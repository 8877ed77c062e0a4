"""Python test of the cidcache C ABI through ctypes, next to pyarrow.

Runs against a real cidcached: tests/run-ffi-tests.sh starts one and passes CIDCACHE_SOCKET,
CIDCACHE_STORE and CIDCACHE_LIB (the path of libcidcache.so).

The Arrow test stores a table through the Arrow C stream interface (pyarrow exports, the library
imports), exports it back zero-copy (the library exports, `pa.RecordBatchReader._import_from_c`
imports), compares it with what was put, and checks that every buffer lies inside this process's
mappings of the store's data segments (/dev/shm/cidcache.<store>.d*).
"""

import ctypes
import os
import threading
import time

import pyarrow as pa
import pytest

LIB_PATH = os.environ.get("CIDCACHE_LIB", "")
SOCKET = os.environ.get("CIDCACHE_SOCKET", "")
STORE = os.environ.get("CIDCACHE_STORE", "")

pytestmark = pytest.mark.skipif(
    not (LIB_PATH and SOCKET and STORE),
    reason="set CIDCACHE_LIB, CIDCACHE_SOCKET and CIDCACHE_STORE (tests/run-ffi-tests.sh does)",
)

OK, NOT_FOUND, ALREADY_EXISTS, INVALID_KEY, INVALID_ARGUMENT = 0, 1, 2, 6, 7
NOT_ARROW = 22


class View(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("data_len", ctypes.c_size_t),
        ("metadata", ctypes.c_void_p),
        ("metadata_len", ctypes.c_size_t),
        ("flags", ctypes.c_uint32),
    ]


class ArrowArrayStream(ctypes.Structure):
    """struct ArrowArrayStream: four callbacks and private data (layout per the Arrow spec)."""

    _fields_ = [
        ("get_schema", ctypes.c_void_p),
        ("get_next", ctypes.c_void_p),
        ("get_last_error", ctypes.c_void_p),
        ("release", ctypes.c_void_p),
        ("private_data", ctypes.c_void_p),
    ]


def load():
    lib = ctypes.CDLL(LIB_PATH)
    p, u8p, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
    sigs = {
        "cidcache_connect": ([ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint32, ctypes.POINTER(p)], ctypes.c_int),
        "cidcache_disconnect": ([p], None),
        "cidcache_put": ([p, u8p, sz, u8p, sz], ctypes.c_int),
        "cidcache_get": ([p, u8p, sz, ctypes.POINTER(p), ctypes.POINTER(View)], ctypes.c_int),
        "cidcache_get_timeout": (
            [p, u8p, sz, ctypes.c_int64, ctypes.POINTER(p), ctypes.POINTER(View)],
            ctypes.c_int,
        ),
        "cidcache_release": ([p], None),
        "cidcache_pinned": ([p, ctypes.POINTER(sz)], ctypes.c_int),
        "cidcache_get_arrow": ([p, u8p, sz, ctypes.POINTER(ArrowArrayStream)], ctypes.c_int),
        "cidcache_put_arrow": ([p, u8p, sz, ctypes.POINTER(ArrowArrayStream)], ctypes.c_int),
        "cidcache_last_error": ([], ctypes.c_char_p),
        "cidcache_cid_parse": ([ctypes.c_char_p, ctypes.c_void_p, sz, ctypes.POINTER(sz)], ctypes.c_int),
    }
    for name, (args, res) in sigs.items():
        f = getattr(lib, name)
        f.argtypes = args
        f.restype = res
    return lib


@pytest.fixture(scope="module")
def lib():
    return load()


@pytest.fixture()
def client(lib):
    h = ctypes.c_void_p()
    s = lib.cidcache_connect(SOCKET.encode(), None, 0, ctypes.byref(h))
    assert s == OK, lib.cidcache_last_error()
    yield h
    lib.cidcache_disconnect(h)


_counter = [0]


def key(label):
    _counter[0] += 1
    return f"py-{os.getpid()}-{_counter[0]}-{label}".encode()


def pinned(lib, client):
    n = ctypes.c_size_t()
    assert lib.cidcache_pinned(client, ctypes.byref(n)) == OK
    return n.value


def shm_ranges():
    """(lo, hi) of every mapping of the store's data segments in this process."""
    prefix = f"/dev/shm/cidcache.{STORE}.d"
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5].startswith(prefix):
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                out.append((lo, hi))
    return out


def inside(addr, size, ranges):
    return any(lo <= addr and addr + size <= hi for lo, hi in ranges)


def test_put_get_bytes(lib, client):
    k = key("bytes")
    data = b"hello from python" * 10
    assert lib.cidcache_put(client, k, len(k), data, len(data)) == OK
    assert lib.cidcache_put(client, k, len(k), data, len(data)) == ALREADY_EXISTS
    assert b"already exists" in lib.cidcache_last_error()
    obj = ctypes.c_void_p()
    v = View()
    assert lib.cidcache_get(client, k, len(k), ctypes.byref(obj), ctypes.byref(v)) == OK
    assert ctypes.string_at(v.data, v.data_len) == data
    assert inside(v.data, v.data_len, shm_ranges())
    assert pinned(lib, client) == 1
    lib.cidcache_release(obj)
    assert pinned(lib, client) == 0
    missing = key("missing")
    assert lib.cidcache_get(client, missing, len(missing), ctypes.byref(obj), None) == NOT_FOUND
    assert obj.value is None
    assert lib.cidcache_get(client, b"x" * 70, 70, ctypes.byref(obj), None) == INVALID_KEY
    assert lib.cidcache_get(client, k, len(k), None, None) == INVALID_ARGUMENT


def test_get_timeout_across_threads(lib, client):
    k = key("late")

    def later():
        time.sleep(0.1)
        h = ctypes.c_void_p()
        assert lib.cidcache_connect(SOCKET.encode(), None, 0, ctypes.byref(h)) == OK
        lib.cidcache_put(h, k, len(k), b"late", 4)
        lib.cidcache_disconnect(h)

    t = threading.Thread(target=later)
    t.start()
    obj = ctypes.c_void_p()
    v = View()
    # ctypes releases the GIL during the call, so the other thread runs meanwhile.
    assert lib.cidcache_get_timeout(client, k, len(k), 10000, ctypes.byref(obj), ctypes.byref(v)) == OK
    assert ctypes.string_at(v.data, v.data_len) == b"late"
    lib.cidcache_release(obj)
    t.join()


def make_table():
    return pa.table(
        {
            "id": pa.array(range(1000), type=pa.int64()),
            "score": pa.array([i * 0.5 for i in range(1000)], type=pa.float64()),
            "name": pa.array([None if i % 7 == 0 else f"name-{i}" for i in range(1000)]),
            "flag": pa.array([i % 3 == 0 for i in range(1000)]),
        }
    )


def test_arrow_round_trip_zero_copy(lib, client):
    table = make_table()
    k = key("arrow")
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=300))
    stream_in = ArrowArrayStream()
    reader._export_to_c(ctypes.addressof(stream_in))
    assert lib.cidcache_put_arrow(client, k, len(k), ctypes.byref(stream_in)) == OK, lib.cidcache_last_error()
    assert stream_in.release is None  # moved in and released by the library

    stream_out = ArrowArrayStream()
    assert lib.cidcache_get_arrow(client, k, len(k), ctypes.byref(stream_out)) == OK, lib.cidcache_last_error()
    imported = pa.RecordBatchReader._import_from_c(ctypes.addressof(stream_out))
    assert stream_out.release is None  # moved into pyarrow
    got = imported.read_all()
    assert got.schema.equals(table.schema)
    assert got.equals(table)
    assert got.num_rows == 1000 and len(got.to_batches()) == 4

    ranges = shm_ranges()
    assert ranges, f"no /dev/shm/cidcache.{STORE}.d* mapping in /proc/self/maps"
    checked = 0
    for batch in got.to_batches():
        for col in batch.columns:
            for buf in col.buffers():
                if buf is None or buf.size == 0:
                    continue
                assert inside(buf.address, buf.size, ranges), (
                    f"buffer at {buf.address:#x} (+{buf.size}) is outside the shared mapping: copied"
                )
                checked += 1
    assert checked >= 4 * 4

    # The object stays pinned while pyarrow holds the buffers; dropping them unpins it.
    assert pinned(lib, client) >= 1
    del got, imported, batch, col, buf
    import gc

    gc.collect()
    assert pinned(lib, client) == 0


def test_arrow_errors(lib, client):
    k = key("raw")
    assert lib.cidcache_put(client, k, len(k), b"raw", 3) == OK
    s = ArrowArrayStream()
    assert lib.cidcache_get_arrow(client, k, len(k), ctypes.byref(s)) == NOT_ARROW
    assert b"not stored as an Arrow object" in lib.cidcache_last_error()
    assert s.release is None
    missing = key("missing-arrow")
    assert lib.cidcache_get_arrow(client, missing, len(missing), ctypes.byref(s)) == NOT_FOUND
    # An already-released stream is refused.
    assert lib.cidcache_put_arrow(client, missing, len(missing), ctypes.byref(s)) == INVALID_ARGUMENT


def test_cid_parse(lib):
    out = (ctypes.c_uint8 * 63)()
    n = ctypes.c_size_t()
    text = b"bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    assert lib.cidcache_cid_parse(text, out, 63, ctypes.byref(n)) == OK
    assert n.value == 36
