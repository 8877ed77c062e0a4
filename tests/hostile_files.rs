//! Hostile and damaged warm-tier files against a real daemon, through real restarts: declared
//! lengths never allocate, a damaged object is quarantined alone (its get answers `Corrupt`, the
//! other objects of its file keep serving), and hostile Parquet metadata (huge row counts,
//! truncated files) ends as a quarantined file, never as a dead daemon.

mod common;

use arrow_array::builder::{BinaryBuilder, UInt32Builder, UInt64Builder};
use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use cidcache::{Client, Error};
use common::{stat, Daemon};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::{FileMetaData, KeyValue, ParquetMetaData, ParquetMetaDataWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A small hot tier (so that puts demote), and a store-wide object limit of 8 MiB.
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

fn drain(c: &Client) {
    let t = Instant::now();
    while stat(c, "warm.queued_objects") != 0 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "warm queue never drained"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn warm_dir(d: &Daemon) -> PathBuf {
    d.dir.path().join("data/warm")
}

fn files(d: &Daemon, prefix: &str) -> Vec<PathBuf> {
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

fn assert_corrupt(c: &Client, key: &[u8]) {
    match c.get(key) {
        Err(Error::Corrupt(m)) => assert!(!m.is_empty()),
        Err(e) => panic!(
            "{}: expected Corrupt, got {e}",
            String::from_utf8_lossy(key)
        ),
        Ok(o) => panic!(
            "{}: expected Corrupt, got {:?}",
            String::from_utf8_lossy(key),
            o.map(|o| o.data().len())
        ),
    }
}

/// One row of a raw warm-tier file (docs/warm.md, "File layouts").
struct Row<'a> {
    key: &'a [u8],
    part: u32,
    data_len: u64,
    checksum: u64,
    meta: &'a [u8],
    data: &'a [u8],
}

/// Writes a raw-layout file from `rows`, as they are (lengths declared by the caller).
fn write_raw(path: &Path, rows: &[Row<'_>]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Binary, false),
        Field::new("part", DataType::UInt32, false),
        Field::new("data_len", DataType::UInt64, false),
        Field::new("flags", DataType::UInt32, false),
        Field::new("checksum", DataType::UInt64, false),
        Field::new("meta", DataType::Binary, false),
        Field::new("data", DataType::Binary, false),
    ]));
    let (mut k, mut p, mut l, mut f, mut c, mut m, mut d) = (
        BinaryBuilder::new(),
        UInt32Builder::new(),
        UInt64Builder::new(),
        UInt32Builder::new(),
        UInt64Builder::new(),
        BinaryBuilder::new(),
        BinaryBuilder::new(),
    );
    for r in rows {
        k.append_value(r.key);
        p.append_value(r.part);
        l.append_value(r.data_len);
        f.append_value(0);
        c.append_value(r.checksum);
        m.append_value(r.meta);
        d.append_value(r.data);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(k.finish()),
        Arc::new(p.finish()),
        Arc::new(l.finish()),
        Arc::new(f.finish()),
        Arc::new(c.finish()),
        Arc::new(m.finish()),
        Arc::new(d.finish()),
    ];
    let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn good<'a>(key: &'a [u8], data: &'a [u8]) -> Row<'a> {
    Row {
        key,
        part: 0,
        data_len: data.len() as u64,
        checksum: xxhash_rust::xxh3::xxh3_64(data),
        meta: b"",
        data,
    }
}

#[test]
fn declared_lengths_never_allocate_and_lying_objects_are_corrupt_alone() {
    let mut d = Daemon::start(SMALL);
    drop(d.client());
    assert!(d.stop().success());
    let (a, b) = (content(b"good-a", 5000), content(b"good-b", 70_000));
    let mut rows = vec![good(b"good-a", &a)];
    // 40 GB in 10,240 empty chunks: the chunk count matches the length, the bytes do not.
    for part in 0..10_240 {
        rows.push(Row {
            key: b"claims-40-gb",
            part,
            data_len: 40 << 30,
            checksum: 1,
            meta: b"",
            data: b"",
        });
    }
    // 6 MiB (under the hot tier's limit) in two chunks of 10 bytes.
    for part in 0..2 {
        rows.push(Row {
            key: b"claims-6-mib",
            part,
            data_len: 6 << 20,
            checksum: 2,
            meta: b"",
            data: b"0123456789",
        });
    }
    // A second chunk numbered as a third.
    rows.push(Row {
        key: b"chunk-gap",
        part: 0,
        data_len: (4 << 20) + 1,
        checksum: 3,
        meta: b"",
        data: b"x",
    });
    rows.push(Row {
        key: b"chunk-gap",
        part: 2,
        data_len: (4 << 20) + 1,
        checksum: 3,
        meta: b"",
        data: b"y",
    });
    rows.push(good(b"good-b", &b));
    write_raw(&warm_dir(&d).join("raw-0000000000000100.parquet"), &rows);

    for round in 0..2 {
        d.spawn();
        let c = d.client();
        assert_eq!(c.get(b"good-a").unwrap().expect("good-a").data(), &a[..]);
        assert_eq!(c.get(b"good-b").unwrap().expect("good-b").data(), &b[..]);
        assert_corrupt(&c, b"claims-40-gb");
        assert_corrupt(&c, b"claims-40-gb");
        assert_eq!(stat(&c, "warm.quarantined_files"), 0, "round {round}");
        c.put(b"after", b"still serving").unwrap();
        if round == 0 {
            for k in [&b"claims-6-mib"[..], b"chunk-gap"] {
                assert_corrupt(&c, k);
                assert_corrupt(&c, k);
            }
            assert_eq!(stat(&c, "warm.damaged_objects"), 3);
            // A damaged key deleted, or stored again, is over: after a restart too.
            c.delete(b"claims-6-mib").unwrap();
            c.put(b"chunk-gap", b"fresh").unwrap();
            assert_eq!(c.get(b"chunk-gap").unwrap().unwrap().data(), b"fresh");
            c.delete(b"chunk-gap").unwrap();
        } else {
            for k in [&b"claims-6-mib"[..], b"chunk-gap"] {
                assert!(c.get(k).unwrap().is_none());
            }
        }
        assert!(c.get(b"claims-6-mib").unwrap().is_none());
        drop(c);
        assert!(d.stop().success());
    }
}

/// Finds where 64 bytes of `needle` lie in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn flipped_bytes_in_one_object_quarantine_that_object_alone() {
    let mut d = Daemon::start(SMALL);
    let c = d.client();
    let key = |i: usize| format!("object-{i:04}").into_bytes();
    let len = |i: usize| (20 << 10) + i * 37;
    for i in 0..300 {
        c.put(&key(i), &content(&key(i), len(i))).unwrap();
    }
    drain(&c);
    drop(c);
    assert!(d.stop().success());
    // The file holding the most objects; flip 64 bytes in the middle of one of its objects
    // (incompressible bytes are stored as they are, so they can be found).
    let window = |i: usize| content(&key(i), len(i))[5000..5064].to_vec();
    let by_prefix: std::collections::HashMap<u64, usize> = (0..300)
        .map(|i| (u64::from_le_bytes(window(i)[..8].try_into().unwrap()), i))
        .collect();
    let mut best: Option<(PathBuf, Vec<(usize, usize)>)> = None;
    for f in files(&d, "raw-") {
        let bytes = std::fs::read(&f).unwrap();
        // One pass over the file: positions whose 8 bytes start some object's window.
        let held: Vec<(usize, usize)> = (0..bytes.len().saturating_sub(64))
            .filter_map(|at| {
                let i =
                    *by_prefix.get(&u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()))?;
                (bytes[at..at + 64] == window(i)[..]).then_some((i, at))
            })
            .collect();
        if best.as_ref().is_none_or(|b| held.len() > b.1.len()) {
            best = Some((f, held));
        }
    }
    let (file, held) = best.expect("a raw file");
    assert!(
        held.len() >= 20,
        "{} objects in the fullest file",
        held.len()
    );
    let (victim, at) = held[held.len() / 2];
    let mut bytes = std::fs::read(&file).unwrap();
    for x in &mut bytes[at..at + 64] {
        *x ^= 0xff;
    }
    std::fs::write(&file, &bytes).unwrap();

    for _ in 0..2 {
        d.spawn();
        let c = d.client();
        for i in 0..300 {
            if i == victim {
                assert_corrupt(&c, &key(i));
                continue;
            }
            let o = c
                .get(&key(i))
                .unwrap()
                .unwrap_or_else(|| panic!("object {i} lost"));
            assert!(o.data() == content(&key(i), len(i)), "object {i} differs");
        }
        assert_corrupt(&c, &key(victim));
        assert_eq!(stat(&c, "warm.quarantined_files"), 0);
        assert_eq!(stat(&c, "warm.damaged_objects"), 1);
        assert!(file.exists(), "the file keeps serving the others");
        drop(c);
        assert!(d.stop().success());
    }
}

