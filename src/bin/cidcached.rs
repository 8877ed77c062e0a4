//! `cidcached`: the coordinator daemon.
//!
//! `cidcached [FLAGS]` serves a store over the native protocol; `cidcached [FLAGS] plasma -s
//! SOCKET -m BYTES [-d DIR] [-h] [-e NAME://ENDPOINT]` also serves the Apache Arrow 11 Plasma
//! protocol for the same store (see `docs/plasma.md`).

use cidcache::config::{Config, DEFAULT_STORE};
use cidcache::coordinator::Coordinator;
use cidcache::plasma::server::{external_store_from_endpoint, PlasmaStore};
use cidcache::plasma::service::{self, PlasmaArgs};
use cidcache::shm::{human_bytes, parse_bytes};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Serves a cidcache store: shared-memory hot tier, lock-free index, native protocol.
#[derive(Parser, Debug)]
#[command(name = "cidcached", version, about)]
struct Args {
    /// Store name (selects the socket, segment and data paths) [default: default; in plasma
    /// mode a name derived from the Plasma socket path].
    #[arg(long, env = "CIDCACHE_STORE")]
    store: Option<String>,
    /// Hot-tier memory limit (e.g. 512M, 4G); default: a quarter of the free space in the
    /// shared-memory directory.
    #[arg(long, short = 'm', value_parser = parse_memory)]
    memory: Option<u64>,
    /// Index capacity in objects (rounded up to a power of two).
    #[arg(long, default_value_t = 1 << 18)]
    index_capacity: u64,
    /// Size of one data arena; objects above half of it get a segment of their own.
    #[arg(long, value_parser = parse_bytes, default_value = "256M")]
    arena_size: u64,
    /// Unix socket path (default: $XDG_RUNTIME_DIR/cidcache/STORE.sock or /tmp/cidcache-UID/).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Directory for shared-memory segments.
    #[arg(long, default_value = "/dev/shm")]
    shm_dir: PathBuf,
    /// Warm-tier data directory (default: $XDG_DATA_HOME/cidcache/STORE).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Pins each client may hold at once.
    #[arg(long, default_value_t = 4096)]
    pins_per_client: usize,
    /// Eviction policy: s3fifo, clock, lru, arc or wtinylfu.
    #[arg(long, default_value = "s3fifo")]
    policy: String,
    /// Let members of the daemon's group connect: sockets and segments mode 0660 instead of
    /// 0600 (whatever the umask), directories the daemon creates 0710, and peers whose primary
    /// or supplementary groups include the daemon's group admitted.
    #[arg(long)]
    group: bool,
    /// Connections served at once on each socket; more are refused with a `Busy` error.
    /// Native clients are also bounded by their lease pages, which may use an eighth of
    /// --memory.
    #[arg(long, default_value_t = 1024)]
    max_clients: usize,
    /// Largest frame body accepted (native frames at most 64M; Plasma CreateAndSeal bodies,
    /// which carry object bytes; other Plasma messages at most 8M).
    #[arg(long, value_parser = parse_bytes, default_value = "64M")]
    max_frame: u64,
    /// Bytes of frame bodies being received at once, across all connections (raised to
    /// --max-frame if lower).
    #[arg(long, value_parser = parse_bytes, default_value = "256M")]
    frame_memory: u64,
    /// Drop evicted objects instead of demoting them to the Parquet warm tier.
    #[arg(long)]
    no_warm: bool,
    /// Warm-tier capacity (bytes of Parquet files, e.g. 20G); default: a quarter of the free
    /// space of the data directory's filesystem.
    #[arg(long, value_parser = parse_bytes)]
    warm_capacity: Option<u64>,
    /// Compression of warm-tier files: zstd, lz4 or none.
    #[arg(long, default_value = "zstd")]
    warm_compression: cidcache::config::WarmCompression,
    /// On SIGTERM/SIGINT, drop the hot tier instead of demoting it to the warm tier.
    #[arg(long)]
    no_persist_on_exit: bool,
    /// Partitioning of the warm tier's files: none, time (day), size (log2 class), type
    /// (top-level MIME type), hash or hash:N (of the key).
    #[arg(long, default_value = "none")]
    warm_partition: cidcache::tier::catalog::PartitionStrategy,
    /// Partitioning of the catalog's files: none, time, size, type, hash or hash:N.
    #[arg(long, default_value = "none")]
    catalog_partition: cidcache::tier::catalog::PartitionStrategy,
    /// Encoding preset of the catalog's files: fast, balanced or small.
    #[arg(long, default_value = "balanced")]
    catalog_preset: cidcache::tier::catalog::Preset,
    /// Serve Prometheus metrics on http://HOST:PORT/metrics (off by default).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_socket_addr)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// When a put is acknowledged: memory (in shared memory; the default), demote-async (also
    /// queued for the warm tier) or sync (only once in a synced warm-tier file).
    #[arg(long, default_value = "memory")]
    durability: cidcache::config::Durability,
    /// Start empty instead of adopting the hot tier (segments and index) that a coordinator of
    /// the same store left in shared memory when it died; what it left is removed.
    #[arg(long)]
    no_adopt: bool,
    #[command(flatten)]
    ipfs: IpfsArgs,
    /// Cold tier on object storage: s3://BUCKET/PREFIX (credentials, region and endpoint from
    /// the AWS_* environment and --cold-option), gs://, az:// or file:///DIR. See docs/cold.md.
    #[arg(long, value_name = "URL")]
    cold: Option<String>,
    /// A cold-tier store option KEY=VALUE (repeatable), e.g. endpoint=http://127.0.0.1:9000,
    /// allow_http=true, region=us-east-1, access_key_id=..., virtual_hosted_style_request=false.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    cold_option: Vec<(String, String)>,
    /// Warm files older than this many seconds move to the cold tier (0: age never moves one).
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    cold_after: u64,
    /// Warm files at least this large move to the cold tier as soon as they are written.
    #[arg(long, value_parser = parse_bytes, value_name = "BYTES")]
    cold_min_size: Option<u64>,
    /// When warm files fill more than this percentage of --warm-capacity, the oldest move to
    /// the cold tier until they fit under it.
    #[arg(long, default_value_t = 80, value_name = "PERCENT")]
    cold_high_water: u8,
    /// Cold-tier transfers in flight at once.
    #[arg(long, default_value_t = 8)]
    cold_concurrency: usize,
    /// Retries (with exponential backoff) of a failed cold-tier transfer before it fails.
    #[arg(long, default_value_t = 4)]
    cold_retries: u32,
    /// How often (seconds) the bucket is listed again, to learn what other daemons moved there.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    cold_relist: u64,
    /// Serve Arrow Flight on HOST:PORT (gRPC). Beyond loopback it needs --flight-tls-cert,
    /// --flight-tls-key and --flight-token-file. See docs/operations.md.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_socket_addr)]
    flight_addr: Option<std::net::SocketAddr>,
    /// A file holding the bearer token every Flight call must carry.
    #[arg(long, value_name = "PATH")]
    flight_token_file: Option<PathBuf>,
    /// PEM certificate chain for Flight over TLS.
    #[arg(long, value_name = "PATH", requires = "flight_tls_key")]
    flight_tls_cert: Option<PathBuf>,
    /// PEM private key for Flight over TLS.
    #[arg(long, value_name = "PATH", requires = "flight_tls_cert")]
    flight_tls_key: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

/// IPFS as the tier below the others (docs/operations.md, "IPFS").
#[derive(clap::Args, Debug)]
struct IpfsArgs {
    /// Read misses on CID keys through from this kubo RPC API (e.g. http://127.0.0.1:5001), and
    /// add to it the puts that ask (`cidcache put --ipfs`).
    #[arg(long, value_name = "URL")]
    ipfs_api: Option<String>,
    /// Read misses on CID keys through from this trustless gateway (e.g.
    /// http://127.0.0.1:8080); tried after --ipfs-api when both are given.
    #[arg(long, value_name = "URL")]
    ipfs_gateway: Option<String>,
    /// A source that sends nothing for this long fails the fetch (e.g. 500ms, 30s).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    ipfs_timeout: Duration,
    /// A whole fetch (every block of a file) takes at most this long.
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    ipfs_deadline: Duration,
    /// Largest block accepted from IPFS.
    #[arg(long, value_parser = parse_bytes, default_value = "2M")]
    ipfs_max_block: u64,
    /// Largest object fetched from IPFS (default and upper bound: the hot tier's size).
    #[arg(long, value_parser = parse_bytes)]
    ipfs_max_file: Option<u64>,
    /// Fetches from IPFS under way at once.
    #[arg(long, default_value_t = 16)]
    ipfs_concurrency: usize,
    /// Levels of children prefetched below a fetched directory (dag-pb node that is not a
    /// file); 0 turns prefetch off.
    #[arg(long, default_value_t = 1)]
    ipfs_prefetch_depth: u32,
    /// Bytes prefetched below one fetched node at most (by the links' declared sizes).
    #[arg(long, value_parser = parse_bytes, default_value = "64M")]
    ipfs_prefetch_bytes: u64,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Also serve the Apache Arrow 11 Plasma protocol: `plasma -s SOCKET -m BYTES [-d DIR] [-h]
    /// [-e NAME://ENDPOINT] [--native-socket PATH]` (plasma-store-server's flags, gflags style).
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Plasma {
        /// The plasma-store-server command line.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// Internal: removes a plasma-mode store's files after its daemon dies (even by SIGKILL).
    #[command(name = "__reap", hide = true)]
    Reap {
        #[arg(long)]
        shm_dir: PathBuf,
        #[arg(long)]
        store: String,
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        lock: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CIDCACHE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: logs redirected to a file or journal stay plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut a = Args::parse();
    if !matches!(a.cmd, Some(Cmd::Reap { .. })) {
        // Every connection costs a descriptor.
        let (old, new) = cidcache::limits::raise_nofile_limit();
        if old != new {
            tracing::debug!("raised the open-file limit from {old:?} to {new:?}");
        }
    }
    match a.cmd.take() {
        Some(Cmd::Reap {
            shm_dir,
            store,
            socket,
            lock,
        }) => reap(&shm_dir, &store, &socket, &lock),
        Some(Cmd::Plasma { args }) => match service::parse_args(&args) {
            Ok(p) => run_plasma(a, p),
            Err(exit) => {
                if let Some(s) = exit.stdout {
                    println!("{s}");
                }
                if let Some(s) = exit.stderr {
                    eprintln!("{s}");
                }
                ExitCode::from(exit.code)
            }
        },
        None => run_native(a),
    }
}

fn config(a: &Args, store: &str) -> Config {
    let mut cfg = Config::for_store(store);
    if let Some(s) = &a.socket {
        cfg.socket = s.clone();
    }
    if let Some(d) = &a.data_dir {
        cfg.data_dir = d.clone();
    }
    cfg.shm_dir = a.shm_dir.clone();
    cfg.memory_limit = a.memory;
    cfg.index_capacity = a.index_capacity;
    cfg.arena_size = a.arena_size;
    cfg.pins_per_client = a.pins_per_client.max(1);
    cfg.policy = a.policy.clone();
    if a.group {
        cfg.mode = 0o660;
    }
    cfg.warm = !a.no_warm;
    cfg.warm_capacity = a.warm_capacity;
    cfg.warm_compression = a.warm_compression;
    cfg.persist_on_exit = !a.no_persist_on_exit;
    cfg.warm_partition = a.warm_partition;
    cfg.catalog_partition = a.catalog_partition;
    cfg.catalog_preset = a.catalog_preset;
    cfg.metrics_addr = a.metrics_addr;
    cfg.adopt = !a.no_adopt;
    cfg.durability = a.durability;
    cfg.ipfs = cidcache::config::IpfsConfig {
        api: a.ipfs.ipfs_api.clone(),
        gateway: a.ipfs.ipfs_gateway.clone(),
        timeout: a.ipfs.ipfs_timeout,
        deadline: a.ipfs.ipfs_deadline,
        max_block: a.ipfs.ipfs_max_block,
        max_file: a.ipfs.ipfs_max_file,
        concurrency: a.ipfs.ipfs_concurrency,
        prefetch_depth: a.ipfs.ipfs_prefetch_depth,
        prefetch_bytes: a.ipfs.ipfs_prefetch_bytes,
    };
    cfg.max_clients = a.max_clients.max(1);
    cfg.max_frame = a.max_frame.max(1);
    cfg.frame_memory = a.frame_memory;
    cfg.flight = a.flight_addr.map(|addr| cidcache::flight::FlightConfig {
        addr,
        token: a.flight_token_file.as_ref().map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_else(|e| {
                    eprintln!("cidcached: cannot read {}: {e}", p.display());
                    std::process::exit(2)
                })
                .trim()
                .to_string()
        }),
        tls: a.flight_tls_cert.clone().zip(a.flight_tls_key.clone()),
        max_put: cfg.memory_limit.unwrap_or(1 << 30),
    });
    if let Some(f) = &cfg.flight {
        if let Err(e) = f.check() {
            eprintln!("cidcached: {e}");
            std::process::exit(2);
        }
    }
    cfg.cold = a.cold.as_ref().map(|url| {
        let mut c = cidcache::tier::cold::ColdConfig::new(url);
        c.options = a.cold_option.clone();
        c.policy.after = (a.cold_after > 0).then(|| std::time::Duration::from_secs(a.cold_after));
        c.policy.min_size = a.cold_min_size;
        c.policy.high_water_pct = a.cold_high_water.min(100);
        c.concurrency = a.cold_concurrency.max(1);
        c.retries = a.cold_retries;
        c.relist = std::time::Duration::from_secs(a.cold_relist.max(1));
        c
    });
    cfg
}

/// A duration: a number with a unit (ms, s, m), or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && (v * scale) < 1e9 => Ok(Duration::from_secs_f64(v * scale)),
        _ => Err(format!(
            "{s:?} is not a duration above zero (e.g. 500ms, 30s, 10m)"
        )),
    }
}

