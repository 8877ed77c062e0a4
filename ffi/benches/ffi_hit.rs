//! A hit through the C ABI against the same hit through the Rust client, side by side in one run.
//!
//! `cargo build --release -p cidcache-ffi && cargo bench -p cidcache-ffi --bench ffi_hit` (cargo
//! does not build the cdylib for a bench by itself) starts a cidcached (from $CIDCACHED, else the
//! target directory's release or debug build), stores one 4 KiB object, and measures:
//! - `rust_client_hit`: `Client::get` + drop of the `ObjectRef`;
//! - `c_abi_hit`: `cidcache_get` + `cidcache_release`, called through function pointers obtained
//!   with dlopen/dlsym from `libcidcache.so` (exactly what a C program pays, PLT aside), with the
//!   view filled in.
//!
//! The difference of the two is the cost of the ABI layer (checks, catch_unwind, the handle's
//! allocation). Not a timed assertion: read the figures.

use cidcache_core::Client;
use criterion::{criterion_group, criterion_main, Criterion};
use std::ffi::{c_char, c_int, c_void, CString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[repr(C)]
struct View {
    data: *const u8,
    data_len: usize,
    metadata: *const u8,
    metadata_len: usize,
    flags: u32,
}

type ConnectFn = unsafe extern "C" fn(*const c_char, *const c_char, u32, *mut *mut c_void) -> c_int;
type GetFn =
    unsafe extern "C" fn(*const c_void, *const u8, usize, *mut *mut c_void, *mut View) -> c_int;
type ReleaseFn = unsafe extern "C" fn(*mut c_void);
type DisconnectFn = unsafe extern "C" fn(*mut c_void);

struct Lib {
    connect: ConnectFn,
    get: GetFn,
    release: ReleaseFn,
    disconnect: DisconnectFn,
}

fn profile_dir() -> PathBuf {
    // target/<profile>/deps/ffi_hit-<hash>
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("profile dir")
        .to_path_buf()
}

fn load_lib() -> Lib {
    let path = std::env::var_os("CIDCACHE_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| profile_dir().join("libcidcache.so"));
    let cpath = CString::new(path.to_str().expect("utf-8 path")).expect("path");
    // SAFETY: dlopen with a valid NUL-terminated path; the handle is kept for the process.
    let h = unsafe { libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(
        !h.is_null(),
        "cannot dlopen {}: build it first (cargo build --release -p cidcache-ffi) or set CIDCACHE_LIB",
        path.display()
    );
    let sym = |name: &str| {
        let c = CString::new(name).expect("name");
        // SAFETY: valid handle and NUL-terminated name.
        let p = unsafe { libc::dlsym(h, c.as_ptr()) };
        assert!(!p.is_null(), "missing symbol {name}");
        p
    };
    // SAFETY: each symbol is the exported function of that name with the signature declared
    // above (see include/cidcache.h).
    unsafe {
        Lib {
            connect: std::mem::transmute::<*mut c_void, ConnectFn>(sym("cidcache_connect")),
            get: std::mem::transmute::<*mut c_void, GetFn>(sym("cidcache_get")),
            release: std::mem::transmute::<*mut c_void, ReleaseFn>(sym("cidcache_release")),
            disconnect: std::mem::transmute::<*mut c_void, DisconnectFn>(sym(
                "cidcache_disconnect",
            )),
        }
    }
}

struct Daemon {
    child: Child,
    _dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: sending SIGTERM to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn start_daemon() -> Daemon {
    let bin = std::env::var_os("CIDCACHED")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = profile_dir().parent().expect("target dir").to_path_buf();
            let rel = target.join("release/cidcached");
            if rel.exists() {
                rel
            } else {
                target.join("debug/cidcached")
            }
        });
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("s.sock");
    let store = format!("bench{}", std::process::id());
    let child = Command::new(&bin)
        .args(["--store", &store, "--socket"])
        .arg(&socket)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "-m",
            "64M",
            "--arena-size",
            "16M",
            "--index-capacity",
            "4096",
        ])
        .env("CIDCACHE_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "cidcached did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Daemon {
        child,
        _dir: dir,
        socket,
    }
}

fn bench(c: &mut Criterion) {
    let daemon = start_daemon();
    let lib = load_lib();
    let key = b"ffi-bench-key";
    let client = Client::connect_socket(&daemon.socket).expect("connect");
    client.put(key, &vec![7u8; 4096]).expect("put");

    let csock = CString::new(daemon.socket.to_str().expect("utf-8")).expect("socket");
    let mut ch: *mut c_void = std::ptr::null_mut();
    // SAFETY: valid arguments per the C API.
    let s = unsafe { (lib.connect)(csock.as_ptr(), std::ptr::null(), 0, &mut ch) };
    assert_eq!(s, 0, "cidcache_connect");

    let mut g = c.benchmark_group("hit");
    g.bench_function("rust_client_hit", |b| {
        b.iter(|| {
            let o = client.get(std::hint::black_box(key)).unwrap().unwrap();
            std::hint::black_box(o.data().len());
        })
    });
    g.bench_function("c_abi_hit", |b| {
        b.iter(|| {
            let mut o: *mut c_void = std::ptr::null_mut();
            let mut v = View {
                data: std::ptr::null(),
                data_len: 0,
                metadata: std::ptr::null(),
                metadata_len: 0,
                flags: 0,
            };
            // SAFETY: live client handle, valid key and out-pointers.
            let s = unsafe {
                (lib.get)(
                    ch,
                    std::hint::black_box(key).as_ptr(),
                    key.len(),
                    &mut o,
                    &mut v,
                )
            };
            assert_eq!(s, 0);
            std::hint::black_box(v.data_len);
            // SAFETY: `o` is the live object handle just returned.
            unsafe { (lib.release)(o) };
        })
    });
    g.finish();
    // SAFETY: the handle from cidcache_connect, freed once.
    unsafe { (lib.disconnect)(ch) };
    drop(client);
    drop(daemon);
}

criterion_group!(benches, bench);
criterion_main!(benches);
