//! The native wire protocol between clients and the coordinator (documented in
//! `docs/protocol.md`).
//!
//! A frame is a 16-byte header — `body_len: u32`, `version: u16`, `msg_type: u16`,
//! `request_id: u64`, all little-endian — followed by `body_len` bytes of body. Replies carry
//! the request id of the request they answer; a connection may have many requests in flight
//! and replies may come back in any order (a waiting get does not hold up a put).
//!
//! Decoders never trust a length or count: every read is bounds-checked, counts are checked
//! against the bytes actually present before anything is allocated, and every failure is a
//! [`Error::Protocol`] with a message, never a panic.

use crate::error::{Code, Error, Result};
use crate::key::{Key, MAX_KEY_LEN};

/// Protocol version spoken by this build.
pub const VERSION: u16 = 1;
/// Header length.
pub const HEADER_LEN: usize = 16;
/// Largest body accepted (inline puts and batches are split below it by the client).
pub const MAX_BODY: u32 = 64 << 20;
/// Most keys in one `GetMany` (the client splits larger batches).
pub const MAX_GET_MANY: usize = 16 << 10;
/// Most items in one `PutMany` (the client splits larger batches).
pub const MAX_PUT_MANY: usize = 16 << 10;

/// Request flag: the object is Arrow IPC (file format).
pub const PUT_ARROW: u32 = 1;
/// Request flag: drop the object on eviction instead of demoting it to a lower tier.
pub const PUT_EPHEMERAL: u32 = 2;
/// Request flag: verify at seal that the data hashes to the key (a sha2-256 CID).
pub const PUT_VERIFY_CID: u32 = 4;
/// Put flag: acknowledge only once the object is in a synced warm-tier file (as with
/// `--durability sync`, for this put alone).
pub const PUT_DURABLE: u32 = 16;
/// Request flag (a single put, or a create whose seal carries it out): also add the object to
/// the store's IPFS node under the key, which must be the CID the node computes for it (a raw
/// CIDv1 for one block of at most 1 MiB, else the UnixFS CIDv1 with raw leaves). The object is
/// added first and stored only if the node took it under that CID.
pub const PUT_IPFS: u32 = 8;

/// Message types. Requests are below 0x8000, replies at or above; each is described in
/// `docs/protocol.md`.
#[allow(missing_docs)]
pub mod msg {
    pub const HELLO: u16 = 1;
    pub const CREATE: u16 = 2;
    pub const SEAL: u16 = 3;
    pub const ABORT: u16 = 4;
    pub const PUT: u16 = 5;
    pub const PUT_MANY: u16 = 6;
    pub const GET: u16 = 7;
    pub const GET_MANY: u16 = 8;
    pub const CONTAINS: u16 = 9;
    pub const DELETE: u16 = 10;
    pub const LIST: u16 = 11;
    pub const STATS: u16 = 12;
    pub const SCAN: u16 = 13;
    pub const CATALOG_QUERY: u16 = 14;
    pub const CATALOG_UPSERT: u16 = 15;

    pub const R_HELLO: u16 = 0x8001;
    pub const R_CREATED: u16 = 0x8002;
    pub const R_DONE: u16 = 0x8003;
    pub const R_STATUSES: u16 = 0x8004;
    pub const R_BOOL: u16 = 0x8005;
    pub const R_LIST: u16 = 0x8006;
    pub const R_STATS: u16 = 0x8007;
    pub const R_KEY: u16 = 0x8008;
    pub const R_BYTES: u16 = 0x8009;
    pub const R_ERROR: u16 = 0x80ff;
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Body length.
    pub body_len: u32,
    /// Protocol version.
    pub version: u16,
    /// Message type.
    pub msg_type: u16,
    /// Request id.
    pub request_id: u64,
}

