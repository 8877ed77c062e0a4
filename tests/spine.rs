//! End-to-end tests of the spine against a real daemon: the client API, eviction, pins,
//! Arrow objects, the CLI, and what happens on a second coordinator and a restart.

mod common;

use cidcache::{Client, Error, PutOptions};
use common::*;
use std::time::{Duration, Instant};

#[test]
fn put_get_inline_and_large_with_metadata() {
    let d = Daemon::start(&[]);
    let c = d.client();
    c.put(b"small", b"hello").unwrap();
    let big = content(7, 3 << 20); // above the inline limit: create / write / seal
    c.put_with(
        b"big",
        &big,
        PutOptions {
            metadata: b"meta!",
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(c.get(b"small").unwrap().unwrap().data(), b"hello");
    let o = c.get(b"big").unwrap().unwrap();
    assert_eq!(o.data(), &big[..]);
    assert_eq!(o.metadata(), b"meta!");
    assert_eq!(
        o.data().as_ptr() as usize % 64,
        0,
        "objects start 64-byte aligned"
    );
    assert!(c.get(b"absent").unwrap().is_none());
    assert!(matches!(
        c.put(b"small", b"x"),
        Err(Error::AlreadyExists(_))
    ));
    // Zero-length objects are valid.
    c.put(b"empty", b"").unwrap();
    assert_eq!(c.get(b"empty").unwrap().unwrap().data().len(), 0);
}

#[test]
fn keys_are_validated() {
    let d = Daemon::start(&[]);
    let c = d.client();
    assert!(matches!(c.put(&[1u8; 64], b"x"), Err(Error::InvalidKey(_))));
    assert!(matches!(c.get(&[]), Err(Error::InvalidKey(_))));
    c.put(&[2u8; 63], b"max").unwrap();
    assert_eq!(c.get(&[2u8; 63]).unwrap().unwrap().data(), b"max");
}

#[test]
fn create_seal_abort_and_drop() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let mut w = c.create(b"k", 1000, 3).unwrap();
    w.data_mut().fill(9);
    w.metadata_mut().copy_from_slice(b"abc");
    // Unsealed objects are invisible.
    assert!(c.get(b"k").unwrap().is_none());
    assert!(!c.contains(b"k").unwrap());
    w.seal().unwrap();
    let o = c.get(b"k").unwrap().unwrap();
    assert!(o.data().iter().all(|&b| b == 9));
    assert_eq!(o.metadata(), b"abc");

    let w = c.create(b"aborted", 100, 0).unwrap();
    w.abort().unwrap();
    assert!(c.get(b"aborted").unwrap().is_none());
    {
        let _w = c.create(b"dropped", 100, 0).unwrap();
    }
    // Dropping unsealed aborts: the key can be created again.
    c.create(b"dropped", 10, 0).unwrap().seal().unwrap();
    assert_eq!(stat(&c, "hot.aborted"), 2);
}

#[test]
fn get_with_timeout_waits_for_seal() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let c2 = d.client();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        c2.put(b"later", b"arrived").unwrap();
    });
    let start = Instant::now();
    let o = c
        .get_timeout(b"later", Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!(o.data(), b"arrived");
    assert!(start.elapsed() >= Duration::from_millis(150));
    t.join().unwrap();

    let start = Instant::now();
    assert!(c
        .get_timeout(b"never", Duration::from_millis(300))
        .unwrap()
        .is_none());
    let el = start.elapsed();
    assert!(el >= Duration::from_millis(290), "{el:?}");
}

