//! What a test sees and decides: the recorded request, the reply the double gives it
//! (misbehaviour included), and the handler that maps one to the other.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};
use serde_json::Value;

/// One request as the double received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    /// Path and query, e.g. `/v2/orders/1/transactions?page=2`.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    /// A header's value as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// The body parsed as JSON (panics with the body text if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "recorded body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// What the double does with a request.
#[derive(Clone, Debug)]
pub enum Reply {
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Waits, then does the inner reply.
    Delay(Duration, Box<Reply>),
    /// Sends status 200 and headers with `Content-Length: 1000`, writes the first
    /// `RESET_PARTIAL_BODY.len()` bytes of the body, then drops the TCP connection
    /// abortively (SO_LINGER 0, so the peer sees a reset).
    ResetAfterHeaders,
    /// Like `ResetAfterHeaders`, but after the first part of the body the connection stays
    /// open and silent: an upstream that stalls mid-answer.
    StallAfterHeaders,
    /// Reads the request, then drops the connection without any response.
    CloseImmediately,
    /// Does the inner reply, then closes the connection (FIN) `after` the answer went
    /// out: a server ending a kept-alive connection between requests.
    ThenClose(Duration, Box<Reply>),
    /// Status 200 with `Content-Length`, then the body in `chunks` parts of
    /// [`TRICKLE_CHUNK`], one every `every`: a slow but complete answer.
    Trickle { chunks: usize, every: Duration },
}

/// One part of a `Reply::Trickle` body.
pub const TRICKLE_CHUNK: &[u8] = b"0123456789abcdef";

/// The body bytes sent by `Reply::ResetAfterHeaders` before the connection is dropped.
pub const RESET_PARTIAL_BODY: &[u8] = br#"{"data":{"id":"0b6a4b52-3c4f-4d1e-9a57-1f0e7c7f1a10","type":"transaction","gateway":"card_c"#;
/// The `Content-Length` announced by `Reply::ResetAfterHeaders`.
pub const RESET_ANNOUNCED_LENGTH: usize = 1000;

impl Reply {
    /// A JSON reply (`Content-Type: application/json`).
    pub fn json(status: u16, body: Value) -> Reply {
        Reply::Respond {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(&body).expect("serialize JSON reply"),
        }
    }

    /// A reply with a status and an empty body.
    pub fn status(status: u16) -> Reply {
        Reply::Respond {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// This reply after a delay.
    pub fn delayed(self, delay: Duration) -> Reply {
        Reply::Delay(delay, Box::new(self))
    }
}

pub type Handler = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// Wraps a closure as a `Handler`.
pub fn handler(f: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Handler {
    Arc::new(f)
}
