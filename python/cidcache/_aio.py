"""asyncio support: one eventfd per event loop, registered once with ``loop.add_reader``.

Operations are started by the native client (``Client._start_*``) and completed on the client's
socket reader thread, which only records the operation id and makes the loop's fd readable; the
callback below runs on the loop's own thread, takes the results and resolves the futures. No
thread is started per call and no Python code runs outside the loop's thread.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, Dict, Tuple

from . import _native

__all__ = ["wait"]


class _LoopPoller:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.native = _native.Poller()
        self.waiting: Dict[int, Tuple[_native.Op, "asyncio.Future[Any]"]] = {}
        self.registered = False

    def _ready(self) -> None:
        for op_id in self.native.drain():
            entry = self.waiting.pop(op_id, None)
            if entry is None:
                continue
            op, fut = entry
            if fut.done():
                op.cancel()
                continue
            try:
                fut.set_result(op.result())
            except BaseException as e:  # the operation's own exception, delivered to its awaiter
                fut.set_exception(e)
        if not self.waiting and self.registered:
            # Nothing in flight: stop watching (re-added by the next operation that waits).
            self.loop.remove_reader(self.native.fileno())
            self.registered = False

    async def wait(self, op: _native.Op) -> Any:
        if op.done():
            return op.result()
        fut: "asyncio.Future[Any]" = self.loop.create_future()
        self.waiting[op.id] = (op, fut)
        if not self.registered:
            self.loop.add_reader(self.native.fileno(), self._ready)
            self.registered = True
        try:
            return await fut
        except asyncio.CancelledError:
            self.waiting.pop(op.id, None)
            op.cancel()
            raise


_pollers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPoller]" = (
    weakref.WeakKeyDictionary()
)


def poller() -> _native.Poller:
    """The running loop's native poller (created on first use)."""
    return _loop_poller().native


def _loop_poller() -> _LoopPoller:
    loop = asyncio.get_running_loop()
    p = _pollers.get(loop)
    if p is None:
        p = _LoopPoller(loop)
        _pollers[loop] = p
    return p


async def wait(op: _native.Op) -> Any:
    """Awaits the completion of ``op`` on the running loop."""
    return await _loop_poller().wait(op)