#[test]
fn batches_report_per_item() {
    let d = Daemon::start(&[]);
    let c = d.client();
    c.put(b"dup", b"first").unwrap();
    let big = content(3, 200 << 10);
    let items: Vec<(&[u8], &[u8])> = vec![
        (b"a", b"1"),
        (b"dup", b"2"),
        (&[0u8; 70], b"3"),
        (b"b", b"4"),
        (b"large", &big),
    ];
    let r = c.put_many(&items);
    assert!(r[0].is_ok());
    assert!(matches!(r[1], Err(Error::AlreadyExists(_))));
    assert!(matches!(r[2], Err(Error::InvalidKey(_))));
    assert!(r[3].is_ok());
    assert!(r[4].is_ok());
    let got = c.get_many(
        &[b"a", b"missing", b"b", b"large"],
        Duration::from_millis(50),
    );
    assert_eq!(got[0].as_ref().unwrap().as_ref().unwrap().data(), b"1");
    assert!(got[1].as_ref().unwrap().is_none());
    assert_eq!(got[2].as_ref().unwrap().as_ref().unwrap().data(), b"4");
    assert_eq!(got[3].as_ref().unwrap().as_ref().unwrap().data(), &big[..]);
}

#[test]
fn delete_is_deferred_while_pinned() {
    let d = Daemon::start(&["-m", "4M", "--arena-size", "4M"]);
    let c = d.client();
    let v = content(11, 1 << 20);
    c.put(b"victim", &v).unwrap();
    let held = c.get(b"victim").unwrap().unwrap();
    assert_eq!(stat(&c, "pins"), 1);
    c.delete(b"victim").unwrap();
    assert!(
        c.get(b"victim").unwrap().is_none(),
        "deleted keys miss at once"
    );
    assert!(matches!(c.delete(b"victim"), Err(Error::NotFound(_))));
    assert_eq!(stat(&c, "hot.deferred_frees_pending"), 1);
    // Churn enough to reuse the memory if it were freed.
    for i in 0..12u64 {
        let _ = c.put(format!("churn{i}").as_bytes(), &content(100 + i, 1 << 20));
    }
    assert_eq!(
        check_content(held.data()).unwrap(),
        11,
        "pinned bytes never change"
    );
    drop(held);
    assert!(eventually(Duration::from_secs(5), || stat(
        &c,
        "hot.deferred_frees_pending"
    ) == 0));
}

#[test]
fn eviction_skips_pinned_and_reports_store_full() {
    let d = Daemon::start(&["-m", "4M", "--arena-size", "4M"]);
    let c = d.client();
    for i in 0..3u64 {
        c.put(format!("k{i}").as_bytes(), &content(i, 1 << 20))
            .unwrap();
    }
    let pinned = c.get(b"k0").unwrap().unwrap();
    for i in 3..10u64 {
        c.put(format!("k{i}").as_bytes(), &content(i, 1 << 20))
            .unwrap();
    }
    assert!(stat(&c, "hot.evictions") >= 6);
    assert!(
        c.get(b"k0").unwrap().is_some(),
        "a pinned object is never evicted"
    );
    assert!(c.get(b"k9").unwrap().is_some());
    // Pin everything that is left, then a put cannot fit.
    let held: Vec<_> = c
        .list()
        .unwrap()
        .iter()
        .filter_map(|e| c.get(e.key.as_bytes()).unwrap())
        .collect();
    let r = c.put(b"nope", &content(99, 2 << 20));
    assert!(matches!(r, Err(Error::StoreFull(_))), "{r:?}");
    assert!(matches!(
        c.put(b"huge", &vec![0u8; 8 << 20]),
        Err(Error::StoreFull(_))
    ));
    drop(held);
    drop(pinned);
    c.put(b"fits-now", &content(98, 2 << 20)).unwrap();
}

#[test]
fn full_index_evicts_then_errors() {
    let d = Daemon::start(&["--index-capacity", "16"]);
    let c = d.client();
    for i in 0..40u32 {
        c.put(&i.to_le_bytes(), b"v").unwrap();
    }
    assert!(stat(&c, "hot.objects") <= 14);
    assert!(stat(&c, "hot.evictions") >= 26);
    let keys: Vec<_> = c.list().unwrap().into_iter().map(|e| e.key).collect();
    let _held: Vec<_> = keys
        .iter()
        .map(|k| c.get(k.as_bytes()).unwrap().unwrap())
        .collect();
    assert!(matches!(c.put(b"one-more", b"v"), Err(Error::IndexFull(_))));
}

