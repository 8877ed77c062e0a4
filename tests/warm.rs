//! The Parquet warm tier against real daemons: demotion on eviction, promotion on a miss,
//! restart and kill -9 recovery, corrupt files, deletes, ephemeral objects, one promotion for
//! concurrent misses, and the files read by pyarrow.

mod common;

use arrow_array::builder::{ListBuilder, StringDictionaryBuilder, StructBuilder};
use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Fields, Schema};
use cidcache::{Client, PutOptions};
use common::Daemon;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A small hot tier, so that a few MiB of puts evict.
const SMALL: &[&str] = &["-m", "8M", "--arena-size", "2M"];

fn content(key: &[u8], len: usize) -> Vec<u8> {
    let mut x = xxhash_rust::xxh3::xxh3_64(key) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn stat(c: &Client, name: &str) -> u64 {
    c.stats()
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no stat {name}"))
        .1
}

/// Waits until the warm tier has written everything queued.
fn drain(c: &Client) {
    let t = Instant::now();
    while stat(c, "warm.queued_objects") != 0 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "warm queue never drained"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("warm-object-{i:05}").into_bytes()
}

/// Puts `n` objects of `len` bytes (with metadata on every third), far more than the hot tier.
fn fill(c: &Client, n: usize, len: usize) {
    for i in 0..n {
        let k = key(i);
        let meta = if i % 3 == 0 { k.clone() } else { Vec::new() };
        c.put_with(
            &k,
            &content(&k, len + i % 7),
            PutOptions {
                metadata: &meta,
                ..Default::default()
            },
        )
        .unwrap();
    }
}

fn check_all(c: &Client, n: usize, len: usize) {
    for i in 0..n {
        let k = key(i);
        let o = c
            .get(&k)
            .unwrap()
            .unwrap_or_else(|| panic!("object {i} lost"));
        assert!(o.data() == content(&k, len + i % 7), "object {i} differs");
        let meta = if i % 3 == 0 { k.clone() } else { Vec::new() };
        assert_eq!(o.metadata(), &meta[..], "metadata of {i}");
    }
}

fn warm_dir(d: &Daemon) -> PathBuf {
    d.dir.path().join("data/warm")
}

fn warm_files(d: &Daemon, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(warm_dir(d))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".parquet"))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn evicted_objects_are_demoted_and_promoted_byte_exact() {
    let d = Daemon::start(SMALL);
    let c = d.client();
    fill(&c, 60, 300 << 10);
    assert!(stat(&c, "hot.evictions") > 0, "the hot tier never evicted");
    drain(&c);
    assert!(stat(&c, "warm.demotions") > 0);
    assert!(!warm_files(&d, "raw-").is_empty());
    let before = stat(&c, "warm.promotions");
    check_all(&c, 60, 300 << 10);
    assert!(stat(&c, "warm.promotions") > before, "nothing was promoted");
    assert!(stat(&c, "warm.hits") > 0);
    // A key no tier holds is a plain miss.
    assert!(c.get(b"never-stored").unwrap().is_none());
    assert!(stat(&c, "warm.misses") > 0);
}

#[test]
fn large_objects_span_chunks() {
    let d = Daemon::start(&["-m", "48M", "--arena-size", "4M"]);
    let c = d.client();
    // 9 MiB + 1: three chunks; then push it out of the hot tier.
    let big = content(b"big", (9 << 20) + 1);
    c.put(b"big", &big).unwrap();
    c.put(b"empty", b"").unwrap();
    fill(&c, 50, 1 << 20);
    drain(&c);
    assert!(c.contains(b"big").unwrap());
    let o = c.get(b"big").unwrap().expect("big object promoted");
    assert!(o.data() == big);
    drop(o);
    let e = c.get(b"empty").unwrap().expect("empty object kept");
    assert!(e.data().is_empty());
}

#[test]
fn ephemeral_objects_are_dropped_not_demoted() {
    let d = Daemon::start(SMALL);
    let c = d.client();
    let eph = PutOptions {
        ephemeral: true,
        ..Default::default()
    };
    for i in 0..40 {
        let k = key(i);
        c.put_with(&k, &content(&k, 400 << 10), eph).unwrap();
    }
    drain(&c);
    assert!(stat(&c, "hot.evictions") > 0);
    assert_eq!(stat(&c, "warm.demotions"), 0);
    assert!(c.get(&key(0)).unwrap().is_none());
}

