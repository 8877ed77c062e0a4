"""asyncio: waits that wake on seal, driven by the poller's fd on the loop (no thread per call)."""

from __future__ import annotations

import asyncio
import threading

import pytest

import cidcache
from conftest import Daemon, unique


def test_get_async_wakes_on_seal(daemon: Daemon) -> None:
    async def main() -> None:
        with daemon.client() as a, daemon.client() as b:
            keys = [unique() for _ in range(20)]
            before = threading.active_count()
            waits = [asyncio.ensure_future(a.get_async(k, timeout=60)) for k in keys]
            await asyncio.sleep(0.05)
            assert not any(w.done() for w in waits)
            # No thread per waiting call.
            assert threading.active_count() <= before + 1
            for k in keys:
                await b.put_async(k, b"v" + k)
            got = await asyncio.wait_for(asyncio.gather(*waits), 120)
            for k, o in zip(keys, got):
                assert o is not None and bytes(o) == b"v" + k

    asyncio.run(main())


def test_hit_and_timeout(daemon: Daemon) -> None:
    async def main() -> None:
        with daemon.client() as c:
            k = unique()
            c.put(k, b"hot")
            o = await c.get_async(k)
            assert o is not None and bytes(o) == b"hot"
            assert await c.get_async(unique()) is None
            assert await c.get_async(unique(), timeout=0.1) is None
            with pytest.raises(cidcache.InvalidArgument):
                await c.get_async(k, timeout=-1)
            with pytest.raises(cidcache.InvalidKey):
                await c.get_async(b"")

    asyncio.run(main())


def test_other_async_calls(daemon: Daemon) -> None:
    async def main() -> None:
        with daemon.client() as c:
            k = unique()
            await c.put_async(k, b"x" * (2 << 20), metadata=b"m")  # large: create + seal
            assert await c.contains_async(k)
            assert k in [e.key for e in await c.list_async()]
            assert isinstance(await c.stats_async(), dict)
            ks = [unique() for _ in range(3)]
            res = await c.put_many_async([(x, b"y") for x in ks] + [(k, b"dup")])
            assert res[:3] == [None, None, None]
            assert isinstance(res[3], cidcache.AlreadyExists)
            got = await c.get_many_async(ks + [unique()])
            assert [bytes(o) for o in got[:3] if isinstance(o, cidcache.Object)] == [b"y"] * 3
            assert got[3] is None
            await c.delete_async(k)
            assert not await c.contains_async(k)
            with pytest.raises(cidcache.NotFound):
                await c.delete_async(k)
            with pytest.raises(cidcache.AlreadyExists):
                await c.put_async(ks[0], b"again")

    asyncio.run(main())


def test_get_many_async_waits_for_seal(daemon: Daemon) -> None:
    async def main() -> None:
        with daemon.client() as a, daemon.client() as b:
            ks = [unique() for _ in range(3)]
            w = asyncio.ensure_future(a.get_many_async(ks, timeout=60))
            await asyncio.sleep(0.05)
            b.put_many([(k, b"z") for k in ks])
            got = await w
            assert all(isinstance(o, cidcache.Object) for o in got)

    asyncio.run(main())


def test_cancelled_wait_unpins_and_loop_stays_usable(daemon: Daemon) -> None:
    async def main() -> None:
        with daemon.client() as a, daemon.client() as b:
            k = unique()
            w = asyncio.ensure_future(a.get_async(k, timeout=60))
            await asyncio.sleep(0.05)
            w.cancel()
            with pytest.raises(asyncio.CancelledError):
                await w
            base = a.pinned
            b.put(k, b"after cancel")
            # The cancelled operation completes on the reader thread; its result is dropped.
            o = await a.get_async(k, timeout=60)
            assert o is not None and bytes(o) == b"after cancel"
            del o
            for _ in range(200):
                if a.pinned == base:
                    break
                await asyncio.sleep(0.01)
            assert a.pinned == base

    asyncio.run(main())


def test_disconnect_fails_pending_waits(make_daemon: object) -> None:
    d: Daemon = make_daemon()  # type: ignore[operator]

    async def main() -> None:
        c = d.client()
        w = asyncio.ensure_future(c.get_async(unique(), timeout=60))
        await asyncio.sleep(0.05)
        d.kill()
        with pytest.raises(cidcache.Disconnected):
            await w
        c.close()

    asyncio.run(main())


def test_two_loops_in_two_threads(daemon: Daemon) -> None:
    errors: list[BaseException] = []
    with daemon.client() as shared, daemon.client() as w:
        keys = [unique() for _ in range(2)]

        def run(k: bytes) -> None:
            async def main() -> None:
                o = await shared.get_async(k, timeout=60)
                assert o is not None and bytes(o) == k

            try:
                asyncio.run(main())
            except BaseException as e:  # reported below
                errors.append(e)

        ts = [threading.Thread(target=run, args=(k,)) for k in keys]
        for t in ts:
            t.start()
        for k in keys:
            w.put(k, k)
        for t in ts:
            t.join(60)
        assert not errors, errors
