//! Where a store lives (socket, shared memory, data) and the coordinator's limits, with the
//! embedded defaults of DESIGN.md.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

pub use crate::tier::ipfs::IpfsConfig;
pub use crate::tier::warm::WarmCompression;

/// Default store name.
pub const DEFAULT_STORE: &str = "default";

/// Checks a store name: it becomes part of file names, so only `[A-Za-z0-9_-]`, 1..=64 chars.
pub fn validate_store_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(Error::InvalidArgument(format!(
            "store name {name:?} must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'"
        )));
    }
    Ok(())
}

fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// Directory holding sockets and lock files: `$XDG_RUNTIME_DIR/cidcache`, else
/// `/tmp/cidcache-$UID`.
pub fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => Path::new(&d).join("cidcache"),
        _ => PathBuf::from(format!("/tmp/cidcache-{}", uid())),
    }
}

/// The store to use when none is named: `$CIDCACHE_STORE` when it is set and not empty (as
/// `cidcached` and `cidcache` read it), else [`DEFAULT_STORE`].
pub fn store_from_env() -> String {
    match std::env::var("CIDCACHE_STORE") {
        Ok(s) if !s.is_empty() => s,
        _ => DEFAULT_STORE.to_string(),
    }
}

/// Default socket path of `store`.
pub fn default_socket(store: &str) -> PathBuf {
    runtime_dir().join(format!("{store}.sock"))
}

/// Default warm-tier directory of `store`: `$XDG_DATA_HOME/cidcache/STORE`, else
/// `~/.local/share/cidcache/STORE`.
pub fn default_data_dir(store: &str) -> PathBuf {
    let base = match std::env::var_os("XDG_DATA_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
            Path::new(&home).join(".local/share")
        }
    };
    base.join("cidcache").join(store)
}

/// Default shared-memory directory.
pub fn default_shm_dir() -> PathBuf {
    PathBuf::from("/dev/shm")
}

/// When a put is acknowledged (`--durability`; a put can also ask for `Sync` alone with
/// [`crate::PutOptions::durable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Once it is in shared memory. A coordinator crash keeps it (the next one adopts the hot
    /// tier); a reboot loses what was never evicted to the warm tier. The default.
    #[default]
    Memory,
    /// Once it is in shared memory and queued for the warm tier, which writes it within a few
    /// milliseconds; a put is refused while the warm tier cannot write.
    DemoteAsync,
    /// Once it is in a synced warm-tier file (puts arriving together share one file and one
    /// `fsync`); it becomes visible to readers at the same moment. A write that fails is the
    /// put's error.
    Sync,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "memory" => Ok(Durability::Memory),
            "demote-async" => Ok(Durability::DemoteAsync),
            "sync" => Ok(Durability::Sync),
            _ => Err(format!("{s:?}: durability is memory, demote-async or sync")),
        }
    }
}

/// Coordinator settings. Every field has a sensible default ([`Config::for_store`]).
#[derive(Debug, Clone)]
pub struct Config {
    /// Store name.
    pub store: String,
    /// Unix socket the coordinator listens on.
    pub socket: PathBuf,
    /// Directory for shared-memory segments (a tmpfs).
    pub shm_dir: PathBuf,
    /// Warm-tier directory.
    pub data_dir: PathBuf,
    /// Hot-tier memory limit in bytes; `None` = a quarter of the free space in `shm_dir`.
    pub memory_limit: Option<u64>,
    /// Index slots (rounded up to a power of two).
    pub index_capacity: u64,
    /// Size of one data arena segment; objects above half of it get a segment of their own.
    pub arena_size: u64,
    /// Pins per client lease page.
    pub pins_per_client: usize,
    /// Entries in each client's hit ring.
    pub hit_ring: usize,
    /// Puts up to this size travel inline in the request.
    pub inline_max: u32,
    /// Eviction policy name.
    pub policy: String,
    /// File mode of sockets and segments (0o600; 0o660 for a group store).
    pub mode: u32,
    /// Whether objects evicted from shared memory are demoted to the Parquet warm tier in
    /// `data_dir/warm` (ephemeral objects never are).
    pub warm: bool,
    /// Warm-tier capacity in bytes of files; `None` = a quarter of the free space of the
    /// filesystem holding `data_dir`, checked at start.
    pub warm_capacity: Option<u64>,
    /// Compression of warm-tier files.
    pub warm_compression: WarmCompression,
    /// On a clean shutdown, demote every hot object to the warm tier so that it survives the
    /// restart.
    pub persist_on_exit: bool,
    /// Partitioning of the warm tier's data files (by the catalog's view of each object).
    pub warm_partition: crate::tier::catalog::PartitionStrategy,
    /// Partitioning of the catalog's files (`data_dir/catalog`), kept with the warm tier.
    pub catalog_partition: crate::tier::catalog::PartitionStrategy,
    /// Encoding preset of the catalog's files.
    pub catalog_preset: crate::tier::catalog::Preset,
    /// Serve Prometheus metrics over HTTP on this address (`GET /metrics`); `None` = off.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Take over the hot tier a coordinator of the same store left in shared memory when it
    /// died (`--no-adopt`: remove it and start empty).
    pub adopt: bool,
    /// When puts are acknowledged.
    pub durability: Durability,
    /// IPFS below the other tiers (read-through of CID keys, write-back of puts that ask);
    /// off unless an API or gateway URL is set.
    pub ipfs: IpfsConfig,
    /// Connections served at once on each socket (native, Plasma); more are refused with a
    /// `Busy` error. Native clients are also bounded by the lease pages the memory limit
    /// allows (see `docs/operations.md`).
    pub max_clients: usize,
    /// The cold tier on object storage below the warm tier (`--cold URL`), if any.
    pub cold: Option<crate::tier::cold::ColdConfig>,
    /// The Arrow Flight service (`--flight-addr`), if any.
    pub flight: Option<crate::flight::FlightConfig>,
    /// Largest frame body accepted (native frames are further bounded by
    /// [`crate::proto::MAX_BODY`]); larger frames close their connection.
    pub max_frame: u64,
    /// Bytes of frame bodies being received at once, across all connections (at least
    /// `max_frame`).
    pub frame_memory: u64,
}

impl Config {
    /// Defaults for `store`.
    pub fn for_store(store: &str) -> Config {
        Config {
            store: store.to_string(),
            socket: default_socket(store),
            shm_dir: default_shm_dir(),
            data_dir: default_data_dir(store),
            memory_limit: None,
            index_capacity: 1 << 18,
            arena_size: 256 << 20,
            pins_per_client: 4096,
            hit_ring: 1024,
            inline_max: 64 << 10,
            policy: "s3fifo".into(),
            mode: 0o600,
            warm: true,
            warm_capacity: None,
            warm_compression: WarmCompression::Zstd,
            persist_on_exit: true,
            warm_partition: crate::tier::catalog::PartitionStrategy::None,
            catalog_partition: crate::tier::catalog::PartitionStrategy::None,
            catalog_preset: crate::tier::catalog::Preset::Balanced,
            metrics_addr: None,
            adopt: true,
            durability: Durability::Memory,
            ipfs: IpfsConfig::default(),
            max_clients: 1024,
            cold: None,
            flight: None,
            max_frame: crate::proto::MAX_BODY as u64,
            frame_memory: 256 << 20,
        }
    }
}
