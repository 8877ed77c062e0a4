//! CID catalog: in-memory operations, queries vs a naive model, persistence round trips,
//! crash safety, schema evolution, partitioning, presets and persisted scans.

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use cidcache::tier::catalog::*;
use cidcache::{Error, Key};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

const T0: i64 = 1_764_547_200_000_000; // 2025-12-01T00:00:00Z

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn key(i: u64) -> Key {
    Key::new(&cidcache::cid::cid_v1_raw(&i.to_le_bytes())).unwrap()
}

fn entry(i: u64, rng: &mut Rng) -> CatalogEntry {
    let mut e = CatalogEntry::new(
        key(i),
        rng.next() % 5_000_000,
        T0 + (i as i64 % 5) * 86_400_000_000,
    );
    e.mimetype = match rng.next() % 4 {
        0 => None,
        1 => Some("image/png".into()),
        2 => Some("text/plain".into()),
        _ => Some("application/octet-stream".into()),
    };
    e.filename = (!rng.next().is_multiple_of(3)).then(|| format!("file-{}.bin", rng.next() % 1000));
    e.storage_tier = [
        StorageTier::Hot,
        StorageTier::Warm,
        StorageTier::Cold,
        StorageTier::None,
    ][(rng.next() % 4) as usize];
    e.is_pinned = rng.next().is_multiple_of(5);
    e.last_accessed = e.added_at + (rng.next() % 1_000_000) as i64;
    e.access_count = rng.next() % 100;
    e.heat_score = (rng.next() % 1000) as f64 / 10.0;
    e.source = (rng.next().is_multiple_of(2)).then(|| "put".to_string());
    e.valid = !rng.next().is_multiple_of(10);
    if rng.next().is_multiple_of(3) {
        e.properties = vec![
            ("k".into(), format!("v{}", rng.next() % 7)),
            ("z".into(), String::new()),
        ];
    }
    e
}

fn entries(n: u64, seed: u64) -> Vec<CatalogEntry> {
    let mut rng = Rng(seed | 1);
    (0..n).map(|i| entry(i, &mut rng)).collect()
}

fn sorted(c: &Catalog) -> Vec<CatalogEntry> {
    let mut v: Vec<CatalogEntry> = c.iter().cloned().collect();
    v.sort_by_key(|e| e.key);
    v
}

fn keys_of(batches: &[RecordBatch]) -> BTreeSet<Vec<u8>> {
    let mut out = BTreeSet::new();
    for b in batches {
        let a = b.column_by_name("cid").unwrap().as_binary::<i32>();
        for i in 0..a.len() {
            out.insert(a.value(i).to_vec());
        }
    }
    out
}

/// Rows of batches as sorted text lines (order-independent comparison of all values).
fn row_lines(batches: &[RecordBatch]) -> Vec<String> {
    let t = format_table(batches);
    let mut lines: Vec<String> = t
        .lines()
        .skip(2)
        .map(|l| l.trim_end().to_string())
        .collect();
    lines.pop(); // "(N rows)"
    lines.sort();
    lines
}

fn opts(strategy: PartitionStrategy, preset: Preset) -> CatalogOptions {
    CatalogOptions {
        strategy,
        preset,
        ..Default::default()
    }
}

#[test]
fn upsert_get_remove_touch() {
    let mut c = Catalog::new();
    let es = entries(1000, 7);
    assert_eq!(c.upsert_batch(es.clone()), 1000);
    assert_eq!(c.len(), 1000);
    for e in &es {
        assert_eq!(c.get(&e.key), Some(e));
    }
    // Replace is whole-entry and not counted as new.
    let mut e5 = es[5].clone();
    e5.size_bytes = 42;
    assert!(!c.upsert(e5.clone()));
    assert_eq!(c.get(&e5.key).unwrap().size_bytes, 42);
    // Remove swaps the last row in: everything else stays reachable.
    for e in es.iter().step_by(3) {
        assert!(c.remove(&e.key).is_some());
        assert!(c.remove(&e.key).is_none());
    }
    for (i, e) in es.iter().enumerate() {
        assert_eq!(c.contains(&e.key), i % 3 != 0, "{i}");
    }
    assert_eq!(c.len(), 1000 - 334);
    // touch: count, time, heat decay with a one-hour half-life.
    let k = es[1].key;
    let last = c.get(&k).unwrap().last_accessed;
    let heat = c.get(&k).unwrap().heat_score;
    let cnt = c.get(&k).unwrap().access_count;
    assert!(c.touch(&k, last + 3_600_000_000));
    let e = c.get(&k).unwrap();
    assert_eq!(e.access_count, cnt + 1);
    assert_eq!(e.last_accessed, last + 3_600_000_000);
    assert!(
        (e.heat_score - (heat / 2.0 + 1.0)).abs() < 1e-9,
        "{}",
        e.heat_score
    );
    // Time going backwards does not decay and does not move last_accessed back.
    assert!(c.touch(&k, last));
    let e = c.get(&k).unwrap();
    assert_eq!(e.last_accessed, last + 3_600_000_000);
    assert!((e.heat_score - (heat / 2.0 + 2.0)).abs() < 1e-9);
    assert!(!c.touch(&es[0].key, last));
    assert!(c.set_tier(&k, StorageTier::Cold));
    assert_eq!(c.get(&k).unwrap().storage_tier, StorageTier::Cold);
    assert!(!c.set_tier(&es[0].key, StorageTier::Cold));
    // CID info filled from the key.
    assert_eq!(es[1].cid_version, Some(1));
    assert_eq!(es[1].multihash_type.as_deref(), Some("sha2-256"));
    // Memory-only catalogs cannot checkpoint.
    assert!(matches!(c.checkpoint(), Err(Error::InvalidArgument(_))));
}

