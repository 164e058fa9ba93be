//! The upstream answer's body, cut off at the call's deadline.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::error::UpstreamError;
use super::pool::PooledBody;
use crate::body::BoxError;

/// An upstream answer's body, cut off at the call's deadline: `upstream.timeout` bounds
/// the whole answer, so an upstream that stalls mid-body cannot hold the storefront's
/// request open for ever. The timer is only armed once the body makes a caller wait; an
/// answer that arrives with its head (the usual case) never sets one.
pub(crate) struct Deadline {
    body: PooledBody,
    at: tokio::time::Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Deadline {
    pub(crate) fn new(body: PooledBody, at: tokio::time::Instant) -> Deadline {
        Deadline {
            body,
            at,
            timer: None,
        }
    }
}

impl Body for Deadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Incoming and the boxed timer are both Unpin.
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(BoxError::from)));
        }
        let at = this.at;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(UpstreamError::Timeout.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
