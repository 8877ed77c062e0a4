//! IPFS below the warm tier: a miss on a CID key is fetched from a kubo RPC API and/or a
//! trustless gateway, every block verified against its CID before anything is handed on; puts
//! can be added to the node under the same CID (write-back).
//!
//! This module fetches, verifies and assembles; the coordinator (`coordinator::ipfs`) publishes
//! what it returns through the store's promotion machinery, so one fetch serves every waiter.
//!
//! What is fetched, and how:
//! - a raw block (`bafk...`): the block (`block/get`, or the gateway's `?format=raw`);
//! - a dag-pb block that is a UnixFS file root: its whole DAG as a CAR (`dag/export`, or the
//!   gateway's `?format=car&dag-scope=entity`), every block verified and kept within the
//!   byte budget, then the file's bytes assembled under the root CID;
//! - any other dag-pb block (a directory, ...): the block itself, and its links are offered for
//!   prefetch.
//!
//! Bounds: a block over `max_block` and an object over `max_file` are errors before they are
//! allocated; no byte for `timeout` and a fetch longer than `deadline` are timeouts.

pub(crate) mod blocks;
pub(crate) mod unixfs;

use crate::error::{Error, Result};
use crate::key::Key;
use blocks::{check_block_len, Blocks};
use bytes::Bytes;
use cid::Cid;
use futures_util::TryStreamExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;
use unixfs::{FilePlan, Shape, DAG_PB};

/// Where and how a store reads through to IPFS (`cidcached --ipfs-api`, `--ipfs-gateway`).
#[derive(Debug, Clone)]
pub struct IpfsConfig {
    /// Base URL of a kubo RPC API (`http://127.0.0.1:5001`): read-through and write-back.
    pub api: Option<String>,
    /// Base URL of a trustless gateway (`http://127.0.0.1:8080`): read-through only. Tried
    /// after the API when both are set.
    pub gateway: Option<String>,
    /// A source that sends no byte for this long fails the fetch (`Timeout`).
    pub timeout: Duration,
    /// A whole fetch (every block of a file) takes at most this long.
    pub deadline: Duration,
    /// Largest block accepted; larger ones are refused before they are read.
    pub max_block: u64,
    /// Largest object fetched, in bytes of blocks received and of the published object;
    /// `None` = the hot tier's memory limit.
    pub max_file: Option<u64>,
    /// Fetches under way at once (further misses queue).
    pub concurrency: usize,
    /// Levels of DAG children prefetched below a fetched dag-pb node that is not a file (a
    /// directory): 0 = no prefetch.
    pub prefetch_depth: u32,
    /// Bytes prefetched (by the links' declared sizes) below one fetched node at most.
    pub prefetch_bytes: u64,
}

impl Default for IpfsConfig {
    fn default() -> IpfsConfig {
        IpfsConfig {
            api: None,
            gateway: None,
            timeout: Duration::from_secs(30),
            deadline: Duration::from_secs(600),
            max_block: 2 << 20,
            max_file: None,
            concurrency: 16,
            prefetch_depth: 1,
            prefetch_bytes: 64 << 20,
        }
    }
}

impl IpfsConfig {
    /// Whether a source is configured.
    pub fn enabled(&self) -> bool {
        self.api.is_some() || self.gateway.is_some()
    }
}

/// One source of blocks.
#[derive(Debug, Clone)]
enum Endpoint {
    /// kubo's RPC API (`/api/v0/...`, POST).
    Api(String),
    /// A trustless gateway (`/ipfs/CID?format=...`, GET).
    Gateway(String),
}

impl Endpoint {
    fn describe(&self) -> String {
        match self {
            Endpoint::Api(u) => format!("the IPFS API at {u}"),
            Endpoint::Gateway(u) => format!("the IPFS gateway at {u}"),
        }
    }
}

/// What a fetch brought back, verified.
pub(crate) enum Fetched {
    /// Bytes to publish as they are (a raw block, or a dag-pb node that is not a file), with
    /// the node's links and their declared sizes (for prefetch).
    Block {
        bytes: Bytes,
        links: Vec<(Cid, u64)>,
    },
    /// A UnixFS file, complete: its bytes are published under the root CID.
    File(Box<FilePlan>),
}

