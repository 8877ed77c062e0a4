//! `cidcached`: the coordinator daemon.

use cidcache::config::{Config, DEFAULT_STORE};
use cidcache::coordinator::Coordinator;
use cidcache::shm::{human_bytes, parse_bytes};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// Serves a cidcache store: shared-memory hot tier, lock-free index, native protocol.
#[derive(Parser, Debug)]
#[command(name = "cidcached", version, about)]
struct Args {
    /// Store name (selects the socket, segment and data paths).
    #[arg(long, env = "CIDCACHE_STORE", default_value = DEFAULT_STORE)]
    store: String,
    /// Hot-tier memory limit (e.g. 512M, 4G); default: a quarter of the free space in the
    /// shared-memory directory.
    #[arg(long, short = 'm', value_parser = parse_bytes)]
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
    /// Let members of the daemon's group connect (mode 0660 instead of 0600).
    #[arg(long)]
    group: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CIDCACHE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    let mut cfg = Config::for_store(&a.store);
    if let Some(s) = a.socket {
        cfg.socket = s;
    }
    if let Some(d) = a.data_dir {
        cfg.data_dir = d;
    }
    cfg.shm_dir = a.shm_dir;
    cfg.memory_limit = a.memory;
    cfg.index_capacity = a.index_capacity;
    cfg.arena_size = a.arena_size;
    cfg.pins_per_client = a.pins_per_client.max(1);
    cfg.policy = a.policy;
    if a.group {
        cfg.mode = 0o660;
    }
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
    match coordinator.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cidcached: {e}");
            ExitCode::from(1)
        }
    }
}