/// Rewrites the footer of the Parquet file at `path` with what `f` makes of its metadata (the
/// data pages stay as they are).
fn rewrite_footer(path: &Path, f: impl FnOnce(ParquetMetaData) -> ParquetMetaData) {
    let file = std::fs::File::open(path).unwrap();
    let md = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).unwrap();
    let bytes = std::fs::read(path).unwrap();
    let flen = u32::from_le_bytes(bytes[bytes.len() - 8..bytes.len() - 4].try_into().unwrap());
    let body = &bytes[..bytes.len() - 8 - flen as usize];
    let new = f(md.metadata().as_ref().clone());
    let mut footer = Vec::new();
    ParquetMetaDataWriter::new(&mut footer, &new)
        .with_preserve_page_index_locations(false)
        .finish()
        .unwrap();
    let mut out = body.to_vec();
    out.extend_from_slice(&footer);
    std::fs::write(path, out).unwrap();
}

/// `md` with every row group declaring `rows` rows and the file's key-value metadata changed
/// by `kv`.
fn with_rows(md: ParquetMetaData, rows: i64, kv: impl Fn(&mut KeyValue)) -> ParquetMetaData {
    let fm = md.file_metadata();
    let mut pairs = fm.key_value_metadata().cloned().unwrap_or_default();
    pairs.iter_mut().for_each(kv);
    let groups = md
        .row_groups()
        .iter()
        .map(|g| g.clone().into_builder().set_num_rows(rows).build().unwrap())
        .collect();
    let fm = FileMetaData::new(
        fm.version(),
        rows * md.num_row_groups() as i64,
        fm.created_by().map(str::to_string),
        Some(pairs),
        fm.schema_descr_ptr(),
        fm.column_orders().cloned(),
    );
    ParquetMetaData::new(fm, groups)
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A Thrift `PageHeader` of a dictionary page: `len` bytes (uncompressed, as stored) said to
/// hold `values` PLAIN values.
fn dictionary_page_header(len: i32, values: i32) -> Vec<u8> {
    let zz = |v: i32| ((v << 1) ^ (v >> 31)) as u32 as u64;
    let mut h = vec![0x15, 0x04, 0x15]; // 1: type DICTIONARY_PAGE; 2: uncompressed size
    varint(zz(len), &mut h);
    h.push(0x15); // 3: compressed size
    varint(zz(len), &mut h);
    h.extend([0x4c, 0x15]); // 7: DictionaryPageHeader { 1: num_values
    varint(zz(values), &mut h);
    h.extend([0x15, 0x00, 0x00, 0x00]); // 2: encoding PLAIN } }
    h
}

/// Replaces the dictionary page of column chunk 0/0 of the (uncompressed) file at `path`, whose
/// PLAIN values are `dict`, by one that claims `values` values: the chunk is copied to the end
/// of the data with the new header and the footer points at it.
fn forge_dictionary_count(path: &Path, dict: &[&[u8]], values: i32) {
    let file = std::fs::File::open(path).unwrap();
    let md = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).unwrap();
    let md = md.metadata().as_ref().clone();
    let col = md.row_group(0).column(0).clone();
    let start = col.dictionary_page_offset().expect("a dictionary page") as usize;
    let data_at = col.data_page_offset() as usize;
    let end = start + col.compressed_size() as usize;
    let bytes = std::fs::read(path).unwrap();
    let body: Vec<u8> = dict
        .iter()
        .flat_map(|v| {
            (v.len() as u32)
                .to_le_bytes()
                .into_iter()
                .chain(v.iter().copied())
        })
        .collect();
    assert_eq!(
        &bytes[data_at - body.len()..data_at],
        &body[..],
        "the dictionary as written"
    );
    let flen = u32::from_le_bytes(bytes[bytes.len() - 8..bytes.len() - 4].try_into().unwrap());
    let mut out = bytes[..bytes.len() - 8 - flen as usize].to_vec();
    let at = out.len();
    out.extend(dictionary_page_header(body.len() as i32, values));
    out.extend(&body);
    let new_data_at = out.len();
    out.extend(&bytes[data_at..end]);
    let col = col
        .into_builder()
        .set_dictionary_page_offset(Some(at as i64))
        .set_data_page_offset(new_data_at as i64)
        .set_total_compressed_size((out.len() - at) as i64)
        .set_offset_index_offset(None)
        .set_offset_index_length(None)
        .set_column_index_offset(None)
        .set_column_index_length(None)
        .build()
        .unwrap();
    let mut cols = md.row_group(0).columns().to_vec();
    cols[0] = col;
    let g = md
        .row_group(0)
        .clone()
        .into_builder()
        .set_column_metadata(cols)
        .build()
        .unwrap();
    let mut groups = md.row_groups().to_vec();
    groups[0] = g;
    let new = ParquetMetaData::new(md.file_metadata().clone(), groups);
    let mut footer = Vec::new();
    ParquetMetaDataWriter::new(&mut footer, &new)
        .with_preserve_page_index_locations(false)
        .finish()
        .unwrap();
    // The footer's offsets are absolute: it goes right after the data.
    out.extend(footer);
    std::fs::write(path, out).unwrap();
}

