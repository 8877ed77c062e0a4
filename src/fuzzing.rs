//! Fuzz targets for every decoder of untrusted input, and the small deterministic mutation
//! driver that runs them in the test suite.
//!
//! A target takes arbitrary bytes and must return: no panic, no hang, no allocation beyond a
//! fixed bound, whatever the bytes say. The same functions run in two places:
//! * `tests/fuzz.rs`: a few seconds each, fixed seed, stable Rust (part of the test command);
//! * `fuzz/` (cargo-fuzz, libFuzzer, nightly): long coverage-guided runs, see
//!   `docs/operations.md`.
//!
//! Not a stable API.

/// A deterministic mutator: xorshift64* seeded by the caller, so a failing input is reproduced
/// by its seed and iteration number.
pub struct Mutator {
    state: u64,
}

impl Mutator {
    /// A mutator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Mutator {
        Mutator { state: seed | 1 }
    }

    /// The next pseudo-random word.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Mutates `buf` in place with 1..=4 of: bit flips, byte sets to boundary values, 8-byte
    /// little-endian boundary integers (lengths, offsets, counts), truncation, duplication of a
    /// span, insertion of random bytes. Lengths stay below `max_len`.
    pub fn mutate(&mut self, buf: &mut Vec<u8>, max_len: usize) {
        const WORDS: [u64; 8] = [
            0,
            1,
            0x7f,
            0xffff_ffff,
            0x8000_0000,
            u64::MAX,
            i64::MAX as u64,
            40 << 30,
        ];
        for _ in 0..1 + self.below(4) {
            let len = buf.len();
            match self.below(7) {
                0 if len > 0 => {
                    let i = self.below(len);
                    buf[i] ^= 1 << self.below(8);
                }
                1 if len > 0 => {
                    let i = self.below(len);
                    buf[i] = [0u8, 0xff, 0x7f, 0x80, 1][self.below(5)];
                }
                2 if len >= 8 => {
                    let i = self.below(len - 7);
                    let w = WORDS[self.below(WORDS.len())];
                    let n = [1usize, 2, 4, 8][self.below(4)];
                    buf[i..i + n].copy_from_slice(&w.to_le_bytes()[..n]);
                }
                3 if len > 0 => buf.truncate(self.below(len)),
                4 if len > 1 && len < max_len => {
                    let a = self.below(len);
                    let b = (a + 1 + self.below(64)).min(len);
                    let at = self.below(len);
                    let span: Vec<u8> = buf[a..b].to_vec();
                    let room = max_len - len;
                    buf.splice(at..at, span.into_iter().take(room));
                }
                _ if len < max_len => {
                    let at = self.below(len + 1);
                    let n = (1 + self.below(16)).min(max_len - len);
                    let bytes: Vec<u8> = (0..n).map(|_| self.next_u64() as u8).collect();
                    buf.splice(at..at, bytes);
                }
                _ => {}
            }
        }
    }
}

/// Runs `target` on every seed input and then on mutations of them until `budget` has passed
/// or `max_iters` inputs were tried. Returns the number of inputs run. A panic in the target
/// propagates with the seed and iteration in the message of the panic hook's output (printed
/// before it), so it can be reproduced.
pub fn drive(
    name: &str,
    seeds: &[Vec<u8>],
    seed: u64,
    budget: std::time::Duration,
    max_iters: u64,
    max_len: usize,
    mut target: impl FnMut(&[u8]),
) -> u64 {
    let start = std::time::Instant::now();
    let mut m = Mutator::new(seed);
    for s in seeds {
        target(s);
    }
    let mut n = seeds.len() as u64;
    if seeds.is_empty() {
        return n;
    }
    let mut buf = Vec::new();
    while n < max_iters && start.elapsed() < budget {
        buf.clear();
        buf.extend_from_slice(&seeds[m.below(seeds.len())]);
        // Stack a few rounds so mutations compound.
        for _ in 0..1 + m.below(3) {
            m.mutate(&mut buf, max_len);
        }
        if std::env::var_os("CIDCACHE_FUZZ_TRACE").is_some() {
            eprintln!("{name}: seed {seed} input {n}: {} bytes", buf.len());
        }
        target(&buf);
        n += 1;
    }
    n
}

