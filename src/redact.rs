//! Log scrubber: the backstop that keeps card data out of every log line (DESIGN.md §5.3).
//!
//! Card data should never reach a log in the first place (`CardNumber` and `Cvv` print masks,
//! bodies are never logged). This module is the second line of defence:
//!
//! * [`scrub`] masks Luhn-valid runs of 12-19 ASCII digits (also grouped with single spaces or
//!   dashes) as `[PAN ****dddd]`, and the values of CVV-like keys as `[REDACTED]`.
//! * [`ScrubbingMakeWriter`] wraps any `tracing_subscriber` writer so that every formatted event
//!   is scrubbed as a whole before it is written.
//! * [`install_panic_hook`] replaces the default panic hook (which prints the raw message) with
//!   one that scrubs.
//! * [`canary_check`] pushes a test card number through the real log pipeline at start-up;
//!   payshim refuses to start if it comes out unmasked.
//!
//! The scanner is hand-written (no regex): one forward pass over the bytes, no allocation unless
//! something is masked. It runs on every log line.
//!
//! # Rules
//!
//! A *digit run* is a maximal sequence of ASCII digits in which single spaces or single dashes
//! may stand between two digits (`4111 1111 1111 1111`, `3782-822463-10005`). A run is masked
//! when
//! * it holds 12-19 digits and passes Luhn, or one of its groups, or a sequence of consecutive
//!   groups, holds 12-19 digits and passes Luhn (`qty 2 4111111111111111` is one 17-digit run,
//!   but the card number in it is still found), or
//! * it holds more than 19 digits and any 12-19 digit window of it passes Luhn (a card number
//!   glued to other digits is still a card number).
//!
//! Inside a UUID standing alone only the first rule's whole-run check applies: its hex groups
//! join into digit runs by chance (`...-7123-8456-123456789012`), not because a card is there.
//!
//! The whole run is replaced; the mask shows the last four digits of the Luhn-valid part (PCI
//! DSS allows these), never digits around it (which could be a CVV). Runs that fail Luhn
//! (13-digit millisecond timestamps, order numbers) and shorter numbers (IP addresses, counts)
//! are left alone.
//!
//! The value of a CVV-like key (`verification_value`, `cvv`, `cvc`, `cvv2`, `cvc2`,
//! `security_code`, `card_code`; case-insensitive, `_` optional or `-`, also as the tail of a
//! longer key such as `card_cvv` or `card[cvc]`) is replaced by `[REDACTED]` when it follows
//! `:` or `=`: JSON strings (also escaped inside another JSON string, at any depth), JSON
//! numbers, `key=value`, `key="value"`, `key: value`, `key='value'`.

use std::borrow::Cow;
use std::io::{self, Write};
use std::panic::Location;
use std::sync::{Arc, Mutex, PoisonError};

use tracing_subscriber::fmt::MakeWriter;

/// Fewest digits of a card number (ISO/IEC 7812 allows 8, but card brands issue 12 and up).
const MIN_PAN: usize = 12;
/// Most digits of a card number.
const MAX_PAN: usize = 19;
/// Length of a textual UUID: 8-4-4-4-12 hex digits.
const UUID_LEN: usize = 36;

const REDACTED: &[u8] = b"[REDACTED]";

// ---------------------------------------------------------------------------------------------
// scrub
// ---------------------------------------------------------------------------------------------

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

// --- card numbers ----------------------------------------------------------------------------

fn is_sep(c: u8) -> bool {
    c == b' ' || c == b'-'
}

/// The digit run starting at `start` (a digit): its end and how many digits it holds.
fn digit_run(b: &[u8], start: usize) -> (usize, usize) {
    let n = b.len();
    let mut j = start;
    let mut count = 0;
    loop {
        while j < n && b[j].is_ascii_digit() {
            j += 1;
            count += 1;
        }
        if j + 1 < n && is_sep(b[j]) && b[j + 1].is_ascii_digit() {
            j += 1;
        } else {
            return (j, count);
        }
    }
}

/// Decides whether the digit run `b[start..end]` (digits and single separators, `count`
/// digits) must be masked; returns the last four digits (ASCII) of the Luhn-valid part. Inside
/// a UUID only the whole run counts: its groups join into runs by chance, not because a card
/// number is there.
fn find_pan(b: &[u8], start: usize, end: usize, count: usize) -> Option<[u8; 4]> {
    if count < MIN_PAN {
        return None;
    }
    let run = &b[start..end];
    if count <= MAX_PAN {
        // Whole run, then every sequence of consecutive groups of 12+ digits.
        let mut digits = [0u8; MAX_PAN];
        let mut group_start = [0usize; MAX_PAN + 1];
        let (mut nd, mut ng) = (0, 0);
        let mut prev_digit = false;
        for &c in run {
            if c.is_ascii_digit() {
                if !prev_digit {
                    group_start[ng] = nd;
                    ng += 1;
                }
                digits[nd] = c - b'0';
                nd += 1;
                prev_digit = true;
            } else {
                prev_digit = false;
            }
        }
        group_start[ng] = nd;
        let digits = &digits[..nd];
        if luhn_ok(digits) {
            return Some(last4(digits));
        }
        if ng == 1 || inside_uuid(b, start, end) {
            return None;
        }
        for first in 0..ng {
            for past in (first + 1..=ng).rev() {
                let (a, z) = (group_start[first], group_start[past]);
                if z - a < MIN_PAN {
                    break;
                }
                if (first, past) != (0, ng) && luhn_ok(&digits[a..z]) {
                    return Some(last4(&digits[a..z]));
                }
            }
        }
        return None;
    }
    if inside_uuid(b, start, end) {
        return None;
    }
    // More than 19 digits: any 12-19 digit window. `ring` holds the last 19 digits; for each
    // new digit, the Luhn sums of the windows ending there are built right to left.
    let mut ring = [0u8; MAX_PAN];
    let mut k = 0usize;
    for &c in run {
        if !c.is_ascii_digit() {
            continue;
        }
        ring[k % MAX_PAN] = c - b'0';
        k += 1;
        if k < MIN_PAN {
            continue;
        }
        let mut sum = 0u32;
        for back in 0..k.min(MAX_PAN) {
            sum += luhn_digit(ring[(k - 1 - back) % MAX_PAN], back);
            if back + 1 >= MIN_PAN && sum.is_multiple_of(10) {
                let mut l4 = [0u8; 4];
                for (j, d) in l4.iter_mut().enumerate() {
                    *d = b'0' + ring[(k - 4 + j) % MAX_PAN];
                }
                return Some(l4);
            }
        }
    }
    None
}