#[test]
fn put_content_and_cid_verification() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let cid = c.put_content(b"hello world").unwrap();
    assert_eq!(
        cidcache::cid::format(&cid).unwrap(),
        "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    );
    assert_eq!(c.put_content(b"hello world").unwrap(), cid, "idempotent");
    assert_eq!(c.get(&cid).unwrap().unwrap().data(), b"hello world");
    let wrong = cidcache::cid::cid_v1_raw(b"other");
    let r = c.put_with(
        &wrong,
        b"not other",
        PutOptions {
            verify_cid: true,
            ..Default::default()
        },
    );
    assert!(matches!(r, Err(Error::CidMismatch(_))), "{r:?}");
    // Large objects are verified at seal.
    let big = content(5, 1 << 20);
    let r = c.put_with(
        &wrong,
        &big,
        PutOptions {
            verify_cid: true,
            ..Default::default()
        },
    );
    assert!(matches!(r, Err(Error::CidMismatch(_))), "{r:?}");
    let good = cidcache::cid::cid_v1_raw(&big);
    c.put_with(
        &good,
        &big,
        PutOptions {
            verify_cid: true,
            ..Default::default()
        },
    )
    .unwrap();
    // Wrong bytes under a stored key: the mismatch is reported before the key's existence,
    // for an inline put and a large one alike.
    let verified = PutOptions {
        verify_cid: true,
        ..Default::default()
    };
    let r = c.put_with(&good, b"small and wrong", verified);
    assert!(matches!(r, Err(Error::CidMismatch(_))), "{r:?}");
    let r = c.put_with(&good, &content(6, 1 << 20), verified);
    assert!(matches!(r, Err(Error::CidMismatch(_))), "{r:?}");
    let r = c.put(&good, &content(6, 1 << 20));
    assert!(matches!(r, Err(Error::AlreadyExists(_))), "{r:?}");
}

#[test]
fn connecting_with_no_daemon_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.sock");
    let e = Client::connect_socket(&missing).err().expect("no daemon");
    assert!(matches!(e, Error::NotRunning(_)), "{e}");
    assert_eq!(e.code(), cidcache::Code::NotRunning);
    assert!(e.to_string().contains("none.sock"), "{e}");
    // A socket file left behind, nobody listening (a daemon that was killed).
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    // A process another test forks at that moment holds the listener until its exec closes it
    // (close-on-exec): a connection may be accepted into its backlog and then dropped. Once that
    // child has exec'd, nobody listens; try again while the only answer is a dropped connection.
    let mut e = Client::connect_socket(&stale)
        .err()
        .expect("nobody listens");
    for _ in 0..100 {
        if !matches!(e, Error::Disconnected(_)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        e = Client::connect_socket(&stale)
            .err()
            .expect("nobody listens");
    }
    assert!(matches!(e, Error::NotRunning(_)), "{e}");
}

#[test]
fn list_and_stats() {
    let d = Daemon::start(&[]);
    let c = d.client();
    for i in 0..100u32 {
        c.put(&i.to_be_bytes(), &[i as u8; 100]).unwrap();
    }
    let l = c.list().unwrap();
    assert_eq!(l.len(), 100);
    assert!(l.iter().all(|e| e.data_len == 100));
    assert_eq!(stat(&c, "hot.objects"), 100);
    assert_eq!(stat(&c, "hot.bytes"), 100 * 100);
    assert_eq!(stat(&c, "index.bytes_per_object"), 4096 * 128 / 100);
    assert_eq!(stat(&c, "hot.alignment_waste_bytes"), 100 * 28);
    for i in 0..10u32 {
        let _ = c.get(&i.to_be_bytes()).unwrap().unwrap();
    }
    assert!(eventually(Duration::from_secs(2), || stat(&c, "hot.hits") >= 10));
}