impl Header {
    /// Parses and validates a header.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Result<Header> {
        let h = Header {
            body_len: u32::from_le_bytes(b[0..4].try_into().expect("4 bytes")),
            version: u16::from_le_bytes(b[4..6].try_into().expect("2 bytes")),
            msg_type: u16::from_le_bytes(b[6..8].try_into().expect("2 bytes")),
            request_id: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
        };
        if h.version != VERSION {
            return Err(Error::Protocol(format!(
                "protocol version {} is not supported (this build speaks {VERSION}); upgrade the older side",
                h.version
            )));
        }
        if h.body_len > MAX_BODY {
            return Err(Error::Protocol(format!(
                "frame body of {} bytes exceeds the {MAX_BODY}-byte limit",
                h.body_len
            )));
        }
        Ok(h)
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.body_len.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.msg_type.to_le_bytes());
        out.extend_from_slice(&self.request_id.to_le_bytes());
    }
}

/// Bounds-checked little-endian reader over a body.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads from the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                Error::Protocol(format!(
                    "truncated body: needed {n} bytes at offset {}, body has {}",
                    self.pos,
                    self.buf.len()
                ))
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    /// Reads a u8.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    /// Reads a u16.
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    /// Reads a u32.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    /// Reads a u64.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    /// Reads an i64.
    pub fn i64(&mut self) -> Result<i64> {
        Ok(self.u64()? as i64)
    }
    /// Reads u32-length-prefixed bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    /// Reads a u8-length-prefixed key.
    pub fn key(&mut self) -> Result<Key> {
        let n = self.u8()? as usize;
        if n == 0 || n > MAX_KEY_LEN {
            return Err(Error::InvalidKey(format!(
                "key length {n} is outside 1..={MAX_KEY_LEN}"
            )));
        }
        Key::new(self.take(n)?)
    }
    /// Reads a UTF-8 string.
    pub fn string(&mut self) -> Result<String> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| Error::Protocol("string is not UTF-8".into()))
    }
    /// Reads a count of items that each take at least `min_item` bytes, refusing counts the
    /// remaining body cannot possibly hold (so a lying count cannot trigger a huge allocation).
    pub fn count(&mut self, min_item: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        let left = self.buf.len() - self.pos;
        if n.saturating_mul(min_item.max(1)) > left {
            return Err(Error::Protocol(format!(
                "count {n} cannot fit in the {left} bytes left in the body"
            )));
        }
        Ok(n)
    }
    /// Fails unless the whole body was consumed.
    pub fn finish(&self) -> Result<()> {
        if self.pos != self.buf.len() {
            return Err(Error::Protocol(format!(
                "{} unexpected trailing bytes in body",
                self.buf.len() - self.pos
            )));
        }
        Ok(())
    }
}

/// Little-endian body writer.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// Starts a frame (header filled in by [`Writer::finish`]).
    pub fn frame(msg_type: u16, request_id: u64) -> Writer {
        let mut buf = Vec::with_capacity(64);
        Header {
            body_len: 0,
            version: VERSION,
            msg_type,
            request_id,
        }
        .write(&mut buf);
        Writer { buf }
    }
    /// Appends a u8.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    /// Appends a u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends an i64.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.u64(v as u64)
    }
    /// Appends u32-length-prefixed bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u32(b.len() as u32);
        self.buf.extend_from_slice(b);
        self
    }
    /// Appends a key.
    pub fn key(&mut self, k: &Key) -> &mut Self {
        let b = k.as_bytes();
        self.u8(b.len() as u8);
        self.buf.extend_from_slice(b);
        self
    }
    /// Appends a string.
    pub fn string(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }
    /// Reserves room for `n` more bytes.
    pub fn reserve(&mut self, n: usize) {
        self.buf.reserve(n);
    }
    /// Fills in the body length and returns the encoded frame.
    pub fn finish(mut self) -> Vec<u8> {
        let body = (self.buf.len() - HEADER_LEN) as u32;
        self.buf[0..4].copy_from_slice(&body.to_le_bytes());
        self.buf
    }
}

/// One item of a batch put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutItem<'a> {
    /// Key.
    pub key: Key,
    /// `PUT_*` flags.
    pub flags: u32,
    /// Metadata bytes.
    pub meta: &'a [u8],
    /// Data bytes.
    pub data: &'a [u8],
}

