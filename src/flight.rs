//! Arrow Flight service (`cidcached --flight-addr HOST:PORT`): remote processes get and put
//! Arrow objects over gRPC.
//!
//! The service is a client of its own daemon: each request connects to the store's socket like
//! any local client, so a `DoGet` of a hot object streams its batches straight from shared
//! memory (zero-copy up to the wire), a miss promotes from the warm or cold tier, a projection or
//! filter goes through the ordinary scan path, and a `DoPut` is validated at seal like any
//! `put_arrow`. No store internals are touched from here.
//!
//! Tickets and descriptors: a ticket is the key's bytes, or JSON
//! `{"key": "...", "columns": ["a","b"], "filter": "x>=5"}`; a descriptor names a key by its
//! first path element (or its command bytes). Security: loopback unless told otherwise; any
//! other address needs both TLS (`--flight-tls-cert/--flight-tls-key`) and a bearer token
//! (`--flight-token-file`), checked on every call (`UNAUTHENTICATED` otherwise).

use crate::error::{Error, Result};
use crate::Client;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use std::net::SocketAddr;
use std::path::PathBuf;
use tonic::{Request, Response, Status, Streaming};

/// The Flight service's configuration.
#[derive(Debug, Clone)]
pub struct FlightConfig {
    /// Where to listen.
    pub addr: SocketAddr,
    /// The bearer token every call must carry (`authorization: Bearer TOKEN`), if any.
    pub token: Option<String>,
    /// PEM certificate chain and private key: serve TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Largest `DoPut` stream accepted (bytes of Arrow data); larger ones are refused.
    pub max_put: u64,
}

impl FlightConfig {
    /// Refuses a configuration that would expose the store beyond this machine unprotected.
    pub fn check(&self) -> Result<()> {
        if !self.addr.ip().is_loopback() && (self.token.is_none() || self.tls.is_none()) {
            return Err(Error::InvalidArgument(format!(
                "--flight-addr {}: beyond loopback, Flight needs TLS (--flight-tls-cert, \
                 --flight-tls-key) and a token (--flight-token-file)",
                self.addr
            )));
        }
        if self.token.as_deref().is_some_and(str::is_empty) {
            return Err(Error::InvalidArgument(
                "--flight-token-file: the token is empty".into(),
            ));
        }
        Ok(())
    }
}

struct Service {
    socket: PathBuf,
    max_put: u64,
}

fn status(e: Error) -> Status {
    match e {
        Error::NotFound(m) => Status::not_found(m),
        Error::InvalidArgument(m) | Error::InvalidKey(m) | Error::Arrow(m) => {
            Status::invalid_argument(m)
        }
        Error::Corrupt(m) => Status::data_loss(m),
        Error::StoreFull(m) => Status::resource_exhausted(m),
        e => Status::internal(e.to_string()),
    }
}

/// What a ticket asks for.
struct Wanted {
    key: Vec<u8>,
    scan: Option<crate::scan::Scan>,
}

fn parse_ticket(t: &[u8]) -> std::result::Result<Wanted, Status> {
    if t.first() != Some(&b'{') {
        return Ok(Wanted {
            key: t.to_vec(),
            scan: None,
        });
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct J {
        key: String,
        #[serde(default)]
        columns: Option<Vec<String>>,
        #[serde(default)]
        filter: Option<String>,
    }
    let j: J =
        serde_json::from_slice(t).map_err(|e| Status::invalid_argument(format!("ticket: {e}")))?;
    let mut scan = crate::scan::Scan::default();
    if let Some(c) = &j.columns {
        let c: Vec<&str> = c.iter().map(|s| s.as_str()).collect();
        scan = scan.columns(&c);
    }
    if let Some(f) = &j.filter {
        scan = scan.filter(f).map_err(status)?;
    }
    Ok(Wanted {
        key: j.key.into_bytes(),
        scan: Some(scan),
    })
}

fn descriptor_key(d: &FlightDescriptor) -> std::result::Result<Vec<u8>, Status> {
    match d.path.first() {
        Some(p) => Ok(p.as_bytes().to_vec()),
        None if !d.cmd.is_empty() => Ok(d.cmd.to_vec()),
        None => Err(Status::invalid_argument(
            "the descriptor names no key (give a path or a command)",
        )),
    }
}

impl Service {
    /// Runs `f` with a fresh client of the daemon on the blocking pool.
    async fn with_client<T: Send + 'static>(
        &self,
        f: impl FnOnce(Client) -> Result<T> + Send + 'static,
    ) -> std::result::Result<T, Status> {
        let socket = self.socket.clone();
        tokio::task::spawn_blocking(move || f(Client::connect_socket(&socket)?))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)
    }

    async fn info(&self, key: Vec<u8>) -> std::result::Result<FlightInfo, Status> {
        let k = key.clone();
        let (schema, rows, bytes) = self
            .with_client(move |c| {
                let o = c.get_arrow(&k)?.ok_or_else(|| {
                    Error::NotFound(format!(
                        "{} is not in the store",
                        String::from_utf8_lossy(&k)
                    ))
                })?;
                let rows: usize = o.batches.iter().map(|b| b.num_rows()).sum();
                let bytes: usize = o.batches.iter().map(|b| b.get_array_memory_size()).sum();
                Ok((o.schema, rows, bytes))
            })
            .await?;
        FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(e.to_string()))
            .map(|i| {
                i.with_descriptor(FlightDescriptor::new_path(vec![String::from_utf8_lossy(
                    &key,
                )
                .into_owned()]))
                    .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(key)))
                    .with_total_records(rows as i64)
                    .with_total_bytes(bytes as i64)
            })
    }
}