#[test]
fn arrow_objects_are_zero_copy() {
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use std::sync::Arc;
    let d = Daemon::start(&[]);
    let c = d.client();
    let ids = Int64Array::from_iter_values(0..10_000);
    let names = StringArray::from_iter((0..10_000).map(|i| {
        if i % 7 == 0 {
            None
        } else {
            Some(format!("n{i}"))
        }
    }));
    let batch = RecordBatch::try_from_iter([
        ("id", Arc::new(ids) as ArrayRef),
        ("name", Arc::new(names) as ArrayRef),
    ])
    .unwrap();
    c.put_arrow(
        b"table",
        &batch.schema(),
        &[batch.clone(), batch.slice(10, 100)],
    )
    .unwrap();
    let raw = c.get(b"table").unwrap().unwrap();
    let range = raw.data().as_ptr() as usize..raw.data().as_ptr() as usize + raw.data().len();
    let obj = c.get_arrow(b"table").unwrap().unwrap();
    assert_eq!(obj.batches.len(), 2);
    assert_eq!(obj.batches[0], batch);
    assert_eq!(obj.batches[1], batch.slice(10, 100));
    for col in obj.batches[0].columns() {
        for buf in col.to_data().buffers() {
            let p = buf.as_ptr() as usize;
            assert!(
                range.contains(&p),
                "buffer at {p:#x} is not inside the shared object"
            );
        }
    }
    let pins_with_batches = stat(&c, "pins");
    drop(raw);
    let cols = obj.batches[0].column(0).clone();
    drop(obj);
    // The column still pins the object.
    assert_eq!(stat(&c, "pins"), pins_with_batches - 1);
    drop(cols);
    assert_eq!(stat(&c, "pins"), 0);
    assert!(c.get_arrow(b"missing").unwrap().is_none());
    c.put(b"notarrow", b"xyz").unwrap();
    assert!(c.get_arrow(b"notarrow").is_err());
}

#[test]
fn async_api() {
    let d = Daemon::start(&[]);
    let c = d.client();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c2 = c.clone();
        let waiter = tokio::spawn(async move {
            c2.get_async(b"async", Some(Duration::from_secs(10)))
                .await
                .map(|o| o.map(|o| o.data().to_vec()))
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.put_async(b"async", b"value", PutOptions::default())
            .await
            .unwrap();
        assert_eq!(waiter.await.unwrap().unwrap().unwrap(), b"value");
        let r = c.put_many_async(&[(b"x", b"1"), (b"y", b"2")]).await;
        assert!(r.iter().all(|r| r.is_ok()));
        let g = c.get_many_async(&[b"x", b"y", b"z"], Duration::ZERO).await;
        assert!(g[2].as_ref().unwrap().is_none());
        assert!(c.contains_async(b"x").await.unwrap());
        c.delete_async(b"x").await.unwrap();
        assert!(!c.contains_async(b"x").await.unwrap());
        assert!(c.stats_async().await.unwrap().len() > 5);
        let mut w = c.create_async(b"made-async", 3, 0).await.unwrap();
        w.data_mut().copy_from_slice(b"abc");
        w.seal_async().await.unwrap();
        assert!(c
            .list_async()
            .await
            .unwrap()
            .iter()
            .any(|e| e.key.as_bytes() == b"made-async"));

        // Arrow, CIDs, scans and the catalog, awaited.
        use arrow_array::{ArrayRef, Int64Array, RecordBatch};
        let ids = Int64Array::from_iter_values(0..20_000); // 160 KB: above the inline limit
        let batch =
            RecordBatch::try_from_iter([("id", std::sync::Arc::new(ids) as ArrayRef)]).unwrap();
        c.put_arrow_async(
            b"arrow-async",
            &batch.schema(),
            std::slice::from_ref(&batch),
        )
        .await
        .unwrap();
        let a = c
            .get_arrow_async(b"arrow-async", Some(Duration::ZERO))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a.batches, vec![batch.clone()]);
        assert!(c
            .get_arrow_async(b"no-arrow", Some(Duration::from_millis(20)))
            .await
            .unwrap()
            .is_none());
        let scan = cidcache::scan::Scan::default().filter("id<10").unwrap();
        let s = c
            .get_arrow_scan_async(b"arrow-async", &scan)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.batches.iter().map(|b| b.num_rows()).sum::<usize>(), 10);
        let cid = c.put_content_async(b"async content").await.unwrap();
        assert_eq!(cid, cidcache::cid::cid_v1_raw(b"async content"));
        assert_eq!(c.put_content_async(b"async content").await.unwrap(), cid);
        let mut e =
            cidcache::tier::catalog::CatalogEntry::new(cidcache::Key::new(&cid).unwrap(), 13, 0);
        e.mimetype = Some("text/x-async".into());
        c.catalog_upsert_async(&[e]).await.unwrap();
        let rows = c
            .catalog_query_batches_async(&["mimetype=text/x-async"], None, None)
            .await
            .unwrap();
        assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
        let table = c
            .catalog_query_async(
                &["mimetype=text/x-async"],
                Some("mimetype"),
                None,
                cidcache::tier::catalog::OutputFormat::Table,
            )
            .await
            .unwrap();
        assert!(String::from_utf8(table).unwrap().contains("text/x-async"));
    });
}

