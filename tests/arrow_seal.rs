//! Arrow objects are validated once, when they are sealed, and read without validation after
//! (issue 20): an invalid table is refused through every write path, a valid one reads back
//! identically on the fast path, the fast path is taken only for entries the coordinator
//! validated, and no client can set that flag.

mod common;

use arrow_array::builder::StringDictionaryBuilder;
use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use cidcache::arrow::{bench::put_ipc_timed, encode_ipc_file, full_validations};
use cidcache::plasma::client::PlasmaClient;
use cidcache::plasma::codec::ObjectId;
use cidcache::proto::{self, Header, PutItem, Request, Response, HEADER_LEN, PUT_ARROW};
use cidcache::{Client, Code, Key};
use common::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `rows` rows in batches of `batch` rows: an int64, a float64 with nulls, a string column
/// whose values are `marker-NNNNNNNNN` (16 bytes each, so its offsets are 0, 16, 32, ...) and a
/// dictionary column.
fn table(rows: usize, batch: usize) -> (SchemaRef, Vec<RecordBatch>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("value", DataType::Float64, true),
        Field::new("name", DataType::Utf8, false),
        Field::new(
            "kind",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        ),
    ]));
    let ids = Int64Array::from_iter_values((0..rows).map(|i| i as i64));
    let values = Float64Array::from_iter((0..rows).map(|i| (i % 7 != 0).then_some(i as f64 * 0.5)));
    let names = StringArray::from_iter_values((0..rows).map(|i| format!("marker-{i:09}")));
    // One dictionary for the whole table (an IPC file holds one per field); batches slice it.
    let mut kinds = StringDictionaryBuilder::<Int32Type>::new();
    for i in 0..rows {
        if i % 11 == 0 {
            kinds.append_null();
        } else {
            kinds.append_value(["alpha", "beta", "gamma"][i % 3]);
        }
    }
    let whole = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(ids) as ArrayRef,
            Arc::new(values),
            Arc::new(names),
            Arc::new(kinds.finish()),
        ],
    )
    .unwrap();
    let batches = (0..rows)
        .step_by(batch)
        .map(|start| whole.slice(start, batch.min(rows - start)))
        .collect();
    (schema, batches)
}

fn ipc(rows: usize, batch: usize) -> Vec<u8> {
    let (schema, batches) = table(rows, batch);
    encode_ipc_file(&schema, &batches).unwrap()
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("pattern present in the encoding")
}

/// The IPC file with one byte of a string value replaced by 0xFF (invalid UTF-8).
fn bad_utf8(ipc: &[u8]) -> Vec<u8> {
    let mut v = ipc.to_vec();
    let at = find(&v, b"marker-000000001");
    v[at + 3] = 0xff;
    v
}

/// The IPC file with an offset of the string column pointing far past its values.
fn bad_offsets(ipc: &[u8]) -> Vec<u8> {
    let mut v = ipc.to_vec();
    let pattern: Vec<u8> = [0i32, 16, 32, 48]
        .iter()
        .flat_map(|o| o.to_le_bytes())
        .collect();
    let at = find(&v, &pattern);
    v[at + 8..at + 12].copy_from_slice(&0x7fff_0000i32.to_le_bytes());
    v
}

fn assert_arrow_error(r: cidcache::Result<impl std::fmt::Debug>, what: &str) {
    match r {
        Err(e) => assert_eq!(e.code(), Code::Arrow, "{what}: {e}"),
        Ok(v) => panic!("{what}: an invalid Arrow object was accepted: {v:?}"),
    }
}

/// A raw connection that said Hello as a writer.
fn raw(d: &Daemon) -> UnixStream {
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(
        &Request::Hello {
            version: proto::VERSION,
            pid: 1,
            writer: true,
        }
        .encode(1),
    )
    .unwrap();
    assert!(matches!(reply(&mut s), Response::Hello(_)));
    s
}

fn reply(s: &mut UnixStream) -> Response {
    let mut h = [0u8; HEADER_LEN];
    s.read_exact(&mut h).unwrap();
    let h = Header::parse(&h).unwrap();
    let mut body = vec![0u8; h.body_len as usize];
    s.read_exact(&mut body).unwrap();
    Response::decode(h.msg_type, &body).unwrap()
}

fn put_raw(s: &mut UnixStream, key: &[u8], flags: u32, data: &[u8]) -> Response {
    let it = PutItem {
        key: Key::new(key).unwrap(),
        flags,
        meta: b"",
        data,
    };
    s.write_all(&Request::Put(it).encode(7)).unwrap();
    reply(s)
}