/// Luhn contribution of digit `d` at position `from_right` (0 = check digit).
fn luhn_digit(d: u8, from_right: usize) -> u32 {
    let v = u32::from(d);
    if from_right % 2 == 1 {
        let v = v * 2;
        if v > 9 { v - 9 } else { v }
    } else {
        v
    }
}

/// Luhn check over digit values (0-9), most significant first.
fn luhn_ok(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(k, &d)| luhn_digit(d, k))
        .sum();
    sum.is_multiple_of(10)
}

fn last4(digits: &[u8]) -> [u8; 4] {
    let mut l4 = [0u8; 4];
    let tail = &digits[digits.len() - 4..];
    for (d, &v) in l4.iter_mut().zip(tail) {
        *d = b'0' + v;
    }
    l4
}

/// Does the digit run `b[start..end]` lie inside a UUID standing alone? Only asked about the
/// rare runs of 12+ digits that fail the plain Luhn check.
fn inside_uuid(b: &[u8], start: usize, end: usize) -> bool {
    (start.saturating_sub(UUID_LEN - 1)..=start).any(|s| s + UUID_LEN >= end && uuid_at(b, s))
}

/// Is a whole UUID (8-4-4-4-12 hex digits) standing alone at `i`? "Alone" means that no digit
/// touches it and that no digit run reaches into it through a separator (otherwise the run
/// would be longer than the UUID's own groups). Letters may touch it (`id:u0190...`).
fn uuid_at(b: &[u8], i: usize) -> bool {
    let n = b.len();
    if i + UUID_LEN > n {
        return false;
    }
    if i > 0 {
        let p = b[i - 1];
        if p.is_ascii_digit() || (is_sep(p) && i >= 2 && b[i - 2].is_ascii_digit()) {
            return false;
        }
    }
    let shape_ok = b[i..i + UUID_LEN]
        .iter()
        .enumerate()
        .all(|(k, &c)| match k {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
    if !shape_ok {
        return false;
    }
    let e = i + UUID_LEN;
    e == n || !(b[e].is_ascii_digit() || (is_sep(b[e]) && e + 1 < n && b[e + 1].is_ascii_digit()))
}

// --- CVV-like keys ---------------------------------------------------------------------------

/// Key names, lower case; `_` matches `_`, `-` or nothing. `cvv` and `cvc` take an optional `2`.
const CVV_KEYS: [&[u8]; 5] = [
    b"verification_value",
    b"security_code",
    b"card_code",
    b"cvv",
    b"cvc",
];

/// If a CVV-like key starts at `i` and is followed by a value, the value's byte range.
fn cvv_value(b: &[u8], i: usize) -> Option<(usize, usize)> {
    let n = b.len();
    let mut j = match_key(b, i)?;
    // The key must end here: `cvv_length`, `cvvs` are other keys.
    if j >= n || b[j].is_ascii_alphanumeric() || b[j] == b'_' {
        return None;
    }
    // Closing quote or bracket of the key: `"`, `\"` (any escape depth), `'`, `]`, `%5D`.
    match b[j] {
        b'"' | b'\'' | b']' => j += 1,
        b'\\' => {
            let m = backslashes(b, j);
            if b.get(j + m) != Some(&b'"') {
                return None;
            }
            j += m + 1;
        }
        b'%' if b.len() >= j + 3 && b[j + 1..j + 3].eq_ignore_ascii_case(b"5d") => j += 3,
        _ => {}
    }
    j = skip_blanks(b, j);
    match b.get(j) {
        Some(b':') => j += 1,
        Some(b'=') => {
            j += 1;
            if b.get(j) == Some(&b'>') {
                j += 1; // `"cvv" => "123"`
            }
        }
        _ => return None,
    }
    j = skip_blanks(b, j);
    let (start, end) = match *b.get(j)? {
        b'"' => (j + 1, quoted_end(b, j + 1, 0)),
        b'\\' => {
            let m = backslashes(b, j);
            if b.get(j + m) != Some(&b'"') {
                return None;
            }
            (j + m + 1, quoted_end(b, j + m + 1, m))
        }
        b'\'' => {
            let end = b[j + 1..]
                .iter()
                .position(|&c| c == b'\'')
                .map_or(n, |p| j + 1 + p);
            (j + 1, end)
        }
        _ => (j, bare_end(b, j)),
    };
    (end > start).then_some((start, end))
}

fn match_key(b: &[u8], i: usize) -> Option<usize> {
    // Cheap first look at two letters; almost every `c`, `s` or `v` in a log line stops here.
    let pair = (b[i] | 0x20, *b.get(i + 1)? | 0x20);
    if !matches!(pair, (b'c', b'v' | b'a') | (b's' | b'v', b'e')) {
        return None;
    }
    CVV_KEYS.iter().find_map(|key| {
        let mut j = match_word(b, i, key)?;
        if key.len() == 3 && b.get(j) == Some(&b'2') {
            j += 1;
        }
        Some(j)
    })
}

fn match_word(b: &[u8], i: usize, pattern: &[u8]) -> Option<usize> {
    let mut j = i;
    for &p in pattern {
        if p == b'_' {
            if matches!(b.get(j), Some(b'_' | b'-')) {
                j += 1;
            }
        } else if b.get(j)?.to_ascii_lowercase() == p {
            j += 1;
        } else {
            return None;
        }
    }
    Some(j)
}

/// Skips spaces, tabs and ANSI colour sequences (`ESC [ 1;31 m`, as `tracing_subscriber::fmt`
/// writes around field names when colours are on). A colour sequence is at most eight numbers
/// of at most three digits: what is skipped here is not scanned for card numbers.
fn skip_blanks(b: &[u8], mut j: usize) -> usize {
    loop {
        match b.get(j) {
            Some(b' ' | b'\t') => j += 1,
            Some(0x1b) => match sgr_len(&b[j..]) {
                Some(len) => j += len,
                None => return j,
            },
            _ => return j,
        }
    }
}

/// Length of the SGR sequence (`ESC [ n;n;... m`) at the start of `b`, if one is there.
fn sgr_len(b: &[u8]) -> Option<usize> {
    if !b.starts_with(b"\x1b[") {
        return None;
    }
    let mut j = 2;
    for _ in 0..8 {
        let digits = b[j..]
            .iter()
            .take(4)
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits > 3 {
            return None;
        }
        j += digits;
        match b.get(j)? {
            b'm' => return Some(j + 1),
            b';' => j += 1,
            _ => return None,
        }
    }
    None
}

fn backslashes(b: &[u8], j: usize) -> usize {
    b[j..].iter().take_while(|&&c| c == b'\\').count()
}

/// End of a string value that starts at `start`, opened by a quote preceded by `open`
/// backslashes: 0 for a plain JSON string, 1 for a JSON string inside a JSON string (`\"`),
/// 3 one level deeper (`\\\"`), and so on. Unterminated strings run to the end of the input.
fn quoted_end(b: &[u8], start: usize, open: usize) -> usize {
    // Escape depth: 2^depth - 1 backslashes open the string.
    let mut depth = 0u32;
    let mut m = open;
    while m % 2 == 1 {
        depth += 1;
        m /= 2;
    }
    let mut run = 0usize;
    for (j, &c) in b.iter().enumerate().skip(start) {
        match c {
            b'\\' => run += 1,
            b'"' => {
                if closes(run, depth) {
                    // The closing quote's own backslashes are not part of the value.
                    return j - run.min(open);
                }
                run = 0;
            }
            _ => run = 0,
        }
    }
    b.len()
}

/// Does a quote preceded by `run` backslashes close a string of escape depth `depth`? Each
/// level of unescaping turns `2r+1` backslashes + quote into `r` backslashes + quote; a quote
/// that is unescaped before `depth` levels are peeled ends an enclosing string, hence ours too.
fn closes(run: usize, depth: u32) -> bool {
    let mut m = run;
    for _ in 0..depth {
        if m.is_multiple_of(2) {
            return true;
        }
        m /= 2;
    }
    m.is_multiple_of(2)
}

/// End of an unquoted value (`cvv=123`, `"cvv": 123`, `cvv: Some(123)`).
fn bare_end(b: &[u8], start: usize) -> usize {
    let n = b.len();
    let mut depth = 0usize;
    let mut j = start;
    while j < n {
        let c = b[j];
        if depth > 0 {
            // Inside `Some(...)`: everything up to the matching parenthesis or the line's end.
            match c {
                b'(' => depth += 1,
                b')' => depth -= 1,
                b'\n' | b'\r' => break,
                _ => {}
            }
        } else {
            match c {
                b'(' => depth += 1,
                // A digit group separated by one space still belongs to the value
                // (`cvv: 12 34`), so no digit of it is left behind.
                b' ' if j > start
                    && b[j - 1].is_ascii_digit()
                    && b.get(j + 1).is_some_and(u8::is_ascii_digit) => {}
                b',' | b';' | b'&' | b'"' | b'\'' | b'\\' | b'<' | b'>' | b'{' | b'}' | b'['
                | b']' | b')' | 0x1b => break,
                _ if c.is_ascii_whitespace() => break,
                _ => {}
            }
        }
        j += 1;
    }
    j
}

// ---------------------------------------------------------------------------------------------
// tracing writer
// ---------------------------------------------------------------------------------------------

/// `tracing_subscriber` [`MakeWriter`] wrapper: every writer it makes buffers what it is
/// given, and on `Drop` scrubs the buffer and writes it to the inner writer in one
/// `write_all`. `tracing_subscriber::fmt` makes one writer per event and writes the whole
/// formatted event to it, so each event is scrubbed as a whole.
#[derive(Debug, Clone, Default)]
pub struct ScrubbingMakeWriter<M> {
    inner: M,
}

impl<M> ScrubbingMakeWriter<M> {
    pub fn new(inner: M) -> Self {
        Self { inner }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for ScrubbingMakeWriter<M> {
    type Writer = ScrubbingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbingWriter::new(self.inner.make_writer())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        ScrubbingWriter::new(self.inner.make_writer_for(meta))
    }
}

/// The writer made by [`ScrubbingMakeWriter`]: buffers one event, scrubs it and writes it on
/// `Drop`. `flush` does not write the buffer out early (a card number split between two
/// writes would escape the scrubber); it only flushes the inner writer.
#[derive(Debug)]
pub struct ScrubbingWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

/// Largest event buffer kept for the thread's next event; a rare huge event's buffer is
/// freed instead of held for ever.
const KEEP_EVENT_BUF: usize = 16 * 1024;

thread_local! {
    /// The thread's event buffer, lent to one writer at a time: a log line per request
    /// costs no allocation. (A nested event meanwhile gets an empty one of its own.)
    static EVENT_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

impl<W: Write> ScrubbingWriter<W> {
    fn new(inner: W) -> Self {
        let buf = EVENT_BUF.try_with(|b| b.take()).unwrap_or_default();
        Self { inner, buf }
    }
}

impl<W: Write> Write for ScrubbingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Drop for ScrubbingWriter<W> {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let scrubbed = scrub_bytes(&self.buf);
            // A logger has nowhere to report its own write errors.
            let _ = self.inner.write_all(&scrubbed);
            let _ = self.inner.flush();
        }
        let mut buf = std::mem::take(&mut self.buf);
        if buf.capacity() <= KEEP_EVENT_BUF {
            buf.clear();
            let _ = EVENT_BUF.try_with(|b| b.set(buf));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// panic hook
// ---------------------------------------------------------------------------------------------

/// Installs a panic hook that formats the panic like the default hook (thread, location,
/// message, backtrace when enabled), scrubs it, and writes it to stderr. Replaces the default
/// hook, which would print the raw message.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let text = format_panic(info);
        let _ = io::stderr().lock().write_all(text.as_bytes());
    }));
}

/// The scrubbed text the panic hook writes for `info`.
fn format_panic(info: &std::panic::PanicHookInfo<'_>) -> String {
    let thread = std::thread::current();
    let message = panic_message(info.payload());
    let backtrace = std::backtrace::Backtrace::capture();
    let backtrace = match backtrace.status() {
        std::backtrace::BacktraceStatus::Captured => Some(backtrace.to_string()),
        _ => None,
    };
    render_panic(
        thread.name().unwrap_or("<unnamed>"),
        info.location(),
        message,
        backtrace.as_deref(),
    )
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "Box<dyn Any>"
    }
}

