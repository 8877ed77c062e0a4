//! The opt-in Prometheus endpoint of a real daemon, read with a real HTTP request.

mod common;

use common::Daemon;
use std::io::{Read, Write};
use std::net::TcpStream;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn http(port: u16, request: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP response");
    (head.to_string(), body.to_string())
}

#[test]
fn metrics_endpoint_serves_store_statistics() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start(&["--metrics-addr", &addr]);
    let c = d.client();
    c.put(b"metrics-a", &[1u8; 1000]).unwrap();
    c.put(b"metrics-b", &[2u8; 3000]).unwrap();
    assert!(c.get(b"metrics-missing").unwrap().is_none());

    let (head, body) = http(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(len, body.len());
    for line in [
        "# TYPE cidcache_hits_total counter",
        "# TYPE cidcache_misses_total counter",
        "# TYPE cidcache_evictions_total counter",
        "# TYPE cidcache_objects gauge",
        "cidcache_objects{tier=\"hot\"} 2",
        "cidcache_bytes{tier=\"hot\"} 4000",
        "cidcache_puts_total{tier=\"hot\"} 2",
        "# TYPE cidcache_index_load_factor_permille gauge",
        "# TYPE cidcache_clients gauge",
        "cidcache_clients 1",
        "# TYPE cidcache_pins gauge",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in\n{body}"
        );
    }
    // Every sample line is `name[{labels}] integer`, and every family has HELP and TYPE.
    for l in body.lines().filter(|l| !l.starts_with('#')) {
        let (name, v) = l.rsplit_once(' ').unwrap();
        assert!(v.parse::<u64>().is_ok(), "{l}");
        let family = name.split('{').next().unwrap();
        assert!(body.contains(&format!("# TYPE {family} ")), "{l}");
        assert!(body.contains(&format!("# HELP {family} ")), "{l}");
    }

    let (head, _) = http(port, "GET /other HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, _) = http(port, "POST /metrics HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    // The store kept serving.
    assert!(c.get(b"metrics-a").unwrap().is_some());
}

#[test]
fn a_taken_metrics_port_fails_the_start() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::daemon_bin())
        .args(["--store", &common::unique_store(), "--socket"])
        .arg(dir.path().join("s.sock"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "-m",
            "16M",
            "--arena-size",
            "4M",
            "--index-capacity",
            "1024",
        ])
        .args(["--metrics-addr", &addr])
        .env("CIDCACHE_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("metrics address"), "{err}");
    drop(l);
}
