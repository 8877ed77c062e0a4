"""Typed exceptions for every status code, and hostile input: wrong types, huge keys, closed
clients, bad Arrow data give Python exceptions, never a crash."""

from __future__ import annotations

import gc
import os
from typing import Any, Dict, Type

import pyarrow as pa
import pytest

import cidcache
from cidcache import _native
from conftest import Daemon, maybe, unique

EXPECTED: Dict[int, Type[cidcache.Error]] = {
    1: cidcache.NotFound,
    2: cidcache.AlreadyExists,
    3: cidcache.StoreFull,
    4: cidcache.IndexFull,
    5: cidcache.Timeout,
    6: cidcache.InvalidKey,
    7: cidcache.InvalidArgument,
    8: cidcache.ProtocolError,
    9: cidcache.Disconnected,
    10: cidcache.PinsExhausted,
    11: cidcache.NotSealed,
    12: cidcache.PermissionDenied,
    13: cidcache.IoError,
    14: cidcache.Incompatible,
    15: cidcache.CidMismatch,
    16: cidcache.AlreadyRunning,
    17: cidcache.ArrowError,
    18: cidcache.InternalError,
    19: cidcache.Corrupt,
    20: cidcache.Busy,
    21: cidcache.NotRunning,
    22: cidcache.NotArrow,
}


def test_every_status_code_has_its_exception_class() -> None:
    # The Rust conversion (the same one every call uses) picks the class by code.
    for code, cls in EXPECTED.items():
        e = _native._error_for_code(code, f"message {code}")
        assert type(e) is cls, (code, type(e))
        assert e.code == code and str(e).startswith(f"message {code}")
        assert isinstance(e, cidcache.Error)
    # Unknown codes from a newer daemon map to InternalError.
    assert type(_native._error_for_code(999, "x")) is cidcache.InternalError
    # Built-in bases, so that ordinary handlers work.
    assert issubclass(cidcache.NotFound, KeyError)
    assert issubclass(cidcache.Timeout, TimeoutError)
    assert issubclass(cidcache.InvalidKey, ValueError)
    assert issubclass(cidcache.InvalidArgument, ValueError)
    assert issubclass(cidcache.Disconnected, ConnectionError)
    assert issubclass(cidcache.PermissionDenied, PermissionError)
    assert issubclass(cidcache.IoError, OSError)
    # The newer, more precise codes stay catchable as what they were reported as before.
    assert issubclass(cidcache.NotRunning, cidcache.Disconnected)
    assert issubclass(cidcache.NotArrow, cidcache.InvalidArgument)


def test_errors_raised_by_a_real_daemon(make_daemon: Any) -> None:
    d: Daemon = make_daemon("--pins-per-client", "64", "--arena-size", "1M", "--no-warm", memory="2M")
    with d.client() as c:
        k = unique()
        c.put(k, b"x")
        with pytest.raises(cidcache.AlreadyExists):
            c.put(k, b"y")
        with pytest.raises(cidcache.NotFound):
            c.delete(unique())
        with pytest.raises(cidcache.InvalidKey):
            c.get(b"k" * 64)
        with pytest.raises(cidcache.InvalidArgument):
            c.get(k, timeout=float("nan"))
        with pytest.raises(cidcache.StoreFull):
            c.put(unique(), os.urandom(8 << 20))
        # verify_cid: the bytes must hash to the CID key.
        wrong = cidcache.cid_of(b"other bytes")
        with pytest.raises(cidcache.CidMismatch):
            c.put(wrong, b"not the other bytes", verify_cid=True)
        # PinsExhausted: more live Objects than the lease page holds.
        held = []
        with pytest.raises(cidcache.PinsExhausted):
            for _ in range(1000):
                held.append(maybe(c.get(k)))
        del held
        gc.collect()
        assert c.pinned == 0
        # Catalog queries need the catalog, which --no-warm stores do not keep.
        with pytest.raises(cidcache.InvalidArgument):
            c.get_arrow(k)  # not an Arrow object
        with pytest.raises(cidcache.Error):
            c.query("size_bytes>0")
    with d.client(read_only=True) as r:
        with pytest.raises(cidcache.PermissionDenied):
            r.put(unique(), os.urandom(1 << 20))
    c2 = d.client()
    d.kill()
    with pytest.raises(cidcache.Disconnected):
        c2.put(unique(), b"z")
    c2.close()


