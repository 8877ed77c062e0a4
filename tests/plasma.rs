//! Plasma integration tests: the Rust Plasma client against the REAL Arrow 11
//! plasma-store-server (from a venv with pyarrow 11; skipped with a printed
//! reason if absent) and against `cidcached plasma`; malformed-frame
//! robustness, CLI behaviour and SIGTERM handling; digest compatibility with
//! pyarrow; one store shared by Plasma and native clients.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cidcache::plasma::client::{compute_object_digest, ClientError, PlasmaClient};
use cidcache::plasma::codec::{encode_header, ObjectId, Request};

/// The venv with pyarrow 11: `$PLASMA_VENV`, else `target/plasma-venv` (made by
/// `tests/python/plasma/run.sh`).
fn venv() -> PathBuf {
    match std::env::var_os("PLASMA_VENV") {
        Some(v) => PathBuf::from(v),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/plasma-venv"),
    }
}

fn real_store() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("PLASMA_REAL_STORE") {
        return Some(PathBuf::from(p)).filter(|p| p.exists());
    }
    let lib = venv().join("lib");
    for e in std::fs::read_dir(lib).ok()?.flatten() {
        let p = e.path().join("site-packages/pyarrow/plasma-store-server");
        if p.exists() {
            return Some(p);
        }
    }
    None
}

/// Marker path meaning "`cidcached plasma`" (started through [`Store::start`]).
fn our_store() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cidcached"))
}

fn is_ours(bin: &Path) -> bool {
    bin == our_store()
}

struct Store {
    child: Child,
    sock: PathBuf,
    native: PathBuf,
    _dir: tempfile::TempDir,
}

