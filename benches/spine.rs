//! Side-by-side figures for the spine (issue #2), measured in one run on this machine:
//!
//! * hit latency from another process, 64 B .. 256 MiB objects (hdrhistogram, per-op, with the
//!   timer's own cost measured and subtracted);
//! * system calls per hit (`strace -c` of a reader doing 1,000 vs 101,000 hits);
//! * hits/s of one reader process vs two on two cores;
//! * put of 64 MiB (create, write, seal) vs a plain memcpy of the same size;
//! * put of 4 KiB objects one at a time and in put_many batches of 256;
//! * Arrow tables of 1 MB to 1 GB (8 batches each): the hit validated at seal (decoded without
//!   validation) beside the path that validates on every get and beside pyarrow's
//!   `ipc.open_file(buffer).read_all()` of the same bytes in memory; and the seal-time
//!   validation beside the time the put spends copying the table into shared memory.
//!
//! Run: `cargo bench --bench spine` (add `-- --quick` for a short smoke run, `-- --arrow-only`
//! for the Arrow tables alone). It prints a table
//! and writes `target/bench-spine.json`. Figures are reported, never asserted.

use cidcache::{Client, ObjectRef};
use hdrhistogram::Histogram;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SIZES: [(usize, &str); 6] = [
    (64, "64 B"),
    (4 << 10, "4 KiB"),
    (1 << 20, "1 MiB"),
    (16 << 20, "16 MiB"),
    (64 << 20, "64 MiB"),
    (256 << 20, "256 MiB"),
];

fn key(size: usize) -> Vec<u8> {
    format!("bench-{size}").into_bytes()
}

