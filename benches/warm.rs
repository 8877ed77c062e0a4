//! Warm-tier benchmark, side by side in one run:
//!
//! 1. Promoting a ~100 MB Arrow table from the warm tier (Parquet read, IPC encode, publish in
//!    shared memory, zero-copy decode by the client) against `pyarrow.parquet.read_table` of the
//!    same file, then the zero-copy hit that follows: validated at seal and decoded without
//!    validation, beside the path that validates on every get, beside pyarrow's
//!    `ipc.open_file(buffer).read_all()` of the same bytes in memory.
//! 2. Demotion and promotion rates of 64 KiB raw objects.
//! 3. A lookup of a key no tier holds (the in-memory check, never the disk).
//!
//! `cargo bench --bench warm` (`-- --quick` for a small table). pyarrow is found through
//! `$CIDCACHE_PYARROW_PYTHON`, else `target/ffi-venv` or `target/plasma-venv` (made by the test
//! scripts). Prints figures and ratios; asserts nothing about timings.

use arrow_array::builder::StringDictionaryBuilder;
use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use cidcache::Client;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Daemon {
    child: Option<Child>,
    args: Vec<String>,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Daemon {
    fn start(memory: &str, compression: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("s.sock");
        let args = vec![
            "--store".to_string(),
            format!("bench-warm-{}", std::process::id()),
            "--socket".into(),
            socket.display().to_string(),
            "--data-dir".into(),
            dir.path().join("data").display().to_string(),
            "-m".into(),
            memory.into(),
            "--warm-compression".into(),
            compression.into(),
        ];
        let mut d = Daemon {
            child: None,
            args,
            socket,
            dir,
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_cidcached"))
            .args(&self.args)
            .env(
                "CIDCACHE_LOG",
                std::env::var("CIDCACHE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn cidcached");
        self.child = Some(child);
        let t = Instant::now();
        while Client::connect_socket(&self.socket).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "daemon did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM (the hot tier is demoted on the way out) and start again: everything is warm.
    fn restart(&mut self) {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let _ = c.wait();
        self.spawn();
    }

    fn client(&self) -> Client {
        Client::connect_socket(&self.socket).expect("connect")
    }

    fn warm_files(&self, prefix: &str) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.path().join("data/warm"))
            .expect("warm dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".parquet"))
            })
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }
}

/// A table of `rows` rows in batches of 262,144: int64, float64, a string (~24 bytes), a
/// low-cardinality dictionary column and a boolean, with some nulls.
fn table(rows: usize) -> (Arc<Schema>, Vec<RecordBatch>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("value", DataType::Float64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new(
            "category",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        ),
        Field::new("flag", DataType::Boolean, true),
    ]));
    let cats = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"];
    let mut dict = StringDictionaryBuilder::<Int32Type>::new();
    for i in 0..rows {
        dict.append_value(cats[(i * 7 + i / 13) % cats.len()]);
    }
    let dict = dict.finish();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let ids = Int64Array::from_iter_values(0..rows as i64);
    let values = Float64Array::from_iter((0..rows).map(|i| (i % 17 != 0).then(|| rnd() as f64)));
    let names = StringArray::from_iter(
        (0..rows).map(|i| (i % 23 != 0).then(|| format!("object-{:016x}-{i}", rnd()))),
    );
    let flags = BooleanArray::from_iter((0..rows).map(|i| Some(rnd() % 3 == 0 || i % 5 == 0)));
    let whole = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(ids) as ArrayRef,
            Arc::new(values),
            Arc::new(names),
            Arc::new(dict),
            Arc::new(flags),
        ],
    )
    .expect("batch");
    let step = 262_144;
    let batches = (0..rows)
        .step_by(step)
        .map(|o| whole.slice(o, step.min(rows - o)))
        .collect();
    (schema, batches)
}

