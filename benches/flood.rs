//! What one flooding client makes the daemon hold, and what a well-behaved client sees
//! meanwhile (issue #9, item 9). For each flood, on a fresh daemon (`-m 256M --no-warm`,
//! 2,000 small objects stored):
//!
//! * the daemon's heap (`RssAnon`) before, at its peak during the flood, and after the flooding
//!   connections closed;
//! * latency of a well-behaved client's `put` (10 KB, inline) and `get` of a missing key (one
//!   round trip: a hit never reaches the daemon)
//!   before and during the flood (p50 / p99 / max), measured side by side in the same run.
//!
//! Floods: 300,000 Stats requests whose replies are never read; 10,000 List requests never
//! read; a client reading 3,000 Lists as fast as it can; 30 connections each stalled in a
//! 60 MiB frame (all of it sent but its last byte); 2,000 idle connections.
//!
//! Run: `cargo bench --bench flood` (add `-- --quick` for a short run). `CIDCACHED_BIN` runs
//! another daemon binary (for a before/after comparison with an older build). Figures are
//! printed, never asserted.

use cidcache::proto::{self, Request};
use cidcache::Client;
use hdrhistogram::Histogram;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

struct Daemon {
    child: Child,
    socket: PathBuf,
    store: String,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn daemon_bin() -> PathBuf {
    std::env::var_os("CIDCACHED_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_cidcached")))
}

fn start() -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s.sock");
    let store = format!(
        "flood{}_{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    );
    let mut child = Command::new(daemon_bin())
        .args(["--store", &store, "--socket"])
        .arg(&socket)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--no-warm", "-m", "256M"])
        .env("CIDCACHE_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while UnixStream::connect(&socket).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "daemon exited");
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let c = Client::connect_socket(&socket).unwrap();
    let keys: Vec<Vec<u8>> = (0..2000u64)
        .map(|i| format!("listed-object-{i:06}").into_bytes())
        .collect();
    for chunk in keys.chunks(500) {
        let items: Vec<(&[u8], &[u8])> = chunk.iter().map(|k| (&k[..], &b"x"[..])).collect();
        for r in c.put_many(&items) {
            r.unwrap();
        }
    }
    Daemon {
        child,
        socket,
        store,
        _dir: dir,
    }
}

/// Bytes of the store's data segments and lease pages in `/dev/shm` (not the index).
fn shm_bytes(store: &str) -> u64 {
    let prefix = format!("cidcache.{store}.");
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.starts_with(&prefix) && !n.ends_with(".ctl")
                })
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn rss_anon(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("RssAnon:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn hello(socket: &Path) -> UnixStream {
    let mut s = UnixStream::connect(socket).unwrap();
    s.write_all(
        &Request::Hello {
            version: proto::VERSION,
            pid: std::process::id(),
            writer: true,
        }
        .encode(1),
    )
    .unwrap();
    let mut h = [0u8; proto::HEADER_LEN];
    s.read_exact(&mut h).unwrap();
    let len = u32::from_le_bytes(h[0..4].try_into().unwrap()) as usize;
    let mut b = vec![0u8; len];
    s.read_exact(&mut b).unwrap();
    s
}

/// Latencies (µs) of a well-behaved client's put and contains, for `dur`.
struct Good {
    put: Histogram<u64>,
    /// A get that misses: one round trip to the daemon.
    contains: Histogram<u64>,
}

/// The well-behaved client, connected before the flood (a flood of connections may take
/// every slot left).
fn good_client(c: &Client, dur: Duration, tag: &str) -> Good {
    let v = vec![7u8; 10_000];
    let mut g = Good {
        put: Histogram::new(3).unwrap(),
        contains: Histogram::new(3).unwrap(),
    };
    let start = Instant::now();
    let mut i = 0u64;
    while start.elapsed() < dur || i < 20 {
        let k = format!("good-{tag}-{i}");
        let t = Instant::now();
        c.put(k.as_bytes(), &v).unwrap();
        g.put.record(t.elapsed().as_micros() as u64).unwrap();
        let t = Instant::now();
        assert!(c.get(format!("missing-{i}").as_bytes()).unwrap().is_none());
        g.contains.record(t.elapsed().as_micros() as u64).unwrap();
        let _ = c.delete(k.as_bytes());
        i += 1;
    }
    g
}

fn fmt(h: &Histogram<u64>) -> String {
    let ms = |v: u64| v as f64 / 1000.0;
    format!(
        "{:.2}/{:.2}/{:.1}",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max())
    )
}

struct Row {
    name: &'static str,
    before: u64,
    /// Peak bytes of data segments and lease pages in `/dev/shm`.
    shm: u64,
    peak: u64,
    after: u64,
    idle: Good,
    during: Good,
}

