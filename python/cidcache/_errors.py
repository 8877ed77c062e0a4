"""Exceptions of cidcache, one class per status code of the native protocol and C ABI.

Every class derives from :class:`cidcache.Error` (which carries ``code``, the stable numeric
status code, see ``src/error.rs``) and, where one fits, from the matching built-in exception, so
that ``except KeyError`` catches :class:`NotFound` and ``except TimeoutError`` catches
:class:`Timeout`.
"""

from __future__ import annotations

from typing import ClassVar, Dict, Type

__all__ = [
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
    "BY_CODE",
]


class Error(Exception):
    """Base class of every cidcache error. ``code`` is the stable status code."""

    code: ClassVar[int] = 18

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NotFound(Error, KeyError):
    """No object (or catalog row) with that key is stored in any tier."""

    code = 1


class AlreadyExists(Error):
    """An object with that key already exists (sealed or being created); objects are immutable."""

    code = 2


class StoreFull(Error):
    """The shared-memory tier cannot hold the object, even after evicting what it can."""

    code = 3


class IndexFull(Error):
    """The store's index has no free slot and nothing could be evicted."""

    code = 4


class Timeout(Error, TimeoutError):
    """A wait expired."""

    code = 5


class InvalidKey(Error, ValueError):
    """A key is empty, longer than 63 bytes, or not a valid CID where one is required."""

    code = 6


class InvalidArgument(Error, ValueError):
    """An argument is out of range or inconsistent."""

    code = 7


class ProtocolError(Error):
    """A peer sent a malformed frame (a bug or a version mismatch)."""

    code = 8


class Disconnected(Error, ConnectionError):
    """The connection to the coordinator is gone, or the client was closed: connect again."""

    code = 9


class PinsExhausted(Error):
    """This client pins as many objects as its lease page allows: release some Objects."""

    code = 10


class NotSealed(Error):
    """The object exists but is not sealed yet."""

    code = 11


class PermissionDenied(Error, PermissionError):
    """Not allowed for this client (for example a read-only client writing)."""

    code = 12


class IoError(Error, OSError):
    """An operating-system call failed."""

    code = 13

    def __str__(self) -> str:
        return self.message


class Incompatible(Error):
    """Shared memory of an unknown layout version (daemon and library differ)."""

    code = 14


class CidMismatch(Error, ValueError):
    """The bytes do not hash to the CID they were stored under."""

    code = 15


class AlreadyRunning(Error):
    """Another coordinator already serves this store."""

    code = 16


class ArrowError(Error):
    """Arrow encoding or decoding failed (the data is not a valid Arrow table)."""

    code = 17


class InternalError(Error):
    """An invariant broke inside cidcache; please report it."""

    code = 18


class Corrupt(Error):
    """A file of a lower tier is truncated or corrupt (it was quarantined)."""

    code = 19


class Busy(Error):
    """The coordinator is at a configured limit (connections, file descriptors): retry later."""

    code = 20


class NotRunning(Disconnected):
    """No coordinator serves this store (its socket is missing or refuses connections): start
    ``cidcached``, or check the store name. A :class:`Disconnected` (so that handlers of a lost
    connection still catch it), with its own code."""

    code = 21


class NotArrow(InvalidArgument):
    """The object exists but was not stored as Arrow: read its bytes with ``get``. An
    :class:`InvalidArgument` (what earlier versions raised), with its own code."""

    code = 22


BY_CODE: Dict[int, Type[Error]] = {
    c.code: c
    for c in (
        NotFound,
        AlreadyExists,
        StoreFull,
        IndexFull,
        Timeout,
        InvalidKey,
        InvalidArgument,
        ProtocolError,
        Disconnected,
        PinsExhausted,
        NotSealed,
        PermissionDenied,
        IoError,
        Incompatible,
        CidMismatch,
        AlreadyRunning,
        ArrowError,
        InternalError,
        Corrupt,
        Busy,
        NotRunning,
        NotArrow,
    )
}