/// Native protocol: a frame (16-byte header, then body) decoded as a request and as a
/// response, as the coordinator and the client would.
pub fn native_frame(data: &[u8]) {
    use crate::proto::{Header, Request, Response, HEADER_LEN};
    if data.len() < HEADER_LEN {
        return;
    }
    let (h, body) = data.split_at(HEADER_LEN);
    let Ok(h) = Header::parse(h.try_into().expect("16 bytes")) else {
        return;
    };
    let _ = Request::decode(h.msg_type, body);
    let _ = Response::decode(h.msg_type, body);
}

/// Plasma protocol: a frame (24-byte header, then a FlatBuffers body) decoded as a request, a
/// reply and a notification.
pub fn plasma_message(data: &[u8]) {
    use crate::plasma::codec::{self, HEADER_LEN};
    if data.len() < HEADER_LEN {
        return;
    }
    let (h, body) = data.split_at(HEADER_LEN);
    // As the server reads it: the bound depends on the message type the header declares.
    let Ok(h) = codec::decode_request_header(h.try_into().expect("24 bytes"), 1 << 20) else {
        return;
    };
    let _ = codec::decode_request(h.msg_type, body);
    let _ = codec::decode_reply(h.msg_type, body);
    let _ = codec::decode_notification(body);
    let _ = codec::decode_create_reply_ipc_handle(body);
}

/// Lease pages: the coordinator's reading of a page its client wrote. `data` is the page (words
/// little-endian, zeros past its end; the last 8 bytes, when present, also give the harvest's
/// `seen` mark). The page was created with 16 pins and 8 hit words for client 7 of an index of
/// 64 slots; whatever the client wrote, the coordinator's checks and reads must not panic, must
/// read at most P pins and H hits, and must pass only pins that name a slot.
pub fn lease_page(data: &[u8]) {
    use crate::pins::{lease_bytes, Lease};
    use crate::sync::AtomicU64;
    const P: usize = 16;
    const H: usize = 8;
    const SLOTS: u32 = 64;
    let word = |i: usize| -> u64 {
        let mut b = [0u8; 8];
        for (k, x) in b.iter_mut().enumerate() {
            *x = data.get(i * 8 + k).copied().unwrap_or(0);
        }
        u64::from_le_bytes(b)
    };
    let words: Vec<AtomicU64> = (0..lease_bytes(P, H) / 8)
        .map(|i| AtomicU64::new(word(i)))
        .collect();
    let lease = Lease::with_sizes(&words, P, H).expect("sized by the coordinator");
    let _ = lease.check_header(7);
    let mut pins = Vec::new();
    match lease.collect_pins_checked(SLOTS, &mut pins) {
        Ok(()) => assert!(pins.iter().all(|w| (1..=SLOTS as u64).contains(&(w >> 32)))),
        Err(f) => assert!(!f.to_string().is_empty()),
    }
    assert!(pins.len() <= P);
    assert!(lease.pinned() <= P);
    let tail = data.len().saturating_sub(8);
    let mut seen = data
        .get(tail..)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0);
    let mut hits = 0;
    lease.drain_hits(&mut seen, |_| hits += 1);
    assert!(hits <= H);
    // The client's own view (sizes from the header) never panics on a bad header either.
    if let Some(l) = Lease::new(&words) {
        assert!(l.capacity() < words.len());
    }
}

/// The object limit the file targets read under (a 64 MiB hot tier).
const FUZZ_MAX_OBJECT: u64 = 64 << 20;

/// This thread's scratch directory for the file targets.
fn scratch_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "cidcache-fuzz-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ))
}

/// A scratch path of this process and thread holding `data` (file readers take paths).
fn scratch(name: &str, data: &[u8]) -> std::path::PathBuf {
    let p = scratch_dir().join(name);
    if let Some(d) = p.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    std::fs::write(&p, data).expect("write a scratch file");
    p
}

/// Removes what the file targets wrote for this thread.
pub fn remove_scratch() {
    let _ = std::fs::remove_dir_all(scratch_dir());
}

