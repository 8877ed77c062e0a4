//! Nothing acknowledged is lost: `kill -9` of the coordinator at random points of a put-heavy
//! workload from several client processes, per durability mode, then a restart that must read
//! back every acknowledged object byte for byte and show nothing that was never acknowledged;
//! the catalog likewise; and a warm tier whose disk is full.
//!
//! Child processes are this test binary re-executed with `CIDCACHE_CHILD` set (see
//! `multiprocess.rs`); a writer prints `TRY key` before and `ACK key` after each put.

mod common;

use cidcache::{Client, Error, PutOptions};
use common::*;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The bytes of key `writer`/`i`: self-describing content whose seed names the key.
fn seed_of(writer: u64, i: u64) -> u64 {
    writer << 40 | i
}

fn key_of(writer: u64, i: u64) -> String {
    format!("c{writer}-{i}")
}

fn parse_key(k: &str) -> Option<(u64, u64)> {
    let (w, i) = k.strip_prefix('c')?.split_once('-')?;
    Some((w.parse().ok()?, i.parse().ok()?))
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
#[ignore = "entry point of child processes"]
fn child() {
    let Ok(role) = std::env::var("CIDCACHE_CHILD") else {
        return;
    };
    assert_eq!(role, "writer");
    let sock = std::env::var("CIDCACHE_SOCKET").unwrap();
    let arg = std::env::var("CIDCACHE_ARG").unwrap();
    let v: Vec<u64> = arg.split(',').map(|x| x.parse().unwrap()).collect();
    let (writer, seed, durable) = (v[0], v[1], v[2] == 1);
    let mut rng = Rng(seed | 1);
    let c = Client::connect_socket(&sock).unwrap();
    let mut out = std::io::stdout().lock();
    let mut ghosts = Vec::new();
    for i in 0.. {
        if i % 16 == 5 {
            // Created and partly written, never sealed: must never appear.
            match c.create(format!("g{writer}-{i}").as_bytes(), 5000, 0) {
                Ok(mut w) => {
                    w.data_mut()[..100].fill(1);
                    ghosts.push(w);
                }
                Err(_) => break,
            }
        }
        let k = key_of(writer, i);
        let r = rng.next();
        // Mostly small inline puts; some above the inline limit (create, write, seal).
        let len = if r.is_multiple_of(10) {
            100_000 + (r >> 8) as usize % 200_000
        } else {
            1000 + (r >> 8) as usize % 30_000
        };
        let data = content(seed_of(writer, i), len);
        writeln!(out, "TRY {k}").unwrap();
        out.flush().unwrap();
        let opts = PutOptions {
            durable: durable && r.is_multiple_of(3),
            ..Default::default()
        };
        match c.put_with(k.as_bytes(), &data, opts) {
            Ok(()) => {
                writeln!(out, "ACK {k}").unwrap();
                out.flush().unwrap();
            }
            Err(e) => {
                writeln!(out, "ERR {e}").unwrap();
                break;
            }
        }
    }
    drop(ghosts);
}

fn spawn_writer(socket: &Path, writer: u64, seed: u64, durable: bool) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child",
            "--nocapture",
            "--include-ignored",
            "--test-threads",
            "1",
        ])
        .env("CIDCACHE_CHILD", "writer")
        .env("CIDCACHE_SOCKET", socket)
        .env("CIDCACHE_ARG", format!("{writer},{seed},{}", durable as u8))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// What the writers said: keys acknowledged, and each writer's last key tried without an
/// acknowledgement (in flight when the coordinator died).
#[derive(Default)]
struct Log {
    acked: HashSet<String>,
    in_flight: HashSet<String>,
}

type Collector = (Arc<Mutex<Log>>, Vec<std::thread::JoinHandle<()>>);

/// Starts reading what the writers say.
fn collect(children: Vec<std::process::Child>) -> Collector {
    let log = Arc::new(Mutex::new(Log::default()));
    let mut threads = Vec::new();
    for mut ch in children {
        let log = log.clone();
        threads.push(std::thread::spawn(move || {
            let out = ch.stdout.take().unwrap();
            let mut last_try = None;
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(k) = line.split("TRY ").nth(1) {
                    last_try = Some(k.trim().to_string());
                } else if let Some(k) = line.split("ACK ").nth(1) {
                    log.lock().unwrap().acked.insert(k.trim().to_string());
                    last_try = None;
                }
            }
            if let Some(k) = last_try {
                log.lock().unwrap().in_flight.insert(k);
            }
            let _ = ch.wait();
        }));
    }
    (log, threads)
}

