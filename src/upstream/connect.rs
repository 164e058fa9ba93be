//! The TCP half of the upstream connector: hyper-util's `HttpConnector`, minus the
//! connection details it attaches to every answer.
//!
//! hyper-util's pooled client copies a connection's `Connected::extra` value into the
//! extensions of each response it receives on it; for a plain `HttpConnector` that is an
//! `HttpInfo` with both socket addresses, so every forwarded answer allocated an extension
//! map that nothing in payshim reads. Wrapping the socket so that it reports no extra keeps
//! the connector's behaviour (connect timeout, `TCP_NODELAY`, happy eyeballs) and drops
//! that per-request cost (bench/README.md).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

type ConnectError = <HttpConnector as Service<Uri>>::Error;
type Connecting = Pin<Box<dyn Future<Output = Result<Tcp, ConnectError>> + Send>>;

/// Connects like [`HttpConnector`] and hands out sockets that carry no per-answer extras.
#[derive(Clone)]
pub(super) struct TcpConnector(pub(super) HttpConnector);

impl Service<Uri> for TcpConnector {
    type Response = Tcp;
    type Error = ConnectError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        let connecting = self.0.call(uri);
        Box::pin(async move { connecting.await.map(Tcp) })
    }
}

/// An upstream TCP socket.
pub(super) struct Tcp(TokioIo<TcpStream>);

impl Connection for Tcp {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl Read for Tcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl Write for Tcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_carries_no_extras_into_answers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri: Uri = format!("http://{}/", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let mut connector = TcpConnector(HttpConnector::new());
        let (tcp, accepted) = tokio::join!(connector.call(uri), listener.accept());
        let (tcp, _peer) = (tcp.unwrap(), accepted.unwrap());

        let mut extensions = http::Extensions::new();
        tcp.connected().get_extras(&mut extensions);
        assert!(extensions.is_empty(), "{extensions:?}");
        // What the wrapper takes away: the plain socket adds its addresses.
        tcp.0.connected().get_extras(&mut extensions);
        assert!(!extensions.is_empty());
    }
}