#[test]
fn one_promotion_for_concurrent_misses() {
    let d = Daemon::start(SMALL);
    let c = d.client();
    fill(&c, 40, 400 << 10);
    drain(&c);
    assert!(c.contains(&key(0)).unwrap(), "contains sees the warm tier");
    let before = stat(&c, "warm.promotions");
    let socket = d.socket.clone();
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let s = socket.clone();
            std::thread::spawn(move || {
                let c = Client::connect_socket(&s).unwrap();
                let o = c.get(&key(0)).unwrap().expect("promoted");
                assert!(o.data() == content(&key(0), 400 << 10));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        stat(&c, "warm.promotions") - before,
        1,
        "one promotion per key"
    );
}

#[test]
fn deletes_reach_the_warm_tier_and_survive_a_restart() {
    let mut d = Daemon::start(SMALL);
    let c = d.client();
    fill(&c, 40, 300 << 10);
    drain(&c);
    assert!(c.contains(&key(1)).unwrap());
    c.delete(&key(1)).unwrap();
    assert!(!c.contains(&key(1)).unwrap());
    assert!(c.get(&key(1)).unwrap().is_none());
    assert!(c.delete(&key(1)).is_err(), "a second delete is NotFound");
    drop(c);
    d.kill9();
    d.spawn();
    let c = d.client();
    assert!(
        c.get(&key(1)).unwrap().is_none(),
        "deleted object came back"
    );
    assert!(c.get(&key(2)).unwrap().is_some());
}

#[test]
fn a_clean_restart_keeps_the_hot_tier_in_the_warm_tier() {
    let mut d = Daemon::start(&["-m", "64M"]);
    let c = d.client();
    fill(&c, 30, 100 << 10);
    assert_eq!(stat(&c, "hot.evictions"), 0);
    drop(c);
    assert!(d.stop().success());
    d.spawn();
    let c = d.client();
    assert_eq!(stat(&c, "hot.objects"), 0);
    assert_eq!(stat(&c, "warm.objects"), 30);
    check_all(&c, 30, 100 << 10);
}

#[test]
fn kill9_loses_nothing_that_was_written() {
    let mut d = Daemon::start(SMALL);
    let c = d.client();
    fill(&c, 60, 300 << 10);
    drain(&c);
    let demoted: Vec<usize> = (0..60)
        .filter(|&i| {
            // What is not in the hot tier now lives only in warm files.
            !c.list().unwrap().iter().any(|e| e.key.as_bytes() == key(i))
        })
        .collect();
    assert!(demoted.len() > 10);
    drop(c);
    d.kill9();
    d.spawn();
    let c = d.client();
    for i in demoted {
        let k = key(i);
        let o = c.get(&k).unwrap().unwrap_or_else(|| panic!("{i} lost"));
        assert!(o.data() == content(&k, (300 << 10) + i % 7));
    }
}

#[test]
fn kill9_during_demotion_leaves_a_consistent_tier() {
    for round in 0..3 {
        let mut d = Daemon::start(SMALL);
        let c = d.client();
        // Kill while demotions are being written.
        fill(&c, 30 + round * 10, 300 << 10);
        drop(c);
        d.kill9();
        d.spawn();
        let c = d.client();
        assert_eq!(
            stat(&c, "warm.quarantined_files"),
            0,
            "a complete file is never torn"
        );
        // Whatever came back is exact; whatever did not is simply missing.
        for i in 0..30 + round * 10 {
            let k = key(i);
            if let Some(o) = c.get(&k).unwrap() {
                assert!(o.data() == content(&k, (300 << 10) + i % 7), "{i} differs");
            }
        }
        assert!(std::fs::read_dir(warm_dir(&d).join("tmp"))
            .unwrap()
            .next()
            .is_none());
    }
}

#[test]
fn corrupt_files_are_quarantined_and_the_rest_serves() {
    let mut d = Daemon::start(SMALL);
    let c = d.client();
    fill(&c, 80, 300 << 10);
    drain(&c);
    drop(c);
    assert!(d.stop().success());
    // Compaction may have merged everything into one file: damage newer copies of it, so that
    // the intact original must still serve. One copy truncated, one file of garbage.
    let files = warm_files(&d, "raw-");
    let orig = std::fs::read(files.last().unwrap()).unwrap();
    let dir = warm_dir(&d);
    std::fs::write(
        dir.join("raw-00000000000fff00.parquet"),
        &orig[..orig.len() / 2],
    )
    .unwrap();
    std::fs::write(
        dir.join("raw-00000000000fff01.parquet"),
        b"PAR1 this is not a parquet file PAR1",
    )
    .unwrap();
    d.spawn();
    let c = d.client();
    assert_eq!(stat(&c, "warm.quarantined_files"), 2);
    let q = warm_dir(&d).join("quarantine");
    assert_eq!(std::fs::read_dir(&q).unwrap().count(), 2);
    // Everything readable is exact; the store keeps serving.
    let mut served = 0;
    for i in 0..80 {
        let k = key(i);
        if let Some(o) = c.get(&k).unwrap() {
            assert!(o.data() == content(&k, (300 << 10) + i % 7));
            served += 1;
        }
    }
    assert!(served > 0);
    c.put(b"after", b"still serving").unwrap();
}

#[test]
fn a_file_corrupted_while_serving_is_quarantined_on_read() {
    let d = Daemon::start(SMALL);
    let c = d.client();
    fill(&c, 40, 300 << 10);
    drain(&c);
    let files = warm_files(&d, "raw-");
    // Flip bytes in the middle of the data pages of every file.
    for f in &files {
        let mut b = std::fs::read(f).unwrap();
        let mid = b.len() / 3;
        for x in &mut b[mid..mid + 4096] {
            *x ^= 0x5a;
        }
        std::fs::write(f, &b).unwrap();
    }
    let mut errors = 0;
    for i in 0..40 {
        let k = key(i);
        match c.get(&k) {
            Ok(Some(o)) => assert!(o.data() == content(&k, (300 << 10) + i % 7), "{i}"),
            Ok(None) => {}
            // What the damage touched answers Corrupt, and again on the next get.
            Err(cidcache::Error::Corrupt(_)) => {
                assert!(matches!(c.get(&k), Err(cidcache::Error::Corrupt(_))));
            }
            Err(e) => panic!("a get must not fail with {e}"),
        }
        if stat(&c, "warm.read_errors") > 0 {
            errors += 1;
        }
    }
    assert!(errors > 0, "the corruption was not detected");
    assert!(stat(&c, "warm.quarantined_files") + stat(&c, "warm.damaged_objects") > 0);
    c.put(b"after", b"still serving").unwrap();
}

fn arrow_table() -> (Arc<Schema>, Vec<RecordBatch>) {
    let item_fields = Fields::from(vec![
        Field::new("name", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
    ]);
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("text", DataType::Utf8, true),
        Field::new(
            "kind",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        ),
        Field::new(
            "items",
            DataType::List(Arc::new(Field::new(
                "item",
                DataType::Struct(item_fields.clone()),
                true,
            ))),
            true,
        ),
        Field::new("x", DataType::Float64, true),
    ]));
    let batch = |start: i64, n: usize| {
        let ids = Int64Array::from_iter_values(start..start + n as i64);
        let text = StringArray::from_iter((0..n).map(|i| {
            (i % 5 != 0).then(|| format!("{}-{}", "long string ".repeat(i % 40), start + i as i64))
        }));
        let mut kind = StringDictionaryBuilder::<Int32Type>::new();
        for i in 0..n {
            if i % 7 == 0 {
                kind.append_null();
            } else {
                kind.append_value(["cat", "dog", "emu"][i % 3]);
            }
        }
        let mut items = ListBuilder::new(StructBuilder::from_fields(item_fields.clone(), 0));
        for i in 0..n {
            if i % 11 == 0 {
                items.append(false);
                continue;
            }
            for j in 0..i % 4 {
                let s = items.values();
                s.field_builder::<arrow_array::builder::StringBuilder>(0)
                    .unwrap()
                    .append_value(format!("n{j}"));
                s.field_builder::<arrow_array::builder::Float64Builder>(1)
                    .unwrap()
                    .append_option((j % 2 == 0).then_some(j as f64 * 0.5));
                s.append(true);
            }
            items.append(true);
        }
        let x = Float64Array::from_iter((0..n).map(|i| (i % 3 != 0).then_some(i as f64 / 3.0)));
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(ids) as ArrayRef,
                Arc::new(text),
                Arc::new(kind.finish()),
                Arc::new(items.finish()),
                Arc::new(x),
            ],
        )
        .unwrap()
    };
    // Slices of one batch: an Arrow IPC file holds one dictionary per field.
    let all = batch(0, 3500);
    let batches = vec![
        all.slice(0, 1000),
        all.slice(1000, 0),
        all.slice(1000, 2500),
    ];
    (schema, batches)
}

