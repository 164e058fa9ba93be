//! Body types shared by the listeners, the pipeline and the upstream client: the one
//! response body type, the one size-limited read, and the one delegating wrapper.
//!
//! They live here, below all three, so that none of them imports another for a type.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response payshim sends: its own JSON or the upstream's stream.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A complete body of known bytes.
pub fn full_body(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// Why [`read_limited`] returned no body.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("body could not be read: {0}")]
    Failed(BoxError),
}

/// Reads a whole body of at most `limit` bytes, stopping at the first frame that would
/// take it past the limit (nothing more is read). Used for request bodies, upstream
/// answers and the token endpoint's answer alike.
pub async fn read_limited<B>(body: B, limit: usize) -> Result<Bytes, ReadError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ReadError::Failed(e.into()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let so_far = first.as_ref().map_or(0, Bytes::len) + buf.len();
        if so_far + data.len() > limit {
            return Err(ReadError::TooLarge { limit });
        }
        // The usual body arrives in one frame: keep it as it came, without a copy.
        match first.take() {
            None if buf.is_empty() => first = Some(data),
            Some(f) => {
                buf.extend_from_slice(&f);
                buf.extend_from_slice(&data);
            }
            None => buf.extend_from_slice(&data),
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

/// A body that keeps `guard` alive until the body itself is dropped, delegating every
/// call to `body`. The server uses it to count a request in flight until its answer has
/// been sent whole.
pub struct Guarded<B, G> {
    body: B,
    _guard: G,
}

impl<B, G> Guarded<B, G> {
    pub fn new(body: B, guard: G) -> Guarded<B, G> {
        Guarded {
            body,
            _guard: guard,
        }
    }
}

impl<B: Body + Unpin, G: Unpin> Body for Guarded<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A body that yields the given chunks, one frame each.
    struct Chunks(VecDeque<&'static str>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            let next = self.get_mut().0.pop_front();
            Poll::Ready(next.map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes())))))
        }
    }

    #[tokio::test]
    async fn reads_up_to_the_limit_in_one_or_many_frames() {
        let cases: [(&[&'static str], usize, Option<&str>); 6] = [
            (&[], 4, Some("")),
            (&["abcd"], 4, Some("abcd")),
            (&["ab", "cd"], 4, Some("abcd")),
            (&["a", "b", "c"], 4, Some("abc")),
            (&["abcde"], 4, None),
            (&["ab", "cde"], 4, None),
        ];
        for (parts, limit, want) in cases {
            let body = Chunks(parts.iter().copied().collect());
            match (want, read_limited(body, limit).await) {
                (Some(w), Ok(b)) => assert_eq!(b, w.as_bytes(), "{parts:?}"),
                (None, Err(ReadError::TooLarge { limit: l })) => assert_eq!(l, limit),
                (w, g) => panic!("{parts:?}: wanted {w:?}, got {g:?}"),
            }
        }
    }
}
