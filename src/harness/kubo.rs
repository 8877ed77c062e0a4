//! Real kubo (go-ipfs) nodes for the IPFS tests and benchmarks, confined to this machine.
//!
//! The binary comes from `scripts/kubo.sh` (built once from the Go module proxy and cached
//! outside the repository); the test command passes its path in `CIDCACHE_KUBO`. Each node gets
//! its own `IPFS_PATH` in a temporary directory, is started here and stopped by its pid, and is
//! configured so that it dials nothing beyond this machine: no bootstrap or peering, no MDNS,
//! no routing (DHT or delegated), no pubsub, AutoTLS/AutoConf/AutoNAT off, no providing, no
//! HTTP retrieval, no DNS resolvers or DNSLink, API/gateway/swarm on 127.0.0.1 over TCP only,
//! nothing announced, every IPv4 address but 127.0.0.0/8 and every IPv6 address filtered, no
//! NAT port mapping, hole punching or relay, and telemetry off. [`Kubo::foreign_connections`]
//! checks that from /proc while the node runs.
//!
//! Not a stable API: exposed for the tests and benchmarks only.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable naming the kubo binary.
pub const KUBO_ENV: &str = "CIDCACHE_KUBO";

/// The kubo binary from `CIDCACHE_KUBO`, or `None` (with a message saying how to get one)
/// when it is unset: tests that need kubo skip then, so `cargo test` alone still passes.
pub fn binary(test: &str) -> Option<PathBuf> {
    match std::env::var_os(KUBO_ENV) {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            // Straight to standard error: the test harness captures eprintln!, and a skip
            // must be seen.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: {KUBO_ENV} is not set (scripts/test.sh sets it; by hand: {KUBO_ENV}=$(scripts/kubo.sh) cargo test ...)"
            );
            None
        }
    }
}

/// IPv4 outside 127.0.0.0/8, as CIDR blocks for `Swarm.AddrFilters`, and all of IPv6.
const FILTERED: [&str; 9] = [
    "/ip4/0.0.0.0/ipcidr/2",
    "/ip4/64.0.0.0/ipcidr/3",
    "/ip4/96.0.0.0/ipcidr/4",
    "/ip4/112.0.0.0/ipcidr/5",
    "/ip4/120.0.0.0/ipcidr/6",
    "/ip4/124.0.0.0/ipcidr/7",
    "/ip4/126.0.0.0/ipcidr/8",
    "/ip4/128.0.0.0/ipcidr/1",
    "/ip6/::/ipcidr/0",
];

/// A running kubo daemon. Stopped (by pid) and its repository removed when dropped.
pub struct Kubo {
    bin: PathBuf,
    child: Child,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT` of its RPC API.
    pub api: String,
    /// `http://127.0.0.1:PORT` of its gateway.
    pub gateway: String,
    /// `/ip4/127.0.0.1/tcp/PORT/p2p/PEERID`, for another node to connect to.
    pub swarm: String,
}

fn set(cfg: &mut serde_json::Value, path: &str, v: serde_json::Value) {
    let mut cur = cfg;
    let parts: Vec<&str> = path.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        if !cur.get(*p).is_some_and(|x| x.is_object()) {
            cur[*p] = serde_json::json!({});
        }
        cur = &mut cur[*p];
    }
    cur[parts[parts.len() - 1]] = v;
}

/// Sets every configuration key that keeps a node on this machine.
fn confine(cfg: &mut serde_json::Value) {
    use serde_json::json;
    let local = "/ip4/127.0.0.1/tcp/0";
    for (k, v) in [
        ("Bootstrap", json!([])),
        ("Peering.Peers", json!([])),
        ("Discovery.MDNS.Enabled", json!(false)),
        ("Routing.Type", json!("none")),
        ("Routing.DelegatedRouters", json!([])),
        ("Routing.AcceleratedDHTClient", json!(false)),
        ("Ipns.DelegatedPublishers", json!([])),
        ("Ipns.UsePubsub", json!(false)),
        ("Pubsub.Enabled", json!(false)),
        ("AutoTLS.Enabled", json!(false)),
        ("AutoConf.Enabled", json!(false)),
        ("AutoNAT.ServiceMode", json!("disabled")),
        ("Provide.Enabled", json!(false)),
        ("HTTPRetrieval.Enabled", json!(false)),
        ("DNS.Resolvers", json!({})),
        ("Gateway.NoDNSLink", json!(true)),
        ("Internal.CGNATCheck", json!(false)),
        ("Addresses.API", json!(local)),
        ("Addresses.Gateway", json!(local)),
        ("Addresses.Swarm", json!([local])),
        ("Addresses.Announce", json!([])),
        ("Addresses.AppendAnnounce", json!([])),
        ("Swarm.AddrFilters", json!(FILTERED)),
        ("Swarm.DisableNatPortMap", json!(true)),
        ("Swarm.EnableHolePunching", json!(false)),
        ("Swarm.RelayClient.Enabled", json!(false)),
        ("Swarm.RelayService.Enabled", json!(false)),
        ("Swarm.Transports.Network.QUIC", json!(false)),
        ("Swarm.Transports.Network.WebTransport", json!(false)),
        ("Swarm.Transports.Network.WebRTCDirect", json!(false)),
        ("Swarm.Transports.Network.Websocket", json!(false)),
        ("Swarm.Transports.Network.Relay", json!(false)),
        ("Swarm.Transports.Network.TCP", json!(true)),
        ("Plugins.Plugins.telemetry.Disabled", json!(true)),
        ("Plugins.Plugins.telemetry.Config.Mode", json!("off")),
    ] {
        set(cfg, k, v);
    }
}

