//! The coordinator daemon: owns the store's shared memory, the index and the tiers, and serves
//! clients over a Unix socket.
//!
//! Start-up order matters for the guarantees of DESIGN.md: take the store's lock (beside the
//! segments, so a second coordinator of the same store name fails here whatever its socket),
//! check every file of the store found in the shared-memory directory, adopt what a crashed
//! coordinator left (or remove it with `--no-adopt`), check `/dev/shm` against the memory
//! limit, create and reserve what is missing, and only then bind the socket, so a client that
//! can connect always finds a complete store.

mod ack;
mod adopt;
mod ipfs;
mod memory;
mod metrics;
mod paths;
mod plasma;
mod session;
mod store;

pub use plasma::SharedMemory;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::index::{IndexRef, IndexWriter, Slot};
use crate::layout::{self, hdr, Geometry, Header, SegTable};
use crate::limits::{is_exhaustion, FrameBudget, RateLimited, Spare};
use crate::peer::PeerPolicy;
use crate::shm::{self, human_bytes, Access, Mapping};
use crate::sync::AtomicU64;
use rustix::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A prepared coordinator: lock held, shared memory created, socket bound. [`Coordinator::run`]
/// serves until SIGTERM / SIGINT, then removes the store's segments and socket.
pub struct Coordinator {
    cfg: Config,
    limit: u64,
    lock: Option<paths::StoreLock>,
    ctl_name: String,
    // Dropped after the store (field order), which holds views into it.
    store: Arc<Mutex<store::Store>>,
    _ctl: Mapping,
    listener: Option<std::os::unix::net::UnixListener>,
    plasma: Option<PlasmaFrontEnd>,
    metrics: Option<std::net::TcpListener>,
    /// Native clients served at once (what `max_clients` and the lease pages' share allow).
    max_clients: usize,
    /// Bytes of frame bodies being received, shared by both front-ends.
    budget: Arc<FrameBudget>,
    // Created before the socket is bound, so that a client able to connect can also stop the
    // daemon cleanly with SIGTERM (exit status 0), however early it sends it.
    runtime: Option<tokio::runtime::Runtime>,
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

/// Connections being refused at once (each read for its first request id, then told why).
const MAX_REFUSING: usize = 64;
/// How long sessions get at shutdown to finish the request they are handling.
const SESSION_GRACE: Duration = Duration::from_secs(10);

/// Binds the Plasma socket and starts the Plasma thread; returns it with its stop pipe.
fn start_plasma(
    p: PlasmaFrontEnd,
    cfg: &Config,
    budget: Arc<FrameBudget>,
) -> Result<(std::thread::JoinHandle<()>, OwnedFd)> {
    let listener = crate::plasma::service::bind_listener(&p.socket, cfg.mode)
        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let (stop_rx, stop_tx) =
        crate::plasma::service::pipe().map_err(|e| Error::Internal(e.to_string()))?;
    let opts = crate::plasma::service::ServeOptions {
        max_frame: cfg.max_frame,
        budget,
        max_clients: cfg.max_clients,
        peer: Some(PeerPolicy::for_daemon(cfg.mode & 0o070 != 0)),
    };
    let thread = std::thread::Builder::new()
        .name("cidcached-plasma".into())
        .spawn(move || {
            if let Err(e) =
                crate::plasma::service::serve(p.store, listener, stop_rx, Some(p.wake), opts)
            {
                tracing::error!("the Plasma service stopped: {e}");
            }
        })
        .map_err(|e| Error::io("cannot start the Plasma thread", e))?;
    Ok((thread, stop_tx))
}

/// The Plasma front-end of `cidcached plasma`: its socket and state machine, served on a thread
/// of its own by [`Coordinator::run`].
struct PlasmaFrontEnd {
    socket: String,
    store: crate::plasma::server::PlasmaStore<SharedMemory>,
    wake: crate::plasma::service::WakeReceiver,
}

/// Mode of the directories the daemon creates: private, or reachable by the group of a group
/// store (search only: members connect to a socket they know the name of).
fn dir_mode(cfg: &Config) -> u32 {
    if cfg.mode & 0o070 != 0 {
        0o710
    } else {
        0o700
    }
}

/// Binds the native socket with `mode` set before it listens, so no client connects while the
/// umask decides who may.
fn bind_socket(path: &Path, mode: u32) -> std::io::Result<std::os::unix::net::UnixListener> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let sock = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::bind(&sock, &SocketAddrUnix::new(path)?)?;
    rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(mode))?;
    rustix::net::listen(&sock, 1024)?;
    Ok(std::os::unix::net::UnixListener::from(sock))
}