impl Store {
    fn start(bin: &Path, mem: u64, extra: &[&str]) -> Store {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("plasma.sock");
        let native = dir.path().join("native.sock");
        let mut cmd = Command::new(bin);
        if is_ours(bin) {
            cmd.arg("plasma").arg("--native-socket").arg(&native);
        }
        let child = cmd
            .arg("-s")
            .arg(&sock)
            .arg("-m")
            .arg(mem.to_string())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while !sock.exists() {
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

    fn client(&self) -> PlasmaClient {
        PlasmaClient::connect(&self.sock, Some(50)).unwrap()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM and wait; returns the exit code.
    fn terminate(mut self) -> Option<i32> {
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            // Generous: a loaded CI machine can take seconds to schedule the store's exit.
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "store ignored SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn oid(n: u32) -> ObjectId {
    let mut id = [0u8; 20];
    id[..4].copy_from_slice(&n.to_le_bytes());
    id[19] = 0xAB;
    id
}

/// The client feature tour; identical expectations for both stores.
fn client_suite(bin: &Path) {
    let store = Store::start(bin, 10_000_000, &[]);
    let a = store.client();
    let b = store.client();
    assert_eq!(a.store_capacity(), 10_000_000);

    // create / write / seal / get from another client
    let mut buf = a.create(&oid(1), 100, b"meta").unwrap();
    buf.as_mut_slice().copy_from_slice(&[7u8; 100]);
    assert!(a.contains(&oid(1)).unwrap(), "held locally");
    assert!(!b.contains(&oid(1)).unwrap(), "unsealed invisible");
    let none = b.get(&[oid(1)], 0).unwrap();
    assert!(none[0].is_none());
    a.seal(&oid(1)).unwrap();
    assert!(matches!(a.seal(&oid(1)), Err(ClientError::AlreadySealed)));
    drop(buf);
    let got = b.get(&[oid(1), oid(999)], 100).unwrap();
    let o = got[0].as_ref().unwrap();
    assert_eq!(o.data(), &[7u8; 100][..]);
    assert_eq!(o.metadata(), b"meta");
    assert!(got[1].is_none());
    assert_eq!(
        a.hash(&oid(1)).unwrap(),
        compute_object_digest(&[7u8; 100], b"meta")
    );
    assert!(matches!(
        a.create(&oid(1), 1, b""),
        Err(ClientError::ObjectExists)
    ));

    // list reflects ref counts
    let l = a.list().unwrap();
    let e = l.iter().find(|i| i.object_id == oid(1)).unwrap();
    assert_eq!((e.data_size, e.metadata_size, e.ref_count), (100, 4, 1));
    assert_eq!(
        e.digest.as_deref(),
        Some(&compute_object_digest(&[7u8; 100], b"meta")[..])
    );
    drop(got);
    // Release has no reply: ask on the same connection so it is ordered
    // after b's ReleaseRequest.
    let l = b.list().unwrap();
    assert_eq!(
        l.iter().find(|i| i.object_id == oid(1)).unwrap().ref_count,
        0
    );

    // subscribe, create_and_seal, batch, delete, notifications
    a.subscribe().unwrap();
    let (id, d, m) = a.get_notification().unwrap();
    assert_eq!((id, d, m), (oid(1), 100, 4));
    b.create_and_seal(&oid(2), b"hello", b"").unwrap();
    assert_eq!(a.get_notification().unwrap(), (oid(2), 5, 0));
    b.create_and_seal_batch(&[oid(3), oid(4)], &[b"x", b"yy"], &[b"", b"m"])
        .unwrap();
    assert_eq!(a.get_notification().unwrap(), (oid(3), 1, 0));
    assert_eq!(a.get_notification().unwrap(), (oid(4), 2, 1));
    assert!(matches!(
        b.create_and_seal_batch(&[oid(5), oid(2)], &[b"x", b"y"], &[b"", b""]),
        Err(ClientError::ObjectExists)
    ));
    assert!(!a.contains(&oid(5)).unwrap(), "failed batch rolled back");
    let g = b.get(&[oid(2)], -1).unwrap();
    assert_eq!(g[0].as_ref().unwrap().data(), b"hello");
    b.delete(&[oid(2), oid(3)]).unwrap(); // oid(2) deferred (held by b)
    assert_eq!(a.get_notification().unwrap(), (oid(3), -1, -1));
    assert!(a.contains(&oid(2)).unwrap());
    drop(g); // release -> deferred delete
    assert_eq!(a.get_notification().unwrap(), (oid(2), -1, -1));
    assert!(!a.contains(&oid(2)).unwrap());

    // a Get that waits for another client's seal
    let t = Instant::now();
    let none = b.get(&[oid(6)], 200).unwrap();
    assert!(none[0].is_none());
    assert!(t.elapsed() >= Duration::from_millis(150));

    // abort
    let buf = a.create(&oid(7), 10, b"").unwrap();
    drop(buf);
    a.abort(&oid(7)).unwrap();
    assert!(!b.contains(&oid(7)).unwrap());
    assert!(a.list().unwrap().iter().all(|i| i.object_id != oid(7)));

    // evict: LRU order is order of last release
    let before: Vec<ObjectId> = a.list().unwrap().iter().map(|i| i.object_id).collect();
    assert!(before.contains(&oid(1)));
    a.refresh_lru(&[oid(1)]).unwrap();
    let evicted = a.evict(1).unwrap();
    assert!(evicted >= 1);
    // oid(4) (3 bytes) was released after oid(1) but oid(1) was refreshed
    // to the MRU end, so oid(4) goes first.
    assert!(!a.contains(&oid(4)).unwrap());

    // options & debug string
    a.set_client_options("rust", 1000).unwrap();
    assert!(matches!(
        a.set_client_options("rust", 1000),
        Err(ClientError::StoreFull)
    ));
    assert!(matches!(
        b.set_client_options("big", 9_000_000),
        Err(ClientError::StoreFull)
    ));
    let s = a.debug_string().unwrap();
    assert!(s.contains("allocation limit: 10000000"), "{s}");

    // store full
    assert!(matches!(
        a.create(&oid(8), 20_000_000, b""),
        Err(ClientError::StoreFull)
    ));

    // disconnect destroys unsealed creations
    let c = store.client();
    let buf = c.create(&oid(9), 10, b"").unwrap();
    std::mem::forget(buf); // keep the local count; we disconnect anyway
    c.disconnect().unwrap();
    let t = Instant::now();
    while a.list().unwrap().iter().any(|i| i.object_id == oid(9)) {
        assert!(t.elapsed() < Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(10));
    }
    drop((a, b));
    assert_eq!(store.terminate(), Some(0));
}

#[test]
fn rust_client_against_real_store() {
    let Some(bin) = real_store() else {
        println!(
            "SKIPPED: real plasma-store-server not found (set PLASMA_REAL_STORE or PLASMA_VENV, or run tests/python/plasma/run.sh)"
        );
        return;
    };
    client_suite(&bin);
}

#[test]
fn rust_client_against_our_store() {
    client_suite(&our_store());
}

fn large_object_round_trip(bin: &Path) {
    let store = Store::start(bin, 50_000_000, &[]);
    let a = store.client();
    let b = store.client();
    let n = (3 << 20) + 123;
    let mut buf = a.create(&oid(1), n as u64, b"md").unwrap();
    for (i, x) in buf.as_mut_slice().iter_mut().enumerate() {
        *x = (i % 251) as u8;
    }
    a.seal(&oid(1)).unwrap();
    drop(buf);
    let got = b.get(&[oid(1)], 1000).unwrap();
    let o = got[0].as_ref().unwrap();
    assert_eq!(o.data().len(), n);
    assert!(o
        .data()
        .iter()
        .enumerate()
        .all(|(i, x)| *x == (i % 251) as u8));
    let l = b.list().unwrap();
    let want = compute_object_digest(o.data(), b"md");
    assert_eq!(l[0].digest.as_deref(), Some(&want[..]));
}

#[test]
fn large_object_real_store() {
    let Some(bin) = real_store() else {
        println!("SKIPPED: real plasma-store-server not found");
        return;
    };
    large_object_round_trip(&bin);
}

#[test]
fn large_object_our_store() {
    large_object_round_trip(&our_store());
}

/// pyarrow computes the digest itself (`PlasmaClient.hash`); ours must agree,
/// including the chunked variant for data >= 1 MiB.
#[test]
fn digest_matches_pyarrow() {
    let py = venv().join("bin/python");
    if !py.exists() {
        println!(
            "SKIPPED: no venv with pyarrow 11 at {} (run tests/python/plasma/run.sh or set PLASMA_VENV)",
            venv().display()
        );
        return;
    }
    let store = Store::start(&our_store(), 100_000_000, &[]);
    let sizes = [
        0usize,
        1,
        1000,
        (1 << 20) - 1,
        1 << 20,
        (1 << 20) + 65,
        5_000_017,
    ];
    let script = format!(
        r#"
import sys, warnings
warnings.simplefilter("ignore")
import pyarrow as pa
import pyarrow.plasma as plasma
c = plasma.connect({sock:?})
for n in {sizes:?}:
    data = bytes((i * 31 + 7) % 256 for i in range(n))
    oid = plasma.ObjectID((n).to_bytes(20, "little"))
    b = c.create(oid, n, metadata=b"xyz")
    pa.FixedSizeBufferWriter(b).write(data)
    c.seal(oid)
    print(c.hash(oid).hex())
"#,
        sock = store.sock.to_str().unwrap(),
        sizes = sizes
    );
    let out = Command::new(&py).arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(lines.len(), sizes.len());
    for (n, line) in sizes.iter().zip(lines) {
        let data: Vec<u8> = (0..*n).map(|i| ((i * 31 + 7) % 256) as u8).collect();
        let d = compute_object_digest(&data, b"xyz");
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, line, "size {n}");
    }
}

fn raw_connect(store: &Store) -> UnixStream {
    let s = UnixStream::connect(&store.sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Sends `bytes` and expects the server to close the connection (on its
/// own, or after our EOF when `half_close`).
fn expect_closed(store: &Store, bytes: &[u8], half_close: bool) {
    let mut s = raw_connect(store);
    let _ = s.write_all(bytes);
    if half_close {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("connection not closed: {e} after {bytes:02x?}"),
        }
    }
}

#[test]
fn malformed_frames_never_crash_our_store() {
    let mut store = Store::start(&our_store(), 1_000_000, &[]);
    let good = store.client();
    good.create_and_seal(&oid(1), b"payload", b"").unwrap();
    let mut g = good.get(&[oid(1)], 0).unwrap();
    let held = g.pop().flatten().unwrap();

    let valid_create = Request::Create {
        object_id: oid(2),
        evict_if_full: true,
        data_size: 10,
        metadata_size: 0,
        device_num: 0,
    }
    .encode();
    let mut cases: Vec<Vec<u8>> = Vec::new();
    // wrong version
    let mut f = encode_header(19, 12).to_vec();
    f[0] = 1;
    f.extend_from_slice(&Request::Connect.encode());
    cases.push(f);
    // unknown / unhandled types
    for ty in [12i64, 24, 25, 26, 27, 36, 1000, -1] {
        let mut f = encode_header(ty, 12).to_vec();
        f.extend_from_slice(&Request::Connect.encode());
        cases.push(f);
    }
    // absurd and negative sizes
    cases.push(encode_header(1, usize::MAX >> 1).to_vec());
    let mut f = encode_header(1, 0).to_vec();
    f[16..24].copy_from_slice(&(-5i64).to_le_bytes());
    cases.push(f);
    // lying flatbuffers: root offset out of range, string length lies, empty body
    let mut body = valid_create.clone();
    body[0] = 0xF0;
    cases.push([&encode_header(1, body.len())[..], &body].concat());
    let mut body = valid_create.clone();
    let n = body.len();
    body[n - 28] = 0xFF; // string length field
    cases.push([&encode_header(1, body.len())[..], &body].concat());
    cases.push(encode_header(9, 0).to_vec());
    // random garbage bodies: the store either closes the connection or (for
    // bodyless request types such as List) answers; either way it survives.
    let mut garbage = Vec::new();
    let mut x = 0x1234_5678u32;
    for _ in 0..40 {
        let mut body = Vec::new();
        for _ in 0..64 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            body.push(x as u8);
        }
        let ty = (x % 36) as i64;
        garbage.push([&encode_header(ty, body.len())[..], &body].concat());
    }
    for c in &cases {
        expect_closed(&store, c, false);
        assert!(store.alive(), "store died on {c:02x?}");
    }
    for c in &garbage {
        expect_closed(&store, c, true);
        assert!(store.alive(), "store died on {c:02x?}");
    }
    // truncated body, then EOF from the client
    expect_closed(
        &store,
        &[&encode_header(1, 500)[..], &valid_create].concat(),
        true,
    );
    expect_closed(&store, &encode_header(1, 500)[..10], true);
    assert!(store.alive());
    // Absurd sizes in a well-formed Create are a normal OutOfMemory reply.
    let other = store.client();
    assert!(matches!(
        other.create(&oid(3), u64::MAX / 2, b""),
        Err(ClientError::StoreFull)
    ));
    assert!(matches!(
        other.create(&oid(4), 1 << 62, &[0u8; 4]),
        Err(ClientError::StoreFull)
    ));
    // The good client is undisturbed.
    assert_eq!(held.data(), b"payload");
    assert!(good.contains(&oid(1)).unwrap());
    good.create_and_seal(&oid(5), b"more", b"").unwrap();
    let again = other.get(&[oid(5)], 1000).unwrap();
    assert_eq!(again[0].as_ref().unwrap().data(), b"more");
    drop((held, again));
    assert_eq!(store.terminate(), Some(0));
}

#[test]
fn notification_backlog_does_not_block() {
    // Many notifications queued for a subscriber that does not read.
    let store = Store::start(&our_store(), 100_000_000, &[]);
    let a = store.client();
    a.subscribe().unwrap();
    for i in 0..5000u32 {
        a.create_and_seal(&oid(i), &[1u8; 10], b"").unwrap();
    }
    for i in 0..5000u32 {
        assert_eq!(a.get_notification().unwrap(), (oid(i), 10, 0));
    }
}

#[test]
fn external_store_eviction_and_restore() {
    let store = Store::start(&our_store(), 1_000_000, &["-e", "hashtable://test"]);
    let a = store.client();
    for i in 0..7u32 {
        a.create_and_seal(&oid(i), &vec![i as u8; 300_000], b"")
            .unwrap();
    }
    for i in 0..7u32 {
        assert!(a.contains(&oid(i)).unwrap());
    }
    let g = a.get(&[oid(0)], 1000).unwrap();
    assert_eq!(g[0].as_ref().unwrap().data(), &vec![0u8; 300_000][..]);
}

#[test]
fn parquet_external_store_spills_evicted_objects() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("parquet://{}", dir.path().join("spill").display());
    let data = |i: u32| -> Vec<u8> { (0..300_000u32).map(|j| (i * 7 + j) as u8).collect() };
    {
        let store = Store::start(&our_store(), 1_000_000, &["-e", &endpoint]);
        let a = store.client();
        for i in 0..7u32 {
            a.create_and_seal(&oid(i), &data(i), b"m").unwrap();
        }
        for i in 0..7u32 {
            assert!(a.contains(&oid(i)).unwrap(), "{i}");
        }
        let g = a.get(&[oid(0)], 1000).unwrap();
        let o = g[0].as_ref().expect("restored from Parquet");
        assert_eq!(o.data(), &data(0)[..]);
        assert_eq!(o.metadata(), b"m");
        // The other spilled objects reach a Parquet file (the writer batches for a few ms).
        let t = std::time::Instant::now();
        while !std::fs::read_dir(dir.path().join("spill"))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
        {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "nothing was spilled to Parquet"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let (c, _, e) = run(
        &our_store(),
        &[
            "-s",
            "/tmp/unused.sock",
            "-m",
            "1000",
            "-e",
            "parquet://relative",
        ],
    );
    assert_eq!(c, Some(1));
    assert!(e.contains("parquet:///ABSOLUTE/DIRECTORY"), "{e}");
}

fn run(bin: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin).arg("plasma").args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn command_line() {
    let bin = our_store();
    let (c, o, _) = run(&bin, &["--version"]);
    assert_eq!(c, Some(0));
    assert_eq!(o.trim(), "plasma-store-server version 11.0.0");
    let (c, _, e) = run(&bin, &[]);
    assert_eq!(c, Some(1));
    assert!(e.contains("please specify socket for incoming connections with -s, and the amount of memory (in bytes) to use with -m"));
    let (c, _, e) = run(&bin, &["-m", "1000"]);
    assert_eq!(c, Some(1));
    assert!(
        e.contains("plasma-store-server: please specify socket for incoming connections with -s")
    );
    let (c, _, e) = run(&bin, &["-s", "/tmp/x.sock"]);
    assert_eq!(c, Some(1));
    assert!(e.contains("please specify the amount of memory (in bytes) to use with -m"));
    let (c, _, e) = run(&bin, &["-s", "/tmp/x.sock", "-m", "1G"]);
    assert_eq!(c, Some(1));
    assert!(e.contains("-m switch takes memory in bytes, with no letter suffix allowed"));
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s");
    let (c, _, e) = run(
        &bin,
        &[
            "-s",
            sock.to_str().unwrap(),
            "-m",
            "1000",
            "-e",
            "foo://bar",
        ],
    );
    assert_eq!(c, Some(1));
    assert!(e.contains("no such external store \"foo\""), "{e}");
    let (c, _, _) = run(
        &bin,
        &["-s", sock.to_str().unwrap(), "-m", "1000", "-e", "nocolon"],
    );
    assert_eq!(c, Some(1));
    // --s=X -m=Y form, then SIGTERM exits 0
    for form in [["--s=", "-m="], ["-s=", "--m="]] {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("p.sock");
        let child = Command::new(&bin)
            .arg("plasma")
            .arg(format!("{}{}", form[0], sock.display()))
            .arg(format!("{}100000", form[1]))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while !sock.exists() {
            assert!(t.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(10));
        }
        let st = Store {
            child,
            native: dir.path().join("unused"),
            sock,
            _dir: dir,
        };
        let c = st.client();
        assert_eq!(c.store_capacity(), 100000);
        assert_eq!(st.terminate(), Some(0));
    }
}

fn native(store: &Store) -> cidcache::Client {
    let t = Instant::now();
    loop {
        match cidcache::Client::connect_socket(&store.native) {
            Ok(c) => return c,
            Err(e) => {
                assert!(t.elapsed() < Duration::from_secs(10), "native connect: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// One store for both worlds: Plasma puts are native hits by their 20-byte id, native puts
/// under 20-byte keys are Plasma objects, and a Plasma Get waiting for an id is answered by a
/// native put.
#[test]
fn plasma_and_native_share_one_store() {
    let store = Store::start(&our_store(), 50_000_000, &[]);
    let p = store.client();
    let n = native(&store);

    p.create_and_seal(&oid(1), b"from plasma", b"meta").unwrap();
    let r = n
        .get(&oid(1))
        .unwrap()
        .expect("native hit on a Plasma object");
    assert_eq!(r.data(), b"from plasma");
    drop(r);

    n.put(&oid(2), b"from native").unwrap();
    assert!(p.contains(&oid(2)).unwrap());
    let g = p.get(&[oid(2)], 0).unwrap();
    assert_eq!(g[0].as_ref().unwrap().data(), b"from native");
    assert!(p.list().unwrap().iter().any(|i| i.object_id == oid(2)));
    // Taken in both namespaces.
    assert!(p.create(&oid(2), 5, b"").is_err());
    assert!(n.put(&oid(1), b"again").is_err());
    // Natively, a Plasma object cannot be deleted behind the Plasma store's back.
    assert!(n.delete(&oid(1)).is_err());
    drop(g);

    // A Plasma get waiting on an id is answered by a native put.
    let sock = store.sock.clone();
    let waiter = std::thread::spawn(move || {
        let c = PlasmaClient::connect(&sock, Some(50)).unwrap();
        let g = c.get(&[oid(3)], 10_000).unwrap();
        g[0].as_ref().map(|b| b.data().to_vec())
    });
    std::thread::sleep(Duration::from_millis(300));
    n.put(&oid(3), b"late").unwrap();
    assert_eq!(waiter.join().unwrap().as_deref(), Some(&b"late"[..]));

    // A native reader's pin keeps a Plasma-deleted object's bytes intact while Plasma
    // reuses the memory for new objects.
    p.create_and_seal(&oid(4), &[7u8; 100_000], b"").unwrap();
    let pinned = n.get(&oid(4)).unwrap().unwrap();
    p.delete(&[oid(4)]).unwrap();
    assert!(!p.contains(&oid(4)).unwrap());
    for i in 10..40u32 {
        p.create_and_seal(&oid(i), &[0xEE; 100_000], b"").unwrap();
    }
    assert!(pinned.data().iter().all(|&b| b == 7));
    drop(pinned);
    assert!(n.get(&oid(4)).unwrap().is_none());

    // Plasma eviction removes objects from the native index too.
    let evicted = p.evict(1).unwrap();
    assert!(evicted >= 1);
    let gone = (1..40u32)
        .filter(|i| !p.contains(&oid(*i)).unwrap())
        .count();
    assert!(gone > 0);
    assert_eq!(store.terminate(), Some(0));
}

/// Plasma's exact accounting against -m holds with native objects in the same memory, and a
/// Plasma client holding a native object keeps it from native eviction.
#[test]
fn plasma_accounting_with_native_objects() {
    let store = Store::start(&our_store(), 4_000_000, &[]);
    let p = store.client();
    let n = native(&store);
    n.put(&oid(100), &[1u8; 1_000_000]).unwrap();
    let held = p.get(&[oid(100)], 0).unwrap();
    // Fill Plasma to exactly -m, several times over (eviction of Plasma objects only).
    for round in 0..3u32 {
        for i in 0..4u32 {
            p.create_and_seal(
                &oid(1000 + round * 10 + i),
                &vec![round as u8; 1_000_000],
                b"",
            )
            .unwrap();
        }
    }
    // The native object the Plasma client holds is still there and intact.
    assert!(held[0].as_ref().unwrap().data().iter().all(|&b| b == 1));
    assert!(n.get(&oid(100)).unwrap().is_some());
    assert_eq!(store.terminate(), Some(0));
}