#[test]
fn hostile_table_metadata_and_truncated_files_are_quarantined_and_the_daemon_serves() {
    let mut args = SMALL.to_vec();
    args.extend(["--warm-compression", "none"]);
    let mut d = Daemon::start(&args);
    let c = d.client();
    // A string-view column: its dictionary is decoded into 16-byte views, one per value the
    // dictionary page claims.
    let views = Arc::new(Schema::new(vec![Field::new(
        "s",
        DataType::Utf8View,
        false,
    )]));
    let words: [&[u8]; 3] = [b"alpha", b"beta", b"gamma"];
    let strings = arrow_array::StringViewArray::from_iter_values(
        (0..600).map(|i| std::str::from_utf8(words[i % 3]).unwrap()),
    );
    c.put_arrow(
        b"table-dict",
        &views,
        &[RecordBatch::try_new(views.clone(), vec![Arc::new(strings) as ArrayRef]).unwrap()],
    )
    .unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    let batch = |n: i64| {
        RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef],
        )
        .unwrap()
    };
    c.put_arrow(b"table-rows", &schema, &[batch(4)]).unwrap();
    c.put_arrow(b"table-cut", &schema, &[batch(5000)]).unwrap();
    c.put_arrow(b"table-ok", &schema, &[batch(300)]).unwrap();
    for i in 0..40 {
        let k = format!("filler-{i}");
        c.put(k.as_bytes(), &content(k.as_bytes(), 300 << 10))
            .unwrap();
    }
    drain(&c);
    drop(c);
    assert!(d.stop().success());
    let tables = files(&d, "arrow-");
    assert_eq!(tables.len(), 4);
    // Files are numbered in demotion order, which follows the puts here only loosely: find each
    // by its key (hex in the footer).
    let by_key = |k: &[u8]| {
        let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
        tables
            .iter()
            .find(|p| {
                let bytes = std::fs::read(p).unwrap();
                find(&bytes, hex.as_bytes()).is_some()
            })
            .unwrap()
            .clone()
    };
    // Three billion rows declared for a table of four (and its batch list agreeing).
    rewrite_footer(&by_key(b"table-rows"), |md| {
        with_rows(md, 3_000_000_000, |kv| {
            if kv.key == "cidcache.batch_rows" {
                kv.value = Some("3000000000".into());
            }
        })
    });
    // A dictionary of three values that claims 2^31 - 1.
    forge_dictionary_count(&by_key(b"table-dict"), &words, i32::MAX);
    // Half a file.
    let cut = by_key(b"table-cut");
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();

    for round in 0..2 {
        d.spawn();
        let c = d.client();
        for k in [&b"table-rows"[..], b"table-cut", b"table-dict"] {
            match c.get(k) {
                Ok(None) | Err(Error::Corrupt(_)) => {}
                other => panic!(
                    "{}: {:?}",
                    String::from_utf8_lossy(k),
                    other.map(|o| o.is_some())
                ),
            }
        }
        if round == 0 {
            // Found at its read (its footer is sound): its get answers Corrupt.
            assert_corrupt(&c, b"table-dict");
        }
        let t = c.get_arrow(b"table-ok").unwrap().expect("table-ok");
        assert_eq!(t.batches[0], batch(300));
        // Quarantined at the first start; gone from the tier at the second.
        let quarantined = if round == 0 { 3 } else { 0 };
        assert_eq!(stat(&c, "warm.quarantined_files"), quarantined);
        assert_eq!(
            std::fs::read_dir(warm_dir(&d).join("quarantine"))
                .unwrap()
                .count(),
            3
        );
        c.put(b"after", b"still serving").unwrap();
        drop(c);
        assert!(d.stop().success());
    }
}