/// Opens the store's warm tier in `data_dir/warm`, sized to a quarter of the free space of its
/// filesystem unless configured, and reports what recovery found.
fn open_warm(cfg: &Config, max_object: u64) -> Result<crate::tier::warm::Warm> {
    let dir = cfg.data_dir.join("warm");
    paths::secure_dir(&cfg.data_dir, 0o700)?;
    let capacity = match cfg.warm_capacity {
        Some(c) => c,
        None => {
            let v = rustix::fs::statvfs(&cfg.data_dir)
                .map_err(|e| Error::io(format!("cannot stat {}", cfg.data_dir.display()), e))?;
            v.f_bavail.saturating_mul(v.f_frsize) / 4
        }
    };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (mut w, rec) = crate::tier::warm::Warm::open(crate::tier::warm::WarmConfig {
        dir: dir.clone(),
        capacity,
        compression: cfg.warm_compression,
        queue_bytes: (256 << 20).min(capacity.max(64 << 20)),
        threads,
        max_object,
    })?;
    tracing::info!(
        "warm tier {}: {} objects in {} files (capacity {}){}",
        dir.display(),
        rec.objects,
        rec.files,
        human_bytes(capacity),
        if rec.quarantined.is_empty() {
            String::new()
        } else {
            format!("; {} unreadable file(s) quarantined", rec.quarantined.len())
        }
    );
    if let Some(c) = &cfg.cold {
        let cold = crate::tier::cold::Cold::open(c.clone())?;
        tracing::info!(
            "cold tier {}: {} objects",
            c.url,
            cold.stats().first().map_or(0, |s| s.1)
        );
        w.attach_cold(cold)?;
    }
    Ok(w)
}

/// Opens (and recovers) the store's CID catalog in `data_dir/catalog`.
fn open_catalog(cfg: &Config) -> Result<crate::tier::catalog::Catalog> {
    let dir = cfg.data_dir.join("catalog");
    let (c, rec) = crate::tier::catalog::Catalog::open(
        &dir,
        crate::tier::catalog::CatalogOptions {
            strategy: cfg.catalog_partition,
            preset: cfg.catalog_preset,
            ..Default::default()
        },
    )?;
    for q in &rec.quarantined {
        tracing::error!("catalog: {q:?}");
    }
    tracing::info!("catalog {}: {} entries", dir.display(), c.len());
    Ok(c)
}

/// CPU time of the calling thread (adoption reports it: wall time on a loaded machine says
/// little).
fn thread_cpu() -> std::time::Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn boot_id() -> u64 {
    let mut b = [0u8; 8];
    if rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.as_nanos() as u64 ^ ((std::process::id() as u64) << 32);
    }
    u64::from_le_bytes(b) | 1
}

impl Coordinator {
    /// Prepares a coordinator for `cfg`: everything up to and including binding the socket.
    pub fn prepare(cfg: Config) -> Result<Coordinator> {
        Self::prepare_with(cfg, true)
    }

    /// Like [`Coordinator::prepare`], but a memory limit above the free space of the
    /// shared-memory directory only logs a warning (what `plasma-store-server` does); segments
    /// are still reserved when created, so running out shows as a full store, never a SIGBUS.
    pub fn prepare_lenient(cfg: Config) -> Result<Coordinator> {
        Self::prepare_with(cfg, false)
    }

