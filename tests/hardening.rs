//! A hostile or faulty local client against real daemons on real sockets: declared lengths,
//! floods of unread replies and waiting requests, idle connections, stalled frames, the
//! descriptor limit, creators that die before sealing, SIGTERM in the middle of work, file
//! modes under any umask and peer credentials. Each case: the daemon bounds what it holds,
//! tells the client clearly, and keeps serving everyone else.
//!
//! Child processes (a creator killed before sealing, probes running as another user) are this
//! test binary re-executed with `CIDCACHE_CHILD` set; they run the ignored `child` test.

mod common;

use cidcache::plasma::client::PlasmaClient;
use cidcache::plasma::codec::{self as pcodec, ObjectId};
use cidcache::proto::{self, Header, Request, Response, HEADER_LEN};
use cidcache::{Client, Code, Error, Key};
use common::*;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

// ----- helpers -------------------------------------------------------------------------------

fn raw(socket: &Path) -> UnixStream {
    let s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

fn read_reply(s: &mut UnixStream) -> Option<(Header, Response)> {
    let mut h = [0u8; HEADER_LEN];
    s.read_exact(&mut h).ok()?;
    let h = Header::parse(&h).unwrap();
    let mut body = vec![0u8; h.body_len as usize];
    s.read_exact(&mut body).ok()?;
    Some((h, Response::decode(h.msg_type, &body).unwrap()))
}

fn hello_frame() -> Vec<u8> {
    Request::Hello {
        version: proto::VERSION,
        pid: std::process::id(),
        writer: true,
    }
    .encode(1)
}

/// A raw connection that said Hello and got its lease.
fn hello(socket: &Path) -> UnixStream {
    let mut s = raw(socket);
    s.write_all(&hello_frame()).unwrap();
    match read_reply(&mut s) {
        Some((_, Response::Hello(_))) => s,
        other => panic!("expected a Hello reply, got {other:?}"),
    }
}

/// A frame header declaring `len` body bytes.
fn header(msg_type: u16, len: u32, id: u64) -> Vec<u8> {
    let mut f = Vec::with_capacity(HEADER_LEN);
    f.extend_from_slice(&len.to_le_bytes());
    f.extend_from_slice(&proto::VERSION.to_le_bytes());
    f.extend_from_slice(&msg_type.to_le_bytes());
    f.extend_from_slice(&id.to_le_bytes());
    f
}

/// A field of `/proc/PID/status` in bytes (`RssAnon`: the daemon's heap, not shared memory).
fn proc_kb(pid: i32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

fn rss_anon(pid: i32) -> u64 {
    proc_kb(pid, "RssAnon:")
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Follows a flood until the daemon has stopped taking its bytes (`sent` unchanged for 3 s, or
/// all sent) and stopped growing (less than 1 MiB in 5 s), sampling `pid`'s
/// anonymous memory; returns the peak. A slow daemon that keeps working is followed to the
/// end (up to 10 minutes), whatever the load of the machine.
fn flood_peak(pid: i32, sent: &AtomicUsize, done: impl Fn() -> bool) -> u64 {
    let start = Instant::now();
    let mut samples: std::collections::VecDeque<(Instant, u64)> = Default::default();
    let mut peak = rss_anon(pid);
    let mut last = sent.load(Ordering::SeqCst);
    let mut last_progress = Instant::now();
    while start.elapsed() < Duration::from_secs(600) {
        std::thread::sleep(Duration::from_millis(250));
        let r = rss_anon(pid);
        peak = peak.max(r);
        samples.push_back((Instant::now(), r));
        while samples
            .front()
            .is_some_and(|(t, _)| t.elapsed() > Duration::from_secs(5))
        {
            samples.pop_front();
        }
        let now = sent.load(Ordering::SeqCst);
        if now != last {
            last = now;
            last_progress = Instant::now();
        }
        let growing = samples.front().is_some_and(|(_, first)| r > first + MIB);
        if start.elapsed() >= Duration::from_secs(5)
            && (done() || last_progress.elapsed() >= Duration::from_secs(3))
            && !growing
        {
            break;
        }
    }
    // What the daemon read last is handled by now.
    std::thread::sleep(Duration::from_millis(500));
    peak.max(rss_anon(pid))
}

/// Writes `buf` in 64 KiB pieces, counting what the kernel took.
fn write_counted(s: &mut UnixStream, buf: &[u8], sent: &AtomicUsize) -> bool {
    for chunk in buf.chunks(64 << 10) {
        if s.write_all(chunk).is_err() {
            return false;
        }
        sent.fetch_add(chunk.len(), Ordering::SeqCst);
    }
    true
}

fn oid(n: u8) -> ObjectId {
    let mut id = [0u8; 20];
    id[0] = n;
    id[19] = 0xa5;
    id
}

fn expect_alive(d: &mut Daemon) {
    assert!(
        d.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the daemon died"
    );
}

/// A well-behaved client's put and get work (the daemon serves others during the flood).
fn well_behaved(socket: &Path, tag: &str) {
    let c = Client::connect_socket(socket).expect("a well-behaved client connects");
    let v = content(tag.len() as u64 * 7919, 10_000);
    c.put(format!("good-{tag}").as_bytes(), &v).unwrap();
    assert_eq!(
        c.get(format!("good-{tag}").as_bytes())
            .unwrap()
            .unwrap()
            .data(),
        &v[..]
    );
}

/// A `cidcached plasma` on a private directory.
struct PlasmaDaemon {
    child: Child,
    sock: PathBuf,
    native: PathBuf,
    stderr: PathBuf,
    dir: tempfile::TempDir,
}

impl PlasmaDaemon {
    fn start(
        mem: u64,
        extra: &[&str],
        setup: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    ) -> PlasmaDaemon {
        let dir = tempfile::tempdir().unwrap();
        Self::spawn(dir, &unique_store(), mem, extra, setup)
    }

    /// Starts `cidcached [extra] plasma ...` for `store` with its sockets in `dir`, after
    /// `setup` runs in the child (umask, limits, another user).
    fn spawn(
        dir: tempfile::TempDir,
        store: &str,
        mem: u64,
        extra: &[&str],
        setup: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    ) -> PlasmaDaemon {
        let sock = dir.path().join("plasma.sock");
        let native = dir.path().join("native.sock");
        let stderr = dir.path().join("stderr.log");
        let mut cmd = Command::new(daemon_bin());
        cmd.arg("--store")
            .arg(store)
            .args(extra)
            .arg("plasma")
            .arg("--native-socket")
            .arg(&native)
            .arg("-s")
            .arg(&sock)
            .arg("-m")
            .arg(mem.to_string())
            .env("CIDCACHE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        // SAFETY: the closure only makes async-signal-safe system calls.
        unsafe {
            cmd.pre_exec(setup);
        }
        let mut child = cmd.spawn().unwrap();
        let t = Instant::now();
        while !(sock.exists() && native.exists()) {
            if let Some(s) = child.try_wait().unwrap() {
                panic!(
                    "cidcached plasma exited at start ({s}): {}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
            assert!(t.elapsed() < Duration::from_secs(20), "store did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        PlasmaDaemon {
            child,
            sock,
            native,
            stderr,
            dir,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for PlasmaDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn no_setup() -> std::io::Result<()> {
    Ok(())
}

/// A Plasma Connect round trip on a raw socket: `Some(true)` served, `Some(false)` the daemon
/// closed the connection, `None` no answer in time.
fn plasma_connect_raw(sock: &Path) -> Option<bool> {
    let mut s = UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    if s.write_all(&pcodec::Request::Connect.encode_frame())
        .is_err()
    {
        return Some(false);
    }
    let mut h = [0u8; pcodec::HEADER_LEN];
    match s.read_exact(&mut h) {
        Ok(()) => Some(true),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => None,
        Err(_) => Some(false),
    }
}

// ----- child processes -----------------------------------------------------------------------

fn spawn_child(role: &str, arg: &str, setup: Option<(u32, u32, Vec<u32>)>) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child",
        "--nocapture",
        "--include-ignored",
        "--test-threads",
        "1",
    ])
    .env("CIDCACHE_CHILD", role)
    .env("CIDCACHE_ARG", arg)
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    if let Some((uid, gid, groups)) = setup {
        // SAFETY: only async-signal-safe calls (setgroups, setgid, setuid).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd.spawn().unwrap()
}

/// Reads the child's output until a line containing `prefix`; returns the rest of that line.
fn child_line(c: &mut Child, prefix: &str) -> String {
    use std::io::BufRead;
    let out = c.stdout.as_mut().unwrap();
    let mut r = std::io::BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            panic!("child exited before printing {prefix}");
        }
        if let Some(pos) = line.find(prefix) {
            return line[pos + prefix.len()..].trim().to_string();
        }
    }
}

#[test]
#[ignore = "entry point of child processes"]
fn child() {
    let Ok(role) = std::env::var("CIDCACHE_CHILD") else {
        return;
    };
    let arg = std::env::var("CIDCACHE_ARG").unwrap_or_default();
    match role.as_str() {
        "native-creator" => {
            let c = Client::connect_socket(&arg).unwrap();
            let _w = c.create(&oid(7), 1000, 0).unwrap();
            println!("READY");
            std::thread::sleep(Duration::from_secs(120));
        }
        "native-probe" => match Client::connect_socket(&arg).and_then(|c| c.stats()) {
            Ok(_) => println!("PROBE served"),
            Err(e) => println!("PROBE refused {e}"),
        },
        "plasma-probe" => {
            let served = plasma_connect_raw(Path::new(&arg));
            println!(
                "PROBE {}",
                if served == Some(true) {
                    "served"
                } else {
                    "refused"
                }
            );
        }
        other => panic!("unknown role {other}"),
    }
}

// ----- 2. declared lengths ---------------------------------------------------------------------

#[test]
fn a_plasma_frame_declaring_50_gb_never_allocates() {
    let mut d = PlasmaDaemon::start(50_000_000_000, &[], no_setup);
    for ty in [
        pcodec::MessageType::CreateAndSealRequest as i64,
        pcodec::MessageType::GetRequest as i64,
    ] {
        let mut s = UnixStream::connect(&d.sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(&pcodec::encode_header(ty, 50_000_000_000))
            .unwrap();
        s.write_all(&[0u8; 4096]).unwrap();
        let mut b = [0u8; 1];
        assert!(
            matches!(s.read(&mut b), Ok(0) | Err(_)),
            "the connection is closed"
        );
        assert!(d.alive(), "the daemon survives a 50 GB frame header");
    }
    // Everyone else is served, on both sockets.
    let p = PlasmaClient::connect(&d.sock, Some(50)).unwrap();
    p.create_and_seal(&oid(1), b"still here", b"").unwrap();
    assert_eq!(
        p.get(&[oid(1)], 0).unwrap()[0].as_ref().unwrap().data(),
        b"still here"
    );
    well_behaved(&d.native, "plasma50g");
    let log = std::fs::read_to_string(&d.stderr).unwrap();
    assert!(log.contains("bad frame"), "{log}");
}

#[test]
fn stalled_large_frames_hold_at_most_the_frame_budget() {
    // 30 clients each send 60 MiB of a 60 MiB frame minus its last byte, and stall.
    let mut d = Daemon::start(&["--no-warm"]);
    let pid = d.pid();
    let base = rss_anon(pid);
    const FRAME: u32 = 60 << 20;
    let body = Arc::new(vec![0x5au8; FRAME as usize - 1]);
    let sent = Arc::new(AtomicUsize::new(0));
    let bytes = Arc::new(AtomicUsize::new(0));
    let mut socks = Vec::new();
    let mut threads = Vec::new();
    for i in 0..30u64 {
        let mut s = hello(&d.socket);
        socks.push(s.try_clone().unwrap());
        let (body, sent, bytes) = (body.clone(), sent.clone(), bytes.clone());
        threads.push(std::thread::spawn(move || {
            let _ = s.write_all(&header(proto::msg::PUT_MANY, FRAME, 100 + i));
            if write_counted(&mut s, &body, &bytes) {
                sent.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    // The default budget (256 MiB) admits four such bodies; the others wait unread.
    assert!(
        eventually(Duration::from_secs(120), || sent.load(Ordering::SeqCst)
            >= 4),
        "four frames are received"
    );
    let peak = flood_peak(pid, &bytes, || sent.load(Ordering::SeqCst) == 30);
    let held = peak.saturating_sub(base);
    eprintln!(
        "30 stalled 60 MiB frames: daemon heap +{} MiB, {} frames fully sent",
        held / MIB,
        sent.load(Ordering::SeqCst)
    );
    assert!(
        held < 400 * MIB,
        "30 stalled frames hold {} MiB (budget 256 MiB)",
        held / MIB
    );
    // Other clients are served meanwhile.
    well_behaved(&d.socket, "stalled");
    for s in &socks {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    for t in threads {
        t.join().unwrap();
    }
    expect_alive(&mut d);
    well_behaved(&d.socket, "stalled-after");
}

#[test]
fn an_oversized_native_frame_is_refused_before_its_body() {
    let d = Daemon::start(&["--max-frame", "1M"]);
    let mut s = hello(&d.socket);
    s.write_all(&header(proto::msg::PUT_MANY, 2 << 20, 9))
        .unwrap();
    match read_reply(&mut s) {
        Some((h, Response::Error { code, message })) => {
            assert_eq!(h.request_id, 9);
            assert_eq!(code, Code::Protocol);
            assert!(message.contains("--max-frame"), "{message}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    // Under the limit, a large frame still works.
    let c = d.client();
    let items: Vec<(Vec<u8>, Vec<u8>)> = (0..10u64)
        .map(|i| (format!("k{i}").into_bytes(), content(i, 60_000)))
        .collect();
    let refs: Vec<(&[u8], &[u8])> = items.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    for r in c.put_many(&refs) {
        r.unwrap();
    }
    assert_eq!(c.get(b"k3").unwrap().unwrap().data(), &items[3].1[..]);
}

// ----- 4. shutdown -----------------------------------------------------------------------------

#[test]
fn sigterm_during_pipelined_lists_exits_cleanly() {
    for round in 0..8 {
        let mut d = Daemon::start(&["--no-warm", "-m", "16M", "--arena-size", "4M"]);
        let c = d.client();
        for i in 0..500u64 {
            c.put(format!("obj-{i}").as_bytes(), &[i as u8; 100])
                .unwrap();
        }
        let mut s = hello(&d.socket);
        let mut r = s.try_clone().unwrap();
        let reader = std::thread::spawn(move || {
            let mut n = 0u64;
            while read_reply(&mut r).is_some() {
                n += 1;
            }
            n
        });
        let mut batch = Vec::new();
        for i in 0..20_000u64 {
            batch.extend_from_slice(
                &Request::List {
                    cursor: 0,
                    limit: 10_000,
                }
                .encode(10 + i),
            );
        }
        let writer = std::thread::spawn(move || {
            let _ = s.write_all(&batch);
        });
        std::thread::sleep(Duration::from_millis(100 + 37 * round));
        let st = d.stop();
        assert!(
            st.success(),
            "round {round}: SIGTERM during pipelined Lists ended with {st:?}"
        );
        writer.join().unwrap();
        let served = reader.join().unwrap();
        eprintln!("round {round}: {served} replies before the stop");
        assert!(d.shm_files().is_empty(), "segments removed");
    }
}

#[test]
fn objects_not_persisted_at_shutdown_make_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let store = unique_store();
    let socket = dir.path().join("s.sock");
    let data = dir.path().join("data");
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(daemon_bin())
        .args(["--store", &store, "--socket"])
        .arg(&socket)
        .arg("--data-dir")
        .arg(&data)
        .args([
            "-m",
            "16M",
            "--arena-size",
            "4M",
            "--index-capacity",
            "1024",
        ])
        .env("CIDCACHE_LOG", "warn")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for_socket(&socket, &mut child);
    let c = Client::connect_socket(&socket).unwrap();
    for i in 0..20u64 {
        c.put(format!("keep-{i}").as_bytes(), &content(i, 5000))
            .unwrap();
    }
    drop(c);
    // The warm tier's directory becomes a file: nothing can be written there any more.
    let warm = data.join("warm");
    std::fs::rename(&warm, data.join("warm.moved")).unwrap();
    std::fs::write(&warm, b"not a directory").unwrap();
    signal(child.id() as i32, libc_sigterm());
    let st = wait_timeout(&mut child, Duration::from_secs(60)).expect("exits after SIGTERM");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !st.success(),
        "exit status {st:?} although nothing was persisted"
    );
    assert!(
        text.contains("20 object(s) could not be persisted"),
        "the log says how many: {text}"
    );
}

// ----- 7. modes and peer credentials ---------------------------------------------------------

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn shm_modes(store: &str) -> Vec<(String, u32)> {
    let prefix = format!("cidcache.{store}.");
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.to_string();
            // The store's lock lives beside its segments: the daemon's alone (0600 always).
            if n.ends_with(".lock") {
                assert_eq!(mode_of(&e.path()), 0o600, "{n}");
                return None;
            }
            n.starts_with(&prefix)
                .then(|| (n.clone(), mode_of(&e.path())))
        })
        .collect()
}

#[test]
fn socket_and_segment_modes_do_not_depend_on_the_umask() {
    for (umask, group, want, want_dir) in
        [(0o000, false, 0o600, 0o700), (0o077, true, 0o660, 0o710)]
    {
        let store = unique_store();
        let extra: Vec<&str> = if group { vec!["--group"] } else { vec![] };
        let set_umask = move || {
            // SAFETY: umask is async-signal-safe.
            unsafe { libc::umask(umask) };
            Ok(())
        };
        let dir = tempfile::tempdir().unwrap();
        let mut d = PlasmaDaemon::spawn(dir, &store, 10_000_000, &extra, set_umask);
        // A native client makes a lease page too.
        let c = Client::connect_socket(&d.native).unwrap();
        c.put(b"k", b"v").unwrap();
        assert_eq!(mode_of(&d.native), want, "native socket (umask {umask:o})");
        assert_eq!(mode_of(&d.sock), want, "Plasma socket (umask {umask:o})");
        assert_eq!(
            mode_of(d.dir.path()),
            want_dir,
            "socket directory (umask {umask:o})"
        );
        let modes = shm_modes(&store);
        assert!(modes.len() >= 3, "{modes:?}");
        for (name, m) in modes {
            assert_eq!(m, want, "{name} (umask {umask:o})");
        }
        assert!(d.alive());
    }
}

#[test]
fn peers_are_checked_on_both_sockets() {
    if rustix::process::geteuid().as_raw() != 0 {
        eprintln!("skipped: needs root to run the daemon and its clients as other users");
        return;
    }
    // The daemon runs as uid/gid 4242; probes as uid 4343, with and without group 4242.
    let (duid, dgid, other) = (4242u32, 4242u32, 4343u32);
    for group in [false, true] {
        let args: Vec<&str> = if group { vec!["--group"] } else { vec![] };
        let become_daemon = move || {
            // SAFETY: only async-signal-safe calls.
            unsafe {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(dgid) != 0
                    || libc::setuid(duid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        };
        // The daemon's directory is its own (not under /tmp, which may be private to root).
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        std::os::unix::fs::chown(dir.path(), Some(duid), Some(dgid)).unwrap();
        let mut d = PlasmaDaemon::spawn(dir, &unique_store(), 10_000_000, &args, become_daemon);
        // The socket files are opened to everyone, as a mistaken mode or directory would: the
        // peer-credential check is what stands.
        for p in [&d.sock, &d.native] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let probe = |role: &str, sock: &Path, groups: Vec<u32>| -> String {
            let mut c = spawn_child(role, sock.to_str().unwrap(), Some((other, other, groups)));
            let line = child_line(&mut c, "PROBE ");
            assert!(c.wait().unwrap().success());
            line
        };
        for (role, sock) in [("native-probe", &d.native), ("plasma-probe", &d.sock)] {
            let stranger = probe(role, sock, vec![]);
            assert!(
                stranger.starts_with("refused"),
                "{role}: another user is refused (group {group}): {stranger}"
            );
            let member = probe(role, sock, vec![dgid]);
            if group {
                assert!(
                    member.starts_with("served"),
                    "{role}: a member of the daemon's group is served with --group: {member}"
                );
            } else {
                assert!(member.starts_with("refused"), "{role}: {member}");
            }
        }
        // Root and the daemon's own user are served; the daemon is alive.
        well_behaved(&d.native, "peers");
        assert!(plasma_connect_raw(&d.sock) == Some(true));
        assert!(d.alive());
        let log = std::fs::read_to_string(&d.stderr).unwrap();
        assert!(log.contains("refused a connection from pid"), "{log}");
    }
}

// ----- 8. waiters wake -------------------------------------------------------------------------

fn wait_in_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> mpsc::Receiver<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx
}

#[test]
fn native_waiters_wake_when_the_creator_aborts_or_dies() {
    let d = Daemon::start(&["--no-warm"]);
    let a = d.client();
    let w = a.create(b"aborted", 100, 0).unwrap();
    let sock = d.socket.clone();
    let waiter = wait_in_thread(move || {
        let b = Client::connect_socket(&sock).unwrap();
        b.get_blocking(b"aborted").map(|o| o.data().to_vec())
    });
    let sock = d.socket.clone();
    let many = wait_in_thread(move || {
        let b = Client::connect_socket(&sock).unwrap();
        b.get_many(&[b"aborted"], Duration::from_secs(3600))
            .into_iter()
            .map(|r| r.map(|o| o.is_some()))
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_millis(300));
    w.abort().unwrap();
    match waiter.recv_timeout(Duration::from_secs(60)) {
        Ok(Err(Error::NotFound(m))) => assert!(m.contains("aborted it or disconnected"), "{m}"),
        other => panic!("the waiter must wake with an error, got {other:?}"),
    }
    match many.recv_timeout(Duration::from_secs(60)) {
        Ok(v) => assert!(
            matches!(&v[0], Err(Error::NotFound(m)) if !m.is_empty()),
            "{v:?}"
        ),
        Err(e) => panic!("the GetMany waiter did not wake: {e}"),
    }

    // The creator is killed before sealing (a 20-byte key: Plasma waiters are told too).
    let mut creator = spawn_child("native-creator", d.socket.to_str().unwrap(), None);
    child_line(&mut creator, "READY");
    let sock = d.socket.clone();
    let waiter = wait_in_thread(move || {
        let b = Client::connect_socket(&sock).unwrap();
        b.get_blocking(&oid(7)).map(|o| o.data().to_vec())
    });
    std::thread::sleep(Duration::from_millis(300));
    let _ = creator.kill();
    let _ = creator.wait();
    match waiter.recv_timeout(Duration::from_secs(60)) {
        Ok(Err(Error::NotFound(m))) => assert!(m.contains("disconnected"), "{m}"),
        other => panic!("the waiter must wake with an error, got {other:?}"),
    }
    // The key can be stored by someone else afterwards.
    a.put(&oid(7), b"second try").unwrap();
    assert_eq!(a.get(&oid(7)).unwrap().unwrap().data(), b"second try");
}

#[test]
fn plasma_waiters_wake_when_the_creator_aborts_or_disconnects() {
    let d = PlasmaDaemon::start(10_000_000, &[], no_setup);
    let get_in_thread = |sock: PathBuf, id: ObjectId| {
        wait_in_thread(move || {
            let p = PlasmaClient::connect(&sock, Some(50)).unwrap();
            p.get(&[id], -1).map(|v| v[0].is_some())
        })
    };
    // Plasma creator, Plasma waiter: abort, then disconnect.
    let a = PlasmaClient::connect(&d.sock, Some(50)).unwrap();
    let buf = a.create(&oid(1), 100, b"").unwrap();
    let w = get_in_thread(d.sock.clone(), oid(1));
    std::thread::sleep(Duration::from_millis(300));
    drop(buf);
    a.abort(&oid(1)).unwrap();
    assert!(
        !w.recv_timeout(Duration::from_secs(60)).unwrap().unwrap(),
        "the waiter wakes with the object missing"
    );
    let _buf2 = a.create(&oid(2), 100, b"").unwrap();
    let w = get_in_thread(d.sock.clone(), oid(2));
    // A native waiter of the same Plasma object.
    let sock = d.native.clone();
    let nw = wait_in_thread(move || {
        let b = Client::connect_socket(&sock).unwrap();
        b.get_blocking(&oid(2)).map(|o| o.data().to_vec())
    });
    std::thread::sleep(Duration::from_millis(300));
    a.disconnect().unwrap();
    assert!(
        !w.recv_timeout(Duration::from_secs(60)).unwrap().unwrap(),
        "the waiter wakes with the object missing"
    );
    assert!(matches!(
        nw.recv_timeout(Duration::from_secs(60))
            .expect("the native waiter wakes"),
        Err(Error::NotFound(_))
    ));

    // Native creator, Plasma waiter: the creator's connection ends before seal.
    let n = Client::connect_socket(&d.native).unwrap();
    let wo = n.create(&oid(3), 100, 0).unwrap();
    let w = get_in_thread(d.sock.clone(), oid(3));
    std::thread::sleep(Duration::from_millis(300));
    wo.abort().unwrap();
    assert!(
        !w.recv_timeout(Duration::from_secs(60)).unwrap().unwrap(),
        "the waiter wakes with the object missing"
    );
}

// ----- 9. bounded resources --------------------------------------------------------------------

/// Writes `frames` on a connection nobody reads; returns the daemon's heap growth once the
/// flood settles, and checks a well-behaved client meanwhile.
fn unread_flood(d: &mut Daemon, frames: Vec<u8>, what: &str) -> u64 {
    let pid = d.pid();
    let mut s = hello(&d.socket);
    let base = rss_anon(pid);
    let keep = s.try_clone().unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let (sent2, done2) = (sent.clone(), done.clone());
    let writer = std::thread::spawn(move || {
        write_counted(&mut s, &frames, &sent2);
        done2.store(1, Ordering::SeqCst);
    });
    let peak = flood_peak(pid, &sent, || done.load(Ordering::SeqCst) == 1);
    well_behaved(&d.socket, what);
    let grew = peak.saturating_sub(base);
    eprintln!(
        "{what}: daemon heap +{} MiB ({} MiB of requests taken)",
        grew / MIB,
        sent.load(Ordering::SeqCst) as u64 / MIB
    );
    let _ = keep.shutdown(std::net::Shutdown::Both);
    writer.join().unwrap();
    expect_alive(d);
    grew
}

#[test]
fn unread_replies_and_waiting_requests_are_bounded() {
    let mut d = Daemon::start(&["--no-warm"]);
    let c = d.client();
    let keys: Vec<Vec<u8>> = (0..2000u64)
        .map(|i| format!("listed-object-{i:06}").into_bytes())
        .collect();
    for chunk in keys.chunks(500) {
        let items: Vec<(&[u8], &[u8])> = chunk.iter().map(|k| (&k[..], &b"x"[..])).collect();
        for r in c.put_many(&items) {
            r.unwrap();
        }
    }

    // A List page is bounded, and the client still lists everything.
    let mut s = hello(&d.socket);
    s.write_all(
        &Request::List {
            cursor: 0,
            limit: u32::MAX,
        }
        .encode(5),
    )
    .unwrap();
    match read_reply(&mut s) {
        Some((_, Response::List { entries, .. })) => {
            assert!(entries.len() <= 1024, "a page of {} entries", entries.len())
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.list().unwrap().len(), 2000);
    drop(s);

    // 300,000 Stats requests whose replies are never read.
    let mut stats = Vec::new();
    for i in 0..300_000u64 {
        stats.extend_from_slice(&Request::Stats.encode(i));
    }
    let grew = unread_flood(&mut d, stats, "300k unread Stats replies");
    assert!(
        grew < 64 * MIB,
        "unread Stats replies hold {} MiB",
        grew / MIB
    );

    // 10,000 List requests of 2,000 objects each, never read.
    let mut lists = Vec::new();
    for i in 0..10_000u64 {
        lists.extend_from_slice(
            &Request::List {
                cursor: 0,
                limit: 10_000,
            }
            .encode(i),
        );
    }
    let grew = unread_flood(&mut d, lists, "10k unread Lists");
    assert!(
        grew < 64 * MIB,
        "unread List replies hold {} MiB",
        grew / MIB
    );

    // 300,000 gets waiting forever for keys nobody stores.
    let mut gets = Vec::new();
    for i in 0..300_000u64 {
        gets.extend_from_slice(
            &Request::Get {
                key: Key::new(format!("never-{i}").as_bytes()).unwrap(),
                timeout_ms: -1,
            }
            .encode(i),
        );
    }
    let grew = unread_flood(&mut d, gets, "300k waiting Gets");
    assert!(grew < 64 * MIB, "waiting gets hold {} MiB", grew / MIB);

    // 200 GetMany of 16,000 keys each, waiting forever.
    let mut many = Vec::new();
    for i in 0..200u64 {
        let keys: Vec<Key> = (0..16_000u64)
            .map(|j| Key::new(format!("n{i}-{j}").as_bytes()).unwrap())
            .collect();
        many.extend_from_slice(
            &Request::GetMany {
                keys,
                timeout_ms: -1,
            }
            .encode(i),
        );
    }
    let grew = unread_flood(&mut d, many, "200 waiting GetMany of 16k keys");
    assert!(grew < 64 * MIB, "waiting GetMany hold {} MiB", grew / MIB);
    assert!(
        eventually(Duration::from_secs(10), || stat(&c, "clients") == 1),
        "the flooders' sessions ended"
    );
}

#[test]
fn idle_connections_are_bounded_by_the_memory_limit() {
    let mut d = Daemon::start(&["--no-warm", "-m", "64M"]);
    let mut held = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..2000 {
        let mut s = raw(&d.socket);
        s.write_all(&hello_frame()).unwrap();
        match read_reply(&mut s) {
            Some((_, Response::Hello(_))) => held.push(s),
            Some((_, Response::Error { code, message })) => refused.push((code, message)),
            other => panic!("no clear answer: {other:?}"),
        }
    }
    eprintln!(
        "2000 idle connections: {} served, {} refused",
        held.len(),
        refused.len()
    );
    assert!(!refused.is_empty(), "some connections are refused");
    for (code, message) in &refused[..1] {
        assert_eq!(*code, Code::Busy, "{message}");
        assert!(message.contains("clients are connected"), "{message}");
    }
    // Every byte of shared memory the store holds (leases and data, not the index) fits in
    // the limit.
    let bytes: u64 = d
        .shm_files()
        .iter()
        .filter(|n| !n.ends_with(".ctl"))
        .map(|n| {
            std::fs::metadata(Path::new("/dev/shm").join(n))
                .unwrap()
                .len()
        })
        .sum();
    assert!(
        bytes <= 64 * MIB,
        "{} bytes of segments and lease pages for a 64 MiB store",
        bytes
    );
    // A client gets in once others leave.
    held.truncate(held.len() - 1);
    assert!(eventually(Duration::from_secs(10), || {
        Client::connect_socket(&d.socket).is_ok()
    }));
    drop(held);
    well_behaved(&d.socket, "idle");
    expect_alive(&mut d);
}

#[test]
fn the_connection_cap_refuses_with_a_clear_error() {
    let d = Daemon::start(&["--max-clients", "4"]);
    let held: Vec<Client> = (0..4).map(|_| d.client()).collect();
    match Client::connect_socket(&d.socket) {
        Err(Error::Busy(m)) => assert!(m.contains("4 clients are connected"), "{m}"),
        Err(e) => panic!("expected Busy, got {e}"),
        Ok(_) => panic!("a fifth client was served"),
    }
    drop(held);
    assert!(eventually(Duration::from_secs(10), || {
        Client::connect_socket(&d.socket).is_ok()
    }));
}

// ----- 10. file descriptors --------------------------------------------------------------------

fn limit_fds(n: u64) -> impl FnMut() -> std::io::Result<()> + Send + Sync + 'static {
    move || {
        use rustix::process::{setrlimit, Resource, Rlimit};
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(n),
                maximum: Some(n),
            },
        )
        .map_err(std::io::Error::from)
    }
}

#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s.sock");
    let mut cmd = Command::new(daemon_bin());
    cmd.args(["--store", &unique_store(), "--socket"])
        .arg(&socket)
        .args(["--no-warm", "-m", "16M", "--arena-size", "4M"])
        .env("CIDCACHE_LOG", "warn")
        .stdin(Stdio::null());
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            use rustix::process::{setrlimit, Resource, Rlimit};
            setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(64),
                    maximum: Some(4096),
                },
            )
            .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().unwrap();
    wait_for_socket(&socket, &mut child);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let soft: Vec<&str> = line.split_whitespace().collect();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(soft[3], "4096", "{line}");
}

#[test]
fn at_the_descriptor_limit_the_native_socket_refuses_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s.sock");
    let mut cmd = Command::new(daemon_bin());
    cmd.args(["--store", &unique_store(), "--socket"])
        .arg(&socket)
        .args([
            "--no-warm",
            "-m",
            "64M",
            "--arena-size",
            "16M",
            "--index-capacity",
            "1024",
        ])
        .env("CIDCACHE_LOG", "warn")
        .stdin(Stdio::null());
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(limit_fds(40));
    }
    let mut child = cmd.spawn().unwrap();
    wait_for_socket(&socket, &mut child);
    let pid = child.id() as i32;
    let mut held = Vec::new();
    let mut refusals = 0;
    for _ in 0..60 {
        let mut s = raw(&socket);
        s.write_all(&hello_frame()).unwrap();
        match read_reply(&mut s) {
            Some((_, Response::Hello(_))) => held.push(s),
            Some((_, Response::Error { code, message })) => {
                assert!(
                    code == Code::Busy || code == Code::Io,
                    "{code:?}: {message}"
                );
                assert!(message.contains("file"), "{message}");
                refusals += 1;
            }
            other => panic!("a client at the descriptor limit got no answer: {other:?}"),
        }
    }
    assert!(
        refusals > 0 && !held.is_empty(),
        "{} held, {refusals} refused",
        held.len()
    );
    // A connection waiting in the backlog does not make the accept loop spin.
    let _waiting = UnixStream::connect(&socket).unwrap();
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_ticks(pid) - before;
    assert!(
        used < 60,
        "the daemon used {used} ticks of CPU in 3 s at the limit"
    );
    drop(held);
    assert!(
        eventually(Duration::from_secs(10), || Client::connect_socket(&socket)
            .is_ok()),
        "served again once descriptors are free"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn at_the_descriptor_limit_the_plasma_socket_refuses_cleanly() {
    let mut d = PlasmaDaemon::start(10_000_000, &[], limit_fds(48));
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..60 {
        let mut s = UnixStream::connect(&d.sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        // A refused connection may be closed before the request is even written.
        if s.write_all(&pcodec::Request::Connect.encode_frame())
            .is_err()
        {
            refused += 1;
            continue;
        }
        let mut h = [0u8; pcodec::HEADER_LEN];
        match s.read_exact(&mut h) {
            Ok(()) => {
                let len = i64::from_le_bytes(h[16..24].try_into().unwrap()) as usize;
                let mut body = vec![0u8; len];
                s.read_exact(&mut body).unwrap();
                held.push(s);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("a Plasma client at the descriptor limit got no answer")
            }
            Err(_) => refused += 1,
        }
    }
    assert!(
        refused > 0 && !held.is_empty(),
        "{} held, {refused} refused",
        held.len()
    );
    let _waiting = UnixStream::connect(&d.sock).unwrap();
    let before = cpu_ticks(d.pid());
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_ticks(d.pid()) - before;
    assert!(
        used < 60,
        "the daemon used {used} ticks of CPU in 3 s at the limit"
    );
    let log = std::fs::read_to_string(&d.stderr).unwrap();
    let lines = log
        .lines()
        .filter(|l| l.contains("accept") || l.contains("refused"))
        .count();
    assert!(
        lines < 20,
        "{lines} log lines about accepting: {}",
        &log[..log.len().min(2000)]
    );
    drop(held);
    assert!(eventually(Duration::from_secs(10), || plasma_connect_raw(
        &d.sock
    ) == Some(true)));
    assert!(d.alive());
}