/// `KEY=VALUE`.
fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s}: expected KEY=VALUE"))
}

/// A hot-tier size: bytes with an optional unit, at least 1 MiB.
fn parse_memory(s: &str) -> Result<u64, String> {
    let n = parse_bytes(s)?;
    if n < 1 << 20 {
        return Err(format!(
            "{s} is below the smallest hot tier, 1 MiB (give e.g. 64M or 2G)"
        ));
    }
    Ok(n)
}

fn parse_socket_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .map_err(|e| format!("{s}: {e}"))?
        .next()
        .ok_or_else(|| format!("{s}: no address"))
}

fn run_native(a: Args) -> ExitCode {
    let store = a.store.clone().unwrap_or_else(|| DEFAULT_STORE.to_string());
    let cfg = config(&a, &store);
    let coordinator = match Coordinator::prepare(cfg.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cidcached: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(
        store = %cfg.store,
        socket = %cfg.socket.display(),
        shm_dir = %cfg.shm_dir.display(),
        "serving with a hot tier of {} ({} eviction) and {} index slots",
        human_bytes(coordinator.memory_limit()),
        coordinator.policy_name(),
        cfg.index_capacity.next_power_of_two()
    );
    finish(coordinator.run())
}

fn finish(r: cidcache::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cidcached: {e}");
            ExitCode::from(1)
        }
    }
}

