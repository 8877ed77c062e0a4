"""The synchronous API against a real daemon: put/get/contains/delete/list/stats, batches,
key forms, context managers."""

from __future__ import annotations

import os
from typing import Any, cast

import pytest

import cidcache
from conftest import Daemon, maybe, unique


def test_put_get_roundtrip_and_metadata(client: cidcache.Client) -> None:
    k = unique()
    client.put(k, b"hello world", metadata=b"meta")
    o = maybe(client.get(k))
    assert bytes(o) == b"hello world"
    assert len(o) == 11
    assert o.key == k
    assert o.metadata == b"meta"
    assert not o.is_arrow
    assert client[k].key == k
    assert k in client and client.contains(k)


def test_missing_key_is_none_or_notfound(client: cidcache.Client) -> None:
    k = unique()
    assert client.get(k) is None
    assert client.get(k, timeout=0.05) is None
    assert not client.contains(k)
    with pytest.raises(cidcache.NotFound):
        client[k]
    with pytest.raises(KeyError):  # NotFound is a KeyError
        client[k]
    with pytest.raises(cidcache.NotFound):
        client.delete(k)


def test_put_accepts_any_buffer(client: cidcache.Client) -> None:
    import array

    import numpy as np

    datas: list[Any] = [
        b"bytes",
        bytearray(b"bytearray"),
        memoryview(b"xxmemoryviewxx")[2:-2],
        np.arange(10, dtype=np.float64),
        array.array("i", [1, 2, 3]),
    ]
    for data in datas:
        k = unique()
        client.put(k, data)
        assert bytes(maybe(client.get(k))) == bytes(memoryview(data).cast("B"))


def test_large_object_goes_through_create_and_seal(client: cidcache.Client) -> None:
    k = unique()
    data = os.urandom(3 << 20)
    client.put(k, data)
    assert bytes(maybe(client.get(k))) == data


def test_put_content_returns_cid_text(client: cidcache.Client) -> None:
    cid = client.put_content(b"some content")
    assert cid.startswith("bafkrei")
    assert cid == cidcache.cid_of(b"some content")
    assert bytes(maybe(client.get(cid))) == b"some content"
    # Storing the same content again succeeds.
    assert client.put_content(b"some content") == cid
    # The binary form and the text form name the same object.
    assert maybe(client.get(cidcache.parse_key(cid))).cid == cid


def test_key_forms(client: cidcache.Client) -> None:
    client.put("model/weights-" + unique().decode(), b"named")  # a name: its UTF-8 bytes
    name = "n-" + unique().decode()
    client.put(name, b"by name")
    assert bytes(maybe(client.get(name.encode()))) == b"by name"
    hexkey = "0x" + unique().hex()
    client.put(hexkey, b"by hex")
    assert bytes(maybe(client.get(bytes.fromhex(hexkey[2:])))) == b"by hex"
    assert cidcache.format_key(bytes.fromhex(hexkey[2:])) == hexkey
    # CIDv0 and CIDv1 strings are stored in binary form.
    v0 = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
    b = cidcache.parse_key(v0)
    assert b[:2] == b"\x12\x20" and len(b) == 34
    assert cidcache.format_key(b) == v0


def test_delete(client: cidcache.Client) -> None:
    k = unique()
    client.put(k, b"x")
    client.delete(k)
    assert client.get(k) is None
    client.put(k, b"y")  # the key can be used again
    assert bytes(maybe(client.get(k))) == b"y"


def test_already_exists(client: cidcache.Client) -> None:
    k = unique()
    client.put(k, b"one")
    with pytest.raises(cidcache.AlreadyExists):
        client.put(k, b"two")
    assert bytes(maybe(client.get(k))) == b"one"


