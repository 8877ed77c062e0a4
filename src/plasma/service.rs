//! The Plasma service: the `plasma-store-server` command line and the event loop that serves a
//! [`PlasmaStore`] to Plasma clients.
//!
//! Command line (gflags style; `-s X`, `-s=X`, `--s=X`, `--s X` all work):
//! `-s <socket> -m <bytes> [-d <dir>] [-h] [-e <name://endpoint>]`, `--version`, plus the
//! cidcache extension `--native-socket <path>`. Errors print the reference messages and exit 1.
//!
//! Event loop: one thread, epoll over non-blocking sockets. Reads never block (frames are
//! reassembled from a per-client buffer; fds received with `recvmsg` are queued per client);
//! writes are queued per client (frames and fd passes, in order) and per subscriber
//! (notifications), flushed as far as the kernel allows, with partial writes resumed on EPOLLOUT.
//! A bad frame closes only that connection. The loop returns when its stop fd becomes readable.
//! Every send uses MSG_NOSIGNAL.

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::codec::{decode_request, decode_request_header, ObjectId, HEADER_LEN};
use super::fdpass::{recv_with_fds, send_fd, FdPassError};
use super::server::{ClientId, Flow, Output, PlasmaMemory, PlasmaStore};
use crate::limits::{
    is_exhaustion, FrameBudget, FramePermit, RateLimited, Spare, BODY_STALL, SMALL_BODY,
};
use crate::peer::PeerPolicy;
use rustix::event::epoll;
use rustix::io::Errno;
use rustix::net::{AddressFamily, SendFlags, SocketAddrUnix, SocketFlags, SocketType};

/// Program name used in command-line error messages (the reference store's).
pub const PROG: &str = "plasma-store-server";
const TOKEN_LISTENER: u64 = 0;
const TOKEN_STOP: u64 = 1;
const TOKEN_WAKE: u64 = 2;
const NOTIF_BIT: u64 = 1 << 62;
const READ_CHUNK: usize = 256 * 1024;
/// A client may have at most this many unclaimed fds queued.
const MAX_QUEUED_FDS: usize = 4;

/// The parsed `plasma-store-server` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlasmaArgs {
    /// `-s`: the Plasma socket path.
    pub socket: String,
    /// `-m`: the memory limit in bytes (exact Plasma accounting).
    pub memory: u64,
    /// `-d`: directory of the shared-memory segments (default `/dev/shm`).
    pub dir: PathBuf,
    /// `-h`: huge pages requested (accepted; segments stay in `dir`).
    pub huge: bool,
    /// `-e`: external store endpoint (`name://rest`), empty if none.
    pub external: String,
    /// `--native-socket`: where the native protocol is served (cidcache extension).
    pub native_socket: Option<PathBuf>,
}

/// The command line asks to exit now: print `stdout`/`stderr` and exit with `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgsExit {
    /// Exit status (0 for `--version`, 1 for errors).
    pub code: u8,
    /// Text for standard output.
    pub stdout: Option<String>,
    /// Text for standard error (already prefixed with the program name).
    pub stderr: Option<String>,
}

/// What `cidcached plasma --help` prints: plasma-store-server's flags (gflags style: `-m 1000`
/// and `-m=1000` both work; `-h` is huge pages, as in the reference store, not help).
const USAGE: &str = "\
usage: cidcached [DAEMON FLAGS] plasma -s SOCKET -m BYTES [-d DIR] [-h] [-e NAME://ENDPOINT] [--native-socket PATH]

