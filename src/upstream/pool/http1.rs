//! HTTP/1.1 connections: one request at a time, so an idle connection is taken out of the
//! pool whole and put back once its answer's body has been read to the end.

use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use super::super::tls_connect::Stream;

pub(crate) type Sender = http1::SendRequest<Full<Bytes>>;

/// Starts HTTP/1.1 on a new connection; hyper's connection task is the only task it gets.
pub(crate) async fn handshake(stream: Stream) -> Result<Sender, hyper::Error> {
    let (sender, connection) = http1::Builder::new()
        // Small JSON requests: one flat write beats a vectored one (bench/).
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        // Its errors reach the request that was in flight; an idle close needs no report.
        let _ = connection.await;
    });
    Ok(sender)
}

/// An idle connection and when it became idle.
pub(crate) struct Idle {
    pub(crate) sender: Sender,
    pub(crate) since: Instant,
}
