//! Opening one connection to the API: name resolution, TCP (`TCP_NODELAY`), and for an
//! `https` upstream the TLS handshake, which verifies the certificate chain and host name
//! and offers `h2` and `http/1.1` by ALPN. The whole is bounded by
//! `upstream.connect_timeout`; every failure here means nothing was sent.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::base::Base;

/// Why no connection could be opened. The messages name the step and the peer; a TLS
/// verification failure reads e.g. "TLS handshake with localhost: invalid peer
/// certificate: UnknownIssuer".
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: io::Error },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("TCP connect to {addr}: {reason}")]
    Tcp { addr: SocketAddr, reason: io::Error },
    #[error("{host} is not a valid TLS server name")]
    ServerName { host: String },
    #[error("TLS handshake with {host}: {reason}")]
    Tls { host: String, reason: io::Error },
    #[error("no connection to {host} within upstream.connect_timeout ({timeout:?})")]
    TimedOut { host: String, timeout: Duration },
}

/// The HTTP version a new connection speaks: HTTP/2 only when the server chose `h2` by
/// ALPN; plain connections (loopback only) speak HTTP/1.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    Http2,
}

/// Opens connections to one upstream.
pub(crate) struct Connector {
    /// The host without IPv6 brackets, for resolution and the TLS server name.
    host: String,
    port: u16,
    /// `None` for a plain `http://` (loopback) upstream.
    tls: Option<TlsConnector>,
    timeout: Duration,
}

impl Connector {
    /// `tls` must offer ALPN `h2` and `http/1.1` (`tls::client_config` does).
    pub(crate) fn new(
        base: &Base,
        tls: Option<Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> Connector {
        let host = base.authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        Connector {
            host: host.to_string(),
            port: base.port(),
            tls: tls.map(TlsConnector::from),
            timeout,
        }
    }

    /// A new connection and the protocol to speak on it.
    pub(crate) async fn connect(&self) -> Result<(Stream, Protocol), ConnectError> {
        match tokio::time::timeout(self.timeout, self.open()).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::TimedOut {
                host: self.host.clone(),
                timeout: self.timeout,
            }),
        }
    }

    async fn open(&self) -> Result<(Stream, Protocol), ConnectError> {
        let tcp = self.tcp().await?;
        let Some(tls) = &self.tls else {
            return Ok((Stream::Plain(tcp), Protocol::Http1));
        };
        let name =
            ServerName::try_from(self.host.clone()).map_err(|_| ConnectError::ServerName {
                host: self.host.clone(),
            })?;
        let stream = tls
            .connect(name, tcp)
            .await
            .map_err(|reason| ConnectError::Tls {
                host: self.host.clone(),
                reason,
            })?;
        let protocol = match stream.get_ref().1.alpn_protocol() {
            Some(b"h2") => Protocol::Http2,
            _ => Protocol::Http1,
        };
        Ok((Stream::Tls(Box::new(stream)), protocol))
    }

    /// The first address of the host that accepts, tried in resolver order. Each try gets
    /// an equal share of the connect timeout, so an address that never answers (an IPv6
    /// route that drops packets) leaves time for the next.
    async fn tcp(&self) -> Result<TcpStream, ConnectError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|reason| ConnectError::Resolve {
                host: self.host.clone(),
                reason,
            })?
            .collect();
        let share = self.timeout / u32::try_from(addrs.len().max(1)).unwrap_or(u32::MAX);
        let mut last = None;
        for addr in addrs {
            let reason = match tokio::time::timeout(share, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => {
                    // Small requests and answers: send each at once.
                    let _ = tcp.set_nodelay(true);
                    return Ok(tcp);
                }
                Ok(Err(reason)) => reason,
                Err(_) => io::Error::new(io::ErrorKind::TimedOut, "no answer"),
            };
            last = Some(ConnectError::Tcp { addr, reason });
        }
        Err(last.unwrap_or_else(|| ConnectError::NoAddress {
            host: self.host.clone(),
        }))
    }
}

/// An upstream connection: plain TCP (loopback upstreams) or TLS over TCP.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}