Serves the Apache Arrow 11 Plasma protocol (plasma-store-server's command line) and the native
cidcache protocol over one store. See docs/plasma.md.

  -s SOCKET             Unix socket for Plasma clients (required)
  -m BYTES              memory for Plasma objects, in bytes (required)
  -d DIR                directory of the shared-memory segments (default /dev/shm)
  -h                    huge pages (accepted; segments live in DIR)
  -e NAME://ENDPOINT    external store for evicted objects: hashtable://NAME or parquet:///DIR
  --native-socket PATH  socket of the native protocol (default: the store's usual socket)
  --version             print the Plasma version this endpoint speaks
  --help                this text

Daemon flags (--store, --metrics-addr, --policy, ...) go before `plasma`: see `cidcached --help`.";

fn fail(msg: &str) -> ArgsExit {
    ArgsExit {
        code: 1,
        stdout: None,
        stderr: Some(format!("{PROG}: {msg}")),
    }
}

/// Parses `argv` (without the program or subcommand name) the way gflags parses the reference
/// store's flags. Never panics.
pub fn parse_args(argv: &[String]) -> Result<PlasmaArgs, ArgsExit> {
    let mut socket: Option<String> = None;
    let mut memory: Option<String> = None;
    let mut dir = PathBuf::from("/dev/shm");
    let mut huge = false;
    let mut external = String::new();
    let mut native_socket = None;
    let mut i = 0;
    while i < argv.len() {
        let arg = &argv[i];
        i += 1;
        let Some(stripped) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            // gflags stops at non-flag args; the store ignores them.
            continue;
        };
        if stripped.is_empty() {
            break; // "--" ends flags
        }
        let (name, inline) = match stripped.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (stripped, None),
        };
        match name {
            "version" => {
                return Err(ArgsExit {
                    code: 0,
                    stdout: Some(format!("{PROG} version 11.0.0")),
                    stderr: None,
                });
            }
            "help" | "helpshort" | "helpfull" => {
                return Err(ArgsExit {
                    code: 0,
                    stdout: Some(USAGE.to_string()),
                    stderr: None,
                });
            }
            "h" | "noh" => {
                huge = match inline.as_deref() {
                    None => name == "h",
                    Some("true" | "1" | "yes" | "t" | "y") => true,
                    Some("false" | "0" | "no" | "f" | "n") => false,
                    Some(v) => {
                        return Err(fail(&format!(
                            "illegal value '{v}' specified for bool flag 'h'"
                        )))
                    }
                };
            }
            "s" | "m" | "d" | "e" | "native-socket" | "native_socket" => {
                let value = match inline {
                    Some(v) => v,
                    None => {
                        if i >= argv.len() {
                            return Err(fail(&format!("flag '{name}' is missing its argument")));
                        }
                        i += 1;
                        argv[i - 1].clone()
                    }
                };
                match name {
                    "s" => socket = Some(value),
                    "m" => memory = Some(value),
                    "d" => dir = PathBuf::from(value),
                    "e" => external = value,
                    _ => native_socket = Some(PathBuf::from(value)),
                }
            }
            other => return Err(fail(&format!("unknown command line flag '{other}'"))),
        }
    }
    let (socket, memory) = match (
        socket.filter(|s| !s.is_empty()),
        memory.filter(|m| !m.is_empty()),
    ) {
        (None, None) => {
            return Err(fail(
                "please specify socket for incoming connections with -s, and the amount of memory (in bytes) to use with -m",
            ))
        }
        (None, _) => return Err(fail("please specify socket for incoming connections with -s")),
        (_, None) => {
            return Err(fail(
                "please specify the amount of memory (in bytes) to use with -m",
            ))
        }
        (Some(s), Some(m)) => (s, m),
    };
    // Like sscanf("%ld%c"): optional leading whitespace and sign, digits, nothing after them.
    let memory = match memory.trim_start().parse::<i64>() {
        Ok(v) if v >= 0 => v as u64,
        _ => {
            return Err(fail(
                "-m switch takes memory in bytes, with no letter suffix allowed",
            ))
        }
    };
    Ok(PlasmaArgs {
        socket,
        memory,
        dir,
        huge,
        external,
        native_socket,
    })
}

/// Errors of the Plasma service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Binding or configuring the listening socket failed.
    #[error("cannot listen on {path}: {source}")]
    Listen {
        /// The socket path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// An epoll or pipe system call failed.
    #[error("{what} failed: {source}")]
    Sys {
        /// The call.
        what: &'static str,
        /// The cause.
        source: Errno,
    },
}

/// Binds the Plasma socket like the reference: unlink a stale file, `SO_REUSEADDR`, bind,
/// listen with backlog 128. Non-blocking and close-on-exec. The socket file gets `mode`
/// (e.g. 0600) before the socket listens, whatever the umask: no client can connect while it
/// has another mode.
pub fn bind_listener(path: &str, mode: u32) -> Result<OwnedFd, ServiceError> {
    let err = |source: std::io::Error| ServiceError::Listen {
        path: path.to_string(),
        source,
    };
    let addr = SocketAddrUnix::new(path).map_err(|e| err(e.into()))?;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let sock = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(|e| err(e.into()))?;
    rustix::net::sockopt::set_socket_reuseaddr(&sock, true).map_err(|e| err(e.into()))?;
    rustix::net::bind(&sock, &addr).map_err(|e| err(e.into()))?;
    rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(mode)).map_err(|e| err(e.into()))?;
    rustix::net::listen(&sock, 128).map_err(|e| err(e.into()))?;
    Ok(sock)
}