/// Waits for the writers to end (they do when the coordinator dies) and returns what they said.
fn finish(c: Collector) -> Log {
    for t in c.1 {
        t.join().unwrap();
    }
    Arc::try_unwrap(c.0).ok().unwrap().into_inner().unwrap()
}

/// `key -> storage_tier` of every catalog row.
fn catalog(c: &Client) -> HashMap<String, String> {
    use arrow_array::{Array, BinaryArray, StringArray};
    let mut m = HashMap::new();
    for b in c
        .catalog_query_batches(&[], Some("cid,storage_tier"), None)
        .unwrap()
    {
        let k = b.column(0).as_any().downcast_ref::<BinaryArray>().unwrap();
        let t = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        for i in 0..b.num_rows() {
            m.insert(
                String::from_utf8_lossy(k.value(i)).to_string(),
                t.value(i).to_string(),
            );
        }
    }
    m
}

/// Checks a restarted store against what the writers were told.
fn verify(c: &Client, log: &Log, writers: u64, what: &str) {
    // First, before any get moves objects: the catalog has a row for every acknowledged
    // object, in the tier that holds it (read between two identical catalog snapshots, as
    // background eviction may move objects meanwhile).
    let list = |c: &Client| -> HashSet<String> {
        c.list()
            .unwrap()
            .into_iter()
            .map(|e| String::from_utf8_lossy(e.key.as_bytes()).to_string())
            .collect()
    };
    let mut checked = false;
    for _ in 0..20 {
        let (before, hot, after) = (catalog(c), list(c), catalog(c));
        if before != after {
            continue;
        }
        for k in &log.acked {
            let tier = before
                .get(k)
                .unwrap_or_else(|| panic!("{what}: no catalog row for {k} after the restart"));
            let want = if hot.contains(k) { "hot" } else { "warm" };
            assert_eq!(tier, want, "{what}: catalog row of {k}");
        }
        checked = true;
        break;
    }
    assert!(checked, "{what}: the catalog never held still");
    for k in &log.acked {
        let (w, i) = parse_key(k).unwrap();
        let o = c
            .get(k.as_bytes())
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: acknowledged {k} was lost"));
        let seed = check_content(o.data()).unwrap_or_else(|e| panic!("{what}: {k}: {e}"));
        assert_eq!(
            seed,
            seed_of(w, i),
            "{what}: {k} holds another object's bytes"
        );
    }
    // Nothing else appears but what was in flight; ghosts (never sealed) never do.
    let hot: HashSet<String> = c
        .list()
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8_lossy(e.key.as_bytes()).to_string())
        .collect();
    for k in &hot {
        assert!(!k.starts_with('g'), "{what}: unsealed {k} appears sealed");
        assert!(
            log.acked.contains(k) || log.in_flight.contains(k),
            "{what}: {k} appears but was never acknowledged nor in flight"
        );
        let (w, i) = parse_key(k).unwrap();
        let o = c.get(k.as_bytes()).unwrap().unwrap();
        assert_eq!(check_content(o.data()), Ok(seed_of(w, i)), "{what}: {k}");
    }
    for w in 0..writers {
        for i in 0..4096 {
            let g = format!("g{w}-{i}");
            if i % 16 == 5 {
                assert!(
                    !c.contains(g.as_bytes()).unwrap(),
                    "{what}: unsealed {g} appears"
                );
            }
            let k = key_of(w, i);
            if !log.acked.contains(&k) && !log.in_flight.contains(&k) {
                assert!(
                    !c.contains(k.as_bytes()).unwrap(),
                    "{what}: {k} was never put but appears"
                );
            }
        }
    }
    // The catalog follows the data: a row for every acknowledged object, in a tier that holds
    // it (the gets above promoted some, and eviction goes on meanwhile).
    let rows = catalog(c);
    for k in &log.acked {
        let tier = rows
            .get(k)
            .unwrap_or_else(|| panic!("{what}: no catalog row for {k}"));
        assert!(
            tier == "hot" || tier == "warm",
            "{what}: catalog row of {k}: {tier}"
        );
    }
}

