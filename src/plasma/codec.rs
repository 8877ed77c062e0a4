//! Hand-rolled, bounds-checked FlatBuffers codec for every Plasma message
//! (Arrow 11 `plasma.flatbuf` schema) plus the 24-byte frame header.
//!
//! Guarantees:
//! * Decoders never panic and never read out of bounds: every offset, length and
//!   vtable entry is checked against the buffer; bad input yields [`CodecError`].
//! * Encoders produce canonical FlatBuffers layouts (built back to front like the
//!   C++ `FlatBufferBuilder`, with the same field order the reference uses), so
//!   their output matches the reference store/client byte for byte where the
//!   field-add order is known (Connect, Create, notifications).
//!
//! The module is self-contained (no crate-root items) so it can move into
//! `cidcache::plasma` unchanged.

use thiserror::Error;

/// An object id: always exactly 20 raw bytes on the wire.
pub type ObjectId = [u8; 20];

/// Length of an [`ObjectId`].
pub const OBJECT_ID_LEN: usize = 20;
/// Size of the frame header (version, type, body length; three LE int64).
pub const HEADER_LEN: usize = 24;
/// The only protocol version (`kPlasmaProtocolVersion`).
pub const PROTOCOL_VERSION: i64 = 0;
/// Size of the digest (XXH64, native endian).
pub const DIGEST_LEN: usize = 8;

/// Errors produced while decoding frames or FlatBuffers bodies.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// The frame header's version field is not 0.
    #[error("unsupported protocol version {0}")]
    BadVersion(i64),
    /// The frame's body length is negative or larger than the allowed maximum.
    #[error("invalid body length {len} (max {max})")]
    BadLength {
        /// The length from the header.
        len: i64,
        /// The maximum allowed.
        max: u64,
    },
    /// The message type is not one this decoder handles.
    #[error("unknown or unexpected message type {0}")]
    UnknownType(i64),
    /// A read at `pos..pos+len` fell outside the buffer.
    #[error("out of bounds read at {pos} (+{len}) in buffer of {size} bytes")]
    OutOfBounds {
        /// Start of the read.
        pos: usize,
        /// Length of the read.
        len: usize,
        /// Buffer size.
        size: usize,
    },
    /// A vtable is malformed (odd/too small size).
    #[error("malformed vtable at {0}")]
    BadVtable(usize),
    /// A field the protocol requires is absent.
    #[error("required field {0} is missing")]
    MissingField(&'static str),
    /// An object id that is not exactly 20 bytes.
    #[error("object id has length {0}, expected 20")]
    BadObjectId(usize),
    /// A digest that is not exactly 8 bytes.
    #[error("digest has length {0}, expected 8")]
    BadDigest(usize),
    /// Parallel vectors of different lengths, or a count field that lies.
    #[error("inconsistent lengths: {0}")]
    Inconsistent(&'static str),
    /// A numeric field has a value outside its allowed domain.
    #[error("invalid value for {0}")]
    BadValue(&'static str),
}

type Result<T> = std::result::Result<T, CodecError>;

// ---------------------------------------------------------------------------
// Message types
// ---------------------------------------------------------------------------

/// The `MessageType` enum (int64 in the frame header).
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i64)]
pub enum MessageType {
    DisconnectClient = 0,
    CreateRequest = 1,
    CreateReply = 2,
    CreateAndSealRequest = 3,
    CreateAndSealReply = 4,
    AbortRequest = 5,
    AbortReply = 6,
    SealRequest = 7,
    SealReply = 8,
    GetRequest = 9,
    GetReply = 10,
    ReleaseRequest = 11,
    ReleaseReply = 12,
    DeleteRequest = 13,
    DeleteReply = 14,
    ContainsRequest = 15,
    ContainsReply = 16,
    ListRequest = 17,
    ListReply = 18,
    ConnectRequest = 19,
    ConnectReply = 20,
    EvictRequest = 21,
    EvictReply = 22,
    SubscribeRequest = 23,
    UnsubscribeRequest = 24,
    DataRequest = 25,
    DataReply = 26,
    Notification = 27,
    SetOptionsRequest = 28,
    SetOptionsReply = 29,
    GetDebugStringRequest = 30,
    GetDebugStringReply = 31,
    CreateAndSealBatchRequest = 32,
    CreateAndSealBatchReply = 33,
    RefreshLruRequest = 34,
    RefreshLruReply = 35,
}

impl MessageType {
    /// Converts a wire value; `None` for values outside 0..=35.
    pub fn from_i64(v: i64) -> Option<Self> {
        use MessageType::*;
        const ALL: [MessageType; 36] = [
            DisconnectClient,
            CreateRequest,
            CreateReply,
            CreateAndSealRequest,
            CreateAndSealReply,
            AbortRequest,
            AbortReply,
            SealRequest,
            SealReply,
            GetRequest,
            GetReply,
            ReleaseRequest,
            ReleaseReply,
            DeleteRequest,
            DeleteReply,
            ContainsRequest,
            ContainsReply,
            ListRequest,
            ListReply,
            ConnectRequest,
            ConnectReply,
            EvictRequest,
            EvictReply,
            SubscribeRequest,
            UnsubscribeRequest,
            DataRequest,
            DataReply,
            Notification,
            SetOptionsRequest,
            SetOptionsReply,
            GetDebugStringRequest,
            GetDebugStringReply,
            CreateAndSealBatchRequest,
            CreateAndSealBatchReply,
            RefreshLruRequest,
            RefreshLruReply,
        ];
        usize::try_from(v).ok().and_then(|i| ALL.get(i).copied())
    }
}

/// The `PlasmaError` enum (int32 on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(i32)]
pub enum PlasmaError {
    /// Success.
    #[default]
    Ok = 0,
    /// The id already exists in the table (any state).
    ObjectExists = 1,
    /// The id does not exist.
    ObjectNotFound = 2,
    /// No room even after eviction (or quota / device errors).
    OutOfMemory = 3,
    /// Delete of an unsealed/evicted object (deferred). DeleteReply only.
    ObjectNotSealed = 4,
    /// Delete of an object in use (deferred). DeleteReply only.
    ObjectInUse = 5,
}

impl PlasmaError {
    /// Converts a wire value; `None` if unknown.
    pub fn from_i32(v: i32) -> Option<Self> {
        Some(match v {
            0 => Self::Ok,
            1 => Self::ObjectExists,
            2 => Self::ObjectNotFound,
            3 => Self::OutOfMemory,
            4 => Self::ObjectNotSealed,
            5 => Self::ObjectInUse,
            _ => return None,
        })
    }
}

// ---------------------------------------------------------------------------
// Frame header
// ---------------------------------------------------------------------------

/// A decoded frame header. `msg_type` is kept raw so unknown types can be logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Raw message type.
    pub msg_type: i64,
    /// Body length in bytes (validated to be `0..=max_body`).
    pub body_len: u64,
}

/// Encodes a frame header (version 0).
pub fn encode_header(msg_type: i64, body_len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&msg_type.to_le_bytes());
    h[16..24].copy_from_slice(&(body_len as i64).to_le_bytes());
    h
}

/// Decodes and validates a frame header. Rejects version != 0 and body
/// lengths that are negative or exceed `max_body`.
pub fn decode_header(h: &[u8; HEADER_LEN], max_body: u64) -> Result<FrameHeader> {
    let rd = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[i..i + 8]);
        i64::from_le_bytes(b)
    };
    let version = rd(0);
    if version != PROTOCOL_VERSION {
        return Err(CodecError::BadVersion(version));
    }
    let len = rd(16);
    if len < 0 || len as u64 > max_body {
        return Err(CodecError::BadLength { len, max: max_body });
    }
    Ok(FrameHeader {
        msg_type: rd(8),
        body_len: len as u64,
    })
}

/// Largest body of a control message, i.e. of anything but `CreateAndSeal` and
/// `CreateAndSealBatch` (which carry object bytes inline): room for a Get of some 300,000 ids.
pub const CONTROL_MAX: u64 = 8 << 20;

/// The largest body a server accepts for `msg_type` when object bytes may travel inline up to
/// `max_frame` bytes.
pub fn max_body(msg_type: i64, max_frame: u64) -> u64 {
    if msg_type == MessageType::CreateAndSealRequest as i64
        || msg_type == MessageType::CreateAndSealBatchRequest as i64
    {
        max_frame
    } else {
        CONTROL_MAX.min(max_frame)
    }
}

