"""``cidcache.Client``: the native client plus asyncio twins and pyarrow conveniences."""

from __future__ import annotations

from typing import (
    TYPE_CHECKING,
    Any,
    Dict,
    Iterable,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from . import _aio, _native
from ._errors import Error

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow

    from ._native import Buffer, Key

__all__ = ["Client", "ListEntry"]

Filter = Union[str, Tuple[str, str, Union[bool, int, float, str]]]


class ListEntry(NamedTuple):
    """One object of the hot tier, as listed by :meth:`Client.list`."""

    key: bytes
    size: int
    metadata_size: int
    is_arrow: bool

    @property
    def cid(self) -> str:
        """The key as text: its CID when it is one, else ``0x`` + hex."""
        return _native.format_key(self.key)


class Client(_native.Client):
    """A connection to a cidcache store.

    ``Client()`` connects to the store named by ``$CIDCACHE_STORE`` (else ``"default"``) at its
    default socket, as the ``cidcache`` command does; ``Client("name")`` to another store,
    ``Client(socket="/path/s.sock")`` to the daemon listening there. ``read_only=True`` maps the
    data read-only and refuses writes. Use it as a context manager or call :meth:`close`.

    Keys are ``bytes`` (used as they are) or ``str``: a CID string (``Qm...``, ``bafy...``) is
    stored in its binary form, ``0x...`` is hexadecimal, any other string is its UTF-8 bytes.
    Keys are 1 to 63 bytes.

    Thread safety: all methods may be called from any thread; waiting calls release the GIL.
    The ``*_async`` methods run on the running asyncio loop without a thread per call.
    """

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def list(self) -> List[ListEntry]:
        """The sealed objects of the hot tier (shared memory)."""
        return [ListEntry(*t) for t in self._list()]

    # ----- Arrow and the catalog (need pyarrow) -------------------------------------------

    def get_arrow(
        self,
        key: "Key",
        columns: Optional[Sequence[str]] = None,
        filter: Union[Filter, Sequence[Filter], None] = None,
    ) -> "pyarrow.Table":
        """The Arrow object ``key`` as a ``pyarrow.Table`` whose buffers lie in shared memory.

        ``columns`` projects, ``filter`` keeps the rows satisfying every predicate (``"x>=5"``,
        ``("name", "=", "a")``, or a list of them). Objects in the warm tier are promoted (or,
        with a projection or filter, scanned reading only what is needed). The object stays
        pinned while the table or any array of it lives. Raises :class:`NotFound`.
        """
        import pyarrow

        s = self.get_arrow_stream(
            key, None if columns is None else list(columns), filter
        )
        return pyarrow.table(s)

    def query(
        self,
        where: Union[str, Sequence[str], None] = None,
        columns: Optional[Sequence[str]] = None,
        limit: Optional[int] = None,
    ) -> "pyarrow.Table":
        """Rows of the store's CID catalog as a ``pyarrow.Table``.

        ``where``: a filter or a list of filters (ANDed) in the catalog's text syntax, e.g.
        ``"size_bytes>1000"``, ``"mimetype=image/png"``, ``"storage_tier in (hot,warm)"``
        (see docs/catalog.md); ``columns`` projects; ``limit`` caps the rows.
        """
        import pyarrow

        w = [where] if isinstance(where, str) else (None if where is None else list(where))
        s = self.catalog_query_stream(
            w, None if columns is None else list(columns), limit
        )
        return pyarrow.table(s)

    # ----- asyncio ---------------------------------------------------------------------------

    async def get_async(self, key: "Key", timeout: Optional[float] = None) -> Optional[_native.Object]:
        """Async :meth:`get`: waits up to ``timeout`` seconds for ``key`` to be sealed without
        blocking the loop (``math.inf``: without limit). A hit returns at once."""
        p = _aio._loop_poller()
        return await p.wait(self._start_get(p.native, key, timeout))  # type: ignore[no-any-return]

    async def get_many_async(
        self, keys: Iterable["Key"], timeout: Optional[float] = None
    ) -> List[Union[_native.Object, None, Error]]:
        """Async :meth:`get_many`."""
        p = _aio._loop_poller()
        return await p.wait(self._start_get_many(p.native, keys, timeout))  # type: ignore[no-any-return]

    async def put_async(
        self,
        key: "Key",
        data: "Buffer",
        *,
        metadata: Optional["Buffer"] = None,
        ephemeral: bool = False,
        verify_cid: bool = False,
        durable: bool = False,
    ) -> None:
        """Async :meth:`put` (the data is copied once more, as the call outlives the buffer)."""
        p = _aio._loop_poller()
        op = self._start_put(
            p.native,
            key,
            data,
            metadata=metadata,
            ephemeral=ephemeral,
            verify_cid=verify_cid,
            durable=durable,
        )
        await p.wait(op)

    async def put_many_async(
        self, items: Union[Mapping[Any, "Buffer"], Iterable[Tuple["Key", "Buffer"]]]
    ) -> List[Optional[Error]]:
        """Async :meth:`put_many`."""
        p = _aio._loop_poller()
        return await p.wait(self._start_put_many(p.native, items))  # type: ignore[no-any-return]

    async def delete_async(self, key: "Key") -> None:
        """Async :meth:`delete`."""
        p = _aio._loop_poller()
        await p.wait(self._start_delete(p.native, key))

    async def contains_async(self, key: "Key") -> bool:
        """Async :meth:`contains`."""
        p = _aio._loop_poller()
        return await p.wait(self._start_contains(p.native, key))  # type: ignore[no-any-return]

    async def list_async(self) -> List[ListEntry]:
        """Async :meth:`list`."""
        p = _aio._loop_poller()
        return [ListEntry(*t) for t in await p.wait(self._start_list(p.native))]

    async def stats_async(self) -> Dict[str, int]:
        """Async :meth:`stats`."""
        p = _aio._loop_poller()
        return await p.wait(self._start_stats(p.native))  # type: ignore[no-any-return]