fn render_panic(
    thread: &str,
    location: Option<&Location<'_>>,
    message: &str,
    backtrace: Option<&str>,
) -> String {
    let mut text = match location {
        Some(loc) => format!("thread '{thread}' panicked at {loc}:\n{message}\n"),
        None => format!("thread '{thread}' panicked:\n{message}\n"),
    };
    match backtrace {
        Some(bt) => {
            text.push_str("stack backtrace:\n");
            text.push_str(bt);
            if !bt.ends_with('\n') {
                text.push('\n');
            }
        }
        None => text.push_str(
            "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n",
        ),
    }
    match scrub(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(scrubbed) => scrubbed,
    }
}

// ---------------------------------------------------------------------------------------------
// start-up canary
// ---------------------------------------------------------------------------------------------

/// The canary card number pushed through the log pipeline at start-up: a Luhn-valid Visa test
/// number that no real log holds.
pub const CANARY_PAN: &str = "4000001234567899";

/// The canary card verification value, logged next to `verification_value`.
pub const CANARY_CVV: &str = "937";

/// Target of the canary event; a log filter must let it through at `ERROR`.
pub const CANARY_TARGET: &str = "payshim::canary";

/// Why the start-up canary failed.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum CanaryError {
    #[error("log pipeline leaked the canary card number unmasked; refusing to start")]
    PanLeaked,
    #[error("log pipeline leaked the canary card verification value unmasked; refusing to start")]
    CvvLeaked,
    #[error(
        "the canary log event did not come out of the log pipeline (is target `payshim::canary` \
         filtered out at ERROR?), so card-data masking cannot be proven; refusing to start"
    )]
    NotEmitted,
}

