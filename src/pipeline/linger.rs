//! Lingering over the body of a request answered without reading it (401, 403, 404,
//! 413, 415, 429, 503, ...), as nginx discards request bodies and lingers before it
//! closes.
//!
//! Answering while the client is still sending, then dropping the body, makes hyper
//! reset the HTTP/2 stream (`RST_STREAM(NO_ERROR)`, which RFC 9113 allows but curl 7.88
//! reports as "(92) Stream error" instead of the answer) or close the HTTP/1.1 connection
//! under a client still writing (the kernel then resets it, and a client that sends its
//! whole body before reading gets no answer). Answering mid-upload over HTTP/2 has a second
//! trap: curl stops sending when the answer's head arrives and ends the stream short of its
//! `content-length`, which h2 must treat as a malformed request: it resets the stream with
//! PROTOCOL_ERROR, and if the answer's DATA frame had not left yet, it is dropped and curl
//! reports "(92) ... PROTOCOL_ERROR" (about one 2 MB refusal in thirty in
//! tests/it/early_refusals.rs before this was known). So before answering, the rest of a
//! body up to [`LINGER_BYTES`] is read and thrown away within a short bound (the client then
//! reads its answer with nothing left to send); what is still coming after that is read and
//! thrown away in the background, up to [`LINGER_BYTES`] in all and never longer than
//! `server.header_read_timeout`. Nothing read here is kept, forwarded or logged.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use tokio::time::Instant;

/// How much of a refused body is read and discarded at most, before and after the answer
/// together: what a client can make payshim read per refused request.
pub(crate) const LINGER_BYTES: usize = 8 << 20;
/// How long the answer may wait for the rest of a refused body at most.
const BEFORE_ANSWER: Duration = Duration::from_secs(1);

/// The linger bounds, from the config.
pub(crate) struct Linger {
    pub max_body: usize,
    /// `server.header_read_timeout`: the whole linger, before and after the answer.
    pub total: Duration,
}

impl Linger {
    /// Discards what is left of `body` before the answer is sent: up to [`LINGER_BYTES`]
    /// (or `max_body`, if larger), within one second (or `server.header_read_timeout` if
    /// shorter). Returns when the body ended or a bound was reached, with the bytes read.
    pub(crate) async fn before_answer(&self, body: &mut Incoming) -> usize {
        let deadline = Instant::now() + BEFORE_ANSWER.min(self.total);
        discard(body, self.budget(), deadline).await
    }

    /// Keeps discarding what is still coming in a task of its own, so the answer leaves
    /// now and the connection is closed (or reused) only once the client has finished
    /// sending, or the linger's bounds are reached: `already` bytes read before the answer
    /// count against the same budget.
    pub(crate) fn after_answer(&self, mut body: Incoming, already: usize) {
        let deadline = Instant::now() + self.total;
        let left = self.budget().saturating_sub(already);
        tokio::spawn(async move { discard(&mut body, left, deadline).await });
    }

    /// How much of one refused body is read at most, before and after the answer.
    fn budget(&self) -> usize {
        LINGER_BYTES.max(self.max_body)
    }
}

/// Reads and drops frames until the body ends, `max_bytes` were read, the body fails
/// or `deadline` passes; returns the bytes read.
async fn discard(body: &mut Incoming, max_bytes: usize, deadline: Instant) -> usize {
    let mut read = 0usize;
    while !body.is_end_stream() && read <= max_bytes {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                read += frame.data_ref().map_or(0, |d| d.len());
            }
            Ok(Some(Err(_)) | None) | Err(_) => break,
        }
    }
    read
}