impl Fetched {
    /// Bytes the published object will hold.
    pub(crate) fn len(&self) -> u64 {
        match self {
            Fetched::Block { bytes, .. } => bytes.len() as u64,
            Fetched::File(p) => p.size(),
        }
    }
}

/// The IPFS source of one store: an HTTP client, its endpoints and limits. Thread-safe; shared
/// by every fetch.
pub(crate) struct Ipfs {
    cfg: IpfsConfig,
    endpoints: Vec<Endpoint>,
    http: reqwest::Client,
    max_file: u64,
    /// Fetches under way (demand and prefetch).
    permits: Arc<Semaphore>,
    /// Prefetches under way: at most half the fetches, so demand always finds room.
    prefetch_permits: Arc<Semaphore>,
}

/// The CID a key names, when it is one cidcache can fetch and verify (raw or dag-pb codec,
/// sha2-256 or identity multihash, the whole key).
pub(crate) fn fetchable(key: &Key) -> Option<Cid> {
    let c = Cid::try_from(key.as_bytes()).ok()?;
    if c.encoded_len() != key.as_bytes().len() {
        return None;
    }
    let codec_ok = matches!(c.codec(), crate::cid::RAW_CODEC | DAG_PB);
    (codec_ok && blocks::verifiable(&c)).then_some(c)
}

fn trim(url: &str) -> String {
    url.trim_end_matches('/').to_string()
}

/// A short, bounded excerpt of an error body (kubo answers `{"Message": ...}`).
async fn error_body(resp: reqwest::Response) -> String {
    let mut resp = resp;
    let mut body = Vec::new();
    while body.len() < 4096 {
        match resp.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c[..c.len().min(4096 - body.len())]),
            _ => break,
        }
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
        if let Some(m) = v.get("Message").and_then(|m| m.as_str()) {
            return m.to_string();
        }
    }
    String::from_utf8_lossy(&body).trim().to_string()
}

impl Ipfs {
    /// A source for `cfg`; objects larger than `hot_limit` (or `cfg.max_file`, if smaller)
    /// are never fetched.
    pub(crate) fn new(cfg: IpfsConfig, hot_limit: u64) -> Result<Ipfs> {
        let mut endpoints = Vec::new();
        for (url, api) in [(&cfg.api, true), (&cfg.gateway, false)] {
            let Some(u) = url else { continue };
            let parsed = reqwest::Url::parse(u).map_err(|e| {
                Error::InvalidArgument(format!(
                    "{u:?} is not a URL ({e}); e.g. http://127.0.0.1:5001"
                ))
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(Error::InvalidArgument(format!(
                    "{u}: IPFS sources are reached over http or https"
                )));
            }
            endpoints.push(if api {
                Endpoint::Api(trim(u))
            } else {
                Endpoint::Gateway(trim(u))
            });
        }
        if endpoints.is_empty() {
            return Err(Error::InvalidArgument(
                "an IPFS source needs --ipfs-api or --ipfs-gateway".into(),
            ));
        }
        if cfg.concurrency == 0 || cfg.max_block == 0 {
            return Err(Error::InvalidArgument(
                "--ipfs-concurrency and --ipfs-max-block must be above zero".into(),
            ));
        }
        // reqwest is built without a default TLS provider: rustls with ring (no OpenSSL, no
        // C toolchain beyond ring's). Already installed is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.timeout)
            .read_timeout(cfg.timeout)
            .pool_max_idle_per_host(cfg.concurrency)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| Error::Internal(format!("cannot build the HTTP client: {e}")))?;
        let max_file = cfg.max_file.unwrap_or(hot_limit).min(hot_limit);
        Ok(Ipfs {
            permits: Arc::new(Semaphore::new(cfg.concurrency)),
            prefetch_permits: Arc::new(Semaphore::new(cfg.concurrency.div_ceil(2))),
            cfg,
            endpoints,
            http,
            max_file,
        })
    }

    /// The configuration in force.
    pub(crate) fn config(&self) -> &IpfsConfig {
        &self.cfg
    }