/// A one-way wake-up channel into the event loop: ids of objects sealed elsewhere (by native
/// clients), or whose creation was abandoned there, delivered without blocking the sender.
pub struct WakeReceiver {
    fd: OwnedFd,
    ids: Arc<Mutex<Vec<(ObjectId, bool)>>>,
}

/// The sending side of a [`WakeReceiver`]; cheap to clone, never blocks.
#[derive(Clone)]
pub struct WakeSender {
    fd: Arc<OwnedFd>,
    ids: Arc<Mutex<Vec<(ObjectId, bool)>>>,
}

impl WakeSender {
    /// Queues `id` (sealed) and wakes the loop.
    pub fn send(&self, id: ObjectId) {
        self.push(id, true);
    }

    /// Queues `id` (its creator gave up: aborted it or disconnected before sealing it) and
    /// wakes the loop.
    pub fn send_abandoned(&self, id: ObjectId) {
        self.push(id, false);
    }

    fn push(&self, id: ObjectId, sealed: bool) {
        let first = {
            let mut v = self.ids.lock().unwrap_or_else(|p| p.into_inner());
            v.push((id, sealed));
            v.len() == 1
        };
        if first {
            // A full pipe already means a wake-up is pending.
            let _ = rustix::io::write(&*self.fd, b"w");
        }
    }
}

/// Creates a wake-up channel.
pub fn wake_channel() -> Result<(WakeSender, WakeReceiver), ServiceError> {
    let (r, w) = pipe()?;
    let ids = Arc::new(Mutex::new(Vec::new()));
    Ok((
        WakeSender {
            fd: Arc::new(w),
            ids: ids.clone(),
        },
        WakeReceiver { fd: r, ids },
    ))
}

/// A non-blocking, close-on-exec pipe `(read, write)`; writing a byte to the write end of a
/// pipe passed to [`serve`] as its stop fd makes the loop return.
pub fn pipe() -> Result<(OwnedFd, OwnedFd), ServiceError> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK)
        .map_err(|source| ServiceError::Sys {
            what: "pipe",
            source,
        })
}

/// Limits and admission rules of the event loop.
pub struct ServeOptions {
    /// Largest body of a `CreateAndSeal(Batch)` request, whose object bytes travel inline;
    /// every other message is bounded by [`super::codec::CONTROL_MAX`]. Larger frames close
    /// their connection.
    pub max_frame: u64,
    /// Bytes of frame bodies being received at once (shared with other front-ends).
    pub budget: Arc<FrameBudget>,
    /// Connections served at once; more are accepted and closed at once (logged).
    pub max_clients: usize,
    /// Who may connect (`None`: whoever can open the socket file).
    pub peer: Option<PeerPolicy>,
}

impl ServeOptions {
    /// The defaults: 64 MiB frames, a 256 MiB budget, 1024 clients, no peer check.
    pub fn new() -> ServeOptions {
        ServeOptions {
            max_frame: 64 << 20,
            budget: FrameBudget::new(256 << 20),
            max_clients: 1024,
            peer: None,
        }
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions::new()
    }
}

/// Bytes of replies a connection may have queued that its client has not read: past this its
/// requests are not read (nor the frames already received handled) until it catches up.
pub const REPLY_QUEUE: usize = 1 << 20;
/// Bytes of notifications a subscriber may leave unread; past this it is unsubscribed.
pub const NOTIFY_QUEUE: usize = 4 << 20;

enum OutItem {
    Bytes(Vec<u8>, usize),
    Fd(i32),
}

struct Notif {
    fd: OwnedFd,
    queue: VecDeque<(Vec<u8>, usize)>,
    bytes: usize,
    want_out: bool,
}

