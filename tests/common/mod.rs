//! Test harness: real `cidcached` processes on private sockets and unique store names.
#![allow(dead_code)]

use cidcache::Client;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn unique_store() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("t{}_{}_{}", std::process::id(), n, nanos % 100_000)
}

pub struct Daemon {
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub store: String,
    pub dir: tempfile::TempDir,
    pub args: Vec<String>,
}

/// The daemon under test: this build's, or `CIDCACHE_TEST_DAEMON` (to run a test against
/// another build, e.g. to see it fail on the code before a fix).
pub fn daemon_bin() -> String {
    std::env::var("CIDCACHE_TEST_DAEMON")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_cidcached").to_string())
}

impl Daemon {
    /// Starts a daemon with a 64 MiB hot tier unless `extra` says otherwise.
    pub fn start(extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let store = unique_store();
        let socket = dir.path().join("s.sock");
        let mut args: Vec<String> = vec![
            "--store".into(),
            store.clone(),
            "--socket".into(),
            socket.display().to_string(),
            "--data-dir".into(),
            dir.path().join("data").display().to_string(),
        ];
        if !extra.iter().any(|a| *a == "-m" || *a == "--memory") {
            args.extend(["-m".into(), "64M".into()]);
        }
        if !extra.contains(&"--arena-size") {
            args.extend(["--arena-size".into(), "16M".into()]);
        }
        if !extra.contains(&"--index-capacity") {
            args.extend(["--index-capacity".into(), "4096".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut d = Daemon {
            child: None,
            socket,
            store,
            dir,
            args,
        };
        d.spawn();
        d
    }

    pub fn spawn(&mut self) {
        let child = Command::new(daemon_bin())
            .args(&self.args)
            .env("CIDCACHE_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn cidcached");
        self.child = Some(child);
        wait_for_socket(&self.socket, self.child.as_mut().unwrap());
    }

    pub fn client(&self) -> Client {
        Client::connect_socket(&self.socket).expect("connect")
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        signal(c.id() as i32, libc_sigterm());
        wait_timeout(&mut c, Duration::from_secs(10)).expect("daemon exits after SIGTERM")
    }

    pub fn kill9(&mut self) {
        let mut c = self.child.take().expect("running");
        let _ = c.kill();
        let _ = c.wait();
    }

    pub fn shm_files(&self) -> Vec<String> {
        let prefix = format!("cidcache.{}.", self.store);
        std::fs::read_dir("/dev/shm")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(|s| s.to_string()))
            .filter(|n| n.starts_with(&prefix))
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for f in self.shm_files() {
            let _ = std::fs::remove_file(Path::new("/dev/shm").join(f));
        }
    }
}

pub fn libc_sigterm() -> i32 {
    15
}

pub fn signal(pid: i32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

pub fn wait_timeout(c: &mut Child, t: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < t {
        if let Some(s) = c.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

pub fn wait_for_socket(p: &Path, child: &mut Child) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if std::os::unix::net::UnixStream::connect(p).is_ok() {
            return;
        }
        if let Some(s) = child.try_wait().unwrap() {
            panic!("cidcached exited during start-up: {s}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("cidcached did not create its socket in time");
}

pub fn stat(c: &Client, name: &str) -> u64 {
    c.stats()
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no stat {name}"))
        .1
}

/// Polls `f` until it returns true or `t` passes.
pub fn eventually(t: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < t {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// Self-describing content: 8-byte seed, then a xorshift stream of that seed. A reader can tell
/// from the bytes alone whether they are exactly what was written for that seed.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len.max(8));
    v.extend_from_slice(&seed.to_le_bytes());
    let mut x = seed | 1;
    while v.len() < len.max(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len.max(8));
    v
}

pub fn check_content(bytes: &[u8]) -> Result<u64, String> {
    if bytes.len() < 8 {
        return Err("object shorter than its seed".into());
    }
    let seed = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let want = content(seed, bytes.len());
    if want != bytes {
        let pos = want.iter().zip(bytes).position(|(a, b)| a != b).unwrap();
        return Err(format!("bytes differ from seed {seed:#x} at offset {pos}"));
    }
    Ok(seed)
}