    /// Waits for room to fetch (prefetches also wait for a prefetch slot first).
    pub(crate) async fn permit(&self, prefetch: bool) -> Vec<tokio::sync::OwnedSemaphorePermit> {
        let mut held = Vec::with_capacity(2);
        if prefetch {
            if let Ok(p) = self.prefetch_permits.clone().acquire_owned().await {
                held.push(p);
            }
        }
        if let Ok(p) = self.permits.clone().acquire_owned().await {
            held.push(p);
        }
        held
    }

    /// Fetches and verifies what `cid` names, trying each source in turn.
    pub(crate) async fn fetch(&self, cid: &Cid) -> Result<Fetched> {
        let mut first: Option<Error> = None;
        let mut why = Vec::new();
        for ep in &self.endpoints {
            let r = tokio::time::timeout(self.cfg.deadline, self.fetch_from(ep, cid)).await;
            let e = match r {
                Ok(Ok(f)) => return Ok(f),
                Ok(Err(e)) => e,
                Err(_) => Error::Timeout(format!(
                    "fetching {cid} from {} took over {:?} (--ipfs-deadline); nothing was cached",
                    ep.describe(),
                    self.cfg.deadline
                )),
            };
            why.push(e.message());
            first.get_or_insert(e);
        }
        let first = first.expect("at least one endpoint");
        if why.len() == 1 {
            return Err(first);
        }
        Err(Error::from_code(first.code(), why.join("; then ")))
    }

    async fn fetch_from(&self, ep: &Endpoint, cid: &Cid) -> Result<Fetched> {
        match cid.codec() {
            crate::cid::RAW_CODEC => {
                let bytes = self.block(ep, cid).await?;
                Ok(Fetched::Block {
                    bytes,
                    links: Vec::new(),
                })
            }
            DAG_PB => {
                // The API exports whole DAGs only, so its root comes first alone (a directory
                // must not pull in everything below it); a gateway scopes the CAR itself.
                let blocks = match ep {
                    Endpoint::Api(_) => {
                        let root = self.block(ep, cid).await?;
                        let node = unixfs::decode_node(&root)?;
                        if matches!(unixfs::shape(&node), Shape::File) && !node.links.is_empty()
                        {
                            self.car(ep, cid).await?
                        } else {
                            let mut b = Blocks::new(self.cfg.max_block);
                            b.insert(cid, root, self.cfg.max_block)?;
                            b
                        }
                    }
                    Endpoint::Gateway(_) => self.car(ep, cid).await?,
                };
                let root = blocks.get(cid).cloned().ok_or_else(|| {
                    Error::Corrupt(format!(
                        "{} sent a CAR without the block {cid} itself",
                        ep.describe()
                    ))
                })?;
                let node = unixfs::decode_node(&root)?;
                match unixfs::shape(&node) {
                    Shape::File => Ok(Fetched::File(Box::new(FilePlan::new(
                        *cid,
                        blocks,
                        self.max_file,
                    )?))),
                    Shape::Other => Ok(Fetched::Block {
                        bytes: root,
                        links: node
                            .links
                            .iter()
                            .map(|l| (l.cid, l.size.unwrap_or(0)))
                            .collect(),
                    }),
                }
            }
            other => Err(Error::InvalidKey(format!(
                "{cid} has codec {other:#x}; cidcache reads raw blocks and dag-pb (UnixFS) from IPFS"
            ))),
        }
    }

    fn request(&self, ep: &Endpoint, cid: &Cid, car: bool) -> reqwest::RequestBuilder {
        // kubo stops looking for the block itself a little before we stop waiting.
        let kubo_timeout = format!("{}ms", self.cfg.deadline.as_millis().max(1));
        // CIDs in text form (base32, base58btc) need no escaping in a URL.
        match ep {
            Endpoint::Api(base) => {
                let cmd = if car { "dag/export" } else { "block/get" };
                self.http.post(format!(
                    "{base}/api/v0/{cmd}?arg={cid}&timeout={kubo_timeout}&progress=false"
                ))
            }
            Endpoint::Gateway(base) => {
                let (query, accept) = if car {
                    (
                        "format=car&dag-scope=entity",
                        "application/vnd.ipld.car; version=1; order=dfs; dups=n",
                    )
                } else {
                    ("format=raw", "application/vnd.ipld.raw")
                };
                self.http
                    .get(format!("{base}/ipfs/{cid}?{query}"))
                    .header(reqwest::header::ACCEPT, accept)
            }
        }
    }