fn crash_rounds(mode: &str, restart_extra: &[&str], rounds: u64, seed: u64) {
    let writers = 3;
    let mut rng = Rng(seed);
    for round in 0..rounds {
        // A hot tier much smaller than what is written: evictions and demotions all along.
        let mut d = Daemon::start(&["-m", "4M", "--arena-size", "1M", "--durability", mode]);
        let children: Vec<_> = (0..writers)
            .map(|w| spawn_writer(&d.socket, w, rng.next(), true))
            .collect();
        let c = collect(children);
        // A random point of the workload, once it runs.
        assert!(
            eventually(Duration::from_secs(60), || !c
                .0
                .lock()
                .unwrap()
                .acked
                .is_empty()),
            "{mode} round {round}: the writers did not start"
        );
        std::thread::sleep(Duration::from_millis(100 + rng.next() % 1500));
        d.kill9();
        let log = finish(c);
        d.args.extend(restart_extra.iter().map(|s| s.to_string()));
        d.spawn();
        let c = d.client();
        let what = format!("{mode} {restart_extra:?} round {round}");
        verify(&c, &log, writers, &what);
        eprintln!(
            "{what}: {} acknowledged, {} in flight; after restart {} adopted, {} in warm files",
            log.acked.len(),
            log.in_flight.len(),
            stat(&c, "hot.adopted_objects"),
            stat(&c, "warm.objects")
        );
    }
}

fn rounds() -> u64 {
    std::env::var("CIDCACHE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

/// Memory mode: acknowledged once in shared memory; a crashed coordinator's successor adopts
/// the hot tier, and what had been evicted is in the warm tier.
#[test]
fn kill9_loses_nothing_acknowledged_memory() {
    crash_rounds("memory", &[], rounds(), 0x5eed_0001);
}

/// demote-async: the same guarantee (adoption), with every put also queued for the warm tier.
#[test]
fn kill9_loses_nothing_acknowledged_demote_async() {
    crash_rounds("demote-async", &[], rounds(), 0x5eed_0002);
}

/// sync: acknowledged only in a synced warm file, so even a restart that discards shared
/// memory (`--no-adopt`) finds every acknowledged object.
#[test]
fn kill9_loses_nothing_acknowledged_sync_even_without_shared_memory() {
    crash_rounds("sync", &["--no-adopt"], rounds(), 0x5eed_0003);
}

/// A put with the durable flag is in a synced file when acknowledged, whatever the mode.
#[test]
fn a_durable_put_survives_losing_shared_memory() {
    let mut d = Daemon::start(&[]);
    let c = d.client();
    let durable = PutOptions {
        durable: true,
        ..Default::default()
    };
    for i in 0..20u64 {
        c.put_with(
            key_of(9, i).as_bytes(),
            &content(seed_of(9, i), 50_000),
            durable,
        )
        .unwrap();
    }
    // Above the inline limit: create, write, seal.
    c.put_with(b"big", &content(77, 1 << 20), durable).unwrap();
    c.put(b"plain", b"memory only").unwrap();
    assert_eq!(stat(&c, "warm.demotions"), 21);
    drop(c);
    d.kill9();
    d.args.push("--no-adopt".into());
    d.spawn();
    let c = d.client();
    for i in 0..20u64 {
        let o = c.get(key_of(9, i).as_bytes()).unwrap().unwrap();
        assert_eq!(check_content(o.data()), Ok(seed_of(9, i)));
    }
    assert_eq!(
        check_content(c.get(b"big").unwrap().unwrap().data()),
        Ok(77)
    );
    assert!(c.get(b"plain").unwrap().is_none());
    // Without a warm tier a durable put is an error, not a silent memory-only put.
    let d2 = Daemon::start(&["--no-warm"]);
    let e = d2.client().put_with(b"k", b"v", durable).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
}

/// A small tmpfs mounted as the data directory, unmounted on drop.
struct Tmpfs(PathBuf);
impl Tmpfs {
    fn mount(p: &Path, size: &str) -> Option<Tmpfs> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: mounting a small tmpfs to fill the warm tier's disk needs root");
            return None;
        }
        std::fs::create_dir_all(p).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(p)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: cannot mount a tmpfs (no CAP_SYS_ADMIN in this environment)");
            return None;
        }
        Some(Tmpfs(p.to_path_buf()))
    }
    /// Shrinks the filesystem to what it holds now plus `kib` KiB.
    fn leave_room(&self, kib: u64) {
        let v = rustix::fs::statvfs(&self.0).unwrap();
        let used = (v.f_blocks - v.f_bfree) * v.f_frsize / 1024;
        self.resize(&format!("{}k", used + kib));
    }
    fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success());
    }
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Starts the daemon of `d` again with stderr captured in a file.
fn spawn_logged(d: &mut Daemon, log: &Path) {
    let child = Command::new(daemon_bin())
        .args(&d.args)
        .env("CIDCACHE_LOG", "warn")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    d.child = Some(child);
    wait_for_socket(&d.socket, d.child.as_mut().unwrap());
}