struct Daemon {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn start_daemon(memory: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s.sock");
    let store = format!("bench{}", std::process::id());
    let child = Command::new(env!("CARGO_BIN_EXE_cidcached"))
        .args(["--store", &store, "--socket"])
        .arg(&socket)
        // The warm tier and catalog run as by default, in a temporary directory; the hot tier
        // is not written out at the end. CIDCACHE_BENCH_DAEMON_ARGS adds flags (A/B runs).
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--no-persist-on-exit")
        .args(
            std::env::var("CIDCACHE_BENCH_DAEMON_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .args([
            "-m",
            memory,
            "--arena-size",
            "512M",
            "--index-capacity",
            "1048576",
        ])
        .env("CIDCACHE_LOG", "warn")
        .spawn()
        .expect("start cidcached");
    let start = Instant::now();
    while Client::connect_socket(&socket).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Daemon {
        child,
        socket,
        _dir: dir,
    }
}

/// Cost of one `Instant::now()` pair, to subtract from per-op timings.
fn timer_overhead_ns() -> u64 {
    let mut h = Histogram::<u64>::new(3).unwrap();
    for _ in 0..200_000 {
        let t = Instant::now();
        h.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    h.value_at_quantile(0.5)
}

#[inline]
fn hit(c: &Client, k: &[u8]) -> ObjectRef {
    c.get(k).unwrap().expect("bench object present")
}

/// Child: per-op hit latency for each size; prints one line per size.
fn child_latency(socket: &Path, iters: usize) {
    let c = Client::connect_socket(socket).unwrap();
    let overhead = timer_overhead_ns();
    println!("TIMER {overhead}");
    for (size, _) in SIZES {
        let k = key(size);
        for _ in 0..10_000 {
            black_box(hit(&c, &k));
        }
        let mut h = Histogram::<u64>::new(3).unwrap();
        for _ in 0..iters {
            let t = Instant::now();
            let o = hit(&c, &k);
            black_box(o.data().as_ptr());
            drop(o);
            let ns = t.elapsed().as_nanos() as u64;
            h.record(ns.saturating_sub(overhead)).unwrap();
        }
        // Mean without per-op timers, as a cross-check.
        let t = Instant::now();
        for _ in 0..iters {
            black_box(hit(&c, &k));
        }
        let mean = t.elapsed().as_nanos() as f64 / iters as f64;
        println!(
            "LAT {size} {} {} {} {} {mean:.1}",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
    }
}

/// Child: `n` hits on the 64-byte object and nothing else (for strace).
fn child_hits(socket: &Path, n: usize) {
    let c = Client::connect_socket(socket).unwrap();
    let k = key(64);
    for _ in 0..n {
        black_box(hit(&c, &k));
    }
    println!("DONE");
}

/// CPU time this process has run, in ns (`/proc/self/schedstat`, first field).
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Child: hits for `ms` milliseconds, prints the count and the CPU time used.
fn child_throughput(socket: &Path, ms: u64) {
    let c = Client::connect_socket(socket).unwrap();
    let k = key(4096);
    let cpu0 = cpu_ns();
    let until = Instant::now() + Duration::from_millis(ms);
    let mut n = 0u64;
    while Instant::now() < until {
        for _ in 0..1000 {
            black_box(hit(&c, &k));
        }
        n += 1000;
    }
    println!("HITS {n}");
    println!("CPU {}", cpu_ns() - cpu0);
}

fn spawn_child(role: &str, socket: &Path, arg: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .env("SPINE_BENCH_CHILD", role)
        .env("SPINE_BENCH_SOCKET", socket)
        .env("SPINE_BENCH_ARG", arg)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn output(c: Child) -> String {
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success(), "bench child failed");
    String::from_utf8(out.stdout).unwrap()
}

fn syscalls_of(socket: &Path, hits: usize) -> Option<u64> {
    let out = Command::new("strace")
        .args(["-f", "-c", "-o", "/dev/stderr", "--"])
        .arg(std::env::current_exe().unwrap())
        .env("SPINE_BENCH_CHILD", "hits")
        .env("SPINE_BENCH_SOCKET", socket)
        .env("SPINE_BENCH_ARG", hits.to_string())
        .output()
        .ok()?;
    let err = String::from_utf8_lossy(&out.stderr);
    // Last line of the summary: "100.00 ... total" with the call count in column 4.
    err.lines()
        .find(|l| l.trim_end().ends_with("total"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
}

fn main() {
    if let Ok(role) = std::env::var("SPINE_BENCH_CHILD") {
        let socket = PathBuf::from(std::env::var("SPINE_BENCH_SOCKET").unwrap());
        let arg = std::env::var("SPINE_BENCH_ARG").unwrap();
        match role.as_str() {
            "latency" => child_latency(&socket, arg.parse().unwrap()),
            "hits" => child_hits(&socket, arg.parse().unwrap()),
            "throughput" => child_throughput(&socket, arg.parse().unwrap()),
            _ => panic!("unknown role"),
        }
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let iters = if quick { 20_000 } else { 200_000 };
    let tp_ms = if quick { 300 } else { 2000 };
    let mut json = Vec::new();
    if std::env::args().any(|a| a == "--arrow-only") {
        arrow_tables(quick, &mut json);
        return;
    }

    let d = start_daemon("1536M");
    let c = Client::connect_socket(&d.socket).unwrap();
    for (size, _) in SIZES {
        let data = vec![0xa5u8; size];
        c.put(&key(size), &data).unwrap();
    }

    println!("== hit from another process (ns; timer overhead subtracted) ==");
    let out = output(spawn_child("latency", &d.socket, &iters.to_string()));
    let timer: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("TIMER "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    println!("timer overhead per op: {timer} ns");
    println!(
        "{:>8} {:>8} {:>8} {:>8} {:>8} {:>10}",
        "size", "p50", "p99", "p99.9", "max", "mean(bulk)"
    );
    for line in out.lines().filter_map(|l| l.strip_prefix("LAT ")) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let size: usize = f[0].parse().unwrap();
        let name = SIZES.iter().find(|s| s.0 == size).unwrap().1;
        println!(
            "{name:>8} {:>8} {:>8} {:>8} {:>8} {:>10}",
            f[1], f[2], f[3], f[4], f[5]
        );
        json.push(format!(
            "{{\"bench\":\"hit_latency\",\"size\":{size},\"p50_ns\":{},\"p99_ns\":{},\"p999_ns\":{},\"mean_ns\":{}}}",
            f[1], f[2], f[3], f[5]
        ));
    }

    println!("\n== system calls per hit (strace -c -f of a reader process) ==");
    match (
        syscalls_of(&d.socket, 1_000),
        syscalls_of(&d.socket, 101_000),
    ) {
        (Some(a), Some(b)) => {
            let per_hit = (b as f64 - a as f64) / 100_000.0;
            println!(
                "1,000 hits: {a} syscalls; 101,000 hits: {b} syscalls; extra per hit: {per_hit:.5}"
            );
            json.push(format!(
                "{{\"bench\":\"syscalls_per_hit\",\"value\":{per_hit}}}"
            ));
        }
        _ => println!("strace not available: skipped"),
    }

    println!("\n== reader processes on two cores (4 KiB hits/s) ==");
    // Wall-clock rates show scaling when the two cores are free; hits per CPU-second show
    // whether readers slow each other down (contention) even when the machine is shared.
    let parse = |out: &str, tag: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(tag))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let out1 = output(spawn_child("throughput", &d.socket, &tp_ms.to_string()));
    let (one, one_cpu) = (parse(&out1, "HITS "), parse(&out1, "CPU "));
    let kids: Vec<_> = (0..2)
        .map(|_| spawn_child("throughput", &d.socket, &tp_ms.to_string()))
        .collect();
    let outs: Vec<String> = kids.into_iter().map(output).collect();
    let two: u64 = outs.iter().map(|o| parse(o, "HITS ")).sum();
    let two_cpu: u64 = outs.iter().map(|o| parse(o, "CPU ")).sum();
    let secs = tp_ms as f64 / 1000.0;
    let per_cpu = |hits: u64, cpu: u64| hits as f64 / (cpu.max(1) as f64 / 1e9) / 1e6;
    println!(
        "1 reader: {:.1} M hits/s ({:.1} M per CPU-second); 2 readers: {:.1} M hits/s ({:.1} M per CPU-second); wall-clock scaling {:.2}x, CPU efficiency {:.2}",
        one as f64 / secs / 1e6,
        per_cpu(one, one_cpu),
        two as f64 / secs / 1e6,
        per_cpu(two, two_cpu),
        two as f64 / one as f64,
        per_cpu(two, two_cpu) / per_cpu(one, one_cpu)
    );
    json.push(format!(
        "{{\"bench\":\"reader_scaling\",\"one\":{},\"two\":{},\"ratio\":{},\"cpu_efficiency\":{}}}",
        one as f64 / secs,
        two as f64 / secs,
        two as f64 / one as f64,
        per_cpu(two, two_cpu) / per_cpu(one, one_cpu)
    ));

    println!("\n== put of 64 MiB (create, write, seal) vs memcpy ==");
    let size = 64 << 20;
    let src = vec![0x5au8; size];
    let mut dst = vec![0u8; size];
    dst.copy_from_slice(&src); // fault the destination in, as the store's arena is
    let rounds = if quick { 5 } else { 30 };
    let mut memcpy_best = f64::MAX;
    let mut put_best = f64::MAX;
    let (mut memcpy_sum, mut put_sum) = (0.0, 0.0);
    for r in 0..rounds {
        let t = Instant::now();
        dst.copy_from_slice(black_box(&src));
        black_box(&dst);
        let m = t.elapsed().as_secs_f64();
        let k = format!("put64-{r}");
        let t = Instant::now();
        let mut w = c.create(k.as_bytes(), size, 0).unwrap();
        w.data_mut().copy_from_slice(&src);
        w.seal().unwrap();
        let p = t.elapsed().as_secs_f64();
        c.delete(k.as_bytes()).unwrap();
        if r > 0 {
            memcpy_best = memcpy_best.min(m);
            put_best = put_best.min(p);
            memcpy_sum += m;
            put_sum += p;
        }
    }
    let gbs = |t: f64| size as f64 / t / 1e9;
    let n = (rounds - 1) as f64;
    println!(
        "memcpy: {:.2} GB/s (median-ish mean {:.2}); put: {:.2} GB/s (mean {:.2}); put/memcpy = {:.0} % (best), {:.0} % (mean)",
        gbs(memcpy_best),
        gbs(memcpy_sum / n),
        gbs(put_best),
        gbs(put_sum / n),
        100.0 * memcpy_best / put_best,
        100.0 * (memcpy_sum / n) / (put_sum / n)
    );
    json.push(format!(
        "{{\"bench\":\"put_64mib\",\"memcpy_gbs\":{},\"put_gbs\":{},\"ratio_mean\":{}}}",
        gbs(memcpy_sum / n),
        gbs(put_sum / n),
        (memcpy_sum / n) / (put_sum / n)
    ));

    println!("\n== put of 4 KiB objects, one client ==");
    let n4 = if quick { 20_000 } else { 100_000 };
    let data = vec![7u8; 4096];
    let keys: Vec<Vec<u8>> = (0..n4).map(|i| format!("p4k-{i}").into_bytes()).collect();
    let t = Instant::now();
    for k in &keys {
        c.put(k, &data).unwrap();
    }
    let single = n4 as f64 / t.elapsed().as_secs_f64();
    for k in &keys {
        c.delete(k).unwrap();
    }
    let keys2: Vec<Vec<u8>> = (0..n4).map(|i| format!("p4kb-{i}").into_bytes()).collect();
    let t = Instant::now();
    for chunk in keys2.chunks(256) {
        let items: Vec<(&[u8], &[u8])> = chunk
            .iter()
            .map(|k| (k.as_slice(), data.as_slice()))
            .collect();
        for r in c.put_many(&items) {
            r.unwrap();
        }
    }
    let batched = n4 as f64 / t.elapsed().as_secs_f64();
    println!("one at a time: {single:.0} puts/s; put_many(256): {batched:.0} puts/s");
    json.push(format!(
        "{{\"bench\":\"put_4kib\",\"single_per_s\":{single},\"batch256_per_s\":{batched}}}"
    ));

    drop(c);
    drop(d);
    arrow_tables(quick, &mut json);

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-spine.json");
    let _ = std::fs::write(&path, format!("[{}]\n", json.join(",\n")));
    println!("\nwrote {}", path.display());
}

/// A table of about `bytes` bytes as Arrow IPC in 8 batches: int64, float64 with nulls, and a
/// string of about 24 bytes.
fn arrow_table(bytes: usize) -> (arrow_schema::SchemaRef, Vec<arrow_array::RecordBatch>) {
    use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;
    let rows = (bytes / 46).max(8);
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("value", DataType::Float64, true),
        Field::new("name", DataType::Utf8, false),
    ]));
    let ids = Int64Array::from_iter_values(0..rows as i64);
    let values = Float64Array::from_iter((0..rows).map(|i| (i % 17 != 0).then_some(i as f64)));
    let names = StringArray::from_iter_values((0..rows).map(|i| format!("object-{i:017x}")));
    let whole = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(ids) as ArrayRef, Arc::new(values), Arc::new(names)],
    )
    .unwrap();
    let step = rows.div_ceil(8);
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

/// Median seconds of pyarrow's `ipc.open_file(buffer).read_all()` over `n` runs of the IPC file
/// at `path`, read into memory first.
fn pyarrow_read_all(py: &Path, path: &Path, n: usize) -> Option<f64> {
    let script = format!(
        "import time, pyarrow as pa, pyarrow.ipc\n\
         buf=pa.py_buffer(open({:?},'rb').read())\n\
         ts=[]\n\
         for _ in range({n}):\n    t=time.perf_counter(); pa.ipc.open_file(buf).read_all(); ts.append(time.perf_counter()-t)\n\
         ts.sort(); print(ts[len(ts)//2])",
        path.display().to_string()
    );
    let o = Command::new(py).arg("-c").arg(script).output().ok()?;
    if !o.status.success() {
        println!(
            "pyarrow failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
        return None;
    }
    String::from_utf8_lossy(&o.stdout).trim().parse().ok()
}

fn median_of(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn arrow_tables(quick: bool, json: &mut Vec<String>) {
    println!("\n== Arrow tables: hit validated at seal vs validated on every get vs pyarrow; seal-time validation vs the put's copy ==");
    let sizes: &[usize] = if quick {
        &[1 << 20, 8 << 20]
    } else {
        &[1 << 20, 16 << 20, 128 << 20, 1 << 30]
    };
    let py = pyarrow();
    if py.is_none() {
        println!("pyarrow not found (run tests/run-ffi-tests.sh or set CIDCACHE_PYARROW_PYTHON): no comparison");
    }
    let d = start_daemon("3G");
    let c = Client::connect_socket(&d.socket).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut local = Vec::new();
    let mut concurrent = None;
    let validation_us = |c: &Client| {
        c.stats()
            .unwrap()
            .into_iter()
            .find(|(k, _)| k == "arrow.validation_us")
            .map_or(0, |(_, v)| v)
    };
    println!(
        "{:>9} {:>9} {:>7} | {:>9} {:>9} {:>9} {:>10} | {:>10} {:>10} {:>8} | {:>10} {:>8}",
        "MB",
        "rows",
        "batches",
        "copy ms",
        "seal ms",
        "valid. ms",
        "valid/copy",
        "hit µs",
        "old ms",
        "old/hit",
        "pyarrow µs",
        "hit/py"
    );
    for &size in sizes {
        let (schema, batches) = arrow_table(size);
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let ipc = cidcache::arrow::encode_ipc_file(&schema, &batches).unwrap();
        drop(batches);
        let big = ipc.len() > 256 << 20;
        // Put: the copy into shared memory and the seal (the coordinator's validation plus a
        // round trip), timed apart.
        let rounds = if big || quick { 3 } else { 7 };
        let (mut copy, mut seal, mut valid) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..rounds {
            let k = format!("arrow-{size}-{r}");
            let v0 = validation_us(&c);
            let (cp, sl) = cidcache::arrow::bench::put_ipc_timed(&c, k.as_bytes(), &ipc).unwrap();
            valid.push((validation_us(&c) - v0) as f64 / 1e6);
            copy.push(cp.as_secs_f64());
            seal.push(sl.as_secs_f64());
            if r + 1 < rounds {
                c.delete(k.as_bytes()).unwrap();
            }
        }
        let key = format!("arrow-{size}-{}", rounds - 1);
        if size == *sizes.last().unwrap() {
            // Another client's requests while this table's seal is validated: the validation
            // runs outside the store lock, so they are not held up behind it.
            let stop = std::sync::atomic::AtomicBool::new(false);
            let other = Client::connect_socket(&d.socket).unwrap();
            let rounds_until = |stop: &std::sync::atomic::AtomicBool| {
                let (mut worst, mut n) = (0f64, 0u64);
                let data = [1u8; 4096];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t = Instant::now();
                    other.put(b"during-seal", &data).unwrap();
                    drop(other.get(b"during-seal").unwrap());
                    other.delete(b"during-seal").unwrap();
                    worst = worst.max(t.elapsed().as_secs_f64());
                    n += 1;
                }
                (worst, n)
            };
            // The same rounds for as long, without a seal: what the machine gives anyway.
            let quiet = std::sync::atomic::AtomicBool::new(false);
            let base = std::thread::scope(|sc| {
                let h = sc.spawn(|| rounds_until(&quiet));
                std::thread::sleep(Duration::from_secs_f64(median_of(&mut seal.clone())));
                quiet.store(true, std::sync::atomic::Ordering::Relaxed);
                h.join().unwrap()
            });
            let mut w =
                cidcache::arrow::bench::create_arrow(&c, b"arrow-during", ipc.len()).unwrap();
            w.data_mut().copy_from_slice(&ipc);
            let (worst, n, seal_s) = std::thread::scope(|sc| {
                let h = sc.spawn(|| rounds_until(&stop));
                let t = Instant::now();
                w.seal().unwrap();
                let sl = t.elapsed().as_secs_f64();
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                let (w, n) = h.join().unwrap();
                (w, n, sl)
            });
            c.delete(b"arrow-during").unwrap();
            concurrent = Some((ipc.len(), seal_s, n, worst, base));
        }
        let (copy, seal, valid) = (
            median_of(&mut copy),
            median_of(&mut seal),
            median_of(&mut valid),
        );
        // The same validation and a memcpy of the same bytes in this process, interleaved, so
        // that both see the same load (the machine may be shared).
        let aligned = arrow_buffer::Buffer::from(ipc.as_slice());
        let mut dst = vec![0u8; ipc.len()];
        let (mut local_copy, mut local_valid) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t = Instant::now();
            dst.copy_from_slice(black_box(&ipc));
            black_box(&dst);
            local_copy.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            cidcache::arrow::bench::validate(black_box(&aligned)).unwrap();
            local_valid.push(t.elapsed().as_secs_f64());
        }
        drop((aligned, dst));
        let (local_copy, local_valid) = (median_of(&mut local_copy), median_of(&mut local_valid));
        local.push((ipc.len(), local_copy, local_valid));
        // Hits on the fast path, then the old path on the same object.
        let n = if big || quick { 300 } else { 2000 };
        let before = cidcache::arrow::full_validations();
        let mut fast = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let a = c.get_arrow(key.as_bytes()).unwrap().unwrap();
            fast.push(t.elapsed().as_secs_f64());
            black_box(&a);
        }
        assert_eq!(cidcache::arrow::full_validations(), before, "fast path");
        let m = if big || quick { 3 } else { 15 };
        let mut old = Vec::with_capacity(m);
        for _ in 0..m {
            let o = c.get(key.as_bytes()).unwrap().unwrap();
            let t = Instant::now();
            let a = cidcache::arrow::bench::decode_validating(o).unwrap();
            old.push(t.elapsed().as_secs_f64());
            black_box(&a);
        }
        let (fast, old) = (median_of(&mut fast), median_of(&mut old));
        let pa = py.as_ref().and_then(|py| {
            let path = dir.path().join("t.arrow");
            std::fs::write(&path, &ipc).ok()?;
            let r = pyarrow_read_all(py, &path, if big { 300 } else { 2000 });
            let _ = std::fs::remove_file(&path);
            r
        });
        println!(
            "{:>9.1} {:>9} {:>7} | {:>9.2} {:>9.2} {:>9.2} {:>10.2} | {:>10.1} {:>10.2} {:>8.0} | {:>10} {:>8}",
            ipc.len() as f64 / 1e6,
            rows,
            8,
            copy * 1e3,
            seal * 1e3,
            valid * 1e3,
            valid / copy,
            fast * 1e6,
            old * 1e3,
            old / fast,
            pa.map_or("-".into(), |p| format!("{:.1}", p * 1e6)),
            pa.map_or("-".into(), |p| format!("{:.2}", fast / p)),
        );
        json.push(format!(
            "{{\"bench\":\"arrow_table\",\"bytes\":{},\"rows\":{rows},\"copy_s\":{copy},\"seal_s\":{seal},\"validation_s\":{valid},\"hit_s\":{fast},\"hit_validating_s\":{old},\"pyarrow_read_all_s\":{}}}",
            ipc.len(),
            pa.map_or("null".into(), |p| p.to_string())
        ));
        c.delete(key.as_bytes()).unwrap();
    }
    println!("validation beside a memcpy of the same bytes, in this process, interleaved:");
    for (bytes, copy, valid) in local {
        println!(
            "{:>9.1} MB: memcpy {:.2} ms, validation {:.2} ms, validation/memcpy = {:.2}",
            bytes as f64 / 1e6,
            copy * 1e3,
            valid * 1e3,
            valid / copy
        );
    }
    if let Some((bytes, seal_s, n, worst, (base_worst, base_n))) = concurrent {
        println!(
            "while a {:.1} MB table's seal was validated ({:.0} ms), another client did {n} put+get+delete rounds of 4 KiB, the slowest in {:.2} ms (for as long without a seal: {base_n} rounds, the slowest in {:.2} ms)",
            bytes as f64 / 1e6,
            seal_s * 1e3,
            worst * 1e3,
            base_worst * 1e3
        );
    }
    println!("(seal: the client's Seal round trip, validation included; valid.: the coordinator's validation alone (arrow.validation_us); old: full validation on every get, as before)");
    println!("(targets: hit <= 50 µs and flat in size; hit within 2x of pyarrow; validation <= 1.2x copy)");
}
