//! CID catalog figures (run with `cargo bench --bench catalog`; `-- --quick` for a smoke run).
//!
//! Prints: batched upsert rate (batches of 1,000 and 10,000; new keys and updates), point
//! lookup latency p50/p99 (hits and misses, hdrhistogram, each sample one `get` timed with
//! `Instant`, timer overhead reported separately), and the mean lookup cost over a batch;
//! checkpoint (full snapshot) write speed, bytes per row and recovery (open) speed for each
//! preset, a small delta checkpoint; persisted-scan speed with 1 thread vs one per core.

use cidcache::tier::catalog::{
    scan_persisted, Catalog, CatalogEntry, CatalogOptions, PartitionStrategy, Preset, Query,
    StorageTier,
};
use cidcache::Key;
use hdrhistogram::Histogram;
use std::hint::black_box;
use std::time::{Duration, Instant};

const T0: i64 = 1_764_547_200_000_000;

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn key(i: u64) -> Key {
    Key::new(&cidcache::cid::cid_v1_raw(&i.to_le_bytes())).unwrap()
}

const MIMES: [&str; 6] = [
    "image/png",
    "image/jpeg",
    "text/plain",
    "application/json",
    "application/octet-stream",
    "video/mp4",
];

/// Realistic entries: CIDv1 keys, a mimetype, a file name on 2/3, a source, properties on 1/8.
fn entries(keys: &[Key], seed: u64) -> Vec<CatalogEntry> {
    let mut s = seed | 1;
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            let r = xorshift(&mut s);
            let mut e = CatalogEntry::bare(*k, r % 10_000_000, T0 + (i as i64) * 1_000);
            e.cid_version = Some(1);
            e.multihash_type = Some("sha2-256".into());
            e.mimetype = Some(MIMES[(r >> 8) as usize % MIMES.len()].to_string());
            if !r.is_multiple_of(3) {
                e.filename = Some(format!("dataset/part-{:05}.bin", (r >> 16) % 50_000));
            }
            e.source = Some("put".into());
            e.storage_tier = [StorageTier::Hot, StorageTier::Warm][(r >> 20) as usize % 2];
            e.is_pinned = r.is_multiple_of(17);
            e.last_accessed = e.added_at + (r >> 24) as i64 % 3_600_000_000;
            e.access_count = (r >> 32) % 1000;
            e.heat_score = ((r >> 40) % 10_000) as f64 / 100.0;
            if r.is_multiple_of(8) {
                e.properties = vec![("owner".into(), format!("team-{}", r % 13))];
            }
            e
        })
        .collect()
}

