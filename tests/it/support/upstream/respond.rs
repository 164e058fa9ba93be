//! One request answered: the body read and recorded, the handler asked, and its `Reply`
//! carried out, including the bodies that trickle, stall or end in a reset.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};

use super::reply::{RESET_ANNOUNCED_LENGTH, RESET_PARTIAL_BODY, Recorded, Reply, TRICKLE_CHUNK};
use super::server::{ConnControl, State};

type ResponseBody = BoxBody<Bytes, io::Error>;

fn full(body: impl Into<Bytes>) -> ResponseBody {
    Full::new(body.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

pub(super) async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
    control: Arc<ConnControl>,
) -> Result<Response<ResponseBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let mut resp = Response::new(full(Bytes::new()));
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(resp);
        }
    };
    let recorded = Recorded {
        method: parts.method,
        path: parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_else(|| parts.uri.path().to_owned()),
        headers: parts.headers,
        body,
    };
    let handler = state.handler.lock().unwrap().clone();
    {
        let mut requests = state.requests.lock().unwrap();
        requests.push(recorded.clone());
        state.count.send_replace(requests.len());
    }
    let mut reply = handler(&recorded);
    loop {
        match reply {
            Reply::Delay(delay, inner) => {
                tokio::time::sleep(delay).await;
                reply = *inner;
            }
            Reply::ThenClose(after, inner) => {
                let control = control.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    control.kill.notify_one();
                });
                reply = *inner;
            }
            Reply::Respond {
                status,
                headers,
                body,
            } => {
                let mut resp = Response::new(full(body));
                *resp.status_mut() =
                    StatusCode::from_u16(status).expect("Reply::Respond status must be 100..=999");
                for (name, value) in headers {
                    resp.headers_mut().append(
                        HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                        HeaderValue::from_str(&value).expect("header value"),
                    );
                }
                return Ok(resp);
            }
            Reply::ResetAfterHeaders | Reply::StallAfterHeaders => {
                let reset = matches!(reply, Reply::ResetAfterHeaders);
                let body = PartialThenReset {
                    control: reset.then_some(control),
                    sent: false,
                    killing: false,
                };
                let mut resp = Response::new(body.boxed());
                resp.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                resp.headers_mut()
                    .insert(CONTENT_LENGTH, HeaderValue::from(RESET_ANNOUNCED_LENGTH));
                return Ok(resp);
            }
            Reply::Trickle { chunks, every } => {
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                tokio::spawn(async move {
                    for _ in 0..chunks {
                        tokio::time::sleep(every).await;
                        if tx.send(Bytes::from_static(TRICKLE_CHUNK)).await.is_err() {
                            return;
                        }
                    }
                });
                let mut resp = Response::new(Trickled(rx).boxed());
                resp.headers_mut().insert(
                    CONTENT_LENGTH,
                    HeaderValue::from(chunks * TRICKLE_CHUNK.len()),
                );
                return Ok(resp);
            }
            Reply::CloseImmediately => {
                control.kill.notify_one();
                return std::future::pending().await;
            }
        }
    }
}

/// The body of `Reply::Trickle`: the chunks as the sending task hands them over.
struct Trickled(tokio::sync::mpsc::Receiver<Bytes>);

impl Body for Trickled {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|data| Ok(Frame::data(data))))
    }
}

/// The body of `Reply::ResetAfterHeaders`: yields `RESET_PARTIAL_BODY`, and when polled
/// again (so the server has taken the first part and is about to flush it) schedules an
/// abortive drop of the connection and never ends. Without `control`
/// (`Reply::StallAfterHeaders`) it just never ends: the connection stays open and silent.
struct PartialThenReset {
    control: Option<Arc<ConnControl>>,
    sent: bool,
    killing: bool,
}

impl Body for PartialThenReset {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if !self.sent {
            self.sent = true;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                RESET_PARTIAL_BODY,
            )))));
        }
        if self.killing {
            return Poll::Pending;
        }
        self.killing = true;
        let Some(control) = self.control.clone() else {
            // Stall: never woken, the connection stays open until it is dropped.
            return Poll::Pending;
        };
        tokio::spawn(async move {
            // Let the partial body reach the socket, then cut the connection.
            tokio::time::sleep(Duration::from_millis(50)).await;
            control.abortive.store(true, Ordering::SeqCst);
            control.kill.notify_one();
        });
        // The connection task drops this body with the connection; no wake-up needed.
        Poll::Pending
    }
}