struct Conn {
    sock: OwnedFd,
    inbuf: Vec<u8>,
    fds: VecDeque<OwnedFd>,
    out: VecDeque<OutItem>,
    out_bytes: usize,
    /// Events registered for the socket now.
    interest: epoll::EventFlags,
    notif: Option<Notif>,
    /// Budget held for the large frame being received.
    permit: Option<FramePermit>,
    /// Body length of a large frame waiting for budget (then the connection is not read).
    starved: Option<u64>,
    /// When a byte of the frame held by `permit` last arrived.
    progress: Instant,
}

impl Conn {
    /// Whether the connection's requests are read and handled now.
    fn accepts_input(&self) -> bool {
        self.starved.is_none() && self.out_bytes <= REPLY_QUEUE
    }
}

struct Server<M: PlasmaMemory> {
    ep: OwnedFd,
    store: PlasmaStore<M>,
    conns: HashMap<ClientId, Conn>,
    next_id: ClientId,
    max_frame: u64,
    budget: Arc<FrameBudget>,
    max_clients: usize,
    peer: Option<PeerPolicy>,
    /// Connections waiting for frame budget, oldest first.
    starved: VecDeque<ClientId>,
    /// Connections whose reply queue drained below the bound: handle their buffered frames.
    resume: Vec<ClientId>,
    read_buf: Vec<u8>,
    spare: Spare,
    /// The listener is out of the epoll set until then (no descriptor to accept with).
    listener_paused: Option<Instant>,
    accept_log: RateLimited,
    refuse_log: RateLimited,
}

fn is_would_block(e: Errno) -> bool {
    e == Errno::AGAIN || e == Errno::WOULDBLOCK
}

/// Sends on a socket without SIGPIPE; falls back to write() for non-sockets.
fn send_nosig(fd: &OwnedFd, buf: &[u8]) -> Result<usize, Errno> {
    match rustix::net::send(fd, buf, SendFlags::NOSIGNAL) {
        Err(Errno::NOTSOCK) => rustix::io::write(fd, buf),
        r => r,
    }
}

impl<M: PlasmaMemory> Server<M> {
    fn accept_all(&mut self, listener: &OwnedFd) {
        loop {
            match rustix::net::accept_with(listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC) {
                Ok(sock) => {
                    if let Some(p) = &self.peer {
                        if let Err(e) = p.check(&sock) {
                            self.refuse_log.warn(|| format!("plasma: {e}"));
                            continue;
                        }
                    }
                    if self.conns.len() >= self.max_clients {
                        let n = self.conns.len();
                        self.refuse_log.warn(|| {
                            format!("plasma: refused a connection: {n} clients are connected, the most allowed (--max-clients)")
                        });
                        continue;
                    }
                    let id = self.next_id;
                    self.next_id += 1;
                    if epoll::add(
                        &self.ep,
                        &sock,
                        epoll::EventData::new_u64(id),
                        epoll::EventFlags::IN,
                    )
                    .is_err()
                    {
                        continue;
                    }
                    self.store.add_client(id);
                    self.conns.insert(
                        id,
                        Conn {
                            sock,
                            inbuf: Vec::new(),
                            fds: VecDeque::new(),
                            out: VecDeque::new(),
                            out_bytes: 0,
                            interest: epoll::EventFlags::IN,
                            notif: None,
                            permit: None,
                            starved: None,
                            progress: Instant::now(),
                        },
                    );
                }
                Err(Errno::INTR) | Err(Errno::CONNABORTED) => continue,
                Err(e) if is_would_block(e) => return,
                Err(e) if is_exhaustion(e) => {
                    // Out of descriptors: the waiting client would hang in the backlog and
                    // this level-triggered listener would wake the loop at once, forever.
                    // Give up the spare to take the client and close it, so it learns now.
                    // (At the limit accept fails even when nobody waits: then stop here.)
                    if self.spare.release() {
                        let taken = rustix::net::accept_with(listener, SocketFlags::CLOEXEC);
                        let nobody = matches!(taken, Err(e) if is_would_block(e));
                        let refused = taken.is_ok();
                        drop(taken);
                        self.spare.restore();
                        if nobody {
                            return;
                        }
                        if refused {
                            self.accept_log.warn(|| {
                                format!("plasma: refused a connection: out of file descriptors ({e}); raise the limit (ulimit -n) or lower --max-clients")
                            });
                            continue;
                        }
                    }
                    self.accept_log.warn(|| {
                        format!("plasma: cannot accept connections: {e}; pausing the listener")
                    });
                    let _ = epoll::modify(
                        &self.ep,
                        listener,
                        epoll::EventData::new_u64(TOKEN_LISTENER),
                        epoll::EventFlags::empty(),
                    );
                    self.listener_paused = Some(Instant::now() + Duration::from_millis(100));
                    return;
                }
                Err(e) => {
                    self.accept_log
                        .warn(|| format!("plasma: accept failed: {e}"));
                    return;
                }
            }
        }
    }