    fn send_error(&self, ep: &Endpoint, cid: &Cid, e: reqwest::Error) -> Error {
        if e.is_timeout() {
            return Error::Timeout(format!(
                "{} sent nothing for {:?} while fetching {cid} (--ipfs-timeout); nothing was cached",
                ep.describe(),
                self.cfg.timeout
            ));
        }
        let what = if e.is_connect() {
            "cannot reach"
        } else {
            "lost the connection to"
        };
        Error::Io {
            context: format!("{what} {} while fetching {cid}", ep.describe()),
            source: std::io::Error::other(error_chain(&e)),
        }
    }

    /// Sends a fetch request and checks its status.
    async fn send(&self, ep: &Endpoint, cid: &Cid, car: bool) -> Result<reqwest::Response> {
        let resp = self
            .request(ep, cid, car)
            .send()
            .await
            .map_err(|e| self.send_error(ep, cid, e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let msg = error_body(resp).await;
        let text = format!("{} answered {status} for {cid}: {msg}", ep.describe());
        Err(
            if status == reqwest::StatusCode::NOT_FOUND || msg.contains("not found") {
                Error::NotFound(text)
            } else if msg.contains("deadline exceeded")
                || status == reqwest::StatusCode::GATEWAY_TIMEOUT
            {
                Error::Timeout(text)
            } else {
                Error::Io {
                    context: text,
                    source: std::io::Error::other("the IPFS source refused the request"),
                }
            },
        )
    }

    /// Fetches one block, refusing more than `max_block` bytes, and verifies it.
    async fn block(&self, ep: &Endpoint, cid: &Cid) -> Result<Bytes> {
        let max = self.cfg.max_block;
        let mut resp = self.send(ep, cid, false).await?;
        if let Some(n) = resp.content_length() {
            check_block_len(cid, n, max)?;
        }
        let mut buf = Vec::new();
        while let Some(c) = resp
            .chunk()
            .await
            .map_err(|e| self.send_error(ep, cid, e))?
        {
            check_block_len(cid, (buf.len() + c.len()) as u64, max)?;
            buf.extend_from_slice(&c);
        }
        blocks::verify(cid, &buf)?;
        Ok(Bytes::from(buf))
    }

    /// Fetches the DAG under `cid` as a CAR, verifying and keeping every block within the
    /// budget. A CAR cut short errors here (inside a block) or when the DAG is walked (at a
    /// block boundary: a block is missing).
    async fn car(&self, ep: &Endpoint, cid: &Cid) -> Result<Blocks> {
        let resp = self.send(ep, cid, true).await?;
        // The stream's own error (a timeout), which the CAR reader only sees as a short read.
        let cause: Arc<Mutex<Option<reqwest::Error>>> = Arc::default();
        let seen = cause.clone();
        let stream = resp.bytes_stream().map_err(move |e| {
            let io = std::io::Error::other(e.to_string());
            *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            io
        });
        let reader = tokio_util::io::StreamReader::new(stream);
        let r = read_car(reader, self.cfg.max_block, self.max_file).await;
        if let Some(e) = cause.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(self.send_error(ep, cid, e));
        }
        r.map_err(|e| match e {
            Error::Corrupt(m) => Error::Corrupt(format!(
                "{} sent a bad CAR for {cid}: {m}; nothing was cached",
                ep.describe()
            )),
            e => e,
        })
    }

    // ----- write-back ------------------------------------------------------------------------

    /// Adds `data` to the IPFS node (pinned) so that it has the CID `key`, and checks the CID
    /// the node reports. A raw key (`bafk...`) is added as one raw block (at most 1 MiB, which
    /// is what IPFS nodes exchange); a dag-pb key must be the UnixFS CID `ipfs add
    /// --cid-version 1 --raw-leaves` gives `data` (see [`crate::cid::unixfs_file_cid`]).
    pub(crate) async fn add(&self, key: &Key, data: Bytes) -> Result<()> {
        let Some(Endpoint::Api(base)) = self
            .endpoints
            .iter()
            .find(|e| matches!(e, Endpoint::Api(_)))
        else {
            return Err(Error::InvalidArgument(
                "this store has no --ipfs-api: adding to IPFS needs a kubo RPC API".into(),
            ));
        };
        let cid = fetchable(key).ok_or_else(|| {
            Error::InvalidKey(format!(
                "{key} is not a CIDv1 of the raw or dag-pb codec with a sha2-256 hash; only those can be added to IPFS"
            ))
        })?;
        let (url, field) = match cid.codec() {
            crate::cid::RAW_CODEC => {
                blocks::verify(&cid, &data)?;
                if data.len() > 1 << 20 {
                    return Err(Error::InvalidArgument(format!(
                        "{} bytes is over the 1 MiB an IPFS raw block may have; store it under its UnixFS CID (`cidcache put --ipfs` computes it)",
                        data.len()
                    )));
                }
                (
                    format!("{base}/api/v0/block/put?cid-codec=raw&mhtype=sha2-256&pin=true"),
                    "Key",
                )
            }
            _ => {
                if cid.version() != cid::Version::V1 || unixfs::build_file(&data, |_, _| {}) != cid
                {
                    return Err(Error::CidMismatch(format!(
                        "{cid} is not the UnixFS CIDv1 (raw leaves, 256 KiB chunks, sha2-256) of these {} bytes; `cidcache put --ipfs` computes it",
                        data.len()
                    )));
                }
                (
                    format!(
                        "{base}/api/v0/add?cid-version=1&raw-leaves=true&chunker=size-262144&pin=true&progress=false"
                    ),
                    "Hash",
                )
            }
        };
        let boundary = "cidcache-3f5e9a1c0b7d4e28";
        let head = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"data\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        let parts: Vec<std::io::Result<Bytes>> = vec![Ok(head.into()), Ok(data), Ok(tail.into())];
        let ep = Endpoint::Api(base.clone());
        let resp = self
            .http
            .post(url)
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                parts,
            )))
            .send()
            .await
            .map_err(|e| self.send_error(&ep, &cid, e))?;
        let status = resp.status();
        if !status.is_success() {
            let msg = error_body(resp).await;
            return Err(Error::Io {
                context: format!("{} refused to add {cid} ({status})", ep.describe()),
                source: std::io::Error::other(msg),
            });
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| self.send_error(&ep, &cid, e))?;
        // `add` answers one JSON object per line; the last names the root.
        let got = body
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
            .filter_map(|v| v.get(field).and_then(|h| h.as_str()).map(String::from))
            .next_back()
            .ok_or_else(|| Error::Io {
                context: format!("{} added {cid} but named no CID", ep.describe()),
                source: std::io::Error::other(
                    String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
                ),
            })?;
        match Cid::try_from(got.as_str()) {
            Ok(c) if c == cid => Ok(()),
            _ => Err(Error::CidMismatch(format!(
                "{} stored the object as {got}, not as {cid}",
                ep.describe()
            ))),
        }
    }
}