def test_arrow_errors(client: cidcache.Client) -> None:
    with pytest.raises(TypeError):
        client.put_arrow(unique(), b"not arrow")
    with pytest.raises(TypeError):
        client.put_arrow(unique(), [1, 2, 3])

    class BadStream:
        def __arrow_c_stream__(self, requested_schema: object = None) -> object:
            return "not a capsule"

    with pytest.raises(TypeError):
        client.put_arrow(unique(), BadStream())

    class WrongCapsule:
        def __arrow_c_stream__(self, requested_schema: object = None) -> object:
            return pa.schema([("a", pa.int64())]).__arrow_c_schema__()

    with pytest.raises(ValueError):
        client.put_arrow(unique(), WrongCapsule())

    class Failing:
        def __arrow_c_stream__(self, requested_schema: object = None) -> object:
            raise RuntimeError("producer failed")

    with pytest.raises(RuntimeError, match="producer failed"):
        client.put_arrow(unique(), Failing())
    # A consumed capsule cannot be imported twice.
    cap = pa.table({"a": [1]}).__arrow_c_stream__()

    class Once:
        def __arrow_c_stream__(self, requested_schema: object = None) -> object:
            return cap

    client.put_arrow(unique(), Once())
    with pytest.raises(ValueError):
        client.put_arrow(unique(), Once())


def test_hostile_input_never_crashes(client: cidcache.Client) -> None:
    # Typed as Any: these calls are wrong on purpose, to check the run-time checks.
    c: Any = client
    k = unique()
    c.put(k, b"v")
    bad_keys: list[Any] = [None, 1, 1.5, object(), ["list"], {"d": 1}]
    for bad in bad_keys:
        with pytest.raises(TypeError):
            c.get(bad)
        with pytest.raises(TypeError):
            c.put(bad, b"x")
        with pytest.raises(TypeError):
            c.contains(bad)
        with pytest.raises(TypeError):
            c.delete(bad)
    for huge in (b"k" * 64, b"k" * 10_000_000, "k" * 100, "0x" + "ab" * 64, b"", ""):
        with pytest.raises(cidcache.InvalidKey):
            c.get(huge)
        with pytest.raises(cidcache.InvalidKey):
            c.put(huge, b"x")
    for bad_hex in ("0x", "0xabc", "0xzz"):
        with pytest.raises(cidcache.InvalidKey):
            c.get(bad_hex)
    for bad_data in (None, 1, "a str", object(), [1, 2]):
        with pytest.raises(TypeError):
            c.put(unique(), bad_data)
    with pytest.raises(TypeError):
        c.put(unique(), b"x", metadata=123)
    with pytest.raises(TypeError):
        c.get(k, timeout="soon")
    for t in (-1.0, float("nan"), float("-inf")):
        with pytest.raises(cidcache.InvalidArgument):
            c.get(k, timeout=t)
    with pytest.raises(TypeError):
        c.get_many(b"single key")
    with pytest.raises(TypeError):
        c.get_many([k, 3])
    with pytest.raises(TypeError):
        c.put_many([(k,)])
    with pytest.raises(TypeError):
        c.put_many([k])
    with pytest.raises(TypeError):
        c.put_many([(unique(), None)])
    with pytest.raises(TypeError):
        c.catalog_upsert([1])
    with pytest.raises(cidcache.InvalidArgument):
        c.catalog_upsert([{"cid": k, "no_such_column": 1}])
    with pytest.raises(cidcache.InvalidArgument):
        c.catalog_upsert([{"size_bytes": 1}])
    with pytest.raises(TypeError):
        c.catalog_upsert([{"cid": k, "size_bytes": "big"}])
    with pytest.raises(OverflowError):
        c.catalog_upsert([{"cid": k, "size_bytes": -1}])
    with pytest.raises(cidcache.InvalidArgument):
        c.query("no_such_column=1")
    with pytest.raises(cidcache.InvalidArgument):
        c.get_arrow(k, columns=[])
    with pytest.raises(TypeError):
        c.get_arrow(k, filter=3)
    with pytest.raises(TypeError):
        c.get_arrow(k, filter=("x", "=", None))
    with pytest.raises(TypeError):
        _native.Client(socket=123)  # type: ignore[arg-type]
    with pytest.raises(cidcache.Disconnected):
        cidcache.Client(socket="/nonexistent/dir/s.sock")
    # The client still works after all that.
    assert bytes(maybe(c.get(k))) == b"v"


def test_closed_client(daemon: Daemon) -> None:
    c = daemon.client()
    k = unique()
    c.put(k, b"v")
    c.close()
    c.close()  # idempotent
    for call in (
        lambda: c.get(k),
        lambda: c.put(unique(), b"x"),
        lambda: c.contains(k),
        lambda: c.delete(k),
        lambda: c.list(),
        lambda: c.stats(),
        lambda: c.get_many([k]),
        lambda: c.put_many([(unique(), b"x")]),
        lambda: c.get_arrow(k),
        lambda: c.query(),
        lambda: c.pinned,
        lambda: c[k],
    ):
        with pytest.raises(cidcache.Disconnected, match="closed"):
            call()
    assert "closed" in repr(c)


def test_operations_on_a_released_stream_and_object(client: cidcache.Client) -> None:
    k = unique()
    client.put_arrow(k, pa.table({"a": [1, 2]}))
    s = client.get_arrow_stream(k)
    t = pa.table(s)
    s.release()
    with pytest.raises(ValueError):
        s.__arrow_c_stream__()
    assert t.num_rows == 2  # the table imported before keeps its own reference
    assert "released" in repr(s)
