//! Promotion of a 100 MB Arrow table from the cold tier (a real MinIO on loopback) against
//! `pyarrow.parquet.read_table` of the same bucket object through pyarrow's S3 filesystem,
//! side by side in one run. Needs `CIDCACHE_MINIO` (scripts/minio.sh) and a Python with pyarrow
//! (`CIDCACHE_BENCH_PYTHON`, default target/py-venv/bin/python); skips, saying so, without.
//!
//! `cargo bench --bench cold` (release). Each round starts a fresh daemon (empty hot and warm
//! tiers) and times `get_arrow` of the table: list is done at start, then one fetch, the
//! Parquet guards, decoding, and encoding into shared memory.

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use cidcache::Client;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const USER: &str = "cidcache";
const SECRET: &str = "cidcache-secret-key";
const BUCKET: &str = "bench";
const ROUNDS: usize = 3;

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn daemon(data: &Path, endpoint: &str, min_size: bool) -> (Proc, PathBuf) {
    let socket = data.join("s.sock");
    let _ = std::fs::remove_file(&socket);
    let store = format!("coldbench{}_{}", std::process::id(), port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cidcached"));
    cmd.args(["--store", &store, "--socket"])
        .arg(&socket)
        .arg("--data-dir")
        .arg(data.join("data"))
        .args(["-m", "1G", "--cold", &format!("s3://{BUCKET}/cache")])
        .args(["--cold-option", &format!("endpoint=http://{endpoint}")])
        .args([
            "--cold-option",
            "allow_http=true",
            "--cold-option",
            "region=us-east-1",
        ])
        .args(["--cold-option", &format!("access_key_id={USER}")])
        .args(["--cold-option", &format!("secret_access_key={SECRET}")])
        .env("CIDCACHE_LOG", "error")
        .stdin(Stdio::null());
    if min_size {
        cmd.args(["--cold-min-size", "0"]);
    }
    let mut child = cmd.spawn().unwrap();
    let t = Instant::now();
    while UnixStream::connect(&socket).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "daemon exited");
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    (Proc(child), socket)
}

fn stat(c: &Client, name: &str) -> u64 {
    c.stats()
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == name)
        .map_or(0, |s| s.1)
}

/// About 100 MB: 4 columns of 8 bytes, 3.3 M rows, in 32 batches; values that do not compress.
fn table() -> (Arc<Schema>, Vec<RecordBatch>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, false),
        Field::new("b", DataType::Int64, false),
        Field::new("c", DataType::Float64, false),
        Field::new("d", DataType::Float64, false),
    ]));
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let rows = 102_400;
    let batches = (0..32)
        .map(|_| {
            let cols: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from_iter_values(
                    (0..rows).map(|_| next() as i64),
                )),
                Arc::new(Int64Array::from_iter_values(
                    (0..rows).map(|_| next() as i64 >> 20),
                )),
                Arc::new(Float64Array::from_iter_values(
                    (0..rows).map(|_| next() as f64),
                )),
                Arc::new(Float64Array::from_iter_values(
                    (0..rows).map(|_| (next() >> 11) as f64 / 1e3),
                )),
            ];
            RecordBatch::try_new(schema.clone(), cols).unwrap()
        })
        .collect();
    (schema, batches)
}

const PY: &str = r#"
import sys, time, pyarrow.parquet as pq, pyarrow.fs as fs
endpoint, path, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
s3 = fs.S3FileSystem(access_key="cidcache", secret_key="cidcache-secret-key", region="us-east-1",
                     endpoint_override=endpoint, scheme="http")
for _ in range(rounds):
    t = time.perf_counter()
    tab = pq.read_table(path, filesystem=s3)
    print(time.perf_counter() - t, tab.nbytes, flush=True)
"#;

fn main() {
    let Some(minio) = std::env::var_os("CIDCACHE_MINIO") else {
        eprintln!("skipped: CIDCACHE_MINIO is not set (scripts/minio.sh builds MinIO)");
        return;
    };
    let py = std::env::var_os("CIDCACHE_BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/py-venv/bin/python"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("minio").join(BUCKET)).unwrap();
    let endpoint = format!("127.0.0.1:{}", port());
    let _minio = Proc(
        Command::new(minio)
            .args(["server", "--quiet", "--address", &endpoint])
            .args(["--console-address", &format!("127.0.0.1:{}", port())])
            .arg(dir.path().join("minio"))
            .env("MINIO_UPDATE", "off")
            .env("MINIO_BROWSER", "off")
            .env("MINIO_CALLHOME_ENABLE", "off")
            .env("MINIO_ROOT_USER", USER)
            .env("MINIO_ROOT_PASSWORD", SECRET)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(3));

    // Daemon A stores the table, stops (the table is demoted to its warm tier), starts again
    // with every warm file moving to the bucket, and waits for the move.
    let a_dir = tempfile::tempdir().unwrap();
    let (schema, batches) = table();
    let ipc_bytes: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
    {
        let (mut p, s) = daemon(a_dir.path(), &endpoint, false);
        Client::connect_socket(&s)
            .unwrap()
            .put_arrow(b"bench-table", &schema, &batches)
            .unwrap();
        unsafe { libc::kill(p.0.id() as i32, libc::SIGTERM) };
        let _ = p.0.wait();
    }
    let (_a, s) = daemon(a_dir.path(), &endpoint, true);
    let ca = Client::connect_socket(&s).unwrap();
    let t = Instant::now();
    while stat(&ca, "warm.cold_moved_files") == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "the table never moved"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let object_bytes = stat(&ca, "cold.uploaded_bytes");
    println!(
        "table: {:.1} MB in Arrow, {:.1} MB Parquet in the bucket; load {}",
        ipc_bytes as f64 / 1e6,
        object_bytes as f64 / 1e6,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );

    let mut ours = Vec::new();
    for _ in 0..ROUNDS {
        let b_dir = tempfile::tempdir().unwrap();
        let (_b, s) = daemon(b_dir.path(), &endpoint, false);
        let c = Client::connect_socket(&s).unwrap();
        let t = Instant::now();
        let got = c.get_arrow(b"bench-table").unwrap().expect("promoted");
        ours.push(t.elapsed().as_secs_f64());
        assert_eq!(got.batches.len(), batches.len());
    }
    let path = format!("{BUCKET}/cache/arrow-{}.parquet", hex(b"bench-table"));
    let out = Command::new(&py)
        .args([
            "-c",
            PY,
            &format!("http://{endpoint}"),
            &path,
            &ROUNDS.to_string(),
        ])
        .output();
    let theirs: Vec<f64> = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect(),
        Ok(o) => {
            eprintln!("pyarrow failed: {}", String::from_utf8_lossy(&o.stderr));
            Vec::new()
        }
        Err(e) => {
            eprintln!("skipped pyarrow ({}): {e}", py.display());
            Vec::new()
        }
    };
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let (o, p) = (med(&mut ours), med(&mut theirs.clone()));
    println!(
        "cold promotion (cidcached get_arrow, fresh daemon): median {:.3} s ({:.2} GB/s of Arrow)",
        o,
        ipc_bytes as f64 / o / 1e9
    );
    println!(
        "pyarrow.parquet.read_table via S3FileSystem:        median {:.3} s ({:.2} GB/s of Arrow)",
        p,
        ipc_bytes as f64 / p / 1e9
    );
    println!("ratio (cidcached / pyarrow, goal <= 1): {:.2}", o / p);
    println!(
        "load after: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
