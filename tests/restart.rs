//! Restarts: the hot tier adopted after a crash, clients of a stopped or replaced coordinator
//! told so on every path (never served stale bytes), one owner per store name on the machine,
//! and paths or names another user prepared refused.

mod common;

use cidcache::{Error, PutOptions};
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn key(i: usize) -> Vec<u8> {
    format!("adopt-{i}").into_bytes()
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Runs cidcached with `args` to completion (it is expected to refuse to start).
fn refused(args: &[String]) -> (bool, String) {
    let out = Command::new(daemon_bin())
        .args(args)
        .env("CIDCACHE_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn kill9_then_restart_adopts_the_hot_tier() {
    let mut d = Daemon::start(&["--no-warm"]);
    let c = d.client();
    let mut sizes = Vec::new();
    for i in 0..200 {
        // Small objects in arenas and a few in segments of their own.
        let len = if i % 50 == 7 { 9 << 20 } else { 100 + i * 37 };
        c.put(&key(i), &content(i as u64, len)).unwrap();
        sizes.push(len);
    }
    let eph = PutOptions {
        ephemeral: true,
        ..Default::default()
    };
    c.put_with(b"eph", b"ephemeral", eph).unwrap();
    // An object created but never sealed must not come back.
    let mut w = c.create(b"unsealed", 1000, 0).unwrap();
    w.data_mut().fill(7);
    drop(c);
    d.kill9();
    d.spawn();
    let c = d.client();
    assert_eq!(stat(&c, "hot.adopted_objects"), 201);
    // The writer's process still holds its lease: its space is held back until it lets go.
    assert_eq!(stat(&c, "hot.orphan_clients"), 1);
    drop(w);
    assert!(eventually(Duration::from_secs(20), || stat(
        &c,
        "hot.held_back_bytes"
    ) == 0));
    for (i, &len) in sizes.iter().enumerate() {
        let o = c
            .get(&key(i))
            .unwrap()
            .unwrap_or_else(|| panic!("{i} lost"));
        assert!(o.data() == content(i as u64, len), "{i} differs");
    }
    assert!(c.get(b"unsealed").unwrap().is_none());
    assert_eq!(c.get(b"eph").unwrap().unwrap().data(), b"ephemeral");
    // The adopted store works on: deletes, new puts, reuse of freed memory.
    for i in 0..100 {
        c.delete(&key(i)).unwrap();
    }
    for i in 0..100 {
        c.put(&key(i), &content(1000 + i as u64, 5000)).unwrap();
    }
    for i in 0..100 {
        let o = c.get(&key(i)).unwrap();
        let o = o.unwrap_or_else(|| panic!("{i} missing: {:?}", c.stats().unwrap()));
        assert!(o.data() == content(1000 + i as u64, 5000));
    }
    c.create(b"unsealed", 10, 0).unwrap().seal().unwrap();
}

#[test]
fn no_adopt_starts_empty() {
    let mut d = Daemon::start(&["--no-warm", "--no-adopt"]);
    let c = d.client();
    c.put(b"k", b"v").unwrap();
    drop(c);
    d.kill9();
    d.spawn();
    let c = d.client();
    assert!(c.get(b"k").unwrap().is_none());
    assert_eq!(stat(&c, "hot.adopted_objects"), 0);
}

#[test]
fn a_damaged_control_segment_is_not_adopted() {
    let mut d = Daemon::start(&["--no-warm"]);
    d.client().put(b"k", b"v").unwrap();
    d.kill9();
    // The index capacity word no longer matches the file.
    let ctl = Path::new("/dev/shm").join(format!("cidcache.{}.ctl", d.store));
    let mut bytes = std::fs::read(&ctl).unwrap();
    bytes[6 * 8] ^= 0x40;
    std::fs::write(&ctl, &bytes).unwrap();
    d.spawn();
    let c = d.client();
    assert!(c.get(b"k").unwrap().is_none());
    c.put(b"k", b"w").unwrap();
    assert_eq!(c.get(b"k").unwrap().unwrap().data(), b"w");
}

/// Issue 9, item 11: a client whose coordinator stopped answers `Disconnected` on every path,
/// hits included, instead of serving what its old mapping still shows.
#[test]
fn a_stopped_coordinator_serves_no_stale_hits() {
    let mut d = Daemon::start(&["--no-warm"]);
    let c = d.client();
    c.put(b"k", b"old").unwrap();
    let held = c.get(b"k").unwrap().unwrap();
    assert!(d.stop().success());
    assert!(matches!(c.get(b"k"), Err(Error::Disconnected(_))));
    assert!(matches!(c.contains(b"k"), Err(Error::Disconnected(_))));
    assert!(matches!(c.get_arrow(b"k"), Err(Error::Disconnected(_))));
    // What was held stays readable.
    assert_eq!(held.data(), b"old");
    d.spawn();
    let c2 = d.client();
    c2.put(b"k", b"new").unwrap();
    assert!(matches!(c.get(b"k"), Err(Error::Disconnected(_))));
    let c3 = c.reconnect().unwrap();
    assert_eq!(c3.get(b"k").unwrap().unwrap().data(), b"new");
}

/// After a crash and a restart that adopts the same control segment, an old connection must
/// not return the value the new coordinator replaced; with `--no-adopt` neither.
#[test]
fn a_replaced_coordinator_serves_no_stale_hits() {
    for adopt in [true, false] {
        let mut extra = vec!["--no-warm"];
        if !adopt {
            extra.push("--no-adopt");
        }
        let mut d = Daemon::start(&extra);
        let c = d.client();
        c.put(b"k", b"old").unwrap();
        c.put(b"other", b"x").unwrap();
        d.kill9();
        d.spawn();
        let c2 = d.client();
        if adopt {
            c2.delete(b"k").unwrap();
        }
        c2.put(b"k", b"new").unwrap();
        for k in [&b"k"[..], b"other", b"missing"] {
            assert!(
                matches!(c.get(k), Err(Error::Disconnected(_))),
                "adopt={adopt} key {k:?}"
            );
            assert!(matches!(c.contains(k), Err(Error::Disconnected(_))));
        }
        assert_eq!(
            c.reconnect().unwrap().get(b"k").unwrap().unwrap().data(),
            b"new"
        );
    }
}

/// An object a client of the crashed coordinator still holds keeps its bytes while the new
/// coordinator deletes it and reuses memory; an object it was still writing is never handed
/// out again while it lives.
#[test]
fn clients_of_the_crashed_coordinator_keep_what_they_hold() {
    let mut d = Daemon::start(&["--no-warm", "-m", "16M", "--arena-size", "4M"]);
    let old = d.client();
    for i in 0..40 {
        old.put(&key(i), &content(i as u64, 50_000)).unwrap();
    }
    let held: Vec<_> = (0..40)
        .map(|i| old.get(&key(i)).unwrap().unwrap())
        .collect();
    let mut writing = old.create(b"being-written", 60_000, 0).unwrap();
    d.kill9();
    d.spawn();
    let c = d.client();
    assert_eq!(stat(&c, "hot.orphan_clients"), 1);
    assert!(stat(&c, "hot.held_back_bytes") > 0);
    for i in 0..40 {
        c.delete(&key(i)).unwrap();
    }
    // Fill and churn the whole hot tier, while the old client writes its object.
    for round in 0..6u64 {
        for i in 0..60 {
            let k = format!("new-{i}");
            let _ = c.delete(k.as_bytes());
            c.put(k.as_bytes(), &content(round << 32 | i, 50_000))
                .unwrap();
        }
        writing.data_mut().fill(round as u8 + 1);
    }
    for (i, o) in held.iter().enumerate() {
        assert!(
            o.data() == content(i as u64, 50_000),
            "held object {i} changed"
        );
    }
    for i in 0..60u64 {
        let o = c.get(format!("new-{i}").as_bytes()).unwrap().unwrap();
        assert!(
            o.data() == content(5 << 32 | i, 50_000),
            "new-{i} was overwritten"
        );
    }
    assert!(writing.seal().is_err(), "the old connection cannot seal");
    drop(held);
    drop(old);
    assert!(eventually(Duration::from_secs(20), || stat(
        &c,
        "hot.orphan_clients"
    ) == 0));
    assert_eq!(stat(&c, "hot.held_back_bytes"), 0);
}

/// Issue 9, item 5: the lock lives with the segments, so two daemons for one store name
/// refuse each other whatever their sockets; the second names the first's pid and touches
/// nothing.
#[test]
fn one_owner_per_store_name() {
    let d = Daemon::start(&["--no-warm"]);
    let c = d.client();
    c.put(b"k", b"v").unwrap();
    let other = tempfile::tempdir().unwrap();
    let out = Command::new(daemon_bin())
        .args([
            "--store",
            &d.store,
            "--no-warm",
            "-m",
            "64M",
            "--arena-size",
            "16M",
        ])
        .env("XDG_RUNTIME_DIR", other.path())
        .env("CIDCACHE_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("pid {}", d.pid())), "{err}");
    assert!(!other
        .path()
        .join("cidcache")
        .join(format!("{}.sock", d.store))
        .exists());
    assert_eq!(c.get(b"k").unwrap().unwrap().data(), b"v");
    c.put(b"k2", b"v2").unwrap();
}

/// Issue 9, item 6: a socket directory that is a link, or not a directory, is refused; so is a
/// lock file that is a link (it would have truncated its target).
#[test]
fn prepared_paths_are_refused() {
    let base = tempfile::tempdir().unwrap();
    let real = base.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = base.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let store = unique_store();
    let args = |sock: &Path| -> Vec<String> {
        vec![
            "--store".into(),
            store.clone(),
            "--socket".into(),
            sock.display().to_string(),
            "--no-warm".into(),
            "-m".into(),
            "8M".into(),
            "--arena-size".into(),
            "4M".into(),
        ]
    };
    let (ok, err) = refused(&args(&link.join("s.sock")));
    assert!(!ok && err.contains("symbolic link"), "{err}");
    let file = base.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let (ok, err) = refused(&args(&file.join("s.sock")));
    assert!(!ok, "{err}");

    let victim = base.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let lock = Path::new("/dev/shm").join(format!("cidcache.{store}.lock"));
    std::os::unix::fs::symlink(&victim, &lock).unwrap();
    let (ok, err) = refused(&args(&real.join("s.sock")));
    let _ = std::fs::remove_file(&lock);
    assert!(!ok && err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(!real.join("s.sock").exists());
}

fn chown_nobody(p: &Path) {
    let st = Command::new("chown")
        .args(["-h", "65534:65534"])
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Issue 9, item 6: names squatted in /dev/shm or in the socket directory by another user
/// are reported with their owner, never used or removed.
#[test]
fn names_squatted_by_another_user_are_refused() {
    if !is_root() {
        eprintln!("skipped: simulating another user needs root (chown to nobody)");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let store = unique_store();
    let args = |sock: &Path| -> Vec<String> {
        vec![
            "--store".into(),
            store.clone(),
            "--socket".into(),
            sock.display().to_string(),
            "--no-warm".into(),
            "-m".into(),
            "8M".into(),
            "--arena-size".into(),
            "4M".into(),
        ]
    };
    // A socket directory created by another user.
    let theirs = base.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    chown_nobody(&theirs);
    let (ok, err) = refused(&args(&theirs.join("s.sock")));
    assert!(!ok && err.contains("uid 65534"), "{err}");
    let sock = base.path().join("mine").join("s.sock");
    for name in ["lock", "ctl", "d3", "l1"] {
        let p = Path::new("/dev/shm").join(format!("cidcache.{store}.{name}"));
        std::fs::write(&p, b"squatter").unwrap();
        chown_nobody(&p);
        let (ok, err) = refused(&args(&sock));
        let content = std::fs::read(&p).unwrap();
        let _ = std::fs::remove_file(&p);
        assert!(!ok && err.contains("uid 65534"), "{name}: {err}");
        assert_eq!(content, b"squatter", "{name} was written to");
    }
    // Squatted later, while the daemon runs: a new segment's name is taken.
    let mut d = Daemon::start(&["--no-warm", "-m", "32M", "--arena-size", "1M"]);
    let squat: Vec<_> = (2..40)
        .map(|i| Path::new("/dev/shm").join(format!("cidcache.{}.d{i}", d.store)))
        .collect();
    for p in &squat {
        std::fs::write(p, b"").unwrap();
        chown_nobody(p);
    }
    let c = d.client();
    let mut err = None;
    for i in 0..20 {
        if let Err(e) = c.put(&key(i), &content(i as u64, 200_000)) {
            err = Some(e.to_string());
            break;
        }
    }
    for p in &squat {
        let _ = std::fs::remove_file(p);
    }
    let err = err.expect("a new arena was needed");
    assert!(err.contains("uid 65534"), "{err}");
    assert!(d.stop().success());
}

/// A one-column Arrow table whose string values are `{tag}-NNNNNNNNN`.
fn tagged_table(tag: &str) -> (arrow_schema::SchemaRef, Vec<arrow_array::RecordBatch>) {
    use arrow_array::{ArrayRef, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    let schema = std::sync::Arc::new(Schema::new(vec![Field::new("name", DataType::Utf8, false)]));
    let names = StringArray::from_iter_values((0..1000).map(|i| format!("{tag}-{i:09}")));
    let batch =
        RecordBatch::try_new(schema.clone(), vec![std::sync::Arc::new(names) as ArrayRef]).unwrap();
    (schema, vec![batch])
}

/// The store's files in /dev/shm whose names end with `kind` followed by a number (`d`, `l`).
fn shm_files(store: &str, kind: &str) -> Vec<std::path::PathBuf> {
    let prefix = format!("cidcache.{store}.{kind}");
    let mut v: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.to_string();
            let id = n.strip_prefix(&prefix)?.parse().ok()?;
            Some((id, e.path()))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

/// Writes `bytes` at `offset` of the file at `path` (as any process of the store's user can).
fn scribble(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

/// Merge of issues 10 and 20: an Arrow object validated at seal is not trusted after a crash
/// (clients map the data segments read-write, and they outlive the coordinator): adoption
/// clears its validated flag, and the background validation gives it back to the objects that
/// still validate and removes the ones that do not.
#[test]
fn adopted_arrow_objects_are_validated_again() {
    let mut d = Daemon::start(&["--no-warm"]);
    let c = d.client();
    let (gs, good) = tagged_table("goodobj");
    let (bs, bad) = tagged_table("badobj");
    c.put_arrow(b"good", &gs, &good).unwrap();
    c.put_arrow(b"bad", &bs, &bad).unwrap();
    assert!(c.get(b"bad").unwrap().unwrap().is_validated_arrow());
    drop(c);
    d.kill9();
    // While no coordinator runs, a process of the store's user breaks one object's UTF-8.
    let mut hit = 0;
    for seg in shm_files(&d.store, "d") {
        let bytes = std::fs::read(&seg).unwrap();
        if let Some(at) = bytes.windows(16).position(|w| w == b"badobj-000000001") {
            scribble(&seg, at as u64 + 2, &[0xff]);
            hit += 1;
        }
    }
    assert_eq!(hit, 1, "the object's bytes are in one segment");
    d.spawn();
    let c = d.client();
    assert_eq!(stat(&c, "hot.adopted_objects"), 2);
    assert!(
        eventually(Duration::from_secs(30), || stat(
            &c,
            "arrow.revalidation_pending"
        ) == 0
            && stat(&c, "arrow.rejected") == 1),
        "the adopted objects are validated again"
    );
    let o = c.get(b"good").unwrap().expect("the valid object stays");
    assert!(o.is_arrow() && o.is_validated_arrow(), "validated again");
    drop(o);
    assert_eq!(c.get_arrow(b"good").unwrap().unwrap().batches, good);
    assert!(
        c.get(b"bad").unwrap().is_none(),
        "an object that no longer validates is removed"
    );
    assert!(d.stop().success(), "the daemon stops cleanly");
}

/// Merge of issues 9 and 10: the lease pages of the crashed coordinator's clients are hostile
/// input too. A page whose header was changed is not adopted; a page that later names a slot
/// the index does not have is dropped; the store goes on and the held-back space returns.
#[test]
fn hostile_lease_pages_of_old_clients_are_dropped() {
    let mut d = Daemon::start(&["--no-warm"]);
    let a = d.client();
    let b = d.client();
    a.put(b"k", b"v").unwrap();
    let pages = shm_files(&d.store, "l");
    assert_eq!(pages.len(), 2, "{pages:?}");
    d.kill9();
    // Client a's page claims another client id (word 1).
    scribble(&pages[0], 8, &u64::MAX.to_le_bytes());
    d.spawn();
    let c = d.client();
    assert_eq!(
        stat(&c, "hot.orphan_clients"),
        1,
        "only b's page is adopted"
    );
    assert!(!pages[0].exists(), "the bad page is removed");
    assert!(stat(&c, "hot.held_back_bytes") > 0);
    // Client b now writes a pin naming no slot of the index (word 8, the first pin).
    let forged = (u64::from(u32::MAX) << 32) | 2;
    scribble(&pages[1], 64, &forged.to_le_bytes());
    assert!(
        eventually(Duration::from_secs(30), || stat(&c, "hot.orphan_clients")
            == 0),
        "the page is dropped at the next pin check"
    );
    assert_eq!(stat(&c, "clients.revoked"), 1);
    assert_eq!(stat(&c, "hot.held_back_bytes"), 0);
    assert_eq!(c.get(b"k").unwrap().unwrap().data(), b"v");
    c.put(b"k2", b"v2").unwrap();
    drop((a, b));
    assert!(d.stop().success(), "the daemon stops cleanly");
}

/// Adopted segments get the store's mode of the new run: a store restarted with `--group`
/// shares its adopted segments with the group (0660), like the ones it creates.
#[test]
fn adopted_segments_get_the_new_runs_mode() {
    use std::os::unix::fs::PermissionsExt;
    let mut d = Daemon::start(&["--no-warm"]);
    d.client().put(b"k", b"v").unwrap();
    d.kill9();
    d.args.push("--group".into());
    d.spawn();
    let c = d.client();
    assert_eq!(stat(&c, "hot.adopted_objects"), 1);
    let mut files = shm_files(&d.store, "d");
    files.push(Path::new("/dev/shm").join(format!("cidcache.{}.ctl", d.store)));
    for f in files {
        let m = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o660, "{}", f.display());
    }
    assert_eq!(c.get(b"k").unwrap().unwrap().data(), b"v");
}
