//! The benchmark harness behind `cidcache bench`: standard workloads against a live store (or
//! a temporary `cidcached` it starts), run by client processes that re-execute the CLI as
//! hidden workers, with a printed table, a JSON report, PNG plots and the Plasma side-by-side.
//!
//! Figures are measured, never asserted. Not a stable API: exposed for the CLI only.

pub mod kubo;
pub mod plasma;
pub mod plot;
pub mod procstat;
pub mod report;
pub mod workload;

use crate::error::{Error, Result};
use crate::Client;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use report::{Report, WorkloadResult};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};
use workload::{dataset_key, payload, Popularity, WorkerResult, WorkerSpec, Workload};

/// Named preset of workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// A few seconds in a debug build (CI).
    Smoke,
    /// The figures of `docs/benchmarks.md` (about two minutes, release build).
    Standard,
    /// Every axis to its end: sizes to 256 MiB, batches to 1024, up to 8 clients, datasets
    /// to 8× the hot tier, longer runs.
    Full,
}

impl std::str::FromStr for Suite {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Suite, String> {
        match s {
            "smoke" => Ok(Suite::Smoke),
            "standard" => Ok(Suite::Standard),
            "full" => Ok(Suite::Full),
            _ => Err(format!("unknown suite {s:?} (smoke, standard or full)")),
        }
    }
}

impl Suite {
    /// Name as given on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Suite::Smoke => "smoke",
            Suite::Standard => "standard",
            Suite::Full => "full",
        }
    }

    /// Hot-tier limit of a `--spawn`ed daemon unless `--memory` is given.
    pub fn default_memory(self) -> u64 {
        match self {
            Suite::Smoke => 64 << 20,
            Suite::Standard => 1 << 30,
            Suite::Full => 2 << 30,
        }
    }

    /// The workloads, in run order.
    pub fn workloads(self) -> Vec<Workload> {
        const K: usize = 1 << 10;
        const M: usize = 1 << 20;
        let base = |name: String, group: &str, size: usize| Workload {
            name,
            group: group.into(),
            object_size: size,
            batch: 1,
            clients: 1,
            keys: 1000,
            dataset_factor: None,
            popularity: Popularity::Uniform,
            read_percent: 100,
            duration_ms: 0,
        };
        let zipf = Popularity::Zipf { s: 0.99 };
        let mut v = Vec::new();
        let (ms, sizes, batches, clients, factors): (
            u64,
            Vec<usize>,
            Vec<usize>,
            Vec<usize>,
            Vec<f64>,
        ) = match self {
            Suite::Smoke => (100, vec![64, 4 * K, M], vec![64], vec![2], vec![2.0]),
            Suite::Standard => (
                1000,
                vec![64, 4 * K, 64 * K, M, 16 * M, 64 * M, 256 * M],
                vec![1, 8, 64, 256, 1024],
                vec![1, 2, 4],
                vec![0.5, 2.0, 4.0],
            ),
            Suite::Full => (
                3000,
                vec![64, K, 4 * K, 64 * K, M, 4 * M, 16 * M, 64 * M, 256 * M],
                vec![1, 4, 16, 64, 256, 1024],
                vec![1, 2, 4, 8],
                vec![0.25, 0.5, 1.0, 2.0, 4.0, 8.0],
            ),
        };
        let name_size = |s: usize| report::bytes(s as u64);
        for &s in &sizes {
            let mut w = base(format!("get {}", name_size(s)), "size", s);
            // Enough objects to defeat the CPU caches for small sizes, at most a quarter of
            // the smallest hot tier for large ones.
            w.keys = (64 * M / s).clamp(1, 10_000);
            w.duration_ms = ms;
            v.push(w);
        }
        for &s in &sizes {
            let mut w = base(format!("put {}", name_size(s)), "size", s);
            w.keys = 1;
            w.read_percent = 0;
            w.duration_ms = ms;
            v.push(w);
        }
        for &b in &batches {
            for read in [0, 100] {
                let op = if read == 100 { "get" } else { "put" };
                let many = if b == 1 { "" } else { "_many" };
                let mut w = base(format!("{op}{many} 4KiB x{b}"), "batch", 4 * K);
                w.batch = b;
                w.read_percent = read;
                w.keys = 10_000;
                w.duration_ms = ms;
                v.push(w);
            }
        }
        for &c in &clients {
            for read in [100, 90] {
                let mut w = base(format!("{read}% get 4KiB, {c} clients"), "clients", 4 * K);
                w.clients = c;
                w.read_percent = read;
                w.keys = 10_000;
                w.duration_ms = ms;
                v.push(w);
            }
        }
        for (label, p) in [("uniform", Popularity::Uniform), ("zipf 0.99", zipf)] {
            let mut w = base(format!("90% get 64KiB 2x, {label}"), "popularity", 64 * K);
            w.dataset_factor = Some(2.0);
            w.popularity = p;
            w.read_percent = 90;
            w.duration_ms = ms;
            v.push(w);
        }
        if self != Suite::Smoke {
            for read in [100, 95, 50, 0] {
                let mut w = base(format!("{read}% get 4KiB zipf"), "mix", 4 * K);
                w.popularity = zipf;
                w.read_percent = read;
                w.keys = 10_000;
                w.duration_ms = ms;
                v.push(w);
            }
        }
        for &f in &factors {
            let mut w = base(format!("get 64KiB zipf, {f}x hot"), "dataset", 64 * K);
            w.dataset_factor = Some(f);
            w.popularity = zipf;
            w.duration_ms = ms;
            v.push(w);
        }
        if self == Suite::Smoke {
            for w in &mut v {
                w.keys = w.keys.min(1000);
            }
        }
        v
    }
}

