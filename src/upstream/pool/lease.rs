//! A connection lent to one request, and the answer body that carries it: the connection
//! goes back to the pool when the body has been read to the end, and is closed when the
//! body is dropped early (an HTTP/1.1 connection with unread answer bytes cannot carry
//! another request).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::store::Store;
use super::{http1, http2};

/// The connection a request is sent on.
pub(crate) enum Lease {
    Http1 {
        /// `None` once given back.
        sender: Option<http1::Sender>,
        store: Arc<Store>,
    },
    /// A stream slot on a shared connection; given back on drop.
    Http2 {
        conn: Arc<http2::Shared>,
        store: Arc<Store>,
    },
}

impl Lease {
    /// The answer was read to the end: an HTTP/1.1 connection can take the next request.
    fn finished(&mut self) {
        if let Lease::Http1 { sender, store } = self
            && let Some(sender) = sender.take()
        {
            store.put_h1(sender);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Lease::Http2 { conn, store } = self {
            conn.release(store.now_ms());
            if conn.is_closed() {
                store.remove_h2(conn);
            }
        }
    }
}

/// An upstream answer's body, holding the connection it arrives on.
pub(crate) struct PooledBody {
    body: Incoming,
    lease: Lease,
    /// A final `None` was read (the only end a chunked body shows).
    ended: bool,
}

impl PooledBody {
    pub(crate) fn new(body: Incoming, lease: Lease) -> PooledBody {
        PooledBody {
            body,
            lease,
            ended: false,
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // hyper's server stops polling a body of known length once its last byte is in,
        // before any final `None`: ask the body too.
        if self.ended || self.body.is_end_stream() {
            self.lease.finished();
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        // Incoming is Unpin, and so is the lease.
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            this.ended = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