/// A decoded request. Borrowed from the frame buffer: inline data is not copied until it is
/// written into shared memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// First message on a connection.
    Hello {
        /// Protocol version of the client.
        version: u16,
        /// Client process id (informational; the coordinator trusts `SO_PEERCRED`).
        pid: u32,
        /// The client wants to create objects (maps data segments writable).
        writer: bool,
    },
    /// Allocate an object to be filled through shared memory, then sealed.
    Create {
        /// Key.
        key: Key,
        /// Data length.
        data_len: u64,
        /// Metadata length.
        meta_len: u64,
        /// `PUT_*` flags.
        flags: u32,
    },
    /// Seal an object this client created.
    Seal {
        /// Key.
        key: Key,
    },
    /// Abandon an object this client created and has not sealed.
    Abort {
        /// Key.
        key: Key,
    },
    /// Put a small object inline (create + copy + seal in one round trip).
    Put(PutItem<'a>),
    /// Put a batch inline; one status per item.
    PutMany(Vec<PutItem<'a>>),
    /// Ask for a key that missed the lock-free path: promote it from a lower tier or wait for
    /// it to be sealed. `timeout_ms`: 0 = do not wait, -1 = wait forever.
    Get {
        /// Key.
        key: Key,
        /// Wait limit.
        timeout_ms: i64,
    },
    /// [`Request::Get`] for many keys; one status per key.
    GetMany {
        /// Keys.
        keys: Vec<Key>,
        /// Wait limit for the whole batch.
        timeout_ms: i64,
    },
    /// Is a sealed object stored under the key (in any tier)?
    Contains {
        /// Key.
        key: Key,
    },
    /// Delete an object (its memory is reused once no client pins it).
    Delete {
        /// Key.
        key: Key,
    },
    /// List sealed objects from `cursor` on.
    List {
        /// Where to continue (0 = start).
        cursor: u64,
        /// Maximum entries in the reply.
        limit: u32,
    },
    /// Counters.
    Stats,
    /// Project and filter an Arrow object that is not in shared memory (see [`crate::scan`]):
    /// the answer is [`Response::Key`] of an ephemeral object holding the result,
    /// `Bool(true)` when the object is in shared memory (scan it there), or `Bool(false)`.
    Scan {
        /// Key of the Arrow object.
        key: Key,
        /// The scan in its text form: the column list (`*` for all, else names separated by
        /// U+001F), then one predicate per string.
        spec: Vec<String>,
    },
    /// Query the CID catalog: answered with [`Response::Bytes`] holding the result in `format`
    /// (0 text table, 1 Arrow IPC file, 2 Parquet).
    CatalogQuery {
        /// Filters (`size_bytes>1000`, `mimetype=image/png`, ...), ANDed.
        filters: Vec<String>,
        /// Comma-separated output columns; empty = all.
        columns: String,
        /// At most this many rows; 0 = no limit.
        limit: u64,
        /// Output format.
        format: u8,
    },
    /// Upsert catalog entries: an Arrow IPC file of rows of the catalog schema.
    CatalogUpsert {
        /// The IPC file.
        ipc: &'a [u8],
    },
}

fn put_item<'a>(r: &mut Reader<'a>) -> Result<PutItem<'a>> {
    Ok(PutItem {
        key: r.key()?,
        flags: r.u32()?,
        meta: r.bytes()?,
        data: r.bytes()?,
    })
}

fn write_put_item(w: &mut Writer, it: &PutItem<'_>) {
    w.reserve(it.data.len() + it.meta.len() + 80);
    w.key(&it.key).u32(it.flags).bytes(it.meta).bytes(it.data);
}