/// Options of `cidcache bench`.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Preset.
    pub suite: Suite,
    /// Start a temporary `cidcached` instead of using `socket`.
    pub spawn: bool,
    /// Socket of the live store (ignored with `spawn`).
    pub socket: PathBuf,
    /// Hot-tier limit of the spawned daemon (default: the suite's).
    pub memory: Option<u64>,
    /// Only workloads whose name contains this.
    pub filter: Option<String>,
    /// Override every workload's duration.
    pub duration_ms: Option<u64>,
    /// Write the JSON report here.
    pub json: Option<PathBuf>,
    /// Write PNG plots into this directory.
    pub plot: Option<PathBuf>,
    /// Skip the Plasma side-by-side.
    pub no_plasma: bool,
    /// No progress bar.
    pub quiet: bool,
}

/// A `cidcached` started for the run, stopped (SIGTERM) on drop.
struct Spawned {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        );
        let _ = self.child.wait();
    }
}

/// `cidcached` next to the running executable (`$CIDCACHED_BIN` overrides).
pub fn daemon_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("CIDCACHED_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("cannot find the executable", e))?;
    let p = exe.with_file_name("cidcached");
    if p.exists() {
        Ok(p)
    } else {
        Err(Error::NotFound(format!(
            "{} not found (build it, or set CIDCACHED_BIN)",
            p.display()
        )))
    }
}

fn spawn_daemon(memory: u64, index_capacity: u64) -> Result<Spawned> {
    let bin = daemon_binary()?;
    let dir = tempfile::tempdir().map_err(|e| Error::io("cannot create a temporary dir", e))?;
    let socket = dir.path().join("bench.sock");
    let store = format!("bench{}", std::process::id());
    let mut child = Command::new(&bin)
        .arg("--store")
        .arg(&store)
        .arg("--socket")
        .arg(&socket)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("-m")
        .arg(memory.to_string())
        .arg("--index-capacity")
        .arg(index_capacity.to_string())
        .env("CIDCACHE_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| Error::io(format!("cannot start {}", bin.display()), e))?;
    let t = Instant::now();
    while Client::connect_socket(&socket).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(Error::Internal(format!(
                "{} exited ({st}) before serving",
                bin.display()
            )));
        }
        if t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Internal(format!("{} did not start", bin.display())));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Spawned {
        child,
        socket,
        _dir: dir,
    })
}

/// The coordinator's pid of a live store: the pid its lock file (beside its segments) names.
fn daemon_pid(c: &Client) -> Option<u32> {
    let lock = c.shm_dir().join(crate::shm::lock_name(c.store_name()));
    std::fs::read_to_string(lock).ok()?.trim().parse().ok()
}

