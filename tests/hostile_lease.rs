//! Clients that scribble over their own lease page (the only shared memory a client writes),
//! against a real daemon: the scribbler loses its own session (connection closed, unsealed
//! objects freed, pins dropped) and nothing else; other clients keep putting, getting,
//! evicting and deleting, and Stats keeps working. Scribbles that cannot be told apart from a
//! correct page (a hit-ring head far ahead or moving back, garbage hit ids, forged pins on real
//! slots) cost bounded work and end nothing.

mod common;

use cidcache::Client;
use common::*;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A hot tier small enough that the workers' puts evict all the time.
const SMALL: &[&str] = &["-m", "8M", "--arena-size", "2M", "--index-capacity", "1024"];

/// Lease-page byte offsets (docs/layout.md, src/pins.rs).
const MAGIC: u64 = 0;
const CLIENT_ID: u64 = 8;
const PINS: u64 = 16;
const HITS: u64 = 24;
const HEAD: u64 = 32;
const PIN0: u64 = 64;
/// The hit ring follows the pins (the daemon's default 4,096 pin words).
const RING0: u64 = PIN0 + 4096 * 8;

fn lease_file(d: &Daemon, c: &Client) -> std::fs::File {
    let p = format!("/dev/shm/cidcache.{}.l{}", d.store, c.client_id());
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap_or_else(|e| panic!("open {p}: {e}"))
}

fn write_word(f: &std::fs::File, at: u64, v: u64) {
    f.write_all_at(&v.to_le_bytes(), at).unwrap();
}

/// Well-behaved clients on their own threads (each with its own connection and lease page):
/// evicting puts, gets with content checks, deletes and Stats, until stopped. Any error fails
/// the test.
struct Workers {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    handles: Vec<std::thread::JoinHandle<Result<(), String>>>,
}

