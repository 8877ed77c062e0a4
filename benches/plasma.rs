//! Side-by-side Plasma benchmark: the reference `plasma-store-server` from the pyarrow 11.0.0
//! wheel (skipped with a message if absent) against `cidcached plasma`, driven by the same Rust
//! Plasma client code; plus a native zero-copy get against a Plasma get of the same object.
//!
//! `cargo bench -p cidcache --bench plasma`. The reference store is found through
//! `$PLASMA_REAL_STORE`, else `$PLASMA_VENV` or `target/plasma-venv` (made by
//! `tests/python/plasma/run.sh`). Prints a table; asserts nothing about timings.

use cidcache::plasma::client::PlasmaClient;
use cidcache::plasma::codec::ObjectId;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MEMORY: u64 = 1_000_000_000;
const SMALL: usize = 64;
const BIG: usize = 64 << 20;

fn real_store() -> Option<PathBuf> {
    // The venv lives in target/ (next to target/release, where the harness looks).
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/x");
    cidcache::harness::plasma::find_reference(&target)
}

struct Store {
    child: Child,
    sock: PathBuf,
    native: PathBuf,
    _dir: tempfile::TempDir,
}

impl Store {
    fn start(bin: &Path, ours: bool) -> Store {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("plasma.sock");
        let native = dir.path().join("native.sock");
        let mut cmd = Command::new(bin);
        if ours {
            cmd.arg("plasma").arg("--native-socket").arg(&native);
        }
        let child = cmd
            .arg("-s")
            .arg(&sock)
            .arg("-m")
            .arg(MEMORY.to_string())
            .env("CIDCACHE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn store");
        let t = Instant::now();
        while !sock.exists() || (ours && !native.exists()) {
            assert!(t.elapsed() < Duration::from_secs(10), "store did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Store {
            child,
            sock,
            native,
            _dir: dir,
        }
    }
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

fn oid(tag: u8, n: u32) -> ObjectId {
    let mut id = [tag; 20];
    id[..4].copy_from_slice(&n.to_le_bytes());
    id
}

#[derive(Default, Clone, Copy)]
struct Figures {
    create_seal: f64,
    get: f64,
    put_gbs: f64,
}

fn measure(store: &Store) -> Figures {
    let c = PlasmaClient::connect(&store.sock, Some(50)).expect("connect");
    let n = 20_000u32;
    let meta: &[u8] = b"";
    let payload = [0xA5u8; SMALL];
    // Warm-up.
    for i in 0..1000 {
        let mut b = c.create(&oid(1, i), SMALL as u64, meta).expect("create");
        b.as_mut_slice().copy_from_slice(&payload);
        drop(b);
        c.seal(&oid(1, i)).expect("seal");
    }
    let t = Instant::now();
    for i in 0..n {
        let mut b = c.create(&oid(2, i), SMALL as u64, meta).expect("create");
        b.as_mut_slice().copy_from_slice(&payload);
        drop(b);
        c.seal(&oid(2, i)).expect("seal");
    }
    let create_seal = n as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    for i in 0..n {
        let g = c.get(&[oid(2, i)], 0).expect("get");
        assert!(g[0].is_some());
    }
    let get = n as f64 / t.elapsed().as_secs_f64();

    let src = vec![0x5Au8; BIG];
    let rounds = 12u32;
    let mut bytes = 0u64;
    let mut spent = Duration::ZERO;
    for i in 0..rounds {
        let id = oid(3, i);
        let t = Instant::now();
        let mut b = c.create(&id, BIG as u64, meta).expect("create big");
        b.as_mut_slice().copy_from_slice(&src);
        drop(b);
        c.seal(&id).expect("seal big");
        if i >= 2 {
            spent += t.elapsed();
            bytes += BIG as u64;
        }
        c.delete(&[id]).expect("delete");
    }
    Figures {
        create_seal,
        get,
        put_gbs: bytes as f64 / spent.as_secs_f64() / 1e9,
    }
}

/// Native zero-copy hit against a Plasma get of the same object (ours only).
fn native_vs_plasma(store: &Store) -> (f64, f64) {
    let p = PlasmaClient::connect(&store.sock, Some(50)).expect("connect");
    let id = oid(9, 9);
    p.create_and_seal(&id, &[1u8; 4096], b"").expect("put");
    let n = cidcache::Client::connect_socket(&store.native).expect("native connect");
    let iters = 200_000u32;
    for _ in 0..1000 {
        let _ = n.get(&id).expect("native get");
    }
    let t = Instant::now();
    let mut sum = 0u64;
    for _ in 0..iters {
        let r = n.get(&id).expect("native get").expect("present");
        sum += r.data()[0] as u64;
    }
    let native_ns = t.elapsed().as_nanos() as f64 / iters as f64;
    let piters = 20_000u32;
    let t = Instant::now();
    for _ in 0..piters {
        let g = p.get(&[id], 0).expect("plasma get");
        sum += g[0].as_ref().expect("present").data()[0] as u64;
    }
    let plasma_ns = t.elapsed().as_nanos() as f64 / piters as f64;
    assert!(sum > 0);
    (native_ns, plasma_ns)
}

fn main() {
    // `cargo bench` passes harness flags such as `--bench`; nothing to parse.
    let ours_bin = PathBuf::from(env!("CARGO_BIN_EXE_cidcached"));
    let reference = match real_store() {
        Some(bin) => {
            let s = Store::start(&bin, false);
            Some(measure(&s))
        }
        None => {
            println!(
                "reference plasma-store-server not found (set PLASMA_REAL_STORE or PLASMA_VENV, or run tests/python/plasma/run.sh): comparing nothing"
            );
            None
        }
    };
    let s = Store::start(&ours_bin, true);
    let ours = measure(&s);
    let (native_ns, plasma_ns) = native_vs_plasma(&s);
    drop(s);

    println!();
    println!(
        "{:<34} {:>16} {:>16} {:>8}",
        "metric", "plasma-store", "cidcached", "ratio"
    );
    let row = |name: &str, r: Option<f64>, o: f64, unit: &str| match r {
        Some(r) => println!(
            "{:<34} {:>12.0} {unit:<3} {:>12.0} {unit:<3} {:>7.2}x",
            name,
            r,
            o,
            o / r
        ),
        None => println!("{:<34} {:>16} {:>12.0} {unit:<3}", name, "-", o),
    };
    row(
        "create+seal round trips (64 B)",
        reference.map(|f| f.create_seal),
        ours.create_seal,
        "/s",
    );
    row(
        "get round trips (64 B)",
        reference.map(|f| f.get),
        ours.get,
        "/s",
    );
    match reference {
        Some(r) => println!(
            "{:<34} {:>11.2} GB/s {:>11.2} GB/s {:>7.2}x",
            "put bandwidth (64 MiB objects)",
            r.put_gbs,
            ours.put_gbs,
            ours.put_gbs / r.put_gbs
        ),
        None => println!(
            "{:<34} {:>16} {:>11.2} GB/s",
            "put bandwidth (64 MiB objects)", "-", ours.put_gbs
        ),
    }
    println!();
    println!(
        "same 4 KiB object in cidcached: native zero-copy get {native_ns:.0} ns, Plasma get {plasma_ns:.0} ns: native is {:.0}x faster",
        plasma_ns / native_ns
    );
}