/// [`decode_header`] with the bound [`max_body`] gives the message type the header declares.
pub fn decode_request_header(h: &[u8; HEADER_LEN], max_frame: u64) -> Result<FrameHeader> {
    let msg_type = i64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
    decode_header(h, max_body(msg_type, max_frame))
}

/// Builds a whole frame: header followed by `body`.
pub fn frame(msg_type: MessageType, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_LEN + body.len());
    v.extend_from_slice(&encode_header(msg_type as i64, body.len()));
    v.extend_from_slice(body);
    v
}

// ---------------------------------------------------------------------------
// Shared types
// ---------------------------------------------------------------------------

/// `PlasmaObjectSpec` (48-byte struct, 8-byte aligned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ObjectSpec {
    /// Segment id (equals `store_fd`).
    pub segment_index: i32,
    /// Offset of the data from the start of the segment file.
    pub data_offset: u64,
    /// Data length; `u64::MAX` (-1) in GetReply means "not available".
    pub data_size: u64,
    /// Must be `data_offset + data_size`.
    pub metadata_offset: u64,
    /// Metadata length.
    pub metadata_size: u64,
    /// 0 = host memory.
    pub device_num: i32,
}

impl ObjectSpec {
    /// Wire size of the struct.
    pub const SIZE: usize = 48;

    /// The spec used for unavailable objects in a GetReply.
    pub fn missing() -> Self {
        ObjectSpec {
            data_size: u64::MAX,
            ..Default::default()
        }
    }

    /// True if this spec marks an unavailable object.
    pub fn is_missing(&self) -> bool {
        self.data_size == u64::MAX
    }

    fn to_bytes(self) -> [u8; 48] {
        let mut b = [0u8; 48];
        b[0..4].copy_from_slice(&self.segment_index.to_le_bytes());
        b[8..16].copy_from_slice(&self.data_offset.to_le_bytes());
        b[16..24].copy_from_slice(&self.data_size.to_le_bytes());
        b[24..32].copy_from_slice(&self.metadata_offset.to_le_bytes());
        b[32..40].copy_from_slice(&self.metadata_size.to_le_bytes());
        b[40..44].copy_from_slice(&self.device_num.to_le_bytes());
        b
    }

    fn read(r: &Reader<'_>, pos: usize) -> Result<Self> {
        Ok(ObjectSpec {
            segment_index: r.i32(pos)?,
            data_offset: r.u64(pos + 8)?,
            data_size: r.u64(pos + 16)?,
            metadata_offset: r.u64(pos + 24)?,
            metadata_size: r.u64(pos + 32)?,
            device_num: r.i32(pos + 40)?,
        })
    }
}

/// `ObjectInfo` table (ListReply entries and notifications).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectInfo {
    /// The object id.
    pub object_id: ObjectId,
    /// Data size.
    pub data_size: i64,
    /// Metadata size.
    pub metadata_size: i64,
    /// Number of distinct clients holding it.
    pub ref_count: i32,
    /// Unix seconds at creation.
    pub create_time: i64,
    /// -1 while unsealed, else whole seconds.
    pub construct_duration: i64,
    /// Digest bytes; `Some(empty)` for unsealed objects in ListReply, `None` if absent.
    pub digest: Option<Vec<u8>>,
    /// True for deletion notifications.
    pub is_deletion: bool,
}

// ---------------------------------------------------------------------------
// Requests and replies
// ---------------------------------------------------------------------------

/// A client→store request. Byte payloads borrow from the decoded body.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// Type 0: the client asks to be disconnected.
    Disconnect,
    Connect,
    Create {
        object_id: ObjectId,
        evict_if_full: bool,
        data_size: u64,
        metadata_size: u64,
        device_num: i32,
    },
    CreateAndSeal {
        object_id: ObjectId,
        evict_if_full: bool,
        data: &'a [u8],
        metadata: &'a [u8],
        digest: [u8; DIGEST_LEN],
    },
    CreateAndSealBatch {
        object_ids: Vec<ObjectId>,
        evict_if_full: bool,
        data: Vec<&'a [u8]>,
        metadata: Vec<&'a [u8]>,
        digests: Vec<[u8; DIGEST_LEN]>,
    },
    Abort {
        object_id: ObjectId,
    },
    Seal {
        object_id: ObjectId,
        digest: [u8; DIGEST_LEN],
    },
    Get {
        object_ids: Vec<ObjectId>,
        timeout_ms: i64,
    },
    Release {
        object_id: ObjectId,
    },
    Delete {
        object_ids: Vec<ObjectId>,
    },
    Contains {
        object_id: ObjectId,
    },
    List,
    Evict {
        num_bytes: u64,
    },
    Subscribe,
    SetOptions {
        client_name: &'a [u8],
        output_memory_quota: i64,
    },
    GetDebugString,
    RefreshLru {
        object_ids: Vec<ObjectId>,
    },
}

/// A store→client reply (or notification, which has no frame type of its own).
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Connect {
        memory_capacity: i64,
    },
    Create {
        object_id: ObjectId,
        object: ObjectSpec,
        error: PlasmaError,
        store_fd: i32,
        mmap_size: i64,
    },
    CreateAndSeal {
        error: PlasmaError,
    },
    CreateAndSealBatch {
        error: PlasmaError,
    },
    Abort {
        object_id: ObjectId,
    },
    Seal {
        object_id: ObjectId,
        error: PlasmaError,
    },
    Get {
        object_ids: Vec<ObjectId>,
        objects: Vec<ObjectSpec>,
        store_fds: Vec<i32>,
        mmap_sizes: Vec<i64>,
    },
    Delete {
        object_ids: Vec<ObjectId>,
        errors: Vec<PlasmaError>,
    },
    Contains {
        object_id: ObjectId,
        has_object: bool,
    },
    List {
        objects: Vec<ObjectInfo>,
    },
    Evict {
        num_bytes: u64,
    },
    SetOptions {
        error: PlasmaError,
    },
    DebugString {
        debug_string: Vec<u8>,
    },
    RefreshLru,
}

impl Request<'_> {
    /// The frame type of this request.
    pub fn msg_type(&self) -> MessageType {
        use MessageType as M;
        match self {
            Request::Disconnect => M::DisconnectClient,
            Request::Connect => M::ConnectRequest,
            Request::Create { .. } => M::CreateRequest,
            Request::CreateAndSeal { .. } => M::CreateAndSealRequest,
            Request::CreateAndSealBatch { .. } => M::CreateAndSealBatchRequest,
            Request::Abort { .. } => M::AbortRequest,
            Request::Seal { .. } => M::SealRequest,
            Request::Get { .. } => M::GetRequest,
            Request::Release { .. } => M::ReleaseRequest,
            Request::Delete { .. } => M::DeleteRequest,
            Request::Contains { .. } => M::ContainsRequest,
            Request::List => M::ListRequest,
            Request::Evict { .. } => M::EvictRequest,
            Request::Subscribe => M::SubscribeRequest,
            Request::SetOptions { .. } => M::SetOptionsRequest,
            Request::GetDebugString => M::GetDebugStringRequest,
            Request::RefreshLru { .. } => M::RefreshLruRequest,
        }
    }
}

impl Reply {
    /// The frame type of this reply.
    pub fn msg_type(&self) -> MessageType {
        use MessageType as M;
        match self {
            Reply::Connect { .. } => M::ConnectReply,
            Reply::Create { .. } => M::CreateReply,
            Reply::CreateAndSeal { .. } => M::CreateAndSealReply,
            Reply::CreateAndSealBatch { .. } => M::CreateAndSealBatchReply,
            Reply::Abort { .. } => M::AbortReply,
            Reply::Seal { .. } => M::SealReply,
            Reply::Get { .. } => M::GetReply,
            Reply::Delete { .. } => M::DeleteReply,
            Reply::Contains { .. } => M::ContainsReply,
            Reply::List { .. } => M::ListReply,
            Reply::Evict { .. } => M::EvictReply,
            Reply::SetOptions { .. } => M::SetOptionsReply,
            Reply::DebugString { .. } => M::GetDebugStringReply,
            Reply::RefreshLru => M::RefreshLruReply,
        }
    }
}

// ---------------------------------------------------------------------------
// Builder (back to front, like flatbuffers::FlatBufferBuilder)
// ---------------------------------------------------------------------------

/// Offset of a finished object, measured from the end of the buffer.
#[derive(Clone, Copy, Debug)]
struct Off(u32);

