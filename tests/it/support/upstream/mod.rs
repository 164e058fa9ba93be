//! The upstream API test double: stands in for `https://api.moltin.com`.
//!
//! It serves HTTP/1.1 and HTTP/2 (ALPN over TLS; prior knowledge or upgrade-free h2c on the
//! plain variant), records every request in full (the body is read completely before the
//! handler runs) and answers with whatever the current `Handler` returns, including
//! misbehaviour: delays, a reset in the middle of a body, a close without an answer.
//!
//! `reply.rs`: what a test sees and decides (`Recorded`, `Reply`, `Handler`); `server.rs`:
//! the running double (`Upstream`) and its connections; `respond.rs`: a `Reply` carried
//! out, misbehaviour included; `moltin.rs`: `moltin_like`, a handler answering like the
//! real API, and its transactions; `ports.rs`: `blackhole` and `closed_port`, addresses
//! that never answer or refuse.

mod moltin;
mod ports;
mod reply;
mod respond;
mod server;

pub use moltin::{moltin_like, random_uuid, transaction};
pub use ports::{ClosedPort, blackhole, closed_port};
pub use reply::{
    Handler, RESET_ANNOUNCED_LENGTH, RESET_PARTIAL_BODY, Recorded, Reply, TRICKLE_CHUNK, handler,
};
pub use server::Upstream;
