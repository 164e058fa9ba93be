//! Addresses that never answer: a listener that accepts and stays silent, and a port that
//! refuses connections.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A TCP listener on 127.0.0.1 that accepts connections and never answers (nor closes them)
/// until the returned task is aborted.
pub async fn blackhole() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind blackhole");
    let addr = listener.local_addr().expect("blackhole addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        }
    });
    (addr, task)
}

/// A loopback port nothing listens on, held so that nothing can: a socket bound to it that
/// never listens, so a connection is refused, and no other socket gets the port (a port
/// merely released could be handed to a test running in parallel). Keep it alive while
/// the port is in use.
pub struct ClosedPort {
    _socket: tokio::net::TcpSocket,
    addr: SocketAddr,
}

impl ClosedPort {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// A loopback port that refuses connections for as long as the result is kept.
pub fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket for closed port");
    socket
        .bind(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)))
        .expect("bind for closed port");
    let addr = socket.local_addr().expect("closed port addr");
    ClosedPort {
        _socket: socket,
        addr,
    }
}
