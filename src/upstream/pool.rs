//! payshim's own connection pool to the API, on hyper's connection API (README.md,
//! Architecture): HTTP/2 when the server chooses it by ALPN (one connection carries many
//! requests, a second opens when the first is at the server's stream limit), else
//! HTTP/1.1 (one request per connection at a time, idle connections reused newest first).
//!
//! The rule that matters for payments: a request is sent again only when hyper hands it
//! back unwritten (`try_send_request`: the connection closed before the request was taken
//! for writing), and then once, on a new connection. Anything that may have reached the
//! API is `UpstreamError::Failed`, never resent.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;

use super::base::Base;
use super::error::{UpstreamError, error_chain};
use super::tls_connect::{Connector, Protocol};
use lease::Lease;
use store::Store;

mod http1;
mod http2;
mod lease;
mod store;

pub(crate) use lease::PooledBody;

/// The pool's limits, from `[upstream]`.
pub(crate) struct PoolSettings {
    pub(crate) idle_timeout: Duration,
    pub(crate) max_idle: usize,
    pub(crate) connect_timeout: Duration,
}

pub(crate) struct Pool {
    base: Base,
    connector: Connector,
    store: Arc<Store>,
    /// The last connection opened chose HTTP/2: look for a shared connection first.
    http2: AtomicBool,
    /// HTTP/2 connections are opened one at a time (`open_shared`); this holds why the
    /// last of those opens failed, if it did.
    opening: tokio::sync::Mutex<Option<String>>,
    /// Opens finished under `opening`.
    opened: AtomicU64,
    /// The HTTP/2 stream limit the server last announced.
    server_max_streams: Arc<AtomicUsize>,
    sweeper: Once,
}

/// What became of one attempt.
enum Attempt {
    Answered(Response<PooledBody>),
    /// hyper gave the request back unwritten.
    Unsent(Request<Full<Bytes>>, String),
    /// The request may have been written.
    Failed(String),
}

impl Pool {
    /// `tls` is `None` for a plain `http://` upstream (loopback only).
    pub(crate) fn new(
        base: Base,
        tls: Option<Arc<rustls::ClientConfig>>,
        settings: &PoolSettings,
    ) -> Pool {
        Pool {
            connector: Connector::new(&base, tls, settings.connect_timeout),
            base,
            store: Arc::new(Store::new(settings.idle_timeout, settings.max_idle)),
            http2: AtomicBool::new(false),
            opening: tokio::sync::Mutex::new(None),
            opened: AtomicU64::new(0),
            server_max_streams: Arc::new(AtomicUsize::new(http2::INITIAL_MAX_STREAMS)),
            sweeper: Once::new(),
        }
    }

    pub(crate) fn base(&self) -> &Base {
        &self.base
    }

