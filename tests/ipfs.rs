//! IPFS as the tier below the others: read-through from real kubo nodes (raw blocks, UnixFS
//! files, through the RPC API and the gateway), write-back with the CID kubo computes,
//! prefetch of a directory's children, two nodes and two stores sharing through bitswap, and
//! hostile or broken sources (a local HTTP server that tampers, truncates, oversends or hangs).
//!
//! The kubo tests need `CIDCACHE_KUBO` (set by scripts/test.sh from scripts/kubo.sh) and skip
//! with a message without it; the bad-source tests need nothing but this machine.

mod common;

use cidcache::harness::kubo::{self, Kubo};
use cidcache::{Client, Error, PutOptions};
use common::{content, eventually, stat, Daemon};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

fn cid_bin(text: &str) -> Vec<u8> {
    cidcache::cid::parse(text).unwrap()
}

fn get(c: &Client, key: &[u8]) -> cidcache::Result<Option<Vec<u8>>> {
    c.get(key).map(|o| o.map(|o| o.data().to_vec()))
}

fn assert_local(nodes: &[&Kubo]) {
    for k in nodes {
        let bad = k.foreign_connections().unwrap();
        assert!(
            bad.is_empty(),
            "kubo {} holds connections beyond loopback: {bad:?}",
            k.pid()
        );
    }
}

/// Raw blocks and UnixFS files of one chunk, several chunks and two levels come back
/// byte-exact through the RPC API and through the gateway; the second get is a hit; the
/// catalog says where they came from; kubo dials nothing beyond loopback.
#[test]
fn read_through_from_kubo() {
    let Some(bin) = kubo::binary("read_through_from_kubo") else {
        return;
    };
    let node = Kubo::start(&bin).unwrap();
    let small = content(1, 1000);
    let medium = content(2, 3 << 20); // 12 leaves under one node
    let large = content(3, 175 * (256 << 10) + 5); // two levels: over 174 leaves
    let cids: Vec<String> = [&small, &medium, &large]
        .iter()
        .map(|d| node.add(d, &[]).unwrap())
        .collect();
    assert!(cids[0].starts_with("bafk"), "{}", cids[0]);
    assert!(cids[1].starts_with("bafy"), "{}", cids[1]);
    // The CID cidcache computes is the one kubo computed.
    for (d, c) in [&small, &medium, &large].iter().zip(&cids) {
        assert_eq!(cidcache::cid::unixfs_file_cid(d), cid_bin(c));
    }

    let d = Daemon::start(&["-m", "96M", "--ipfs-api", &node.api]);
    let c = d.client();
    for (data, cid) in [&small, &medium, &large].iter().zip(&cids) {
        let got = get(&c, &cid_bin(cid)).unwrap().expect("fetched from IPFS");
        assert!(got == **data, "{cid}: the bytes differ");
    }
    assert_eq!(stat(&c, "ipfs.fetches"), 3);
    // Later gets are hits in shared memory.
    let hits = stat(&c, "hot.hits");
    for cid in &cids {
        assert!(c.get(&cid_bin(cid)).unwrap().is_some());
    }
    drop(c);
    let c = d.client();
    assert!(stat(&c, "hot.hits") >= hits + 3);
    assert_eq!(stat(&c, "ipfs.fetches"), 3);
    // The catalog records the source.
    let out = c
        .catalog_query(
            &["source = ipfs"],
            Some("cid"),
            None,
            cidcache::tier::catalog::OutputFormat::Table,
        )
        .unwrap();
    let out = String::from_utf8_lossy(&out);
    for cid in &cids {
        assert!(out.contains(cid.as_str()), "{cid} not in {out}");
    }

    // `cidcache get` of a CID nobody put: read through, written out byte-exact.
    let extra = content(4, 70_000);
    let extra_cid = node.add(&extra, &[]).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cidcache"))
        .args(["--socket", d.socket.to_str().unwrap(), "get", &extra_cid])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == extra);

    // The gateway as the only source.
    let g = Daemon::start(&["-m", "96M", "--ipfs-gateway", &node.gateway]);
    let gc = g.client();
    for (data, cid) in [&small, &medium].iter().zip(&cids) {
        assert!(get(&gc, &cid_bin(cid)).unwrap().unwrap() == **data);
    }
    assert_local(&[&node]);
}

/// Many clients missing one CID at once cause one fetch.
#[test]
fn concurrent_misses_fetch_once() {
    let data = content(7, 600_000);
    let (root, car) = kubo::unixfs_car(&data);
    let src = Source::serve(move |_req| Reply::Body(car.clone()));
    let d = Daemon::start(&["--ipfs-gateway", &src.url]);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let c = d.client();
            let root = root.clone();
            std::thread::spawn(move || get(&c, &root).unwrap().unwrap())
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap() == data);
    }
    assert_eq!(src.requests(), 1, "one fetch for eight concurrent misses");
    assert_eq!(stat(&d.client(), "ipfs.fetches"), 1);
}

// ----- a source that misbehaves -------------------------------------------------------------

enum Reply {
    Body(Vec<u8>),
    /// Accept and never answer.
    Hang,
}

/// A small HTTP/1.1 server on loopback playing an IPFS gateway; counts requests.
struct Source {
    url: String,
    count: Arc<AtomicUsize>,
}