/// Resident set size from /proc/self/statm (0 when unavailable).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// CPU time of the whole process (all threads).
fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn rate(n: usize, d: Duration) -> String {
    format!("{:.0}/s", n as f64 / d.as_secs_f64())
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            dir_bytes(&e.path())
        } else {
            m.len()
        };
    }
    total
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n: usize = if quick { 100_000 } else { 1_000_000 };
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!(
        "catalog bench: {n} entries, {cores} cores{}",
        if quick { " (quick)" } else { "" }
    );
    let keys: Vec<Key> = (0..n as u64).map(key).collect();

    // ---- resident memory (first, before the allocator holds freed memory)
    {
        let rss0 = rss_bytes();
        let mut c = Catalog::new();
        c.upsert_batch(entries(&keys, 7));
        let rss1 = rss_bytes();
        println!(
            "memory: resident set grew {:.0} MB building a catalog of {n} entries = {:.0} bytes/entry (strings, rows and index)",
            (rss1 as f64 - rss0 as f64) / 1e6,
            (rss1 as f64 - rss0 as f64) / n as f64
        );
        black_box(&c);
    }

    // ---- batched upserts
    for batch in [1_000usize, 10_000] {
        let mut best_new = Duration::MAX;
        let mut best_upd = Duration::MAX;
        for _ in 0..3 {
            let es = entries(&keys, 7);
            let mut c = Catalog::new();
            let mut it = es.into_iter();
            let t = Instant::now();
            loop {
                let chunk: Vec<CatalogEntry> = it.by_ref().take(batch).collect();
                if chunk.is_empty() {
                    break;
                }
                c.upsert_batch(chunk);
            }
            best_new = best_new.min(t.elapsed());
            let es = entries(&keys, 8);
            let mut it = es.into_iter();
            let t = Instant::now();
            loop {
                let chunk: Vec<CatalogEntry> = it.by_ref().take(batch).collect();
                if chunk.is_empty() {
                    break;
                }
                c.upsert_batch(chunk);
            }
            best_upd = best_upd.min(t.elapsed());
            black_box(&c);
        }
        println!(
            "upsert batch={batch:>6}: new keys {} ({:.0} ns/entry), updates {} ({:.0} ns/entry)",
            rate(n, best_new),
            best_new.as_nanos() as f64 / n as f64,
            rate(n, best_upd),
            best_upd.as_nanos() as f64 / n as f64
        );
    }

    // ---- point lookups (and resident memory of the catalog)
    let mut c = Catalog::new();
    c.upsert_batch(entries(&keys, 7));
    let mut s = 42u64;
    let probes: Vec<Key> = (0..1_000_000)
        .map(|_| keys[(xorshift(&mut s) % n as u64) as usize])
        .collect();
    let misses: Vec<Key> = (0..100_000u64).map(|i| key(u64::MAX - i)).collect();
    let mut overhead = Histogram::<u64>::new(3).unwrap();
    for _ in 0..200_000 {
        let t = Instant::now();
        black_box(());
        overhead.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    let mut hits = Histogram::<u64>::new(3).unwrap();
    for k in &probes {
        let t = Instant::now();
        black_box(c.get(black_box(k)));
        hits.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    let mut miss = Histogram::<u64>::new(3).unwrap();
    for k in &misses {
        let t = Instant::now();
        black_box(c.get(black_box(k)));
        miss.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    let t = Instant::now();
    let mut found = 0usize;
    for k in &probes {
        found += usize::from(black_box(c.get(black_box(k))).is_some());
    }
    let mean = t.elapsed().as_nanos() as f64 / probes.len() as f64;
    assert_eq!(found, probes.len());
    println!(
        "get hit : p50 {} ns, p99 {} ns, p99.9 {} ns (timer overhead p50 {} ns); mean over a loop {mean:.0} ns",
        hits.value_at_quantile(0.5),
        hits.value_at_quantile(0.99),
        hits.value_at_quantile(0.999),
        overhead.value_at_quantile(0.5)
    );
    println!(
        "get miss: p50 {} ns, p99 {} ns",
        miss.value_at_quantile(0.5),
        miss.value_at_quantile(0.99)
    );
    let t = Instant::now();
    let mut touched = 0;
    for (i, k) in probes.iter().enumerate() {
        touched += usize::from(c.touch(k, T0 + 10_000_000_000 + i as i64));
    }
    println!(
        "touch: {:.0} ns/op ({touched} touches)",
        t.elapsed().as_nanos() as f64 / probes.len() as f64
    );
    drop(c);

    // ---- checkpoints per preset
    let base = std::env::var_os("CATALOG_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    for preset in Preset::ALL {
        let tmp = tempfile::tempdir_in(&base).unwrap();
        let o = CatalogOptions {
            preset,
            ..Default::default()
        };
        let (mut c, _) = Catalog::open(tmp.path(), o.clone()).unwrap();
        c.upsert_batch(entries(&keys, 7));
        let t = Instant::now();
        let st0 = c.checkpoint().unwrap();
        let d0 = t.elapsed();
        let t = Instant::now();
        let st = c.compact().unwrap();
        let d = t.elapsed();
        let bytes = dir_bytes(tmp.path());
        // Small incremental checkpoint: 1% of rows touched.
        for k in keys.iter().step_by(100) {
            c.touch(k, T0 + 99_000_000_000);
        }
        let t = Instant::now();
        let st2 = c.checkpoint().unwrap();
        let d2 = t.elapsed();
        drop(c);
        let t = Instant::now();
        let (c2, rep) = Catalog::open(tmp.path(), o).unwrap();
        let d3 = t.elapsed();
        assert_eq!(c2.len(), n);
        assert!(rep.quarantined.is_empty());
        println!(
            "preset {:<8}: checkpoint of {} new rows (one delta) {:.2} s = {}; compaction to a snapshot {:.2} s = {} ({:.1} MB/s), {:.1} bytes/row; delta of {} touched rows {:.1} ms; open (recover) {} rows {:.2} s = {}",
            preset.as_str(),
            st0.rows_written,
            d0.as_secs_f64(),
            rate(n, d0),
            d.as_secs_f64(),
            rate(n, d),
            st.bytes_written as f64 / d.as_secs_f64() / 1e6,
            bytes as f64 / n as f64,
            st2.rows_written,
            d2.as_secs_f64() * 1e3,
            c2.len(),
            d3.as_secs_f64(),
            rate(n, d3)
        );
    }

    // ---- persisted scans, 1 thread vs one per core
    let tmp = tempfile::tempdir_in(&base).unwrap();
    let o = CatalogOptions {
        preset: Preset::Balanced,
        strategy: PartitionStrategy::Hash(8),
        ..Default::default()
    };
    let (mut c, _) = Catalog::open(tmp.path(), o).unwrap();
    c.upsert_batch(entries(&keys, 7));
    c.compact().unwrap();
    for (label, filters, cols) in [
        (
            "mimetype=image/png, all columns",
            vec!["mimetype=image/png"],
            None,
        ),
        (
            "size_bytes>9000000 & storage_tier=hot, 2 columns",
            vec!["size_bytes>9000000", "storage_tier=hot"],
            Some("cid,size_bytes"),
        ),
    ] {
        let q = Query::parse(&filters, cols).unwrap();
        let mut line = format!("scan [{label}]:");
        for threads in [1, cores] {
            let mut best = Duration::MAX;
            let mut rows = 0;
            let mut cpu_ratio = 0.0;
            for _ in 0..3 {
                let c0 = cpu_time();
                let t = Instant::now();
                let (b, rep) = scan_persisted(tmp.path(), &q, threads).unwrap();
                let wall = t.elapsed();
                if wall < best {
                    best = wall;
                    cpu_ratio = (cpu_time() - c0).as_secs_f64() / wall.as_secs_f64();
                }
                rows = rep.rows_matched;
                black_box(b);
            }
            line += &format!(
                " {threads} thr {:.0} ms ({} catalog rows/s, {rows} matched, process CPU/wall {cpu_ratio:.2});",
                best.as_secs_f64() * 1e3,
                rate(n, best)
            );
        }
        let t = Instant::now();
        let mem = c.query(&q).unwrap();
        line += &format!(
            " in-memory {:.0} ms ({} rows)",
            t.elapsed().as_secs_f64() * 1e3,
            mem.num_rows()
        );
        println!("{line}");
    }
}