    /// Puts a paused listener back into the epoll set once its pause is over.
    fn resume_listener(&mut self, listener: &OwnedFd, now: Instant) {
        if self.listener_paused.is_some_and(|t| now >= t) {
            self.listener_paused = None;
            self.spare.restore();
            let _ = epoll::modify(
                &self.ep,
                listener,
                epoll::EventData::new_u64(TOKEN_LISTENER),
                epoll::EventFlags::IN,
            );
        }
    }

    fn disconnect(&mut self, id: ClientId) {
        if let Some(c) = self.conns.remove(&id) {
            let _ = epoll::delete(&self.ep, &c.sock);
            if let Some(n) = &c.notif {
                let _ = epoll::delete(&self.ep, &n.fd);
            }
            // Dropping `c` closes the socket and the notification fd, and gives back its
            // frame budget.
        }
        self.starved.retain(|c| *c != id);
        self.store.disconnect_client(id);
        self.pump();
    }

    /// Registers the events the connection's state calls for: input unless it waits for
    /// budget or for its client to read its replies; output while replies are queued.
    fn update_interest(&mut self, id: ClientId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let mut flags = epoll::EventFlags::empty();
        if c.accepts_input() {
            flags |= epoll::EventFlags::IN;
        }
        if !c.out.is_empty() {
            flags |= epoll::EventFlags::OUT;
        }
        if flags != c.interest {
            c.interest = flags;
            let _ = epoll::modify(&self.ep, &c.sock, epoll::EventData::new_u64(id), flags);
        }
    }

    fn on_readable(&mut self, id: ClientId, hangup: bool) {
        loop {
            let Some(c) = self.conns.get_mut(&id) else {
                return;
            };
            if !c.accepts_input() {
                // A client that hung up cannot read the replies it is waiting for.
                if hangup {
                    self.disconnect(id);
                }
                return;
            }
            let mut fds = Vec::new();
            match recv_with_fds(&c.sock, &mut self.read_buf, &mut fds) {
                Ok(0) => {
                    self.disconnect(id);
                    return;
                }
                Ok(n) => {
                    c.inbuf.extend_from_slice(&self.read_buf[..n]);
                    c.fds.extend(fds);
                    c.progress = Instant::now();
                    if c.fds.len() > MAX_QUEUED_FDS {
                        tracing::warn!("plasma: client {id} sent too many fds; disconnecting");
                        self.disconnect(id);
                        return;
                    }
                    if !self.process_frames(id) {
                        return;
                    }
                    self.update_interest(id);
                    if n < self.read_buf.len() {
                        return;
                    }
                }
                Err(FdPassError::WouldBlock) => return,
                Err(e) => {
                    tracing::debug!("plasma: read error on client {id}: {e}; disconnecting");
                    self.disconnect(id);
                    return;
                }
            }
        }
    }