impl<'a> Request<'a> {
    /// Decodes a request body.
    pub fn decode(msg_type: u16, body: &'a [u8]) -> Result<Request<'a>> {
        let mut r = Reader::new(body);
        let req = match msg_type {
            msg::HELLO => Request::Hello {
                version: r.u16()?,
                pid: r.u32()?,
                writer: r.u8()? != 0,
            },
            msg::CREATE => Request::Create {
                key: r.key()?,
                data_len: r.u64()?,
                meta_len: r.u64()?,
                flags: r.u32()?,
            },
            msg::SEAL => Request::Seal { key: r.key()? },
            msg::ABORT => Request::Abort { key: r.key()? },
            msg::PUT => Request::Put(put_item(&mut r)?),
            msg::PUT_MANY => {
                let n = r.count(14)?;
                // Each item gets a status (with a message when it fails): bound the count.
                if n > MAX_PUT_MANY {
                    return Err(Error::Protocol(format!(
                        "PutMany of {n} items; at most {MAX_PUT_MANY} per request (split the batch)"
                    )));
                }
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(put_item(&mut r)?);
                }
                Request::PutMany(v)
            }
            msg::GET => Request::Get {
                key: r.key()?,
                timeout_ms: r.i64()?,
            },
            msg::GET_MANY => {
                let timeout_ms = r.i64()?;
                let n = r.count(2)?;
                // A key decodes to 64 bytes (and a waiting one costs more): bound the count,
                // not just the body, so that a small frame cannot make a large allocation.
                if n > MAX_GET_MANY {
                    return Err(Error::Protocol(format!(
                        "GetMany of {n} keys; at most {MAX_GET_MANY} per request (split the batch)"
                    )));
                }
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    keys.push(r.key()?);
                }
                Request::GetMany { keys, timeout_ms }
            }
            msg::CONTAINS => Request::Contains { key: r.key()? },
            msg::DELETE => Request::Delete { key: r.key()? },
            msg::LIST => Request::List {
                cursor: r.u64()?,
                limit: r.u32()?,
            },
            msg::STATS => Request::Stats,
            msg::SCAN => {
                let key = r.key()?;
                let n = r.count(4)?;
                let mut spec = Vec::with_capacity(n);
                for _ in 0..n {
                    spec.push(r.string()?);
                }
                Request::Scan { key, spec }
            }
            msg::CATALOG_QUERY => {
                let n = r.count(4)?;
                let mut filters = Vec::with_capacity(n);
                for _ in 0..n {
                    filters.push(r.string()?);
                }
                Request::CatalogQuery {
                    filters,
                    columns: r.string()?,
                    limit: r.u64()?,
                    format: r.u8()?,
                }
            }
            msg::CATALOG_UPSERT => Request::CatalogUpsert { ipc: r.bytes()? },
            other => {
                return Err(Error::Protocol(format!(
                    "unknown request type {other:#06x}"
                )))
            }
        };
        r.finish()?;
        Ok(req)
    }

    /// Encodes this request as a complete frame.
    pub fn encode(&self, request_id: u64) -> Vec<u8> {
        let mut w;
        match self {
            Request::Hello {
                version,
                pid,
                writer,
            } => {
                w = Writer::frame(msg::HELLO, request_id);
                w.u16(*version).u32(*pid).u8(*writer as u8);
            }
            Request::Create {
                key,
                data_len,
                meta_len,
                flags,
            } => {
                w = Writer::frame(msg::CREATE, request_id);
                w.key(key).u64(*data_len).u64(*meta_len).u32(*flags);
            }
            Request::Seal { key } => {
                w = Writer::frame(msg::SEAL, request_id);
                w.key(key);
            }
            Request::Abort { key } => {
                w = Writer::frame(msg::ABORT, request_id);
                w.key(key);
            }
            Request::Put(it) => {
                w = Writer::frame(msg::PUT, request_id);
                write_put_item(&mut w, it);
            }
            Request::PutMany(items) => {
                w = Writer::frame(msg::PUT_MANY, request_id);
                w.reserve(items.iter().map(|i| i.data.len() + i.meta.len() + 80).sum());
                w.u32(items.len() as u32);
                for it in items {
                    write_put_item(&mut w, it);
                }
            }
            Request::Get { key, timeout_ms } => {
                w = Writer::frame(msg::GET, request_id);
                w.key(key).i64(*timeout_ms);
            }
            Request::GetMany { keys, timeout_ms } => {
                w = Writer::frame(msg::GET_MANY, request_id);
                w.i64(*timeout_ms).u32(keys.len() as u32);
                for k in keys {
                    w.key(k);
                }
            }
            Request::Contains { key } => {
                w = Writer::frame(msg::CONTAINS, request_id);
                w.key(key);
            }
            Request::Delete { key } => {
                w = Writer::frame(msg::DELETE, request_id);
                w.key(key);
            }
            Request::List { cursor, limit } => {
                w = Writer::frame(msg::LIST, request_id);
                w.u64(*cursor).u32(*limit);
            }
            Request::Stats => w = Writer::frame(msg::STATS, request_id),
            Request::CatalogQuery {
                filters,
                columns,
                limit,
                format,
            } => {
                w = Writer::frame(msg::CATALOG_QUERY, request_id);
                w.u32(filters.len() as u32);
                for f in filters {
                    w.string(f);
                }
                w.string(columns).u64(*limit).u8(*format);
            }
            Request::CatalogUpsert { ipc } => {
                w = Writer::frame(msg::CATALOG_UPSERT, request_id);
                w.bytes(ipc);
            }
            Request::Scan { key, spec } => {
                w = Writer::frame(msg::SCAN, request_id);
                w.key(key).u32(spec.len() as u32);
                for s in spec {
                    w.string(s);
                }
            }
        }
        w.finish()
    }
}