/// Writes a valid, empty Parquet file whose schema nests `depth` groups (on a thread with a
/// stack large enough for the writer's recursion).
fn deep_schema_file(path: &Path, depth: usize) {
    let path = path.to_path_buf();
    std::thread::Builder::new()
        .stack_size(1 << 30)
        .spawn(move || {
            use parquet::basic::{Repetition, Type as Physical};
            use parquet::schema::types::Type;
            let mut t = Type::primitive_type_builder("leaf", Physical::INT32)
                .with_repetition(Repetition::OPTIONAL)
                .build()
                .unwrap();
            for _ in 0..depth {
                t = Type::group_type_builder("g")
                    .with_repetition(Repetition::REQUIRED)
                    .with_fields(vec![Arc::new(t)])
                    .build()
                    .unwrap();
            }
            let root = Type::group_type_builder("schema")
                .with_fields(vec![Arc::new(t)])
                .build()
                .unwrap();
            let f = std::fs::File::create(&path).unwrap();
            parquet::file::writer::SerializedFileWriter::new(f, Arc::new(root), Default::default())
                .unwrap()
                .close()
                .unwrap();
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn deeply_nested_footers_in_catalog_and_warm_files_are_quarantined_at_start() {
    let mut d = Daemon::start(SMALL);
    let c = d.client();
    for i in 0..40 {
        let k = format!("kept-{i}");
        c.put(k.as_bytes(), &content(k.as_bytes(), 300 << 10))
            .unwrap();
    }
    drain(&c);
    drop(c);
    assert!(d.stop().success());
    // A schema 200,000 groups deep: the decoder's recursion would overflow the stack.
    let part = d.dir.path().join("data/catalog/part=all");
    std::fs::create_dir_all(&part).unwrap();
    deep_schema_file(&part.join("delta-00000000000fff00.parquet"), 200_000);
    deep_schema_file(&warm_dir(&d).join("raw-00000000000fff00.parquet"), 200_000);
    for round in 0..2 {
        d.spawn();
        let c = d.client();
        assert_eq!(
            stat(&c, "warm.quarantined_files"),
            if round == 0 { 1 } else { 0 }
        );
        assert!(d
            .dir
            .path()
            .join("data/catalog/quarantine/part=all__delta-00000000000fff00.parquet")
            .exists());
        for i in 0..40 {
            let k = format!("kept-{i}");
            let o = c.get(k.as_bytes()).unwrap().expect("kept");
            assert!(o.data() == content(k.as_bytes(), 300 << 10));
        }
        let out = c
            .catalog_query(
                &["size_bytes>1000"],
                Some("cid"),
                None,
                cidcache::tier::catalog::OutputFormat::Table,
            )
            .unwrap();
        // The catalog loaded (its other files) and answers.
        assert!(!out.is_empty());
        drop(c);
        assert!(d.stop().success());
    }
}