/// Memory mode with the warm tier's disk full: evictions that cannot be written turn into
/// back-pressure (a clear StoreFull for the putting client), nothing acknowledged is dropped,
/// `warm.write_errors` counts objects, the tier recovers when space returns, and a SIGTERM
/// that cannot persist everything exits non-zero saying how many objects, leaving the hot
/// tier for the next start, which finds every acknowledged object.
#[test]
fn a_full_warm_disk_is_back_pressure_not_loss() {
    let mut d = Daemon::start(&["-m", "8M", "--arena-size", "2M", "--warm-capacity", "1G"]);
    d.kill9();
    let Some(fs) = Tmpfs::mount(&d.dir.path().join("data"), "3m") else {
        return;
    };
    let log = d.dir.path().join("daemon.log");
    spawn_logged(&mut d, &log);
    let c = d.client();
    let mut acked = Vec::new();
    // More than the disk holds is evicted: its writes fail, the objects stay in shared memory,
    // and once it is full of them puts are refused.
    let mut err = None;
    for i in 0..400u64 {
        match c.put(key_of(1, i).as_bytes(), &content(seed_of(1, i), 100_000)) {
            Ok(()) => acked.push(i),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let err = err.unwrap_or_else(|| {
        panic!(
            "the puts must stop once neither tier has room: {:?}",
            c.stats().unwrap()
        )
    });
    assert!(matches!(err, Error::StoreFull(_)), "{err}");
    assert!(err.to_string().contains("warm tier cannot write"), "{err}");
    assert!(stat(&c, "warm.failing") == 1);
    let errors = stat(&c, "warm.write_errors");
    assert!(errors >= 1, "write errors are counted");
    assert!(
        errors <= stat(&c, "warm.demotions"),
        "counted once per object"
    );
    // Nothing acknowledged was dropped. Reading an evicted one needs hot memory that cannot be
    // freed now: that is an error saying so, not a miss.
    for &i in &acked {
        assert!(
            c.contains(key_of(1, i).as_bytes()).unwrap(),
            "{i} was dropped"
        );
    }
    let hot: HashSet<Vec<u8>> = c
        .list()
        .unwrap()
        .into_iter()
        .map(|e| e.key.as_bytes().to_vec())
        .collect();
    let written = acked
        .iter()
        .map(|&i| key_of(1, i).into_bytes())
        .find(|k| !hot.contains(k))
        .expect("some objects reached the disk before it filled");
    let e = c.get(&written).unwrap_err();
    assert!(matches!(e, Error::StoreFull(_)), "{e}");
    // Space comes back: the retried writes go through and puts are accepted again.
    fs.resize("64m");
    assert!(eventually(Duration::from_secs(30), || stat(
        &c,
        "warm.failing"
    ) == 0));
    for &i in &acked {
        let o = c.get(key_of(1, i).as_bytes()).unwrap();
        let o = o.unwrap_or_else(|| panic!("acknowledged object {i} was dropped"));
        assert_eq!(check_content(o.data()), Ok(seed_of(1, i)));
    }
    c.put(b"after", &content(5, 100_000)).unwrap();
    // Full again, then SIGTERM: what cannot be written is reported and the exit is non-zero.
    fs.leave_room(1024);
    let mut more = 0u64;
    for i in 400..440u64 {
        if c.put(key_of(1, i).as_bytes(), &content(seed_of(1, i), 100_000))
            .is_err()
        {
            break;
        }
        acked.push(i);
        more += 1;
    }
    assert!(more > 0);
    drop(c);
    let status = d.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !status.success(),
        "a shutdown that lost objects must exit non-zero"
    );
    assert!(text.contains("could not be persisted"), "{text}");
    // The next start adopts what stayed in shared memory; what the daemon said is lost (objects
    // evicted whose writes never succeeded) is exactly what is missing.
    let said: u64 = text
        .split(" are lost")
        .next()
        .and_then(|t| t.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of lost objects in: {text}"));
    fs.resize("64m");
    d.spawn();
    let c = d.client();
    let mut missing = 0;
    for &i in &acked {
        match c.get(key_of(1, i).as_bytes()).unwrap() {
            Some(o) => assert_eq!(check_content(o.data()), Ok(seed_of(1, i))),
            None => missing += 1,
        }
    }
    if c.get(b"after").unwrap().is_none() {
        missing += 1;
    }
    assert_eq!(missing, said, "the lost objects were counted exactly");
    assert!(
        stat(&c, "hot.adopted_objects") > 0,
        "the hot tier was kept for adoption"
    );
}

/// Sync mode with the warm tier's disk full: the put that cannot be made durable gets a clear
/// error and is not stored; every acknowledged one survives a crash that loses shared memory.
#[test]
fn a_full_warm_disk_fails_sync_puts_clearly() {
    let mut d = Daemon::start(&["--durability", "sync", "--warm-capacity", "1G"]);
    d.kill9();
    let Some(_fs) = Tmpfs::mount(&d.dir.path().join("data"), "3m") else {
        return;
    };
    d.spawn();
    let c = d.client();
    let mut acked = Vec::new();
    let mut err = None;
    for i in 0..100u64 {
        match c.put(key_of(2, i).as_bytes(), &content(seed_of(2, i), 100_000)) {
            Ok(()) => acked.push(i),
            Err(e) => {
                err = Some((i, e));
                break;
            }
        }
    }
    let (failed, err) = err.expect("a 3 MiB disk cannot hold 10 MB");
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("cannot write"), "{err}");
    assert!(
        c.get(key_of(2, failed).as_bytes()).unwrap().is_none(),
        "a failed put is not stored"
    );
    assert!(!acked.is_empty());
    drop(c);
    d.kill9();
    d.args.push("--no-adopt".into());
    d.spawn();
    let c = d.client();
    for &i in &acked {
        let o = c.get(key_of(2, i).as_bytes()).unwrap();
        let o = o.unwrap_or_else(|| panic!("acknowledged durable object {i} was lost"));
        assert_eq!(check_content(o.data()), Ok(seed_of(2, i)));
    }
}

fn catalog_files(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                if !p.ends_with("quarantine") {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "parquet") {
                v.push(p);
            }
        }
    }
    v
}