fn filter_cases() -> Vec<Vec<&'static str>> {
    vec![
        vec!["size_bytes>1000000"],
        vec!["size_bytes<=2m", "mimetype=image/png"],
        vec!["storage_tier in (hot,warm)"],
        vec!["filename^=file-1"],
        vec!["mimetype is null"],
        vec!["mimetype is not null", "is_pinned=true"],
        vec!["properties is not null", "valid=false"],
        vec!["added_at>=2025-12-03", "access_count<50"],
        vec!["heat_score>50.5", "source=put"],
        vec!["last_accessed<2025-12-02T00:00:00.5Z"],
        vec![
            "cid_version=1",
            "multihash_type=sha2-256",
            "storage_tier!=none",
        ],
        vec!["cid^=0x01551220"],
        vec!["filename in ('file-1.bin', \"file-2.bin\")"],
    ]
}

/// The same filters, written as closures (the naive model).
fn naive(case: usize, e: &CatalogEntry) -> bool {
    let d = |day: i64| T0 + day * 86_400_000_000;
    match case {
        0 => e.size_bytes > 1_000_000,
        1 => e.size_bytes <= 2 << 20 && e.mimetype.as_deref() == Some("image/png"),
        2 => matches!(e.storage_tier, StorageTier::Hot | StorageTier::Warm),
        3 => e
            .filename
            .as_deref()
            .is_some_and(|f| f.starts_with("file-1")),
        4 => e.mimetype.is_none(),
        5 => e.mimetype.is_some() && e.is_pinned,
        6 => !e.properties.is_empty() && !e.valid,
        7 => e.added_at >= d(2) && e.access_count < 50,
        8 => e.heat_score > 50.5 && e.source.as_deref() == Some("put"),
        9 => e.last_accessed < d(1) + 500_000,
        10 => e.cid_version == Some(1) && e.storage_tier != StorageTier::None,
        11 => true,
        12 => matches!(e.filename.as_deref(), Some("file-1.bin" | "file-2.bin")),
        _ => unreachable!(),
    }
}

#[test]
fn query_matches_naive_model() {
    let mut c = Catalog::new();
    c.upsert_batch(entries(3000, 11));
    for (i, case) in filter_cases().iter().enumerate() {
        let q = Query::parse(case, Some("cid,size_bytes")).unwrap();
        let b = c.query(&q).unwrap();
        assert_eq!(b.num_columns(), 2);
        assert_eq!(b.schema().field(1).name(), "size_bytes");
        let got = keys_of(&[b]);
        let want: BTreeSet<Vec<u8>> = c
            .iter()
            .filter(|e| naive(i, e))
            .map(|e| e.key.as_bytes().to_vec())
            .collect();
        assert_eq!(got, want, "case {case:?}");
        assert!(
            i == 11 || want.len() < 3000,
            "case {case:?} should be selective"
        );
        if i != 4 && i != 6 && i != 12 {
            assert!(!want.is_empty(), "case {case:?} should match something");
        }
    }
    // Limit and all-columns projection.
    let mut q = Query::parse(&["size_bytes>0"], None).unwrap();
    q.limit = Some(10);
    let b = c.query(&q).unwrap();
    assert_eq!(b.num_rows(), 10);
    assert_eq!(b.schema(), catalog_schema());
}