/// An async batch put awaits the round trips of its large items (create, seal) instead of
/// blocking the runtime's thread: with the daemon stopped (SIGSTOP), a task that runs beside the
/// batch on a single-threaded runtime must get to run before the batch completes; that task
/// resumes the daemon. (Blocking, the batch would only finish once a fallback resumed the daemon,
/// after which the order below would be reversed.)
#[test]
fn async_batch_put_of_large_items_does_not_block() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let d = Daemon::start(&[]);
    let c = d.client();
    let pid = d.pid();
    // Only items above the inline limit: an inline batch would be awaited even before.
    let big = content(11, 256 << 10);
    let big2 = content(12, 128 << 10);
    let order = Arc::new(Mutex::new(Vec::new()));
    let other_ran = Arc::new(AtomicBool::new(false));
    signal(pid, 19); // SIGSTOP
    let resumer = {
        let other_ran = other_ran.clone();
        std::thread::spawn(move || {
            // Resumes the daemon once the other task ran; a fallback (not an assertion) resumes
            // it anyway so that a blocking batch cannot hang the test.
            let _ = eventually(Duration::from_secs(60), || other_ran.load(Ordering::SeqCst));
            signal(pid, 18); // SIGCONT
        })
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let batch = async {
            let r = c
                .put_many_async(&[(b"big-async", &big), (b"big-async-2", &big2)])
                .await;
            order.lock().unwrap().push("batch done");
            r
        };
        let other = async {
            order.lock().unwrap().push("other ran");
            other_ran.store(true, Ordering::SeqCst);
        };
        let (r, ()) = tokio::join!(batch, other);
        assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
    });
    resumer.join().unwrap();
    assert_eq!(*order.lock().unwrap(), vec!["other ran", "batch done"]);
    assert_eq!(c.get(b"big-async").unwrap().unwrap().data(), &big[..]);
    assert_eq!(c.get(b"big-async-2").unwrap().unwrap().data(), &big2[..]);
}

