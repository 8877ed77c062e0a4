"""``ParquetCIDCache`` with ipfs_kit_py's public API, backed by cidcache's catalog and tiers.

An ipfs_kit_py user changes one import::

    # from ipfs_kit_py.tiered_cache import ParquetCIDCache
    from cidcache.compat import ParquetCIDCache

    cache = ParquetCIDCache()                 # the store of $CIDCACHE_STORE (or store=/socket=)
    cache.put_metadata(cid, {"size_bytes": 1024, "mimetype": "image/png"})
    cache.get_metadata(cid)                   # a dict in ipfs_kit_py's shape
    cache.query(filters=[("size_bytes", ">", 100)], columns=["cid"], sort_by="size_bytes")

The metadata lives in the store's CID catalog (one row per key, persisted as partitioned Parquet
by the daemon, shared by every process of the store), not in files of this object. Method names,
arguments and result shapes follow ipfs_kit_py's ``ParquetCIDCache``; docs/python.md lists what
differs and why.

Writes are buffered like ipfs_kit_py's in-memory batch: ``put_metadata`` and
``batch_put_metadata`` record the rows here and send them to the store in one round trip when
``batch_size`` rows are waiting, before any query, count or listing, on :meth:`sync` and on
:meth:`close`. Reads of keys still waiting here see the buffered values.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from . import _native
from ._client import Client
from ._errors import InvalidArgument, InvalidKey, NotFound

__all__ = ["ParquetCIDCache"]

logger = logging.getLogger(__name__)

#: ipfs_kit_py's columns, in its schema's order (the keys of a metadata dict).
COLUMNS: Tuple[str, ...] = (
    "cid",
    "size_bytes",
    "mimetype",
    "filename",
    "extension",
    "storage_tier",
    "is_pinned",
    "local_path",
    "added_timestamp",
    "last_accessed",
    "access_count",
    "heat_score",
    "source",
    "source_details",
    "cid_version",
    "multihash_type",
    "valid",
    "validation_timestamp",
    "properties",
)

# ipfs_kit_py columns that the catalog has no column for: kept in the row's properties under
# these names (and taken out again when read).
_IN_PROPERTIES = {
    "extension": "ipfs_kit.extension",
    "local_path": "ipfs_kit.local_path",
    "source_details": "ipfs_kit.source_details",
    "validation_timestamp": "ipfs_kit.validation_timestamp",
}
_STRING_DEFAULTS = {
    "mimetype": "",
    "filename": "",
    "extension": "",
    "local_path": "",
    "source_details": "",
    "multihash_type": "",
    "source": "unknown",
}
_OPS = {"==": "=", "=": "=", "!=": "!=", ">": ">", ">=": ">=", "<": "<", "<=": "<="}
_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:+")


def _now_us() -> int:
    return time.time_ns() // 1000


def _us_of(v: Any, default: int) -> int:
    """µs since the epoch from ipfs_kit_py's millisecond integers, datetimes or floats."""
    if v is None:
        return default
    if isinstance(v, _dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=_dt.timezone.utc)
        return int(v.timestamp() * 1_000_000)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return int(v * 1000)
    return default


def _datetime(us: Optional[int]) -> Optional[_dt.datetime]:
    """A naive UTC datetime, as pyarrow gives for ipfs_kit_py's ``timestamp('ms')`` columns."""
    if us is None:
        return None
    return _dt.datetime(1970, 1, 1) + _dt.timedelta(microseconds=us)


def _cid_text(key: bytes) -> str:
    """The text a user knows a key by: its CID, else its UTF-8 name, else ``0x`` hex."""
    t = _native.format_key(key)
    if t.startswith("0x"):
        try:
            return key.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return t