/// Warm-tier raw files: `data` is a whole file. It is listed (as at start), every object it
/// lists is read (as a promotion), and it is read whole (as a compaction): errors are fine,
/// panics, aborts and unbounded work are not.
pub fn warm_raw_file(data: &[u8]) {
    use crate::tier::warm::raw;
    let path = scratch("raw-0000000000000001.parquet", data);
    if let Ok(listed) = raw::scan(&path, FUZZ_MAX_OBJECT) {
        if let Ok(md) = raw::metadata(&path, FUZZ_MAX_OBJECT) {
            for e in listed.entries.iter().take(64) {
                if let Ok((d, m)) = raw::read(&path, &md, e.loc, e.data_len) {
                    assert_eq!(d.len() as u64, e.data_len);
                    assert!(m.len() as u64 <= FUZZ_MAX_OBJECT);
                }
            }
        }
    }
    let _ = raw::read_all(&path, FUZZ_MAX_OBJECT);
}

/// Warm-tier Arrow-table files: `data` is a whole file, read as at start (footer only), as a
/// promotion (every batch) and as a scan (a projection and a filter).
pub fn warm_table_file(data: &[u8]) {
    use crate::tier::warm::table;
    let path = scratch("arrow-0000000000000001.parquet", data);
    let _ = table::info(&path, FUZZ_MAX_OBJECT);
    if let Ok((schema, batches, info)) = table::read(&path, 2, FUZZ_MAX_OBJECT) {
        assert!(info.ipc_len <= FUZZ_MAX_OBJECT);
        assert!(batches
            .iter()
            .all(|b| b.schema().fields() == schema.fields()));
    }
    if let Ok(s) = crate::scan::Scan::default().columns(&["v"]).filter("v>=3") {
        let _ = table::scan(&path, &s, FUZZ_MAX_OBJECT);
    }
}

/// Catalog files: `data` is a whole file, read as recovery reads it and scanned as a persisted
/// query scans it.
pub fn catalog_file(data: &[u8]) {
    let path = scratch("catalog/part=all/delta-0000000000000001.parquet", data);
    let _ = crate::tier::catalog::read_catalog_file(&path);
    let dir = path
        .parent()
        .and_then(|p| p.parent())
        .expect("catalog directory");
    if let Ok(q) = crate::tier::catalog::Query::parse(&["size_bytes>10"], Some("cid,size_bytes")) {
        let _ = crate::tier::catalog::scan_persisted(dir, &q, 1);
    }
}