/// Store name for a Plasma socket: stable for a path, distinct across paths.
fn plasma_store_name(socket: &str) -> String {
    let p = Path::new(socket);
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let h = xxhash_rust::xxh3::xxh3_64(abs.as_os_str().as_encoded_bytes());
    format!("plasma-{:012x}", h >> 16)
}

/// Hot-tier sizing for a Plasma limit of `m` bytes: arenas of about a quarter of it, and room
/// for alignment (64 B per object), arena granularity and large-object segments (2 MiB
/// granules), so that what the exact Plasma accounting allows is never refused for
/// fragmentation (the Plasma store also overflows into an extra segment as a last resort).
fn plasma_sizing(m: u64) -> (u64, u64) {
    let arena = (m / 4).clamp(1 << 20, 64 << 20).next_multiple_of(1 << 20);
    let limit = m + m / 4 + 2 * arena + (8 << 20);
    (arena, limit)
}

fn run_plasma(a: Args, p: PlasmaArgs) -> ExitCode {
    let fail = |msg: String| {
        eprintln!("{}: {msg}", service::PROG);
        ExitCode::from(1)
    };
    let external = if p.external.is_empty() {
        None
    } else {
        match external_store_from_endpoint(&p.external) {
            Ok(x) => Some(x),
            Err(e) => return fail(e.to_string()),
        }
    };
    if p.socket.len() > 107 {
        return fail(format!("socket path {} is too long", p.socket));
    }
    let store = a
        .store
        .clone()
        .unwrap_or_else(|| plasma_store_name(&p.socket));
    let mut cfg = config(&a, &store);
    if let Some(s) = &p.native_socket {
        cfg.socket = s.clone();
    }
    cfg.shm_dir = p.dir.clone();
    // Plasma's own eviction (and its -e external store) decides the life of Plasma objects;
    // the native warm tier is used in plasma mode only when asked for with --data-dir.
    cfg.warm = a.data_dir.is_some() && !a.no_warm;
    // A Plasma store starts empty, as plasma-store-server does (and its reaper removes what a
    // killed one left).
    cfg.adopt = false;
    let (arena, limit) = plasma_sizing(p.memory);
    cfg.memory_limit = Some(limit);
    cfg.arena_size = arena;
    eprintln!(
        "Allowing the Plasma store to use up to {}GB of memory.",
        p.memory as f64 / 1e9
    );
    eprintln!(
        "Starting object store with directory {} and huge page support {}",
        p.dir.display(),
        if p.huge { "enabled" } else { "disabled" }
    );
    let mut coordinator = match Coordinator::prepare_lenient(cfg.clone()) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    let reaper = start_reaper(&cfg);
    let mut ps = PlasmaStore::new(coordinator.plasma_memory(), p.memory);
    if let Some(x) = external {
        ps.set_external_store(x);
    }
    if let Err(e) = coordinator.attach_plasma(ps, p.socket.clone()) {
        return fail(e.to_string());
    }
    tracing::info!(
        store = %cfg.store,
        plasma_socket = %p.socket,
        native_socket = %cfg.socket.display(),
        shm_dir = %cfg.shm_dir.display(),
        "serving Plasma (limit {} bytes) and the native protocol over one store",
        p.memory
    );
    let r = coordinator.run();
    drop(reaper);
    finish(r)
}