def _entry(cid: str, md: Mapping[str, Any], now_us: int) -> Dict[str, Any]:
    """A catalog row (cidcache column names) from ipfs_kit_py's metadata dict."""
    props: Dict[str, str] = {}
    user_props = md.get("properties")
    if user_props:
        props.update({str(k): str(v) for k, v in user_props.items()})
    for name, prop in _IN_PROPERTIES.items():
        v = md.get(name)
        if v not in (None, ""):
            props[prop] = json.dumps(
                _us_of(v, 0) // 1000 if name == "validation_timestamp" else v
            )
    e: Dict[str, Any] = {
        "cid": cid,
        "size_bytes": int(md.get("size_bytes") or 0),
        "is_pinned": bool(md.get("is_pinned", False)),
        "added_at": _us_of(md.get("added_timestamp"), now_us),
        "last_accessed": now_us,
        "access_count": int(md.get("access_count", 1)),
        "heat_score": float(md.get("heat_score", 0.0)),
        "valid": bool(md.get("valid", True)),
        "properties": props,
    }
    for name in ("mimetype", "filename", "source", "multihash_type"):
        v = md.get(name)
        if v not in (None, ""):
            e[name] = str(v)
    cv = md.get("cid_version")
    if cv is not None:
        e["cid_version"] = int(cv)
    if "cid_version" not in e or "multihash_type" not in e:
        # What the store records for a CID key (shown by reads before the row is sent).
        info = _native.cid_info(cid)
        if info is not None:
            e.setdefault("cid_version", info[0])
            e.setdefault("multihash_type", info[1])
    return e


def _metadata(cid: str, e: Mapping[str, Any]) -> Dict[str, Any]:
    """ipfs_kit_py's metadata dict from a catalog row."""
    props = dict(e.get("properties") or {})
    out: Dict[str, Any] = {
        "cid": cid,
        "size_bytes": e.get("size_bytes", 0),
        "mimetype": e.get("mimetype"),
        "filename": e.get("filename"),
        "extension": None,
        "storage_tier": e.get("storage_tier", "none"),
        "is_pinned": e.get("is_pinned", False),
        "local_path": None,
        "added_timestamp": _datetime(e.get("added_at")),
        "last_accessed": _datetime(e.get("last_accessed")),
        "access_count": e.get("access_count", 0),
        "heat_score": e.get("heat_score", 0.0),
        "source": e.get("source"),
        "source_details": None,
        "cid_version": e.get("cid_version"),
        "multihash_type": e.get("multihash_type"),
        "valid": e.get("valid", True),
        "validation_timestamp": None,
    }
    for name, prop in _IN_PROPERTIES.items():
        raw = props.pop(prop, None)
        if raw is not None:
            try:
                v = json.loads(raw)
            except ValueError:
                v = raw
            out[name] = _datetime(v * 1000) if name == "validation_timestamp" else v
    for name, default in _STRING_DEFAULTS.items():
        if out[name] is None:
            out[name] = default
    out["properties"] = props
    return out


