//! Flight `DoGet` of a 1 GB Arrow table over loopback: cidcached (the table hot in shared memory)
//! against a `pyarrow.flight` server holding the same table in its memory, both read by the same
//! pyarrow Flight client, side by side in one run. Needs a Python with pyarrow
//! (`CIDCACHE_BENCH_PYTHON`, default target/py-venv/bin/python); skips, saying so, without.
//! `cargo bench --bench flight` (release). `CIDCACHE_FLIGHT_BENCH_MB` changes the size.

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use cidcache::Client;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

const PY: &str = r#"
import sys, threading, time, pyarrow.flight as fl
addr, rounds = sys.argv[1], int(sys.argv[2])
def timed(loc, ticket):
    c = fl.connect(loc)
    best = []
    for _ in range(rounds):
        t = time.perf_counter()
        tab = c.do_get(fl.Ticket(ticket)).read_all()
        best.append(time.perf_counter() - t)
    return sorted(best)[len(best) // 2], tab
ours, tab = timed("grpc://" + addr, b"flight-bench")
class Server(fl.FlightServerBase):
    def do_get(self, context, ticket):
        return fl.RecordBatchStream(tab)
srv = Server("grpc://127.0.0.1:0")
threading.Thread(target=srv.serve, daemon=True).start()
theirs, tab2 = timed("grpc://127.0.0.1:%d" % srv.port, b"x")
assert tab2.num_rows == tab.num_rows
print(ours, theirs, tab.nbytes)
srv.shutdown()
"#;

fn main() {
    let py = std::env::var_os("CIDCACHE_BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/py-venv/bin/python"));
    if !py.exists() {
        eprintln!("skipped: no Python with pyarrow at {}", py.display());
        return;
    }
    let mb: usize = std::env::var("CIDCACHE_FLIGHT_BENCH_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s.sock");
    let addr = format!("127.0.0.1:{}", port());
    let mem = format!("{}M", mb * 2 + 256);
    let mut child = Command::new(env!("CARGO_BIN_EXE_cidcached"))
        .args([
            "--store",
            &format!("flightbench{}", std::process::id()),
            "--socket",
        ])
        .arg(&socket)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--no-warm", "-m", &mem, "--flight-addr", &addr])
        .env("CIDCACHE_LOG", "error")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while UnixStream::connect(&socket).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "daemon exited");
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let _d = Proc(child);
    // 4 columns of 8 bytes in batches of 1 Mi rows (32 MiB each).
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, false),
        Field::new("b", DataType::Int64, false),
        Field::new("c", DataType::Float64, false),
        Field::new("d", DataType::Float64, false),
    ]));
    let rows = 1 << 20;
    let batches: Vec<RecordBatch> = (0..(mb / 32).max(1))
        .map(|i| {
            let base = (i * rows) as i64;
            let cols: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from_iter_values(base..base + rows as i64)),
                Arc::new(Int64Array::from_iter_values(
                    (0..rows as i64).map(|x| x * 7),
                )),
                Arc::new(Float64Array::from_iter_values((0..rows).map(|x| x as f64))),
                Arc::new(Float64Array::from_iter_values(
                    (0..rows).map(|x| x as f64 * 0.5),
                )),
            ];
            RecordBatch::try_new(schema.clone(), cols).unwrap()
        })
        .collect();
    Client::connect_socket(&socket)
        .unwrap()
        .put_arrow(b"flight-bench", &schema, &batches)
        .unwrap();
    drop(batches);
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load before: {}", load().trim());
    let out = Command::new(&py)
        .args(["-c", PY, &addr, "3"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let (ours, theirs, bytes) = (v[0], v[1], v[2]);
    println!(
        "DoGet {:.0} MB over loopback, median of 3: cidcached {:.3} s ({:.2} GB/s), pyarrow.flight server from memory {:.3} s ({:.2} GB/s); ratio (pyarrow time / cidcached time, goal >= 1): {:.2}",
        bytes / 1e6,
        ours,
        bytes / ours / 1e9,
        theirs,
        bytes / theirs / 1e9,
        theirs / ours
    );
    println!("load after: {}", load().trim());
}