/// The catalog after a crash right after a burst (before its checkpoint), and after its only
/// file is truncated: the rows are rebuilt from the warm tier's own records, with the user
/// metadata the warm files carry; catalog files are private (0700 / 0600).
#[test]
fn the_catalog_is_rebuilt_from_the_warm_tier() {
    use cidcache::tier::catalog::CatalogEntry;
    use std::os::unix::fs::PermissionsExt;
    let mut d = Daemon::start(&["-m", "8M", "--arena-size", "2M"]);
    let c = d.client();
    c.put(b"named", &content(1, 10_000)).unwrap();
    let mut e = CatalogEntry::new(cidcache::Key::new(b"named").unwrap(), 10_000, 0);
    e.filename = Some("cat.png".into());
    e.mimetype = Some("image/png".into());
    c.catalog_upsert(&[e]).unwrap();
    // A burst that pushes most objects (and `named`) out to the warm tier.
    for i in 0..200u64 {
        c.put(key_of(3, i).as_bytes(), &content(seed_of(3, i), 100_000))
            .unwrap();
    }
    assert!(eventually(Duration::from_secs(30), || stat(
        &c,
        "warm.queued_objects"
    ) == 0));
    let warm = stat(&c, "warm.objects");
    assert!(warm > 100);
    drop(c);
    // Within the 5 s checkpoint interval: the catalog files lack most rows.
    d.kill9();
    d.spawn();
    let c = d.client();
    let rows = catalog(&c);
    for i in 0..200u64 {
        assert!(
            rows.contains_key(&key_of(3, i)),
            "row of {i} missing after kill -9"
        );
    }
    let q = |c: &Client, f: &[&str]| {
        c.catalog_query_batches(f, Some("cid"), None)
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>()
    };
    assert_eq!(q(&c, &["filename=cat.png", "storage_tier=warm"]), 1);
    drop(c);
    // Checkpointed on a clean stop; then every catalog file truncated.
    assert!(d.stop().success());
    let cat_dir = d.dir.path().join("data/catalog");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cat_dir), 0o700);
    let files = catalog_files(&cat_dir);
    assert!(!files.is_empty());
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
        let len = std::fs::metadata(f).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(f)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
    }
    d.spawn();
    let c = d.client();
    let rows = catalog(&c);
    assert_eq!(
        rows.len() as u64,
        stat(&c, "warm.objects") + stat(&c, "hot.objects")
    );
    for i in 0..200u64 {
        assert!(rows.contains_key(&key_of(3, i)), "row of {i} not rebuilt");
    }
    assert_eq!(q(&c, &["filename=cat.png", "mimetype=image/png"]), 1);
}
