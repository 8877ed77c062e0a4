"""cidcache.compat.ParquetCIDCache: ipfs_kit_py's API (names, arguments, result shapes) over the
store's catalog, shared by every process of the store."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, Dict

import cidcache
from cidcache.compat import COLUMNS, ParquetCIDCache
from conftest import Daemon, unique


def cid_of(i: int) -> str:
    return cidcache.cid_of(f"content {i} {unique().decode()}".encode())


def test_put_get_shape(daemon: Daemon) -> None:
    with ParquetCIDCache("/ignored/dir", socket=daemon.socket) as cache:
        cid = cid_of(1)
        md = {
            "size_bytes": 1234,
            "mimetype": "image/png",
            "filename": "a.png",
            "extension": ".png",
            "local_path": "/tmp/a.png",
            "source": "ipfs",
            "source_details": "gateway",
            "is_pinned": True,
            "added_timestamp": 1_700_000_000_000,
            "heat_score": 0.5,
            "access_count": 3,
            "properties": {"owner": "me"},
        }
        assert cache.put_metadata(cid, md)
        for m in (cache.get_metadata(cid), None):
            if m is None:
                cache.sync()
                m = cache.get_metadata(cid)  # now from the store's catalog
            assert m is not None
            assert list(m) == list(COLUMNS)
            assert m["cid"] == cid and m["size_bytes"] == 1234
            assert m["mimetype"] == "image/png" and m["filename"] == "a.png"
            assert m["extension"] == ".png" and m["local_path"] == "/tmp/a.png"
            assert m["source"] == "ipfs" and m["source_details"] == "gateway"
            assert m["is_pinned"] is True and m["valid"] is True
            assert m["added_timestamp"] == dt.datetime(2023, 11, 14, 22, 13, 20)
            assert isinstance(m["last_accessed"], dt.datetime)
            assert m["heat_score"] == 0.5 and m["access_count"] == 3
            assert m["cid_version"] == 1 and m["multihash_type"] == "sha2-256"
            assert m["properties"] == {"owner": "me"}
            assert m["storage_tier"] in ("none", "unknown") or m["storage_tier"] == "none"
        assert cache.get_metadata(cid_of(2)) is None
        assert not cache.put_metadata("", {})
        assert cache.get_metadata("x" * 100) is None


def test_visible_to_other_processes_after_sync(daemon: Daemon) -> None:
    a = ParquetCIDCache(socket=daemon.socket, batch_size=3)
    b = ParquetCIDCache(socket=daemon.socket)
    cids = [cid_of(i) for i in range(3)]
    assert a.put_metadata(cids[0], {"size_bytes": 1})
    assert b.get_metadata(cids[0]) is None  # still buffered in a
    assert a.put_metadata(cids[1], {"size_bytes": 2})
    assert a.put_metadata(cids[2], {"size_bytes": 3})  # the batch is full: sent
    got = b.batch_get_metadata(cids + [cid_of(9)])
    assert [None if m is None else m["size_bytes"] for m in got.values()] == [1, 2, 3, None]
    assert list(got) == cids + [list(got)[3]]
    a.close()
    b.close()


def test_storage_tier_follows_the_object(daemon: Daemon) -> None:
    with daemon.client() as c, ParquetCIDCache(client=c) as cache:
        cid = c.put_content(b"object with metadata " + unique())
        assert cache.put_metadata(cid, {"mimetype": "text/plain", "size_bytes": 5})
        cache.sync()
        m = cache.get_metadata(cid)
        assert m is not None and m["storage_tier"] == "hot" and m["mimetype"] == "text/plain"
        assert cache.contains(cid)
        assert cache.delete(cid)  # removes the object and its row
        assert c.get(cid) is None
        assert not cache.contains(cid)
        assert not cache.delete(cid)


def test_batch_contains_delete_and_all_cids(daemon: Daemon) -> None:
    with ParquetCIDCache(socket=daemon.socket) as cache:
        rows = {cid_of(i): {"size_bytes": i, "mimetype": "text/plain"} for i in range(20)}
        res = cache.batch_put_metadata({**rows, "": {}})
        assert all(res[c] for c in rows) and res[""] is False
        for c in rows:
            assert cache.contains(c)
        all_cids = set(cache.get_all_cids())
        assert set(rows) <= all_cids
        victim = next(iter(rows))
        assert cache.delete(victim)  # a metadata-only row
        assert not cache.contains(victim)
        assert victim not in cache.get_all_cids()
        # Names that are not CIDs work too (ipfs_kit_py's tests use such keys).
        assert cache.put_metadata("QmNotReallyACid-" + unique().decode(), {"size_bytes": 7})
        cache.sync()
        assert any(c.startswith("QmNotReallyACid-") for c in cache.get_all_cids())


def test_query_filters_sort_limit_columns(daemon: Daemon) -> None:
    with ParquetCIDCache(socket=daemon.socket) as cache:
        tag = unique().decode()
        rows: Dict[str, Dict[str, Any]] = {
            cid_of(i): {
                "size_bytes": 1000 + i,
                "mimetype": "image/png" if i % 2 else "image/jpeg",
                "source": tag,
                "extension": ".png" if i % 2 else ".jpg",
                "filename": f"file {i}.bin",
            }
            for i in range(10)
        }
        cache.batch_put_metadata(rows)
        r = cache.query(
            filters=[("source", "==", tag), ("size_bytes", ">=", 1004)],
            columns=["cid", "size_bytes"],
            sort_by="size_bytes",
        )
        assert list(r) == ["cid", "size_bytes"]
        assert r["size_bytes"] == [1004, 1005, 1006, 1007, 1008, 1009]
        assert set(r["cid"]) == {c for c, m in rows.items() if m["size_bytes"] >= 1004}
        # Filters evaluated here: a column kept in properties, 'contains', spaces in a value.
        r = cache.query(
            filters=[("source", "==", tag), ("extension", "==", ".png"), ("filename", "contains", "file 1")],
            columns=["filename"],
        )
        assert r["filename"] == ["file 1.bin"]
        r = cache.query(
            filters=[("source", "==", tag), ("mimetype", "in", ["image/png"])],
            sort_by="size_bytes",
            limit=2,
        )
        assert list(r) == list(COLUMNS) and r["size_bytes"] == [1001, 1003]
        cid0 = next(iter(rows))
        r = cache.query(filters=[("cid", "==", cid0)], columns=["cid"])
        assert r["cid"] == [cid0]
        assert cache.query(filters=[("source", "==", tag), ("size_bytes", ">", 99999)]) == {
            c: [] for c in COLUMNS
        }


def test_async_twins_and_stats(daemon: Daemon) -> None:
    async def main() -> None:
        with ParquetCIDCache(socket=daemon.socket) as cache:
            cid = cid_of(5)
            assert await cache.async_put_metadata(cid, {"size_bytes": 5})
            assert await cache.async_contains(cid)
            m = await cache.async_get_metadata(cid)
            assert m is not None and m["size_bytes"] == 5
            more = {cid_of(i): {"size_bytes": i} for i in range(3)}
            assert all((await cache.async_batch_put_metadata(more)).values())
            got = await cache.async_batch_get_metadata(list(more))
            assert all(v is not None for v in got.values())
            assert await cache.async_sync()
            assert cid in await cache.async_get_all_cids()
            q = await cache.async_query(filters=[("cid", "==", cid)], columns=["size_bytes"])
            assert q == {"size_bytes": [5]}
            assert await cache.async_delete(cid)
            s = await cache.async_get_stats()
            assert s["total_rows"] >= 3 and "by_storage_tier" in s
            assert cache.get_stats()["put_count"] == 4

    asyncio.run(main())
