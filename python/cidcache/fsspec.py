"""A ``cidcache://`` filesystem for fsspec: pyarrow.dataset, pandas, DuckDB, … read objects of a
cidcache store by key or CID, served from shared memory when they are hot.

Registered through the ``fsspec.specs`` entry point (``fsspec.filesystem("cidcache")``,
``pandas.read_parquet("cidcache://bafy…")``). A path is one object: ``cidcache://<key>`` where
``<key>`` is a CID (``bafy…``, ``Qm…``), ``0x``-hex or a name (``datasets/train``), exactly as
:class:`cidcache.Client` reads keys. There are no directories: ``ls`` lists the hot tier.

Reading: opening a path pins the object (a hit maps it, an object in the warm tier is promoted by
the daemon) and the file reads from the mapping; ``read_buffer`` (which pyarrow's file adapter
uses when a file has it) returns zero-copy views of shared memory, so pyarrow decodes in place.
The pin lasts until the file and every buffer read from it are gone. Writing (``"wb"``) buffers
the bytes and stores them as one immutable object on close; an existing key raises
``FileExistsError``. A key no tier holds raises ``FileNotFoundError`` naming the key and store.

Options (``storage_options``): ``store`` (default ``$CIDCACHE_STORE``, else ``default``),
``socket`` (a socket path instead), ``timeout`` (seconds to wait for an object being sealed;
default 0, do not wait), or ``client`` (a :class:`cidcache.Client` to use).
"""

from __future__ import annotations

import datetime
import io
from typing import Any, Dict, List, Optional, Union

from fsspec.spec import AbstractFileSystem

from ._client import Client
from ._errors import AlreadyExists, NotFound
from ._native import Object, format_key, parse_key

__all__ = ["CidcacheFileSystem", "CidcacheFile"]


class CidcacheFile(io.RawIOBase):
    """A read-only, seekable file over one pinned object in shared memory.

    ``read``/``readinto`` copy out of the mapping; ``read_buffer`` does not. Thread safety: as
    any Python file object, one reader at a time.
    """

    def __init__(self, fs: "CidcacheFileSystem", path: str, obj: Object) -> None:
        super().__init__()
        self.fs = fs
        self.path = path
        self._obj: Optional[Object] = obj
        self._view: Optional[memoryview] = memoryview(obj)
        self._pos = 0
        self.size = len(obj)

    def _mv(self) -> memoryview:
        if self._view is None:
            raise ValueError("I/O operation on closed file")
        return self._view

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._mv()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._mv()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def read_buffer(self, nbytes: Optional[int] = None) -> memoryview:
        """The next ``nbytes`` (all, when None or negative) as a read-only view of shared memory
        (no copy). The view keeps the object pinned."""
        mv = self._mv()
        start = min(self._pos, self.size)
        end = self.size if nbytes is None or nbytes < 0 else min(self.size, start + nbytes)
        self._pos = end
        return mv[start:end]

    def read(self, size: Optional[int] = -1) -> bytes:
        return bytes(self.read_buffer(size))

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, b: Any) -> int:
        chunk = self.read_buffer(len(memoryview(b).cast("B")))
        n = len(chunk)
        memoryview(b).cast("B")[:n] = chunk
        return n

    def close(self) -> None:
        # The view goes first; buffers handed out by read_buffer keep the object pinned on their
        # own (each holds a reference to the Object), so nothing they point to is unmapped.
        if self._view is not None:
            self._view.release()
            self._view = None
        self._obj = None
        super().close()

    def __repr__(self) -> str:
        return f"<CidcacheFile cidcache://{self.path} size={self.size}>"


class _WriteFile(io.BytesIO):
    """Buffers a new object; stores it on close (objects are immutable: one put)."""

    def __init__(self, fs: "CidcacheFileSystem", path: str) -> None:
        super().__init__()
        self.fs = fs
        self.path = path

    def close(self) -> None:
        if not self.closed:
            data = self.getbuffer()
            try:
                self.fs.client.put(self.fs._key(self.path), data)
            except AlreadyExists:
                raise FileExistsError(
                    f"cidcache://{self.path}: the key exists in store {self.fs.client.store!r} "
                    "(objects are immutable; delete it first)"
                ) from None
            finally:
                del data
        super().close()


class CidcacheFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """fsspec filesystem over a cidcache store; one path = one object (see the module doc)."""

    protocol = "cidcache"
    root_marker = ""

    def __init__(
        self,
        store: Optional[str] = None,
        socket: Optional[str] = None,
        timeout: Optional[float] = None,
        client: Optional[Client] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._own = client is None
        self.client = client if client is not None else Client(store, socket=socket)
        self.timeout = timeout

    @classmethod
    def _strip_protocol(cls, path: Union[str, List[str]]) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith("cidcache://"):
            path = path[len("cidcache://") :]
        elif path.startswith("cidcache:"):
            path = path[len("cidcache:") :]
        return path.strip("/")

    def _key(self, path: str) -> bytes:
        p = self._strip_protocol(path)
        if not p:
            raise FileNotFoundError("cidcache://: empty key (a path names one object)")
        try:
            return parse_key(p)
        except ValueError as e:
            raise FileNotFoundError(f"cidcache://{p}: not a valid key: {e}") from None

    def _get(self, path: str) -> Object:
        key = self._key(path)
        try:
            obj = self.client.get(key, timeout=self.timeout)
        except NotFound:
            obj = None
        if obj is None:
            raise FileNotFoundError(
                f"cidcache://{self._strip_protocol(path)}: no such object in store "
                f"{self.client.store!r} (in no tier)"
            )
        return obj

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: Any = None,
        autocommit: bool = True,
        cache_options: Any = None,
        **kwargs: Any,
    ) -> Any:
        if mode == "rb":
            return CidcacheFile(self, self._strip_protocol(path), self._get(path))
        if mode in ("wb", "xb"):
            return _WriteFile(self, self._strip_protocol(path))
        raise ValueError(f"cidcache:// supports modes rb, wb and xb, not {mode!r}")

    def info(self, path: str, **kwargs: Any) -> Dict[str, Any]:
        p = self._strip_protocol(path)
        with self._get(path) as obj:
            return {"name": p, "size": len(obj), "type": "file", "arrow": obj.is_arrow}

    def ls(self, path: str = "", detail: bool = True, **kwargs: Any) -> Any:
        p = self._strip_protocol(path)
        if p:
            entries = [self.info(p)]
        else:
            entries = [
                {"name": format_key(e.key) if _is_cid(e.key) else _name(e.key), "size": e.size,
                 "type": "file", "arrow": e.is_arrow}
                for e in self.client.list()
            ]
        return entries if detail else [e["name"] for e in entries]

    def modified(self, path: str) -> datetime.datetime:
        """When the object was stored (the catalog's ``added_at``); objects are immutable, so
        this changes only when the key is deleted and stored again."""
        row = self.client.catalog_get([self._key(path)])[0]
        if row is None or row.get("added_at") is None:
            raise FileNotFoundError(
                f"cidcache://{self._strip_protocol(path)}: no such object in store "
                f"{self.client.store!r}"
            )
        return datetime.datetime.fromtimestamp(row["added_at"] / 1e6, tz=datetime.timezone.utc)

    def created(self, path: str) -> datetime.datetime:
        return self.modified(path)

    def exists(self, path: str, **kwargs: Any) -> bool:
        try:
            return self.client.contains(self._key(path))
        except FileNotFoundError:
            return False

    def cat_file(self, path: str, start: Optional[int] = None, end: Optional[int] = None,
                 **kwargs: Any) -> bytes:
        with self._get(path) as obj:
            return bytes(memoryview(obj)[start:end])

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        with self._open(path, "wb") as f:
            f.write(value)

    def rm_file(self, path: str) -> None:
        try:
            self.client.delete(self._key(path))
        except NotFound:
            raise FileNotFoundError(
                f"cidcache://{self._strip_protocol(path)}: no such object in store "
                f"{self.client.store!r}"
            ) from None

    def _rm(self, path: str) -> None:
        self.rm_file(path)

    def rm(self, path: Union[str, List[str]], recursive: bool = False,
           maxdepth: Optional[int] = None) -> None:
        for p in [path] if isinstance(path, str) else path:
            self.rm_file(p)

    def isdir(self, path: str) -> bool:
        return self._strip_protocol(path) == ""

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        pass  # no directories: keys are flat

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        pass


def _is_cid(key: bytes) -> bool:
    try:
        return not format_key(key).startswith("0x")
    except ValueError:
        return False


def _name(key: bytes) -> str:
    """A non-CID key as the text that parses back to it: UTF-8 when it is, else 0x-hex."""
    try:
        text = key.decode("utf-8")
        if parse_key(text) == key:
            return text
    except (UnicodeDecodeError, ValueError):
        pass
    return "0x" + key.hex()
