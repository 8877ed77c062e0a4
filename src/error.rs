//! Typed errors and the stable status codes they map to.
//!
//! Every error that crosses a process boundary (the native protocol, the C ABI) is reduced to a
//! [`Code`] plus a human-readable message. Codes are part of the wire and ABI contract: values are
//! never renumbered, only appended.

use std::io;

/// Stable status codes shared by the native protocol and the C ABI.
///
/// The numeric values are a public contract (they appear on the wire and in `cidcache.h`).
#[repr(u16)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// Success.
    Ok = 0,
    /// No object with that key is stored. (A wait that ends without the object is reported by
    /// the client libraries as [`Code::Timeout`]: the Rust client returns `Ok(None)` from its
    /// waiting gets, the C ABI `CIDCACHE_TIMEOUT`.)
    NotFound = 1,
    /// An object with that key already exists (sealed or being created).
    AlreadyExists = 2,
    /// The shared-memory tier cannot hold the object, even after evicting everything evictable.
    StoreFull = 3,
    /// The index has no free slot and nothing could be evicted.
    IndexFull = 4,
    /// A wait expired.
    Timeout = 5,
    /// A key is empty, longer than 63 bytes, or not a valid CID where one is required.
    InvalidKey = 6,
    /// An argument is out of range or inconsistent.
    InvalidArgument = 7,
    /// A peer sent a malformed, truncated, oversized or unknown frame.
    Protocol = 8,
    /// The connection to the coordinator is gone (it stopped or restarted): reconnect.
    Disconnected = 9,
    /// This client holds as many pinned objects as its lease page allows.
    PinsExhausted = 10,
    /// The object exists but is not sealed yet.
    NotSealed = 11,
    /// The operation is not allowed for this client (for example a read-only client creating).
    PermissionDenied = 12,
    /// An operating-system call failed.
    Io = 13,
    /// A shared-memory segment has an unknown magic or layout version.
    Incompatible = 14,
    /// Sealed bytes do not hash to the CID they were stored under.
    CidMismatch = 15,
    /// Another coordinator already serves this store.
    AlreadyRunning = 16,
    /// Arrow IPC encoding or decoding failed.
    Arrow = 17,
    /// An invariant broke inside cidcache; please report it.
    Internal = 18,
    /// A file of a lower tier (Parquet or Arrow IPC) is truncated or corrupt. The file was moved
    /// to the tier's `quarantine/` directory; the rest of the store keeps serving.
    Corrupt = 19,
    /// The coordinator is at a configured limit (connections, or file descriptors) and refused
    /// the connection; retry later, or raise the limit (`--max-clients`).
    Busy = 20,
    /// No coordinator serves this store: its socket does not exist or refuses connections
    /// (start `cidcached`, or check the store name / socket path). Distinct from
    /// [`Code::Disconnected`], a connection that was up and is gone.
    NotRunning = 21,
    /// The object exists but was not stored as Arrow (read its bytes with a plain get).
    NotArrow = 22,
}

impl Code {
    /// Decodes a wire value; unknown values map to [`Code::Internal`] so that newer peers never
    /// make an older one fail to parse a reply.
    pub fn from_u16(v: u16) -> Code {
        use Code::*;
        match v {
            0 => Ok,
            1 => NotFound,
            2 => AlreadyExists,
            3 => StoreFull,
            4 => IndexFull,
            5 => Timeout,
            6 => InvalidKey,
            7 => InvalidArgument,
            8 => Protocol,
            9 => Disconnected,
            10 => PinsExhausted,
            11 => NotSealed,
            12 => PermissionDenied,
            13 => Io,
            14 => Incompatible,
            15 => CidMismatch,
            16 => AlreadyRunning,
            17 => Arrow,
            18 => Internal,
            19 => Corrupt,
            20 => Busy,
            21 => NotRunning,
            22 => NotArrow,
            _ => Internal,
        }
    }
}

