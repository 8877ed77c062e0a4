//! Restarts and durability, side by side in one run (release build, real daemons):
//!
//! 1. **Restart to serving.** Fill the hot tier with N bytes of objects, `kill -9` the
//!    coordinator, start a new one and time until a new client's first get hits: with
//!    adoption (the default) and, for comparison, the empty start of `--no-adopt`. The
//!    adoption's own time is read from the daemon's log. Sizes: 1 GiB and 8 GiB of 1 MiB
//!    objects, and 1 GiB of 64 KiB and of 4 KiB objects (the index, not the data, sets the
//!    cost). A size whose data does not fit twice in the free space of `/dev/shm` is skipped
//!    with a message.
//! 2. **Put throughput per durability mode** (`memory`, `demote-async`, `sync`, and a durable
//!    put in memory mode): 4 KiB and 64 KiB objects, one client and four, with a hot tier that
//!    holds everything, then 64 KiB puts through a hot tier 1/8 of the data (every put evicts,
//!    every eviction is written).
//!
//! `cargo bench --bench durability` (`-- --quick`: 256 MiB restarts and fewer puts; `-- restart`
//! or `-- puts` for one part). Prints figures and ratios; asserts nothing about timings.

use cidcache::{Client, PutOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Daemon {
    child: Option<Child>,
    args: Vec<String>,
    socket: PathBuf,
    store: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn new(tag: &str, extra: &[&str]) -> Daemon {
        let dir =
            tempfile::tempdir_in(std::env::var("CIDCACHE_BENCH_DIR").unwrap_or("/tmp".into()))
                .expect("tempdir");
        let socket = dir.path().join("s.sock");
        let store = format!("bench-dur-{tag}-{}", std::process::id());
        let mut args = vec![
            "--store".to_string(),
            store.clone(),
            "--socket".into(),
            socket.display().to_string(),
            "--data-dir".into(),
            dir.path().join("data").display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = dir.path().join("daemon.log");
        Daemon {
            child: None,
            args,
            socket,
            store,
            log,
            _dir: dir,
        }
    }

    /// Starts the daemon; returns when its socket accepts a connection. With
    /// `CIDCACHE_BENCH_PERF=FILE`, the daemon runs under `perf record -g -o FILE` (profiling).
    fn spawn(&mut self, extra: &[&str]) -> Duration {
        let t = Instant::now();
        let mut cmd = match std::env::var("CIDCACHE_BENCH_PERF") {
            Ok(out) if extra == ["--profile-adoption"] => {
                let mut c = Command::new("perf");
                c.args(["record", "-F", "4000", "-g", "-o", &out, "--"])
                    .arg(env!("CARGO_BIN_EXE_cidcached"));
                c
            }
            _ => Command::new(env!("CARGO_BIN_EXE_cidcached")),
        };
        let child = cmd
            .args(&self.args)
            .args(extra.iter().filter(|a| **a != "--profile-adoption"))
            .env("CIDCACHE_LOG", "info")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&self.log).expect("log"))
            .spawn()
            .expect("spawn cidcached");
        self.child = Some(child);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "cidcached exited: {s}\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        t.elapsed()
    }

    fn client(&self) -> Client {
        Client::connect_socket(&self.socket).expect("connect")
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let mut c = c;
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        let prefix = format!("cidcache.{}.", self.store);
        if let Ok(rd) = std::fs::read_dir("/dev/shm") {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

fn shm_free() -> u64 {
    let v = rustix::fs::statvfs("/dev/shm").expect("statvfs /dev/shm");
    v.f_bavail * v.f_frsize
}

fn human(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{} GiB", n >> 30)
    } else if n >= 1 << 20 {
        format!("{} MiB", n >> 20)
    } else {
        format!("{} KiB", n >> 10)
    }
}

/// The "adopted N objects (...) in X ms (Y ms of CPU; ...)" figures of the daemon's log.
fn adoption_ms(log: &Path) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find(|l| l.contains("adopted "))?;
    let rest = line.split(" in ").nth(1)?;
    let wall = rest.split(" ms").next()?.trim().parse().ok()?;
    let cpu = rest
        .split('(')
        .nth(1)?
        .split(" ms")
        .next()?
        .trim()
        .parse()
        .ok()?;
    Some((wall, cpu))
}

fn restart(total: u64, object: u64) {
    let n = total / object;
    if shm_free() < 2 * total + (256 << 20) {
        println!(
            "restart, {} of {} objects: skipped, /dev/shm has {} free and this needs twice the data",
            human(total),
            human(object),
            human(shm_free())
        );
        return;
    }
    let cap = (n + n / 4 + 1024).next_power_of_two();
    let mem = format!("{}", total + total / 8 + (512 << 20));
    let mut d = Daemon::new(
        &format!("r{}", n),
        &[
            "--no-warm",
            "-m",
            &mem,
            "--index-capacity",
            &cap.to_string(),
        ],
    );
    d.spawn(&[]);
    let c = d.client();
    let fill = Instant::now();
    let mut small = vec![0u8; object as usize];
    for i in 0..n {
        let key = format!("o{i}");
        if object <= 64 << 10 {
            // Inline: one round trip.
            small[..8].copy_from_slice(&i.to_le_bytes());
            c.put(key.as_bytes(), &small).expect("put");
        } else {
            let mut w = c
                .create(key.as_bytes(), object as usize, 0)
                .expect("create");
            w.data_mut()[..8].copy_from_slice(&i.to_le_bytes());
            w.seal().expect("seal");
        }
    }
    let fill = fill.elapsed();
    drop(c);
    let mut times = Vec::new();
    for adopt in [true, false] {
        d.kill9();
        let t = Instant::now();
        let listening = d.spawn(if adopt {
            &["--profile-adoption"]
        } else {
            &["--no-adopt"]
        });
        let c = d.client();
        let got = c.get(b"o0").expect("get");
        let serving = t.elapsed();
        if adopt {
            let o = got.expect("adopted object");
            assert_eq!(&o.data()[..8], &0u64.to_le_bytes());
        }
        times.push((listening, serving, adoption_ms(&d.log)));
        if adopt && std::env::var("CIDCACHE_BENCH_PERF").is_ok() {
            // perf record stops (and writes its file) on SIGINT; the daemon stops with it.
            if let Some(mut p) = d.child.take() {
                let _ = Command::new("kill")
                    .args(["-INT", &p.id().to_string()])
                    .status();
                let _ = p.wait();
            }
            // The daemon (perf's child) may outlive it: its pid is in the store's lock file.
            let lock = format!("/dev/shm/cidcache.{}.lock", d.store);
            if let Ok(pid) = std::fs::read_to_string(lock) {
                let _ = Command::new("kill").args(["-9", pid.trim()]).status();
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    let (al, a_s, a_ms) = times[0];
    let (_, n_s, _) = times[1];
    println!(
        "restart, {} of {} objects ({n} objects, index {} slots, filled in {:.1} s): adopt {:.0} ms to serving (socket after {:.0} ms, adoption itself {}), --no-adopt {:.0} ms to an empty store",
        human(total),
        human(object),
        cap,
        fill.as_secs_f64(),
        a_s.as_secs_f64() * 1e3,
        al.as_secs_f64() * 1e3,
        a_ms.map_or("?".into(), |(w, c)| format!("{w:.1} ms, {c:.1} ms of CPU")),
        n_s.as_secs_f64() * 1e3,
    );
}

struct PutCase {
    mode: &'static str,
    durable_flag: bool,
}

/// Puts `n` objects of `size` bytes from `clients` connections; returns puts per second.
fn put_rate(d: &Daemon, n: u64, size: usize, clients: u64, durable: bool, tag: &str) -> f64 {
    let per = n / clients;
    let t = Instant::now();
    std::thread::scope(|s| {
        for k in 0..clients {
            let sock = d.socket.clone();
            s.spawn(move || {
                let c = Client::connect_socket(&sock).expect("connect");
                let mut data = vec![0u8; size];
                let opts = PutOptions {
                    durable,
                    ..Default::default()
                };
                for i in 0..per {
                    // Distinct, incompressible-ish bytes per object.
                    let mut x = (k << 40 | i).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                    for w in data.chunks_mut(8) {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        w.copy_from_slice(&x.to_le_bytes()[..w.len()]);
                    }
                    c.put_with(format!("{tag}-{k}-{i}").as_bytes(), &data, opts)
                        .expect("put");
                }
            });
        }
    });
    (per * clients) as f64 / t.elapsed().as_secs_f64()
}

fn puts(quick: bool) {
    let cases = [
        PutCase {
            mode: "memory",
            durable_flag: false,
        },
        PutCase {
            mode: "demote-async",
            durable_flag: false,
        },
        PutCase {
            mode: "sync",
            durable_flag: false,
        },
        PutCase {
            mode: "memory",
            durable_flag: true,
        },
    ];
    let scale = if quick { 4 } else { 1 };
    let shapes: [(usize, u64, u64); 4] = [
        (4 << 10, 1, 4000 / scale),
        (4 << 10, 4, 8000 / scale),
        (64 << 10, 1, 2000 / scale),
        (64 << 10, 4, 4000 / scale),
    ];
    let evict_only = std::env::args().any(|a| a == "evict");
    if !evict_only {
        puts_fitting(&cases, &shapes);
    }
    evicting(&cases, scale);
}

fn puts_fitting(cases: &[PutCase], shapes: &[(usize, u64, u64)]) {
    println!("\nput throughput, hot tier holding everything (puts/s; ratio to memory mode):");
    let mut base: Vec<f64> = Vec::new();
    for (ci, case) in cases.iter().enumerate() {
        let mut row = Vec::new();
        for (si, &(size, clients, n)) in shapes.iter().enumerate() {
            let mut d = Daemon::new(
                &format!("p{ci}{si}"),
                &["-m", "2G", "--durability", case.mode],
            );
            d.spawn(&[]);
            let r = put_rate(&d, n, size, clients, case.durable_flag, "k");
            d.stop();
            row.push(r);
        }
        if ci == 0 {
            base = row.clone();
        }
        let label = if case.durable_flag {
            "memory + PutOptions::durable".to_string()
        } else {
            format!("--durability {}", case.mode)
        };
        let cells: Vec<String> = row
            .iter()
            .zip(&base)
            .zip(shapes)
            .map(|((r, b), (size, clients, _))| {
                format!(
                    "{} x{}: {:.0}/s ({:.0} MB/s, {:.2}x)",
                    human(*size as u64),
                    clients,
                    r,
                    r * *size as f64 / 1e6,
                    r / b
                )
            })
            .collect();
        println!("  {label:<30} {}", cells.join(" | "));
    }
}

fn evicting(cases: &[PutCase], scale: u64) {
    println!("\nput throughput through a hot tier 1/8 of the data (64 KiB, 4 clients; every put evicts):");
    let n = 4096 / scale;
    let mut base = 0.0;
    for (ci, case) in cases.iter().enumerate().take(3) {
        let mut d = Daemon::new(
            &format!("e{ci}"),
            &[
                "-m",
                &format!("{}", (n << 16) / 8),
                "--arena-size",
                "4M",
                "--durability",
                case.mode,
            ],
        );
        d.spawn(&[]);
        let r = put_rate(&d, n, 64 << 10, 4, false, "e");
        let c = d.client();
        let ev = c
            .stats()
            .unwrap()
            .into_iter()
            .find(|(k, _)| k == "hot.evictions")
            .map_or(0, |s| s.1);
        drop(c);
        d.stop();
        if ci == 0 {
            base = r;
        }
        println!(
            "  --durability {:<14} {:.0} puts/s ({:.0} MB/s, {:.2}x), {ev} evictions",
            case.mode,
            r,
            r * 65536.0 / 1e6,
            r / base
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = |what: &str| {
        !args
            .iter()
            .any(|a| a == "restart" || a == "puts" || a == "evict")
            || args
                .iter()
                .any(|a| a == what || (what == "puts" && a == "evict"))
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "durability bench (load average {}), /dev/shm free {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        human(shm_free())
    );
    if only("restart") {
        let sizes: Vec<(u64, u64)> = if quick {
            vec![(256 << 20, 1 << 20), (256 << 20, 4 << 10)]
        } else {
            vec![
                (1 << 30, 1 << 20),
                (1 << 30, 64 << 10),
                (1 << 30, 4 << 10),
                (8 << 30, 1 << 20),
            ]
        };
        for (total, object) in sizes {
            restart(total, object);
        }
    }
    if only("puts") {
        puts(quick);
    }
}