class ParquetCIDCache:
    """ipfs_kit_py's ``ParquetCIDCache`` API over a cidcache store's catalog.

    ``directory`` and the other ipfs_kit_py constructor arguments are accepted and ignored: the
    daemon owns the catalog's files and their layout (``cidcached --data-dir``,
    ``--catalog-partition``, ``--catalog-preset``). ``client``, ``store`` and ``socket`` choose
    the store; ``batch_size`` is how many written rows wait before they are sent.

    Thread safety: one instance is meant for one thread (as ipfs_kit_py's); give each thread
    its own, or share a :class:`cidcache.Client` between them.
    """

    def __init__(
        self,
        directory: str = "~/.ipfs_parquet_cache",
        max_partition_rows: int = 100000,
        auto_sync: bool = True,
        sync_interval: int = 300,
        enable_c_data_interface: bool = False,
        compression_optimization: str = "auto",
        prefetch_config: Optional[Dict[str, Any]] = None,
        partitioning_strategy: str = "default",
        advanced_partitioning_config: Optional[Dict[str, Any]] = None,
        probabilistic_config: Optional[Dict[str, Any]] = None,
        *,
        client: Optional[Client] = None,
        store: Optional[str] = None,
        socket: Optional[str] = None,
        batch_size: int = 1000,
    ) -> None:
        if batch_size < 1:
            raise InvalidArgument("batch_size must be at least 1")
        self.directory = directory
        self.max_partition_rows = max_partition_rows
        self.auto_sync = auto_sync
        self.sync_interval = sync_interval
        self.partitioning_strategy = partitioning_strategy
        self._own_client = client is None
        self.client: Client = client if client is not None else Client(store, socket=socket)
        self.batch_size = batch_size
        self._pending: Dict[str, Dict[str, Any]] = {}
        self.last_sync_time = time.time()
        self._puts = 0
        self._gets = 0
        self._hits = 0

    # ----- writes ----------------------------------------------------------------------------

    def _flush(self) -> None:
        if not self._pending:
            return
        rows = list(self._pending.values())
        self._pending.clear()
        self.client.catalog_upsert(rows)
        self.last_sync_time = time.time()

    def put_metadata(self, cid: str, metadata: Dict[str, Any]) -> bool:
        """Stores ``metadata`` for ``cid``; ``False`` when it cannot be stored (an invalid
        key or value)."""
        try:
            _native.parse_key(cid)
            e = _entry(cid, metadata, _now_us())
        except (InvalidKey, TypeError, ValueError) as err:
            logger.error("put_metadata(%r): %s", cid, err)
            return False
        self._pending[cid] = e
        self._puts += 1
        if len(self._pending) >= self.batch_size:
            self._flush()
        return True

    def batch_put_metadata(self, cid_metadata_map: Dict[str, Dict[str, Any]]) -> Dict[str, bool]:
        """Stores many rows; a success flag per CID."""
        results: Dict[str, bool] = {}
        now = _now_us()
        pending = self._pending
        for cid, md in cid_metadata_map.items():
            try:
                _native.parse_key(cid)
                pending[cid] = _entry(cid, md, now)
                results[cid] = True
            except (InvalidKey, TypeError, ValueError) as err:
                logger.error("batch_put_metadata(%r): %s", cid, err)
                results[cid] = False
        self._puts += len(results)
        if len(pending) >= self.batch_size:
            self._flush()
        return results

    def sync(self) -> bool:
        """Sends the buffered rows to the store now (the store persists them at its next
        checkpoint, within seconds)."""
        self._flush()
        return True

    def delete(self, cid: str) -> bool:
        """Removes ``cid``: its catalog row and, if stored, the object itself."""
        self._pending.pop(cid, None)
        self._flush()
        try:
            self.client.delete(cid)
        except NotFound:
            return False
        except InvalidKey:
            return False
        return True

    def clear(self) -> None:
        """Removes every row of the catalog (and the objects stored under those keys)."""
        for cid in self.get_all_cids():
            self.delete(cid)

    # ----- reads -----------------------------------------------------------------------------

    def contains(self, cid: str) -> bool:
        """Whether the catalog has a row for ``cid``."""
        if cid in self._pending:
            return True
        try:
            return self.client.catalog_get([cid])[0] is not None
        except InvalidKey:
            return False

    def get_metadata(self, cid: str) -> Optional[Dict[str, Any]]:
        """The metadata dict of ``cid``, or ``None``."""
        self._gets += 1
        e = self._pending.get(cid)
        if e is not None:
            self._hits += 1
            return _metadata(cid, e)
        try:
            row = self.client.catalog_get([cid])[0]
        except InvalidKey:
            return None
        if row is None:
            return None
        self._hits += 1
        return _metadata(cid, row)

    def batch_get_metadata(self, cids: List[str]) -> Dict[str, Optional[Dict[str, Any]]]:
        """The metadata dict (or ``None``) of each CID, in one round trip."""
        out: Dict[str, Optional[Dict[str, Any]]] = {}
        remote: List[str] = []
        for cid in cids:
            e = self._pending.get(cid)
            if e is not None:
                out[cid] = _metadata(cid, e)
            else:
                try:
                    _native.parse_key(cid)
                    remote.append(cid)
                except InvalidKey:
                    out[cid] = None
        if remote:
            for cid, row in zip(remote, self.client.catalog_get(remote)):
                out[cid] = None if row is None else _metadata(cid, row)
        self._gets += len(cids)
        self._hits += sum(1 for v in out.values() if v is not None)
        return {cid: out[cid] for cid in cids}

    def get_all_cids(self) -> List[str]:
        """Every CID the catalog knows."""
        self._flush()
        t = self.client.query(columns=["cid"])
        return [_cid_text(k) for k in t.column("cid").to_pylist()]

    def query(
        self,
        filters: Optional[List[Tuple[str, str, Any]]] = None,
        columns: Optional[List[str]] = None,
        sort_by: Optional[str] = None,
        limit: Optional[int] = None,
        parallel: bool = False,
        max_workers: Optional[int] = None,
        use_probabilistic: Optional[bool] = None,
    ) -> Dict[str, List[Any]]:
        """Rows matching every ``(column, op, value)`` filter (``==``, ``!=``, ``>``, ``>=``,
        ``<``, ``<=``, ``in``, ``contains``), as ``{column: [values]}`` (ipfs_kit_py's shape),
        optionally sorted by one column (ascending) and cut to ``limit`` rows. Filters the
        catalog can evaluate run in the store; the others run here on what it returns."""
        self._flush()
        where: List[str] = []
        local: List[Tuple[str, str, Any]] = []
        for f in filters or []:
            if len(f) != 3:
                raise InvalidArgument(f"a filter is (column, op, value), not {f!r}")
            text = _pushdown(*f)
            if text is None:
                local.append(f)
            else:
                where.append(text)
        t = self.client.query(where, limit=None if (local or sort_by) else limit)
        rows = [_metadata(_cid_text(r["cid"]), r) for r in _rows(t)]
        for col, op, val in local:
            rows = [r for r in rows if _matches(r.get(col), op, val)]
        if sort_by is not None:
            if sort_by not in COLUMNS:
                raise InvalidArgument(f"cannot sort by unknown column {sort_by!r}")
            rows.sort(key=lambda r: (r[sort_by] is None, r[sort_by]))
        if limit is not None:
            rows = rows[:limit]
        cols = list(columns) if columns else list(COLUMNS)
        for c in cols:
            if c not in COLUMNS:
                raise InvalidArgument(f"unknown column {c!r}; the columns are {', '.join(COLUMNS)}")
        return {c: [r[c] for r in rows] for c in cols}

    def parallel_query(
        self,
        filters: Optional[List[Tuple[str, str, Any]]] = None,
        columns: Optional[List[str]] = None,
        sort_by: Optional[str] = None,
        limit: Optional[int] = None,
        max_workers: Optional[int] = None,
        use_probabilistic: Optional[bool] = None,
    ) -> Dict[str, List[Any]]:
        """Same as :meth:`query` (the store scans its catalog; there is nothing to parallelise
        here)."""
        return self.query(filters, columns, sort_by, limit)

    def stats(self) -> Dict[str, Any]:
        """Counts of the catalog and this instance, with the store's own counters."""
        self._flush()
        t = self.client.query(columns=["storage_tier"])
        tiers: Dict[str, int] = {}
        for v in t.column("storage_tier").to_pylist():
            tiers[v] = tiers.get(v, 0) + 1
        return {
            "total_rows": t.num_rows,
            "by_storage_tier": tiers,
            "in_memory_rows": len(self._pending),
            "directory": self.directory,
            "store": self.client.store,
            "last_sync_time": self.last_sync_time,
            "modified_since_sync": bool(self._pending),
            "put_count": self._puts,
            "get_count": self._gets,
            "hit_count": self._hits,
            "store_stats": self.client.stats(),
            "c_data_interface_enabled": False,
        }

    def get_stats(self) -> Dict[str, Any]:
        """Alias of :meth:`stats` (the name other ipfs_kit_py caches use)."""
        return self.stats()

    # ----- asyncio twins ---------------------------------------------------------------------
    # ipfs_kit_py ran each in a thread pool. Catalog calls are single round trips, so these run
    # them directly; the object-level waits of cidcache.Client are the truly asynchronous ones.

    async def async_contains(self, cid: str) -> bool:
        return self.contains(cid)

    async def async_get_metadata(self, cid: str) -> Optional[Dict[str, Any]]:
        return self.get_metadata(cid)

    async def async_put_metadata(self, cid: str, metadata: Dict[str, Any]) -> bool:
        return self.put_metadata(cid, metadata)

    async def async_batch_put_metadata(
        self, cid_metadata_map: Dict[str, Dict[str, Any]]
    ) -> Dict[str, bool]:
        return self.batch_put_metadata(cid_metadata_map)

    async def async_batch_get_metadata(
        self, cids: List[str]
    ) -> Dict[str, Optional[Dict[str, Any]]]:
        return self.batch_get_metadata(cids)

    async def async_sync(self) -> bool:
        return self.sync()

    async def async_query(
        self,
        filters: Optional[List[Tuple[str, str, Any]]] = None,
        columns: Optional[List[str]] = None,
        sort_by: Optional[str] = None,
        limit: Optional[int] = None,
        parallel: bool = False,
        max_workers: Optional[int] = None,
        use_probabilistic: Optional[bool] = None,
    ) -> Dict[str, List[Any]]:
        return self.query(filters, columns, sort_by, limit)

    async def async_parallel_query(
        self,
        filters: Optional[List[Tuple[str, str, Any]]] = None,
        columns: Optional[List[str]] = None,
        sort_by: Optional[str] = None,
        limit: Optional[int] = None,
        max_workers: Optional[int] = None,
        use_probabilistic: Optional[bool] = None,
    ) -> Dict[str, List[Any]]:
        return self.query(filters, columns, sort_by, limit)

    async def async_delete(self, cid: str) -> bool:
        return self.delete(cid)

    async def async_get_all_cids(self) -> List[str]:
        return self.get_all_cids()

    async def async_get_stats(self) -> Dict[str, Any]:
        return self.get_stats()

    # ----- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Sends buffered rows and closes the client this instance opened."""
        try:
            if not self.client.closed:
                self._flush()
        finally:
            if self._own_client:
                self.client.close()

    cleanup = close

    def __enter__(self) -> "ParquetCIDCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if self._pending and not self.client.closed:
                self._flush()
        except Exception:  # interpreter shutdown: nothing to report to
            pass