/// An in-memory [`MakeWriter`] for the canary (and tests): every writer it makes appends to
/// one shared buffer.
#[derive(Debug, Clone, Default)]
pub struct CaptureWriter {
    buf: Arc<Mutex<Vec<u8>>>,
}

impl CaptureWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything written so far (lossily decoded).
    pub fn contents(&self) -> String {
        let buf = self.buf.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Write for CaptureWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CaptureWriter {
    type Writer = CaptureWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The start-up canary. `make_subscriber` builds the real subscriber stack (same formatter
/// configuration as production) on top of the given writer wrapped in [`ScrubbingMakeWriter`].
/// One `ERROR` event with target [`CANARY_TARGET`] carrying [`CANARY_PAN`] (as a field, plain,
/// spaced and dashed in the message) and [`CANARY_CVV`] (as a `verification_value` field and in
/// a JSON snippet in the message) is sent through it, and what comes out is checked.
///
/// Errors: [`CanaryError::PanLeaked`] if the card number's digits come out in any form,
/// [`CanaryError::CvvLeaked`] if a `verification_value` is not followed by `[REDACTED]`,
/// [`CanaryError::NotEmitted`] if the event did not come out at all (filtered out), since
/// then nothing is proven.
pub fn canary_check<F, S>(make_subscriber: F) -> Result<(), CanaryError>
where
    F: FnOnce(CaptureWriter) -> S,
    S: tracing::Subscriber + Send + Sync + 'static,
{
    let capture = CaptureWriter::new();
    let subscriber = make_subscriber(capture.clone());
    let spaced = group(CANARY_PAN, ' ');
    let dashed = group(CANARY_PAN, '-');
    tracing::subscriber::with_default(subscriber, || {
        tracing::error!(
            target: "payshim::canary",
            card_number = CANARY_PAN,
            verification_value = CANARY_CVV,
            "log canary: card {spaced} / {dashed} {{\"number\":\"{CANARY_PAN}\",\"verification_value\":\"{CANARY_CVV}\"}}"
        );
    });
    check_canary_output(&capture.contents())
}

fn group(pan: &str, sep: char) -> String {
    let mut out = String::with_capacity(pan.len() + pan.len() / 4);
    for (k, c) in pan.chars().enumerate() {
        if k > 0 && k % 4 == 0 {
            out.push(sep);
        }
        out.push(c);
    }
    out
}

fn check_canary_output(out: &str) -> Result<(), CanaryError> {
    if !out.contains("log canary") {
        return Err(CanaryError::NotEmitted);
    }
    let joined: String = out.chars().filter(|&c| c != ' ' && c != '-').collect();
    if joined.contains(CANARY_PAN) {
        return Err(CanaryError::PanLeaked);
    }
    // Every `verification_value` must be followed by a value the scanner recognises, and that
    // value must be the mask: a form the scanner cannot parse counts as a leak.
    let lower = out.to_ascii_lowercase();
    let mut seen = 0;
    for (at, _) in lower.match_indices("verification_value") {
        match cvv_value(out.as_bytes(), at) {
            Some((start, end)) if out.as_bytes()[start..end] == *REDACTED => seen += 1,
            _ => return Err(CanaryError::CvvLeaked),
        }
    }
    if seen == 0 {
        return Err(CanaryError::NotEmitted);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // --- reference implementation of the invariant (kept deliberately naive) -----------------

    /// Maximal digit runs (single space/dash between digits joins), as digit strings.
    fn digit_runs(s: &str) -> Vec<String> {
        let b = s.as_bytes();
        let mut runs = Vec::new();
        let mut cur = String::new();
        for (i, &c) in b.iter().enumerate() {
            if c.is_ascii_digit() {
                cur.push(c as char);
            } else if (c == b' ' || c == b'-')
                && !cur.is_empty()
                && i > 0
                && b[i - 1].is_ascii_digit()
                && b.get(i + 1).is_some_and(u8::is_ascii_digit)
            {
            } else if !cur.is_empty() {
                runs.push(std::mem::take(&mut cur));
            }
        }
        if !cur.is_empty() {
            runs.push(cur);
        }
        runs
    }

    fn luhn_str(d: &str) -> bool {
        let v: Vec<u8> = d.bytes().map(|c| c - b'0').collect();
        luhn_ok(&v)
    }

    fn has_luhn_valid_run(s: &str) -> bool {
        digit_runs(s)
            .iter()
            .any(|r| (MIN_PAN..=MAX_PAN).contains(&r.len()) && luhn_str(r))
    }

    fn strip_seps(s: &str) -> String {
        s.chars().filter(|&c| c != ' ' && c != '-').collect()
    }

    // --- table -------------------------------------------------------------------------------

    #[test]
    fn table() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            // brands, plain
            ("visa_16", "card 4111111111111111 ok", "card [PAN ****1111] ok"),
            ("visa_13", "card 4222222222222 ok", "card [PAN ****2222] ok"),
            ("visa_12", "n=400000000002.", "n=[PAN ****0002]."),
            ("mastercard_5", "5555555555554444", "[PAN ****4444]"),
            ("mastercard_2_series", "pan 2223003122003222", "pan [PAN ****3222]"),
            ("mastercard_2221", "pan 2221000000000009", "pan [PAN ****0009]"),
            ("amex_15", "amex 378282246310005", "amex [PAN ****0005]"),
            ("discover", "6011111111111117", "[PAN ****1117]"),
            ("jcb", "jcb 3530111333300000", "jcb [PAN ****0000]"),
            ("diners_14", "diners 30569309025904 x", "diners [PAN ****5904] x"),
            ("diners_36", "36227206271667", "[PAN ****1667]"),
            ("unionpay_16", "6200000000000005", "[PAN ****0005]"),
            ("unionpay_19", "cup 6212345678901234569 end", "cup [PAN ****4569] end"),
            // spaced and dashed
            ("visa_spaced", "card 4111 1111 1111 1111 ok", "card [PAN ****1111] ok"),
            ("visa_dashed", "card 4111-1111-1111-1111 ok", "card [PAN ****1111] ok"),
            ("amex_spaced", "3782 822463 10005", "[PAN ****0005]"),
            ("amex_dashed", "3782-822463-10005", "[PAN ****0005]"),
            ("diners_spaced", "3056 930902 5904", "[PAN ****5904]"),
            ("unionpay_19_spaced", "6212 3456 7890 1234 569", "[PAN ****4569]"),
            ("mixed_separators", "4111 1111-1111 1111", "[PAN ****1111]"),
            // position
            ("start", "4111111111111111 first", "[PAN ****1111] first"),
            ("end", "last 5555555555554444", "last [PAN ****4444]"),
            ("alone", "378282246310005", "[PAN ****0005]"),
            ("next_to_letters", "abc4111111111111111xyz", "abc[PAN ****1111]xyz"),
            ("next_to_punct", "(4111111111111111)", "([PAN ****1111])"),
            ("two_pans", "a 4111111111111111 b 5555555555554444", "a [PAN ****1111] b [PAN ****4444]"),
            // JSON
            ("json_string", r#"{"number":"4111111111111111","x":1}"#, r#"{"number":"[PAN ****1111]","x":1}"#),
            ("json_number", r#"{"number": 4111111111111111}"#, r#"{"number": [PAN ****1111]}"#),
            ("escaped_json", r#"{"message":"body {\"number\":\"4111111111111111\"}"}"#,
                r#"{"message":"body {\"number\":\"[PAN ****1111]\"}"}"#),
            ("json_spaced", r#"{"number":"4111 1111 1111 1111"}"#, r#"{"number":"[PAN ****1111]"}"#),
            // runs touching other digits
            ("glued_by_space", "qty 2 4111111111111111", "qty [PAN ****1111]"),
            ("glued_long_run", "4111111111111111 2024 12", "[PAN ****1111]"),
            // (long runs show the last four of the first Luhn-valid window found)
            ("inside_25_digits", "id 1234567894111111111111111", "id [PAN ****9411]"),
            ("pan_then_cvv", "4111 1111 1111 1111 123", "[PAN ****1111]"),
            // non-PANs left alone
            ("timestamp_ms", "ts=1700000000000 done", "ts=1700000000000 done"),
            ("uuid", "order 0190a3b2-7c4d-7123-8456-123456789012 ok", "order 0190a3b2-7c4d-7123-8456-123456789012 ok"),
            ("uuid_upper", "0190A3B2-7C4D-7123-8456-123456789012", "0190A3B2-7C4D-7123-8456-123456789012"),
            ("ipv4", "peer 192.168.100.200:8443", "peer 192.168.100.200:8443"),
            ("eleven_digits", "n 41111111111 x", "n 41111111111 x"),
            ("order", "order 12345 paid", "order 12345 paid"),
            ("luhn_fail_16", "4111111111111112", "4111111111111112"),
            ("luhn_fail_spaced", "4111 1111 1111 1112", "4111 1111 1111 1112"),
            ("double_space_splits", "400000  000002", "400000  000002"),
            ("date", "2025-01-15T10:00:00.123456Z", "2025-01-15T10:00:00.123456Z"),
            ("phone", "+1 415 555 0100", "+1 415 555 0100"),
            ("empty", "", ""),
            ("unicode", "ünïcödé 🦀 text", "ünïcödé 🦀 text"),
            ("unicode_pan", "ü4111111111111111🦀", "ü[PAN ****1111]🦀"),
            // CVV keys, every form
            ("json_cvv", r#"{"cvv":"123"}"#, r#"{"cvv":"[REDACTED]"}"#),
            ("json_cvv_number", r#"{"cvv": 123}"#, r#"{"cvv": [REDACTED]}"#),
            ("json_cvv_spaces", r#"{"cvv" : "1234" }"#, r#"{"cvv" : "[REDACTED]" }"#),
            ("json_verification_value", r#"{"verification_value":"123","month":"01"}"#,
                r#"{"verification_value":"[REDACTED]","month":"01"}"#),
            ("escaped_json_cvv", r#"{"message":"{\"verification_value\":\"123\"}"}"#,
                r#"{"message":"{\"verification_value\":\"[REDACTED]\"}"}"#),
            ("escaped_json_cvv_number", r#"{"m":"{\"cvc\":123}"}"#, r#"{"m":"{\"cvc\":[REDACTED]}"}"#),
            ("double_escaped", r#"{"m":"{\"n\":\"{\\\"cvv\\\":\\\"123\\\"}\"}"}"#,
                r#"{"m":"{\"n\":\"{\\\"cvv\\\":\\\"[REDACTED]\\\"}\"}"}"#),
            ("kv", "cvv=123 next=1", "cvv=[REDACTED] next=1"),
            ("kv_quoted", r#"cvv="123" next=1"#, r#"cvv="[REDACTED]" next=1"#),
            ("kv_single_quoted", "cvv='123'", "cvv='[REDACTED]'"),
            ("colon", "cvv: 123", "cvv: [REDACTED]"),
            ("colon_comma", "cvv: 123, month: 1", "cvv: [REDACTED], month: 1"),
            ("upper", "CVV=123", "CVV=[REDACTED]"),
            ("mixed_case", r#"{"Security_Code":"1234"}"#, r#"{"Security_Code":"[REDACTED]"}"#),
            ("cvc", "cvc=123", "cvc=[REDACTED]"),
            ("cvv2", "cvv2=123", "cvv2=[REDACTED]"),
            ("cvc2", r#""cvc2":"123""#, r#""cvc2":"[REDACTED]""#),
            ("security_code", "security_code: 1234", "security_code: [REDACTED]"),
            ("card_code", "card_code=123", "card_code=[REDACTED]"),
            ("camel_case", r#"{"securityCode":"123","verificationValue":"456"}"#,
                r#"{"securityCode":"[REDACTED]","verificationValue":"[REDACTED]"}"#),
            ("suffix_key", r#"{"card_cvv":"123"}"#, r#"{"card_cvv":"[REDACTED]"}"#),
            ("form_bracket", "card[cvc]=123&x=1", "card[cvc]=[REDACTED]&x=1"),
            ("form_encoded_bracket", "card%5Bcvc%5D=123&x=1", "card%5Bcvc%5D=[REDACTED]&x=1"),
            ("debug_some", "Card { cvv: Some(123) }", "Card { cvv: [REDACTED] }"),
            ("debug_some_str", r#"Card { cvv: Some("123") }"#, "Card { cvv: [REDACTED] }"),
            ("string_with_escaped_quote", r#"{"cvv":"1\"23","x":1}"#, r#"{"cvv":"[REDACTED]","x":1}"#),
            ("unterminated", r#"{"cvv":"123"#, r#"{"cvv":"[REDACTED]"#),
            ("empty_value", r#"{"cvv":""}"#, r#"{"cvv":""}"#),
            // CVV-like words that are not keys with values
            ("cvv_prose", "invalid cvv length", "invalid cvv length"),
            ("cvv_other_key", "cvv_length=3", "cvv_length=3"),
            ("cvv_as_value", r#"{"field":"cvv","n":3}"#, r#"{"field":"cvv","n":3}"#),
            ("cvvs", "cvvs=3", "cvvs=3"),
            ("ansi_colours", "\x1b[3mcvv\x1b[0m\x1b[2m=\x1b[0m\"123\" \x1b[3mcvc\x1b[0m\x1b[2m=\x1b[0m123\x1b[0m",
                "\x1b[3mcvv\x1b[0m\x1b[2m=\x1b[0m\"[REDACTED]\" \x1b[3mcvc\x1b[0m\x1b[2m=\x1b[0m[REDACTED]\x1b[0m"),
            // found by the fuzzer: digits inside what looked like a colour sequence
            ("not_a_colour_sequence", "card_code\x1b[26\"1234567890123456 9m=456",
                "card_code\x1b[26\"[PAN ****4569]m=456"),
            ("nested_object", r#"{"cvv":{"v":1}}"#, r#"{"cvv":{"v":1}}"#),
        ];
        let mut failures = Vec::new();
        for (name, input, expected) in cases {
            let got = scrub(input);
            if got != *expected {
                failures.push(format!(
                    "{name}:\n  input:    {input}\n  expected: {expected}\n  got:      {got}"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn test_numbers_are_what_the_table_says() {
        assert!(
            !luhn_str("1700000000000"),
            "the timestamp case must fail Luhn"
        );
        assert!(!luhn_str("4111111111111112"));
        assert!(luhn_str(CANARY_PAN));
        for pan in [
            "4111111111111111",
            "378282246310005",
            "6212345678901234569",
            "30569309025904",
        ] {
            assert!(luhn_str(pan), "{pan}");
        }
    }

    #[test]
    fn nothing_found_borrows() {
        for s in [
            "plain log line",
            "ts=1700000000000",
            r#"{"level":"INFO","n":12}"#,
            "",
        ] {
            assert!(matches!(scrub(s), Cow::Borrowed(_)), "{s}");
            assert!(matches!(scrub_bytes(s.as_bytes()), Cow::Borrowed(_)), "{s}");
        }
    }

    #[test]
    fn scrub_bytes_handles_invalid_utf8() {
        let mut input = b"\xff\xfe card 4111111111111111 \xc3".to_vec();
        input.extend_from_slice(b" cvv=123");
        let out = scrub_bytes(&input);
        assert_eq!(&*out, b"\xff\xfe card [PAN ****1111] \xc3 cvv=[REDACTED]");
    }

    #[test]
    fn long_digit_runs() {
        // Windows of 12-19 ones sum to 18, 19, 21, 22, 24, 25, 27, 28: none is Luhn-valid.
        let ones = "1".repeat(30);
        assert!(matches!(scrub(&ones), Cow::Borrowed(_)));
        assert_eq!(scrub(&"0".repeat(25)), "[PAN ****0000]");
    }

    #[test]
    fn uuid_exemption_does_not_hide_luhn_valid_groups() {
        // The last group is 12 digits and Luhn-valid: the rule still applies inside a UUID.
        let s = "0190a3b2-7c4d-7abc-8def-400000000002";
        assert_eq!(scrub(s), "0190a3b2-7c4d-7abc-8def-[PAN ****0002]");
        // Touching digits: not a standalone UUID, so the long-run rule applies.
        let glued = "1 01900000-0000-7000-8000-000000000000";
        assert!(!has_luhn_valid_run(&scrub(glued)));
    }

    // --- tracing writer ----------------------------------------------------------------------

    #[test]
    fn json_subscriber_masks_fields_and_message() {
        let capture = CaptureWriter::new();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(ScrubbingMakeWriter::new(capture.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                card = "4111111111111111",
                cvv = 123u16,
                verification_value = "456",
                "paying with 5555 5555 5555 4444 body={{\"security_code\":\"789\"}}"
            );
            tracing::info!(
                order = "0190a3b2-7c4d-7123-8456-123456789012",
                ts = 1700000000000u64,
                "clean"
            );
        });
        let out = capture.contents();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        let joined = strip_seps(&out);
        for digits in ["4111111111111111", "5555555555554444"] {
            assert!(!joined.contains(digits), "{out}");
        }
        assert!(out.contains("[PAN ****1111]"), "{out}");
        assert!(out.contains("[PAN ****4444]"), "{out}");
        assert!(out.contains(r#""cvv":[REDACTED]"#), "{out}");
        assert!(
            out.contains(r#""verification_value":"[REDACTED]""#),
            "{out}"
        );
        assert!(out.contains(r#"\"security_code\":\"[REDACTED]\""#), "{out}");
        let first = &lines[0][lines[0].find("\"level\"").unwrap()..];
        assert!(!first.contains("456") && !first.contains("789"), "{out}");
        assert!(
            lines[1].contains("0190a3b2-7c4d-7123-8456-123456789012"),
            "{out}"
        );
        assert!(lines[1].contains("1700000000000"), "{out}");
    }

    #[test]
    fn text_subscriber_masks_fields() {
        let capture = CaptureWriter::new();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(ScrubbingMakeWriter::new(capture.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(card = "4111-1111-1111-1111", cvv = "123", "x");
        });
        let out = capture.contents();
        assert!(out.contains("card=\"[PAN ****1111]\""), "{out}");
        assert!(out.contains("cvv=\"[REDACTED]\""), "{out}");
    }

    #[test]
    fn writer_buffers_until_drop_and_writes_once() {
        struct CountingWriter(Arc<Mutex<Vec<Vec<u8>>>>);
        impl Write for CountingWriter {
            fn write(&mut self, data: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().push(data.to_vec());
                Ok(data.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let writes = Arc::new(Mutex::new(Vec::new()));
        let make = ScrubbingMakeWriter::new({
            let writes = writes.clone();
            move || CountingWriter(writes.clone())
        });
        {
            let mut w = make.make_writer();
            // A card number split between writes is still found.
            w.write_all(b"card 4111 1111 ").unwrap();
            w.flush().unwrap();
            w.write_all(b"1111 1111 end\n").unwrap();
            assert!(writes.lock().unwrap().is_empty());
        }
        let writes = writes.lock().unwrap();
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0], b"card [PAN ****1111] end\n");
    }

    // --- canary ------------------------------------------------------------------------------

    #[test]
    fn canary_passes_with_scrubbing_pipeline() {
        let json = canary_check(|w| {
            tracing_subscriber::fmt()
                .json()
                .with_writer(ScrubbingMakeWriter::new(w))
                .finish()
        });
        assert_eq!(json, Ok(()));
        let pretty = canary_check(|w| {
            tracing_subscriber::fmt()
                .pretty()
                .with_ansi(false)
                .with_writer(ScrubbingMakeWriter::new(w))
                .finish()
        });
        assert_eq!(pretty, Ok(()));
        let text = canary_check(|w| {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
                .with_writer(ScrubbingMakeWriter::new(w))
                .finish()
        });
        assert_eq!(text, Ok(()));
    }

    #[test]
    fn canary_fails_without_scrubbing_wrapper() {
        let err = canary_check(|w| tracing_subscriber::fmt().json().with_writer(w).finish());
        assert_eq!(err, Err(CanaryError::PanLeaked));
        assert_eq!(
            err.unwrap_err().to_string(),
            "log pipeline leaked the canary card number unmasked; refusing to start"
        );
    }

    #[test]
    fn canary_fails_when_filtered_out() {
        let err = canary_check(|w| {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("off"))
                .with_writer(ScrubbingMakeWriter::new(w))
                .finish()
        });
        assert_eq!(err, Err(CanaryError::NotEmitted));
    }

    #[test]
    fn canary_output_checks() {
        let masked = r#"log canary [PAN ****7899] {"verification_value":"[REDACTED]"}"#;
        assert_eq!(check_canary_output(masked), Ok(()));
        let cvv_leak = r#"log canary [PAN ****7899] {"verification_value":"937"}"#;
        assert_eq!(check_canary_output(cvv_leak), Err(CanaryError::CvvLeaked));
        let escaped_leak = r#"log canary [PAN ****7899] {\"verification_value\":\"937\"}"#;
        assert_eq!(
            check_canary_output(escaped_leak),
            Err(CanaryError::CvvLeaked)
        );
        let unparsed = "log canary [PAN ****7899] verification_value -> 937";
        assert_eq!(check_canary_output(unparsed), Err(CanaryError::CvvLeaked));
        let spaced_leak = "log canary 4000 0012 3456 7899 verification_value=[REDACTED]";
        assert_eq!(
            check_canary_output(spaced_leak),
            Err(CanaryError::PanLeaked)
        );
        assert_eq!(check_canary_output(""), Err(CanaryError::NotEmitted));
    }

    // --- panic hook --------------------------------------------------------------------------

    #[test]
    fn panic_text_is_scrubbed() {
        let text = render_panic(
            "worker-1",
            Some(Location::caller()),
            r#"bad body {"number":"4111 1111 1111 1111","cvv":"123"}"#,
            None,
        );
        assert!(text.starts_with("thread 'worker-1' panicked at "), "{text}");
        assert!(text.contains(file!()), "{text}");
        assert!(
            text.contains(r#"bad body {"number":"[PAN ****1111]","cvv":"[REDACTED]"}"#),
            "{text}"
        );
        assert!(!text.contains("123\""), "{text}");
        let with_bt = render_panic("main", None, "card 5555555555554444", Some("0: frame"));
        assert_eq!(
            with_bt,
            "thread 'main' panicked:\ncard [PAN ****4444]\nstack backtrace:\n0: frame\n"
        );
    }

    #[test]
    fn panic_payloads() {
        let s: Box<dyn std::any::Any + Send> = Box::new("static");
        assert_eq!(panic_message(&*s), "static");
        let s: Box<dyn std::any::Any + Send> = Box::new(String::from("owned"));
        assert_eq!(panic_message(&*s), "owned");
        let s: Box<dyn std::any::Any + Send> = Box::new(42u8);
        assert_eq!(panic_message(&*s), "Box<dyn Any>");
    }

    #[test]
    fn format_panic_from_a_real_panic() {
        // The hook is process-wide: install a recording one briefly, then put the old one back.
        static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(|info| {
            SEEN.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(format_panic(info));
        }));
        let result = std::thread::Builder::new()
            .name("canary-panic".into())
            .spawn(|| panic!("charging card {} failed", "4111111111111111"))
            .unwrap()
            .join();
        std::panic::set_hook(previous);
        assert!(result.is_err());
        let seen = SEEN.lock().unwrap_or_else(PoisonError::into_inner);
        let text = seen
            .iter()
            .find(|t| t.contains("'canary-panic'"))
            .expect("hook saw the panic");
        assert!(
            text.contains("charging card [PAN ****1111] failed"),
            "{text}"
        );
        assert!(!text.contains("4111111111111111"), "{text}");
    }

    // --- properties --------------------------------------------------------------------------

    const BRAND_PREFIXES: &[&str] = &[
        "4", "51", "52", "53", "54", "55", "2221", "2500", "2720", "34", "37", "6011", "644", "65",
        "3528", "3589", "36", "300", "305", "38", "62", "81", "60", "9",
    ];

    /// A Luhn-valid number of 12-19 digits starting with one of the brand prefixes.
    fn pan() -> impl Strategy<Value = String> {
        (prop::sample::select(BRAND_PREFIXES), MIN_PAN..=MAX_PAN).prop_flat_map(|(prefix, len)| {
            prop::collection::vec(0u8..10, len - prefix.len() - 1).prop_map(move |body| {
                let mut digits: Vec<u8> = prefix.bytes().map(|c| c - b'0').collect();
                digits.extend(body);
                digits.push(0);
                let check = (0..10u8)
                    .find(|&d| {
                        *digits.last_mut().unwrap() = d;
                        luhn_ok(&digits)
                    })
                    .unwrap();
                *digits.last_mut().unwrap() = check;
                digits.iter().map(|d| char::from(b'0' + d)).collect()
            })
        })
    }

    /// Plain, spaced or dashed in groups of four, or Amex-style 4-6-rest.
    fn formatted_pan() -> impl Strategy<Value = (String, String)> {
        (pan(), 0..5u8).prop_map(|(pan, style)| {
            let text = match style {
                0 => pan.clone(),
                1 => group(&pan, ' '),
                2 => group(&pan, '-'),
                3 => format!("{} {} {}", &pan[..4], &pan[4..10], &pan[10..]),
                _ => format!("{}-{}-{}", &pan[..4], &pan[4..10], &pan[10..]),
            };
            (pan, text)
        })
    }

    fn fence(prefix: &str, suffix: &str, middle: &str) -> String {
        // Text touching the number with a digit would make it a different number.
        let mut s = prefix.to_string();
        if s.ends_with(|c: char| c.is_ascii_digit()) {
            s.push('x');
        }
        s.push_str(middle);
        if suffix.starts_with(|c: char| c.is_ascii_digit()) {
            s.push('x');
        }
        s.push_str(suffix);
        s
    }

    fn uuid() -> impl Strategy<Value = String> {
        (any::<[u8; 16]>(), any::<bool>()).prop_map(|(bytes, upper)| {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let s = format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            );
            if upper { s.to_ascii_uppercase() } else { s }
        })
    }

    /// Text without digits and without the first letters of the CVV keys.
    const QUIET_TEXT: &str = "[a-bd-ru-zA-BD-RU-Z .,:;{}\"=/_()ü🦀]{0,24}";

    proptest! {
        // No regression files: this module's tests must not write into the source tree.
        #![proptest_config(ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn pan_in_text_is_masked(
            (pan, text) in formatted_pan(),
            prefix in "\\PC{0,40}",
            suffix in "\\PC{0,40}",
        ) {
            let input = fence(&prefix, &suffix, &text);
            let out = scrub(&input);
            prop_assert!(!strip_seps(&out).contains(&pan), "{input:?} -> {out:?}");
            prop_assert!(!has_luhn_valid_run(&out), "{input:?} -> {out:?}");
        }

        #[test]
        fn pan_in_json_is_masked(
            (pan, text) in formatted_pan(),
            note in "\\PC{0,20}",
            form in 0..4u8,
        ) {
            let note = note.replace(['"', '\\'], "");
            let input = match form {
                0 => format!(r#"{{"data":{{"number":"{text}","note":"{note}"}}}}"#),
                1 => format!(r#"{{"data":{{"number":{pan},"note":"{note}"}}}}"#),
                2 => format!(r#"{{"message":"body {{\"number\":\"{text}\",\"n\":\"{note}\"}}"}}"#),
                _ => format!(r#"{{"message":"{note} card {text} declined","level":"WARN"}}"#),
            };
            let out = scrub(&input);
            prop_assert!(!strip_seps(&out).contains(&pan), "{input:?} -> {out:?}");
            prop_assert!(!has_luhn_valid_run(&out), "{input:?} -> {out:?}");
        }

        #[test]
        fn luhn_invalid_runs_pass_unchanged(
            mut digits in prop::collection::vec(0u8..10, MIN_PAN..=MAX_PAN),
            prefix in QUIET_TEXT,
            suffix in QUIET_TEXT,
        ) {
            if luhn_ok(&digits) {
                let last = digits.last_mut().unwrap();
                *last = (*last + 1) % 10;
            }
            let run: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
            let input = format!("{prefix}{run}{suffix}");
            let out = scrub(&input);
            prop_assert!(matches!(out, Cow::Borrowed(_)), "{input:?} -> {out:?}");
        }

        #[test]
        fn short_numbers_pass_unchanged(
            nums in prop::collection::vec(0u64..100_000_000_000, 1..6),
            sep in prop::sample::select(vec![", ", "; ", ".", ":", "/", " | "]),
        ) {
            let input = nums.iter().map(u64::to_string).collect::<Vec<_>>().join(sep);
            prop_assert!(matches!(scrub(&input), Cow::Borrowed(_)), "{input:?}");
        }

        #[test]
        fn uuids_pass_unchanged(
            ids in prop::collection::vec(uuid(), 1..4),
            prefix in QUIET_TEXT,
            sep in prop::sample::select(vec![", ", "\",\"", "  ", " / ", "\n"]),
        ) {
            // Not joined by a single space: digits on both sides of one would make one long
            // digit run of two UUIDs (only a UUID standing alone is exempt).
            let input = format!("{prefix}{}", ids.join(sep));
            prop_assume!(!has_luhn_valid_run(&input));
            let out = scrub(&input);
            prop_assert!(matches!(out, Cow::Borrowed(_)), "{input:?} -> {out:?}");
        }

        #[test]
        fn never_panics_and_is_idempotent(s in "\\PC*") {
            let once = scrub(&s).into_owned();
            let twice = scrub(&once).into_owned();
            prop_assert_eq!(&once, &twice);
        }

        #[test]
        fn invariant_on_digit_heavy_text(s in "[0-9 \\-a\"cv=:]{0,80}") {
            let out = scrub(&s);
            prop_assert!(!has_luhn_valid_run(&out), "{s:?} -> {out:?}");
            prop_assert_eq!(scrub(&out), out.clone());
        }

        #[test]
        fn long_runs_masked_iff_a_window_is_valid(
            digits in prop::collection::vec(0u8..10, MAX_PAN + 1..40),
            dashes in any::<bool>(),
        ) {
            let run: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
            let any_valid = (0..digits.len()).any(|a| {
                (MIN_PAN..=MAX_PAN).any(|len| a + len <= digits.len() && luhn_ok(&digits[a..a + len]))
            });
            let input = if dashes { group(&run, '-') } else { run };
            let out = scrub(&input);
            prop_assert_eq!(any_valid, out.starts_with("[PAN ****"), "{:?} -> {:?}", input, out);
            prop_assert!(any_valid || out == input.as_str());
        }

        #[test]
        fn never_panics_on_bytes(b in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = scrub_bytes(&b);
        }

        #[test]
        fn cvv_values_are_redacted(
            key in prop::sample::select(vec!["cvv", "CVC", "cvv2", "Cvc2", "verification_value", "security_code", "card_code"]),
            cvv in "[0-9]{3,4}",
            form in 0..6u8,
        ) {
            let input = match form {
                0 => format!(r#"{{"{key}":"{cvv}"}}"#),
                1 => format!(r#"{{"{key}": {cvv}}}"#),
                2 => format!(r#"{{"m":"{{\"{key}\":\"{cvv}\"}}"}}"#),
                3 => format!("{key}={cvv} x=1"),
                4 => format!(r#"{key}="{cvv}" x=1"#),
                _ => format!("{key}: {cvv}, x: 1"),
            };
            let out = scrub(&input);
            prop_assert!(out.contains("[REDACTED]"), "{input:?} -> {out:?}");
            prop_assert!(!out.contains(&cvv), "{input:?} -> {out:?}");
        }
    }
}
