//! A raw HTTP/2 client for the abuse tests and benchmark (`h2_abuse`): frames written by
//! hand over TLS (ALPN `h2`), so a test can send what no well-behaved client library would
//! (a reset after every request, endless CONTINUATION frames, SETTINGS and PING floods, a
//! window that never opens).
//!
//! - Frame writers (`frame`, `settings`, `ping`, ...) append one frame to a buffer.
//! - `Hpack`: header blocks in HPACK literal encoding (no Huffman, no dynamic table unless
//!   asked for), enough to write requests and header bombs.
//! - `Attacker`: one connection; writes batches of frames with a stall limit, while a reader
//!   task (unless switched off, to play a peer that never reads) counts the server's frames
//!   and notices GOAWAY and end of stream.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;

use super::load::{ALPN_H2, tls_connect};

/// The client connection preface (RFC 9113, section 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types.
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

/// Flags.
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// SETTINGS parameters.
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

/// Error codes.
pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Appends one frame: 9-byte header (length, type, flags, stream id) and `payload`.
pub fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("frame payload fits 24 bits");
    assert!(len < 1 << 24, "frame payload fits 24 bits");
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

/// A SETTINGS frame with `params`.
pub fn settings(out: &mut Vec<u8>, params: &[(u16, u32)]) {
    let mut payload = Vec::with_capacity(params.len() * 6);
    for (id, value) in params {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    frame(out, SETTINGS, 0, 0, &payload);
}

/// A SETTINGS acknowledgement.
pub fn settings_ack(out: &mut Vec<u8>) {
    frame(out, SETTINGS, ACK, 0, &[]);
}

/// A PING (not an acknowledgement) carrying `data`.
pub fn ping(out: &mut Vec<u8>, data: u64) {
    frame(out, PING, 0, 0, &data.to_be_bytes());
}

/// RST_STREAM of `stream` with error `code`.
pub fn rst_stream(out: &mut Vec<u8>, stream: u32, code: u32) {
    frame(out, RST_STREAM, 0, stream, &code.to_be_bytes());
}

/// WINDOW_UPDATE of `stream` (0: the connection) by `increment`.
pub fn window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    frame(out, WINDOW_UPDATE, 0, stream, &increment.to_be_bytes());
}

/// A HEADERS frame carrying `block` (a whole or first part of a header block).
pub fn headers(out: &mut Vec<u8>, stream: u32, block: &[u8], end_stream: bool, end_headers: bool) {
    let flags = flag(end_stream, END_STREAM) | flag(end_headers, END_HEADERS);
    frame(out, HEADERS, flags, stream, block);
}

/// A CONTINUATION frame carrying the next part of a header block.
pub fn continuation(out: &mut Vec<u8>, stream: u32, block: &[u8], end_headers: bool) {
    frame(
        out,
        CONTINUATION,
        flag(end_headers, END_HEADERS),
        stream,
        block,
    );
}

/// A DATA frame.
pub fn data(out: &mut Vec<u8>, stream: u32, bytes: &[u8], end_stream: bool) {
    frame(out, DATA, flag(end_stream, END_STREAM), stream, bytes);
}

fn flag(on: bool, bit: u8) -> u8 {
    if on { bit } else { 0 }
}

/// An HPACK header block being written (RFC 7541): literal fields and indexed references,
/// no Huffman coding.
#[derive(Default)]
pub struct Hpack(pub Vec<u8>);

impl Hpack {
    /// The pseudo-headers of a request to `https://localhost{path}`.
    pub fn request(method: &str, path: &str) -> Hpack {
        let mut block = Hpack::default();
        block
            .literal(":method", method)
            .literal(":scheme", "https")
            .literal(":authority", "localhost")
            .literal(":path", path);
        block
    }

    /// A literal field without indexing, new name.
    pub fn literal(&mut self, name: &str, value: &str) -> &mut Hpack {
        self.0.push(0x00);
        self.string(name).string(value)
    }

    /// A literal field with incremental indexing, new name: it enters the dynamic table
    /// (index 62 once added, the newest entry).
    pub fn literal_indexed(&mut self, name: &str, value: &str) -> &mut Hpack {
        self.0.push(0x40);
        self.string(name).string(value)
    }

    /// A reference to entry `index` of the static or dynamic table.
    pub fn indexed(&mut self, index: usize) -> &mut Hpack {
        self.int(0x80, 7, index);
        self
    }

    /// A string literal header: only its length, claiming `len` bytes still to come.
    pub fn string_header(&mut self, len: usize) -> &mut Hpack {
        self.int(0x00, 7, len);
        self
    }

    fn string(&mut self, s: &str) -> &mut Hpack {
        self.int(0x00, 7, s.len());
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    /// An integer with an N-bit prefix; `high` holds the bits above the prefix.
    fn int(&mut self, high: u8, prefix: u8, mut value: usize) {
        let max = (1usize << prefix) - 1;
        if value < max {
            self.0.push(high | value as u8);
            return;
        }
        self.0.push(high | max as u8);
        value -= max;
        while value >= 128 {
            self.0.push((value % 128) as u8 | 0x80);
            value /= 128;
        }
        self.0.push(value as u8);
    }
}

/// What the server has sent on an attacker's connection so far.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Frames received, by type (0..=9; unknown types are not counted).
    pub frames: [u64; 10],
    /// The first GOAWAY: (last stream id, error code).
    pub goaway: Option<(u32, u32)>,
    /// The server closed the connection (end of stream or a read error).
    pub closed: bool,
    pub bytes: u64,
}

impl Seen {
    /// GOAWAY received or the connection closed.
    pub fn ended(&self) -> bool {
        self.goaway.is_some() || self.closed
    }
}

