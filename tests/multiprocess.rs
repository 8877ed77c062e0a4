//! Many processes: readers hammering gets while the coordinator churns puts, deletes and
//! evictions (every byte checked); readers and writers killed with SIGKILL mid-way.
//!
//! Child processes are this test binary re-executed with `CIDCACHE_CHILD` set; the child runs
//! the ignored `child` test below and reports through its exit status and stdout.

mod common;

use cidcache::Client;
use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn spawn_child(role: &str, socket: &std::path::Path, extra: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child",
            "--nocapture",
            "--include-ignored",
            "--test-threads",
            "1",
        ])
        .env("CIDCACHE_CHILD", role)
        .env("CIDCACHE_SOCKET", socket)
        .env("CIDCACHE_ARG", extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Reads lines from a child until one starts with `prefix`.
fn wait_line(c: &mut std::process::Child, prefix: &str) -> String {
    let out = c.stdout.as_mut().unwrap();
    let mut r = BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            panic!("child exited before printing {prefix}");
        }
        // libtest prints "test child ... " without a newline before the child's own output.
        if let Some(pos) = line.find(prefix) {
            return line[pos..].trim().to_string();
        }
    }
}

const KEYS: u64 = 64;

fn key(i: u64) -> Vec<u8> {
    format!("obj-{i}").into_bytes()
}

#[test]
#[ignore = "entry point of child processes"]
fn child() {
    let Ok(role) = std::env::var("CIDCACHE_CHILD") else {
        return;
    };
    let sock = std::env::var("CIDCACHE_SOCKET").unwrap();
    let arg = std::env::var("CIDCACHE_ARG").unwrap_or_default();
    let c = Client::connect_socket(&sock).unwrap();
    match role.as_str() {
        "reader" => {
            // Hammer gets for `arg` ms; verify every byte of every hit.
            let until = Instant::now() + Duration::from_millis(arg.parse().unwrap());
            let (mut hits, mut misses, mut i) = (0u64, 0u64, 0u64);
            while Instant::now() < until {
                i = i
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let k = (i >> 33) % KEYS;
                match c.get(&key(k)).unwrap() {
                    Some(o) => {
                        let seed = check_content(o.data())
                            .unwrap_or_else(|e| panic!("torn or reused read of key {k}: {e}"));
                        assert_eq!(seed >> 32, k, "key {k} returned another key's bytes");
                        hits += 1;
                    }
                    None => misses += 1,
                }
            }
            println!("RESULT hits={hits} misses={misses}");
        }
        "pinner" => {
            let n: u64 = arg.parse().unwrap();
            let held: Vec<_> = (0..n).map(|i| c.get(&key(i)).unwrap().unwrap()).collect();
            println!("READY {}", held.len());
            std::thread::sleep(Duration::from_secs(60));
        }
        "creator" => {
            let mut w = c.create(b"unsealed", 8 << 20, 0).unwrap();
            w.data_mut().fill(1);
            println!("READY");
            std::thread::sleep(Duration::from_secs(60));
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn readers_never_see_torn_or_reused_bytes_under_churn() {
    // Small memory so that churn forces evictions and memory reuse all the time.
    let d = Daemon::start(&["-m", "8M", "--arena-size", "8M", "--index-capacity", "256"]);
    let w = d.client();
    let size = |k: u64, g: u64| 64 + ((k * 7919 + g * 104729) % (96 << 10)) as usize;
    for k in 0..KEYS {
        w.put(&key(k), &content(k << 32, size(k, 0))).unwrap();
    }
    let readers: Vec<_> = (0..3)
        .map(|_| spawn_child("reader", &d.socket, "3000"))
        .collect();
    let until = Instant::now() + Duration::from_millis(3000);
    let mut gen = 1u64;
    let mut ops = 0u64;
    while Instant::now() < until {
        for k in (gen % 5..KEYS).step_by(5) {
            let _ = w.delete(&key(k));
            let _ = w.put(&key(k), &content((k << 32) | gen, size(k, gen)));
            ops += 2;
        }
        gen += 1;
    }
    let mut total_hits = 0;
    for mut r in readers {
        let line = wait_line(&mut r, "RESULT");
        assert!(r.wait().unwrap().success(), "a reader found a bad read");
        let hits: u64 = line.split_whitespace().nth(1).unwrap()[5..]
            .parse()
            .unwrap();
        total_hits += hits;
    }
    assert!(
        total_hits > 1000,
        "readers made too few hits ({total_hits}) to mean anything"
    );
    assert!(
        stat(&w, "hot.evictions") + stat(&w, "hot.deletes") > 100,
        "not enough churn"
    );
    eprintln!("churn: {ops} writer ops, {total_hits} verified hits");
}

#[test]
fn sigkilled_reader_leaves_no_pins() {
    let d = Daemon::start(&[]);
    let c = d.client();
    for k in 0..100 {
        c.put(&key(k), &content(k << 32, 4096)).unwrap();
    }
    let mut p = spawn_child("pinner", &d.socket, "100");
    wait_line(&mut p, "READY");
    assert_eq!(stat(&c, "pins"), 100);
    assert_eq!(stat(&c, "clients"), 2);
    // Delete while the dead-to-be reader pins: memory must wait for it.
    for k in 0..100 {
        c.delete(&key(k)).unwrap();
    }
    assert_eq!(stat(&c, "hot.deferred_frees_pending"), 100);
    p.kill().unwrap();
    p.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || stat(&c, "clients") == 1
            && stat(&c, "pins") == 0
            && stat(&c, "hot.deferred_frees_pending") == 0),
        "pins of a killed client must be dropped"
    );
    assert_eq!(stat(&c, "hot.memory_allocated"), 0, "no memory leaked");
    let is_lease = |f: &String| {
        f.rsplit('.')
            .next()
            .and_then(|s| s.strip_prefix('l'))
            .is_some_and(|n| n.parse::<u64>().is_ok())
    };
    let leases = d.shm_files().iter().filter(|f| is_lease(f)).count();
    assert_eq!(leases, 1, "only the live client's lease page remains");
}

#[test]
fn sigkilled_writer_leaves_no_leak() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let mut p = spawn_child("creator", &d.socket, "");
    wait_line(&mut p, "READY");
    assert!(stat(&c, "hot.memory_allocated") >= 8 << 20);
    p.kill().unwrap();
    p.wait().unwrap();
    assert!(eventually(Duration::from_secs(5), || stat(
        &c,
        "hot.memory_allocated"
    ) == 0));
    assert!(c.get(b"unsealed").unwrap().is_none());
    c.put(b"unsealed", b"reusable key").unwrap();
}