/// Per-item outcome in batch replies.
pub type Status = std::result::Result<(), (Code, String)>;

/// What the coordinator tells a client at connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloInfo {
    /// This connection's client id.
    pub client_id: u64,
    /// Coordinator boot id (matches the control segment).
    pub boot_id: u64,
    /// Store name.
    pub store: String,
    /// Directory holding the segments.
    pub shm_dir: String,
    /// File name of this client's lease page.
    pub lease_name: String,
    /// Puts up to this many bytes go inline.
    pub inline_max: u32,
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// Key.
    pub key: Key,
    /// Data length.
    pub data_len: u64,
    /// Metadata length.
    pub meta_len: u64,
    /// Index flag bits.
    pub flags: u64,
}

/// A decoded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Reply to Hello.
    Hello(HelloInfo),
    /// Reply to Create: where to write.
    Created {
        /// Segment id.
        seg: u64,
        /// Offset of the data in the segment (metadata follows the data).
        offset: u64,
        /// Size of the segment.
        seg_size: u64,
    },
    /// Success without a payload.
    Done,
    /// Per-item statuses of a batch (PutMany, GetMany: NotFound means missing).
    Statuses(Vec<Status>),
    /// A yes/no answer (Contains; Get: present).
    Bool(bool),
    /// A page of a listing; `next` is the cursor to continue from, 0 at the end.
    List {
        /// Entries.
        entries: Vec<ListEntry>,
        /// Continuation cursor.
        next: u64,
    },
    /// Named counters.
    Stats(Vec<(String, u64)>),
    /// A key (Scan: the object holding the result).
    Key(Key),
    /// Bytes (CatalogQuery: the result).
    Bytes(Vec<u8>),
    /// The request failed.
    Error {
        /// Code.
        code: Code,
        /// What happened and what to do.
        message: String,
    },
}

impl Response {
    /// Builds an error reply from an error.
    pub fn error(e: &Error) -> Response {
        Response::Error {
            code: e.code(),
            message: e.message(),
        }
    }

    /// Encodes this reply as a frame answering `request_id`.
    pub fn encode(&self, request_id: u64) -> Vec<u8> {
        let mut w;
        match self {
            Response::Hello(h) => {
                w = Writer::frame(msg::R_HELLO, request_id);
                w.u64(h.client_id)
                    .u64(h.boot_id)
                    .string(&h.store)
                    .string(&h.shm_dir)
                    .string(&h.lease_name)
                    .u32(h.inline_max);
            }
            Response::Created {
                seg,
                offset,
                seg_size,
            } => {
                w = Writer::frame(msg::R_CREATED, request_id);
                w.u64(*seg).u64(*offset).u64(*seg_size);
            }
            Response::Done => w = Writer::frame(msg::R_DONE, request_id),
            Response::Statuses(v) => {
                w = Writer::frame(msg::R_STATUSES, request_id);
                w.u32(v.len() as u32);
                for s in v {
                    match s {
                        Ok(()) => {
                            w.u16(Code::Ok as u16).string("");
                        }
                        Err((c, m)) => {
                            w.u16(*c as u16).string(m);
                        }
                    }
                }
            }
            Response::Bool(b) => {
                w = Writer::frame(msg::R_BOOL, request_id);
                w.u8(*b as u8);
            }
            Response::List { entries, next } => {
                w = Writer::frame(msg::R_LIST, request_id);
                w.u64(*next).u32(entries.len() as u32);
                for e in entries {
                    w.key(&e.key).u64(e.data_len).u64(e.meta_len).u64(e.flags);
                }
            }
            Response::Stats(v) => {
                w = Writer::frame(msg::R_STATS, request_id);
                w.u32(v.len() as u32);
                for (k, val) in v {
                    w.string(k).u64(*val);
                }
            }
            Response::Key(k) => {
                w = Writer::frame(msg::R_KEY, request_id);
                w.key(k);
            }
            Response::Bytes(b) => {
                w = Writer::frame(msg::R_BYTES, request_id);
                w.reserve(b.len() + 4);
                w.bytes(b);
            }
            Response::Error { code, message } => {
                w = Writer::frame(msg::R_ERROR, request_id);
                w.u16(*code as u16).string(message);
            }
        }
        w.finish()
    }