#[test]
fn filter_parse_errors_are_clear() {
    let e = Filter::parse("colour=red").unwrap_err().to_string();
    assert!(
        e.contains("size_bytes") && e.contains("storage_tier") && e.contains("colour"),
        "{e}"
    );
    let e = Query::parse(&["size_bytes>1"], Some("cid,nope"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope") && e.contains("heat_score"), "{e}");
    for bad in [
        "size_bytes>abc",
        "size_bytes",
        "storage_tier=lukewarm",
        "added_at>yesterday",
        "is_pinned=maybe",
        "size_bytes^=1",
        "properties=x",
        "storage_tier in hot",
        "mimetype=",
        "cid=notacid",
    ] {
        let e = Filter::parse(bad).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument(_) | Error::InvalidKey(_)),
            "{bad}: {e}"
        );
    }
    let f = Filter::parse("size_bytes >= 4k").unwrap();
    assert_eq!((f.op, f.value), (CmpOp::Ge, Literal::UInt(4096)));
    let f = Filter::parse("storage_tier IN (Hot, warm)").unwrap();
    assert_eq!(
        f.value,
        Literal::List(vec![
            Literal::Str("hot".into()),
            Literal::Str("warm".into())
        ])
    );
    for extreme in [
        "added_at>9223372036854775807-01-01",
        "added_at>-9223372036854775807-01-01",
        "last_accessed<2025-13-01",
        "added_at>2025-12-01T24:00:00Z",
        "added_at>2025-12-01T10:00:00.1234567Z",
        "size_bytes>99999999999999999999",
        "size_bytes>20000000000t",
    ] {
        assert!(Filter::parse(extreme).is_err(), "{extreme}");
    }
    let f = Filter::parse("added_at < 2025-12-01T01:00:00Z").unwrap();
    assert_eq!(f.value, Literal::Int(T0 + 3_600_000_000));
}

fn check_round_trip(dir: &Path, strategy: PartitionStrategy, preset: Preset) {
    let (mut c, rep) = Catalog::open(dir, opts(strategy, preset)).unwrap();
    assert_eq!(rep.entries, 0);
    let es = entries(2000, 3);
    c.upsert_batch(es.clone());
    let st = c.checkpoint().unwrap();
    assert_eq!(st.rows_written, 2000);
    assert_eq!(c.pending_changes(), 0);
    // Second round: updates that move keys between partitions, removes, touches, re-adds.
    let mut rng = Rng(99);
    for e in es.iter().take(300) {
        let mut e2 = entry(rng.next() % 1_000_000 + 10_000, &mut rng);
        e2.key = e.key;
        c.upsert(e2);
    }
    for e in es.iter().skip(300).take(200) {
        c.remove(&e.key);
    }
    for e in es.iter().skip(300).take(50) {
        c.upsert(e.clone()); // removed then re-added before the checkpoint
    }
    for e in es.iter().skip(600).take(100) {
        c.touch(&e.key, T0 + 10 * 86_400_000_000);
    }
    let st = c.checkpoint().unwrap();
    assert!(st.tombstones_written > 0);
    // An empty checkpoint writes nothing.
    assert_eq!(c.checkpoint().unwrap().files_written, 0);
    let want = sorted(&c);
    drop(c);
    let (c2, rep) = Catalog::open(dir, opts(strategy, preset)).unwrap();
    assert!(rep.quarantined.is_empty(), "{rep:?}");
    assert_eq!(rep.entries, 1850);
    assert_eq!(sorted(&c2), want, "{strategy} {preset}");
}

#[test]
fn persist_round_trip_every_strategy() {
    for s in ["none", "time", "size", "type", "hash:8"] {
        let strategy: PartitionStrategy = s.parse().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        check_round_trip(tmp.path(), strategy, Preset::Balanced);
        let parts = std::fs::read_dir(tmp.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().into_string().unwrap())
            .collect::<Vec<_>>();
        let prefix = match strategy {
            PartitionStrategy::None => "part=",
            PartitionStrategy::Time => "day=",
            PartitionStrategy::SizeClass => "size=",
            PartitionStrategy::ContentType => "type=",
            PartitionStrategy::Hash(_) => "hash=",
        };
        assert!(parts.iter().all(|p| p.starts_with(prefix)), "{parts:?}");
        if strategy != PartitionStrategy::None {
            assert!(parts.len() > 1, "{s}: {parts:?}");
        }
    }
}