fn stat(c: &Client, name: &str) -> Option<u64> {
    c.stats()
        .ok()?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn progress(quiet: bool, len: u64) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// Preloads `keys` objects of `size` bytes under `prefix` (put_many batches of up to 8 MiB);
/// returns how many the store refused as full.
fn preload(c: &Client, prefix: &str, keys: usize, size: usize) -> Result<u64> {
    let mut full = 0;
    let data = payload(size);
    let per = (8 << 20) / size.max(1);
    let per = per.clamp(1, 256);
    let mut i = 0;
    while i < keys {
        let n = per.min(keys - i);
        let ks: Vec<Vec<u8>> = (i..i + n).map(|j| dataset_key(prefix, j)).collect();
        let items: Vec<(&[u8], &[u8])> =
            ks.iter().map(|k| (k.as_slice(), data.as_slice())).collect();
        for r in c.put_many(&items) {
            match r {
                Ok(()) | Err(Error::AlreadyExists(_)) => {}
                // Above the hot tier a put may find no room right now: the workload then
                // measures misses, which is what a dataset larger than the tier means.
                Err(Error::StoreFull(_)) => full += 1,
                Err(e) => return Err(e),
            }
        }
        i += n;
    }
    Ok(full)
}

fn cleanup(c: &Client, prefix: &str, keys: usize) {
    workload::delete_all(c, (0..keys).map(|i| dataset_key(prefix, i)).collect());
}

struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

fn start_worker(exe: &Path, socket: &Path, spec: &WorkerSpec) -> Result<Worker> {
    let json = serde_json::to_string(spec).map_err(|e| Error::Internal(e.to_string()))?;
    let mut child = Command::new(exe)
        .arg("--socket")
        .arg(socket)
        .arg("__bench-worker")
        .arg(json)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(format!("cannot start worker {}", exe.display()), e))?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("piped stdout");
    let mut w = Worker {
        child,
        stdin,
        lines: BufReader::new(stdout).lines(),
    };
    match w.lines.next() {
        Some(Ok(l)) if l == "READY" => Ok(w),
        other => {
            let _ = w.child.kill();
            let _ = w.child.wait();
            Err(Error::Internal(format!(
                "bench worker did not get ready: {other:?}"
            )))
        }
    }
}

fn run_workload(
    exe: &Path,
    socket: &Path,
    c: &Client,
    pid: Option<u32>,
    hot: u64,
    seq: usize,
    w: &Workload,
) -> Result<WorkloadResult> {
    let keys = match w.dataset_factor {
        Some(f) => ((f * hot as f64) / w.object_size.max(1) as f64)
            .ceil()
            .max(1.0) as usize,
        None => w.keys.max(1),
    };
    let prefix = format!("b{}-{seq}", std::process::id());
    let refused = if w.read_percent > 0 {
        preload(c, &prefix, keys, w.object_size)?
    } else {
        0
    };
    let mut workers = Vec::new();
    for i in 0..w.clients.max(1) {
        let spec = WorkerSpec {
            workload: w.clone(),
            keys,
            prefix: prefix.clone(),
            worker: i,
        };
        workers.push(start_worker(exe, socket, &spec)?);
    }
    if let Some(p) = pid {
        procstat::reset_peak_rss(p);
    }
    let cpu0 = pid.and_then(procstat::cpu_ns);
    for wk in &mut workers {
        if let Some(mut s) = wk.stdin.take() {
            let _ = s.write_all(b"GO\n");
        }
    }
    let mut results: Vec<WorkerResult> = Vec::new();
    let mut failed = None;
    for wk in &mut workers {
        match wk.lines.next() {
            Some(Ok(l)) => match serde_json::from_str::<WorkerResult>(&l) {
                Ok(r) => results.push(r),
                Err(e) => failed = Some(format!("bad worker report {l:?}: {e}")),
            },
            other => failed = Some(format!("bench worker ended without a report: {other:?}")),
        }
    }
    // Taken before the workers delete what they wrote, so the clean-up is not counted.
    let cpu = match (cpu0, pid.and_then(procstat::cpu_ns)) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1e9),
        _ => None,
    };
    let rss = pid.and_then(procstat::peak_rss);
    for mut wk in workers {
        let _ = wk.child.wait();
    }
    if let Some(f) = failed {
        return Err(Error::Internal(f));
    }
    if w.read_percent > 0 {
        cleanup(c, &prefix, keys);
    }
    let mut r = report::aggregate(w, keys, &results, cpu, rss);
    r.preload_refused = refused;
    Ok(r)
}

