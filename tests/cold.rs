//! The cold tier on object storage (`--cold URL`): real daemons, a real bucket (a local
//! directory through `object_store`'s file backend, and a real MinIO server when
//! `CIDCACHE_MINIO` names its binary, see `scripts/minio.sh`).

mod common;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use cidcache::{Client, Code};
use common::{eventually, Daemon};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const SMALL: &[&str] = &["-m", "8M", "--arena-size", "2M"];
const LONG: Duration = Duration::from_secs(180);

fn content(key: &[u8], len: usize) -> Vec<u8> {
    let mut x = xxhash_rust::xxh3::xxh3_64(key) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn stat(c: &Client, name: &str) -> u64 {
    c.stats()
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no stat {name}"))
        .1
}

fn key(i: usize) -> Vec<u8> {
    format!("cold-object-{i:05}").into_bytes()
}

fn fill(c: &Client, n: usize, len: usize) {
    for i in 0..n {
        let k = key(i);
        c.put(&k, &content(&k, len + i % 7)).unwrap();
    }
}

fn check_all(c: &Client, n: usize, len: usize) {
    for i in 0..n {
        let k = key(i);
        let o = c
            .get(&k)
            .unwrap()
            .unwrap_or_else(|| panic!("object {i} lost"));
        assert!(o.data() == content(&k, len + i % 7), "object {i} differs");
    }
}

fn table() -> (Arc<Schema>, Vec<RecordBatch>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("x", DataType::Float64, true),
    ]));
    let batch = |start: i64, n: i64| {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(start..start + n)) as ArrayRef,
                Arc::new(StringArray::from_iter_values(
                    (start..start + n).map(|i| format!("row {i}")),
                )),
                Arc::new(Float64Array::from_iter_values(
                    (start..start + n).map(|i| i as f64 * 0.25),
                )),
            ],
        )
        .unwrap()
    };
    let batches = vec![batch(0, 2000), batch(2000, 3000)];
    (schema, batches)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parquet files of the bucket (root and partition directories, not quarantine).