fn ipfs(bin: &Path, repo: &Path) -> Command {
    let mut c = Command::new(bin);
    c.env("IPFS_PATH", repo)
        .env("IPFS_TELEMETRY", "off")
        .env("DO_NOT_TRACK", "1")
        .stdin(Stdio::null());
    c
}

impl Kubo {
    /// Initialises a repository (`--profile test`), confines it and starts its daemon; waits
    /// (up to two minutes: the machine may be loaded) until it is ready.
    pub fn start(bin: &Path) -> std::io::Result<Kubo> {
        let dir = tempfile::Builder::new().prefix("cidcache-kubo").tempdir()?;
        let repo = dir.path().join("repo");
        let out = ipfs(bin, &repo)
            .args(["init", "--profile", "test"])
            .output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "ipfs init failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let path = repo.join("config");
        let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        confine(&mut cfg);
        std::fs::write(&path, serde_json::to_vec_pretty(&cfg)?)?;
        let mut child = ipfs(bin, &repo)
            .args(["daemon", "--migrate=false", "--enable-gc=false"])
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(
                dir.path().join("daemon.err"),
            )?))
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        // Read the addresses it chose from its banner, on a thread (a bounded wait).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut api, mut gateway, mut swarm_port, mut peer) = (None, None, None, None);
        let deadline = Instant::now() + Duration::from_secs(120);
        let port = |l: &str| l.rsplit('/').next().map(str::to_string);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let err =
                        std::fs::read_to_string(dir.path().join("daemon.err")).unwrap_or_default();
                    return Err(std::io::Error::other(format!(
                        "ipfs daemon did not become ready: {err}"
                    )));
                }
            };
            if line.starts_with("RPC API server listening on") {
                api = port(&line);
            } else if line.starts_with("Gateway server listening on") {
                gateway = port(&line);
            } else if let Some(rest) = line.strip_prefix("Swarm listening on ") {
                // `127.0.0.1:PORT (TCP)`
                let addr = rest.split_whitespace().next().unwrap_or("");
                swarm_port = addr.rsplit(':').next().map(str::to_string);
            } else if let Some(id) = line.strip_prefix("PeerID: ") {
                peer = Some(id.trim().to_string());
            } else if line.contains("Daemon is ready") {
                break;
            }
        }
        let (Some(api), Some(gateway), Some(swarm_port), Some(peer)) =
            (api, gateway, swarm_port, peer)
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other(
                "ipfs daemon did not print its addresses",
            ));
        };
        Ok(Kubo {
            bin: bin.to_path_buf(),
            child,
            api: format!("http://127.0.0.1:{api}"),
            gateway: format!("http://127.0.0.1:{gateway}"),
            swarm: format!("/ip4/127.0.0.1/tcp/{swarm_port}/p2p/{peer}"),
            dir,
        })
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The repository (`IPFS_PATH`).
    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// An `ipfs` command line against this node (its own `IPFS_PATH`, telemetry off).
    pub fn cmd(&self) -> Command {
        ipfs(&self.bin, &self.repo())
    }

    /// Runs `ipfs ARGS` against this node with `input` on standard input; its standard output.
    pub fn run(&self, args: &[&str], input: Option<&[u8]>) -> std::io::Result<Vec<u8>> {
        use std::io::Write;
        let mut c = self.cmd();
        c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        if input.is_some() {
            c.stdin(Stdio::piped());
        }
        let mut child = c.spawn()?;
        if let Some(data) = input {
            let mut stdin = child.stdin.take().expect("piped");
            let data = data.to_vec();
            std::thread::spawn(move || stdin.write_all(&data));
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "ipfs {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(out.stdout)
    }

    /// `ipfs add --cid-version 1 --raw-leaves` of `data` (pinned); the root CID as text.
    pub fn add(&self, data: &[u8], extra: &[&str]) -> std::io::Result<String> {
        let mut args = vec!["add", "-Q", "--cid-version", "1", "--raw-leaves"];
        args.extend_from_slice(extra);
        let out = self.run(&args, Some(data))?;
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    }

    /// Connects this node's swarm to `other`'s (both on loopback).
    pub fn connect(&self, other: &Kubo) -> std::io::Result<()> {
        self.run(&["swarm", "connect", &other.swarm], None)
            .map(|_| ())
    }

    /// Every connected socket of the daemon whose remote end is not on the loopback
    /// interface, as `proto local -> remote` (read from /proc; empty when it stays local).
    pub fn foreign_connections(&self) -> std::io::Result<Vec<String>> {
        foreign_connections(self.pid())
    }
}