fn expect_arrow_error(r: Response, what: &str) {
    match r {
        Response::Error { code, message } => {
            assert_eq!(code, Code::Arrow, "{what}: {message}");
            assert!(message.contains("not a valid Arrow IPC file"), "{message}");
        }
        other => panic!("{what}: an invalid Arrow object was accepted: {other:?}"),
    }
}

/// Reads `key` back on the fast path and checks it equals `ipc`'s table.
fn reads_back_validated(c: &Client, key: &[u8], want: &[RecordBatch]) {
    let obj = c.get(key).unwrap().expect("stored");
    assert!(
        obj.is_arrow() && obj.is_validated_arrow(),
        "{key:?} validated at seal"
    );
    drop(obj);
    let before = full_validations();
    let got = c.get_arrow(key).unwrap().expect("stored");
    assert_eq!(
        full_validations(),
        before,
        "a validated entry is decoded without validation"
    );
    assert_eq!(got.batches, want);
}

#[test]
fn invalid_tables_are_refused_at_seal_by_native_puts() {
    let d = Daemon::start(&["-m", "256M"]);
    let c = d.client();
    let small = ipc(600, 200); // goes inline
    let large = ipc(20_000, 5_000); // create + seal
    assert!(small.len() < 64 << 10 && large.len() > 64 << 10);
    let mut s = raw(&d);

    for (name, bytes) in [("small", &small), ("large", &large)] {
        for (how, bad) in [("utf8", bad_utf8(bytes)), ("offsets", bad_offsets(bytes))] {
            let what = format!("{name} table with bad {how}");
            // create + seal with the Arrow flag (how put_arrow stores large tables).
            let key = format!("cs-{name}-{how}");
            assert_arrow_error(put_ipc_timed(&c, key.as_bytes(), &bad), &what);
            assert!(
                c.get(key.as_bytes()).unwrap().is_none(),
                "{what}: not stored"
            );
            // Refused objects leave nothing behind: the key can be stored again.
            put_ipc_timed(&c, key.as_bytes(), bytes).unwrap();
            // Inline put with the Arrow flag.
            let key = format!("in-{name}-{how}");
            expect_arrow_error(put_raw(&mut s, key.as_bytes(), PUT_ARROW, &bad), &what);
            assert!(
                c.get(key.as_bytes()).unwrap().is_none(),
                "{what}: not stored"
            );
        }
    }
    // A batch: the invalid item is refused, the valid one stored.
    let bad = bad_utf8(&small);
    let items = vec![
        PutItem {
            key: Key::new(b"many-bad").unwrap(),
            flags: PUT_ARROW,
            meta: b"",
            data: &bad,
        },
        PutItem {
            key: Key::new(b"many-good").unwrap(),
            flags: PUT_ARROW,
            meta: b"",
            data: &small,
        },
    ];
    s.write_all(&Request::PutMany(items).encode(9)).unwrap();
    match reply(&mut s) {
        Response::Statuses(st) => {
            assert_eq!(st.len(), 2);
            assert_eq!(st[0].as_ref().unwrap_err().0, Code::Arrow);
            assert!(st[1].is_ok());
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(c.get(b"many-bad").unwrap().is_none());
    let (_, want) = table(600, 200);
    reads_back_validated(&c, b"many-good", &want);
    assert!(stat(&c, "arrow.rejected") >= 9);
    // The daemon serves on.
    c.put(b"after", b"still serving").unwrap();
}

#[test]
fn valid_tables_read_back_identically_on_the_fast_path() {
    let mut d = Daemon::start(&["-m", "256M"]);
    let c = d.client();
    let (schema, small) = table(600, 200);
    let (_, large) = table(50_000, 8_192);
    c.put_arrow(b"small", &schema, &small).unwrap();
    c.put_arrow(b"large", &schema, &large).unwrap();
    let empty: Vec<RecordBatch> = Vec::new();
    c.put_arrow(b"empty", &schema, &empty).unwrap();
    reads_back_validated(&c, b"small", &small);
    reads_back_validated(&c, b"large", &large);
    reads_back_validated(&c, b"empty", &empty);
    assert_eq!(
        c.get_arrow(b"empty").unwrap().unwrap().schema.as_ref(),
        schema.as_ref()
    );
    assert!(stat(&c, "arrow.validated") >= 3);
    drop(c);

    // Promoted from the warm tier after a restart (the table is re-encoded from Parquet).
    d.stop();
    d.spawn();
    let c = d.client();
    let got = c.get_arrow(b"large").unwrap().expect("promoted");
    assert_eq!(got.batches, large);
    drop(got);
    reads_back_validated(&c, b"large", &large);
    reads_back_validated(&c, b"small", &small);
    // A scan of a warm table publishes its result as a validated Arrow object.
    drop(c);
    d.stop();
    d.spawn();
    let c = d.client();
    let scan = cidcache::scan::Scan::default().columns(&["id", "name"]);
    let before = full_validations();
    let got = c.get_arrow_scan(b"large", &scan).unwrap().expect("scanned");
    assert_eq!(full_validations(), before, "the scan result is validated");
    assert_eq!(
        got.batches.iter().map(|b| b.num_rows()).sum::<usize>(),
        50_000
    );
    assert_eq!(got.schema.fields().len(), 2);
}

/// A warm file is untrusted: a raw object that claims to be Arrow but does not validate is
/// promoted as raw bytes (readable with get, refused by get_arrow), never as Arrow; a valid one
/// is promoted validated.
#[test]
fn promotion_validates_what_a_warm_file_claims_is_arrow() {
    use parquet::arrow::ArrowWriter;
    let good = ipc(600, 200);
    let bad = bad_offsets(&good);
    let mut d = Daemon::start(&["-m", "64M"]);
    d.stop();
    let warm = d.dir.path().join("data/warm");
    std::fs::create_dir_all(&warm).unwrap();
    // The raw warm layout (docs/warm.md): one row per object here (each below 4 MiB).
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Binary, false),
        Field::new("part", DataType::UInt32, false),
        Field::new("data_len", DataType::UInt64, false),
        Field::new("flags", DataType::UInt32, false),
        Field::new("checksum", DataType::UInt64, false),
        Field::new("meta", DataType::Binary, false),
        Field::new("data", DataType::Binary, false),
    ]));
    let objects: [(&[u8], &[u8]); 2] = [(b"warm-bad", &bad), (b"warm-good", &good)];
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(arrow_array::BinaryArray::from_iter_values(
                objects.iter().map(|(k, _)| *k),
            )) as ArrayRef,
            Arc::new(arrow_array::UInt32Array::from(vec![0, 0])),
            Arc::new(arrow_array::UInt64Array::from_iter_values(
                objects.iter().map(|(_, d)| d.len() as u64),
            )),
            Arc::new(arrow_array::UInt32Array::from(vec![PUT_ARROW, PUT_ARROW])),
            Arc::new(arrow_array::UInt64Array::from_iter_values(
                objects.iter().map(|(_, d)| xxhash_rust::xxh3::xxh3_64(d)),
            )),
            Arc::new(arrow_array::BinaryArray::from_iter_values(
                objects.iter().map(|_| &b""[..]),
            )),
            Arc::new(arrow_array::BinaryArray::from_iter_values(
                objects.iter().map(|(_, d)| *d),
            )),
        ],
    )
    .unwrap();
    let f = std::fs::File::create(warm.join("raw-00000000000000f0.parquet")).unwrap();
    let mut w = ArrowWriter::try_new(f, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();

    d.spawn();
    let c = d.client();
    let obj = c.get(b"warm-bad").unwrap().expect("promoted");
    assert_eq!(obj.data(), &bad[..], "the bytes are still readable");
    assert!(!obj.is_arrow(), "never published as Arrow");
    drop(obj);
    let e = c.get_arrow(b"warm-bad").unwrap_err();
    assert_eq!(e.code(), Code::NotArrow, "{e}");
    let (_, want) = table(600, 200);
    reads_back_validated(&c, b"warm-good", &want);
}