/// A minimal FlatBuffers builder. Bytes are kept reversed (`rev[i]` is the
/// byte `i+1` positions before the end) so prepending is amortised O(1).
struct Builder {
    rev: Vec<u8>,
    minalign: usize,
    /// (slot, offset-from-end) of fields of the table being built.
    fields: Vec<(u16, u32)>,
    table_start: u32,
    /// Offsets (from end) of vtables written so far, for deduplication.
    vtables: Vec<u32>,
}

impl Builder {
    fn new(cap: usize) -> Self {
        Builder {
            rev: Vec::with_capacity(cap),
            minalign: 1,
            fields: Vec::new(),
            table_start: 0,
            vtables: Vec::new(),
        }
    }

    fn size(&self) -> u32 {
        self.rev.len() as u32
    }

    /// Prepends `bytes` (in normal order).
    fn push(&mut self, bytes: &[u8]) {
        self.rev.extend(bytes.iter().rev());
    }

    fn pad(&mut self, n: usize) {
        self.rev.resize(self.rev.len() + n, 0);
    }

    /// Pads so that after writing `len` more bytes the size is a multiple of `align`.
    fn prealign(&mut self, len: usize, align: usize) {
        self.minalign = self.minalign.max(align);
        let pad = (align - ((self.rev.len() + len) % align)) % align;
        self.pad(pad);
    }

    fn align(&mut self, align: usize) {
        self.prealign(0, align);
    }

    /// Writes `bytes` so their first byte is at offset-from-end `off`.
    fn write_at(&mut self, off: u32, bytes: &[u8]) {
        let base = off as usize - 1;
        for (k, b) in bytes.iter().enumerate() {
            self.rev[base - k] = *b;
        }
    }

    fn read_at(&self, off: u32, len: usize) -> Vec<u8> {
        let base = off as usize - 1;
        (0..len).map(|k| self.rev[base - k]).collect()
    }

    fn refer_to(&mut self, off: Off) -> u32 {
        self.align(4);
        self.size() - off.0 + 4
    }

    fn create_bytes(&mut self, s: &[u8]) -> Off {
        self.prealign(s.len() + 1, 4);
        self.pad(1);
        self.push(s);
        self.push(&(s.len() as u32).to_le_bytes());
        Off(self.size())
    }

    fn create_vec_scalar(&mut self, elem: usize, raw_le: &[u8]) -> Off {
        let n = raw_le.len() / elem;
        self.prealign(raw_le.len(), 4);
        self.prealign(raw_le.len(), elem);
        self.push(raw_le);
        self.push(&(n as u32).to_le_bytes());
        Off(self.size())
    }

    fn create_vec_offsets(&mut self, offs: &[Off]) -> Off {
        self.prealign(offs.len() * 4, 4);
        for o in offs.iter().rev() {
            let r = self.refer_to(*o);
            self.push(&r.to_le_bytes());
        }
        self.push(&(offs.len() as u32).to_le_bytes());
        Off(self.size())
    }

    fn create_vec_specs(&mut self, specs: &[ObjectSpec]) -> Off {
        let total = specs.len() * ObjectSpec::SIZE;
        self.prealign(total, 4);
        self.prealign(total, 8);
        for s in specs.iter().rev() {
            self.push(&s.to_bytes());
        }
        self.push(&(specs.len() as u32).to_le_bytes());
        Off(self.size())
    }

    fn start_table(&mut self) {
        self.fields.clear();
        self.table_start = self.size();
    }

    fn track(&mut self, slot: u16) {
        let s = self.size();
        self.fields.push((slot, s));
    }

    fn add_scalar(&mut self, slot: u16, le: &[u8], is_default: bool) {
        if is_default {
            return;
        }
        self.align(le.len());
        self.push(le);
        self.track(slot);
    }

    fn add_i64(&mut self, slot: u16, v: i64) {
        self.add_scalar(slot, &v.to_le_bytes(), v == 0);
    }
    fn add_u64(&mut self, slot: u16, v: u64) {
        self.add_scalar(slot, &v.to_le_bytes(), v == 0);
    }
    fn add_i32(&mut self, slot: u16, v: i32) {
        self.add_scalar(slot, &v.to_le_bytes(), v == 0);
    }
    fn add_bool(&mut self, slot: u16, v: bool) {
        self.add_scalar(slot, &[v as u8], !v);
    }

    fn add_offset(&mut self, slot: u16, off: Off) {
        let r = self.refer_to(off);
        self.push(&r.to_le_bytes());
        self.track(slot);
    }

    fn add_spec(&mut self, slot: u16, spec: &ObjectSpec) {
        self.align(8);
        self.push(&spec.to_bytes());
        self.track(slot);
    }

    fn end_table(&mut self) -> Off {
        self.align(4);
        self.push(&0i32.to_le_bytes());
        let table_off = self.size();
        let max_slot = self.fields.iter().map(|f| f.0 + 1).max().unwrap_or(0);
        let vt_len = 4 + 2 * max_slot as usize;
        let mut vt = vec![0u8; vt_len];
        vt[0..2].copy_from_slice(&(vt_len as u16).to_le_bytes());
        let inline = (table_off - self.table_start) as u16;
        vt[2..4].copy_from_slice(&inline.to_le_bytes());
        for &(slot, off) in &self.fields {
            let pos = (table_off - off) as u16;
            let i = 4 + 2 * slot as usize;
            vt[i..i + 2].copy_from_slice(&pos.to_le_bytes());
        }
        // Deduplicate against earlier identical vtables, as the C++ builder does.
        let existing = self.vtables.iter().copied().find(|&v| {
            self.read_at(v, vt_len) == vt && {
                let l = self.read_at(v, 2);
                u16::from_le_bytes([l[0], l[1]]) as usize == vt_len
            }
        });
        let vt_off = match existing {
            Some(v) => v,
            None => {
                self.push(&vt);
                let v = self.size();
                self.vtables.push(v);
                v
            }
        };
        let soff = vt_off as i64 - table_off as i64;
        self.write_at(table_off, &(soff as i32).to_le_bytes());
        self.fields.clear();
        Off(table_off)
    }

    fn finish(mut self, root: Off) -> Vec<u8> {
        let ma = self.minalign;
        self.prealign(4, ma);
        let r = self.refer_to(root);
        self.push(&r.to_le_bytes());
        self.rev.reverse();
        self.rev
    }
}

fn ids_vec(b: &mut Builder, ids: &[ObjectId]) -> Off {
    let offs: Vec<Off> = ids.iter().map(|id| b.create_bytes(id)).collect();
    b.create_vec_offsets(&offs)
}

fn bytes_vec(b: &mut Builder, items: &[&[u8]]) -> Off {
    let offs: Vec<Off> = items.iter().map(|s| b.create_bytes(s)).collect();
    b.create_vec_offsets(&offs)
}

fn empty_table() -> Vec<u8> {
    let mut b = Builder::new(16);
    b.start_table();
    let t = b.end_table();
    b.finish(t)
}

/// Builds one ObjectInfo table (field order as generated `CreateObjectInfo`:
/// 8-byte fields first, then 4-byte, then 1-byte, each in reverse slot order).
fn object_info(b: &mut Builder, info: &ObjectInfo) -> Off {
    // Strings are created in declaration order (object_id, then digest),
    // exactly like the generated object-API `Pack`.
    let id = b.create_bytes(&info.object_id);
    let digest = info.digest.as_ref().map(|d| b.create_bytes(d));
    b.start_table();
    b.add_i64(5, info.construct_duration);
    b.add_i64(4, info.create_time);
    b.add_i64(2, info.metadata_size);
    b.add_i64(1, info.data_size);
    if let Some(d) = digest {
        b.add_offset(6, d);
    }
    b.add_i32(3, info.ref_count);
    b.add_offset(0, id);
    b.add_bool(7, info.is_deletion);
    b.end_table()
}