def test_list_and_stats(client: cidcache.Client) -> None:
    k = unique()
    client.put(k, b"12345", metadata=b"ab")
    entries = {e.key: e for e in client.list()}
    assert entries[k].size == 5 and entries[k].metadata_size == 2
    assert not entries[k].is_arrow
    assert entries[k].cid == cidcache.format_key(k)
    s = client.stats()
    assert isinstance(s, dict) and s and all(isinstance(v, int) for v in s.values())


def test_get_many_and_put_many_result_per_item(client: cidcache.Client) -> None:
    ks = [unique() for _ in range(5)]
    existing = unique()
    client.put(existing, b"old")
    res = client.put_many([(k, b"v" + k) for k in ks] + [(existing, b"new"), (b"", b"bad")])
    assert res[:5] == [None] * 5
    assert isinstance(res[5], cidcache.AlreadyExists)
    assert isinstance(res[6], cidcache.InvalidKey)
    got = client.get_many(ks + [unique(), b"x" * 64])
    for k, o in zip(ks, got[:5]):
        assert isinstance(o, cidcache.Object) and bytes(o) == b"v" + k
    assert got[5] is None
    assert isinstance(got[6], cidcache.InvalidKey)
    # A mapping works too.
    m = {unique(): b"a", unique(): b"b"}
    assert client.put_many(m) == [None, None]


def test_get_many_waits_for_missing(daemon: Daemon) -> None:
    import threading

    k = unique()
    with daemon.client() as a, daemon.client() as b:
        t = threading.Timer(0.2, lambda: b.put(k, b"late"))
        t.start()
        got = a.get_many([k], timeout=60)
        t.join()
        o = got[0]
        assert isinstance(o, cidcache.Object) and bytes(o) == b"late"


def test_get_waits_for_seal_from_another_client(daemon: Daemon) -> None:
    import threading

    k = unique()
    with daemon.client() as a, daemon.client() as b:
        t = threading.Timer(0.2, lambda: b.put(k, b"sealed"))
        t.start()
        o = a.get(k, timeout=60)
        t.join()
        assert o is not None and bytes(o) == b"sealed"
        # A long wait is cut into slices internally; it still returns the object.
        k2 = unique()
        t = threading.Timer(0.5, lambda: b.put(k2, b"later"))
        t.start()
        o2 = a.get(k2, timeout=float("inf"))
        t.join()
        assert o2 is not None and bytes(o2) == b"later"


def test_store_from_environment(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    # $CIDCACHE_STORE names the store, as for the cidcache command; with no socket given the
    # store's default socket is used, where nothing listens here: Disconnected names it.
    monkeypatch.setenv("CIDCACHE_STORE", "pyt-no-such-store")
    with pytest.raises(cidcache.Disconnected, match="pyt-no-such-store"):
        cidcache.Client()
    with daemon.client() as c:
        assert c.store == daemon.store


def test_context_manager_closes(daemon: Daemon) -> None:
    with daemon.client() as c:
        k = unique()
        c.put(k, b"x")
        o = maybe(c.get(k))
    assert c.closed
    # An object read before close stays valid.
    assert bytes(o) == b"x"
    with pytest.raises(cidcache.Disconnected):
        c.get(k)


def test_read_only_client(daemon: Daemon) -> None:
    k = unique()
    with daemon.client() as w, daemon.client(read_only=True) as r:
        w.put(k, b"data")
        assert bytes(maybe(r.get(k))) == b"data"
        with pytest.raises(cidcache.PermissionDenied):
            r.put(unique(), os.urandom(1 << 20))


def test_object_context_manager_and_release(client: cidcache.Client) -> None:
    k = unique()
    client.put(k, b"abc")
    before = client.pinned
    with maybe(client.get(k)) as o:
        assert client.pinned == before + 1
        assert bytes(o) == b"abc"
    assert client.pinned == before
    assert o.released
    with pytest.raises(ValueError):
        memoryview(o)
    with pytest.raises(ValueError):
        len(o)
    with pytest.raises(TypeError):
        cast(Any, cidcache.Object)()