#[test]
fn every_preset_writes_readable_tuned_files() {
    for preset in Preset::ALL {
        let tmp = tempfile::tempdir().unwrap();
        check_round_trip(tmp.path(), PartitionStrategy::None, preset);
        let (mut c, _) = Catalog::open(tmp.path(), opts(PartitionStrategy::None, preset)).unwrap();
        c.compact().unwrap();
        let files: Vec<_> = std::fs::read_dir(tmp.path().join("part=all"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(files[0]
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("snap-"));
        let f = std::fs::File::open(&files[0]).unwrap();
        let r = parquet::file::serialized_reader::SerializedFileReader::new(f).unwrap();
        use parquet::file::reader::FileReader;
        let md = r.metadata();
        let rg = md.row_group(0);
        let col = |name: &str| {
            (0..rg.num_columns())
                .map(|i| rg.column(i))
                .find(|c| c.column_path().string() == name)
                .unwrap()
        };
        use parquet::basic::{Compression, Encoding};
        assert!(
            col("cid").bloom_filter_offset().is_some(),
            "bloom filter on cid"
        );
        assert!(
            col("cid").column_index_offset().is_some(),
            "page index written"
        );
        assert!(col("cid").statistics().is_some());
        let enc = |n: &str| col(n).encodings().collect::<Vec<_>>();
        assert!(
            enc("added_at").contains(&Encoding::DELTA_BINARY_PACKED),
            "{:?}",
            enc("added_at")
        );
        assert!(
            enc("is_pinned").contains(&Encoding::RLE),
            "{:?}",
            enc("is_pinned")
        );
        assert!(
            enc("mimetype").contains(&Encoding::RLE_DICTIONARY),
            "{:?}",
            enc("mimetype")
        );
        let comp = col("size_bytes").compression();
        match preset {
            Preset::Fast => assert_eq!(comp, Compression::LZ4_RAW),
            _ => assert!(matches!(comp, Compression::ZSTD(_)), "{comp:?}"),
        }
    }
}

#[test]
fn compaction_bounds_the_file_count() {
    let tmp = tempfile::tempdir().unwrap();
    let mut o = opts(PartitionStrategy::None, Preset::Fast);
    o.max_deltas = 3;
    let (mut c, _) = Catalog::open(tmp.path(), o.clone()).unwrap();
    let es = entries(500, 5);
    let mut compactions = 0;
    for (round, chunk) in es.chunks(50).enumerate() {
        c.upsert_batch(chunk.iter().cloned());
        if round % 2 == 1 {
            c.remove(&chunk[0].key);
        }
        compactions += c.checkpoint().unwrap().partitions_compacted;
        let n = std::fs::read_dir(tmp.path().join("part=all"))
            .unwrap()
            .count();
        assert!(n <= 4, "round {round}: {n} files");
    }
    assert!(compactions >= 3, "{compactions}");
    let want = sorted(&c);
    drop(c);
    let (c2, rep) = Catalog::open(tmp.path(), o).unwrap();
    assert!(rep.quarantined.is_empty());
    assert_eq!(sorted(&c2), want);
    assert_eq!(c2.len(), 495);
}

fn part_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn crash_leftovers_and_corrupt_files() {
    let tmp = tempfile::tempdir().unwrap();
    let o = opts(PartitionStrategy::None, Preset::Balanced);
    let (mut c, _) = Catalog::open(tmp.path(), o.clone()).unwrap();
    let es = entries(300, 21);
    c.upsert_batch(es[..100].iter().cloned());
    c.compact().unwrap(); // snapshot: 0..100
    c.upsert_batch(es[100..200].iter().cloned());
    c.checkpoint().unwrap(); // delta: 100..200
    c.upsert_batch(es[200..300].iter().cloned());
    c.checkpoint().unwrap(); // delta: 200..300
    drop(c);
    let pdir = tmp.path().join("part=all");
    let files = part_files(&pdir);
    assert_eq!(files.len(), 3, "{files:?}");
    // Names sort deltas first: delta(100..200), delta(200..300), snap(0..100).
    assert!(files[2]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("snap-"));
    // A leftover temporary file from a crashed write (garbage) is ignored and removed.
    std::fs::write(
        pdir.join(".tmp-delta-00000000000000ff.parquet"),
        b"PAR1 half written",
    )
    .unwrap();
    // Truncate the middle delta.
    let mid = &files[0];
    let bytes = std::fs::read(mid).unwrap();
    std::fs::write(mid, &bytes[..bytes.len() / 2]).unwrap();
    let (c2, rep) = Catalog::open(tmp.path(), o.clone()).unwrap();
    assert_eq!(rep.quarantined.len(), 1, "{rep:?}");
    assert_eq!(rep.removed_files, 1);
    let q = &rep.quarantined[0];
    assert!(q
        .moved_to
        .as_ref()
        .unwrap()
        .starts_with(tmp.path().join("quarantine")));
    assert!(q.moved_to.as_ref().unwrap().exists());
    assert!(!mid.exists());
    assert_eq!(c2.len(), 200);
    for e in es[..100].iter().chain(&es[200..]) {
        assert_eq!(c2.get(&e.key), Some(e));
    }
    assert!(!pdir.join(".tmp-delta-00000000000000ff.parquet").exists());
    // New writes after recovery never reuse the quarantined file's seq.
    let mut c2 = c2;
    c2.upsert_batch(es[100..200].iter().cloned());
    c2.checkpoint().unwrap();
    drop(c2);
    // Corrupt the snapshot in place (garbage footer): quarantined, the deltas still load.
    let snap = part_files(&pdir)
        .into_iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("snap-")
        })
        .unwrap();
    let mut bytes = std::fs::read(&snap).unwrap();
    let n = bytes.len();
    bytes[n - 12..n - 4].copy_from_slice(b"garbage!");
    std::fs::write(&snap, bytes).unwrap();
    let (c3, rep) = Catalog::open(tmp.path(), o).unwrap();
    assert_eq!(rep.quarantined.len(), 1, "{rep:?}");
    assert_eq!(c3.len(), 200, "rows 100..300 come from deltas");
    assert!(c3.get(&es[0].key).is_none());
}

