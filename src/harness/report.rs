//! Results of a bench run: aggregation of worker results, the printed table and the JSON file.

use super::plasma::PlasmaReport;
use super::workload::{new_histogram, WorkerResult, Workload};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Latency of calls (a batch is one call), nanoseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

/// Measured figures of one workload, all client processes together.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkloadResult {
    /// What ran.
    pub workload: Workload,
    /// Dataset objects preloaded.
    pub keys: usize,
    /// Dataset objects the store refused as full while preloading.
    #[serde(default)]
    pub preload_refused: u64,
    /// Objects per second over all clients (sum of per-client rates).
    pub ops_per_s: f64,
    /// Calls per second over all clients.
    pub calls_per_s: f64,
    /// Object bytes per second over all clients, GB/s (10^9 bytes).
    pub gb_per_s: f64,
    /// Reads that hit, and that missed.
    pub hits: u64,
    /// Reads that missed.
    pub misses: u64,
    /// Failed calls or items.
    pub errors: u64,
    /// First error message, if any.
    pub first_error: Option<String>,
    /// Call latency over all clients.
    pub latency: Latency,
    /// Percentile curve `(percentile, ns)` for the plot.
    pub curve: Vec<(f64, u64)>,
    /// Daemon CPU time during the timed phase (and the clean-up), seconds; `None` if unknown.
    pub daemon_cpu_s: Option<f64>,
    /// Daemon peak RSS since the workload's start (or since the daemon's start, where the
    /// kernel does not allow a reset), bytes.
    pub daemon_peak_rss: Option<u64>,
    /// CPU time of all client processes over their whole life, seconds.
    pub client_cpu_s: f64,
    /// Largest peak RSS among the client processes, bytes.
    pub client_peak_rss: u64,
}

/// A whole bench run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Suite name.
    pub suite: String,
    /// `debug` or `release` build of the harness.
    pub build: String,
    /// CPUs online.
    pub cpus: usize,
    /// 1-minute load average at the start.
    pub load_average: Option<f64>,
    /// Hot-tier memory limit of the store, bytes.
    pub hot_tier_bytes: u64,
    /// Per-workload results, in run order.
    pub workloads: Vec<WorkloadResult>,
    /// The Plasma side-by-side, when run.
    pub plasma: Option<PlasmaReport>,
}

/// Merges worker results of one workload.
pub fn aggregate(
    workload: &Workload,
    keys: usize,
    workers: &[WorkerResult],
    daemon_cpu_s: Option<f64>,
    daemon_peak_rss: Option<u64>,
) -> WorkloadResult {
    let mut h = new_histogram();
    for w in workers {
        for &(v, n) in &w.histogram {
            let _ = h.record_n(v.max(1), n);
        }
    }
    let rate = |f: fn(&WorkerResult) -> u64| -> f64 {
        workers
            .iter()
            .map(|w| f(w) as f64 / (w.elapsed_ns.max(1) as f64 / 1e9))
            .sum()
    };
    let q = |q: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(q)
        }
    };
    let curve = [
        0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0,
    ]
    .iter()
    .map(|&p| (p * 100.0, q(p)))
    .collect();
    WorkloadResult {
        workload: workload.clone(),
        keys,
        preload_refused: 0,
        ops_per_s: rate(|w| w.items),
        calls_per_s: rate(|w| w.calls),
        gb_per_s: rate(|w| w.bytes) / 1e9,
        hits: workers.iter().map(|w| w.hits).sum(),
        misses: workers.iter().map(|w| w.misses).sum(),
        errors: workers.iter().map(|w| w.errors).sum(),
        first_error: workers.iter().find_map(|w| w.first_error.clone()),
        latency: Latency {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: if h.is_empty() { 0 } else { h.max() },
            mean: if h.is_empty() { 0.0 } else { h.mean() },
        },
        curve,
        daemon_cpu_s,
        daemon_peak_rss,
        client_cpu_s: workers.iter().map(|w| w.cpu_ns as f64 / 1e9).sum(),
        client_peak_rss: workers.iter().map(|w| w.peak_rss).max().unwrap_or(0),
    }
}

/// `1234567` → `1.23M`, for table cells.
pub fn si(v: f64) -> String {
    let (d, s) = match v.abs() {
        x if x >= 1e9 => (1e9, "G"),
        x if x >= 1e6 => (1e6, "M"),
        x if x >= 1e3 => (1e3, "k"),
        _ => (1.0, ""),
    };
    let x = v / d;
    match x.abs() {
        _ if s.is_empty() => format!("{v:.0}"),
        a if a >= 100.0 => format!("{x:.0}{s}"),
        a if a >= 10.0 => format!("{x:.1}{s}"),
        _ => format!("{x:.2}{s}"),
    }
}

/// Nanoseconds as `812ns`, `4.1µs`, `12.0ms`.
pub fn dur(ns: u64) -> String {
    match ns {
        n if n >= 1_000_000_000 => format!("{:.2}s", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}ms", n as f64 / 1e6),
        n if n >= 10_000 => format!("{:.0}µs", n as f64 / 1e3),
        n if n >= 1_000 => format!("{:.1}µs", n as f64 / 1e3),
        n => format!("{n}ns"),
    }
}