/// Seed files for [`warm_raw_file`] and [`warm_table_file`], written by the tier's own writers
/// (uncompressed and zstd): raw files holding small, chunked and metadata-carrying objects, and
/// a table with a dictionary column.
pub fn warm_file_seeds() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    use crate::tier::warm::{raw, table};
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::WriterProperties;
    let dir = std::env::temp_dir().join(format!("cidcache-fuzz-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("seed directory");
    let props = |zstd: bool| {
        let c = if zstd {
            Compression::ZSTD(ZstdLevel::try_new(1).expect("level 1"))
        } else {
            Compression::UNCOMPRESSED
        };
        WriterProperties::builder()
            .set_compression(c)
            .set_statistics_enabled(parquet::file::properties::EnabledStatistics::Page)
            .build()
    };
    let mut raws = Vec::new();
    let mut tables = Vec::new();
    for zstd in [false, true] {
        let p = dir.join(format!("raw-{zstd}"));
        let f = std::fs::File::create(&p).expect("seed file");
        let mut w = raw::RawWriter::new(f, props(zstd)).expect("raw writer");
        for (i, len) in [0usize, 17, 300].into_iter().enumerate() {
            let k = crate::key::Key::new(format!("seed-{i}").as_bytes()).expect("key");
            let data: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
            w.append(&k, i as u32, &data, if i == 1 { b"meta" } else { b"" })
                .expect("append");
        }
        w.finish().expect("finish");
        raws.push(std::fs::read(&p).expect("seed bytes"));

        use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
        use arrow_schema::{DataType, Field, Schema};
        let schema = std::sync::Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batch = |n: i64| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    std::sync::Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef,
                    std::sync::Arc::new(StringArray::from_iter(
                        (0..n).map(|i| (i % 4 != 0).then(|| ["a", "bb", "ccc"][i as usize % 3])),
                    )),
                ],
            )
            .expect("batch")
        };
        let batches = [batch(10), batch(0), batch(7)];
        let ipc = crate::arrow::encode_ipc_file(&schema, &batches).expect("ipc");
        let p = dir.join(format!("arrow-{zstd}"));
        let f = std::fs::File::create(&p).expect("seed file");
        table::write(
            f,
            props(zstd),
            &crate::key::Key::new(b"seed-table").expect("key"),
            &schema,
            &batches,
            b"m",
            crate::proto::PUT_ARROW,
            ipc.len() as u64,
            None,
        )
        .expect("table");
        tables.push(std::fs::read(&p).expect("seed bytes"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    (raws, tables)
}

/// IPFS source: a CAR stream read into verified blocks (iroh-car's framing and header, CID
/// parsing, the size bounds, hash checks), and a file assembled from them when the first
/// block heads one.
pub fn ipfs_car(data: &[u8]) {
    use crate::tier::ipfs::{read_car, unixfs::FilePlan};
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let Ok(blocks) = rt.block_on(read_car(data, 1 << 20, 4 << 20)) else {
        return;
    };
    let Some(root) = blocks.first() else {
        return;
    };
    if let Ok(plan) = FilePlan::new(root, blocks, 4 << 20) {
        let mut out = vec![0u8; plan.size() as usize];
        plan.write_into(&mut out).expect("a checked plan writes");
    }
}

/// IPFS source: one dag-pb block as a source sends it (a UnixFS file root, a directory, ...):
/// decoded (dag-pb, then the UnixFS `Data` message), classified, and walked as a file root
/// (its links lead to blocks that are not there).
pub fn unixfs_node(data: &[u8]) {
    use crate::tier::ipfs::{blocks::Blocks, unixfs};
    let block = bytes::Bytes::copy_from_slice(data);
    if let Ok(n) = unixfs::decode_node(&block) {
        let _ = unixfs::shape(&n);
        if let Some(d) = &n.data {
            let _ = unixfs::decode_data(d);
        }
    }
    let _ = unixfs::decode_data(data);
    let mh = multihash::Multihash::wrap(
        crate::cid::SHA2_256,
        &<sha2::Sha256 as sha2::Digest>::digest(data),
    )
    .expect("32 bytes");
    let cid = cid::Cid::new_v1(unixfs::DAG_PB, mh);
    let mut blocks = Blocks::new(1 << 20);
    if blocks.insert(&cid, block, 1 << 20).is_ok() {
        let _ = unixfs::FilePlan::new(cid, blocks, 1 << 20);
    }
}

/// Seed inputs for [`ipfs_car`] (CARs of UnixFS files: one raw leaf, one level, a file of
/// identical leaves) and [`unixfs_node`] (their dag-pb nodes).
pub fn ipfs_seeds() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let chunk = crate::tier::ipfs::unixfs::CHUNK;
    let files = [
        b"a small file".to_vec(),
        (0..3 * chunk + 10).map(|i| (i % 251) as u8).collect(),
        vec![0u8; 5 * chunk],
    ];
    let mut cars = Vec::new();
    let mut nodes = Vec::new();
    for f in &files {
        cars.push(crate::harness::kubo::unixfs_car(f).1);
        crate::tier::ipfs::unixfs::build_file(f, |c, b| {
            if c.codec() == crate::tier::ipfs::unixfs::DAG_PB {
                nodes.push(b.to_vec());
            }
        });
    }
    (cars, nodes)
}

/// Arrow IPC file, as the coordinator validates an Arrow object at seal: validation returns
/// whatever the bytes (a panic inside arrow-rs's reader is caught and counts as invalid), and
/// bytes it
/// accepts decode on the readers' fast path (no validation) to the same schema and batches as
/// with full validation.
pub fn arrow_ipc_file(data: &[u8]) {
    // 64-byte aligned (arrow-rs allocations are), as objects in shared memory are.
    let buf = arrow_buffer::Buffer::from(data);
    if crate::arrow::validate_ipc_file(&buf).is_err() {
        return;
    }
    let full = crate::arrow::decode_ipc_file(&buf).expect("validated bytes decode");
    // SAFETY: `buf` passed `validate_ipc_file` at this very address and is immutable.
    let fast = unsafe { crate::arrow::decode_validated_ipc_file(&buf) }
        .expect("validated bytes decode without validation");
    assert_eq!(full.schema, fast.schema);
    assert_eq!(full.batches, fast.batches);
}