    /// Decodes a reply body.
    pub fn decode(msg_type: u16, body: &[u8]) -> Result<Response> {
        let mut r = Reader::new(body);
        let resp = match msg_type {
            msg::R_HELLO => Response::Hello(HelloInfo {
                client_id: r.u64()?,
                boot_id: r.u64()?,
                store: r.string()?,
                shm_dir: r.string()?,
                lease_name: r.string()?,
                inline_max: r.u32()?,
            }),
            msg::R_CREATED => Response::Created {
                seg: r.u64()?,
                offset: r.u64()?,
                seg_size: r.u64()?,
            },
            msg::R_DONE => Response::Done,
            msg::R_STATUSES => {
                let n = r.count(6)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let c = Code::from_u16(r.u16()?);
                    let m = r.string()?;
                    v.push(if c == Code::Ok { Ok(()) } else { Err((c, m)) });
                }
                Response::Statuses(v)
            }
            msg::R_BOOL => Response::Bool(r.u8()? != 0),
            msg::R_LIST => {
                let next = r.u64()?;
                let n = r.count(26)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push(ListEntry {
                        key: r.key()?,
                        data_len: r.u64()?,
                        meta_len: r.u64()?,
                        flags: r.u64()?,
                    });
                }
                Response::List { entries, next }
            }
            msg::R_STATS => {
                let n = r.count(12)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let k = r.string()?;
                    v.push((k, r.u64()?));
                }
                Response::Stats(v)
            }
            msg::R_KEY => Response::Key(r.key()?),
            msg::R_BYTES => Response::Bytes(r.bytes()?.to_vec()),
            msg::R_ERROR => Response::Error {
                code: Code::from_u16(r.u16()?),
                message: r.string()?,
            },
            other => return Err(Error::Protocol(format!("unknown reply type {other:#06x}"))),
        };
        r.finish()?;
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn k(s: &[u8]) -> Key {
        Key::new(s).unwrap()
    }

    fn round_trip(req: Request<'_>) {
        let f = req.encode(42);
        let h = Header::parse(f[..HEADER_LEN].try_into().unwrap()).unwrap();
        assert_eq!(h.request_id, 42);
        assert_eq!(h.body_len as usize, f.len() - HEADER_LEN);
        assert_eq!(Request::decode(h.msg_type, &f[HEADER_LEN..]).unwrap(), req);
    }

    #[test]
    fn requests_round_trip() {
        round_trip(Request::Hello {
            version: 1,
            pid: 7,
            writer: true,
        });
        round_trip(Request::Create {
            key: k(b"a"),
            data_len: 5,
            meta_len: 2,
            flags: PUT_ARROW,
        });
        round_trip(Request::Seal { key: k(b"a") });
        round_trip(Request::Abort { key: k(b"a") });
        round_trip(Request::Put(PutItem {
            key: k(b"a"),
            flags: 0,
            meta: b"m",
            data: b"data",
        }));
        round_trip(Request::PutMany(vec![
            PutItem {
                key: k(b"a"),
                flags: 0,
                meta: b"",
                data: b"1",
            },
            PutItem {
                key: k(&[9; 63]),
                flags: 2,
                meta: b"x",
                data: b"",
            },
        ]));
        round_trip(Request::Get {
            key: k(b"a"),
            timeout_ms: -1,
        });
        round_trip(Request::GetMany {
            keys: vec![k(b"a"), k(b"b")],
            timeout_ms: 5,
        });
        round_trip(Request::Contains { key: k(b"a") });
        round_trip(Request::Delete { key: k(b"a") });
        round_trip(Request::List {
            cursor: 3,
            limit: 10,
        });
        round_trip(Request::Stats);
        round_trip(Request::CatalogQuery {
            filters: vec!["size_bytes>10".into()],
            columns: "cid,size_bytes".into(),
            limit: 5,
            format: 1,
        });
        round_trip(Request::CatalogUpsert { ipc: b"bytes" });
        round_trip(Request::Scan {
            key: k(b"t"),
            spec: vec!["*".into(), "x>=5".into()],
        });
    }

    #[test]
    fn responses_round_trip() {
        let all = vec![
            Response::Hello(HelloInfo {
                client_id: 1,
                boot_id: 2,
                store: "s".into(),
                shm_dir: "/dev/shm".into(),
                lease_name: "l".into(),
                inline_max: 65536,
            }),
            Response::Created {
                seg: 1,
                offset: 64,
                seg_size: 4096,
            },
            Response::Done,
            Response::Statuses(vec![Ok(()), Err((Code::StoreFull, "full".into()))]),
            Response::Bool(true),
            Response::List {
                entries: vec![ListEntry {
                    key: k(b"z"),
                    data_len: 1,
                    meta_len: 2,
                    flags: 3,
                }],
                next: 0,
            },
            Response::Stats(vec![("a".into(), 1)]),
            Response::Key(k(b"derived")),
            Response::Bytes(b"result".to_vec()),
            Response::Error {
                code: Code::NotFound,
                message: "nope".into(),
            },
        ];
        for r in all {
            let f = r.encode(9);
            let h = Header::parse(f[..HEADER_LEN].try_into().unwrap()).unwrap();
            assert_eq!(Response::decode(h.msg_type, &f[HEADER_LEN..]).unwrap(), r);
        }
    }

    #[test]
    fn bad_headers_rejected() {
        let mut f = Request::Stats.encode(1);
        f[4] = 9;
        assert!(Header::parse(f[..16].try_into().unwrap()).is_err());
        let mut f = Request::Stats.encode(1);
        f[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Header::parse(f[..16].try_into().unwrap()).is_err());
        assert!(Request::decode(0x7777, &[]).is_err());
        // A key longer than 63 bytes.
        let mut body = vec![64u8];
        body.extend_from_slice(&[1; 64]);
        assert!(matches!(
            Request::decode(msg::SEAL, &body),
            Err(Error::InvalidKey(_))
        ));
        // A lying batch count.
        assert!(Request::decode(msg::PUT_MANY, &u32::MAX.to_le_bytes()).is_err());
        // A GetMany of more keys than allowed, though its body holds them all.
        let keys: Vec<Key> = (0..=MAX_GET_MANY as u32)
            .map(|i| {
                Key::new(&i.to_le_bytes()[..1.max((32 - i.leading_zeros() as usize).div_ceil(8))])
                    .unwrap()
            })
            .collect();
        let f = Request::GetMany {
            keys,
            timeout_ms: 0,
        }
        .encode(1);
        let e = Request::decode(msg::GET_MANY, &f[HEADER_LEN..]).unwrap_err();
        assert!(e.to_string().contains("split the batch"), "{e}");
        let item = PutItem {
            key: Key::new(b"k").unwrap(),
            flags: 0,
            meta: b"",
            data: b"",
        };
        let f = Request::PutMany(vec![item; MAX_PUT_MANY + 1]).encode(1);
        let e = Request::decode(msg::PUT_MANY, &f[HEADER_LEN..]).unwrap_err();
        assert!(e.to_string().contains("split the batch"), "{e}");
    }

    proptest! {
        #[test]
        fn decoders_never_panic(t in 0u16..20, body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Request::decode(t, &body);
            let _ = Response::decode(0x8000 | t, &body);
            let _ = Response::decode(msg::R_ERROR, &body);
        }
    }
}