/// Bytes as `64B`, `4KiB`, `256MiB`.
pub fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{}GiB", n >> 30),
        n if n >= 1 << 20 => format!("{:.0}MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.0}KiB", n as f64 / 1024.0),
        n => format!("{n}B"),
    }
}

/// The human-readable table of a report.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "suite {} ({} build), {} CPUs, load average {}, hot tier {}",
        r.suite,
        r.build,
        r.cpus,
        r.load_average
            .map(|l| format!("{l:.2}"))
            .unwrap_or_else(|| "?".into()),
        bytes(r.hot_tier_bytes)
    );
    if r.build == "debug" {
        let _ = writeln!(
            s,
            "(a debug build checks the harness; its figures, and the Plasma ratios, compare nothing)"
        );
    }
    let _ = writeln!(
        s,
        "{:<26} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9} {:>9} {:>9}",
        "workload",
        "ops/s",
        "GB/s",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "hit%",
        "srv CPU",
        "srv RSS",
        "cli CPU"
    );
    for w in &r.workloads {
        let reads = w.hits + w.misses;
        let hit = if reads == 0 {
            "-".to_string()
        } else {
            format!("{:.1}", 100.0 * w.hits as f64 / reads as f64)
        };
        let _ = writeln!(
            s,
            "{:<26} {:>9} {:>8.3} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9} {:>9} {:>9}{}",
            w.workload.name,
            si(w.ops_per_s),
            w.gb_per_s,
            dur(w.latency.p50),
            dur(w.latency.p90),
            dur(w.latency.p99),
            dur(w.latency.p999),
            hit,
            w.daemon_cpu_s
                .map(|c| format!("{c:.2}s"))
                .unwrap_or_else(|| "-".into()),
            w.daemon_peak_rss.map(bytes).unwrap_or_else(|| "-".into()),
            format!("{:.2}s", w.client_cpu_s),
            if w.errors > 0 {
                format!(
                    "  ({} errors: {})",
                    w.errors,
                    w.first_error.as_deref().unwrap_or("")
                )
            } else {
                String::new()
            } + &if w.preload_refused > 0 {
                format!(
                    "  ({} of {} dataset objects refused: store full)",
                    w.preload_refused, w.keys
                )
            } else {
                String::new()
            }
        );
    }
    if let Some(p) = &r.plasma {
        let _ = writeln!(s, "\nPlasma, same Rust client against both stores:");
        let _ = writeln!(
            s,
            "{:<34} {:>16} {:>16} {:>8}",
            "", "plasma-store", "cidcached", "ratio"
        );
        let row = |s: &mut String, name: &str, r: Option<f64>, o: f64, unit: &str| {
            let si = |v: f64| {
                if unit == "GB/s" {
                    format!("{v:.2}")
                } else {
                    si(v)
                }
            };
            let _ = match r {
                Some(r) => writeln!(
                    s,
                    "{name:<34} {:>11} {unit:<4} {:>11} {unit:<4} {:>7.2}x",
                    si(r),
                    si(o),
                    o / r
                ),
                None => writeln!(s, "{name:<34} {:>16} {:>11} {unit:<4}", "-", si(o)),
            };
        };
        row(
            &mut s,
            "create+seal round trips (64 B)",
            p.reference.map(|f| f.create_seal_per_s),
            p.ours.create_seal_per_s,
            "/s",
        );
        row(
            &mut s,
            "get round trips (64 B)",
            p.reference.map(|f| f.get_per_s),
            p.ours.get_per_s,
            "/s",
        );
        row(
            &mut s,
            "put bandwidth (64 MiB objects)",
            p.reference.map(|f| f.put_gbs),
            p.ours.put_gbs,
            "GB/s",
        );
        let _ = writeln!(
            s,
            "{:<34} {:>11.2} GB/s; cidcached plasma put = {:.0} % of memcpy{}",
            "memcpy 64 MiB (baseline)",
            p.memcpy_gbs,
            100.0 * p.ours.put_gbs / p.memcpy_gbs,
            p.reference
                .map(|r| format!(
                    ", plasma-store-server {:.0} %",
                    100.0 * r.put_gbs / p.memcpy_gbs
                ))
                .unwrap_or_default()
        );
        if p.reference.is_none() {
            let _ = writeln!(s, "{}", p.reference_note);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(si(1_234_567.0), "1.23M");
        assert_eq!(si(12.0), "12");
        assert_eq!(si(2000.0), "2.00k");
        assert_eq!(si(479_000.0), "479k");
        assert_eq!(dur(80), "80ns");
        assert_eq!(dur(4_100), "4.1µs");
        assert_eq!(bytes(64), "64B");
        assert_eq!(bytes(256 << 20), "256MiB");
        assert_eq!(bytes(1 << 30), "1GiB");
    }
}