/// The Python with pyarrow that the Plasma suite installs (`tests/python/plasma/run.sh`).
fn pyarrow_python() -> Option<PathBuf> {
    let p = match std::env::var_os("CIDCACHE_PYARROW_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/plasma-venv/bin/python"),
    };
    p.exists().then_some(p)
}

#[test]
fn arrow_tables_round_trip_and_pyarrow_reads_the_files() {
    let d = Daemon::start(SMALL);
    let c = d.client();
    let (schema, batches) = arrow_table();
    c.put_arrow(b"table", &schema, &batches).unwrap();
    fill(&c, 40, 300 << 10);
    drain(&c);
    let files = warm_files(&d, "arrow-");
    assert_eq!(files.len(), 1, "the table has a file of its own");

    let before = stat(&c, "warm.promotions");
    let t = c.get_arrow(b"table").unwrap().expect("table promoted");
    assert!(stat(&c, "warm.promotions") > before);
    assert_eq!(t.schema, schema);
    assert_eq!(t.batches.len(), batches.len(), "same batch boundaries");
    for (a, b) in t.batches.iter().zip(&batches) {
        assert_eq!(a, b);
    }
    // After promotion it is an ordinary zero-copy hit: the buffers lie in shared memory.
    let o = c.get(b"table").unwrap().unwrap();
    let range = o.data().as_ptr() as usize..o.data().as_ptr() as usize + o.data().len();
    let col = t.batches[0].column(0).to_data();
    assert!(range.contains(&(col.buffers()[0].as_ptr() as usize)));

    let Some(py) = pyarrow_python() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "pyarrow is needed in CI (tests/python/plasma/run.sh makes target/plasma-venv)"
        );
        eprintln!("skipping the pyarrow check: no target/plasma-venv");
        return;
    };
    // An independent reader sees the same schema and values.
    let script = r#"