/// Runs a suite and returns the report (also printed, written as JSON and plotted as asked).
pub fn run(o: &BenchOptions) -> Result<Report> {
    let exe = std::env::current_exe().map_err(|e| Error::io("cannot find the executable", e))?;
    let mut list = o.suite.workloads();
    if let Some(f) = &o.filter {
        list.retain(|w| w.name.contains(f.as_str()) || w.group == *f);
    }
    if let Some(ms) = o.duration_ms {
        for w in &mut list {
            w.duration_ms = ms;
        }
    }
    let memory = o.memory.unwrap_or(o.suite.default_memory());
    let spawned = if o.spawn {
        // Room for the largest dataset of 64 KiB objects plus the 64 B size sweep.
        let objects = (8 * memory / (64 << 10)).max(20_000);
        Some(spawn_daemon(memory, (objects * 2).next_power_of_two())?)
    } else {
        None
    };
    let socket = spawned
        .as_ref()
        .map(|s| s.socket.clone())
        .unwrap_or_else(|| o.socket.clone());
    let c = Client::connect_socket(&socket)?;
    let pid = match &spawned {
        Some(s) => Some(s.child.id()),
        None => daemon_pid(&c),
    };
    let hot = stat(&c, "hot.memory_limit").unwrap_or(memory);
    // Sizes that do not fit half the hot tier cannot be run meaningfully.
    list.retain(|w| (w.object_size as u64) <= hot / 2);
    let pb = progress(o.quiet, list.len() as u64 + u64::from(!o.no_plasma));
    let mut results = Vec::new();
    for (i, w) in list.iter().enumerate() {
        pb.set_message(w.name.clone());
        results.push(run_workload(&exe, &socket, &c, pid, hot, i, w)?);
        pb.inc(1);
    }
    drop(c);
    drop(spawned);
    let plasma = if o.no_plasma {
        None
    } else {
        pb.set_message("Plasma side-by-side");
        let (n, big) = match o.suite {
            Suite::Smoke => (1_000, 1),
            Suite::Standard => (20_000, 10),
            Suite::Full => (50_000, 30),
        };
        let r = plasma::compare(&daemon_binary()?, &exe, n, big)?;
        pb.inc(1);
        Some(r)
    };
    pb.finish_and_clear();
    let report = Report {
        suite: o.suite.name().into(),
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
        .into(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        load_average: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok()),
        hot_tier_bytes: hot,
        workloads: results,
        plasma,
    };
    if let Some(p) = &o.json {
        let s =
            serde_json::to_string_pretty(&report).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(p, s + "\n")
            .map_err(|e| Error::io(format!("cannot write {}", p.display()), e))?;
    }
    if let Some(d) = &o.plot {
        plot::write_plots(&report, d)?;
    }
    Ok(report)
}

/// Body of the hidden worker subcommand: connects to `socket`, prints `READY`, waits for `GO`
/// on standard input (ends quietly on anything else), runs the workload of `spec_json` and prints one JSON result line.
pub fn worker_main(socket: &Path, spec_json: &str) -> Result<()> {
    let spec: WorkerSpec = serde_json::from_str(spec_json)
        .map_err(|e| Error::InvalidArgument(format!("bad worker spec: {e}")))?;
    let c = Client::connect_socket(socket)?;
    let mut out = std::io::stdout().lock();
    let io = |e| Error::io("worker standard output", e);
    writeln!(out, "READY").map_err(io)?;
    out.flush().map_err(io)?;
    let mut go = String::new();
    std::io::stdin()
        .read_line(&mut go)
        .map_err(|e| Error::io("worker standard input", e))?;
    if go.trim() != "GO" {
        // The harness went away (or gave up on this workload) before the start.
        return Ok(());
    }
    let (r, written) = workload::run_worker(&c, &spec)?;
    let line = serde_json::to_string(&r).map_err(|e| Error::Internal(e.to_string()))?;
    writeln!(out, "{line}").map_err(io)?;
    out.flush().map_err(io)?;
    workload::delete_all(&c, written);
    Ok(())
}