/// Starts `cidcached __reap`, which waits for this process to end (its stdin, a pipe whose
/// write end only this process holds, reaches EOF) and then removes the store's segments,
/// socket and lock file if no coordinator holds the lock: a Plasma store killed with SIGKILL
/// (as pyarrow's `start_plasma_store` does) leaves nothing behind in the shm directory.
fn start_reaper(cfg: &Config) -> Option<rustix::fd::OwnedFd> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).ok()?;
    let exe = std::env::current_exe().ok()?;
    let lock = cfg.shm_dir.join(cidcache::shm::lock_name(&cfg.store));
    let child = std::process::Command::new(exe)
        .arg("__reap")
        .arg("--shm-dir")
        .arg(&cfg.shm_dir)
        .arg("--store")
        .arg(&cfg.store)
        .arg("--socket")
        .arg(&cfg.socket)
        .arg("--lock")
        .arg(lock)
        .env("CIDCACHE_LOG", "warn")
        .stdin(std::process::Stdio::from(r))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match child {
        Ok(_) => Some(w),
        Err(e) => {
            tracing::warn!("cannot start the clean-up helper: {e}");
            None
        }
    }
}

fn reap(shm_dir: &Path, store: &str, socket: &Path, lock: &Path) -> ExitCode {
    use std::io::Read;
    let mut buf = [0u8; 64];
    let mut stdin = std::io::stdin();
    while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
    let Ok(fd) = rustix::fs::open(
        lock,
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) else {
        // A clean shutdown removed everything already (then this finds nothing), or the
        // lock's directory went away with its owner (a test's temporary directory).
        cidcache::shm::remove_store_files(shm_dir, store);
        return ExitCode::SUCCESS;
    };
    // The pipe can reach EOF a moment before the dead daemon's lock is released.
    for _ in 0..40 {
        if rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok() {
            cidcache::shm::remove_store_files(shm_dir, store);
            let _ = std::fs::remove_file(socket);
            let _ = std::fs::remove_file(lock);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    ExitCode::SUCCESS
}