import sys, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
print(t.num_rows)
print(",".join(t.column_names))
print(t.schema.field("kind").type)
print(t.column("text").null_count, t.column("kind").null_count, t.column("items").null_count, t.column("x").null_count)
print(sum(t.column("id").to_pylist()))
print(t.column("items")[13].as_py())
"#;
    let out = std::process::Command::new(py)
        .arg("-c")
        .arg(script)
        .arg(&files[0])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(lines[0], rows.to_string());
    assert_eq!(lines[1], "id,text,kind,items,x");
    assert_eq!(
        lines[2],
        "dictionary<values=string, indices=int32, ordered=0>"
    );
    let nulls = |c: usize| -> usize { batches.iter().map(|b| b.column(c).null_count()).sum() };
    assert_eq!(
        lines[3],
        format!("{} {} {} {}", nulls(1), nulls(2), nulls(3), nulls(4))
    );
    assert_eq!(lines[4], (0..rows as i64).sum::<i64>().to_string());
    assert_eq!(
        lines[5], "[{'name': 'n0', 'score': 0.0}]",
        "row 13 holds one item"
    );
}

#[test]
fn projection_and_filters_on_hot_and_warm_tables() {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use cidcache::scan::Scan;
    let d = Daemon::start(&["-m", "24M", "--arena-size", "4M", "--policy", "lru"]);
    let c = d.client();
    // Four row groups of 100,000 sorted ids; pages of at most 20,000 rows.
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("x", DataType::Float64, true),
        Field::new("name", DataType::Utf8, true),
    ]));
    let batches: Vec<RecordBatch> = (0..4)
        .map(|g| {
            let ids = Int64Array::from_iter_values(g * 100_000..(g + 1) * 100_000);
            let x =
                Float64Array::from_iter((0..100_000).map(|i| (i % 10 != 0).then_some(i as f64)));
            let name = StringArray::from_iter((0..100_000).map(|i| Some(format!("n{}", i % 100))));
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(ids) as ArrayRef, Arc::new(x), Arc::new(name)],
            )
            .unwrap()
        })
        .collect();
    c.put_arrow(b"scanned", &schema, &batches).unwrap();
    let scan = Scan::default()
        .columns(&["name", "id"])
        .filter("id>=390000")
        .unwrap()
        .filter("name=n7")
        .unwrap();
    let ids = |t: &cidcache::arrow::ArrowObject| -> Vec<i64> {
        t.batches
            .iter()
            .flat_map(|b| b.column(1).as_primitive::<Int64Type>().values().to_vec())
            .collect()
    };
    let want: Vec<i64> = (390_000..400_000).filter(|i| i % 100 == 7).collect();
    // In shared memory: scanned by the client.
    let hot = c.get_arrow_scan(b"scanned", &scan).unwrap().unwrap();
    assert_eq!(hot.schema.fields().len(), 2);
    assert_eq!(hot.schema.field(0).name(), "name");
    assert_eq!(ids(&hot), want);
    // Projection alone is zero-copy.
    let proj = c
        .get_arrow_scan(b"scanned", &Scan::default().columns(&["x"]))
        .unwrap()
        .unwrap();
    assert_eq!(proj.batches.len(), 4);
    // Released, so that it can be evicted.
    drop(proj);
    let hot_schema = hot.schema.clone();
    drop(hot);
    // In the warm tier: the coordinator reads only what is needed.
    fill(&c, 100, 300 << 10);
    drain(&c);
    assert!(c
        .list()
        .unwrap()
        .iter()
        .all(|e| e.key.as_bytes() != b"scanned"));
    let warm = c.get_arrow_scan(b"scanned", &scan).unwrap().unwrap();
    assert_eq!(warm.schema, hot_schema);
    assert_eq!(ids(&warm), want);
    assert_eq!(stat(&c, "warm.scans"), 1);
    assert_eq!(stat(&c, "warm.scan_row_groups_skipped"), 3);
    assert!(stat(&c, "warm.scan_rows_skipped_by_pages") >= 80_000);
    // The full object was not promoted; the same scan again is served from its result.
    assert!(c
        .list()
        .unwrap()
        .iter()
        .all(|e| e.key.as_bytes() != b"scanned"));
    let again = c.get_arrow_scan(b"scanned", &scan).unwrap().unwrap();
    assert_eq!(ids(&again), want);
    assert_eq!(stat(&c, "warm.scans"), 1);
    // Bad scans are clear errors.
    let e = c
        .get_arrow_scan(b"scanned", &Scan::default().columns(&["nope"]))
        .unwrap_err();
    assert!(e.to_string().contains("no column"), "{e}");
    assert!(c.get_arrow_scan(b"absent", &scan).unwrap().is_none());
}