    /// Sends `request` (origin-form URI, `Host` set) and returns the answer, whose body
    /// holds the connection until it is read or dropped.
    pub(crate) async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let lease = self.checkout(false).await?;
        self.send_on(lease, request).await
    }

    /// Sends on `lease`; a request handed back unwritten goes once more, on a new
    /// connection.
    async fn send_on(
        &self,
        mut lease: Lease,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let mut fresh = false;
        loop {
            match self.attempt(lease, request).await {
                Attempt::Answered(response) => return Ok(response),
                Attempt::Failed(why) => return Err(UpstreamError::Failed(why)),
                Attempt::Unsent(back, why) if !fresh => {
                    tracing::debug!(error = %why, "upstream request came back unsent; sending it on a new connection");
                    request = back;
                    fresh = true;
                    lease = self.checkout(true).await?;
                }
                Attempt::Unsent(_, why) => {
                    return Err(UpstreamError::Unreachable(format!(
                        "a new connection closed before the request was written: {why}"
                    )));
                }
            }
        }
    }

    /// A pooled connection (unless `fresh`), else a new one.
    async fn checkout(&self, fresh: bool) -> Result<Lease, UpstreamError> {
        if !fresh {
            if self.http2.load(Ordering::Relaxed) {
                if let Some(conn) = self.store.acquire_h2() {
                    return Ok(self.lease_h2(conn));
                }
                return Box::pin(self.open_shared()).await;
            } else {
                while let Some(mut sender) = self.store.take_h1() {
                    // Put back as its answer ended; hyper may not have marked it ready yet.
                    if sender.is_ready() || sender.ready().await.is_ok() {
                        return Ok(self.lease_h1(sender));
                    }
                }
            }
        }
        // Boxed: the connect and TLS handshake state would otherwise double the size of
        // every request's future, and a new connection is the rare case.
        Box::pin(self.open()).await
    }

    /// HTTP/2, every connection full: requests wait for the one connection being opened
    /// instead of each opening their own, and when that open fails they fail with it
    /// (nothing was sent) rather than trying again one after another.
    async fn open_shared(&self) -> Result<Lease, UpstreamError> {
        if !self.store.keeps_connections() {
            // Nothing opened is shared, so there is nothing to wait for.
            return self.open().await;
        }
        let seen = self.opened.load(Ordering::Acquire);
        let mut last_failure = self.opening.lock().await;
        if self.opened.load(Ordering::Acquire) != seen {
            if let Some(conn) = self.store.acquire_h2() {
                return Ok(self.lease_h2(conn));
            }
            if let Some(why) = last_failure.as_ref() {
                return Err(UpstreamError::Unreachable(why.clone()));
            }
        }
        let opened = self.open().await;
        *last_failure = match &opened {
            Ok(_) => None,
            Err(UpstreamError::Unreachable(why)) => Some(why.clone()),
            Err(other) => Some(other.to_string()),
        };
        self.opened.fetch_add(1, Ordering::Release);
        opened
    }

    /// Opens a connection; every failure here is `Unreachable` (nothing was sent).
    async fn open(&self) -> Result<Lease, UpstreamError> {
        let unreachable = |e: &dyn std::fmt::Display| UpstreamError::Unreachable(e.to_string());
        let (stream, protocol) = self
            .connector
            .connect()
            .await
            .map_err(|e| unreachable(&e))?;
        self.start_sweeper();
        self.http2
            .store(protocol == Protocol::Http2, Ordering::Relaxed);
        match protocol {
            Protocol::Http1 => {
                let sender = http1::handshake(stream)
                    .await
                    .map_err(|e| unreachable(&e))?;
                Ok(self.lease_h1(sender))
            }
            Protocol::Http2 => {
                let conn = http2::handshake(stream, self.store.now_ms(), &self.server_max_streams)
                    .await
                    .map_err(|e| unreachable(&e))?;
                let conn = Arc::new(conn);
                // A new connection has every slot free.
                let _ = conn.try_acquire();
                self.store.add_h2(conn.clone());
                Ok(self.lease_h2(conn))
            }
        }
    }

    fn lease_h1(&self, sender: http1::Sender) -> Lease {
        Lease::Http1 {
            sender: Some(sender),
            store: self.store.clone(),
        }
    }

    fn lease_h2(&self, conn: Arc<http2::Shared>) -> Lease {
        Lease::Http2 {
            conn,
            store: self.store.clone(),
        }
    }

    async fn attempt(&self, mut lease: Lease, mut request: Request<Full<Bytes>>) -> Attempt {
        let sent = match &mut lease {
            Lease::Http1 { sender, .. } => {
                let Some(sender) = sender.as_mut() else {
                    return Attempt::Unsent(request, "connection already given back".into());
                };
                origin_form(&mut request);
                sender.try_send_request(request).await
            }
            Lease::Http2 { conn, .. } => {
                if let Err(e) = self.absolute_form(&mut request) {
                    return Attempt::Failed(e.to_string());
                }
                conn.sender().try_send_request(request).await
            }
        };
        classify(sent, lease)
    }

    /// HTTP/2 sends scheme and authority as pseudo-headers: they come from the URI.
    fn absolute_form(&self, request: &mut Request<Full<Bytes>>) -> Result<(), UpstreamError> {
        if request.uri().scheme().is_none()
            && let Some(path) = request.uri().path_and_query().cloned()
        {
            *request.uri_mut() = self.base.uri(path)?;
        }
        *request.version_mut() = Version::HTTP_2;
        Ok(())
    }

    /// One task per pool closes expired connections, started with the first connection
    /// (so a pool made outside a runtime, or never used, has none). It ends with the pool.
    fn start_sweeper(&self) {
        self.sweeper.call_once(|| {
            let store = Arc::downgrade(&self.store);
            let every = (self.store.idle_timeout() / 4).max(Duration::from_millis(10));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(store) = store.upgrade() else { return };
                    store.sweep();
                }
            });
        });
    }
}

/// HTTP/1.1 sends the path and query only (a request given back by an HTTP/2 connection
/// carries the absolute form).
fn origin_form(request: &mut Request<Full<Bytes>>) {
    if request.uri().scheme().is_some()
        && let Some(path) = request.uri().path_and_query().cloned()
    {
        *request.uri_mut() = Uri::from(path);
    }
    *request.version_mut() = Version::HTTP_11;
}

/// hyper returns the request only when it was never taken for writing; without it, the
/// request may have reached the API.
fn classify(
    sent: Result<Response<Incoming>, TrySendError<Request<Full<Bytes>>>>,
    lease: Lease,
) -> Attempt {
    match sent {
        Ok(response) => Attempt::Answered(response.map(|body| PooledBody::new(body, lease))),
        Err(mut e) => match e.take_message() {
            Some(request) => Attempt::Unsent(request, error_chain(e.error())),
            None => Attempt::Failed(error_chain(&e.into_error())),
        },
    }
}

#[cfg(test)]
mod tests;
