//! Ends an HTTP/2 connection that floods SETTINGS or PING frames.
//!
//! Each such frame obliges the server to answer (an acknowledgement), and h2 keeps
//! answering for as long as the peer keeps sending: one flooding connection raised a
//! normal client's p99 about 2.5-3x (bench/h2-abuse.sh) without any limit being hit. As
//! Go's and nginx's servers do, a peer that sends more than [`MAX_PER_SECOND`] of them
//! (acknowledgements not counted) within a second is cut off. A browser or SDK sends one
//! SETTINGS at the start and a PING now and then.
//!
//! [`FrameCounter`] reads the frame headers of the decrypted byte stream as it passes
//! (`fair.rs` feeds it), skipping the client preface and every payload; it never buffers
//! more than one 9-byte header.

use std::time::{Duration, Instant};

/// SETTINGS and PING frames (not acknowledgements) a peer may send per second.
pub(super) const MAX_PER_SECOND: u32 = 100;
/// `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`, which precedes the first frame.
const PREFACE_LEN: usize = 24;
const HEADER_LEN: usize = 9;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;

pub(super) struct FrameCounter {
    preface_left: usize,
    header: [u8; HEADER_LEN],
    header_len: usize,
    payload_left: usize,
    window_start: Instant,
    in_window: u32,
    limit: u32,
}

impl FrameCounter {
    pub(super) fn new(limit: u32) -> FrameCounter {
        FrameCounter {
            preface_left: PREFACE_LEN,
            header: [0; HEADER_LEN],
            header_len: 0,
            payload_left: 0,
            window_start: Instant::now(),
            in_window: 0,
            limit,
        }
    }

    /// Reads `bytes` (the next bytes of the stream); `false` once the peer went over the
    /// limit.
    pub(super) fn feed(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            let skip = if self.preface_left > 0 {
                &mut self.preface_left
            } else if self.payload_left > 0 {
                &mut self.payload_left
            } else {
                let n = (HEADER_LEN - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
                self.header_len += n;
                bytes = &bytes[n..];
                if self.header_len == HEADER_LEN && !self.frame_header() {
                    return false;
                }
                continue;
            };
            let n = (*skip).min(bytes.len());
            *skip -= n;
            bytes = &bytes[n..];
        }
        true
    }

    /// A whole frame header was read: counts it, and skips its payload next.
    fn frame_header(&mut self) -> bool {
        let h = self.header;
        self.header_len = 0;
        self.payload_left = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let (kind, flags) = (h[3], h[4]);
        if (kind == SETTINGS || kind == PING) && flags & ACK == 0 {
            let now = Instant::now();
            if now.duration_since(self.window_start) >= Duration::from_secs(1) {
                self.window_start = now;
                self.in_window = 0;
            }
            self.in_window += 1;
            return self.in_window <= self.limit;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            0,
        ];
        f.extend_from_slice(payload);
        f
    }

    fn stream(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut s = PREFACE.to_vec();
        for f in frames {
            s.extend_from_slice(f);
        }
        s
    }

    /// Feeds `bytes` in pieces of `chunk` bytes; whether the counter let it all through.
    fn feed_in(counter: &mut FrameCounter, bytes: &[u8], chunk: usize) -> bool {
        bytes.chunks(chunk).all(|c| counter.feed(c))
    }

    #[test]
    fn counts_settings_and_pings_but_not_acks_or_payload_bytes() {
        let ping = frame(PING, 0, &[0; 8]);
        let ping_ack = frame(PING, ACK, &[0; 8]);
        let settings = frame(SETTINGS, 0, &[0, 3, 0, 0, 0, 100]);
        // A DATA frame whose payload is full of bytes that look like PING headers.
        let data = frame(0x0, 0, &[0, 0, 8, PING, 0, 0, 0, 0, 0].repeat(50));
        let cases: [(&str, Vec<Vec<u8>>, bool); 6] = [
            ("3 pings", vec![ping.clone(); 3], true),
            ("limit pings", vec![ping.clone(); 3 + 1], false),
            ("acks only", vec![ping_ack.clone(); 50], true),
            ("settings count too", vec![settings.clone(); 4], false),
            (
                "mixed at the limit",
                vec![settings.clone(), ping.clone(), ping_ack.clone()],
                true,
            ),
            (
                "data payload is skipped",
                vec![data.clone(), data, ping],
                true,
            ),
        ];
        for (name, frames, ok) in cases {
            for chunk in [1, 7, 4096] {
                let mut counter = FrameCounter::new(3);
                assert_eq!(
                    feed_in(&mut counter, &stream(&frames), chunk),
                    ok,
                    "{name}, chunk {chunk}"
                );
            }
        }
    }

    #[test]
    fn the_limit_is_per_second() {
        let mut counter = FrameCounter::new(2);
        assert!(counter.feed(&stream(&[frame(PING, 0, &[0; 8]), frame(PING, 0, &[0; 8])])));
        counter.window_start -= Duration::from_secs(1);
        assert!(
            counter.feed(&frame(PING, 0, &[0; 8])),
            "a new second, a new count"
        );
        assert!(counter.feed(&frame(PING, 0, &[0; 8])));
        assert!(!counter.feed(&frame(PING, 0, &[0; 8])));
    }
}