impl Request<'_> {
    /// Encodes the FlatBuffers body of this request (without frame header).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Disconnect
            | Request::Connect
            | Request::List
            | Request::Subscribe
            | Request::GetDebugString => empty_table(),
            Request::Create {
                object_id,
                evict_if_full,
                data_size,
                metadata_size,
                device_num,
            } => {
                let mut b = Builder::new(96);
                let id = b.create_bytes(object_id);
                b.start_table();
                b.add_u64(3, *metadata_size);
                b.add_u64(2, *data_size);
                b.add_i32(4, *device_num);
                b.add_offset(0, id);
                b.add_bool(1, *evict_if_full);
                let t = b.end_table();
                b.finish(t)
            }
            Request::CreateAndSeal {
                object_id,
                evict_if_full,
                data,
                metadata,
                digest,
            } => {
                let mut b = Builder::new(data.len() + metadata.len() + 128);
                let dg = b.create_bytes(digest);
                let id = b.create_bytes(object_id);
                let d = b.create_bytes(data);
                let m = b.create_bytes(metadata);
                b.start_table();
                b.add_offset(4, dg);
                b.add_offset(3, m);
                b.add_offset(2, d);
                b.add_offset(0, id);
                b.add_bool(1, *evict_if_full);
                let t = b.end_table();
                b.finish(t)
            }
            Request::CreateAndSealBatch {
                object_ids,
                evict_if_full,
                data,
                metadata,
                digests,
            } => {
                let total: usize = data.iter().map(|d| d.len() + 64).sum::<usize>()
                    + metadata.iter().map(|d| d.len() + 64).sum::<usize>();
                let mut b = Builder::new(total + 64 * object_ids.len() + 128);
                let ids = ids_vec(&mut b, object_ids);
                let d = bytes_vec(&mut b, data);
                let m = bytes_vec(&mut b, metadata);
                let dg: Vec<&[u8]> = digests.iter().map(|x| &x[..]).collect();
                let dg = bytes_vec(&mut b, &dg);
                b.start_table();
                b.add_offset(4, dg);
                b.add_offset(3, m);
                b.add_offset(2, d);
                b.add_offset(0, ids);
                b.add_bool(1, *evict_if_full);
                let t = b.end_table();
                b.finish(t)
            }
            Request::Abort { object_id }
            | Request::Release { object_id }
            | Request::Contains { object_id } => {
                let mut b = Builder::new(64);
                let id = b.create_bytes(object_id);
                b.start_table();
                b.add_offset(0, id);
                let t = b.end_table();
                b.finish(t)
            }
            Request::Seal { object_id, digest } => {
                let mut b = Builder::new(80);
                let dg = b.create_bytes(digest);
                let id = b.create_bytes(object_id);
                b.start_table();
                b.add_offset(1, dg);
                b.add_offset(0, id);
                let t = b.end_table();
                b.finish(t)
            }
            Request::Get {
                object_ids,
                timeout_ms,
            } => {
                let mut b = Builder::new(48 * object_ids.len() + 64);
                let ids = ids_vec(&mut b, object_ids);
                b.start_table();
                b.add_i64(1, *timeout_ms);
                b.add_offset(0, ids);
                let t = b.end_table();
                b.finish(t)
            }
            Request::Delete { object_ids } => {
                let mut b = Builder::new(48 * object_ids.len() + 64);
                let ids = ids_vec(&mut b, object_ids);
                b.start_table();
                b.add_offset(1, ids);
                b.add_i32(0, object_ids.len() as i32);
                let t = b.end_table();
                b.finish(t)
            }
            Request::RefreshLru { object_ids } => {
                let mut b = Builder::new(48 * object_ids.len() + 64);
                let ids = ids_vec(&mut b, object_ids);
                b.start_table();
                b.add_offset(0, ids);
                let t = b.end_table();
                b.finish(t)
            }
            Request::Evict { num_bytes } => {
                let mut b = Builder::new(32);
                b.start_table();
                b.add_u64(0, *num_bytes);
                let t = b.end_table();
                b.finish(t)
            }
            Request::SetOptions {
                client_name,
                output_memory_quota,
            } => {
                let mut b = Builder::new(client_name.len() + 64);
                let n = b.create_bytes(client_name);
                b.start_table();
                b.add_i64(1, *output_memory_quota);
                b.add_offset(0, n);
                let t = b.end_table();
                b.finish(t)
            }
        }
    }

    /// Encodes a complete frame (header + body).
    pub fn encode_frame(&self) -> Vec<u8> {
        frame(self.msg_type(), &self.encode())
    }
}

impl Reply {
    /// Encodes the FlatBuffers body of this reply (without frame header).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Reply::Connect { memory_capacity } => {
                let mut b = Builder::new(32);
                b.start_table();
                b.add_i64(0, *memory_capacity);
                let t = b.end_table();
                b.finish(t)
            }
            Reply::Create {
                object_id,
                object,
                error,
                store_fd,
                mmap_size,
            } => {
                // Same add order as the reference SendCreateReply.
                let mut b = Builder::new(128);
                let id = b.create_bytes(object_id);
                b.start_table();
                b.add_i32(2, *error as i32);
                b.add_spec(1, object);
                b.add_offset(0, id);
                b.add_i32(3, *store_fd);
                b.add_i64(4, *mmap_size);
                let t = b.end_table();
                b.finish(t)
            }
            Reply::CreateAndSeal { error }
            | Reply::CreateAndSealBatch { error }
            | Reply::SetOptions { error } => {
                let mut b = Builder::new(32);
                b.start_table();
                b.add_i32(0, *error as i32);
                let t = b.end_table();
                b.finish(t)
            }
            Reply::Abort { object_id } => {
                let mut b = Builder::new(64);
                let id = b.create_bytes(object_id);
                b.start_table();
                b.add_offset(0, id);
                let t = b.end_table();
                b.finish(t)
            }
            Reply::Seal { object_id, error } => {
                let mut b = Builder::new(64);
                let id = b.create_bytes(object_id);
                b.start_table();
                b.add_i32(1, *error as i32);
                b.add_offset(0, id);
                let t = b.end_table();
                b.finish(t)
            }
            Reply::Get {
                object_ids,
                objects,
                store_fds,
                mmap_sizes,
            } => {
                let mut b = Builder::new(100 * object_ids.len() + 128);
                let ids = ids_vec(&mut b, object_ids);
                let specs = b.create_vec_specs(objects);
                let fds: Vec<u8> = store_fds.iter().flat_map(|x| x.to_le_bytes()).collect();
                let fds = b.create_vec_scalar(4, &fds);
                let ms: Vec<u8> = mmap_sizes.iter().flat_map(|x| x.to_le_bytes()).collect();
                let ms = b.create_vec_scalar(8, &ms);
                let handles = b.create_vec_offsets(&[]);
                b.start_table();
                b.add_offset(4, handles);
                b.add_offset(3, ms);
                b.add_offset(2, fds);
                b.add_offset(1, specs);
                b.add_offset(0, ids);
                let t = b.end_table();
                b.finish(t)
            }
            Reply::Delete { object_ids, errors } => {
                let mut b = Builder::new(32 * object_ids.len() + 64);
                let ids = ids_vec(&mut b, object_ids);
                let errs: Vec<u8> = errors
                    .iter()
                    .flat_map(|e| (*e as i32).to_le_bytes())
                    .collect();
                let errs = b.create_vec_scalar(4, &errs);
                b.start_table();
                b.add_offset(2, errs);
                b.add_offset(1, ids);
                b.add_i32(0, object_ids.len() as i32);
                let t = b.end_table();
                b.finish(t)
            }
            Reply::Contains {
                object_id,
                has_object,
            } => {
                let mut b = Builder::new(64);
                let id = b.create_bytes(object_id);
                b.start_table();
                b.add_i32(1, *has_object as i32);
                b.add_offset(0, id);
                let t = b.end_table();
                b.finish(t)
            }
            Reply::List { objects } => {
                let mut b = Builder::new(128 * objects.len() + 64);
                let offs: Vec<Off> = objects.iter().map(|o| object_info(&mut b, o)).collect();
                let v = b.create_vec_offsets(&offs);
                b.start_table();
                b.add_offset(0, v);
                let t = b.end_table();
                b.finish(t)
            }
            Reply::Evict { num_bytes } => {
                let mut b = Builder::new(32);
                b.start_table();
                b.add_u64(0, *num_bytes);
                let t = b.end_table();
                b.finish(t)
            }
            Reply::DebugString { debug_string } => {
                let mut b = Builder::new(debug_string.len() + 32);
                let s = b.create_bytes(debug_string);
                b.start_table();
                b.add_offset(0, s);
                let t = b.end_table();
                b.finish(t)
            }
            Reply::RefreshLru => empty_table(),
        }
    }

    /// Encodes a complete frame (header + body).
    pub fn encode_frame(&self) -> Vec<u8> {
        frame(self.msg_type(), &self.encode())
    }
}

