//! The cold tier on object storage (`--cold URL`): real daemons, a real bucket (a local
//! directory through `object_store`'s file backend, and a real MinIO server when
//! `CIDCACHE_MINIO` names its binary, see `scripts/minio.sh`).

mod common;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use cidcache::{Client, Code};
use common::{eventually, Daemon};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const SMALL: &[&str] = &["-m", "8M", "--arena-size", "2M"];
const LONG: Duration = Duration::from_secs(180);

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

fn key(i: usize) -> Vec<u8> {
    format!("cold-object-{i:05}").into_bytes()
}

fn fill(c: &Client, n: usize, len: usize) {
    for i in 0..n {
        let k = key(i);
        c.put(&k, &content(&k, len + i % 7)).unwrap();
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
    }
}

fn table() -> (Arc<Schema>, Vec<RecordBatch>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("x", DataType::Float64, true),
    ]));
    let batch = |start: i64, n: i64| {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(start..start + n)) as ArrayRef,
                Arc::new(StringArray::from_iter_values(
                    (start..start + n).map(|i| format!("row {i}")),
                )),
                Arc::new(Float64Array::from_iter_values(
                    (start..start + n).map(|i| i as f64 * 0.25),
                )),
            ],
        )
        .unwrap()
    };
    let batches = vec![batch(0, 2000), batch(2000, 3000)];
    (schema, batches)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parquet files of the bucket (root and partition directories, not quarantine).
