//! The pool against real loopback sockets and hyper's real connection code: what is
//! resent and what is not, reuse, and the idle cap. The cases that need timing control
//! (a connection that dies with a request queued on it) are set up here rather than
//! through a whole payshim; tests/it/upstream_pool.rs covers the rest end to end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::Scheme;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::upstream::tls_connect::Stream;

/// What the test server does with each request it has read in full.
#[derive(Clone, Copy)]
enum Then {
    Answer,
    /// Closes the connection without an answer: the request reached the server.
    Close,
}

/// A plain HTTP/1.1 server on loopback counting accepted connections and requests read.
struct Server {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl Server {
    async fn start(then: Then) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server {
            addr: listener.local_addr().unwrap(),
            accepts: Arc::default(),
            requests: Arc::default(),
        };
        let (accepts, requests) = (server.accepts.clone(), server.requests.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                accepts.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(tcp, then, requests.clone()));
            }
        });
        server
    }

    fn pool(&self, max_idle: usize) -> Pool {
        let base = Base::new(Scheme::HTTP, self.addr.to_string().parse().unwrap());
        let settings = PoolSettings {
            idle_timeout: Duration::from_secs(30),
            max_idle,
            connect_timeout: Duration::from_secs(5),
        };
        Pool::new(base, None, &settings)
    }
}

/// Reads requests (head, then `content-length` bytes) and does `then` with each.
async fn serve(mut tcp: TcpStream, then: Then, requests: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = find(&buf, b"\r\n\r\n") else {
            let mut chunk = [0u8; 4096];
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
        while buf.len() < end + 4 + length {
            let mut chunk = [0u8; 4096];
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..end + 4 + length);
        requests.fetch_add(1, Ordering::SeqCst);
        match then {
            Then::Close => return,
            Then::Answer => {
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
                if tcp.write_all(answer).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn post(server: &Server) -> Request<Full<Bytes>> {
    Request::post("/v2/orders/1/payments")
        .header(http::header::HOST, server.addr.to_string())
        .body(Full::new(Bytes::from_static(b"{\"data\":{}}")))
        .unwrap()
}

/// A connection whose server side closed before the first request, and whose FIN the
/// runtime has already seen, but whose hyper task has not run yet: a request queued on
/// it is handed back unwritten, every time.
async fn doomed_connection(pool: &Pool) -> Lease {
    let doomed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp = TcpStream::connect(doomed.local_addr().unwrap())
        .await
        .unwrap();
    drop(doomed.accept().await.unwrap());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sender = http1::handshake(Stream::Plain(tcp)).await.unwrap();
    pool.lease_h1(sender)
}

async fn read_all(response: Response<PooledBody>) -> (u16, Bytes) {
    let status = response.status().as_u16();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn a_request_handed_back_unwritten_is_sent_once_on_a_new_connection() {
    let server = Server::start(Then::Answer).await;
    let pool = server.pool(8);
    let lease = doomed_connection(&pool).await;
    let response = pool.send_on(lease, post(&server)).await.unwrap();
    assert_eq!(read_all(response).await, (200, Bytes::from_static(b"{}")));
    assert_eq!(server.accepts.load(Ordering::SeqCst), 1);
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_request_handed_back_twice_is_unreachable_not_resent_again() {
    // The "new connection" is doomed too: its server closes every connection at once.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let counted = accepts.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = tcp.set_zero_linger();
            drop(tcp);
        }
    });
    let server = Server {
        addr,
        accepts: accepts.clone(),
        requests: Arc::default(),
    };
    let pool = server.pool(8);
    let lease = doomed_connection(&pool).await;
    match pool.send_on(lease, post(&server)).await {
        // Either hyper handed it back again (Unreachable) or it was written before the
        // reset arrived (Failed); never a third connection.
        Err(UpstreamError::Unreachable(_) | UpstreamError::Failed(_)) => {}
        other => panic!("expected an error, got {:?}", other.map(|r| r.status())),
    }
    assert_eq!(accepts.load(Ordering::SeqCst), 1, "resent more than once");
}

#[tokio::test]
async fn a_request_that_reached_the_server_is_never_resent() {
    let server = Server::start(Then::Close).await;
    let pool = server.pool(8);
    match pool.send(post(&server)).await {
        Err(UpstreamError::Failed(_)) => {}
        other => panic!("expected Failed, got {:?}", other.map(|r| r.status())),
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    assert_eq!(server.accepts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_is_reused_once_its_answer_was_read() {
    let server = Server::start(Then::Answer).await;
    let pool = server.pool(8);
    for _ in 0..3 {
        let response = pool.send(post(&server)).await.unwrap();
        assert_eq!(read_all(response).await.0, 200);
    }
    assert_eq!(server.accepts.load(Ordering::SeqCst), 1);
    // An answer dropped unread closes its connection instead.
    drop(pool.send(post(&server)).await.unwrap());
    let response = pool.send(post(&server)).await.unwrap();
    assert_eq!(read_all(response).await.0, 200);
    assert_eq!(server.accepts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn idle_connections_beyond_the_cap_are_closed() {
    let server = Server::start(Then::Answer).await;
    let pool = server.pool(2);
    // Four answers held at once: four connections; when read, only two stay idle.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(pool.send(post(&server)).await.unwrap());
    }
    for response in held {
        read_all(response).await;
    }
    assert_eq!(server.accepts.load(Ordering::SeqCst), 4);
    assert_eq!(pool.store.counts(), (2, 0));
}
