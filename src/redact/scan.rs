//! The scanner: one forward pass over the bytes that skips to the next byte that can start a
//! card number or a CVV-like key, and copies the input only once something is masked.

use std::borrow::Cow;

use super::cvv::{REDACTED, cvv_value};
use super::pan::{digit_run, find_pan};

/// Masks card data in one piece of text.
///
/// Returns `Cow::Borrowed` when nothing was found: the common case does not allocate.
pub fn scrub(input: &str) -> Cow<'_, str> {
    match scrub_inner(input.as_bytes()) {
        None => Cow::Borrowed(input),
        // Every edit starts and ends at an ASCII byte, so the result is valid UTF-8; the lossy
        // fallback only exists so that the scrubber can never panic.
        Some(bytes) => Cow::Owned(
            String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        ),
    }
}

/// [`scrub`] for bytes that need not be UTF-8 (what a `tracing` writer receives).
pub fn scrub_bytes(input: &[u8]) -> Cow<'_, [u8]> {
    match scrub_inner(input) {
        None => Cow::Borrowed(input),
        Some(bytes) => Cow::Owned(bytes),
    }
}

fn scrub_inner(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Output {
        src: b,
        buf: None,
        copied: 0,
    };
    let n = b.len();
    let mut i = 0;
    while i < n {
        // Skip to the next byte that can start something: a digit, or the first letter of a
        // CVV-like key. This loop is where ordinary log lines spend their time.
        match b[i..].iter().position(|&c| INTERESTING[usize::from(c)]) {
            Some(k) => i += k,
            None => break,
        }
        if b[i].is_ascii_digit() {
            let (end, count) = digit_run(b, i);
            if let Some(last4) = find_pan(b, i, end, count) {
                out.replace(i, end, Mask::Pan(last4));
            }
            i = end;
        } else {
            match cvv_value(b, i) {
                Some((start, end)) => {
                    out.replace(start, end, Mask::Redacted);
                    i = end;
                }
                None => i += 1,
            }
        }
    }
    out.finish()
}

/// Bytes that can start a match: ASCII digits and the first letters of the CVV-like keys.
static INTERESTING: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = b'0';
    while c <= b'9' {
        t[c as usize] = true;
        c += 1;
    }
    let starts = b"cCsSvV";
    let mut k = 0;
    while k < starts.len() {
        t[starts[k] as usize] = true;
        k += 1;
    }
    t
};

/// The scrubbed copy, created on the first edit.
struct Output<'a> {
    src: &'a [u8],
    buf: Option<Vec<u8>>,
    /// `src[..copied]` has been dealt with (copied or replaced).
    copied: usize,
}

enum Mask {
    /// `[PAN ****dddd]` with these last four digits (ASCII).
    Pan([u8; 4]),
    /// `[REDACTED]`
    Redacted,
}

impl Output<'_> {
    fn replace(&mut self, start: usize, end: usize, mask: Mask) {
        let src = self.src;
        let buf = self
            .buf
            .get_or_insert_with(|| Vec::with_capacity(src.len() + 16));
        // Edits arrive in order and never overlap; the guards only keep this panic-free.
        if start > self.copied {
            buf.extend_from_slice(&src[self.copied..start]);
        }
        match mask {
            Mask::Pan(last4) => {
                buf.extend_from_slice(b"[PAN ****");
                buf.extend_from_slice(&last4);
                buf.push(b']');
            }
            Mask::Redacted => buf.extend_from_slice(REDACTED),
        }
        self.copied = self.copied.max(end);
    }

    fn finish(self) -> Option<Vec<u8>> {
        let mut buf = self.buf?;
        buf.extend_from_slice(&self.src[self.copied..]);
        Some(buf)
    }
}