fn pyarrow() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CIDCACHE_PYARROW_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        "target/ffi-venv/bin/python",
        "target/plasma-venv/bin/python",
    ]
    .iter()
    .map(|p| root.join(p))
    .find(|p| p.exists())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rows = if quick { 200_000 } else { 2_200_000 };
    let rounds = if quick { 2 } else { 5 };
    let compression = std::env::var("CIDCACHE_BENCH_COMPRESSION").unwrap_or_else(|_| "zstd".into());

    println!("== promotion of an Arrow table from the warm tier ({compression}) ==");
    let (schema, batches) = table(rows);
    let mut d = Daemon::start("1G", &compression);
    d.client()
        .put_arrow(b"table", &schema, &batches)
        .expect("put_arrow");
    let ipc = d.client().get(b"table").unwrap().unwrap().data().len();
    println!(
        "table: {rows} rows, {} batches, {:.1} MB as Arrow IPC",
        batches.len(),
        ipc as f64 / 1e6
    );
    let mut promote = Vec::new();
    let mut hit = Vec::new();
    for _ in 0..rounds {
        d.restart();
        let c = d.client();
        // Map the arena first (clients populate a segment's page tables when they first use it,
        // so that hits never fault): that one-time cost is not the promotion's.
        c.put(b"warm-up", b"x").unwrap();
        drop(c.get(b"warm-up").unwrap());
        c.delete(b"warm-up").unwrap();
        let t = Instant::now();
        let got = c.get_arrow(b"table").unwrap().expect("promoted");
        promote.push(t.elapsed().as_secs_f64());
        assert_eq!(got.batches.len(), batches.len());
        drop(got);
        let t = Instant::now();
        let got = c.get_arrow(b"table").unwrap().expect("hit");
        hit.push(t.elapsed().as_secs_f64());
        assert_eq!(got.batches[0], batches[0]);
    }
    // The hit, many times: the fast path (validated at seal), the full-validation path every get
    // took before, and pyarrow reading the same IPC bytes from memory.
    let c = d.client();
    let hits = if quick { 200 } else { 2000 };
    let mut fast = Vec::with_capacity(hits);
    let before = cidcache::arrow::full_validations();
    for _ in 0..hits {
        let t = Instant::now();
        let got = c.get_arrow(b"table").unwrap().expect("hit");
        fast.push(t.elapsed().as_secs_f64());
        std::hint::black_box(&got);
    }
    assert_eq!(
        cidcache::arrow::full_validations(),
        before,
        "the hits took the fast path"
    );
    let mut full = Vec::new();
    for _ in 0..rounds.max(3) * 4 {
        let obj = c.get(b"table").unwrap().expect("hit");
        let t = Instant::now();
        let got = cidcache::arrow::bench::decode_validating(obj).unwrap();
        full.push(t.elapsed().as_secs_f64());
        std::hint::black_box(&got);
    }
    let fast = median(&mut fast);
    let full = median(&mut full);
    let ipc_path = d.dir.path().join("table.arrow");
    std::fs::write(&ipc_path, c.get(b"table").unwrap().unwrap().data()).unwrap();
    drop(c);
    let file = d.warm_files("arrow-").pop().expect("the table's warm file");
    let file_mb = std::fs::metadata(&file).unwrap().len() as f64 / 1e6;
    let promote = median(&mut promote);
    let hit = median(&mut hit);
    println!("warm file: {file_mb:.1} MB (Parquet, {compression})");
    let (check_ms, read_ms) = cidcache::__warm_bench::table_check_ms(&file, rounds);
    println!(
        "checks before decoding (footer, every page header): median {check_ms:.2} ms, {:.1} % of reading the file ({read_ms:.1} ms)",
        check_ms / read_ms * 100.0
    );
    println!(
        "promotion (parquet -> shared memory -> zero-copy batches): median {:.1} ms over {rounds}",
        promote * 1e3
    );
    println!(
        "hit after promotion (zero-copy get_arrow): median {:.1} µs",
        hit * 1e6
    );
    println!(
        "hit, validated at seal (get_arrow, {hits} gets): median {:.1} µs; validating every get (the old path): median {:.2} ms; {:.0}x",
        fast * 1e6,
        full * 1e3,
        full / fast
    );
    match pyarrow() {
        Some(py) => {
            let script = format!(
                "import time, pyarrow, pyarrow.parquet as pq\n\
                 ts=[]\n\
                 for _ in range({}):\n    t=time.perf_counter(); pq.read_table({:?}); ts.append(time.perf_counter()-t)\n\
                 ts.sort(); print(pyarrow.__version__, ts[len(ts)//2])",
                rounds.max(3),
                file.display().to_string()
            );
            let out = Command::new(&py).arg("-c").arg(script).output();
            match out {
                Ok(o) if o.status.success() => {
                    let s = String::from_utf8_lossy(&o.stdout);
                    let mut it = s.split_whitespace();
                    let ver = it.next().unwrap_or("?").to_string();
                    let t: f64 = it.next().and_then(|x| x.parse().ok()).unwrap_or(f64::NAN);
                    println!(
                        "pyarrow {ver} read_table of the same file: median {:.1} ms",
                        t * 1e3
                    );
                    println!(
                        "promotion / read_table = {:.2}x (target: at most 1.5x)",
                        promote / t
                    );
                }
                Ok(o) => println!(
                    "pyarrow failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => println!("pyarrow could not run: {e}"),
            }
            let script = format!(
                "import time, pyarrow as pa, pyarrow.ipc\n\
                 buf=pa.py_buffer(open({:?},'rb').read())\n\
                 ts=[]\n\
                 for _ in range({hits}):\n    t=time.perf_counter(); pa.ipc.open_file(buf).read_all(); ts.append(time.perf_counter()-t)\n\
                 ts.sort(); print(ts[len(ts)//2])",
                ipc_path.display().to_string()
            );
            match Command::new(&py).arg("-c").arg(script).output() {
                Ok(o) if o.status.success() => {
                    let t: f64 = String::from_utf8_lossy(&o.stdout)
                        .trim()
                        .parse()
                        .unwrap_or(f64::NAN);
                    println!(
                        "pyarrow ipc.open_file(buffer).read_all() of the same bytes in memory: median {:.1} µs; get_arrow / pyarrow = {:.2}x (target: at most 2x)",
                        t * 1e6,
                        fast / t
                    );
                }
                Ok(o) => println!(
                    "pyarrow failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => println!("pyarrow could not run: {e}"),
            }
        }
        None => println!(
            "pyarrow not found (run tests/run-ffi-tests.sh or set CIDCACHE_PYARROW_PYTHON): no comparison"
        ),
    }
    drop(d);

    println!("\n== raw objects: demotion and promotion (64 KiB) ==");
    let n: usize = if quick { 500 } else { 4000 };
    let mut d = Daemon::start("16M", &compression);
    let c = d.client();
    let obj: Vec<u8> = (0..64 << 10).map(|i| (i * 31 % 251) as u8).collect();
    let t = Instant::now();
    for i in 0..n {
        let mut o = obj.clone();
        o[..8].copy_from_slice(&(i as u64).to_le_bytes());
        c.put(format!("raw-{i}").as_bytes(), &o).unwrap();
    }
    drop(c);
    d.restart(); // everything demoted and durable
    let put_s = t.elapsed().as_secs_f64();
    let c = d.client();
    let t = Instant::now();
    for i in (0..n).step_by(7) {
        let o = c
            .get(format!("raw-{i}").as_bytes())
            .unwrap()
            .expect("promoted");
        assert_eq!(&o.data()[..8], &(i as u64).to_le_bytes());
    }
    let got = n.div_ceil(7);
    let prom_s = t.elapsed().as_secs_f64();
    println!(
        "{n} puts through a 16 MiB hot tier, demoted and made durable: {:.0} objects/s ({:.0} MB/s)",
        n as f64 / put_s,
        n as f64 * 65536.0 / put_s / 1e6
    );
    println!(
        "{got} single-object promotions: {:.0} µs each ({:.0} MB/s)",
        prom_s / got as f64 * 1e6,
        got as f64 * 65536.0 / prom_s / 1e6
    );
    let largest = d
        .warm_files("raw-")
        .into_iter()
        .max_by_key(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0));
    if let Some(f) = largest {
        let (checked, plain) = cidcache::__warm_bench::raw_footer_ms(&f, 5);
        println!(
            "footer + page index of a raw file ({:.1} MB), as cached for point reads: {checked:.2} ms with the checks before decoding, {plain:.2} ms without (once per file)",
            std::fs::metadata(&f).unwrap().len() as f64 / 1e6
        );
    }
    drop(d);

    println!("\n== a lookup of a key no tier holds ==");
    let dir = tempfile::tempdir().unwrap();
    let objects = if quick { 10_000 } else { 200_000 };
    let mut ns = cidcache::__warm_bench::negative_lookup_ns(dir.path(), objects, 200_000);
    let p50 = median(&mut ns);
    let p99 = ns[ns.len() * 99 / 100];
    println!(
        "warm tier holding {objects} objects: {p50:.0} ns median, {p99:.0} ns p99 per lookup (in memory; target: at most 200 ns)"
    );
}