impl Workers {
    fn start(d: &Daemon, n: usize) -> Workers {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let handles = (0..n)
            .map(|w| {
                let c = d.client();
                let (stop, rounds) = (stop.clone(), rounds.clone());
                std::thread::spawn(move || -> Result<(), String> {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("w{w}-{i}");
                        let seed = (w as u64) << 32 | i;
                        c.put(key.as_bytes(), &content(seed, 96 << 10))
                            .map_err(|e| format!("worker {w}: put {key}: {e}"))?;
                        let o = c
                            .get(key.as_bytes())
                            .map_err(|e| format!("worker {w}: get {key}: {e}"))?
                            .ok_or_else(|| format!("worker {w}: {key} missing right after put"))?;
                        check_content(o.data()).map_err(|e| format!("worker {w}: {key}: {e}"))?;
                        drop(o);
                        if i.is_multiple_of(3) {
                            c.delete(key.as_bytes())
                                .map_err(|e| format!("worker {w}: delete {key}: {e}"))?;
                        }
                        if i.is_multiple_of(10) {
                            c.stats().map_err(|e| format!("worker {w}: stats: {e}"))?;
                        }
                        i += 1;
                        rounds.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        Workers {
            stop,
            rounds,
            handles,
        }
    }

    /// Waits until the workers made `n` more rounds (they are alive and served).
    fn make_progress(&self, n: u64) {
        let start = self.rounds.load(Ordering::Relaxed);
        assert!(
            eventually(Duration::from_secs(60), || {
                self.rounds.load(Ordering::Relaxed) >= start + n
                    || self.handles.iter().any(|h| h.is_finished())
            }),
            "the workers made no progress"
        );
        assert!(
            !self.handles.iter().any(|h| h.is_finished()),
            "a worker stopped early"
        );
    }

    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            h.join().expect("worker panicked").expect("worker failed");
        }
    }
}

/// Waits until the daemon has closed `c`'s connection.
fn session_ended(c: &Client) -> bool {
    eventually(Duration::from_secs(30), || c.stats().is_err())
}

/// A hostile client that holds a pin (a live object) and an unsealed object, then breaks its
/// page with `scribble`.
fn breaks_its_page(d: &Daemon, observer: &Client, scribble: impl FnOnce(&std::fs::File)) {
    let h = d.client();
    h.put(b"hostile-held", &content(7, 4096)).unwrap();
    let held = h.get(b"hostile-held").unwrap().unwrap();
    let mut unsealed = h.create(b"hostile-unsealed", 256 << 10, 0).unwrap();
    unsealed.data_mut()[0] = 1;
    let revoked = stat(observer, "clients.revoked");
    let aborted = stat(observer, "hot.aborted");
    assert!(h.pinned() >= 1);
    scribble(&lease_file(d, &h));
    assert!(session_ended(&h), "the scribbler's connection stayed open");
    assert_eq!(stat(observer, "clients.revoked"), revoked + 1);
    // Its unsealed object was freed with its session; its pin no longer holds anything.
    assert_eq!(stat(observer, "hot.aborted"), aborted + 1);
    let _ = observer.delete(b"hostile-held");
    assert!(!observer.contains(b"hostile-unsealed").unwrap());
    drop(held);
    drop(unsealed);
    drop(h);
}

#[test]
fn a_client_that_breaks_its_lease_page_loses_only_its_own_session() {
    let d = Daemon::start(SMALL);
    let observer = d.client();
    let workers = Workers::start(&d, 2);
    workers.make_progress(20);

    // The hit-ring size zeroed (byte 24): used to panic the maintenance task.
    breaks_its_page(&d, &observer, |f| write_word(f, HITS, 0));
    workers.make_progress(20);

    // A pin count far larger than the page.
    breaks_its_page(&d, &observer, |f| write_word(f, PINS, 1 << 40));
    workers.make_progress(20);

    // Another client's id, and the magic.
    breaks_its_page(&d, &observer, |f| write_word(f, CLIENT_ID, 0xdead));
    breaks_its_page(&d, &observer, |f| write_word(f, MAGIC, 0));
    workers.make_progress(20);

    // The whole page overwritten with zeros, then with random words.
    breaks_its_page(&d, &observer, |f| f.write_all_at(&[0u8; 4096], 0).unwrap());
    breaks_its_page(&d, &observer, |f| {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let page: Vec<u8> = (0..4096 / 8)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect();
        f.write_all_at(&page, 0).unwrap();
    });
    workers.make_progress(20);

    // Pins naming slots the index does not have (and slot "-1"), header intact.
    breaks_its_page(&d, &observer, |f| {
        write_word(f, PIN0 + 8, (0xffff_fff0u64 << 32) | 5)
    });
    breaks_its_page(&d, &observer, |f| write_word(f, PIN0 + 16, 0x1234));
    workers.make_progress(20);

    // The daemon is the one that started, and everyone else is still served.
    assert!(d.child.as_ref().is_some());
    observer.put(b"after", b"still serving").unwrap();
    assert_eq!(
        observer.get(b"after").unwrap().unwrap().data(),
        b"still serving"
    );
    assert_eq!(stat(&observer, "clients.revoked"), 8);

    scribbles_a_correct_page_could_hold_end_nothing(&d, &observer, &workers);
    assert_eq!(stat(&observer, "clients.revoked"), 8);
    workers.finish();
}

/// Scribbles that a correct page could hold cost bounded work and end nothing.
fn scribbles_a_correct_page_could_hold_end_nothing(
    d: &Daemon,
    observer: &Client,
    workers: &Workers,
) {
    let h = d.client();
    h.put(b"mine", &content(9, 4096)).unwrap();
    let f = lease_file(d, &h);
    // A hit-ring head far in the future, then moving backwards, with garbage object ids.
    for i in 0..64u64 {
        f.write_all_at(&[0xabu8; 8 * 64], RING0).unwrap();
        write_word(&f, HEAD, u64::MAX - 1000 + i * 7);
    }
    write_word(&f, HEAD, 3);
    // Forged pins on real slots with made-up sequence numbers: they may delay the reuse of a
    // retired object's memory, nothing more.
    for p in 0..64u64 {
        write_word(
            &f,
            PIN0 + 8 * (100 + p),
            ((p % 1024 + 1) << 32) | (p * 2 + 1),
        );
    }
    workers.make_progress(40);
    // Still connected and served; nothing was revoked; Stats works.
    assert_eq!(
        h.get(b"mine").unwrap().unwrap().data(),
        &content(9, 4096)[..]
    );
    h.put(b"mine-2", b"ok").unwrap();
    let revoked = stat(observer, "clients.revoked");
    assert!(stat(observer, "pins") >= 64);
    // Leaving drops the forged pins with the page.
    drop(f);
    drop(h);
    assert!(eventually(Duration::from_secs(30), || stat(
        observer, "pins"
    ) < 64));
    workers.make_progress(10);
    assert_eq!(stat(observer, "clients.revoked"), revoked);
}