/// Reads a CAR v1 stream into verified blocks: each block at most `max_block` bytes, all of
/// them at most `max_total` (the stream itself is cut a little above that, for the framing).
/// Allocation is bounded by those and by iroh-car's own 4 MiB per section.
pub(crate) async fn read_car(
    reader: impl tokio::io::AsyncRead + Unpin,
    max_block: u64,
    max_total: u64,
) -> Result<Blocks> {
    // CAR framing adds a few bytes per block (a length and the CID).
    let budget = max_total.saturating_add(max_total / 64 + (1 << 20));
    let car_err = |e: iroh_car::Error| match e {
        iroh_car::Error::LdReadTooLarge(n) => Error::InvalidArgument(format!(
            "a CAR section of {n} bytes, over the 4 MiB a CAR block may have; nothing was cached"
        )),
        e => Error::Corrupt(format!("a truncated or malformed CAR ({e})")),
    };
    let mut car = iroh_car::CarReader::new(reader.take(budget))
        .await
        .map_err(car_err)?;
    let mut blocks = Blocks::new(max_total);
    while let Some((c, data)) = car.next_block().await.map_err(car_err)? {
        blocks.insert(&c, Bytes::from(data), max_block)?;
    }
    Ok(blocks)
}

/// An error with its causes, on one line (reqwest's own message is often just "error sending
/// request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
