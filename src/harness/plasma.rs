//! The Plasma side-by-side: the same workload (create+seal, get, 64 MiB puts) against the
//! reference `plasma-store-server` of the pyarrow 11.0.0 wheel and against `cidcached plasma`,
//! through the same Rust Plasma client, with a memcpy baseline for bandwidth.

use crate::error::{Error, Result};
use crate::plasma::client::PlasmaClient;
use crate::plasma::codec::ObjectId;
use serde::{Deserialize, Serialize};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Rates of one Plasma store.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct PlasmaFigures {
    /// create + write + seal round trips per second, 64 B objects.
    pub create_seal_per_s: f64,
    /// get round trips per second, 64 B objects.
    pub get_per_s: f64,
    /// Put bandwidth (create, write, seal) of 64 MiB objects, GB/s.
    pub put_gbs: f64,
}

/// The side-by-side result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlasmaReport {
    /// The reference store, when found.
    pub reference: Option<PlasmaFigures>,
    /// Path of the reference binary, or why it was skipped.
    pub reference_note: String,
    /// `cidcached plasma`.
    pub ours: PlasmaFigures,
    /// memcpy of 64 MiB into a pre-faulted buffer, GB/s.
    pub memcpy_gbs: f64,
}

/// Finds `plasma-store-server`: `$PLASMA_REAL_STORE`, else under `$PLASMA_VENV`, else under
/// `target/plasma-venv` beside the build directory holding `exe` (made by
/// `tests/python/plasma/run.sh`).
pub fn find_reference(exe: &Path) -> Option<PathBuf> {
    if let Ok(p) = std::env::var("PLASMA_REAL_STORE") {
        return Some(PathBuf::from(p)).filter(|p| p.exists());
    }
    let venv = match std::env::var_os("PLASMA_VENV") {
        Some(v) => PathBuf::from(v),
        None => exe.parent()?.parent()?.join("plasma-venv"),
    };
    for e in std::fs::read_dir(venv.join("lib")).ok()?.flatten() {
        let p = e.path().join("site-packages/pyarrow/plasma-store-server");
        if p.exists() {
            return Some(p);
        }
    }
    None
}

struct Store {
    child: Child,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        );
        let _ = self.child.wait();
    }
}

fn start(bin: &Path, ours: bool, memory: u64) -> Result<Store> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("cannot create a temporary dir", e))?;
    let sock = dir.path().join("plasma.sock");
    let mut cmd = Command::new(bin);
    if ours {
        cmd.arg("plasma");
    }
    let mut child = cmd
        .arg("-s")
        .arg(&sock)
        .arg("-m")
        .arg(memory.to_string())
        .env("CIDCACHE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::io(format!("cannot start {}", bin.display()), e))?;
    let t = Instant::now();
    while !sock.exists() {
        if t.elapsed() > Duration::from_secs(15) || matches!(child.try_wait(), Ok(Some(_))) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Internal(format!(
                "{} did not start serving {}",
                bin.display(),
                sock.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Store {
        child,
        sock,
        _dir: dir,
    })
}

fn oid(tag: u8, n: u32) -> ObjectId {
    let mut id = [tag; 20];
    id[..4].copy_from_slice(&n.to_le_bytes());
    id
}

fn perr(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Protocol(format!("Plasma {what}: {e}"))
}

fn measure(store: &Store, n: u32, big_rounds: u32) -> Result<PlasmaFigures> {
    const SMALL: usize = 64;
    const BIG: usize = 64 << 20;
    let c = PlasmaClient::connect(&store.sock, Some(50)).map_err(|e| perr("connect", e))?;
    let payload = [0xA5u8; SMALL];
    let put = |tag: u8, i: u32| -> Result<()> {
        let mut b = c
            .create(&oid(tag, i), SMALL as u64, b"")
            .map_err(|e| perr("create", e))?;
        b.as_mut_slice().copy_from_slice(&payload);
        drop(b);
        c.seal(&oid(tag, i)).map_err(|e| perr("seal", e))
    };
    for i in 0..n / 10 {
        put(1, i)?;
    }
    let t = Instant::now();
    for i in 0..n {
        put(2, i)?;
    }
    let create_seal_per_s = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..n {
        let g = c.get(&[oid(2, i)], 0).map_err(|e| perr("get", e))?;
        if g.first().is_none_or(|o| o.is_none()) {
            return Err(perr("get", "a sealed object was not found"));
        }
    }
    let get_per_s = n as f64 / t.elapsed().as_secs_f64();
    let src = vec![0x5Au8; BIG];
    let (mut bytes, mut spent) = (0u64, Duration::ZERO);
    for i in 0..big_rounds + 1 {
        let id = oid(3, i);
        let t = Instant::now();
        let mut b = c
            .create(&id, BIG as u64, b"")
            .map_err(|e| perr("create 64 MiB", e))?;
        b.as_mut_slice().copy_from_slice(&src);
        drop(b);
        c.seal(&id).map_err(|e| perr("seal 64 MiB", e))?;
        if i > 0 {
            spent += t.elapsed();
            bytes += BIG as u64;
        }
        c.delete(&[id]).map_err(|e| perr("delete", e))?;
    }
    Ok(PlasmaFigures {
        create_seal_per_s,
        get_per_s,
        put_gbs: bytes as f64 / spent.as_secs_f64().max(1e-9) / 1e9,
    })
}

/// memcpy bandwidth of 64 MiB into a pre-faulted buffer, GB/s (mean of `rounds`).
pub fn memcpy_gbs(rounds: u32) -> f64 {
    let size = 64usize << 20;
    let src = vec![0x5au8; size];
    let mut dst = vec![0u8; size];
    dst.copy_from_slice(&src);
    let t = Instant::now();
    for _ in 0..rounds.max(1) {
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
    }
    (size as f64 * rounds.max(1) as f64) / t.elapsed().as_secs_f64() / 1e9
}

/// Runs the side-by-side with `n` small operations and `big_rounds` 64 MiB puts per store.
pub fn compare(cidcached: &Path, exe: &Path, n: u32, big_rounds: u32) -> Result<PlasmaReport> {
    let memory = 1_000_000_000;
    let (reference, reference_note) = match find_reference(exe) {
        // A reference store that fails is reported, not fatal: it is not ours to fix.
        Some(bin) => match start(&bin, false, memory).and_then(|s| measure(&s, n, big_rounds)) {
            Ok(f) => (Some(f), bin.display().to_string()),
            Err(e) => (None, format!("{}: {e}: skipped", bin.display())),
        },
        None => (
            None,
            "reference plasma-store-server not found (set PLASMA_REAL_STORE or PLASMA_VENV, or run tests/python/plasma/run.sh): skipped".to_string(),
        ),
    };
    let s = start(cidcached, true, memory)?;
    let ours = measure(&s, n, big_rounds)?;
    drop(s);
    Ok(PlasmaReport {
        reference,
        reference_note,
        ours,
        memcpy_gbs: memcpy_gbs(big_rounds.max(3)),
    })
}
