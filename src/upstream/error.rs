//! Why an upstream call produced no usable response, in the three cases the payment path
//! must tell apart: nothing was sent, something may have been sent, no answer in time.

/// Why an upstream call produced no usable response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Could not connect (refused, DNS, TLS handshake or verification), or the request
    /// came back from a connection unwritten: nothing was sent.
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    /// The connection failed after the request may have been sent.
    #[error("upstream failed: {0}")]
    Failed(String),
    #[error("upstream timed out")]
    Timeout,
}

/// An error and its sources, one line: what the log shows for a failed upstream call.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}
