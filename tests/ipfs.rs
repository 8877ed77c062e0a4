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

/// `cidcache put --ipfs` and the client's put flag add the object to kubo, pinned, under the
/// CID kubo itself computes for the bytes (CIDv1, raw leaves, sha2-256): inline puts and
/// create/seal, one raw block and multi-block UnixFS files. A wrong key or a raw block too
/// large for IPFS is refused and stored nowhere.
#[test]
fn write_back_with_the_cid_kubo_computes() {
    let Some(bin) = kubo::binary("write_back_with_the_cid_kubo_computes") else {
        return;
    };
    let node = Kubo::start(&bin).unwrap();
    let d = Daemon::start(&["-m", "96M", "--ipfs-api", &node.api]);
    let held = |cid: &str| node.run(&["--offline", "block", "stat", cid], None).is_ok();
    let dir = tempfile::tempdir().unwrap();
    for (seed, len) in [(21u64, 10_000usize), (22, 3 << 20)] {
        let data = content(seed, len);
        // What kubo computes for these bytes, without storing them.
        let want = node.add(&data, &["--only-hash"]).unwrap();
        assert!(!held(&want), "kubo must not hold {want} before the put");
        let file = dir.path().join(format!("f{seed}"));
        std::fs::write(&file, &data).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cidcache"))
            .args(["--socket", d.socket.to_str().unwrap(), "put", "--ipfs"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(printed, want, "cidcache and kubo disagree on the CID");
        assert!(held(&want), "kubo holds {want} after the put");
        assert!(node.run(&["cat", &want], None).unwrap() == data);
        node.run(&["pin", "ls", &want], None).expect("pinned");
        assert!(get(&d.client(), &cid_bin(&want)).unwrap().unwrap() == data);
    }
    // The client's flag: inline (small), create/seal (over the inline limit), raw and UnixFS.
    let c = d.client();
    let opts = PutOptions {
        ipfs: true,
        ..Default::default()
    };
    for (seed, len) in [(23u64, 3000usize), (24, 200_000), (25, 1_500_000)] {
        let data = content(seed, len);
        let key = cidcache::cid::unixfs_file_cid(&data);
        c.put_with(&key, &data, opts).unwrap();
        let text = cidcache::cid::format(&key).unwrap();
        assert!(node.run(&["cat", &text], None).unwrap() == data);
        assert_eq!(node.add(&data, &["--only-hash"]).unwrap(), text);
    }
    let adds = stat(&c, "ipfs.adds");
    assert_eq!(adds, 5);
    // A UnixFS key of other bytes, a raw block over 1 MiB: refused, stored nowhere.
    let data = content(26, 400_000);
    let wrong = cidcache::cid::unixfs_file_cid(&content(27, 400_000));
    let e = c.put_with(&wrong, &data, opts).unwrap_err();
    assert!(matches!(e, Error::CidMismatch(_)), "{e:?}");
    assert!(!c.contains(&wrong).unwrap());
    assert!(!held(&cidcache::cid::format(&wrong).unwrap()));
    let big = content(28, (1 << 20) + 1);
    let raw = cidcache::cid::cid_v1_raw(&big);
    let e = c.put_with(&raw, &big, opts).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    assert!(!c.contains(&raw).unwrap());
    assert_eq!(stat(&c, "ipfs.adds"), adds);
    assert_eq!(stat(&c, "ipfs.add_errors"), 2);
    // Without --ipfs-api the flag is refused.
    let plain = Daemon::start(&[]);
    let e = plain.client().put_with(&raw[..], b"x", opts).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    assert_local(&[&node]);
}

/// Two machines on one: two kubo nodes peered over loopback, two stores. An object put into
/// store A with the IPFS flag lands on node A; store B reads it through node B, which gets it
/// from node A by bitswap; a later get on B is a zero-copy hit in B's shared memory.
#[test]
fn two_nodes_share_through_bitswap() {
    let Some(bin) = kubo::binary("two_nodes_share_through_bitswap") else {
        return;
    };
    let (node_a, node_b) = (Kubo::start(&bin).unwrap(), Kubo::start(&bin).unwrap());
    node_b.connect(&node_a).unwrap();
    let store_a = Daemon::start(&["-m", "96M", "--ipfs-api", &node_a.api]);
    let store_b = Daemon::start(&["-m", "96M", "--ipfs-api", &node_b.api]);
    let data = content(31, (5 << 20) + 123);
    let key = cidcache::cid::unixfs_file_cid(&data);
    let opts = PutOptions {
        ipfs: true,
        ..Default::default()
    };
    store_a.client().put_with(&key, &data, opts).unwrap();
    let text = cidcache::cid::format(&key).unwrap();
    assert!(
        node_b
            .run(&["--offline", "block", "stat", &text], None)
            .is_err(),
        "node B must not have the object before store B asks"
    );

    let cb = store_b.client();
    let first = cb.get(&key).unwrap().expect("read through node B");
    assert!(first.data() == data);
    assert_eq!(stat(&cb, "ipfs.fetches"), 1);
    assert!(
        node_b
            .run(&["--offline", "block", "stat", &text], None)
            .is_ok(),
        "node B has the object now (bitswap from node A)"
    );
    drop(first);
    // Hit zero-copy: the bytes are read where they lie, in a mapping of store B's segments.
    let c2 = store_b.client();
    let o = c2.get(&key).unwrap().unwrap();
    assert!(o.data() == data);
    let addr = o.data().as_ptr() as usize;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mapping = maps
        .lines()
        .find(|l| {
            let r = l.split_whitespace().next().unwrap();
            let (lo, hi) = r.split_once('-').unwrap();
            let (lo, hi) = (
                usize::from_str_radix(lo, 16).unwrap(),
                usize::from_str_radix(hi, 16).unwrap(),
            );
            (lo..hi).contains(&addr)
        })
        .expect("the object's bytes lie in a mapping");
    assert!(
        mapping.contains("/dev/shm/") && mapping.contains(&store_b.store),
        "not in store B's shared memory: {mapping}"
    );
    drop(o);
    drop(c2);
    assert_eq!(stat(&cb, "ipfs.fetches"), 1, "the hit fetched nothing");
    assert!(stat(&cb, "hot.hits") >= 1);
    assert_local(&[&node_a, &node_b]);
}

/// A fetched directory's children are prefetched (depth 1 by default): gets of them are hits,
/// counted as used; the ones deleted unread count as wasted. Depth 0 prefetches nothing.
#[test]
fn prefetch_of_a_directory() {
    let Some(bin) = kubo::binary("prefetch_of_a_directory") else {
        return;
    };
    let node = Kubo::start(&bin).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<Vec<u8>> = (0..12)
        .map(|i| content(40 + i, 3000 + i as usize))
        .collect();
    for (i, f) in files.iter().enumerate() {
        std::fs::write(dir.path().join(format!("f{i:02}")), f).unwrap();
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
                dir.path().to_str().unwrap(),
            ],
            None,
        )
        .unwrap();
    let root = String::from_utf8_lossy(&out).trim().to_string();
    let keys: Vec<Vec<u8>> = files.iter().map(|f| cidcache::cid::cid_v1_raw(f)).collect();

    let d = Daemon::start(&["-m", "96M", "--ipfs-api", &node.api]);
    let c = d.client();
    let block = get(&c, &cid_bin(&root))
        .unwrap()
        .expect("the directory node");
    // A directory is published as its dag-pb block, which hashes to its CID.
    assert!(cidcache::cid::verify(&cid_bin(&root), &block).unwrap());
    assert!(
        eventually(WAIT, || stat(&c, "ipfs.prefetched") == 12),
        "prefetched {}",
        stat(&c, "ipfs.prefetched")
    );
    assert_eq!(stat(&c, "ipfs.fetches"), 13);
    for (k, f) in keys.iter().zip(&files).take(4) {
        assert!(get(&c, k).unwrap().unwrap() == *f);
    }
    assert_eq!(stat(&c, "ipfs.fetches"), 13, "the reads were hits");
    assert_eq!(stat(&c, "ipfs.prefetch_used"), 4);
    for k in &keys[4..] {
        c.delete(k).unwrap();
    }
    assert_eq!(stat(&c, "ipfs.prefetch_wasted"), 8);

    let off = Daemon::start(&["--ipfs-api", &node.api, "--ipfs-prefetch-depth", "0"]);
    let oc = off.client();
    assert!(get(&oc, &cid_bin(&root)).unwrap().is_some());
    assert!(get(&oc, &keys[0]).unwrap().unwrap() == files[0]);
    assert_eq!(stat(&oc, "ipfs.prefetched"), 0);
    assert_eq!(stat(&oc, "ipfs.fetches"), 2);
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