#[test]
fn small_files_are_compacted_and_nothing_is_lost() {
    let mut d = Daemon::start(SMALL);
    let c = d.client();
    // Slow puts: each eviction is written on its own, one small file each.
    let n = 60;
    for i in 0..n {
        let k = key(i);
        c.put(&k, &content(&k, 500 << 10)).unwrap();
        std::thread::sleep(Duration::from_millis(15));
    }
    drain(&c);
    // One object deleted after compaction may have copied it.
    c.delete(&key(3)).unwrap();
    // Compaction runs on the writer after a write: it may still be going when the queue is
    // empty (a loaded machine), so wait for it.
    assert!(
        common::eventually(Duration::from_secs(60), || stat(&c, "warm.compactions") > 0),
        "no compaction happened"
    );
    assert!(stat(&c, "warm.files") < stat(&c, "warm.demotions"));
    let check = |c: &Client| {
        for i in 0..n {
            let k = key(i);
            let got = c.get(&k).unwrap();
            if i == 3 {
                assert!(got.is_none(), "a deleted object came back");
            } else {
                let o = got.unwrap_or_else(|| panic!("{i} lost"));
                assert!(o.data() == content(&k, 500 << 10), "{i} differs");
            }
        }
    };
    check(&c);
    drop(c);
    // A clean stop demotes what only the hot tier held; a restart finds everything.
    assert!(d.stop().success());
    d.spawn();
    let c = d.client();
    assert_eq!(stat(&c, "warm.objects"), n as u64 - 1);
    check(&c);
}