/// The error type of every fallible cidcache operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// See [`Code::NotFound`].
    #[error("not found: {0}")]
    NotFound(String),
    /// See [`Code::AlreadyExists`].
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// See [`Code::StoreFull`].
    #[error("store full: {0}")]
    StoreFull(String),
    /// See [`Code::IndexFull`].
    #[error("index full: {0}")]
    IndexFull(String),
    /// See [`Code::Timeout`].
    #[error("timed out: {0}")]
    Timeout(String),
    /// See [`Code::InvalidKey`].
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// See [`Code::InvalidArgument`].
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// See [`Code::Protocol`].
    #[error("protocol error: {0}")]
    Protocol(String),
    /// See [`Code::Disconnected`].
    #[error("disconnected: {0}")]
    Disconnected(String),
    /// See [`Code::PinsExhausted`].
    #[error("pins exhausted: {0}")]
    PinsExhausted(String),
    /// See [`Code::NotSealed`].
    #[error("not sealed: {0}")]
    NotSealed(String),
    /// See [`Code::PermissionDenied`].
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// See [`Code::Io`].
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The operating-system error.
        #[source]
        source: io::Error,
    },
    /// See [`Code::Incompatible`].
    #[error("incompatible shared memory: {0}")]
    Incompatible(String),
    /// See [`Code::CidMismatch`].
    #[error("CID mismatch: {0}")]
    CidMismatch(String),
    /// See [`Code::AlreadyRunning`].
    #[error("{0}")]
    AlreadyRunning(String),
    /// See [`Code::Arrow`].
    #[error("arrow: {0}")]
    Arrow(String),
    /// See [`Code::Internal`].
    #[error("internal error: {0}")]
    Internal(String),
    /// See [`Code::Corrupt`].
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// See [`Code::Busy`].
    #[error("busy: {0}")]
    Busy(String),
    /// See [`Code::NotRunning`].
    #[error("not running: {0}")]
    NotRunning(String),
    /// See [`Code::NotArrow`].
    #[error("not an Arrow object: {0}")]
    NotArrow(String),
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The stable code of this error.
    pub fn code(&self) -> Code {
        match self {
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::StoreFull(_) => Code::StoreFull,
            Error::IndexFull(_) => Code::IndexFull,
            Error::Timeout(_) => Code::Timeout,
            Error::InvalidKey(_) => Code::InvalidKey,
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::Protocol(_) => Code::Protocol,
            Error::Disconnected(_) => Code::Disconnected,
            Error::PinsExhausted(_) => Code::PinsExhausted,
            Error::NotSealed(_) => Code::NotSealed,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Io { .. } => Code::Io,
            Error::Incompatible(_) => Code::Incompatible,
            Error::CidMismatch(_) => Code::CidMismatch,
            Error::AlreadyRunning(_) => Code::AlreadyRunning,
            Error::Arrow(_) => Code::Arrow,
            Error::Corrupt(_) => Code::Corrupt,
            Error::Busy(_) => Code::Busy,
            Error::NotRunning(_) => Code::NotRunning,
            Error::NotArrow(_) => Code::NotArrow,
            Error::Internal(_) => Code::Internal,
        }
    }

    /// Rebuilds an error from a code and message received from a peer.
    pub fn from_code(code: Code, msg: String) -> Error {
        match code {
            Code::Ok | Code::Internal => Error::Internal(msg),
            Code::NotFound => Error::NotFound(msg),
            Code::AlreadyExists => Error::AlreadyExists(msg),
            Code::StoreFull => Error::StoreFull(msg),
            Code::IndexFull => Error::IndexFull(msg),
            Code::Timeout => Error::Timeout(msg),
            Code::InvalidKey => Error::InvalidKey(msg),
            Code::InvalidArgument => Error::InvalidArgument(msg),
            Code::Protocol => Error::Protocol(msg),
            Code::Disconnected => Error::Disconnected(msg),
            Code::PinsExhausted => Error::PinsExhausted(msg),
            Code::NotSealed => Error::NotSealed(msg),
            Code::PermissionDenied => Error::PermissionDenied(msg),
            Code::Io => Error::Io {
                context: msg,
                source: io::Error::other("reported by the coordinator"),
            },
            Code::Incompatible => Error::Incompatible(msg),
            Code::CidMismatch => Error::CidMismatch(msg),
            Code::AlreadyRunning => Error::AlreadyRunning(msg),
            Code::Arrow => Error::Arrow(msg),
            Code::Corrupt => Error::Corrupt(msg),
            Code::Busy => Error::Busy(msg),
            Code::NotRunning => Error::NotRunning(msg),
            Code::NotArrow => Error::NotArrow(msg),
        }
    }

    /// The message without the category prefix (what goes on the wire next to the code).
    pub fn message(&self) -> String {
        match self {
            Error::Io { context, source } => format!("{context}: {source}"),
            Error::NotFound(m)
            | Error::AlreadyExists(m)
            | Error::StoreFull(m)
            | Error::IndexFull(m)
            | Error::Timeout(m)
            | Error::InvalidKey(m)
            | Error::InvalidArgument(m)
            | Error::Protocol(m)
            | Error::Disconnected(m)
            | Error::PinsExhausted(m)
            | Error::NotSealed(m)
            | Error::PermissionDenied(m)
            | Error::Incompatible(m)
            | Error::CidMismatch(m)
            | Error::AlreadyRunning(m)
            | Error::Arrow(m)
            | Error::Corrupt(m)
            | Error::Busy(m)
            | Error::NotRunning(m)
            | Error::NotArrow(m)
            | Error::Internal(m) => m.clone(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: impl Into<io::Error>) -> Error {
        Error::Io {
            context: context.into(),
            source: source.into(),
        }
    }
}

impl From<arrow_schema::ArrowError> for Error {
    fn from(e: arrow_schema::ArrowError) -> Self {
        Error::Arrow(e.to_string())
    }
}