/// Encodes a `PlasmaNotification` flatbuffer (without the 8-byte length prefix).
pub fn encode_notification(infos: &[ObjectInfo]) -> Vec<u8> {
    let mut b = Builder::new(128 * infos.len() + 32);
    let offs: Vec<Off> = infos.iter().map(|o| object_info(&mut b, o)).collect();
    let v = b.create_vec_offsets(&offs);
    b.start_table();
    b.add_offset(0, v);
    let t = b.end_table();
    b.finish(t)
}

/// Encodes a notification with its 8-byte native-endian length prefix, ready
/// to be written to a subscriber's notification socket.
pub fn encode_notification_message(infos: &[ObjectInfo]) -> Vec<u8> {
    let body = encode_notification(infos);
    let mut v = Vec::with_capacity(body.len() + 8);
    v.extend_from_slice(&(body.len() as i64).to_ne_bytes());
    v.extend_from_slice(&body);
    v
}

// ---------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------

/// Bounds-checked view over a FlatBuffers buffer.
#[derive(Clone, Copy)]
struct Reader<'a> {
    buf: &'a [u8],
}

/// A located table: position of the table and of its vtable.
#[derive(Clone, Copy)]
struct Table<'a> {
    r: Reader<'a>,
    pos: usize,
    vt: usize,
    vt_len: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&self, pos: usize, len: usize) -> Result<&'a [u8]> {
        let end = pos.checked_add(len).ok_or(CodecError::OutOfBounds {
            pos,
            len,
            size: self.buf.len(),
        })?;
        self.buf.get(pos..end).ok_or(CodecError::OutOfBounds {
            pos,
            len,
            size: self.buf.len(),
        })
    }
    fn arr<const N: usize>(&self, pos: usize) -> Result<[u8; N]> {
        let s = self.bytes(pos, N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u16(&self, pos: usize) -> Result<u16> {
        Ok(u16::from_le_bytes(self.arr(pos)?))
    }
    fn u32(&self, pos: usize) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(pos)?))
    }
    fn i32(&self, pos: usize) -> Result<i32> {
        Ok(i32::from_le_bytes(self.arr(pos)?))
    }
    fn u64(&self, pos: usize) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(pos)?))
    }

    /// Follows a uoffset stored at `pos`.
    fn deref(&self, pos: usize) -> Result<usize> {
        let off = self.u32(pos)? as usize;
        let target = pos.checked_add(off).ok_or(CodecError::OutOfBounds {
            pos,
            len: off,
            size: self.buf.len(),
        })?;
        if target >= self.buf.len() {
            return Err(CodecError::OutOfBounds {
                pos: target,
                len: 0,
                size: self.buf.len(),
            });
        }
        Ok(target)
    }

    fn table(&self, pos: usize) -> Result<Table<'a>> {
        let soff = self.i32(pos)? as i64;
        let vt = pos as i64 - soff;
        if vt < 0 || vt as u64 >= self.buf.len() as u64 {
            return Err(CodecError::BadVtable(pos));
        }
        let vt = vt as usize;
        let vt_len = self.u16(vt)? as usize;
        if vt_len < 4 || !vt_len.is_multiple_of(2) {
            return Err(CodecError::BadVtable(vt));
        }
        self.bytes(vt, vt_len)?;
        let inline = self.u16(vt + 2)? as usize;
        self.bytes(pos, inline.max(4))?;
        Ok(Table {
            r: *self,
            pos,
            vt,
            vt_len,
        })
    }

    fn root(&self) -> Result<Table<'a>> {
        let p = self.deref(0)?;
        self.table(p)
    }
}

impl<'a> Table<'a> {
    /// Absolute position of field `slot`, or None if absent.
    fn field(&self, slot: usize) -> Result<Option<usize>> {
        let e = 4 + 2 * slot;
        if e + 2 > self.vt_len {
            return Ok(None);
        }
        let off = self.r.u16(self.vt + e)? as usize;
        if off == 0 {
            return Ok(None);
        }
        Ok(Some(self.pos + off))
    }

    fn i64(&self, slot: usize) -> Result<i64> {
        match self.field(slot)? {
            Some(p) => Ok(self.r.u64(p)? as i64),
            None => Ok(0),
        }
    }
    fn u64(&self, slot: usize) -> Result<u64> {
        match self.field(slot)? {
            Some(p) => self.r.u64(p),
            None => Ok(0),
        }
    }
    fn i32(&self, slot: usize) -> Result<i32> {
        match self.field(slot)? {
            Some(p) => self.r.i32(p),
            None => Ok(0),
        }
    }
    fn bool(&self, slot: usize) -> Result<bool> {
        match self.field(slot)? {
            Some(p) => Ok(self.r.bytes(p, 1)?[0] != 0),
            None => Ok(false),
        }
    }

    /// A string/byte-vector field; None if absent.
    fn bytes_opt(&self, slot: usize) -> Result<Option<&'a [u8]>> {
        match self.field(slot)? {
            Some(p) => {
                let s = self.r.deref(p)?;
                let len = self.r.u32(s)? as usize;
                Ok(Some(self.r.bytes(s + 4, len)?))
            }
            None => Ok(None),
        }
    }
    fn bytes_req(&self, slot: usize, name: &'static str) -> Result<&'a [u8]> {
        self.bytes_opt(slot)?.ok_or(CodecError::MissingField(name))
    }
    fn id(&self, slot: usize, name: &'static str) -> Result<ObjectId> {
        to_id(self.bytes_req(slot, name)?)
    }
    fn digest(&self, slot: usize, name: &'static str) -> Result<[u8; DIGEST_LEN]> {
        let d = self.bytes_req(slot, name)?;
        d.try_into().map_err(|_| CodecError::BadDigest(d.len()))
    }
    fn sub_table(&self, slot: usize) -> Result<Option<Table<'a>>> {
        match self.field(slot)? {
            Some(p) => {
                let t = self.r.deref(p)?;
                Ok(Some(self.r.table(t)?))
            }
            None => Ok(None),
        }
    }

    /// Vector header: (position of first element, count), validated for
    /// `elem_size` bytes per element.
    fn vector(&self, slot: usize, elem_size: usize) -> Result<Option<(usize, usize)>> {
        match self.field(slot)? {
            Some(p) => {
                let v = self.r.deref(p)?;
                let n = self.r.u32(v)? as usize;
                let total = n.checked_mul(elem_size).ok_or(CodecError::OutOfBounds {
                    pos: v,
                    len: usize::MAX,
                    size: self.r.buf.len(),
                })?;
                self.r.bytes(v + 4, total)?;
                Ok(Some((v + 4, n)))
            }
            None => Ok(None),
        }
    }

    fn vec_bytes(&self, slot: usize) -> Result<Option<Vec<&'a [u8]>>> {
        let Some((start, n)) = self.vector(slot, 4)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let s = self.r.deref(start + 4 * i)?;
            let len = self.r.u32(s)? as usize;
            out.push(self.r.bytes(s + 4, len)?);
        }
        Ok(Some(out))
    }
    fn vec_ids(&self, slot: usize, name: &'static str) -> Result<Vec<ObjectId>> {
        let v = self
            .vec_bytes(slot)?
            .ok_or(CodecError::MissingField(name))?;
        v.into_iter().map(to_id).collect()
    }
    fn vec_i32(&self, slot: usize) -> Result<Option<Vec<i32>>> {
        let Some((start, n)) = self.vector(slot, 4)? else {
            return Ok(None);
        };
        (0..n)
            .map(|i| self.r.i32(start + 4 * i))
            .collect::<Result<_>>()
            .map(Some)
    }
    fn vec_i64(&self, slot: usize) -> Result<Option<Vec<i64>>> {
        let Some((start, n)) = self.vector(slot, 8)? else {
            return Ok(None);
        };
        (0..n)
            .map(|i| self.r.u64(start + 8 * i).map(|x| x as i64))
            .collect::<Result<_>>()
            .map(Some)
    }
    fn vec_specs(&self, slot: usize) -> Result<Option<Vec<ObjectSpec>>> {
        let Some((start, n)) = self.vector(slot, ObjectSpec::SIZE)? else {
            return Ok(None);
        };
        (0..n)
            .map(|i| ObjectSpec::read(&self.r, start + ObjectSpec::SIZE * i))
            .collect::<Result<_>>()
            .map(Some)
    }
    fn vec_tables(&self, slot: usize) -> Result<Option<Vec<Table<'a>>>> {
        let Some((start, n)) = self.vector(slot, 4)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let t = self.r.deref(start + 4 * i)?;
            out.push(self.r.table(t)?);
        }
        Ok(Some(out))
    }
}