impl Drop for Kubo {
    fn drop(&mut self) {
        // SIGTERM by pid (kubo shuts down cleanly), SIGKILL if it has not gone in 30 s.
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Socket inodes the process `pid` holds.
fn socket_inodes(pid: u32) -> std::io::Result<std::collections::HashSet<u64>> {
    let mut out = std::collections::HashSet::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(target) = std::fs::read_link(e?.path()) else {
            continue;
        };
        let t = target.to_string_lossy();
        if let Some(n) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
            if let Ok(n) = n.parse() {
                out.insert(n);
            }
        }
    }
    Ok(out)
}

/// Decodes a /proc/net address (`0100007F:1F90`, or 32 hex digits for IPv6).
fn proc_addr(s: &str) -> Option<(std::net::IpAddr, u16)> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let bytes: Vec<u8> = (0..ip.len() / 2)
        .map(|i| u8::from_str_radix(&ip[2 * i..2 * i + 2], 16))
        .collect::<Result<_, _>>()
        .ok()?;
    // The kernel prints each 32-bit word in host (little-endian) order.
    let mut b = Vec::with_capacity(bytes.len());
    for w in bytes.chunks(4) {
        b.extend(w.iter().rev());
    }
    let ip = match b.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(b).ok()?),
        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(b).ok()?),
        _ => return None,
    };
    Some((ip, port))
}

fn is_local(ip: &std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v) => v.is_loopback() || v.is_unspecified(),
        std::net::IpAddr::V6(v) => {
            v.is_loopback()
                || v.is_unspecified()
                || v.to_ipv4_mapped()
                    .is_some_and(|m| m.is_loopback() || m.is_unspecified())
        }
    }
}

/// See [`Kubo::foreign_connections`]; for any process.
pub fn foreign_connections(pid: u32) -> std::io::Result<Vec<String>> {
    let inodes = socket_inodes(pid)?;
    let mut bad = Vec::new();
    for proto in ["tcp", "tcp6", "udp", "udp6"] {
        let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/net/{proto}")) else {
            continue;
        };
        for line in table.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let Ok(inode) = f[9].parse::<u64>() else {
                continue;
            };
            if !inodes.contains(&inode) {
                continue;
            }
            let (Some(local), Some(remote)) = (proc_addr(f[1]), proc_addr(f[2])) else {
                continue;
            };
            if !is_local(&remote.0) || !is_local(&local.0) {
                bad.push(format!(
                    "{proto} {}:{} -> {}:{}",
                    local.0, local.1, remote.0, remote.1
                ));
            }
        }
    }
    Ok(bad)
}

/// The UnixFS DAG `ipfs add --cid-version 1 --raw-leaves` makes of `data`, as a CAR v1 (root
/// first, then every block in the order they were built): (root CID in binary, CAR bytes). For
/// tests that play an IPFS source themselves.
pub fn unixfs_car(data: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut blocks: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let root =
        crate::tier::ipfs::unixfs::build_file(data, |c, b| blocks.push((c.to_bytes(), b.to_vec())))
            .to_bytes();
    let mut header = vec![0xa2, 0x65];
    header.extend_from_slice(b"roots");
    header.extend_from_slice(&[0x81, 0xd8, 0x2a, 0x58, (root.len() + 1) as u8, 0x00]);
    header.extend_from_slice(&root);
    header.push(0x67);
    header.extend_from_slice(b"version");
    header.push(0x01);
    let mut car = Vec::new();
    let varint = |out: &mut Vec<u8>, mut v: usize| {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    };
    varint(&mut car, header.len());
    car.extend_from_slice(&header);
    // The root was built last.
    blocks.reverse();
    for (c, b) in blocks {
        varint(&mut car, c.len() + b.len());
        car.extend_from_slice(&c);
        car.extend_from_slice(&b);
    }
    (root, car)
}

#[cfg(test)]
mod tests {
    #[test]
    fn proc_addresses() {
        let (ip, port) = super::proc_addr("0100007F:1F90").unwrap();
        assert_eq!(ip.to_string(), "127.0.0.1");
        assert_eq!(port, 8080);
        let (ip, _) = super::proc_addr("00000000000000000000000001000000:0050").unwrap();
        assert_eq!(ip.to_string(), "::1");
        assert!(super::is_local(&ip));
        let (ip, _) = super::proc_addr("0101A8C0:0050").unwrap();
        assert_eq!(ip.to_string(), "192.168.1.1");
        assert!(!super::is_local(&ip));
    }
}