#[test]
fn second_coordinator_is_refused() {
    let d = Daemon::start(&[]);
    let out = std::process::Command::new(daemon_bin())
        .args(&d.args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already serves this store"), "{err}");
    // The first one is unaffected.
    d.client().put(b"still", b"serving").unwrap();
}

#[test]
fn clean_shutdown_removes_segments() {
    let mut d = Daemon::start(&[]);
    let c = d.client();
    c.put(b"k", b"v").unwrap();
    assert!(!d.shm_files().is_empty());
    let st = d.stop();
    assert!(st.success(), "{st:?}");
    assert!(d.shm_files().is_empty(), "left: {:?}", d.shm_files());
    assert!(matches!(c.get(b"nope"), Err(Error::Disconnected(_))));
}

#[test]
fn restart_gives_clear_error_then_reconnect_works() {
    let mut d = Daemon::start(&[]);
    let c = d.client();
    c.put(b"before", b"1").unwrap();
    d.kill9();
    // A new coordinator cleans the dead one's segments and serves again.
    d.spawn();
    let e = c.put(b"after", b"2").unwrap_err();
    assert!(matches!(e, Error::Disconnected(_)), "{e}");
    assert!(e.to_string().contains("connect again"));
    assert!(matches!(c.get(b"nope"), Err(Error::Disconnected(_))));
    let c2 = Client::connect_socket(&d.socket).unwrap();
    c2.put(b"after", b"2").unwrap();
    assert_eq!(c2.get(b"after").unwrap().unwrap().data(), b"2");
}

#[test]
fn cli_round_trip_and_errors() {
    let d = Daemon::start(&[]);
    let cli = env!("CARGO_BIN_EXE_cidcache");
    let sock = d.socket.display().to_string();
    let file = d.dir.path().join("f.bin");
    std::fs::write(&file, b"cli content").unwrap();
    let out = std::process::Command::new(cli)
        .args(["--socket", &sock, "put"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cid = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(cid.starts_with("bafkrei"), "{cid}");
    let out = std::process::Command::new(cli)
        .args(["--socket", &sock, "get", &cid])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"cli content");
    let out = std::process::Command::new(cli)
        .args(["--socket", &sock, "ls"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&cid));
    let out = std::process::Command::new(cli)
        .args(["--socket", &sock, "stat", &cid])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("size:      11"));
    // A CIDv0 key given explicitly, and its verification.
    let v0 = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";
    let out = std::process::Command::new(cli)
        .args(["--socket", &sock, "put", "--key", v0])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CID mismatch"));
    for bad in ["Qmnope", "bafy!", "hello"] {
        let out = std::process::Command::new(cli)
            .args(["--socket", &sock, "get", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid CID"));
    }
    let out = std::process::Command::new(cli)
        .args(["--socket", &sock, "rm", &cid])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = std::process::Command::new(cli)
        .args(["--socket", &sock, "get", &cid])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(cli)
        .args(["--socket", &sock, "stats"])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("index.bytes_per_object") && s.contains("hot.alignment_waste_bytes"),
        "{s}"
    );
}

#[test]
fn too_small_shm_fails_at_start() {
    let out = std::process::Command::new(daemon_bin())
        .args([
            "--store",
            &unique_store(),
            "--socket",
            "/tmp/never.sock",
            "-m",
            "100000G",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("free") && err.contains("lower --memory"),
        "{err}"
    );
}

#[test]
fn large_objects_get_dedicated_segments_that_are_reused() {
    // Arena 16 MiB: objects above 8 MiB get a segment of their own.
    let d = Daemon::start(&["-m", "64M"]);
    let c = d.client();
    let segs = |c: &Client| stat(c, "hot.segments");
    let before = segs(&c);
    let big = content(21, 12 << 20);
    c.put(b"big1", &big).unwrap();
    assert_eq!(segs(&c), before + 1, "a dedicated segment");
    let o = c.get(b"big1").unwrap().unwrap();
    assert_eq!(o.data(), &big[..]);
    assert_eq!(o.data().as_ptr() as usize % 4096, 0);
    drop(o);
    c.delete(b"big1").unwrap();
    // A similar-sized object reuses the pooled segment instead of reserving a new one.
    let big2 = content(22, 11 << 20);
    c.put(b"big2", &big2).unwrap();
    assert_eq!(segs(&c), before + 1);
    assert_eq!(c.get(b"big2").unwrap().unwrap().data(), &big2[..]);
    // Another client sees it too (maps the segment itself).
    let c2 = d.client();
    assert_eq!(c2.get(b"big2").unwrap().unwrap().data(), &big2[..]);
}

/// Runs `f` with a private tmpfs of `size` mounted at a temporary directory, or skips with a
/// message when this machine does not allow mounting (not root, or in a restricted sandbox).
fn with_small_tmpfs(size: &str, f: impl FnOnce(&std::path::Path)) {
    let dir = tempfile::tempdir().unwrap();
    let ok = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ])
        .arg(dir.path())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(dir.path())));
    let _ = std::process::Command::new("umount")
        .arg("-l")
        .arg(dir.path())
        .status();
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn short_shm_is_a_clear_error_at_start_and_at_create_never_sigbus() {
    with_small_tmpfs("24m", |shm| {
        let shm_s = shm.display().to_string();
        // At start: a limit larger than the directory.
        let store = unique_store();
        let out = std::process::Command::new(daemon_bin())
            .args([
                "--store",
                &store,
                "--socket",
                &format!("{shm_s}/x.sock"),
                "--shm-dir",
                &shm_s,
                "--data-dir",
                &format!("{shm_s}/data"),
                "-m",
                "64M",
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&shm_s) && err.contains("free"), "{err}");

        // At create: someone else fills the directory after start.
        let d = Daemon::start(&["--shm-dir", &shm_s, "-m", "16M", "--arena-size", "4M"]);
        let c = d.client();
        c.put(b"first", &content(1, 1 << 20)).unwrap();
        let hog = shm.join("hog");
        let _ = std::process::Command::new("dd")
            .args([
                "if=/dev/zero",
                &format!("of={}", hog.display()),
                "bs=1M",
                "count=64",
            ])
            .stderr(std::process::Stdio::null())
            .status();
        // The first arena is full after three more objects; a new arena cannot be reserved.
        let mut err = None;
        for i in 0..8u64 {
            if let Err(e) = c.put(format!("k{i}").as_bytes(), &content(i, 1 << 20)) {
                err = Some(e);
                break;
            }
        }
        let e = err.expect("a full shm directory must refuse a new arena");
        // Either eviction made room (then no error) or a clear StoreFull naming the directory.
        assert!(matches!(e, Error::StoreFull(_)), "{e}");
        // Nothing stored was lost, and the daemon keeps serving.
        assert_eq!(
            check_content(c.get(b"first").unwrap().unwrap().data()).unwrap(),
            1
        );
        let _ = std::fs::remove_file(&hog);
        c.put(b"after", b"ok").unwrap();
    });
}