/// Runs `flood` (which returns what keeps the flood alive) while the good client measures.
fn run(name: &'static str, dur: Duration, flood: impl FnOnce(&Path) -> Box<dyn FnOnce()>) -> Row {
    let d = start();
    let pid = d.child.id();
    let good = Client::connect_socket(&d.socket).unwrap();
    let idle = good_client(&good, Duration::from_millis(500), "idle");
    let before = rss_anon(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(before));
    let shm_peak = Arc::new(std::sync::atomic::AtomicU64::new(shm_bytes(&d.store)));
    let sampler = {
        let (stop, peak, shm_peak) = (stop.clone(), peak.clone(), shm_peak.clone());
        let store = d.store.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_anon(pid), Ordering::Relaxed);
                shm_peak.fetch_max(shm_bytes(&store), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let end_flood = flood(&d.socket);
    let during = good_client(&good, dur, "flood");
    // Let the flood reach its peak if it has not yet.
    std::thread::sleep(Duration::from_millis(500));
    end_flood();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    Row {
        name,
        before,
        shm: shm_peak.load(Ordering::Relaxed),
        peak: peak.load(Ordering::Relaxed),
        after: rss_anon(pid),
        idle,
        during,
    }
}

/// Writes `frames` on a connection that never reads; the flood ends when it is closed.
fn unread(socket: &Path, frames: Vec<u8>) -> Box<dyn FnOnce()> {
    let mut s = hello(socket);
    let keep = s.try_clone().unwrap();
    let t = std::thread::spawn(move || {
        let _ = s.write_all(&frames);
    });
    Box::new(move || {
        let _ = keep.shutdown(std::net::Shutdown::Both);
        let _ = t.join();
    })
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let dur = if quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(4)
    };
    println!(
        "daemon: {}  load: {}",
        daemon_bin().display(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let mut rows = Vec::new();
    rows.push(run("300k unread Stats replies", dur, |s| {
        let mut f = Vec::new();
        for i in 0..300_000u64 {
            f.extend_from_slice(&Request::Stats.encode(i));
        }
        unread(s, f)
    }));
    rows.push(run("10k unread Lists", dur, |s| {
        let mut f = Vec::new();
        for i in 0..10_000u64 {
            f.extend_from_slice(
                &Request::List {
                    cursor: 0,
                    limit: 10_000,
                }
                .encode(i),
            );
        }
        unread(s, f)
    }));
    rows.push(run("3,000 Lists read back", dur, |s| {
        let socket = s.to_path_buf();
        let t = std::thread::spawn(move || {
            let c = Client::connect_socket(&socket).unwrap();
            for _ in 0..3000 {
                let _ = c.list();
            }
        });
        Box::new(move || {
            let _ = t.join();
        })
    }));
    rows.push(run("30 stalled 60 MiB frames", dur, |s| {
        const FRAME: u32 = 60 << 20;
        let body = Arc::new(vec![0x5au8; FRAME as usize - 1]);
        let mut keep = Vec::new();
        let mut threads = Vec::new();
        for i in 0..30u64 {
            let mut c = hello(s);
            keep.push(c.try_clone().unwrap());
            let body = body.clone();
            threads.push(std::thread::spawn(move || {
                let mut h = Vec::new();
                h.extend_from_slice(&FRAME.to_le_bytes());
                h.extend_from_slice(&proto::VERSION.to_le_bytes());
                h.extend_from_slice(&proto::msg::PUT_MANY.to_le_bytes());
                h.extend_from_slice(&i.to_le_bytes());
                let _ = c.write_all(&h);
                let _ = c.write_all(&body);
            }));
        }
        Box::new(move || {
            for k in &keep {
                let _ = k.shutdown(std::net::Shutdown::Both);
            }
            for t in threads {
                let _ = t.join();
            }
        })
    }));
    rows.push(run("2,000 idle connections", dur, |s| {
        let mut held = Vec::new();
        let mut refused = 0;
        for _ in 0..2000 {
            let mut c = UnixStream::connect(s).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c.write_all(
                &Request::Hello {
                    version: proto::VERSION,
                    pid: 1,
                    writer: true,
                }
                .encode(1),
            )
            .unwrap();
            let mut h = [0u8; proto::HEADER_LEN];
            if c.read_exact(&mut h).is_err() {
                refused += 1;
                continue;
            }
            let len = u32::from_le_bytes(h[0..4].try_into().unwrap()) as usize;
            let mut b = vec![0u8; len];
            let _ = c.read_exact(&mut b);
            if u16::from_le_bytes(h[6..8].try_into().unwrap()) == proto::msg::R_HELLO {
                held.push(c);
            } else {
                refused += 1;
            }
        }
        println!(
            "  (2,000 idle connections: {} served, {refused} refused)",
            held.len()
        );
        Box::new(move || drop(held))
    }));
    println!(
        "\n{:<28} {:>8} {:>6} {:>6} {:>8}   {:>18} {:>18} {:>18} {:>18}",
        "flood",
        "heap MiB",
        "peak",
        "after",
        "shm peak",
        "put idle",
        "put flood",
        "miss idle",
        "miss flood"
    );
    for r in &rows {
        println!(
            "{:<28} {:>8} {:>6} {:>6} {:>8}   {:>18} {:>18} {:>18} {:>18}",
            r.name,
            r.before / MIB,
            r.peak / MIB,
            r.after / MIB,
            r.shm / MIB,
            fmt(&r.idle.put),
            fmt(&r.during.put),
            fmt(&r.idle.contains),
            fmt(&r.during.contains)
        );
    }
    println!("(heap: the daemon's RssAnon; shm: its data segments and lease pages; latencies: p50/p99/max in ms)");
}
