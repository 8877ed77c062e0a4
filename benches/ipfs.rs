//! IPFS tier benchmark, side by side in one run against one real kubo node on loopback:
//!
//! 1. The first get of a 1 MiB and a 64 MiB UnixFS file through cidcache (cold: the key is
//!    deleted before each run, so every run fetches, verifies every block and publishes)
//!    against `ipfs cat` of the same file on the same node (the CLI, as a user runs it, and the
//!    RPC `cat` it calls, over one HTTP request without the CLI's start-up).
//! 2. Every later get (a zero-copy hit; and a hit that also reads every byte) against the same
//!    `ipfs cat`.
//! 3. 1,000 small CIDs: one `get_many` on a cold store against 1,000 `ipfs block get` calls
//!    (and 1,000 RPC `block/get` requests).
//! 4. Prefetch: a directory of 100 files, fetched and then every file read, with prefetch on
//!    (depth 1) and off; and what prefetch costs when only the directory is read.
//!
//! `cargo bench --bench ipfs` (`-- --quick`: fewer runs). Needs `CIDCACHE_KUBO` (the path
//! `scripts/kubo.sh` prints); without it, says so and exits 0. Prints figures and ratios,
//! asserts nothing about timings.

use cidcache::harness::kubo::{self, Kubo};
use cidcache::Client;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Daemon {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(name: &str, extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("s.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_cidcached"))
            .args([
                "--store",
                &format!("bench-ipfs-{name}-{}", std::process::id()),
            ])
            .arg("--socket")
            .arg(&socket)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["-m", "1G", "--no-warm"])
            .args(extra)
            .env("CIDCACHE_LOG", "warn")
            .spawn()
            .expect("cidcached");
        let start = Instant::now();
        while Client::connect_socket(&socket).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "cidcached did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon {
            child,
            socket,
            _dir: dir,
        }
    }

    fn client(&self) -> Client {
        Client::connect_socket(&self.socket).expect("connect")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// `ipfs ARGS > /dev/null`, timed.
fn ipfs_cli(node: &Kubo, args: &[&str]) -> Duration {
    let t = Instant::now();
    let st = node
        .cmd()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("ipfs");
    let d = t.elapsed();
    assert!(st.success(), "ipfs {args:?} failed");
    d
}

/// One RPC call (POST, no body) read to the end: the bytes of the answer's body (chunked
/// framing included), timed.
fn rpc(api: &str, path: &str) -> (Duration, usize) {
    let addr = api.trim_start_matches("http://");
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the RPC API");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    (t.elapsed(), n)
}

fn stat(c: &Client, name: &str) -> u64 {
    c.stats()
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == name)
        .map_or(0, |(_, v)| v)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let Some(bin) = kubo::binary("benches/ipfs") else {
        return;
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "IPFS tier benchmark (kubo v0.43.1 on loopback); load: {}",
        load.trim()
    );
    let node = Kubo::start(&bin).expect("kubo");
    let d = Daemon::start("main", &["--ipfs-api", &node.api]);
    let c = d.client();

    // ----- 1 and 2: first and later gets of UnixFS files ----------------------------------
    println!(
        "\n{:<10} {:>14} {:>14} {:>14} {:>14} {:>9}",
        "file", "cidcache 1st", "`cidcache get`", "`ipfs cat`", "RPC cat", "1st/cat"
    );
    let mut later = Vec::new();
    for (name, len, runs) in [("1 MiB", 1usize << 20, 15), ("64 MiB", 64 << 20, 5)] {
        let runs = if quick { 3 } else { runs };
        let data = random(len as u64, len);
        let cid = node.add(&data, &[]).expect("ipfs add");
        let key = cidcache::cid::parse(&cid).unwrap();
        // Once each first: kubo's blocks are in the page cache for both sides alike.
        let _ = ipfs_cli(&node, &["cat", &cid]);
        let (mut first, mut cli, mut cat, mut rpc_cat) = (vec![], vec![], vec![], vec![]);
        for _ in 0..runs {
            let _ = c.delete(&key);
            let t = Instant::now();
            let o = c.get(&key).unwrap().expect("fetched");
            first.push(t.elapsed());
            assert_eq!(o.data().len(), len);
            drop(o);
            let _ = c.delete(&key);
            let t = Instant::now();
            let st = Command::new(env!("CARGO_BIN_EXE_cidcache"))
                .arg("--socket")
                .arg(&d.socket)
                .args(["get", &cid, "-o", "/dev/null"])
                .status()
                .unwrap();
            cli.push(t.elapsed());
            assert!(st.success());
            cat.push(ipfs_cli(&node, &["cat", &cid]));
            let (t, n) = rpc(&node.api, &format!("/api/v0/cat?arg={cid}"));
            assert!(n >= len);
            rpc_cat.push(t);
        }
        let (first, cli, cat, rpc_cat) = (median(first), median(cli), median(cat), median(rpc_cat));
        println!(
            "{:<10} {:>14} {:>14} {:>14} {:>14} {:>8.2}x",
            name,
            ms(first),
            ms(cli),
            ms(cat),
            ms(rpc_cat),
            first.as_secs_f64() / cat.as_secs_f64()
        );
        // Later gets: the object is in shared memory now.
        let o = c.get(&key).unwrap().expect("present");
        drop(o);
        let n = if len > 4 << 20 { 2_000 } else { 20_000 };
        let t = Instant::now();
        for _ in 0..n {
            let o = c.get(&key).unwrap().unwrap();
            std::hint::black_box(o.data().as_ptr());
        }
        let hit = t.elapsed() / n;
        let reads = if len > 4 << 20 { 20 } else { 500 };
        let t = Instant::now();
        for _ in 0..reads {
            let o = c.get(&key).unwrap().unwrap();
            // Every byte read (summed 8 at a time), as `ipfs cat` delivers every byte.
            let s: u64 = o
                .data()
                .chunks_exact(8)
                .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
                .fold(0, u64::wrapping_add);
            std::hint::black_box(s);
        }
        let read = t.elapsed() / reads;
        later.push((name, hit, read, cat, rpc_cat));
    }
    println!(
        "\n{:<10} {:>14} {:>16} {:>14} {:>16}",
        "file", "later get", "`ipfs cat`/get", "get+read all", "`ipfs cat`/read"
    );
    for (name, hit, read, cat, _) in &later {
        println!(
            "{:<10} {:>11.0} ns {:>15.0}x {:>14} {:>15.0}x",
            name,
            hit.as_secs_f64() * 1e9,
            cat.as_secs_f64() / hit.as_secs_f64(),
            ms(*read),
            cat.as_secs_f64() / read.as_secs_f64()
        );
    }

    // ----- 3: 1,000 small CIDs --------------------------------------------------------------
    let n = if quick { 200 } else { 1000 };
    let dir = tempfile::tempdir().unwrap();
    let blobs: Vec<Vec<u8>> = (0..n).map(|i| random(1_000_000 + i as u64, 4096)).collect();
    for (i, b) in blobs.iter().enumerate() {
        std::fs::write(dir.path().join(format!("b{i:04}")), b).unwrap();
    }
    node.run(
        &[
            "add",
            "-r",
            "-Q",
            "--cid-version",
            "1",
            "--raw-leaves",
            dir.path().to_str().unwrap(),
        ],
        None,
    )
    .expect("ipfs add -r");
    let texts: Vec<String> = blobs
        .iter()
        .map(|b| cidcache::cid::format(&cidcache::cid::cid_v1_raw(b)).unwrap())
        .collect();
    let keys: Vec<Vec<u8>> = blobs.iter().map(|b| cidcache::cid::cid_v1_raw(b)).collect();
    let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
    let cold = Daemon::start("many", &["--ipfs-api", &node.api]);
    let cc = cold.client();
    let t = Instant::now();
    let got = cc.get_many(&refs, Duration::ZERO);
    let many = t.elapsed();
    assert!(
        got.iter().all(|r| matches!(r, Ok(Some(_)))),
        "every CID fetched"
    );
    drop(got);
    let t = Instant::now();
    let got = cc.get_many(&refs, Duration::ZERO);
    let many_hit = t.elapsed();
    assert!(got.iter().all(|r| matches!(r, Ok(Some(_)))));
    drop(got);
    let t = Instant::now();
    for cid in &texts {
        let (_, k) = rpc(&node.api, &format!("/api/v0/block/get?arg={cid}"));
        assert!(k >= 4096);
    }
    let rpc_blocks = t.elapsed();
    let t = Instant::now();
    for cid in &texts {
        ipfs_cli(&node, &["block", "get", cid]);
    }
    let cli_blocks = t.elapsed();
    println!(
        "\n{n} CIDs of 4 KiB: get_many cold {} (hits after: {}); {n} `ipfs block get` {} ({:.0}x); {n} RPC block/get {} ({:.1}x)",
        ms(many),
        ms(many_hit),
        ms(cli_blocks),
        cli_blocks.as_secs_f64() / many.as_secs_f64(),
        ms(rpc_blocks),
        rpc_blocks.as_secs_f64() / many.as_secs_f64(),
    );

    // ----- 4: prefetch ---------------------------------------------------------------------
    let files = 100;
    let pdir = tempfile::tempdir().unwrap();
    let fdata: Vec<Vec<u8>> = (0..files)
        .map(|i| random(2_000_000 + i as u64, 16 << 10))
        .collect();
    for (i, f) in fdata.iter().enumerate() {
        std::fs::write(pdir.path().join(format!("f{i:03}")), f).unwrap();
    }
    let out = node
        .run(
            &[
                "add",
                "-r",
                "-Q",
                "--cid-version",
                "1",
                "--raw-leaves",
                pdir.path().to_str().unwrap(),
            ],
            None,
        )
        .expect("ipfs add -r");
    let root = cidcache::cid::parse(String::from_utf8_lossy(&out).trim()).unwrap();
    let fkeys: Vec<Vec<u8>> = fdata.iter().map(|f| cidcache::cid::cid_v1_raw(f)).collect();
    println!("\nprefetch: a directory of {files} files of 16 KiB, then every file read in order");
    for depth in ["1", "0"] {
        let s = Daemon::start(
            &format!("prefetch{depth}"),
            &["--ipfs-api", &node.api, "--ipfs-prefetch-depth", depth],
        );
        let sc = s.client();
        let t = Instant::now();
        assert!(sc.get(&root).unwrap().is_some());
        let dir_t = t.elapsed();
        for k in &fkeys {
            assert!(sc.get(k).unwrap().is_some());
        }
        let all = t.elapsed();
        println!(
            "  depth {depth}: directory {}, directory + {files} files {}; fetches {}, prefetched {}, used {}",
            ms(dir_t),
            ms(all),
            stat(&sc, "ipfs.fetches"),
            stat(&sc, "ipfs.prefetched"),
            stat(&sc, "ipfs.prefetch_used"),
        );
    }
    // What it costs when nobody reads the files: the directory alone, then wait for the
    // prefetch to settle.
    let s = Daemon::start("prefetch-waste", &["--ipfs-api", &node.api]);
    let sc = s.client();
    let t = Instant::now();
    assert!(sc.get(&root).unwrap().is_some());
    let dir_t = t.elapsed();
    while stat(&sc, "ipfs.prefetched") < files as u64 && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(1));
    }
    println!(
        "  depth 1, directory only: {} to answer, prefetch done after {}: {} objects, {} KiB fetched that no get asked for",
        ms(dir_t),
        ms(t.elapsed()),
        stat(&sc, "ipfs.prefetched"),
        stat(&sc, "ipfs.fetched_bytes") / 1024
    );
    let bad = node.foreign_connections().unwrap_or_default();
    println!(
        "\nkubo connections beyond loopback during the run: {}",
        bad.len()
    );
}