#[tonic::async_trait]
impl FlightService for Service {
    type HandshakeStream = BoxStream<'static, std::result::Result<HandshakeResponse, Status>>;
    type ListFlightsStream = BoxStream<'static, std::result::Result<FlightInfo, Status>>;
    type DoGetStream = BoxStream<'static, std::result::Result<FlightData, Status>>;
    type DoPutStream = BoxStream<'static, std::result::Result<PutResult, Status>>;
    type DoExchangeStream = BoxStream<'static, std::result::Result<FlightData, Status>>;
    type DoActionStream = BoxStream<'static, std::result::Result<arrow_flight::Result, Status>>;
    type ListActionsStream = BoxStream<'static, std::result::Result<ActionType, Status>>;

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> std::result::Result<Response<Self::HandshakeStream>, Status> {
        // Authentication is the bearer token on every call; the handshake has nothing to add.
        Ok(Response::new(
            futures::stream::once(async { Ok(HandshakeResponse::default()) }).boxed(),
        ))
    }

    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> std::result::Result<Response<Self::ListFlightsStream>, Status> {
        let entries = self.with_client(|c| c.list()).await?;
        let mut out = Vec::new();
        for e in entries {
            if e.flags & crate::index::FLAG_ARROW == 0 {
                continue;
            }
            let key = e.key.as_bytes().to_vec();
            out.push(Ok(FlightInfo::new()
                .with_descriptor(FlightDescriptor::new_path(vec![String::from_utf8_lossy(
                    &key,
                )
                .into_owned()]))
                .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(key)))
                .with_total_bytes(e.data_len as i64)));
        }
        Ok(Response::new(futures::stream::iter(out).boxed()))
    }

    async fn get_flight_info(
        &self,
        r: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let key = descriptor_key(r.get_ref())?;
        Ok(Response::new(self.info(key).await?))
    }

    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("use GetFlightInfo"))
    }

    async fn get_schema(
        &self,
        r: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<SchemaResult>, Status> {
        let key = descriptor_key(r.get_ref())?;
        let info = self.info(key).await?;
        Ok(Response::new(SchemaResult {
            schema: info.schema,
        }))
    }

    async fn do_get(
        &self,
        r: Request<Ticket>,
    ) -> std::result::Result<Response<Self::DoGetStream>, Status> {
        let w = parse_ticket(&r.get_ref().ticket)?;
        let key = w.key.clone();
        // The client stays with the stream: the batches point into shared memory it pins.
        let (client, o) = self
            .with_client(move |c| {
                let o = match &w.scan {
                    Some(s) => c.get_arrow_scan(&w.key, s)?,
                    None => c.get_arrow(&w.key)?,
                };
                Ok((c, o))
            })
            .await?;
        let Some(o) = o else {
            return Err(Status::not_found(format!(
                "{} is not in the store",
                String::from_utf8_lossy(&key)
            )));
        };
        let batches = futures::stream::iter(o.batches.into_iter().map(Ok));
        // Whole batches per message up to 16 MiB (the encoder's 2 MiB default costs
        // throughput; pyarrow's own server sends whole batches).
        let s = FlightDataEncoderBuilder::new()
            .with_max_flight_data_size(16 << 20)
            .with_schema(o.schema)
            .build(batches)
            .map_err(|e| Status::internal(e.to_string()))
            .map(move |r| {
                let _keep = &client;
                r
            });
        Ok(Response::new(s.boxed()))
    }

    async fn do_put(
        &self,
        r: Request<Streaming<FlightData>>,
    ) -> std::result::Result<Response<Self::DoPutStream>, Status> {
        let mut input = r.into_inner();
        // The descriptor rides on the first message.
        let first = input
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty DoPut stream"))?;
        let key = first
            .flight_descriptor
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("the first message carries no descriptor"))
            .and_then(descriptor_key)?;
        let max = self.max_put;
        let mut seen = first.data_header.len() as u64 + first.data_body.len() as u64;
        let rest = input.map_err(|e| arrow_flight::error::FlightError::Tonic(Box::new(e)));
        let all = futures::stream::once(async { Ok(first) })
            .chain(rest)
            .map(move |m| {
                let m = m?;
                seen += (m.data_header.len() + m.data_body.len()) as u64;
                if seen > max {
                    return Err(arrow_flight::error::FlightError::protocol(format!(
                        "the stream exceeds the limit of {max} bytes"
                    )));
                }
                Ok(m)
            });
        let mut decoded = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(all);
        let mut batches = Vec::new();
        while let Some(b) = decoded.next().await {
            batches.push(b.map_err(|e| Status::invalid_argument(format!("bad stream: {e}")))?);
        }
        let schema = match (decoded.schema(), batches.first()) {
            (Some(s), _) => s.clone(),
            (None, Some(b)) => b.schema(),
            (None, None) => return Err(Status::invalid_argument("the stream has no schema")),
        };
        for b in &batches {
            if b.schema() != schema {
                return Err(Status::invalid_argument(
                    "a batch does not match the stream's schema",
                ));
            }
        }
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        self.with_client(move |c| c.put_arrow(&key, &schema, &batches))
            .await?;
        let ack = PutResult {
            app_metadata: format!("{rows}").into_bytes().into(),
        };
        Ok(Response::new(
            futures::stream::once(async { Ok(ack) }).boxed(),
        ))
    }

    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> std::result::Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("DoExchange is not offered"))
    }

    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> std::result::Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented("no actions are offered"))
    }

    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> std::result::Result<Response<Self::ListActionsStream>, Status> {
        Ok(Response::new(futures::stream::empty().boxed()))
    }
}

