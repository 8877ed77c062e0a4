"""cidcache: a shared-memory, cross-process cache for content-addressed data and Arrow datasets.

A local ``cidcached`` daemon keeps objects in shared memory; :class:`Client` reads them
zero-copy (a hit takes no lock and no system call), stores bytes and Arrow tables, queries the
CID catalog, and has asyncio twins of its waiting calls. ``cidcache.compat.ParquetCIDCache``
offers ipfs_kit_py's API on top. See docs/python.md.
"""

from __future__ import annotations

from ._client import Client, ListEntry
from ._errors import (
    AlreadyExists,
    AlreadyRunning,
    ArrowError,
    CidMismatch,
    Corrupt,
    Busy,
    NotRunning,
    NotArrow,
    Disconnected,
    Error,
    Incompatible,
    IndexFull,
    InternalError,
    InvalidArgument,
    InvalidKey,
    IoError,
    NotFound,
    NotSealed,
    PermissionDenied,
    PinsExhausted,
    ProtocolError,
    StoreFull,
    Timeout,
)
from ._native import ArrowStream, Object, cid_of, format_key, parse_key

__version__ = "0.1.0"

__all__ = [
    "Client",
    "ListEntry",
    "Object",
    "ArrowStream",
    "cid_of",
    "format_key",
    "parse_key",
    "Error",
    "NotFound",
    "AlreadyExists",
    "StoreFull",
    "IndexFull",
    "Timeout",
    "InvalidKey",
    "InvalidArgument",
    "ProtocolError",
    "Disconnected",
    "PinsExhausted",
    "NotSealed",
    "PermissionDenied",
    "IoError",
    "Incompatible",
    "CidMismatch",
    "AlreadyRunning",
    "ArrowError",
    "InternalError",
    "Corrupt",
    "Busy",
    "NotRunning",
    "NotArrow",
]