fn to_id(b: &[u8]) -> Result<ObjectId> {
    b.try_into().map_err(|_| CodecError::BadObjectId(b.len()))
}

fn error_field(t: &Table<'_>, slot: usize) -> Result<PlasmaError> {
    PlasmaError::from_i32(t.i32(slot)?).ok_or(CodecError::BadValue("error"))
}

fn read_info(t: &Table<'_>) -> Result<ObjectInfo> {
    Ok(ObjectInfo {
        object_id: t.id(0, "object_id")?,
        data_size: t.i64(1)?,
        metadata_size: t.i64(2)?,
        ref_count: t.i32(3)?,
        create_time: t.i64(4)?,
        construct_duration: t.i64(5)?,
        digest: t.bytes_opt(6)?.map(|d| d.to_vec()),
        is_deletion: t.bool(7)?,
    })
}

/// Decodes a client→store request body of frame type `msg_type`.
/// Never panics; any malformed input gives a [`CodecError`].
pub fn decode_request(msg_type: i64, body: &[u8]) -> Result<Request<'_>> {
    use MessageType as M;
    let ty = MessageType::from_i64(msg_type).ok_or(CodecError::UnknownType(msg_type))?;
    // Bodyless requests: the reference ignores their (empty-table) body.
    match ty {
        M::DisconnectClient => return Ok(Request::Disconnect),
        M::ConnectRequest => return Ok(Request::Connect),
        M::ListRequest => return Ok(Request::List),
        M::SubscribeRequest => return Ok(Request::Subscribe),
        M::GetDebugStringRequest => return Ok(Request::GetDebugString),
        _ => {}
    }
    let t = Reader { buf: body }.root()?;
    Ok(match ty {
        M::CreateRequest => {
            let device_num = t.i32(4)?;
            Request::Create {
                object_id: t.id(0, "object_id")?,
                evict_if_full: t.bool(1)?,
                data_size: t.u64(2)?,
                metadata_size: t.u64(3)?,
                device_num,
            }
        }
        M::CreateAndSealRequest => Request::CreateAndSeal {
            object_id: t.id(0, "object_id")?,
            evict_if_full: t.bool(1)?,
            data: t.bytes_req(2, "data")?,
            metadata: t.bytes_req(3, "metadata")?,
            digest: t.digest(4, "digest")?,
        },
        M::CreateAndSealBatchRequest => {
            let object_ids = t.vec_ids(0, "object_ids")?;
            let data = t.vec_bytes(2)?.ok_or(CodecError::MissingField("data"))?;
            let metadata = t
                .vec_bytes(3)?
                .ok_or(CodecError::MissingField("metadata"))?;
            let digests = t
                .vec_bytes(4)?
                .ok_or(CodecError::MissingField("digest"))?
                .into_iter()
                .map(|d| d.try_into().map_err(|_| CodecError::BadDigest(d.len())))
                .collect::<Result<Vec<_>>>()?;
            let n = object_ids.len();
            if data.len() != n || metadata.len() != n || digests.len() != n {
                return Err(CodecError::Inconsistent("batch vectors"));
            }
            Request::CreateAndSealBatch {
                object_ids,
                evict_if_full: t.bool(1)?,
                data,
                metadata,
                digests,
            }
        }
        M::AbortRequest => Request::Abort {
            object_id: t.id(0, "object_id")?,
        },
        M::SealRequest => Request::Seal {
            object_id: t.id(0, "object_id")?,
            digest: t.digest(1, "digest")?,
        },
        M::GetRequest => Request::Get {
            object_ids: t.vec_ids(0, "object_ids")?,
            timeout_ms: t.i64(1)?,
        },
        M::ReleaseRequest => Request::Release {
            object_id: t.id(0, "object_id")?,
        },
        M::DeleteRequest => {
            let count = t.i32(0)?;
            let object_ids = t.vec_ids(1, "object_ids")?;
            if count < 0 || count as usize != object_ids.len() {
                return Err(CodecError::Inconsistent("delete count"));
            }
            Request::Delete { object_ids }
        }
        M::ContainsRequest => Request::Contains {
            object_id: t.id(0, "object_id")?,
        },
        M::EvictRequest => Request::Evict {
            num_bytes: t.u64(0)?,
        },
        M::SetOptionsRequest => Request::SetOptions {
            client_name: t.bytes_opt(0)?.unwrap_or(b""),
            output_memory_quota: t.i64(1)?,
        },
        M::RefreshLruRequest => Request::RefreshLru {
            object_ids: t.vec_ids(0, "object_ids")?,
        },
        _ => return Err(CodecError::UnknownType(msg_type)),
    })
}

/// Decodes a store→client reply body of frame type `msg_type`.
/// Never panics; any malformed input gives a [`CodecError`].
pub fn decode_reply(msg_type: i64, body: &[u8]) -> Result<Reply> {
    use MessageType as M;
    let ty = MessageType::from_i64(msg_type).ok_or(CodecError::UnknownType(msg_type))?;
    let t = Reader { buf: body }.root()?;
    Ok(match ty {
        M::ConnectReply => Reply::Connect {
            memory_capacity: t.i64(0)?,
        },
        M::CreateReply => {
            let spec_pos = t
                .field(1)?
                .ok_or(CodecError::MissingField("plasma_object"))?;
            Reply::Create {
                object_id: t.id(0, "object_id")?,
                object: ObjectSpec::read(&t.r, spec_pos)?,
                error: error_field(&t, 2)?,
                store_fd: t.i32(3)?,
                mmap_size: t.i64(4)?,
            }
        }
        M::CreateAndSealReply => Reply::CreateAndSeal {
            error: error_field(&t, 0)?,
        },
        M::CreateAndSealBatchReply => Reply::CreateAndSealBatch {
            error: error_field(&t, 0)?,
        },
        M::AbortReply => Reply::Abort {
            object_id: t.id(0, "object_id")?,
        },
        M::SealReply => Reply::Seal {
            object_id: t.id(0, "object_id")?,
            error: error_field(&t, 1)?,
        },
        M::GetReply => {
            let object_ids = t.vec_ids(0, "object_ids")?;
            let objects = t
                .vec_specs(1)?
                .ok_or(CodecError::MissingField("plasma_objects"))?;
            let store_fds = t.vec_i32(2)?.ok_or(CodecError::MissingField("store_fds"))?;
            let mmap_sizes = t
                .vec_i64(3)?
                .ok_or(CodecError::MissingField("mmap_sizes"))?;
            if objects.len() != object_ids.len() || store_fds.len() != mmap_sizes.len() {
                return Err(CodecError::Inconsistent("get reply vectors"));
            }
            Reply::Get {
                object_ids,
                objects,
                store_fds,
                mmap_sizes,
            }
        }
        M::DeleteReply => {
            let count = t.i32(0)?;
            let object_ids = t.vec_ids(1, "object_ids")?;
            let errors = t
                .vec_i32(2)?
                .ok_or(CodecError::MissingField("errors"))?
                .into_iter()
                .map(|e| PlasmaError::from_i32(e).ok_or(CodecError::BadValue("errors")))
                .collect::<Result<Vec<_>>>()?;
            if count < 0 || count as usize != object_ids.len() || errors.len() != object_ids.len() {
                return Err(CodecError::Inconsistent("delete reply count"));
            }
            Reply::Delete { object_ids, errors }
        }
        M::ContainsReply => Reply::Contains {
            object_id: t.id(0, "object_id")?,
            has_object: t.i32(1)? != 0,
        },
        M::ListReply => {
            let tables = t
                .vec_tables(0)?
                .ok_or(CodecError::MissingField("objects"))?;
            Reply::List {
                objects: tables.iter().map(read_info).collect::<Result<_>>()?,
            }
        }
        M::EvictReply => Reply::Evict {
            num_bytes: t.u64(0)?,
        },
        M::SetOptionsReply => Reply::SetOptions {
            error: error_field(&t, 0)?,
        },
        M::GetDebugStringReply => Reply::DebugString {
            debug_string: t.bytes_req(0, "debug_string")?.to_vec(),
        },
        M::RefreshLruReply => Reply::RefreshLru,
        _ => return Err(CodecError::UnknownType(msg_type)),
    })
}

