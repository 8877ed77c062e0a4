//! Apache Arrow 11 Plasma compatibility: the wire codec, fd passing, a Rust Plasma client, the
//! store state machine, and the service that serves it from `cidcached plasma` over the
//! coordinator's own index and segments.
//!
//! * [`codec`]: bounds-checked FlatBuffers codec for every Plasma message; never panics on input.
//! * [`fdpass`]: SCM_RIGHTS fd passing exactly as libplasma expects (1 byte + 1 fd per sendmsg).
//! * [`client`]: a synchronous libplasma-compatible client (used by tests and benchmarks).
//! * [`server`]: the transport- and allocator-independent state machine ([`server::PlasmaStore`])
//!   with its [`server::PlasmaMemory`] and [`server::ExternalStore`] extension points.
//! * [`service`]: the command line (`plasma-store-server` flags) and the epoll event loop.
//!
//! See `docs/plasma.md` for how Plasma and native objects share one store.

pub mod client;
pub mod codec;
pub mod fdpass;
pub mod server;
pub mod service;