    /// Handles every complete frame in the client's buffer, until its reply queue is full or
    /// a large frame waits for budget. Returns false if the client was disconnected.
    fn process_frames(&mut self, id: ClientId) -> bool {
        let mut consumed = 0usize;
        loop {
            let Some(c) = self.conns.get_mut(&id) else {
                return false;
            };
            if !c.accepts_input() {
                break;
            }
            let avail = &c.inbuf[consumed..];
            if avail.len() < HEADER_LEN {
                break;
            }
            let hdr: &[u8; HEADER_LEN] = avail[..HEADER_LEN].try_into().expect("length checked");
            let h = match decode_request_header(hdr, self.max_frame) {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!("plasma: bad frame from client {id}: {e}; disconnecting");
                    self.disconnect(id);
                    return false;
                }
            };
            let body_len = h.body_len as usize;
            if avail.len() - HEADER_LEN < body_len {
                // A large body is received only against the budget; the buffer then grows
                // with what arrives, never to the declared length up front.
                if h.body_len > SMALL_BODY && c.permit.is_none() {
                    match self.budget.try_take(h.body_len) {
                        Some(p) => {
                            c.permit = Some(p);
                            c.progress = Instant::now();
                        }
                        None => {
                            c.starved = Some(h.body_len);
                            self.starved.push_back(id);
                        }
                    }
                }
                break;
            }
            let is_subscribe = h.msg_type == 23;
            let frame_end = consumed + HEADER_LEN + body_len;
            // Subscribe is followed by 1 byte carrying the notification fd.
            if is_subscribe && (c.inbuf.len() < frame_end + 1 || c.fds.is_empty()) {
                break;
            }
            let body = &c.inbuf[consumed + HEADER_LEN..frame_end];
            let req = match decode_request(h.msg_type, body) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(
                        "plasma: cannot decode message type {} from client {id}: {e}; disconnecting",
                        h.msg_type
                    );
                    self.disconnect(id);
                    return false;
                }
            };
            consumed = frame_end;
            if is_subscribe {
                consumed += 1;
                let fd = c.fds.pop_front().expect("checked non-empty");
                if let Some(old) = c.notif.take() {
                    let _ = epoll::delete(&self.ep, &old.fd);
                }
                let _ = rustix::fs::fcntl_setfl(&fd, rustix::fs::OFlags::NONBLOCK);
                let _ = epoll::add(
                    &self.ep,
                    &fd,
                    epoll::EventData::new_u64(id | NOTIF_BIT),
                    epoll::EventFlags::empty(),
                );
                c.notif = Some(Notif {
                    fd,
                    queue: VecDeque::new(),
                    bytes: 0,
                    want_out: false,
                });
            }
            // `req` borrows `self.conns` (the connection buffer) while the
            // store is a disjoint field, so no copy of the body is needed.
            let flow = self.store.handle(id, req, Instant::now());
            // The frame is complete: its budget goes back.
            let freed = self
                .conns
                .get_mut(&id)
                .and_then(|c| c.permit.take())
                .is_some();
            self.pump();
            if freed {
                self.feed_starved();
            }
            if flow == Flow::Close {
                self.disconnect(id);
                return false;
            }
            if !self.conns.contains_key(&id) {
                return false;
            }
        }
        if let Some(c) = self.conns.get_mut(&id) {
            c.inbuf.drain(..consumed);
            // Do not keep a large frame's buffer for an idle connection.
            if c.inbuf.capacity() > 2 * READ_CHUNK && c.inbuf.len() <= READ_CHUNK {
                c.inbuf.shrink_to(READ_CHUNK);
            }
        }
        true
    }

    /// Gives budget to connections waiting for it, oldest first, and lets them read again.
    fn feed_starved(&mut self) {
        while let Some(&id) = self.starved.front() {
            let Some(c) = self.conns.get_mut(&id) else {
                self.starved.pop_front();
                continue;
            };
            let Some(len) = c.starved else {
                self.starved.pop_front();
                continue;
            };
            let Some(p) = self.budget.try_take(len) else {
                return;
            };
            self.starved.pop_front();
            c.permit = Some(p);
            c.starved = None;
            c.progress = Instant::now();
            self.update_interest(id);
        }
    }

    /// Closes connections whose large frame made no progress for [`BODY_STALL`]: they hold
    /// budget that others wait for.
    fn drop_stalled(&mut self, now: Instant) {
        let stalled: Vec<ClientId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.permit.is_some() && now.duration_since(c.progress) >= BODY_STALL)
            .map(|(&id, _)| id)
            .collect();
        for id in stalled {
            tracing::warn!(
                "plasma: client {id} sent no byte of its frame for {}s; disconnecting",
                BODY_STALL.as_secs()
            );
            self.disconnect(id);
        }
        if !self.starved.is_empty() {
            self.feed_starved();
        }
    }

    /// Moves store outputs into per-connection queues and flushes them.
    fn pump(&mut self) {
        let mut touched = Vec::new();
        while let Some(o) = self.store.pop_output() {
            match o {
                Output::Reply {
                    client,
                    frame,
                    segments,
                } => {
                    if let Some(c) = self.conns.get_mut(&client) {
                        c.out_bytes += frame.len();
                        c.out.push_back(OutItem::Bytes(frame, 0));
                        c.out.extend(segments.into_iter().map(OutItem::Fd));
                        touched.push(client);
                    }
                }
                Output::Notify { client, message } => {
                    if let Some(n) = self.conns.get_mut(&client).and_then(|c| c.notif.as_mut()) {
                        n.bytes += message.len();
                        n.queue.push_back((message, 0));
                        touched.push(client | NOTIF_BIT);
                    }
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for t in touched {
            if t & NOTIF_BIT != 0 {
                self.flush_notif(t & !NOTIF_BIT);
            } else {
                self.flush(t);
            }
        }
    }

    fn flush(&mut self, id: ClientId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let was_full = c.out_bytes > REPLY_QUEUE;
        let mut broken = false;
        while let Some(item) = c.out.front_mut() {
            match item {
                OutItem::Bytes(v, off) => match send_nosig(&c.sock, &v[*off..]) {
                    Ok(n) => {
                        *off += n;
                        if *off == v.len() {
                            c.out_bytes -= v.len();
                            c.out.pop_front();
                        }
                    }
                    Err(Errno::INTR) => {}
                    Err(e) if is_would_block(e) => break,
                    Err(_) => {
                        broken = true;
                        break;
                    }
                },
                OutItem::Fd(seg) => {
                    let seg = *seg;
                    let Some(fd) = self.store.memory().segment_fd(seg) else {
                        c.out.pop_front();
                        continue;
                    };
                    match send_fd(&c.sock, fd) {
                        Ok(()) => {
                            c.out.pop_front();
                        }
                        Err(FdPassError::WouldBlock) => break,
                        Err(_) => {
                            broken = true;
                            break;
                        }
                    }
                }
            }
        }
        if broken {
            self.disconnect(id);
            return;
        }
        if was_full && c.out_bytes <= REPLY_QUEUE {
            // Frames it sent meanwhile wait in its buffer.
            self.resume.push(id);
        }
        self.update_interest(id);
    }

    fn flush_notif(&mut self, id: ClientId) {
        let Some(n) = self.conns.get_mut(&id).and_then(|c| c.notif.as_mut()) else {
            return;
        };
        let mut broken = false;
        while let Some((v, off)) = n.queue.front_mut() {
            match send_nosig(&n.fd, &v[*off..]) {
                Ok(k) => {
                    *off += k;
                    if *off == v.len() {
                        n.bytes -= v.len();
                        n.queue.pop_front();
                    }
                }
                Err(Errno::INTR) => {}
                Err(e) if is_would_block(e) => break,
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        if n.bytes > NOTIFY_QUEUE {
            tracing::warn!(
                "plasma: client {id} left {} bytes of notifications unread; unsubscribing it",
                n.bytes
            );
            broken = true;
        }
        if broken {
            // EPIPE etc.: drop the subscriber, keep the main connection.
            if let Some(c) = self.conns.get_mut(&id) {
                if let Some(n) = c.notif.take() {
                    let _ = epoll::delete(&self.ep, &n.fd);
                }
            }
            self.store.unsubscribe(id);
            return;
        }
        let want = !n.queue.is_empty();
        if want != n.want_out {
            n.want_out = want;
            let flags = if want {
                epoll::EventFlags::OUT
            } else {
                epoll::EventFlags::empty()
            };
            let _ = epoll::modify(
                &self.ep,
                &n.fd,
                epoll::EventData::new_u64(id | NOTIF_BIT),
                flags,
            );
        }
    }

    /// Handles the frames buffered by connections whose reply queue drained.
    fn resume_input(&mut self) {
        while let Some(id) = self.resume.pop() {
            if self.conns.get(&id).is_some_and(|c| c.accepts_input()) && self.process_frames(id) {
                self.update_interest(id);
            }
        }
    }
}

/// Serves `store` on `listener` until `stop` becomes readable. Never blocks on a client.
pub fn serve<M: PlasmaMemory>(
    store: PlasmaStore<M>,
    listener: OwnedFd,
    stop: OwnedFd,
    wake: Option<WakeReceiver>,
    opts: ServeOptions,
) -> Result<(), ServiceError> {
    let sys = |what| move |source| ServiceError::Sys { what, source };
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(sys("epoll_create"))?;
    let add = |fd: &OwnedFd, token| {
        epoll::add(
            &ep,
            fd,
            epoll::EventData::new_u64(token),
            epoll::EventFlags::IN,
        )
    };
    add(&listener, TOKEN_LISTENER).map_err(sys("epoll_ctl"))?;
    add(&stop, TOKEN_STOP).map_err(sys("epoll_ctl"))?;
    if let Some(w) = &wake {
        add(&w.fd, TOKEN_WAKE).map_err(sys("epoll_ctl"))?;
    }
    // A CreateAndSeal larger than the store can never succeed.
    let max_frame = opts.max_frame.min(store.limit().saturating_add(1 << 20));
    let mut srv = Server {
        ep,
        store,
        conns: HashMap::new(),
        next_id: 3,
        max_frame,
        budget: opts.budget,
        max_clients: opts.max_clients.max(1),
        peer: opts.peer,
        starved: VecDeque::new(),
        resume: Vec::new(),
        read_buf: vec![0u8; READ_CHUNK],
        spare: Spare::new(),
        listener_paused: None,
        accept_log: RateLimited::new(Duration::from_secs(10)),
        refuse_log: RateLimited::new(Duration::from_secs(10)),
    };
    let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
    let mut next_maintain = Instant::now() + Duration::from_secs(1);
    loop {
        let now = Instant::now();
        let mut deadline = srv
            .store
            .next_deadline()
            .map_or(next_maintain, |d| d.min(next_maintain));
        if let Some(t) = srv.listener_paused {
            deadline = deadline.min(t);
        }
        if !srv.starved.is_empty() {
            // Budget may come back from another front-end, which cannot wake this loop.
            deadline = deadline.min(now + Duration::from_millis(20));
        }
        let left = deadline.saturating_duration_since(now);
        let timeout = rustix::time::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: left.subsec_nanos() as i64,
        };
        events.clear();
        match epoll::wait(
            &srv.ep,
            rustix::buffer::spare_capacity(&mut events),
            Some(&timeout),
        ) {
            Ok(_) => {}
            Err(Errno::INTR) => continue,
            Err(e) => return Err(sys("epoll_wait")(e)),
        }
        for ev in events.iter() {
            let token = ev.data.u64();
            let flags = ev.flags;
            match token {
                TOKEN_LISTENER => srv.accept_all(&listener),
                TOKEN_STOP => return Ok(()),
                TOKEN_WAKE => {
                    if let Some(w) = &wake {
                        let mut buf = [0u8; 64];
                        while matches!(rustix::io::read(&w.fd, &mut buf), Ok(n) if n > 0) {}
                        let ids =
                            std::mem::take(&mut *w.ids.lock().unwrap_or_else(|p| p.into_inner()));
                        for (id, sealed) in ids {
                            if sealed {
                                srv.store.foreign_sealed(&id);
                            } else {
                                srv.store.foreign_abandoned(&id);
                            }
                        }
                    }
                }
                t if t & NOTIF_BIT != 0 => {
                    let id = t & !NOTIF_BIT;
                    if flags.intersects(epoll::EventFlags::ERR | epoll::EventFlags::HUP) {
                        if let Some(c) = srv.conns.get_mut(&id) {
                            if let Some(n) = c.notif.take() {
                                let _ = epoll::delete(&srv.ep, &n.fd);
                            }
                        }
                        srv.store.unsubscribe(id);
                    } else {
                        srv.flush_notif(id);
                    }
                }
                id => {
                    if flags.contains(epoll::EventFlags::OUT) {
                        srv.flush(id);
                    }
                    let hangup = flags.intersects(epoll::EventFlags::ERR | epoll::EventFlags::HUP);
                    if hangup || flags.contains(epoll::EventFlags::IN) {
                        srv.on_readable(id, hangup);
                    }
                }
            }
        }
        srv.resume_input();
        let now = Instant::now();
        srv.store.fire_timers(now);
        srv.resume_listener(&listener, now);
        if !srv.starved.is_empty() {
            srv.feed_starved();
        }
        if now >= next_maintain {
            srv.store.memory_mut().maintain();
            srv.drop_stalled(now);
            next_maintain = now + Duration::from_secs(1);
        }
        srv.pump();
        srv.resume_input();
    }
}