_CATALOG_NAMES = {"added_timestamp": "added_at"}
_PUSHABLE = {
    "cid",
    "size_bytes",
    "mimetype",
    "filename",
    "storage_tier",
    "is_pinned",
    "added_timestamp",
    "last_accessed",
    "access_count",
    "heat_score",
    "source",
    "cid_version",
    "multihash_type",
    "valid",
}


def _literal(col: str, v: Any) -> Optional[str]:
    if col == "cid":
        try:
            return "0x" + _native.parse_key(v).hex()
        except (InvalidKey, TypeError):
            return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        if col in ("added_timestamp", "last_accessed"):
            return str(int(v * 1000))  # ipfs_kit_py's milliseconds, the catalog's µs
        return repr(v)
    if isinstance(v, _dt.datetime):
        return str(_us_of(v, 0))
    if isinstance(v, str) and v and set(v) <= _SAFE:
        return v
    return None


def _pushdown(col: str, op: str, val: Any) -> Optional[str]:
    """The catalog's text form of a filter, or None when it must be evaluated here."""
    if col not in _PUSHABLE:
        return None
    name = _CATALOG_NAMES.get(col, col)
    if op in _OPS:
        if col in ("mimetype", "filename", "source", "multihash_type") and val == "":
            return None  # '' is how ipfs_kit_py spells "none"; evaluated here
        lit = _literal(col, val)
        return None if lit is None else f"{name}{_OPS[op]}{lit}"
    if op == "in" and isinstance(val, (list, tuple, set)) and val:
        lits = [_literal(col, v) for v in val]
        if any(x is None for x in lits):
            return None
        return f"{name} in ({', '.join(str(x) for x in lits)})"
    return None


def _matches(v: Any, op: str, val: Any) -> bool:
    try:
        if op in ("==", "="):
            return bool(v == val)
        if op == "!=":
            return bool(v != val)
        if op == ">":
            return bool(v > val)
        if op == ">=":
            return bool(v >= val)
        if op == "<":
            return bool(v < val)
        if op == "<=":
            return bool(v <= val)
        if op == "in":
            return v in val
        if op == "contains":
            return val in v if v is not None else False
    except TypeError:
        return False
    raise InvalidArgument(f"unknown filter operator {op!r}")


def _rows(t: Any) -> Iterable[Dict[str, Any]]:
    """Catalog rows of a pyarrow table as dicts in the catalog's names (timestamps in µs)."""
    import pyarrow as pa

    for name in ("added_at", "last_accessed"):
        i = t.schema.get_field_index(name)
        if i >= 0:
            t = t.set_column(i, name, t.column(name).cast(pa.int64()))
    for r in t.to_pylist():
        p = r.get("properties")
        r["properties"] = dict(p) if p else {}
        yield r

