//! The read-body phase: the whole request body, bounded in size and in time.
//!
//! A declared `Content-Length` over `limits.max_body` is refused before anything is read;
//! a body that grows past it is refused at the first frame that does, and one that does
//! not arrive within `server.header_read_timeout` gets 400 (slow senders).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, header};
use hyper::body::Incoming;

use crate::body::{ReadError, read_limited};
use crate::error::ApiError;

/// The body limits, from the config.
pub(crate) struct BodyLimits {
    pub max_body: usize,
    pub timeout: Duration,
}

impl BodyLimits {
    pub(crate) async fn read(
        &self,
        headers: &HeaderMap,
        body: &mut Incoming,
    ) -> Result<Bytes, ApiError> {
        let limit = self.max_body;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::BodyTooLarge { limit });
        }
        match ready_or_timeout(self.timeout, read_limited(body, limit)).await {
            Err(_) => Err(ApiError::ClientBody),
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(ReadError::TooLarge { limit })) => Err(ApiError::BodyTooLarge { limit }),
            Ok(Err(ReadError::Failed(_))) => Err(ApiError::ClientBody),
        }
    }
}

/// `fut` bounded by `limit`, without arming a timer when it completes on its first poll:
/// a small body usually arrives with its request head, and a timer per request is a
/// measurable share of the proxy's CPU at benchmark rates. The timer of the rare slow case
/// is boxed, so it does not enlarge every request's future.
async fn ready_or_timeout<F: Future>(
    limit: Duration,
    fut: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    use std::task::Poll;
    let mut fut = std::pin::pin!(fut);
    match std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        Poll::Ready(out) => Ok(out),
        Poll::Pending => Box::pin(tokio::time::timeout(limit, fut)).await,
    }
}