fn bucket_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() && p.file_name().is_some_and(|n| n != "quarantine") {
            out.extend(bucket_files(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The Python with pyarrow that the Plasma suite installs (`tests/python/plasma/run.sh`).
fn pyarrow_python() -> Option<PathBuf> {
    let p = match std::env::var_os("CIDCACHE_PYARROW_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/plasma-venv/bin/python"),
    };
    p.exists().then_some(p)
}

fn cold_args(url: &str) -> Vec<String> {
    let mut a: Vec<String> = SMALL.iter().map(|s| s.to_string()).collect();
    // Every warm file moves as soon as it is written.
    a.extend(["--cold", url, "--cold-min-size", "0"].map(String::from));
    a
}

fn start(args: &[String]) -> Daemon {
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    Daemon::start(&a)
}

fn file_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

#[test]
fn objects_move_to_the_bucket_and_promote_back() {
    let bucket = tempfile::tempdir().unwrap();
    let d = start(&cold_args(&file_url(bucket.path())));
    let c = d.client();
    let (schema, batches) = table();
    c.put_arrow(b"cold-table", &schema, &batches).unwrap();
    fill(&c, 40, 300 << 10);
    assert!(
        eventually(LONG, || stat(&c, "warm.cold_moved_files") > 0
            && stat(&c, "warm.files") == 0),
        "the warm files never moved to the bucket"
    );
    let files = bucket_files(bucket.path());
    let arrow = bucket
        .path()
        .join(format!("arrow-{}.parquet", hex(b"cold-table")));
    assert!(
        files.contains(&arrow),
        "the table has its own file: {files:?}"
    );
    assert!(files.len() > 20, "one file per object: {}", files.len());

    // pyarrow reads the bucket's table file directly (pyarrow from the Plasma suite's venv).
    if let Some(py) = pyarrow_python() {
        let out = std::process::Command::new(py)
            .args(["-c", "import sys, pyarrow.parquet as pq; t = pq.read_table(sys.argv[1]); print(t.num_rows, sum(t.column('id').to_pylist()), ','.join(t.column_names))"])
            .arg(&arrow)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: i64 = batches.iter().map(|b| b.num_rows() as i64).sum();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap().trim(),
            format!("{rows} {} id,name,x", rows * (rows - 1) / 2)
        );
    } else {
        eprintln!("skipping the pyarrow check: no target/plasma-venv");
    }

    let before = stat(&c, "cold.fetches");
    check_all(&c, 40, 300 << 10);
    let t = c.get_arrow(b"cold-table").unwrap().expect("table promoted");
    assert_eq!(t.schema, schema);
    assert_eq!(t.batches, batches);
    assert!(
        stat(&c, "cold.fetches") > before,
        "nothing came from the bucket"
    );
    assert!(stat(&c, "warm.cold_promotions") > 0);
    // A key no tier holds is still a plain miss.
    assert!(c.get(b"never-stored").unwrap().is_none());

    // Deleting removes the bucket's copy too: it does not come back.
    c.delete(&key(3)).unwrap();
    assert!(c.get(&key(3)).unwrap().is_none());
    assert!(!bucket_files(bucket.path())
        .iter()
        .any(|p| p.to_string_lossy().contains(&hex(&key(3)))));
}

#[test]
fn two_daemons_read_what_the_other_moved() {
    let bucket = tempfile::tempdir().unwrap();
    let url = file_url(bucket.path());
    let a = start(&cold_args(&url));
    let ca = a.client();
    let (schema, batches) = table();
    ca.put_arrow(b"shared-table", &schema, &batches).unwrap();
    fill(&ca, 40, 300 << 10);
    assert!(
        eventually(LONG, || stat(&ca, "warm.files") == 0
            && stat(&ca, "warm.cold_moved_files") > 0),
        "daemon A never moved its files"
    );
    // B has its own data directory and shared memory, and the same bucket.
    let b = start(&cold_args(&url));
    let cb = b.client();
    let t = cb
        .get_arrow(b"shared-table")
        .unwrap()
        .expect("B reads A's table");
    assert_eq!(t.batches, batches);
    let moved: Vec<usize> = (0..40)
        .filter(|i| {
            bucket_files(bucket.path())
                .iter()
                .any(|p| p.to_string_lossy().contains(&hex(&key(*i))))
        })
        .collect();
    assert!(!moved.is_empty());
    for i in moved {
        let k = key(i);
        let o = cb.get(&k).unwrap().expect("B reads A's object");
        assert!(o.data() == content(&k, (300 << 10) + i % 7));
    }
    assert!(stat(&cb, "cold.fetches") > 0);
}

#[test]
fn a_damaged_bucket_object_is_quarantined() {
    let bucket = tempfile::tempdir().unwrap();
    // A real table file, cut short, and one that is not Parquet at all.
    let src = tempfile::tempdir().unwrap();
    {
        let d = start(&cold_args(&file_url(src.path())));
        let c = d.client();
        let (schema, batches) = table();
        c.put_arrow(b"cut", &schema, &batches).unwrap();
        fill(&c, 40, 300 << 10);
        let f = src.path().join(format!("arrow-{}.parquet", hex(b"cut")));
        assert!(eventually(LONG, || f.exists()), "the table never moved");
    }
    let good = std::fs::read(src.path().join(format!("arrow-{}.parquet", hex(b"cut")))).unwrap();
    let cut = bucket.path().join(format!("arrow-{}.parquet", hex(b"cut")));
    std::fs::write(&cut, &good[..good.len() - 200]).unwrap();
    let junk = bucket.path().join(format!("raw-{}.parquet", hex(b"junk")));
    std::fs::write(&junk, b"PAR1 this is not a parquet file PAR1").unwrap();

    let d = start(&cold_args(&file_url(bucket.path())));
    let c = d.client();
    for (k, f) in [(&b"cut"[..], &cut), (&b"junk"[..], &junk)] {
        let e = c.get(k).expect_err("a damaged object is an error");
        assert_eq!(e.code(), Code::Corrupt, "{e}");
        assert!(e.to_string().contains("quarantined"), "{e}");
        assert!(!f.exists(), "the damaged file left the bucket");
        assert!(bucket
            .path()
            .join("quarantine")
            .join(f.file_name().unwrap())
            .exists());
        // Asked again: the same answer, no second fetch.
        assert_eq!(c.get(k).unwrap_err().code(), Code::Corrupt);
    }
    assert_eq!(stat(&c, "cold.quarantined"), 2);
    // The daemon keeps serving.
    c.put(b"after", b"fine").unwrap();
    assert_eq!(c.get(b"after").unwrap().unwrap().data(), b"fine");
}

#[test]
fn a_bucket_that_is_down_keeps_the_warm_copy() {
    let root = tempfile::tempdir().unwrap();
    let bucket = root.path().join("bucket");
    let d = start(&cold_args(&file_url(&bucket)));
    let c = d.client();
    // The bucket goes away: its path becomes a plain file, so every upload fails.
    std::fs::remove_dir_all(&bucket).unwrap();
    std::fs::write(&bucket, b"not a directory").unwrap();
    fill(&c, 40, 300 << 10);
    assert!(
        eventually(LONG, || stat(&c, "cold.upload_errors") > 0),
        "no upload failed"
    );
    assert!(stat(&c, "warm.files") > 0, "the warm copies stay");
    assert_eq!(stat(&c, "warm.cold_moved_files"), 0);
    check_all(&c, 40, 300 << 10);
    // It comes back: the files move.
    std::fs::remove_file(&bucket).unwrap();
    std::fs::create_dir(&bucket).unwrap();
    assert!(
        eventually(LONG, || stat(&c, "warm.cold_moved_files") > 0),
        "nothing moved once the bucket was back"
    );
}

/// A MinIO server on loopback (`CIDCACHE_MINIO` names the binary, see `scripts/minio.sh`),
/// data in a temporary directory, stopped by pid when dropped.
struct Minio {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

const BUCKET: &str = "cidcache-test";
const USER: &str = "cidcache";
const SECRET: &str = "cidcache-secret-key";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Minio {
    fn start() -> Option<Minio> {
        let Some(bin) = std::env::var_os("CIDCACHE_MINIO") else {
            eprintln!("skipped: CIDCACHE_MINIO is not set (scripts/minio.sh builds MinIO)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        // A top-level directory of a fresh single-drive MinIO is a bucket.
        std::fs::create_dir_all(dir.path().join("data").join(BUCKET)).unwrap();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let console = format!("127.0.0.1:{}", free_port());
        let child = std::process::Command::new(bin)
            .args(["server", "--quiet", "--address", &addr.to_string()])
            .args(["--console-address", &console])
            .arg(dir.path().join("data"))
            .env("MINIO_UPDATE", "off")
            .env("MINIO_BROWSER", "off")
            .env("MINIO_CALLHOME_ENABLE", "off")
            .env("MINIO_ROOT_USER", USER)
            .env("MINIO_ROOT_PASSWORD", SECRET)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start MinIO");
        let m = Minio {
            child,
            addr,
            _dir: dir,
        };
        let live = || {
            use std::io::{Read, Write};
            let Ok(mut s) = std::net::TcpStream::connect(m.addr) else {
                return false;
            };
            let _ = s.write_all(
                b"GET /minio/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            );
            let mut r = String::new();
            let _ = s.read_to_string(&mut r);
            r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200")
        };
        assert!(eventually(LONG, live), "MinIO never became live");
        Some(m)
    }

    fn args(&self, endpoint: std::net::SocketAddr, retries: u32) -> Vec<String> {
        let mut a = cold_args(&format!("s3://{BUCKET}/cache"));
        for o in [
            format!("endpoint=http://{endpoint}"),
            "allow_http=true".into(),
            "region=us-east-1".into(),
            format!("access_key_id={USER}"),
            format!("secret_access_key={SECRET}"),
        ] {
            a.extend(["--cold-option".to_string(), o]);
        }
        a.extend(["--cold-retries".to_string(), retries.to_string()]);
        a
    }
}

impl Drop for Minio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy to `to` that cuts connections in the middle of a large response while
/// `cuts` (shared) is positive, counting each cut down.
fn dropping_proxy(
    to: std::net::SocketAddr,
    cuts: Arc<std::sync::atomic::AtomicI64>,
) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut down) = c else { return };
            let Ok(mut up) = std::net::TcpStream::connect(to) else {
                continue;
            };
            let (mut d2, mut u2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut d2, &mut u2);
                let _ = u2.shutdown(std::net::Shutdown::Write);
            });
            let cuts = cuts.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 16 << 10];
                let mut sent = 0usize;
                loop {
                    let n = match up.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if sent + n > 64 << 10
                        && cuts
                            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                                (c > 0).then_some(c - 1)
                            })
                            .is_ok()
                    {
                        // Mid-transfer: the client has the headers and part of the body.
                        let _ = down.write_all(&buf[..n / 2]);
                        let _ = down.shutdown(std::net::Shutdown::Both);
                        let _ = up.shutdown(std::net::Shutdown::Both);
                        break;
                    }
                    sent += n;
                    if down.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn minio_two_daemons_share_a_bucket_and_dropped_connections_are_retried() {
    let Some(minio) = Minio::start() else { return };
    let a = start(&minio.args(minio.addr, 4));
    let ca = a.client();
    let (schema, batches) = table();
    ca.put_arrow(b"s3-table", &schema, &batches).unwrap();
    fill(&ca, 40, 300 << 10);
    assert!(
        eventually(LONG, || stat(&ca, "warm.files") == 0
            && stat(&ca, "warm.cold_moved_files") > 0),
        "daemon A never moved its files to MinIO"
    );
    assert_eq!(stat(&ca, "cold.upload_errors"), 0);
    let moved = stat(&ca, "cold.objects");
    assert!(moved > 20, "{moved} objects in the bucket");

    // B reads through a proxy that cuts its first three large responses mid-body.
    let cuts = Arc::new(std::sync::atomic::AtomicI64::new(3));
    let proxy = dropping_proxy(minio.addr, cuts.clone());
    let b = start(&minio.args(proxy, 4));
    let cb = b.client();
    assert_eq!(stat(&cb, "cold.objects"), moved, "B lists what A moved");
    let t = cb
        .get_arrow(b"s3-table")
        .unwrap()
        .expect("B reads A's table");
    assert_eq!(t.batches, batches);
    let mut read = Vec::new();
    for i in 0..40 {
        let k = key(i);
        if let Some(o) = cb.get(&k).unwrap() {
            assert!(
                o.data() == content(&k, (300 << 10) + i % 7),
                "object {i} differs"
            );
            read.push(i);
        }
    }
    assert!(read.len() > 20, "B read {} objects", read.len());
    assert!(
        cuts.load(std::sync::atomic::Ordering::Acquire) <= 0,
        "no connection was cut"
    );
    drop(cb);
    drop(b);

    // A proxy that cuts every transfer: retried, then a clear error; the daemon serves on.
    cuts.store(i64::MAX, std::sync::atomic::Ordering::Release);
    let c = start(&minio.args(proxy, 1));
    let cc = c.client();
    assert_eq!(
        stat(&cc, "cold.objects"),
        moved,
        "C lists through the proxy"
    );
    let e = cc
        .get(&key(read[0]))
        .expect_err("a transfer that always breaks is an error");
    assert_eq!(e.code(), Code::Io, "{e}");
    assert!(e.to_string().contains("attempt"), "{e}");
    assert!(stat(&cc, "cold.fetch_errors") > 0);
    cc.put(b"still", b"serving").unwrap();
    assert_eq!(cc.get(b"still").unwrap().unwrap().data(), b"serving");
}