impl Source {
    fn serve(reply: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Source {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let count = Arc::new(AtomicUsize::new(0));
        let n = count.clone();
        let reply = Arc::new(reply);
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { break };
                let (n, reply) = (n.clone(), reply.clone());
                std::thread::spawn(move || {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(k) => req.extend_from_slice(&buf[..k]),
                        }
                    }
                    n.fetch_add(1, Ordering::SeqCst);
                    let line = String::from_utf8_lossy(&req)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string();
                    match reply(&line) {
                        Reply::Body(b) => {
                            let _ = write!(
                                s,
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                b.len()
                            );
                            let _ = s.write_all(&b);
                        }
                        Reply::Hang => std::thread::sleep(Duration::from_secs(600)),
                    }
                });
            }
        });
        Source { url, count }
    }

    fn requests(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

/// Each bad source gives a clear error of its kind, caches nothing, and the daemon serves on.
fn expect_error(d: &Daemon, key: &[u8], want: fn(&Error) -> bool, what: &str) {
    let c = d.client();
    let e = get(&c, key).expect_err(what);
    assert!(want(&e), "{what}: {e:?}");
    assert!(!e.to_string().is_empty());
    assert!(!c.contains(key).unwrap(), "{what}: something was cached");
    // The daemon goes on serving.
    c.put(b"still-serving", b"yes").unwrap();
    assert_eq!(get(&c, b"still-serving").unwrap().unwrap(), b"yes");
    c.delete(b"still-serving").unwrap();
}

#[test]
fn tampering_source_is_refused() {
    let data = content(11, 5000);
    let key = cidcache::cid::cid_v1_raw(&data);
    let src = Source::serve(move |_| {
        let mut b = content(11, 5000);
        b[100] ^= 1;
        Reply::Body(b)
    });
    let d = Daemon::start(&["--ipfs-gateway", &src.url]);
    expect_error(
        &d,
        &key,
        |e| matches!(e, Error::CidMismatch(_)),
        "tampered block",
    );
    // A file whose leaf was changed: the CAR's block does not hash to its CID.
    let file = content(12, 700_000);
    let (root, mut car) = kubo::unixfs_car(&file);
    let n = car.len();
    car[n - 10] ^= 0xff;
    let src2 = Source::serve(move |_| Reply::Body(car.clone()));
    let d2 = Daemon::start(&["--ipfs-gateway", &src2.url]);
    expect_error(
        &d2,
        &root,
        |e| matches!(e, Error::CidMismatch(_)),
        "tampered leaf",
    );
    assert_eq!(stat(&d2.client(), "ipfs.fetch_errors"), 1);
}

#[test]
fn truncated_car_is_refused() {
    let file = content(13, 900_000);
    let (root, car) = kubo::unixfs_car(&file);
    // Cut inside a block, and cut exactly after the root block (a block boundary).
    let cut_inside = car[..car.len() - 1000].to_vec();
    let src = Source::serve(move |_| Reply::Body(cut_inside.clone()));
    let d = Daemon::start(&["--ipfs-gateway", &src.url]);
    expect_error(
        &d,
        &root,
        |e| matches!(e, Error::Corrupt(_)),
        "CAR cut inside a block",
    );
    let root_only = {
        // header + root section: parse the two leading varint-framed sections.
        let mut pos = 0;
        for _ in 0..2 {
            let (mut len, mut shift) = (0usize, 0);
            loop {
                let b = car[pos];
                pos += 1;
                len |= ((b & 0x7f) as usize) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
            }
            pos += len;
        }
        car[..pos].to_vec()
    };
    let src2 = Source::serve(move |_| Reply::Body(root_only.clone()));
    let d2 = Daemon::start(&["--ipfs-gateway", &src2.url]);
    expect_error(
        &d2,
        &root,
        |e| matches!(e, Error::Corrupt(_)),
        "CAR cut at a block boundary",
    );
}

#[test]
fn block_over_the_maximum_is_refused() {
    let data = content(14, 3 << 20);
    let key = cidcache::cid::cid_v1_raw(&data);
    let src = Source::serve(move |_| Reply::Body(content(14, 3 << 20)));
    let d = Daemon::start(&["--ipfs-gateway", &src.url, "--ipfs-max-block", "1M"]);
    expect_error(
        &d,
        &key,
        |e| matches!(e, Error::InvalidArgument(_)),
        "3 MiB block, 1 MiB max",
    );
    // A file larger than --ipfs-max-file.
    let file = content(15, 2 << 20);
    let (root, car) = kubo::unixfs_car(&file);
    let src2 = Source::serve(move |_| Reply::Body(car.clone()));
    let d2 = Daemon::start(&["--ipfs-gateway", &src2.url, "--ipfs-max-file", "1M"]);
    expect_error(
        &d2,
        &root,
        |e| matches!(e, Error::InvalidArgument(_)),
        "2 MiB file, 1 MiB max",
    );
}

#[test]
fn hanging_or_absent_source_times_out() {
    let key = cidcache::cid::cid_v1_raw(b"never sent");
    let src = Source::serve(|_| Reply::Hang);
    let d = Daemon::start(&["--ipfs-gateway", &src.url, "--ipfs-timeout", "1s"]);
    expect_error(
        &d,
        &key,
        |e| matches!(e, Error::Timeout(_)),
        "a source that hangs",
    );
    // Nothing listens: refused at once.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let d2 = Daemon::start(&["--ipfs-gateway", &url]);
    expect_error(
        &d2,
        &key,
        |e| matches!(e, Error::Io { .. }),
        "a source that is down",
    );
    // Keys that are not fetchable CIDs are plain misses.
    assert!(get(&d2.client(), b"not-a-cid").unwrap().is_none());
}