#[test]
fn many_threads_and_tasks_share_one_client() {
    // Sync callers take turns reading replies for each other; async callers rely on the
    // background reader. Mixed together they must never lose or mix up a reply.
    let d = Daemon::start(&[]);
    let c = d.client();
    let threads: Vec<_> = (0..6u64)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..300u64 {
                    let k = format!("t{t}-{i}");
                    let v = content((t << 32) | i, 100 + (i as usize % 5000));
                    c.put(k.as_bytes(), &v).unwrap();
                    assert!(c.contains(k.as_bytes()).unwrap());
                    assert_eq!(c.get(k.as_bytes()).unwrap().unwrap().data(), &v[..]);
                    if i % 3 == 0 {
                        c.delete(k.as_bytes()).unwrap();
                        assert!(c
                            .get_timeout(k.as_bytes(), Duration::from_millis(1))
                            .unwrap()
                            .is_none());
                    }
                }
            })
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..4u64)
            .map(|t| {
                let c = c.clone();
                tokio::spawn(async move {
                    for i in 0..200u64 {
                        let k = format!("a{t}-{i}");
                        c.put_async(k.as_bytes(), &content(i, 64), PutOptions::default())
                            .await
                            .unwrap();
                        let o = c
                            .get_async(k.as_bytes(), Some(Duration::from_secs(5)))
                            .await
                            .unwrap()
                            .unwrap();
                        assert_eq!(check_content(o.data()).unwrap(), i);
                        assert!(c.contains_async(k.as_bytes()).await.unwrap());
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(stat(&c, "hot.objects"), 6 * 200 + 4 * 200);
}

#[test]
fn sigterm_as_soon_as_the_socket_exists_exits_zero() {
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let mut child = std::process::Command::new(daemon_bin())
            .args(["--store", &unique_store(), "--socket"])
            .arg(&sock)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "-m",
                "16M",
                "--arena-size",
                "4M",
                "--index-capacity",
                "1024",
            ])
            .env("CIDCACHE_LOG", "warn")
            .spawn()
            .unwrap();
        assert!(eventually(Duration::from_secs(10), || sock.exists()));
        signal(child.id() as i32, libc_sigterm());
        let st = wait_timeout(&mut child, Duration::from_secs(10)).expect("exits");
        assert_eq!(st.code(), Some(0), "{st:?}");
    }
}