/// Serves Flight until the runtime stops. Errors (a bad certificate, an address in use) are
/// returned before anything is served.
pub(crate) async fn serve(cfg: FlightConfig, socket: PathBuf) -> Result<()> {
    cfg.check()?;
    let token = cfg.token.clone().map(|t| format!("Bearer {t}"));
    let check = move |r: Request<()>| -> std::result::Result<Request<()>, Status> {
        if let Some(t) = &token {
            let given = r
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            // Compared in constant time: the token is a secret.
            let ok = given.is_some_and(|g| {
                g.len() == t.len()
                    && g.bytes().zip(t.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
            });
            if !ok {
                return Err(Status::unauthenticated(
                    "a bearer token is required (authorization: Bearer TOKEN)",
                ));
            }
        }
        Ok(r)
    };
    let inner = FlightServiceServer::new(Service {
        socket,
        max_put: cfg.max_put,
    })
    .max_decoding_message_size(64 << 20)
    .max_encoding_message_size(usize::MAX);
    let svc = tonic::service::interceptor::InterceptedService::new(inner, check);
    let mut server = tonic::transport::Server::builder();
    if let Some((cert, key)) = &cfg.tls {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| Error::io(format!("cannot read {}", p.display()), e))
        };
        let id = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
        server = server
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(id))
            .map_err(|e| Error::InvalidArgument(format!("Flight TLS: {e}")))?;
    }
    let listener = tokio::net::TcpListener::bind(cfg.addr)
        .await
        .map_err(|e| Error::io(format!("cannot bind the Flight address {}", cfg.addr), e))?;
    tracing::info!(
        "serving Arrow Flight on {}{}{}",
        cfg.addr,
        if cfg.tls.is_some() { " (TLS)" } else { "" },
        if cfg.token.is_some() {
            " (token required)"
        } else {
            ""
        }
    );
    server
        .add_service(svc)
        .serve_with_incoming(tokio_stream_from(listener))
        .await
        .map_err(|e| Error::Internal(format!("Flight server: {e}")))
}

fn tokio_stream_from(
    l: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(l, |l| async move {
        let r = l.accept().await.map(|(s, _)| {
            let _ = s.set_nodelay(true);
            s
        });
        Some((r, l))
    })
}