struct PlasmaStore {
    child: Child,
    sock: std::path::PathBuf,
    native: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl PlasmaStore {
    fn start() -> PlasmaStore {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("plasma.sock");
        let native = dir.path().join("native.sock");
        let child = Command::new(daemon_bin())
            .arg("plasma")
            .arg("--native-socket")
            .arg(&native)
            .arg("-s")
            .arg(&sock)
            .arg("-m")
            .arg("100000000")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while !sock.exists() || !native.exists() {
            assert!(t.elapsed() < Duration::from_secs(30), "store did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        PlasmaStore {
            child,
            sock,
            native,
            _dir: dir,
        }
    }

    fn native(&self) -> Client {
        let t = Instant::now();
        loop {
            match Client::connect_socket(&self.native) {
                Ok(c) => return c,
                Err(e) => {
                    assert!(t.elapsed() < Duration::from_secs(30), "native connect: {e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

impl Drop for PlasmaStore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn oid(n: u8) -> ObjectId {
    let mut id = [0u8; 20];
    id[0] = n;
    id[19] = 0xa7;
    id
}

/// Plasma objects framed as Arrow IPC files are validated at seal: an invalid one is published
/// as raw bytes; a valid one as Arrow but not as validated, because its creator keeps a
/// writable buffer after the seal, so native readers validate it on every read, which catches
/// a creator that rewrites it after the seal.
#[test]
fn plasma_objects_read_as_arrow_are_validated_and_never_trusted() {
    let store = PlasmaStore::start();
    let p = PlasmaClient::connect(&store.sock, Some(50)).unwrap();
    let n = store.native();
    let good = ipc(600, 200);
    let (_, want) = table(600, 200);

    p.create_and_seal(&oid(1), &bad_utf8(&good), b"").unwrap();
    p.create_and_seal(&oid(2), &bad_offsets(&good), b"")
        .unwrap();
    for id in [oid(1), oid(2)] {
        let obj = n
            .get_timeout(&id, Duration::from_secs(30))
            .unwrap()
            .expect("published natively");
        assert!(
            !obj.is_arrow(),
            "an invalid table is published as raw bytes"
        );
        drop(obj);
        assert!(n.get_arrow(&id).is_err());
    }

    let mut buf = p.create(&oid(3), good.len() as u64, b"").unwrap();
    buf.as_mut_slice().copy_from_slice(&good);
    p.seal(&oid(3)).unwrap();
    let obj = n
        .get_timeout(&oid(3), Duration::from_secs(30))
        .unwrap()
        .expect("published natively");
    assert!(obj.is_arrow() && !obj.is_validated_arrow());
    drop(obj);
    let before = full_validations();
    let got = n.get_arrow(&oid(3)).unwrap().unwrap();
    assert_eq!(got.batches, want);
    assert_eq!(
        full_validations(),
        before + 1,
        "an entry without FLAG_VALIDATED is validated on read"
    );
    drop(got);
    // The creator still holds a writable buffer: a rewrite after the seal is caught on read.
    let at = find(buf.as_mut_slice(), b"marker-000000001");
    buf.as_mut_slice()[at + 3] = 0xff;
    let e = n.get_arrow(&oid(3)).unwrap_err();
    assert_eq!(e.code(), Code::Arrow, "{e}");
}

/// FLAG_VALIDATED is written by the coordinator alone: clients map the control segment (where
/// the index lives) read-only, and no put flag sets it.
#[test]
fn clients_cannot_set_the_validated_flag() {
    let d = Daemon::start(&[]);
    let c = d.client();
    c.put(b"x", b"y").unwrap();
    // The client's mapping of the control segment has no write permission.
    let ctl = format!("cidcache.{}.ctl", d.store);
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let lines: Vec<&str> = maps.lines().filter(|l| l.ends_with(&ctl)).collect();
    assert!(!lines.is_empty(), "the control segment is mapped");
    for l in &lines {
        let perms = l.split_whitespace().nth(1).unwrap();
        assert!(
            perms.starts_with("r-"),
            "control segment mapped {perms}: {l}"
        );
    }
    // Nor can it be remapped writable through what a client opens.
    let (fd, len) =
        cidcache::shm::open_segment(Path::new("/dev/shm"), &ctl, cidcache::shm::Access::ReadOnly)
            .unwrap();
    assert!(cidcache::shm::Mapping::map(
        &fd,
        len as usize,
        cidcache::shm::Access::ReadWrite,
        false
    )
    .is_err());

    // Every put flag bit set but Arrow (and CID verification, which these keys would fail, and
    // IPFS write-back, which a store without an IPFS source refuses):
    // the entry is raw.
    let mut s = raw(&d);
    let good = ipc(600, 200);
    let all = !(PUT_ARROW | proto::PUT_VERIFY_CID | proto::PUT_IPFS);
    assert!(matches!(
        put_raw(&mut s, b"flags-raw", all, &good),
        Response::Done
    ));
    let obj = c.get(b"flags-raw").unwrap().unwrap();
    assert!(!obj.is_arrow() && !obj.is_validated_arrow());
    drop(obj);
    // With Arrow too: validated, hence refused when invalid.
    expect_arrow_error(
        put_raw(&mut s, b"flags-bad", all | PUT_ARROW, &bad_utf8(&good)),
        "all flags",
    );
    let mut w = c.create(b"created-raw", good.len(), 0).unwrap();
    w.data_mut().copy_from_slice(&good);
    w.seal().unwrap();
    let obj = c.get(b"created-raw").unwrap().unwrap();
    assert!(!obj.is_arrow() && !obj.is_validated_arrow());
}