    fn prepare_with(cfg: Config, strict_shm: bool) -> Result<Coordinator> {
        crate::config::validate_store_name(&cfg.store)?;
        let sock_dir = cfg
            .socket
            .parent()
            .ok_or_else(|| Error::InvalidArgument("socket path has no directory".into()))?
            .to_path_buf();
        paths::secure_dir(&sock_dir, dir_mode(&cfg))?;
        // The lock lives with the segments: one owner per store name on the machine.
        let lock = paths::StoreLock::take(&cfg.shm_dir, &cfg.store)?;

        // Everything of the store found now was left by a coordinator that is gone.
        let found = adopt::survey(&cfg.shm_dir, &cfg.store)?;
        let control = match (cfg.adopt && found.ctl)
            .then(|| adopt::open_control(&cfg.shm_dir, &cfg.store, cfg.mode))
        {
            Some(Ok(c)) => Some(c),
            Some(Err(why)) => {
                tracing::warn!(
                    "cannot adopt the shared memory of store {:?}: {} {why}; starting empty",
                    cfg.store,
                    shm::ctl_name(&cfg.store)
                );
                None
            }
            None => None,
        };
        let mut existing = 0;
        if control.is_none() && !found.is_empty() {
            adopt::retire_control(&cfg.shm_dir, &cfg.store);
            let n = found.remove_all(&cfg.shm_dir, &cfg.store);
            tracing::warn!(
                "removed {n} file(s) left by a coordinator of store {:?} that did not stop cleanly{}",
                cfg.store,
                if cfg.adopt { "" } else { " (--no-adopt)" }
            );
        } else if control.is_some() {
            existing = found
                .names(&cfg.store)
                .iter()
                .filter_map(|n| std::fs::metadata(cfg.shm_dir.join(n)).ok())
                .map(|m| m.len())
                .sum();
        }

        let free = shm::free_bytes(&cfg.shm_dir)?;
        let wanted = Geometry {
            index_capacity: cfg.index_capacity.max(8).next_power_of_two(),
            seg_len: 1024,
        };
        let geometry = match &control {
            Some(c) => {
                if c.geometry != wanted {
                    tracing::warn!(
                        "the adopted index has {} slots (--index-capacity asks for {}): it keeps its size; restart with --no-adopt to change it",
                        c.geometry.index_capacity,
                        wanted.index_capacity
                    );
                }
                c.geometry
            }
            None => wanted,
        };
        let ctl_size = geometry.total_size();
        let limit = match cfg.memory_limit {
            Some(l) => l,
            None => (free + existing).saturating_sub(ctl_size) / 4,
        };
        if limit < 1 << 20 {
            return Err(Error::StoreFull(format!(
                "a memory limit of {} is too small (at least 1 MiB)",
                human_bytes(limit)
            )));
        }
        // What still has to be reserved: an adopted store already holds its control segment
        // and (up to the limit) its data segments.
        let need = limit + ctl_size - existing.min(limit + ctl_size);
        if need > free && !strict_shm {
            tracing::warn!(
                "System memory request exceeds memory available in {}. The request is for {} bytes, and the amount available is {} bytes.",
                cfg.shm_dir.display(),
                limit,
                free
            );
        } else if need > free {
            return Err(Error::StoreFull(format!(
                "{} has {} free but the store needs {} more ({} of objects + {} of index); free space in it, lower --memory, or pass --shm-dir",
                cfg.shm_dir.display(),
                human_bytes(free),
                human_bytes(need),
                human_bytes(limit),
                human_bytes(ctl_size)
            )));
        }

        // Lease pages (one per native client) are shared memory too: they get an eighth of the
        // limit at most, and the clients that fit in it are all that may connect.
        let lease = crate::pins::lease_bytes(cfg.pins_per_client, cfg.hit_ring) as u64;
        let lease_share = (cfg.max_clients.max(1) as u64)
            .saturating_mul(lease)
            .min(limit / 8);
        let max_clients = (lease_share / lease) as usize;
        if max_clients == 0 {
            return Err(Error::InvalidArgument(format!(
                "a client's lease page ({}) does not fit in an eighth of the memory limit ({}); lower --pins-per-client or raise --memory",
                human_bytes(lease),
                human_bytes(limit)
            )));
        }
        let ctl_name = shm::ctl_name(&cfg.store);
        let adopting = control.is_some();
        let ctl = match control {
            Some(c) => c.map,
            None => {
                let ctl_fd = shm::create_segment(&cfg.shm_dir, &ctl_name, ctl_size, cfg.mode)?;
                Mapping::map(&ctl_fd, ctl_size as usize, Access::ReadWrite, true).inspect_err(
                    |_| {
                        shm::unlink_segment(&cfg.shm_dir, &ctl_name);
                    },
                )?
            }
        };
        // SAFETY: the control mapping lives in the Coordinator, which owns the Store that uses
        // these views and drops it first (field order); the layout offsets come from
        // `geometry`, which sized the mapping (an adopted one was checked against its file),
        // so every view is in bounds and 8-byte aligned (slots 64-byte aligned: the index
        // offset is page-aligned).
        let (header, segtable, slots, max_probe) = unsafe {
            let base = ctl.as_ptr();
            let words = |off: u64, n: usize| -> &'static [AtomicU64] {
                std::slice::from_raw_parts(base.add(off as usize) as *const AtomicU64, n)
            };
            let header = Header::new(words(0, hdr::COUNT));
            let segtable =
                SegTable::new(words(geometry.seg_offset(), geometry.seg_len as usize * 4));
            let slots: &'static [Slot] = std::slice::from_raw_parts(
                base.add(geometry.index_offset() as usize) as *const Slot,
                geometry.index_capacity as usize,
            );
            let max_probe: &'static AtomicU64 =
                &*(base.add(hdr::MAX_PROBE * 8) as *const AtomicU64);
            (header, segtable, slots, max_probe)
        };
        let boot = boot_id();
        header.set(hdr::VERSION, layout::LAYOUT_VERSION);
        header.set(hdr::PID, std::process::id() as u64);
        header.set(hdr::BOOT_ID, boot);
        header.set(hdr::INDEX_OFFSET, geometry.index_offset());
        header.set(hdr::INDEX_CAPACITY, geometry.index_capacity);
        header.set(hdr::SEG_OFFSET, geometry.seg_offset());
        header.set(hdr::SEG_LEN, geometry.seg_len);
        header.set(hdr::TOTAL_SIZE, ctl_size);
        header.set(hdr::HASH_SEED, layout::HASH_SEED);
        header.set(hdr::MEMORY_LIMIT, limit);
        header.set(hdr::STATE, layout::STATE_RUNNING);

        let lease_share = max_clients as u64 * lease;
        // What the objects may use.
        let data_limit = limit - lease_share;
        let max_live = (geometry.index_capacity - geometry.index_capacity / 8) as usize;
        let started = std::time::Instant::now();
        let cpu_started = thread_cpu();
        let mut walked = std::time::Duration::ZERO;
        let (index, memory, kept) = if adopting {
            let (mut memory, segs) = memory::Memory::adopt(
                cfg.shm_dir.clone(),
                cfg.store.clone(),
                cfg.mode,
                data_limit,
                cfg.arena_size,
                segtable,
            );
            for d in &segs.dropped {
                tracing::warn!("adoption: removed {d}");
            }
            // Sized for the live entries the header counted (bounded by the index).
            let hint = (header.get(hdr::LIVE_OBJECTS) as usize).min(max_live);
            let mut kept = Vec::with_capacity(hint);
            // Duplicate keys and ids are dropped by the store when it takes the objects.
            let (mut index, rep) =
                IndexWriter::adopt(IndexRef::new(slots, max_probe), max_live, |slot, key, e| {
                    let ok = e.object_id != 0
                        && e.data_len.checked_add(e.meta_len).is_some()
                        && memory.has_segment(e.seg);
                    if ok {
                        kept.push((slot, key, e));
                    }
                    ok
                });
            // Where the objects lie, checked and claimed in address order in one pass; the
            // entries refused (outside their segment, overlapping another) are removed.
            let claims = kept
                .iter()
                .enumerate()
                .map(|(i, (_, _, e))| (e.seg, e.offset, e.data_len + e.meta_len, i))
                .collect();
            let refused = memory.claim_all(claims);
            let invalid = rep.invalid + refused.len();
            if !refused.is_empty() {
                let mut drop = vec![false; kept.len()];
                for &i in &refused {
                    drop[i] = true;
                    index.remove(kept[i].0);
                }
                let mut i = 0;
                kept.retain(|_| {
                    i += 1;
                    !drop[i - 1]
                });
            }
            memory.finish_adoption();
            walked = started.elapsed();
            // Segments outside the table, and names no coordinator makes, are not ours to keep.
            let live: std::collections::HashSet<u64> = memory.segment_ids().into_iter().collect();
            let mut stray = found.other.clone();
            stray.extend(
                found
                    .data
                    .iter()
                    .filter(|id| !live.contains(id))
                    .map(|&id| shm::data_name(&cfg.store, id)),
            );
            for n in &stray {
                shm::unlink_segment(&cfg.shm_dir, n);
            }
            if rep.interrupted + invalid + stray.len() > 0 {
                tracing::warn!(
                    "adoption: dropped {} index entries whose write a crash interrupted, {} that did not validate, and {} stray file(s)",
                    rep.interrupted,
                    invalid,
                    stray.len()
                );
            }
            (index, memory, kept)
        } else {
            let mut memory = memory::Memory::new(
                cfg.shm_dir.clone(),
                cfg.store.clone(),
                cfg.mode,
                data_limit,
                cfg.arena_size,
                segtable,
            );
            if let Err(e) = memory.reserve_first_arena() {
                shm::unlink_segment(&cfg.shm_dir, &ctl_name);
                return Err(e);
            }
            let index = IndexWriter::new(IndexRef::new(slots, max_probe), max_live);
            (index, memory, Vec::new())
        };
        let kind: crate::policy::PolicyKind = cfg
            .policy
            .parse()
            .map_err(|e| Error::InvalidArgument(format!("{e}")))?;
        let policy = crate::policy::new_policy(
            kind,
            crate::policy::PolicyConfig {
                capacity_bytes: limit,
                expected_objects: geometry.index_capacity,
            },
        );
        let mut store = store::Store::new(
            cfg.store.clone(),
            cfg.shm_dir.clone(),
            boot,
            &cfg,
            header,
            index,
            memory,
            policy,
        );
        if adopting {
            let (n, bytes) = (
                kept.len(),
                kept.iter()
                    .map(|k| k.2.data_len + k.2.meta_len)
                    .sum::<u64>(),
            );
            let duplicates = store.adopt_objects(kept);
            if duplicates > 0 {
                tracing::warn!(
                    "adoption: dropped {duplicates} index entries whose key or id another entry has"
                );
            }
            let n = n - duplicates;
            // Only after the run token was cleared and fenced (open_control): pins stored
            // later are undone by their clients.
            let (orphans, removed) =
                adopt::classify_leases(&cfg.shm_dir, &cfg.store, &found.leases);
            store.set_orphans(orphans, found.leases.last().copied().unwrap_or(0));
            tracing::info!(
                "adopted {n} objects ({}) from the shared memory of the previous coordinator in {:.1} ms ({:.1} ms of CPU; segments and index {:.1} ms); removed {removed} lease page(s) of clients that are gone",
                human_bytes(bytes),
                started.elapsed().as_secs_f64() * 1e3,
                (thread_cpu() - cpu_started).as_secs_f64() * 1e3,
                walked.as_secs_f64() * 1e3
            );
        }
        // A fresh store's files are ours to remove if the start fails; an adopted one is left
        // for the next attempt.
        let abandon = |mut store: store::Store| {
            if !adopting {
                store.remove_segments();
                shm::unlink_segment(&cfg.shm_dir, &ctl_name);
            }
        };
        store.set_max_clients(max_clients);
        if max_clients < cfg.max_clients {
            tracing::info!(
                "at most {max_clients} native clients: their lease pages ({} each) may use an eighth of the memory limit",
                human_bytes(lease)
            );
        }
        if cfg.warm {
            match open_warm(&cfg, limit).and_then(|w| Ok((w, open_catalog(&cfg)?))) {
                Ok((w, c)) => {
                    store.set_warm(w);
                    store.set_catalog(c);
                }
                Err(e) => {
                    abandon(store);
                    return Err(e);
                }
            }
        }
        if cfg.ipfs.enabled() {
            match crate::tier::ipfs::Ipfs::new(cfg.ipfs.clone(), limit) {
                Ok(i) => store.set_ipfs(Arc::new(i)),
                Err(e) => {
                    abandon(store);
                    return Err(e);
                }
            }
        }
        // Published last: a client that sees the magic sees a complete header, and the run
        // token tells clients this boot serves the segment.
        header.set(hdr::MAGIC, layout::MAGIC);
        header.set(hdr::RUN_TOKEN, boot);

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("cidcached")
            .build()
            .map_err(|e| Error::io("cannot start the async runtime", e))?;
        let signals = {
            use tokio::signal::unix::{signal, SignalKind};
            let _in_runtime = runtime.enter();
            let term = signal(SignalKind::terminate())
                .map_err(|e| Error::io("cannot install the SIGTERM handler", e))?;
            let int = signal(SignalKind::interrupt())
                .map_err(|e| Error::io("cannot install the SIGINT handler", e))?;
            (term, int)
        };

        let metrics = match cfg.metrics_addr {
            Some(addr) => match std::net::TcpListener::bind(addr) {
                Ok(l) => Some(l),
                Err(e) => {
                    abandon(store);
                    return Err(Error::io(
                        format!("cannot bind the metrics address {addr}"),
                        e,
                    ));
                }
            },
            None => None,
        };
        // We hold the lock, so any socket file at the path is stale.
        let _ = std::fs::remove_file(&cfg.socket);
        let listener = match bind_socket(&cfg.socket, cfg.mode) {
            Ok(l) => l,
            Err(e) => {
                abandon(store);
                return Err(Error::io(
                    format!("cannot bind {}", cfg.socket.display()),
                    e,
                ));
            }
        };
        let budget = FrameBudget::new(cfg.frame_memory.max(cfg.max_frame));
        Ok(Coordinator {
            max_clients,
            budget,
            cfg,
            limit,
            lock: Some(lock),
            ctl_name,
            store: Arc::new(Mutex::new(store)),
            _ctl: ctl,
            listener: Some(listener),
            plasma: None,
            metrics,
            runtime: Some(runtime),
            signals: Some(signals),
        })
    }

    /// A [`crate::plasma::server::PlasmaMemory`] over this coordinator's segments, object table
    /// and index (see `docs/plasma.md`).
    pub fn plasma_memory(&self) -> SharedMemory {
        SharedMemory::new(self.store.clone())
    }

    /// Adds the Plasma front-end: `store` (built over [`Coordinator::plasma_memory`]) is served
    /// on the Unix socket `socket` by [`Coordinator::run`], on a thread of its own, and learns
    /// about native seals of 20-byte keys so that its waiting Gets see them. The socket is bound
    /// only once SIGTERM is handled, so a client that can connect can also stop the store
    /// cleanly.
    pub fn attach_plasma(
        &mut self,
        store: crate::plasma::server::PlasmaStore<SharedMemory>,
        socket: String,
    ) -> Result<()> {
        let (tx, rx) =
            crate::plasma::service::wake_channel().map_err(|e| Error::Internal(e.to_string()))?;
        self.store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_seal_hook(Box::new(
                move |key: crate::key::Key, ev: store::KeyEvent| {
                    if let Ok(id) = key.as_bytes().try_into() {
                        match ev {
                            store::KeyEvent::Sealed => tx.send(id),
                            store::KeyEvent::Abandoned => tx.send_abandoned(id),
                        }
                    }
                },
            ));
        self.plasma = Some(PlasmaFrontEnd {
            socket,
            store,
            wake: rx,
        });
        Ok(())
    }

    /// Name of the eviction policy in use.
    pub fn policy_name(&self) -> &'static str {
        self.store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .policy_name()
    }

    /// The memory limit chosen (explicit or derived from `/dev/shm`).
    pub fn memory_limit(&self) -> u64 {
        self.limit
    }

    /// Serves until SIGTERM or SIGINT, then stops in an order that never touches unmapped
    /// memory: stop accepting, let every session finish the request at hand (cancelling what
    /// is still running after a grace period), stop the runtime (which waits for every task and
    /// blocking job still using the store), stop the Plasma thread, and only then demote, unmap
    /// and remove the store. Returns an error (so the daemon exits non-zero) when objects that
    /// should have been persisted to the warm tier were not.
    pub fn run(mut self) -> Result<()> {
        let plasma_front = self.plasma.take();
        let metrics = self.metrics.take();
        let rt = self
            .runtime
            .take()
            .ok_or_else(|| Error::Internal("coordinator run twice".into()))?;
        let (mut term, mut int) = self
            .signals
            .take()
            .ok_or_else(|| Error::Internal("coordinator run twice".into()))?;
        let listener = self
            .listener
            .take()
            .ok_or_else(|| Error::Internal("coordinator run twice".into()))?;
        let store = self.store.clone();
        let ctx = Arc::new(session::Ctx {
            store: store.clone(),
            max_frame: self.cfg.max_frame.min(crate::proto::MAX_BODY as u64) as u32,
            budget: self.budget.clone(),
            stop: session::Stop::default(),
        });
        let peer = PeerPolicy::for_daemon(self.cfg.mode & 0o070 != 0);
        let max_clients = self.max_clients;
        let cfg = self.cfg.clone();
        let budget = self.budget.clone();
        let plasma = rt.block_on(async move {
            listener
                .set_nonblocking(true)
                .map_err(|e| Error::io("set_nonblocking", e))?;
            let listener = tokio::net::UnixListener::from_std(listener)
                .map_err(|e| Error::io("cannot register the listener", e))?;
            let plasma = match plasma_front {
                Some(p) => Some(start_plasma(p, &cfg, budget)?),
                None => None,
            };
            let mut background = tokio::task::JoinSet::new();
            if let Some(m) = metrics {
                m.set_nonblocking(true)
                    .map_err(|e| Error::io("set_nonblocking", e))?;
                let m = tokio::net::TcpListener::from_std(m)
                    .map_err(|e| Error::io("cannot register the metrics listener", e))?;
                tracing::info!("serving Prometheus metrics on http://{}/metrics", m.local_addr().map(|a| a.to_string()).unwrap_or_default());
                background.spawn(metrics::serve(m, store.clone()));
            }
            // Adopted Arrow objects are validated again, off the store lock.
            background.spawn(session::revalidate(store.clone()));
            if let Some(f) = cfg.flight.clone() {
                let socket = cfg.socket.clone();
                background.spawn(async move {
                    if let Err(e) = crate::flight::serve(f, socket).await {
                        tracing::error!("Arrow Flight is not served: {e}");
                    }
                });
            }
            let maint_store = store.clone();
            background.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(5));
                loop {
                    tick.tick().await;
                    maint_store.lock().unwrap_or_else(|p| p.into_inner()).maintain();
                }
            });
            let mut sessions = tokio::task::JoinSet::new();
            // Connections being told no (bounded: past it they are just closed).
            let mut refusing = tokio::task::JoinSet::new();
            let mut spare = Spare::new();
            let mut accept_log = RateLimited::new(Duration::from_secs(10));
            let mut refuse_log = RateLimited::new(Duration::from_secs(10));
            // At the descriptor limit, accepting pauses (doubling up to a second).
            let mut backoff = Duration::ZERO;
            let mut paused_until: Option<tokio::time::Instant> = None;
            loop {
                let pause = async {
                    match paused_until {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = term.recv() => { tracing::info!("SIGTERM received, shutting down"); break; }
                    _ = int.recv() => { tracing::info!("SIGINT received, shutting down"); break; }
                    Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                    Some(_) = refusing.join_next(), if !refusing.is_empty() => {}
                    _ = pause => {
                        paused_until = None;
                        spare.restore();
                    }
                    acc = listener.accept(), if paused_until.is_none() => {
                        let stream = match acc {
                            Ok((stream, _)) => stream,
                            Err(e) => {
                                let errno = e.raw_os_error().map(rustix::io::Errno::from_raw_os_error);
                                if !errno.is_some_and(is_exhaustion) {
                                    accept_log.warn(|| format!("accept failed: {e}"));
                                    continue;
                                }
                                // Out of descriptors: give up the spare to take the waiting
                                // client and tell it, then pause instead of spinning.
                                if spare.release() {
                                    let t = Duration::from_millis(50);
                                    if let Ok(Ok((s, _))) = tokio::time::timeout(t, listener.accept()).await {
                                        if refusing.len() < MAX_REFUSING {
                                            refusing.spawn(session::refuse(s, Error::Busy(
                                                "the coordinator is out of file descriptors; retry later (its operator may raise the limit: ulimit -n)".into(),
                                            )));
                                        }
                                    }
                                }
                                accept_log.warn(|| format!(
                                    "cannot accept connections: {e}; {} clients connected; refusing new ones (raise the limit: ulimit -n, or lower --max-clients)",
                                    sessions.len()
                                ));
                                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                                paused_until = Some(tokio::time::Instant::now() + backoff);
                                continue;
                            }
                        };
                        backoff = Duration::ZERO;
                        spare.restore();
                        if let Err(e) = peer.check(&stream) {
                            refuse_log.warn(|| e);
                            if refusing.len() < MAX_REFUSING {
                                refusing.spawn(session::refuse(stream, Error::PermissionDenied(
                                    "this store serves its owner's processes (and its group's, if started with --group)".into(),
                                )));
                            }
                            continue;
                        }
                        if sessions.len() >= max_clients {
                            let n = sessions.len();
                            refuse_log.warn(|| format!(
                                "refused a connection: {n} clients are connected, the most allowed"
                            ));
                            if refusing.len() < MAX_REFUSING {
                                refusing.spawn(session::refuse(stream, Error::Busy(format!(
                                    "{n} clients are connected, the most this coordinator serves at once; retry later (its operator may raise --max-clients, or --memory for lease pages)"
                                ))));
                            }
                            continue;
                        }
                        sessions.spawn(session::serve(ctx.clone(), stream));
                    }
                }
            }
            // No new connections from here on.
            drop(listener);
            ctx.stop.stop();
            let finished = async { while sessions.join_next().await.is_some() {} };
            if tokio::time::timeout(SESSION_GRACE, finished).await.is_err() {
                tracing::warn!(
                    "{} connection(s) still busy after {}s; cancelling them",
                    sessions.len(),
                    SESSION_GRACE.as_secs()
                );
                sessions.abort_all();
            }
            refusing.abort_all();
            background.abort_all();
            Ok::<_, Error>(plasma)
        });
        // Dropping the runtime waits until every task is dropped and every blocking job (warm
        // reads, fills) has returned: nothing uses the store's memory past this line.
        drop(rt);
        let plasma = match plasma {
            Ok(p) => p,
            Err(e) => {
                let _ = self.cleanup();
                return Err(e);
            }
        };
        if let Some((thread, stop)) = plasma {
            tracing::info!("SIGTERM Signal received, closing Plasma Server...");
            let _ = rustix::io::write(&stop, b"s");
            let _ = thread.join();
        }
        self.cleanup()
    }

    /// Shuts the store down and removes its files; an error when objects could not be
    /// persisted (the daemon then exits non-zero).
    fn cleanup(&mut self) -> Result<()> {
        let rep = self
            .store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .shutdown(self.cfg.adopt);
        if !rep.kept_in_shm {
            shm::unlink_segment(&self.cfg.shm_dir, &self.ctl_name);
        }
        let _ = std::fs::remove_file(&self.cfg.socket);
        if let Some(l) = self.lock.take() {
            l.release();
        }
        let lost = rep.refused + rep.unwritten;
        if lost == 0 {
            return Ok(());
        }
        let why = rep.reason.as_deref().unwrap_or("write failed");
        let msg = if rep.kept_in_shm {
            format!(
                "{lost} object(s) could not be persisted to the warm tier ({why}): {} stay in {} for the next start to adopt, {} are lost",
                rep.refused,
                self.cfg.shm_dir.display(),
                rep.unwritten
            )
        } else {
            format!(
                "{lost} object(s) could not be persisted to the warm tier ({why}): {lost} are lost"
            )
        };
        tracing::error!("{msg}");
        Err(Error::io("shutdown", std::io::Error::other(msg)))
    }
}
