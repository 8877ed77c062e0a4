//! criterion micro-benchmarks of the hot path's parts, in-process and without a daemon:
//! index lookup (hit and miss), pin + unpin in a lease page, arena allocation + free, and the
//! in-place (zero-copy, `require_alignment = true`) decode of an Arrow IPC file.
//!
//! `cargo bench --bench micro` (release); `cargo bench --profile dev --bench micro -- --quick`
//! for a smoke run. Timings are reported, never asserted.

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_buffer::Buffer;
use arrow_schema::{DataType, Field, Schema};
use cidcache::arena::Arena;
use cidcache::index::{Entry, IndexRef, IndexWriter};
use cidcache::pins::{lease_bytes, pin_word, Lease};
use cidcache::Key;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use std::hint::black_box;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

fn index(c: &mut Criterion) {
    let slots = cidcache::bench_support::empty_slots(1 << 16);
    let max_probe = AtomicU64::new(0);
    let r = IndexRef::new(&slots, &max_probe);
    let mut w = IndexWriter::new(r, (1 << 16) - (1 << 13));
    let keys: Vec<Key> = (0..40_000u32)
        .map(|i| Key::new(format!("bafkrei-micro-{i:08}").as_bytes()).unwrap())
        .collect();
    for (i, k) in keys.iter().enumerate() {
        let e = Entry {
            seg: 1,
            offset: i as u64 * 64,
            data_len: 64,
            meta_len: 0,
            flags: 0,
            object_id: i as u64,
        };
        w.insert(k, e).unwrap();
    }
    let hashes: Vec<u64> = keys.iter().map(|k| k.hash()).collect();
    let mut g = c.benchmark_group("index");
    let mut i = 0usize;
    g.bench_function("lookup hit (61% load)", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            black_box(r.lookup(&keys[i], hashes[i]))
        })
    });
    let absent = Key::new(b"bafkrei-micro-absent").unwrap();
    let ah = absent.hash();
    g.bench_function("lookup miss (61% load)", |b| {
        b.iter(|| black_box(r.lookup(black_box(&absent), ah)))
    });
    g.finish();
}

fn pins(c: &mut Criterion) {
    let words: Vec<AtomicU64> = (0..lease_bytes(4096, 1024) / 8)
        .map(|_| AtomicU64::new(0))
        .collect();
    let lease = Lease::init(&words, 1, 4096, 1024);
    // A realistic page: some pins already held.
    for s in 0..64u32 {
        lease.pin(pin_word(s, 2), s as usize).unwrap();
    }
    let mut g = c.benchmark_group("pins");
    let mut s = 100u32;
    g.bench_function("pin + unpin", |b| {
        b.iter(|| {
            s = s.wrapping_add(1) | 1 << 20;
            let i = lease.pin(pin_word(s, 4), s as usize).unwrap();
            lease.unpin(black_box(i));
        })
    });
    g.finish();
}

fn arena(c: &mut Criterion) {
    let mut g = c.benchmark_group("arena");
    g.bench_function("alloc + free 4 KiB (fragmented 256 MiB arena)", |b| {
        let mut a = Arena::new(256 << 20);
        // Fragment it: allocate 8,192 objects of mixed sizes, free every other one.
        let live: Vec<(u64, u64)> = (0..8192u64)
            .map(|i| {
                let len = 64 + (i % 17) * 960;
                (a.alloc(len).unwrap(), len)
            })
            .collect();
        for &(off, len) in live.iter().step_by(2) {
            a.free(off, len);
        }
        b.iter(|| {
            let off = a.alloc(black_box(4096)).unwrap();
            a.free(off, 4096);
        })
    });
    g.bench_function("alloc 64 B .. 1 MiB until full, then reset", |b| {
        b.iter_batched_ref(
            || Arena::new(64 << 20),
            |a| {
                let mut n = 0u64;
                let mut i = 0u64;
                while let Some(off) = a.alloc(64 << (i % 15)) {
                    n = n.wrapping_add(off);
                    i += 1;
                }
                black_box(n)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn ipc(c: &mut Criterion) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("cid", DataType::Utf8, false),
    ]));
    let rows = 100_000i64;
    let batches: Vec<RecordBatch> = (0..4)
        .map(|b| {
            let ids = Int64Array::from_iter_values((0..rows / 4).map(|i| i + b * rows / 4));
            let cids = StringArray::from_iter_values((0..rows / 4).map(|i| format!("bafk{i:012}")));
            RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(cids)]).unwrap()
        })
        .collect();
    let bytes = cidcache::arrow::encode_ipc_file(&schema, &batches).unwrap();
    // 64-byte aligned, like an object in a data segment.
    let buf = Buffer::from_vec(bytes.clone());
    let buf = if buf.as_ptr().align_offset(64) == 0 {
        buf
    } else {
        let mut v = arrow_buffer::MutableBuffer::with_capacity(bytes.len());
        v.extend_from_slice(&bytes);
        v.into()
    };
    let mut g = c.benchmark_group("arrow");
    g.bench_function("decode IPC file in place (4 batches, 100k rows)", |b| {
        b.iter(|| black_box(cidcache::arrow::decode_ipc_file(black_box(&buf)).unwrap()))
    });
    g.finish();
}

criterion_group!(micro, index, pins, arena, ipc);
criterion_main!(micro);
