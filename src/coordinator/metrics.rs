//! Opt-in Prometheus endpoint (`cidcached --metrics-addr HOST:PORT`): plain HTTP/1.1,
//! `GET /metrics` answers the store's statistics in the text exposition format 0.0.4; any other
//! request gets 404 (405 for a method other than GET or HEAD).
//!
//! Names are mapped generically, so statistics added later appear without changes here:
//! `TIER.NAME` with TIER one of `hot`, `warm`, `cold` becomes `cidcache_NAME{tier="TIER"}`,
//! any other name `cidcache_NAME` with dots as underscores. Monotonic statistics (hits, misses,
//! puts, deletes, evictions, demotions, promotions, errors, ...) are typed `counter` and get the
//! `_total` suffix; the rest are `gauge`s. The store lock is held only to copy the statistics.

use super::store::Store;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIERS: [&str; 3] = ["hot", "warm", "cold"];

/// Last name components that denote an ever-increasing count.
const COUNTERS: [&str; 22] = [
    "hits",
    "misses",
    "puts",
    "gets",
    "deletes",
    "evictions",
    "evicted_bytes",
    "demotions",
    "demoted_bytes",
    "promotions",
    "promoted_bytes",
    "aborted",
    "errors",
    "reads",
    "writes",
    "requests",
    "fetches",
    "fetched_bytes",
    "adds",
    "prefetched",
    "prefetch_used",
    "prefetch_wasted",
];

fn is_counter(name: &str) -> bool {
    COUNTERS.contains(&name) || name.ends_with("_errors") || name.ends_with("_total")
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// A metric family: name, whether it is a counter, and its samples (tier, source name, value).
type Family = (String, bool, Vec<(Option<String>, String, u64)>);

/// Renders statistics (as `Store::stats` names them) in the Prometheus text format 0.0.4.
pub(crate) fn render(stats: &[(String, u64)]) -> String {
    // Families in first-seen order; samples of one family stay together, as the format needs.
    let mut families: Vec<Family> = Vec::new();
    for (name, value) in stats {
        let (tier, rest) = match name.split_once('.') {
            Some((t, r)) if TIERS.contains(&t) => (Some(t.to_string()), r),
            _ => (None, name.as_str()),
        };
        let counter = is_counter(rest);
        let mut family = format!("cidcache_{}", sanitize(rest));
        if counter && !family.ends_with("_total") {
            family.push_str("_total");
        }
        let sample = (tier, name.clone(), *value);
        match families.iter_mut().find(|f| f.0 == family) {
            Some(f) => f.2.push(sample),
            None => families.push((family, counter, vec![sample])),
        }
    }
    let mut out = String::new();
    for (family, counter, samples) in &families {
        let sources: Vec<&str> = samples.iter().map(|s| s.1.as_str()).collect();
        let _ = writeln!(
            out,
            "# HELP {family} cidcache statistic {} (see `cidcache stats`).",
            sources.join(", ")
        );
        let _ = writeln!(
            out,
            "# TYPE {family} {}",
            if *counter { "counter" } else { "gauge" }
        );
        for (tier, _, v) in samples {
            match tier {
                Some(t) => {
                    let _ = writeln!(out, "{family}{{tier=\"{t}\"}} {v}");
                }
                None => {
                    let _ = writeln!(out, "{family} {v}");
                }
            }
        }
    }
    out
}

/// Accepts connections on `listener` until the runtime stops; one task per connection.
pub(crate) async fn serve(listener: tokio::net::TcpListener, store: Arc<Mutex<Store>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, for example: try again shortly rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let store = store.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, store)).await;
        });
    }
}

async fn answer(
    mut stream: tokio::net::TcpStream,
    store: Arc<Mutex<Store>>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 16 << 10 {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "",
                false,
            )
            .await;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut first = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, "405 Method Not Allowed", "", false).await;
    }
    if path != "/metrics" {
        return respond(
            &mut stream,
            "404 Not Found",
            "not found\n",
            method == "HEAD",
        )
        .await;
    }
    let stats = store.lock().unwrap_or_else(|p| p.into_inner()).stats();
    let body = render(&stats);
    respond(&mut stream, "200 OK", &body, method == "HEAD").await
}

async fn respond(
    stream: &mut tokio::net::TcpStream,
    status: &str,
    body: &str,
    head_only: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::render;

    fn s(v: &[(&str, u64)]) -> Vec<(String, u64)> {
        v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    }

    #[test]
    fn maps_tiers_counters_and_gauges() {
        let out = render(&s(&[
            ("hot.hits", 5),
            ("hot.bytes", 100),
            ("index.load_factor_permille", 12),
            ("warm.hits", 2),
            ("clients", 3),
            ("hot.store_full_errors", 1),
            ("warm.demotions", 4),
        ]));
        let expect = "\
# HELP cidcache_hits_total cidcache statistic hot.hits, warm.hits (see `cidcache stats`).
# TYPE cidcache_hits_total counter
cidcache_hits_total{tier=\"hot\"} 5
cidcache_hits_total{tier=\"warm\"} 2
# HELP cidcache_bytes cidcache statistic hot.bytes (see `cidcache stats`).
# TYPE cidcache_bytes gauge
cidcache_bytes{tier=\"hot\"} 100
# HELP cidcache_index_load_factor_permille cidcache statistic index.load_factor_permille (see `cidcache stats`).
# TYPE cidcache_index_load_factor_permille gauge
cidcache_index_load_factor_permille 12
# HELP cidcache_clients cidcache statistic clients (see `cidcache stats`).
# TYPE cidcache_clients gauge
cidcache_clients 3
# HELP cidcache_store_full_errors_total cidcache statistic hot.store_full_errors (see `cidcache stats`).
# TYPE cidcache_store_full_errors_total counter
cidcache_store_full_errors_total{tier=\"hot\"} 1
# HELP cidcache_demotions_total cidcache statistic warm.demotions (see `cidcache stats`).
# TYPE cidcache_demotions_total counter
cidcache_demotions_total{tier=\"warm\"} 4
";
        assert_eq!(out, expect);
    }

    #[test]
    fn sanitizes_odd_names() {
        let out = render(&s(&[("a-b.c d", 1)]));
        assert!(out.contains("\ncidcache_a_b_c_d 1\n"), "{out}");
    }
}