#[test]
fn schema_evolution_old_files_open_with_defaults() {
    use arrow_array::{BinaryArray, StringArray, TimestampMicrosecondArray, UInt64Array};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    let tmp = tempfile::tempdir().unwrap();
    let pdir = tmp.path().join("part=all");
    std::fs::create_dir_all(&pdir).unwrap();
    // A "version 0" catalog: four columns only.
    let schema = Arc::new(Schema::new(vec![
        Field::new("cid", DataType::Binary, false),
        Field::new("size_bytes", DataType::UInt64, false),
        Field::new("mimetype", DataType::Utf8, true),
        Field::new(
            "added_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let ks: Vec<Key> = (0..3).map(key).collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(BinaryArray::from_iter_values(
                ks.iter().map(|k| k.as_bytes()),
            )),
            Arc::new(UInt64Array::from(vec![10, 20, 30])),
            Arc::new(StringArray::from(vec![
                Some("text/plain"),
                None,
                Some("image/gif"),
            ])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![T0, T0 + 1, T0 + 2]).with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    let f = std::fs::File::create(pdir.join("snap-0000000000000001.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();

    let o = opts(PartitionStrategy::None, Preset::Balanced);
    let (mut c, rep) = Catalog::open(tmp.path(), o.clone()).unwrap();
    assert!(rep.quarantined.is_empty(), "{rep:?}");
    assert_eq!(c.len(), 3);
    let e = c.get(&ks[1]).unwrap();
    assert_eq!(e.size_bytes, 20);
    assert_eq!(e.mimetype, None);
    assert_eq!(e.added_at, T0 + 1);
    assert_eq!(e.storage_tier, StorageTier::None);
    assert_eq!(
        (e.access_count, e.heat_score, e.valid, e.is_pinned),
        (0, 0.0, true, false)
    );
    assert!(e.properties.is_empty() && e.cid_version.is_none());
    // Mixed old + new files, and queries on a column the old file lacks.
    c.touch(&ks[0], T0 + 5);
    c.checkpoint().unwrap();
    drop(c);
    let (c, _) = Catalog::open(tmp.path(), o).unwrap();
    assert_eq!(c.get(&ks[0]).unwrap().access_count, 1);
    assert_eq!(
        c.get(&ks[2]).unwrap().mimetype.as_deref(),
        Some("image/gif")
    );
    let q = Query::parse(&["access_count=0"], Some("cid")).unwrap();
    let (b, _) = c.scan_persisted(&q).unwrap();
    assert_eq!(keys_of(&b).len(), 2);
    // All columns, defaults filled for the old file's missing ones: same values as in memory.
    let q = Query::parse(&["size_bytes>=0"], None).unwrap();
    let (b, _) = c.scan_persisted(&q).unwrap();
    assert_eq!(row_lines(&b), row_lines(&[c.query(&q).unwrap()]));
    assert_eq!(row_lines(&b).len(), 3);
}

#[test]
fn persisted_scan_equals_memory_and_prunes() {
    for strategy in [PartitionStrategy::None, PartitionStrategy::Hash(4)] {
        let tmp = tempfile::tempdir().unwrap();
        let o = CatalogOptions {
            strategy,
            preset: Preset::Fast,
            threads: 2,
            ..Default::default()
        };
        let (mut c, _) = Catalog::open(tmp.path(), o).unwrap();
        let es = entries(40_000, 17);
        c.upsert_batch(es.iter().cloned());
        c.compact().unwrap();
        // Deltas that change and remove rows: the scan must not return stale snapshot rows.
        for e in es.iter().take(2000) {
            let mut e2 = e.clone();
            e2.size_bytes = 7;
            e2.mimetype = Some("video/mp4".into());
            c.upsert(e2);
        }
        for e in es.iter().skip(2000).take(500) {
            c.remove(&e.key);
        }
        c.checkpoint().unwrap();
        let mut cases = filter_cases();
        cases.push(vec!["mimetype=video/mp4"]);
        cases.push(vec!["size_bytes=7"]);
        for case in &cases {
            let q = Query::parse(case, Some("cid,mimetype")).unwrap();
            let mem = keys_of(&[c.query(&q).unwrap()]);
            for threads in [1, 2] {
                let (b, rep) = scan_persisted(tmp.path(), &q, threads).unwrap();
                assert!(rep.skipped_files.is_empty());
                assert_eq!(keys_of(&b), mem, "{strategy} {case:?} threads={threads}");
                assert_eq!(rep.rows_matched, mem.len());
            }
        }
        // Every value of every column, not just the keys.
        let q = Query::parse(&["mimetype=video/mp4"], None).unwrap();
        let (b, _) = scan_persisted(tmp.path(), &q, 2).unwrap();
        let got = row_lines(&b);
        assert_eq!(got.len(), 2000);
        assert_eq!(got, row_lines(&[c.query(&q).unwrap()]));
        // A point lookup by cid touches few rows thanks to statistics and the page index
        // (snapshots are sorted by cid).
        let target = &es[30_000];
        let text = cidcache::cid::format_key(target.key.as_bytes());
        let q = Query::parse(&[format!("cid={text}")], None).unwrap();
        let (b, rep) = scan_persisted(tmp.path(), &q, 1).unwrap();
        assert_eq!(b.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
        // Partitions without the key are skipped by the bloom filter (fpp 1 %): at most
        // one page of the holding partition's snapshot is decoded, plus its delta.
        assert!(rep.rows_decoded <= 4096 + 2000, "{rep:?}");
        if strategy != PartitionStrategy::None {
            assert!(rep.row_groups_pruned >= 2, "{rep:?}");
        }
        // Row groups are pruned by statistics on an absent range.
        let q = Query::parse(&["size_bytes>100000000"], None).unwrap();
        let (b, rep) = scan_persisted(tmp.path(), &q, 2).unwrap();
        assert!(b.is_empty());
        assert!(rep.row_groups_pruned > 0, "{rep:?}");
    }
}

#[test]
fn output_writers() {
    let mut c = Catalog::new();
    c.upsert_batch(entries(50, 2));
    let q = Query::parse(
        &["size_bytes>0"],
        Some("cid,size_bytes,added_at,properties,mimetype"),
    )
    .unwrap();
    let b = c.query(&q).unwrap();
    let t = format_table(std::slice::from_ref(&b));
    let lines: Vec<&str> = t.lines().collect();
    assert!(
        lines[0].starts_with("cid") && lines[0].contains("| size_bytes"),
        "{t}"
    );
    assert!(lines[2].starts_with("bafkrei"), "{t}");
    assert!(t.contains("2025-12-0"), "{t}");
    assert_eq!(lines.last().unwrap(), &format!("({} rows)", b.num_rows()));
    let width = lines[0].find("| size_bytes").unwrap();
    assert!(
        lines[2..lines.len() - 1]
            .iter()
            .all(|l| l.find(" | ").unwrap() + 1 == width),
        "{t}"
    );

    let mut ipc = Vec::new();
    write_ipc(&mut ipc, &b.schema(), std::slice::from_ref(&b)).unwrap();
    let r = arrow_ipc::reader::FileReader::try_new(std::io::Cursor::new(ipc), None).unwrap();
    let back: Vec<RecordBatch> = r.map(|b| b.unwrap()).collect();
    assert_eq!(back, vec![b.clone()]);

    let pq = tempfile::tempfile().unwrap();
    write_parquet(&pq, &b.schema(), std::slice::from_ref(&b), Preset::Small).unwrap();
    let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(pq)
        .unwrap()
        .build()
        .unwrap();
    let back: Vec<RecordBatch> = r.map(|b| b.unwrap()).collect();
    assert_eq!(
        back.iter().map(|b| b.num_rows()).sum::<usize>(),
        b.num_rows()
    );
    assert_eq!(back[0].column(0), b.column(0));
}

#[test]
fn key_live_in_two_partitions_resolves_to_newest() {
    // Simulate a checkpoint interrupted between its live-row and tombstone phases: the key is
    // live both in its old partition (older file) and its new one (newer file).
    let tmp = tempfile::tempdir().unwrap();
    let o = opts(PartitionStrategy::ContentType, Preset::Fast);
    let (mut c, _) = Catalog::open(tmp.path(), o.clone()).unwrap();
    let mut e = CatalogEntry::new(key(1), 10, T0);
    e.mimetype = Some("text/plain".into());
    c.upsert(e.clone());
    c.checkpoint().unwrap();
    let old_files = part_files(&tmp.path().join("type=text"));
    let saved: Vec<(std::path::PathBuf, Vec<u8>)> = old_files
        .iter()
        .map(|p| (p.clone(), std::fs::read(p).unwrap()))
        .collect();
    e.mimetype = Some("image/png".into());
    c.upsert(e.clone());
    c.checkpoint().unwrap();
    drop(c);
    // Undo the tombstone phase: restore type=text to its old state.
    for p in part_files(&tmp.path().join("type=text")) {
        std::fs::remove_file(p).unwrap();
    }
    for (p, b) in saved {
        std::fs::write(p, b).unwrap();
    }
    let (mut c, _) = Catalog::open(tmp.path(), o.clone()).unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(
        c.get(&e.key).unwrap().mimetype.as_deref(),
        Some("image/png")
    );
    // The stale copy is tombstoned at the next checkpoint; then a removal sticks.
    assert_eq!(c.checkpoint().unwrap().tombstones_written, 1);
    c.remove(&e.key);
    c.compact().unwrap();
    drop(c);
    let (c, _) = Catalog::open(tmp.path(), o).unwrap();
    assert!(c.is_empty());
}

#[test]
fn wrong_types_and_garbage_are_quarantined_not_fatal() {
    use arrow_array::{BinaryArray, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    let tmp = tempfile::tempdir().unwrap();
    let o = opts(PartitionStrategy::Hash(2), Preset::Fast);
    let (mut c, _) = Catalog::open(tmp.path(), o.clone()).unwrap();
    let es = entries(200, 31);
    c.upsert_batch(es.iter().cloned());
    c.checkpoint().unwrap();
    drop(c);
    let pdir = tmp.path().join("hash=0000");
    // A file whose size_bytes column is text: a type this version cannot read.
    let schema = Arc::new(Schema::new(vec![
        Field::new("cid", DataType::Binary, false),
        Field::new("size_bytes", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(BinaryArray::from_iter_values([key(5000).as_bytes()])),
            Arc::new(StringArray::from(vec!["big"])),
        ],
    )
    .unwrap();
    let f = std::fs::File::create(pdir.join("delta-00000000000000a0.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    // Pure garbage, an empty file, and a valid Parquet file with an empty key.
    std::fs::write(
        pdir.join("delta-00000000000000a1.parquet"),
        vec![0xA5u8; 5000],
    )
    .unwrap();
    std::fs::write(pdir.join("delta-00000000000000a2.parquet"), b"").unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new(
        "cid",
        DataType::Binary,
        false,
    )]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(BinaryArray::from_iter_values([b"".as_slice()]))],
    )
    .unwrap();
    let f = std::fs::File::create(pdir.join("delta-00000000000000a3.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();

    // A read-only scan reports them and still answers from the good files.
    let q = Query::parse(&["size_bytes>=0"], Some("cid")).unwrap();
    let (b, rep) = scan_persisted(tmp.path(), &q, 2).unwrap();
    assert_eq!(rep.skipped_files.len(), 4, "{rep:?}");
    assert_eq!(keys_of(&b).len(), 200);

    let (c, rep) = Catalog::open(tmp.path(), o).unwrap();
    assert_eq!(rep.quarantined.len(), 4, "{rep:?}");
    assert!(
        rep.quarantined
            .iter()
            .any(|q| q.reason.contains("size_bytes")),
        "{rep:?}"
    );
    assert!(rep
        .quarantined
        .iter()
        .all(|q| q.moved_to.as_ref().is_some_and(|p| p.exists())));
    assert_eq!(c.len(), 200);
    assert!(c.get(&key(5000)).is_none());
    let mut want = es.clone();
    want.sort_by_key(|e| e.key);
    assert_eq!(sorted(&c), want);
    // Quarantined seqs are never reused.
    let mut c = c;
    c.touch(&es[0].key, T0 + 1);
    c.checkpoint().unwrap();
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.as_str() > "delta-00000000000000a3.parquet" && n.starts_with("delta-")),
        "{names:?}"
    );
}

#[test]
fn output_formats_by_name() {
    let mut c = Catalog::new();
    c.upsert_batch(entries(20, 4));
    let q = Query::parse(&["size_bytes>0"], Some("cid,storage_tier")).unwrap();
    let b = c.query(&q).unwrap();
    let schema = output_schema(&q);
    assert_eq!(b.schema(), schema);
    for (name, fmt) in [
        ("table", OutputFormat::Table),
        ("IPC", OutputFormat::Ipc),
        ("parquet", OutputFormat::Parquet),
    ] {
        assert_eq!(name.parse::<OutputFormat>().unwrap(), fmt);
        let mut out = Vec::new();
        write_output(&mut out, fmt, &schema, std::slice::from_ref(&b)).unwrap();
        match fmt {
            OutputFormat::Table => assert!(String::from_utf8(out).unwrap().starts_with("cid")),
            OutputFormat::Ipc => assert_eq!(&out[..6], b"ARROW1"),
            OutputFormat::Parquet => assert_eq!(&out[..4], b"PAR1"),
        }
        // Empty results still produce a file with the columns.
        let mut out = Vec::new();
        write_output(&mut out, fmt, &schema, &[]).unwrap();
        assert!(!out.is_empty());
    }
    assert!("csv".parse::<OutputFormat>().is_err());
}

#[test]
fn format_table_never_panics_on_foreign_batches() {
    use arrow_array::builder::{Int32Builder, MapBuilder, StringBuilder};
    use arrow_array::{Int32Array, StringArray};
    let mut mb = MapBuilder::new(None, StringBuilder::new(), Int32Builder::new());
    mb.keys().append_value("a");
    mb.values().append_value(1);
    mb.append(true).unwrap();
    mb.append(false).unwrap();
    let map = mb.finish();
    let b = RecordBatch::try_from_iter(vec![
        (
            "n",
            Arc::new(Int32Array::from(vec![1, 2])) as Arc<dyn Array>,
        ),
        ("m", Arc::new(map) as Arc<dyn Array>),
        (
            "s",
            Arc::new(StringArray::from(vec![Some("x".repeat(100)), None])) as Arc<dyn Array>,
        ),
    ])
    .unwrap();
    let t = format_table(&[b]);
    assert!(
        t.contains("<Int32>") && t.contains("<Map") && t.contains('…'),
        "{t}"
    );
    assert!(t.ends_with("(2 rows)\n"), "{t}");
    assert_eq!(format_table(&[]), "(no rows)\n");
}

mod model {
    //! Random operation sequences against a model: what `open` recovers is exactly the state
    //! at the last successful checkpoint, whatever moved between partitions, was removed,
    //! re-added or compacted in between.
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Upsert {
            k: u8,
            mime: u8,
            size: u32,
        },
        Remove {
            k: u8,
        },
        Touch {
            k: u8,
        },
        Checkpoint,
        Compact,
        /// Drop the catalog without a checkpoint (a crash) and reopen.
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..6, 0u8..4, 0u32..4).prop_map(|(k, mime, size)| Op::Upsert { k, mime, size }),
            2 => (0u8..6).prop_map(|k| Op::Remove { k }),
            1 => (0u8..6).prop_map(|k| Op::Touch { k }),
            2 => Just(Op::Checkpoint),
            1 => Just(Op::Compact),
            1 => Just(Op::Reopen),
        ]
    }

    fn state(c: &Catalog) -> BTreeMap<Key, CatalogEntry> {
        c.iter().map(|e| (e.key, e.clone())).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn recovery_equals_last_checkpoint(ops in proptest::collection::vec(op(), 1..60), strat in 0usize..3, max_deltas in 2usize..7) {
            let strategy = [PartitionStrategy::ContentType, PartitionStrategy::SizeClass, PartitionStrategy::Hash(3)][strat];
            let tmp = tempfile::tempdir().unwrap();
            let o = CatalogOptions { strategy, preset: Preset::Fast, max_deltas, ..Default::default() };
            let (mut c, _) = Catalog::open(tmp.path(), o.clone()).unwrap();
            let mut durable: BTreeMap<Key, CatalogEntry> = BTreeMap::new();
            let mut now = T0;
            for op in ops {
                now += 1_000_000;
                match op {
                    Op::Upsert { k, mime, size } => {
                        let mut e = CatalogEntry::new(key(u64::from(k)), u64::from(size), now);
                        e.mimetype = ["image/png", "text/plain", "video/mp4", "x/y"].get(usize::from(mime)).map(|m| m.to_string());
                        e.properties = vec![("n".into(), format!("{k}-{size}"))];
                        c.upsert(e);
                    }
                    Op::Remove { k } => { c.remove(&key(u64::from(k))); }
                    Op::Touch { k } => { c.touch(&key(u64::from(k)), now); }
                    Op::Checkpoint => { c.checkpoint().unwrap(); durable = state(&c); }
                    Op::Compact => { c.compact().unwrap(); durable = state(&c); }
                    Op::Reopen => {
                        drop(c);
                        let (c2, rep) = Catalog::open(tmp.path(), o.clone()).unwrap();
                        prop_assert!(rep.quarantined.is_empty());
                        prop_assert_eq!(&state(&c2), &durable);
                        c = c2;
                    }
                }
            }
            c.checkpoint().unwrap();
            let want = state(&c);
            drop(c);
            let (c2, _) = Catalog::open(tmp.path(), o).unwrap();
            prop_assert_eq!(state(&c2), want);
        }
    }
}