fn batches_rows(b: &[RecordBatch]) -> usize {
    b.iter().map(|b| b.num_rows()).sum()
}

#[test]
fn the_catalog_follows_the_tiers_and_survives_restarts() {
    use cidcache::tier::catalog::{CatalogEntry, OutputFormat};
    let mut d = Daemon::start(SMALL);
    let c = d.client();
    fill(&c, 30, 300 << 10);
    drain(&c);
    let q = |c: &Client, f: &[&str]| {
        batches_rows(&c.catalog_query_batches(f, Some("cid"), None).unwrap())
    };
    assert_eq!(q(&c, &[]), 30);
    let hot = q(&c, &["storage_tier=hot"]);
    let warm = q(&c, &["storage_tier=warm"]);
    assert_eq!(hot + warm, 30, "every object is hot or warm");
    assert!(warm > 0 && hot > 0);
    assert_eq!(hot as u64, stat(&c, "hot.objects"));

    // Metadata from a client, kept across tier moves; queries filter on it.
    let k = key(0);
    let mut e = CatalogEntry::new(cidcache::Key::new(&k).unwrap(), 1, 0);
    e.mimetype = Some("image/png".into());
    e.filename = Some("cat.png".into());
    e.properties = vec![("owner".into(), "alice".into())];
    c.catalog_upsert(&[e]).unwrap();
    assert_eq!(q(&c, &["mimetype=image/png", "filename^=cat"]), 1);
    let table = String::from_utf8(
        c.catalog_query(
            &["mimetype=image/png"],
            Some("filename,storage_tier"),
            None,
            OutputFormat::Table,
        )
        .unwrap(),
    )
    .unwrap();
    assert!(table.contains("cat.png"), "{table}");

    // The CLI records the file name and type.
    let file = d.dir.path().join("notes.txt");
    std::fs::write(&file, b"some notes").unwrap();
    let cli = env!("CARGO_BIN_EXE_cidcache");
    let out = std::process::Command::new(cli)
        .args(["--socket", d.socket.to_str().unwrap(), "put"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(cli)
        .args([
            "--socket",
            d.socket.to_str().unwrap(),
            "query",
            "--where",
            "filename=notes.txt",
            "-c",
            "cid,mimetype,size_bytes",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("text/plain") && text.contains("10"),
        "{text}"
    );
    let bad = std::process::Command::new(cli)
        .args([
            "--socket",
            d.socket.to_str().unwrap(),
            "query",
            "--where",
            "colour=red",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("size_bytes"),
        "lists the columns"
    );

    // Deletes remove the entry; hostile upserts are refused and the store keeps serving.
    c.delete(&key(1)).unwrap();
    assert_eq!(q(&c, &[]), 30);
    assert!(c
        .catalog_query_batches(&["storage_tier=warm"], None, None)
        .is_ok());
    // A client cannot claim a tier: an entry for a key no tier holds is recorded as `none`.
    let mut ghost = CatalogEntry::new(cidcache::Key::new(b"never-put").unwrap(), 5, 0);
    ghost.storage_tier = cidcache::tier::catalog::StorageTier::Hot;
    c.catalog_upsert(&[ghost]).unwrap();
    assert_eq!(q(&c, &["storage_tier=none"]), 1);

    // A clean restart: everything demoted, the catalog says so, user metadata kept.
    drop(c);
    assert!(d.stop().success());
    d.spawn();
    let c = d.client();
    assert_eq!(q(&c, &["storage_tier=hot"]), 0);
    assert_eq!(q(&c, &["storage_tier=warm"]), 30);
    assert_eq!(q(&c, &["mimetype=image/png"]), 1);
    // An independent reader opens every catalog file with the documented columns.
    if let Some(py) = pyarrow_python() {
        let script = r#"
import sys, glob, pyarrow.parquet as pq
files = glob.glob(sys.argv[1] + "/**/*.parquet", recursive=True)
assert files, "no catalog files"
for f in files:
    t = pq.read_table(f)
    for c in ["cid", "size_bytes", "mimetype", "filename", "storage_tier", "is_pinned", "added_at",
              "last_accessed", "access_count", "heat_score", "source", "cid_version",
              "multihash_type", "valid", "properties"]:
        assert c in t.column_names, (f, c, t.column_names)
print(len(files))
"#;
        let out = std::process::Command::new(py)
            .arg("-c")
            .arg(script)
            .arg(d.dir.path().join("data/catalog"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // kill -9: the catalog is never ahead of the data.
    c.put(b"only-hot", b"x").unwrap();
    // Wait for a checkpoint to record it as hot (every 5 s).
    let t = Instant::now();
    while stat(&c, "catalog.pending_changes") != 0 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no catalog checkpoint"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(c);
    d.kill9();
    d.spawn();
    let c = d.client();
    // The new coordinator adopted the hot tier: the object is still hot.
    assert_eq!(q(&c, &["storage_tier=hot"]), 1);
    assert_eq!(c.get(b"only-hot").unwrap().unwrap().data(), b"x");
    drop(c);
    // Without adoption the hot tier is gone, and the catalog says so.
    d.kill9();
    d.args.push("--no-adopt".into());
    d.spawn();
    let c = d.client();
    assert_eq!(q(&c, &["storage_tier=hot"]), 0);
    assert!(c.get(b"only-hot").unwrap().is_none());
    let none = c
        .catalog_query_batches(&["storage_tier=none"], Some("cid"), None)
        .unwrap();
    assert_eq!(
        batches_rows(&none),
        2,
        "the ghost entry and the object kill -9 lost are recorded as in no tier"
    );
}

#[test]
fn hostile_catalog_upserts_are_refused() {
    use cidcache::proto::{Request, Response};
    let d = Daemon::start(SMALL);
    // Raw frames: garbage where an Arrow IPC file should be.
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    use std::io::{Read, Write};
    let hello = Request::Hello {
        version: cidcache::proto::VERSION,
        pid: std::process::id(),
        writer: true,
    };
    let read_reply = |s: &mut std::os::unix::net::UnixStream| {
        let mut h = [0u8; cidcache::proto::HEADER_LEN];
        s.read_exact(&mut h).unwrap();
        let h = cidcache::proto::Header::parse(&h).unwrap();
        let mut body = vec![0u8; h.body_len as usize];
        s.read_exact(&mut body).unwrap();
        Response::decode(h.msg_type, &body).unwrap()
    };
    s.write_all(&hello.encode(1)).unwrap();
    read_reply(&mut s);
    for junk in [&b"ARROW1\0\0garbage"[..], b"", &[0xffu8; 300][..]] {
        s.write_all(&Request::CatalogUpsert { ipc: junk }.encode(2))
            .unwrap();
        match read_reply(&mut s) {
            Response::Error { .. } => {}
            other => panic!("accepted junk: {other:?}"),
        }
    }
    // Still serving.
    let c = d.client();
    c.put(b"k", b"v").unwrap();
    assert_eq!(c.catalog_query_batches(&[], None, None).unwrap().len(), 1);
}

#[test]
fn warm_files_are_partitioned_by_size_class() {
    let mut d = Daemon::start(&["-m", "8M", "--arena-size", "2M", "--warm-partition", "size"]);
    let c = d.client();
    let sizes = |i: usize| {
        if i.is_multiple_of(2) {
            100 << 10
        } else {
            600 << 10
        }
    };
    for i in 0..40 {
        let k = key(i);
        c.put(&k, &content(&k, sizes(i))).unwrap();
    }
    drain(&c);
    let dirs: Vec<String> = std::fs::read_dir(warm_dir(&d))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("size="))
        .collect();
    assert!(dirs.contains(&"size=2^16".to_string()), "{dirs:?}");
    assert!(dirs.contains(&"size=2^19".to_string()), "{dirs:?}");
    drop(c);
    assert!(d.stop().success());
    d.spawn();
    let c = d.client();
    assert_eq!(stat(&c, "warm.objects"), 40);
    for i in 0..40 {
        let k = key(i);
        let o = c.get(&k).unwrap().unwrap_or_else(|| panic!("{i} lost"));
        assert!(o.data() == content(&k, sizes(i)));
    }
}