/// Decodes a `PlasmaNotification` flatbuffer (without the 8-byte prefix).
pub fn decode_notification(body: &[u8]) -> Result<Vec<ObjectInfo>> {
    let t = Reader { buf: body }.root()?;
    let tables = t
        .vec_tables(0)?
        .ok_or(CodecError::MissingField("object_info"))?;
    tables.iter().map(read_info).collect()
}

/// Unused helper kept for completeness of the schema: decodes a CudaHandle
/// sub-table's byte vector if present in a CreateReply body.
pub fn decode_create_reply_ipc_handle(body: &[u8]) -> Result<Option<Vec<u8>>> {
    let t = Reader { buf: body }.root()?;
    match t.sub_table(5)? {
        Some(h) => Ok(h.bytes_opt(0)?.map(|b| b.to_vec())),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    fn id(start: u8) -> ObjectId {
        let mut a = [0u8; 20];
        for (i, b) in a.iter_mut().enumerate() {
            *b = start.wrapping_add(i as u8);
        }
        a
    }

    #[test]
    fn connect_request_bytes() {
        let f = Request::Connect.encode_frame();
        assert_eq!(
            f,
            hex("00 00 00 00 00 00 00 00 13 00 00 00 00 00 00 00 0c 00 00 00 00 00 00 00 08 00 00 00 04 00 04 00 04 00 00 00")
        );
        let h = decode_header(f[..24].try_into().unwrap(), 1 << 20).unwrap();
        assert_eq!(h.msg_type, 19);
        assert_eq!(decode_request(19, &f[24..]).unwrap(), Request::Connect);
    }

    #[test]
    fn connect_reply_bytes() {
        let want = hex("0c 00 00 00 00 00 06 00 0c 00 04 00 06 00 00 00 00 e1 f5 05 00 00 00 00");
        let r = Reply::Connect {
            memory_capacity: 100_000_000,
        };
        assert_eq!(r.encode(), want);
        assert_eq!(decode_reply(20, &want).unwrap(), r);
    }

    fn create_request_body() -> Vec<u8> {
        let mut v = hex(
            "14 00 00 00 00 00 00 00 0c 00 20 00 08 00 07 00 0c 00 14 00 0c 00 00 00 00 00 00 01 18 00 00 00 \
             64 00 00 00 00 00 00 00 04 00 00 00 00 00 00 00 00 00 00 00 14 00 00 00",
        );
        v.extend_from_slice(&id(0));
        v.extend_from_slice(&[0, 0, 0, 0]);
        v
    }

    #[test]
    fn create_request_bytes() {
        let body = create_request_body();
        assert_eq!(body.len(), 80);
        let req = Request::Create {
            object_id: id(0),
            evict_if_full: true,
            data_size: 100,
            metadata_size: 4,
            device_num: 0,
        };
        assert_eq!(decode_request(1, &body).unwrap(), req);
        assert_eq!(req.encode(), body);
        assert_eq!(
            &req.encode_frame()[..24],
            &hex("00 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 50 00 00 00 00 00 00 00")[..]
        );
    }

    fn create_reply_body() -> Vec<u8> {
        let mut v = hex(
            "14 00 00 00 00 00 0e 00 48 00 10 00 14 00 00 00 0c 00 04 00 0e 00 00 00 \
             08 00 f6 05 00 00 00 00 04 00 00 00 38 00 00 00",
        );
        let spec = ObjectSpec {
            segment_index: 4,
            data_offset: 64,
            data_size: 100,
            metadata_offset: 164,
            metadata_size: 4,
            device_num: 0,
        };
        v.extend_from_slice(&spec.to_bytes());
        v.extend_from_slice(&[0, 0, 0, 0, 20, 0, 0, 0]);
        v.extend_from_slice(&id(0));
        v.extend_from_slice(&[0, 0, 0, 0]);
        v
    }

    #[test]
    fn create_reply_bytes() {
        let body = create_reply_body();
        assert_eq!(body.len(), 120);
        let r = Reply::Create {
            object_id: id(0),
            object: ObjectSpec {
                segment_index: 4,
                data_offset: 64,
                data_size: 100,
                metadata_offset: 164,
                metadata_size: 4,
                device_num: 0,
            },
            error: PlasmaError::Ok,
            store_fd: 4,
            mmap_size: 100_007_944,
        };
        assert_eq!(decode_reply(2, &body).unwrap(), r);
        assert_eq!(r.encode(), body);
    }

    #[test]
    fn notification_bytes() {
        let prefix = hex(
            "10 00 00 00 00 00 00 00 00 00 06 00 08 00 04 00 06 00 00 00 04 00 00 00 01 00 00 00 18 00 00 00 \
             00 00 12 00 20 00 04 00 0c 00 14 00 00 00 00 00 00 00 08 00 12 00 00 00 2c 00 00 00 18 00 00 00 07 00",
        );
        let info = ObjectInfo {
            object_id: id(0),
            data_size: 7,
            metadata_size: 3,
            digest: Some(vec![1, 2, 3, 4, 5, 6, 7, 8]),
            ..Default::default()
        };
        let body = encode_notification(std::slice::from_ref(&info));
        assert_eq!(body.len(), 128);
        assert_eq!(&body[..prefix.len()], &prefix[..]);
        assert_eq!(decode_notification(&body).unwrap(), vec![info.clone()]);
        let del = ObjectInfo {
            object_id: id(0),
            is_deletion: true,
            ..Default::default()
        };
        let body = encode_notification(std::slice::from_ref(&del));
        assert_eq!(body.len(), 88);
        assert_eq!(decode_notification(&body).unwrap(), vec![del]);
        let msg = encode_notification_message(&[info]);
        assert_eq!(&msg[..8], &128i64.to_ne_bytes());
    }

    #[test]
    fn header_errors() {
        let mut h = encode_header(1, 10);
        assert!(decode_header(&h, 100).is_ok());
        assert_eq!(
            decode_header(&h, 5),
            Err(CodecError::BadLength { len: 10, max: 5 })
        );
        h[0] = 1;
        assert_eq!(decode_header(&h, 100), Err(CodecError::BadVersion(1)));
        let h = encode_header(1, usize::MAX);
        assert!(matches!(
            decode_header(&h, u64::MAX),
            Err(CodecError::BadLength { .. })
        ));
    }

    #[test]
    fn lying_buffers() {
        let body = create_request_body();
        // root offset beyond the end
        let mut b = body.clone();
        b[0] = 0xff;
        assert!(decode_request(1, &b).is_err());
        // string length lies
        let mut b = body.clone();
        b[52] = 0xff;
        assert!(decode_request(1, &b).is_err());
        // vtable size lies
        let mut b = body.clone();
        b[8] = 0xfe;
        b[9] = 0xff;
        assert!(decode_request(1, &b).is_err());
        // truncated
        for n in 0..body.len() {
            let _ = decode_request(1, &body[..n]);
        }
        assert!(decode_request(1, &body[..60]).is_err());
        // wrong-length id
        let mut b = body.clone();
        b[52] = 19;
        assert_eq!(decode_request(1, &b), Err(CodecError::BadObjectId(19)));
        assert_eq!(decode_request(99, &body), Err(CodecError::UnknownType(99)));
        assert_eq!(decode_request(12, &body), Err(CodecError::UnknownType(12)));
    }

    fn all_requests() -> Vec<Request<'static>> {
        vec![
            Request::Connect,
            Request::Disconnect,
            Request::List,
            Request::Subscribe,
            Request::GetDebugString,
            Request::Create {
                object_id: id(3),
                evict_if_full: false,
                data_size: 1 << 40,
                metadata_size: 7,
                device_num: 2,
            },
            Request::CreateAndSeal {
                object_id: id(4),
                evict_if_full: true,
                data: b"hello world",
                metadata: b"",
                digest: [9; 8],
            },
            Request::CreateAndSealBatch {
                object_ids: vec![id(1), id(2)],
                evict_if_full: true,
                data: vec![b"a", b"bcd"],
                metadata: vec![b"", b"m"],
                digests: vec![[1; 8], [2; 8]],
            },
            Request::Abort { object_id: id(5) },
            Request::Seal {
                object_id: id(6),
                digest: [7; 8],
            },
            Request::Get {
                object_ids: vec![id(1), id(2), id(1)],
                timeout_ms: -1,
            },
            Request::Release { object_id: id(7) },
            Request::Delete {
                object_ids: vec![id(8), id(9)],
            },
            Request::Contains { object_id: id(10) },
            Request::Evict { num_bytes: 12345 },
            Request::SetOptions {
                client_name: b"client",
                output_memory_quota: 1000,
            },
            Request::RefreshLru {
                object_ids: vec![id(11)],
            },
        ]
    }

    fn all_replies() -> Vec<Reply> {
        vec![
            Reply::Connect { memory_capacity: 5 },
            Reply::CreateAndSeal {
                error: PlasmaError::OutOfMemory,
            },
            Reply::CreateAndSealBatch {
                error: PlasmaError::ObjectExists,
            },
            Reply::Abort { object_id: id(1) },
            Reply::Seal {
                object_id: id(2),
                error: PlasmaError::Ok,
            },
            Reply::Get {
                object_ids: vec![id(1), id(2)],
                objects: vec![
                    ObjectSpec {
                        segment_index: 3,
                        data_offset: 64,
                        data_size: 10,
                        metadata_offset: 74,
                        metadata_size: 1,
                        device_num: 0,
                    },
                    ObjectSpec::missing(),
                ],
                store_fds: vec![3],
                mmap_sizes: vec![4096 + 8],
            },
            Reply::Get {
                object_ids: vec![],
                objects: vec![],
                store_fds: vec![],
                mmap_sizes: vec![],
            },
            Reply::Delete {
                object_ids: vec![id(1), id(2)],
                errors: vec![PlasmaError::ObjectInUse, PlasmaError::Ok],
            },
            Reply::Contains {
                object_id: id(4),
                has_object: true,
            },
            Reply::List {
                objects: vec![
                    ObjectInfo {
                        object_id: id(1),
                        data_size: 1000,
                        metadata_size: 10,
                        ref_count: 1,
                        create_time: 1_795_466_927,
                        construct_duration: -1,
                        digest: Some(vec![]),
                        is_deletion: false,
                    },
                    ObjectInfo {
                        object_id: id(2),
                        digest: Some(vec![1; 8]),
                        ..Default::default()
                    },
                ],
            },
            Reply::Evict { num_bytes: 77 },
            Reply::SetOptions {
                error: PlasmaError::OutOfMemory,
            },
            Reply::DebugString {
                debug_string: b"allocated bytes: 0".to_vec(),
            },
            Reply::RefreshLru,
        ]
    }

    #[test]
    fn round_trip_all() {
        for r in all_requests() {
            let body = r.encode();
            assert_eq!(
                decode_request(r.msg_type() as i64, &body).unwrap(),
                r,
                "{r:?}"
            );
        }
        for r in all_replies() {
            let body = r.encode();
            assert_eq!(
                decode_reply(r.msg_type() as i64, &body).unwrap(),
                r,
                "{r:?}"
            );
        }
        // A create reply round trip too.
        let body = create_reply_body();
        let r = decode_reply(2, &body).unwrap();
        assert_eq!(decode_reply(2, &r.encode()).unwrap(), r);
    }

    #[test]
    fn every_truncation_and_bitflip_is_safe() {
        let mut bodies: Vec<(i64, Vec<u8>)> = all_requests()
            .iter()
            .map(|r| (r.msg_type() as i64, r.encode()))
            .collect();
        bodies.extend(
            all_replies()
                .iter()
                .map(|r| (r.msg_type() as i64, r.encode())),
        );
        for (ty, body) in bodies {
            for n in 0..body.len() {
                let _ = decode_request(ty, &body[..n]);
                let _ = decode_reply(ty, &body[..n]);
            }
            for i in 0..body.len() {
                for bit in [0x01u8, 0x80, 0xff] {
                    let mut b = body.clone();
                    b[i] ^= bit;
                    let _ = decode_request(ty, &b);
                    let _ = decode_reply(ty, &b);
                    let _ = decode_notification(&b);
                }
            }
        }
    }

    fn arb_id() -> impl Strategy<Value = ObjectId> {
        proptest::array::uniform20(any::<u8>())
    }

    fn arb_info() -> impl Strategy<Value = ObjectInfo> {
        (
            arb_id(),
            any::<i64>(),
            any::<i64>(),
            any::<i32>(),
            any::<i64>(),
            any::<i64>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..10)),
            any::<bool>(),
        )
            .prop_map(|(object_id, d, m, r, c, cd, digest, del)| ObjectInfo {
                object_id,
                data_size: d,
                metadata_size: m,
                ref_count: r,
                create_time: c,
                construct_duration: cd,
                digest,
                is_deletion: del,
            })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(ty in 0i64..40, body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_request(ty, &body);
            let _ = decode_reply(ty, &body);
            let _ = decode_notification(&body);
            let _ = decode_create_reply_ipc_handle(&body);
        }

        #[test]
        fn arbitrary_header_never_panics(h in proptest::array::uniform24(any::<u8>()), max in any::<u64>()) {
            let _ = decode_header(&h, max);
        }

        #[test]
        fn mutated_valid_bodies_never_panic(idx in 0usize..31, pos in any::<usize>(), val in any::<u8>(), cut in any::<usize>()) {
            let reqs = all_requests();
            let reps = all_replies();
            let (ty, mut body) = if idx < reqs.len() {
                (reqs[idx].msg_type() as i64, reqs[idx].encode())
            } else {
                let r = &reps[(idx - reqs.len()) % reps.len()];
                (r.msg_type() as i64, r.encode())
            };
            if !body.is_empty() {
                let p = pos % body.len();
                body[p] = val;
                body.truncate(cut % (body.len() + 1));
            }
            let _ = decode_request(ty, &body);
            let _ = decode_reply(ty, &body);
            let _ = decode_notification(&body);
        }

        #[test]
        fn get_round_trip(ids in proptest::collection::vec(arb_id(), 0..20), timeout in any::<i64>()) {
            let r = Request::Get { object_ids: ids, timeout_ms: timeout };
            let body = r.encode();
            prop_assert_eq!(decode_request(9, &body).unwrap(), r);
        }

        #[test]
        fn create_and_seal_round_trip(id in arb_id(), data in proptest::collection::vec(any::<u8>(), 0..300),
                                      meta in proptest::collection::vec(any::<u8>(), 0..30), dg in any::<[u8; 8]>(), e in any::<bool>()) {
            let r = Request::CreateAndSeal { object_id: id, evict_if_full: e, data: &data, metadata: &meta, digest: dg };
            let body = r.encode();
            prop_assert_eq!(decode_request(3, &body).unwrap(), r);
        }

        #[test]
        fn create_round_trip(id in arb_id(), e in any::<bool>(), d in any::<u64>(), m in any::<u64>(), dev in any::<i32>()) {
            let r = Request::Create { object_id: id, evict_if_full: e, data_size: d, metadata_size: m, device_num: dev };
            let body = r.encode();
            prop_assert_eq!(decode_request(1, &body).unwrap(), r);
        }

        #[test]
        fn notification_round_trip(infos in proptest::collection::vec(arb_info(), 0..8)) {
            let body = encode_notification(&infos);
            prop_assert_eq!(decode_notification(&body).unwrap(), infos.clone());
            let r = Reply::List { objects: infos };
            prop_assert_eq!(decode_reply(18, &r.encode()).unwrap(), r);
        }

        #[test]
        fn get_reply_round_trip(n in 0usize..10, seg in any::<i32>(), off in any::<u64>(), sz in any::<u64>()) {
            let ids: Vec<ObjectId> = (0..n).map(|i| id(i as u8)).collect();
            let objects = (0..n).map(|i| ObjectSpec { segment_index: seg, data_offset: off, data_size: sz.wrapping_add(i as u64), metadata_offset: 1, metadata_size: 2, device_num: 0 }).collect();
            let r = Reply::Get { object_ids: ids, objects, store_fds: vec![seg; n.min(3)], mmap_sizes: vec![off as i64; n.min(3)] };
            prop_assert_eq!(decode_reply(10, &r.encode()).unwrap(), r);
        }

        #[test]
        fn create_reply_round_trip(id in arb_id(), seg in any::<i32>(), off in any::<u64>(), err in 0i32..6, ms in any::<i64>()) {
            let r = Reply::Create { object_id: id, object: ObjectSpec { segment_index: seg, data_offset: off, data_size: 5, metadata_offset: off.wrapping_add(5), metadata_size: 0, device_num: 0 },
                error: PlasmaError::from_i32(err).unwrap(), store_fd: seg, mmap_size: ms };
            prop_assert_eq!(decode_reply(2, &r.encode()).unwrap(), r);
        }
    }
}