/// How a flood of frames ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodEnd {
    /// The server sent GOAWAY or closed the connection after `frames` were written.
    Ended { frames: u64 },
    /// A write did not complete within the stall limit: the server stopped reading.
    Stalled { frames: u64 },
    /// Every frame was written and the connection is still open.
    Exhausted { frames: u64 },
    /// The time guard ran out first.
    TimedOut { frames: u64 },
}

/// One HTTP/2 connection written frame by frame.
pub struct Attacker {
    writer: WriteHalf<TlsStream<TcpStream>>,
    seen: Arc<Mutex<Seen>>,
    reader: Option<JoinHandle<()>>,
    /// Kept so a peer that does not read still holds its connection open.
    unread: Option<ReadHalf<TlsStream<TcpStream>>>,
    pub frames_written: u64,
}

impl Drop for Attacker {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
    }
}

impl Attacker {
    /// Connects (TLS, ALPN h2, from `local` when given), writes the preface, an empty
    /// SETTINGS and the acknowledgement of the server's SETTINGS. With `read`, a task reads
    /// and counts everything the server sends; without, nothing is ever read.
    pub async fn connect(
        addr: SocketAddr,
        ca_pem: &str,
        local: Option<IpAddr>,
        read: bool,
        first: &[(u16, u32)],
    ) -> io::Result<Attacker> {
        let tls = tls_connect(addr, ca_pem, ALPN_H2, local, Duration::from_secs(10)).await?;
        let (reader, writer) = tokio::io::split(tls);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (task, unread) = if read {
            (Some(tokio::spawn(read_frames(reader, seen.clone()))), None)
        } else {
            (None, Some(reader))
        };
        let mut attacker = Attacker {
            writer,
            seen,
            reader: task,
            unread,
            frames_written: 0,
        };
        let mut hello = PREFACE.to_vec();
        settings(&mut hello, first);
        settings_ack(&mut hello);
        attacker.writer.write_all(&hello).await?;
        attacker.writer.flush().await?;
        Ok(attacker)
    }

    /// What the server has sent so far.
    pub fn seen(&self) -> Seen {
        self.seen.lock().expect("seen lock").clone()
    }

    /// Writes `bytes` holding `frames` frames; `Err` if the write fails (the connection is
    /// gone) or takes longer than `stall` (the server does not read).
    pub async fn send(&mut self, bytes: &[u8], frames: u64, stall: Duration) -> Result<(), Stop> {
        let write = async {
            self.writer.write_all(bytes).await?;
            self.writer.flush().await
        };
        match tokio::time::timeout(stall, write).await {
            Ok(Ok(())) => {
                self.frames_written += frames;
                Ok(())
            }
            Ok(Err(_)) => Err(Stop::Closed),
            Err(_) => Err(Stop::Stalled),
        }
    }

    /// Writes batches from `batch` (which appends frames to the buffer and returns how many)
    /// until the server ends the connection, a write stalls for `stall`, `max_frames` are
    /// written, or `guard` passes.
    pub async fn flood(
        &mut self,
        mut batch: impl FnMut(&mut Vec<u8>) -> u64,
        max_frames: u64,
        stall: Duration,
        guard: Duration,
    ) -> FloodEnd {
        let deadline = tokio::time::Instant::now() + guard;
        let mut buf = Vec::with_capacity(64 * 1024);
        loop {
            let frames = self.frames_written;
            if self.seen().ended() {
                return FloodEnd::Ended { frames };
            }
            if frames >= max_frames {
                return FloodEnd::Exhausted { frames };
            }
            if tokio::time::Instant::now() >= deadline {
                return FloodEnd::TimedOut { frames };
            }
            buf.clear();
            let n = batch(&mut buf);
            match self.send(&buf, n, stall).await {
                Ok(()) => {}
                Err(Stop::Closed) => return FloodEnd::Ended { frames },
                Err(Stop::Stalled) => return FloodEnd::Stalled { frames },
            }
            // Lets the reader task see what the server answered so far.
            tokio::task::yield_now().await;
        }
    }

    /// Starts reading what the server sent (a peer that did not read so far).
    pub fn start_reading(&mut self) {
        if let Some(reader) = self.unread.take() {
            self.reader = Some(tokio::spawn(read_frames(reader, self.seen.clone())));
        }
    }

    /// Waits until the server ends the connection (GOAWAY or close) or `limit` passes;
    /// true if it ended. A peer that did not read starts reading now.
    pub async fn wait_ended(&mut self, limit: Duration) -> bool {
        self.start_reading();
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if self.seen().ended() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.seen().ended()
    }
}

/// Why a write stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Closed,
    Stalled,
}

/// Reads frames until end of stream or an error, counting them into `seen`.
async fn read_frames(mut reader: ReadHalf<TlsStream<TcpStream>>, seen: Arc<Mutex<Seen>>) {
    let mut head = [0u8; 9];
    let mut payload = Vec::new();
    loop {
        if reader.read_exact(&mut head).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        payload.resize(len, 0);
        if reader.read_exact(&mut payload).await.is_err() {
            break;
        }
        let mut seen = seen.lock().expect("seen lock");
        seen.bytes += 9 + len as u64;
        if let Some(count) = seen.frames.get_mut(usize::from(head[3])) {
            *count += 1;
        }
        if head[3] == GOAWAY && seen.goaway.is_none() && payload.len() >= 8 {
            let last = u32::from_be_bytes(payload[0..4].try_into().expect("4 bytes"));
            let code = u32::from_be_bytes(payload[4..8].try_into().expect("4 bytes"));
            seen.goaway = Some((last & 0x7fff_ffff, code));
        }
    }
    seen.lock().expect("seen lock").closed = true;
}