fn bucket_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() && p.file_name().is_some_and(|n| n != "quarantine") {
            out.extend(bucket_files(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn cold_args(url: &str) -> Vec<String> {
    let mut a: Vec<String> = SMALL.iter().map(|s| s.to_string()).collect();
    // Every warm file moves as soon as it is written.
    a.extend(["--cold", url, "--cold-min-size", "0"].map(String::from));
    a
}

fn start(args: &[String]) -> Daemon {
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    Daemon::start(&a)
}

fn file_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

#[test]
fn objects_move_to_the_bucket_and_promote_back() {
    let bucket = tempfile::tempdir().unwrap();
    let d = start(&cold_args(&file_url(bucket.path())));
    let c = d.client();
    let (schema, batches) = table();
    c.put_arrow(b"cold-table", &schema, &batches).unwrap();
    fill(&c, 40, 300 << 10);
    assert!(
        eventually(LONG, || stat(&c, "warm.cold_moved_files") > 0
            && stat(&c, "warm.files") == 0),
        "the warm files never moved to the bucket"
    );
    let files = bucket_files(bucket.path());
    let arrow = bucket
        .path()
        .join(format!("arrow-{}.parquet", hex(b"cold-table")));
    assert!(
        files.contains(&arrow),
        "the table has its own file: {files:?}"
    );
    assert!(files.len() > 20, "one file per object: {}", files.len());

    let before = stat(&c, "cold.fetches");
    check_all(&c, 40, 300 << 10);
    let t = c.get_arrow(b"cold-table").unwrap().expect("table promoted");
    assert_eq!(t.schema, schema);
    assert_eq!(t.batches, batches);
    assert!(
        stat(&c, "cold.fetches") > before,
        "nothing came from the bucket"
    );
    assert!(stat(&c, "warm.cold_promotions") > 0);
    // A key no tier holds is still a plain miss.
    assert!(c.get(b"never-stored").unwrap().is_none());

    // Deleting removes the bucket's copy too: it does not come back.
    c.delete(&key(3)).unwrap();
    assert!(c.get(&key(3)).unwrap().is_none());
    assert!(!bucket_files(bucket.path())
        .iter()
        .any(|p| p.to_string_lossy().contains(&hex(&key(3)))));
}

#[test]
fn two_daemons_read_what_the_other_moved() {
    let bucket = tempfile::tempdir().unwrap();
    let url = file_url(bucket.path());
    let a = start(&cold_args(&url));
    let ca = a.client();
    let (schema, batches) = table();
    ca.put_arrow(b"shared-table", &schema, &batches).unwrap();
    fill(&ca, 40, 300 << 10);
    assert!(
        eventually(LONG, || stat(&ca, "warm.files") == 0
            && stat(&ca, "warm.cold_moved_files") > 0),
        "daemon A never moved its files"
    );
    // B has its own data directory and shared memory, and the same bucket.
    let b = start(&cold_args(&url));
    let cb = b.client();
    let t = cb
        .get_arrow(b"shared-table")
        .unwrap()
        .expect("B reads A's table");
    assert_eq!(t.batches, batches);
    let moved: Vec<usize> = (0..40)
        .filter(|i| {
            bucket_files(bucket.path())
                .iter()
                .any(|p| p.to_string_lossy().contains(&hex(&key(*i))))
        })
        .collect();
    assert!(!moved.is_empty());
    for i in moved {
        let k = key(i);
        let o = cb.get(&k).unwrap().expect("B reads A's object");
        assert!(o.data() == content(&k, (300 << 10) + i % 7));
    }
    assert!(stat(&cb, "cold.fetches") > 0);
}

#[test]
fn a_damaged_bucket_object_is_quarantined() {
    let bucket = tempfile::tempdir().unwrap();
    // A real table file, cut short, and one that is not Parquet at all.
    let src = tempfile::tempdir().unwrap();
    {
        let d = start(&cold_args(&file_url(src.path())));
        let c = d.client();
        let (schema, batches) = table();
        c.put_arrow(b"cut", &schema, &batches).unwrap();
        fill(&c, 40, 300 << 10);
        let f = src.path().join(format!("arrow-{}.parquet", hex(b"cut")));
        assert!(eventually(LONG, || f.exists()), "the table never moved");
    }
    let good = std::fs::read(src.path().join(format!("arrow-{}.parquet", hex(b"cut")))).unwrap();
    let cut = bucket.path().join(format!("arrow-{}.parquet", hex(b"cut")));
    std::fs::write(&cut, &good[..good.len() - 200]).unwrap();
    let junk = bucket.path().join(format!("raw-{}.parquet", hex(b"junk")));
    std::fs::write(&junk, b"PAR1 this is not a parquet file PAR1").unwrap();

    let d = start(&cold_args(&file_url(bucket.path())));
    let c = d.client();
    for (k, f) in [(&b"cut"[..], &cut), (&b"junk"[..], &junk)] {
        let e = c.get(k).expect_err("a damaged object is an error");
        assert_eq!(e.code(), Code::Corrupt, "{e}");
        assert!(e.to_string().contains("quarantined"), "{e}");
        assert!(!f.exists(), "the damaged file left the bucket");
        assert!(bucket
            .path()
            .join("quarantine")
            .join(f.file_name().unwrap())
            .exists());
        // Asked again: the same answer, no second fetch.
        assert_eq!(c.get(k).unwrap_err().code(), Code::Corrupt);
    }
    assert_eq!(stat(&c, "cold.quarantined"), 2);
    // The daemon keeps serving.
    c.put(b"after", b"fine").unwrap();
    assert_eq!(c.get(b"after").unwrap().unwrap().data(), b"fine");
}

#[test]
fn a_bucket_that_is_down_keeps_the_warm_copy() {
    let root = tempfile::tempdir().unwrap();
    let bucket = root.path().join("bucket");
    let d = start(&cold_args(&file_url(&bucket)));
    let c = d.client();
    // The bucket goes away: its path becomes a plain file, so every upload fails.
    std::fs::remove_dir_all(&bucket).unwrap();
    std::fs::write(&bucket, b"not a directory").unwrap();
    fill(&c, 40, 300 << 10);
    assert!(
        eventually(LONG, || stat(&c, "cold.upload_errors") > 0),
        "no upload failed"
    );
    assert!(stat(&c, "warm.files") > 0, "the warm copies stay");
    assert_eq!(stat(&c, "warm.cold_moved_files"), 0);
    check_all(&c, 40, 300 << 10);
    // It comes back: the files move.
    std::fs::remove_file(&bucket).unwrap();
    std::fs::create_dir(&bucket).unwrap();
    assert!(
        eventually(LONG, || stat(&c, "warm.cold_moved_files") > 0),
        "nothing moved once the bucket was back"
    );
}
