//! Bounded fuzz runs of every decoder of untrusted input (`cidcache::fuzzing`), with fixed
//! seeds, a few seconds each: part of the test command. Longer, coverage-guided runs use the
//! same targets through `fuzz/` (cargo-fuzz); see docs/operations.md.
//!
//! `CIDCACHE_FUZZ_SECS` (default 3) sets the time per target; `CIDCACHE_FUZZ_SEED` the seed.

use cidcache::fuzzing::{self, drive};
use std::time::Duration;

fn budget() -> Duration {
    let secs = std::env::var("CIDCACHE_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs)
}

fn seed() -> u64 {
    std::env::var("CIDCACHE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_c1dc_ac4e)
}

#[test]
fn fuzz_native_frames() {
    use cidcache::key::Key;
    use cidcache::proto::{PutItem, Request};
    let key = Key::new(b"some-key").unwrap();
    let item = PutItem {
        key,
        flags: 1,
        meta: b"meta",
        data: b"data bytes",
    };
    let reqs = [
        Request::Hello {
            version: 1,
            pid: 7,
            writer: true,
        },
        Request::Create {
            key,
            data_len: 4096,
            meta_len: 8,
            flags: 0,
        },
        Request::Put(item.clone()),
        Request::PutMany(vec![item.clone(), item]),
        Request::Get {
            key,
            timeout_ms: -1,
        },
        Request::GetMany {
            keys: vec![key, key],
            timeout_ms: 5,
        },
        Request::List {
            cursor: 0,
            limit: 100,
        },
        Request::Stats,
    ];
    let seeds: Vec<Vec<u8>> = reqs.iter().map(|r| r.encode(1)).collect();
    let n = drive(
        "native_frame",
        &seeds,
        seed(),
        budget(),
        u64::MAX,
        1 << 16,
        fuzzing::native_frame,
    );
    eprintln!("native_frame: {n} inputs");
    assert!(n > seeds.len() as u64);
}

#[test]
fn fuzz_plasma_messages() {
    use cidcache::plasma::codec::Request;
    let id = [7u8; 20];
    let reqs = [
        Request::Connect,
        Request::Create {
            object_id: id,
            evict_if_full: true,
            data_size: 1 << 20,
            metadata_size: 16,
            device_num: 0,
        },
        Request::CreateAndSeal {
            object_id: id,
            evict_if_full: false,
            data: b"data",
            metadata: b"m",
            digest: [1; 8],
        },
        Request::CreateAndSealBatch {
            object_ids: vec![id, [8; 20]],
            evict_if_full: false,
            data: vec![b"a", b"bb"],
            metadata: vec![b"", b"m"],
            digests: vec![[0; 8], [2; 8]],
        },
        Request::Get {
            object_ids: vec![id, [9; 20]],
            timeout_ms: 100,
        },
        Request::Delete {
            object_ids: vec![id],
        },
        Request::SetOptions {
            client_name: b"client",
            output_memory_quota: -1,
        },
        Request::RefreshLru {
            object_ids: vec![id],
        },
    ];
    let seeds: Vec<Vec<u8>> = reqs.iter().map(|r| r.encode_frame()).collect();
    let n = drive(
        "plasma_message",
        &seeds,
        seed(),
        budget(),
        u64::MAX,
        1 << 16,
        fuzzing::plasma_message,
    );
    eprintln!("plasma_message: {n} inputs");
    assert!(n > seeds.len() as u64);
}

#[test]
fn fuzz_lease_pages() {
    use cidcache::pins::{lease_bytes, pin_word, Lease};
    use std::sync::atomic::AtomicU64;
    // A correct page of the shape the target reads (client 7, 16 pins, 8 hits), with pins and
    // hits recorded, then one with the head far ahead.
    let words: Vec<AtomicU64> = (0..lease_bytes(16, 8) / 8)
        .map(|_| AtomicU64::new(0))
        .collect();
    let l = Lease::init(&words, 7, 16, 8);
    l.pin(pin_word(3, 9), 0).unwrap();
    l.pin(pin_word(63, 1 << 40), 5).unwrap();
    for id in 1..12 {
        l.record_hit(id);
    }
    let page = |w: &[AtomicU64]| -> Vec<u8> {
        w.iter()
            .take(8 + 16 + 8)
            .flat_map(|x| x.load(std::sync::atomic::Ordering::Relaxed).to_le_bytes())
            .collect()
    };
    let mut seeds = vec![page(&words)];
    words[4].store(u64::MAX - 2, std::sync::atomic::Ordering::Relaxed);
    seeds.push(page(&words));
    let n = drive(
        "lease_page",
        &seeds,
        seed(),
        budget(),
        u64::MAX,
        4096,
        fuzzing::lease_page,
    );
    eprintln!("lease_page: {n} inputs");
    assert!(n > seeds.len() as u64);
}

#[test]
fn fuzz_warm_raw_files() {
    let (raws, _) = fuzzing::warm_file_seeds();
    let max = raws.iter().map(|r| r.len()).max().unwrap_or(0) * 2;
    let n = drive(
        "warm_raw_file",
        &raws,
        seed(),
        budget(),
        u64::MAX,
        max,
        fuzzing::warm_raw_file,
    );
    fuzzing::remove_scratch();
    eprintln!("warm_raw_file: {n} inputs");
    assert!(n > raws.len() as u64);
}

#[test]
fn fuzz_warm_table_files() {
    let (_, tables) = fuzzing::warm_file_seeds();
    let max = tables.iter().map(|r| r.len()).max().unwrap_or(0) * 2;
    let n = drive(
        "warm_table_file",
        &tables,
        seed(),
        budget(),
        u64::MAX,
        max,
        fuzzing::warm_table_file,
    );
    fuzzing::remove_scratch();
    eprintln!("warm_table_file: {n} inputs");
    assert!(n > tables.len() as u64);
}

#[test]
fn fuzz_catalog_files() {
    use cidcache::key::Key;
    use cidcache::tier::catalog::{Catalog, CatalogEntry, CatalogOptions};
    // Files written by the catalog itself: a delta of entries with every optional field, and a
    // delta of tombstones.
    let dir = tempfile::tempdir().unwrap();
    let (mut c, _) = Catalog::open(dir.path(), CatalogOptions::default()).unwrap();
    for i in 0..20u64 {
        let mut e = CatalogEntry::new(Key::new(format!("k{i}").as_bytes()).unwrap(), i * 100, 5);
        e.mimetype = Some("image/png".into());
        e.filename = (i % 2 == 0).then(|| format!("f{i}.png"));
        e.properties = vec![("a".into(), "b".into())];
        c.upsert(e);
    }
    c.checkpoint().unwrap();
    for i in 0..5u64 {
        c.remove(&Key::new(format!("k{i}").as_bytes()).unwrap());
    }
    c.checkpoint().unwrap();
    let mut seeds = Vec::new();
    for e in walkdir(dir.path()) {
        if e.extension().is_some_and(|x| x == "parquet") {
            seeds.push(std::fs::read(&e).unwrap());
        }
    }
    assert!(seeds.len() >= 2, "{} catalog files", seeds.len());
    let max = seeds.iter().map(|r| r.len()).max().unwrap_or(0) * 2;
    let n = drive(
        "catalog_file",
        &seeds,
        seed(),
        budget(),
        u64::MAX,
        max,
        fuzzing::catalog_file,
    );
    fuzzing::remove_scratch();
    eprintln!("catalog_file: {n} inputs");
    assert!(n > seeds.len() as u64);
}

fn walkdir(d: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A few small tables of different layouts (primitives with nulls, strings, a dictionary, a
/// list, a struct, several batches) encoded as Arrow IPC files.
fn arrow_seeds() -> Vec<Vec<u8>> {
    use arrow_array::builder::{ListBuilder, StringDictionaryBuilder};
    use arrow_array::types::Int32Type;
    use arrow_array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, StructArray};
    use arrow_schema::{DataType, Field, Fields};
    use std::sync::Arc;
    let ints: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(3), Some(4)]));
    let strs: ArrayRef = Arc::new(StringArray::from(vec![
        Some("a"),
        Some("bcd"),
        None,
        Some("é"),
    ]));
    let mut dict = StringDictionaryBuilder::<Int32Type>::new();
    for v in ["x", "y", "x", "z"] {
        dict.append_value(v);
    }
    let dict: ArrayRef = Arc::new(dict.finish());
    let mut list = ListBuilder::new(arrow_array::builder::Int32Builder::new());
    for n in 0..4 {
        for i in 0..n {
            list.values().append_value(i);
        }
        list.append(n != 2);
    }
    let list: ArrayRef = Arc::new(list.finish());
    let st: ArrayRef = Arc::new(StructArray::new(
        Fields::from(vec![Field::new("a", DataType::Int32, false)]),
        vec![Arc::new(Int32Array::from(vec![1, 2, 3, 4])) as ArrayRef],
        None,
    ));
    let one = |cols: Vec<(&str, ArrayRef)>| {
        let b = RecordBatch::try_from_iter(cols).unwrap();
        let parts = [b.slice(0, 2), b.slice(2, 2)];
        cidcache::arrow::encode_ipc_file(&b.schema(), &parts).unwrap()
    };
    vec![
        one(vec![("i", ints.clone()), ("s", strs.clone())]),
        one(vec![("d", dict), ("s", strs)]),
        one(vec![("l", list), ("st", st), ("i", ints)]),
    ]
}

#[test]
fn fuzz_arrow_ipc_files() {
    let seeds = arrow_seeds();
    let n = drive(
        "arrow_ipc_file",
        &seeds,
        seed(),
        budget(),
        u64::MAX,
        1 << 16,
        fuzzing::arrow_ipc_file,
    );
    eprintln!("arrow_ipc_file: {n} inputs");
    assert!(n > seeds.len() as u64);
}

#[test]
fn fuzz_ipfs_cars() {
    let (cars, _) = fuzzing::ipfs_seeds();
    let n = drive(
        "ipfs_car",
        &cars,
        seed(),
        budget(),
        u64::MAX,
        2 << 20,
        fuzzing::ipfs_car,
    );
    eprintln!("ipfs_car: {n} inputs");
    assert!(n > cars.len() as u64);
}

#[test]
fn fuzz_unixfs_nodes() {
    let (_, nodes) = fuzzing::ipfs_seeds();
    let n = drive(
        "unixfs_node",
        &nodes,
        seed(),
        budget(),
        u64::MAX,
        1 << 16,
        fuzzing::unixfs_node,
    );
    eprintln!("unixfs_node: {n} inputs");
    assert!(n > nodes.len() as u64);
}
