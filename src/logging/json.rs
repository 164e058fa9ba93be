//! The JSON log line, written by hand.
//!
//! tracing-subscriber's own JSON formatter serialises through serde_json and an `io::Write`
//! adaptor that re-validates every small piece as UTF-8; on the per-request log line that was a
//! measurable share of the proxy's CPU. [`JsonLine`] writes the same object straight into the
//! formatter's `Writer` instead:
//!
//! `{"timestamp":"…Z","level":"INFO","message":"…",<fields in record order>,"target":"…"}`
//!
//! In sandbox mode every line also carries `"sandbox":true`, right after the level.
//!
//! Spans are not printed (the pipeline never enabled them). The line still reaches the
//! scrubbing writer as a whole, so card-number masking is unaffected.

use std::fmt::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;

/// The field that holds an event's formatted message; printed before the other fields.
const MESSAGE: &str = "message";

/// Formats one event as one JSON object on one line (see the module docs for the layout).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct JsonLine {
    /// Marks every line `"sandbox":true` (payshim answers as a test store).
    pub sandbox: bool,
}

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        writer.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut writer, SystemTime::now())?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(meta.level().as_str())?;
        writer.write_str("\"")?;
        if self.sandbox {
            writer.write_str(",\"sandbox\":true")?;
        }
        write_fields(&mut writer, event)?;
        writer.write_str(",\"target\":")?;
        write_string(&mut writer, meta.target())?;
        writer.write_str("}\n")
    }
}

/// UTC, RFC 3339, microseconds, like tracing-subscriber's default timer. A clock set before
/// 1970 is printed as the epoch: humantime panics on such times, and a logger must not.
///
/// The calendar part is formatted once per second and thread (the request lines of one
/// second share it); only the microseconds are written for every line.
fn write_timestamp(out: &mut impl Write, now: SystemTime) -> fmt::Result {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        let (at, text) = &mut *cached;
        if *at != Some(secs) {
            text.clear();
            let second = UNIX_EPOCH + std::time::Duration::from_secs(secs);
            write!(text, "{}", humantime::format_rfc3339_seconds(second))?;
            // "…T12:34:56Z": the fraction goes where the `Z` is.
            text.pop();
            *at = Some(secs);
        }
        out.write_str(text)
    })?;
    out.write_char('.')?;
    write_padded(out, u64::from(since.subsec_micros()), 6)?;
    out.write_char('Z')
}

thread_local! {
    /// The second last formatted by this thread, and its text up to the fraction.
    static SECOND: std::cell::RefCell<(Option<u64>, String)> =
        const { std::cell::RefCell::new((None, String::new())) };
}

/// `value` in decimal, left-padded with zeros to `width` digits, without `fmt` machinery
/// (three numbers and a timestamp on every request line).
fn write_padded(out: &mut (impl Write + ?Sized), mut value: u64, width: usize) -> fmt::Result {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    while value > 0 || start == digits.len() {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    start = start.min(digits.len() - width.min(digits.len()));
    // Only ASCII digits were written.
    out.write_str(std::str::from_utf8(&digits[start..]).map_err(|_| fmt::Error)?)
}

/// Writes the event's fields as `,"name":value` entries, the message first.
///
/// The `tracing` macros record the message first anyway, so one pass is the common case; an
/// event that records it later gets a second pass rather than a buffer.
fn write_fields(out: &mut impl Write, event: &Event<'_>) -> fmt::Result {
    if message_is_first(event) {
        return record(out, event, Pass::All);
    }
    record(out, event, Pass::MessageOnly)?;
    record(out, event, Pass::AllButMessage)
}

/// Whether recording the event in order already puts the message first (or there is none).
fn message_is_first(event: &Event<'_>) -> bool {
    let mut names = event.fields().map(|f| f.name());
    match names.next() {
        None | Some(MESSAGE) => true,
        Some(_) => !names.any(|name| name == MESSAGE),
    }
}

fn record(out: &mut impl Write, event: &Event<'_>, pass: Pass) -> fmt::Result {
    let mut visitor = FieldWriter {
        out,
        pass,
        result: Ok(()),
    };
    event.record(&mut visitor);
    visitor.result
}

/// Which fields one recording pass over an event writes.
#[derive(Debug, Clone, Copy)]
enum Pass {
    All,
    MessageOnly,
    AllButMessage,
}

impl Pass {
    fn wants(self, field: &Field) -> bool {
        match self {
            Pass::All => true,
            Pass::MessageOnly => field.name() == MESSAGE,
            Pass::AllButMessage => field.name() != MESSAGE,
        }
    }
}

/// A [`Visit`] that writes each field it is given as a JSON entry. `Visit` cannot return
/// errors, so the first one is kept and later fields are skipped.
struct FieldWriter<'a, W> {
    out: &'a mut W,
    pass: Pass,
    result: fmt::Result,
}

impl<W: Write> FieldWriter<'_, W> {
    /// Writes `,"name":` and then the value, if this pass wants the field.
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_err() || !self.pass.wants(field) {
            return;
        }
        self.result = write_key(self.out, field.name()).and_then(|()| value(self.out));
    }
}

impl<W: Write> Visit for FieldWriter<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |out| write_string(out, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |out| write_padded(out, value, 1));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.entry(field, |out| write_f64(out, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |out| {
            out.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.entry(field, |out| write_quoted(out, format_args!("{value}")));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |out| write_quoted(out, format_args!("{value:?}")));
    }
}

/// `,"name":`. A raw identifier's `r#` is not part of the name a reader expects (the
/// `tracing` macros already drop it; field sets built by hand may not).
fn write_key(out: &mut impl Write, name: &str) -> fmt::Result {
    let name = name.strip_prefix("r#").unwrap_or(name);
    out.write_str(",\"")?;
    write_escaped(out, name)?;
    out.write_str("\":")
}

/// A finite float as a JSON number; JSON has no NaN or infinity, so those become strings.
/// `{:?}` always keeps a `.0` or exponent, so a float never reads back as an integer.
fn write_f64(out: &mut impl Write, value: f64) -> fmt::Result {
    if value.is_finite() {
        write!(out, "{value:?}")
    } else {
        write!(out, "\"{value:?}\"")
    }
}

/// `value` formatted as a JSON string, escaped as it is formatted (no intermediate `String`).
fn write_quoted(out: &mut impl Write, value: fmt::Arguments<'_>) -> fmt::Result {
    out.write_str("\"")?;
    Escaped(&mut *out).write_fmt(value)?;
    out.write_str("\"")
}

/// `s` as a JSON string, with quotes.
fn write_string(out: &mut impl Write, s: &str) -> fmt::Result {
    out.write_str("\"")?;
    write_escaped(out, s)?;
    out.write_str("\"")
}

/// A [`Write`] that JSON-escapes everything written through it, so `Debug` and `Display`
/// output can go straight into a JSON string.
struct Escaped<'a, W: ?Sized>(&'a mut W);

impl<W: Write + ?Sized> Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_escaped(self.0, s)
    }
}

/// Writes `s` JSON-escaped, without quotes: each run that needs no escaping goes out in one
/// `write_str`. Escapes are what serde_json writes, so lines look as they always have.
fn write_escaped(out: &mut (impl Write + ?Sized), s: &str) -> fmt::Result {
    let mut start = 0;
    for (i, &byte) in s.as_bytes().iter().enumerate() {
        if !NEEDS_ESCAPE[usize::from(byte)] {
            continue;
        }
        // `byte` is ASCII, so `i` and `i + 1` are char boundaries.
        if start < i {
            out.write_str(&s[start..i])?;
        }
        write_escape(out, byte)?;
        start = i + 1;
    }
    if start < s.len() {
        out.write_str(&s[start..])?;
    }
    Ok(())
}

/// The escape sequence for one byte that [`NEEDS_ESCAPE`].
fn write_escape(out: &mut (impl Write + ?Sized), byte: u8) -> fmt::Result {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match byte {
        b'"' => out.write_str("\\\""),
        b'\\' => out.write_str("\\\\"),
        b'\n' => out.write_str("\\n"),
        b'\r' => out.write_str("\\r"),
        b'\t' => out.write_str("\\t"),
        0x08 => out.write_str("\\b"),
        0x0c => out.write_str("\\f"),
        _ => {
            out.write_str("\\u00")?;
            out.write_char(char::from(HEX[usize::from(byte >> 4)]))?;
            out.write_char(char::from(HEX[usize::from(byte & 0xf)]))
        }
    }
}

/// Bytes JSON does not allow raw inside a string: `"`, `\` and the control characters.
static NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_humantime_within_and_across_seconds() {
        let base = UNIX_EPOCH + std::time::Duration::from_secs(1_796_222_415);
        // Offsets in microseconds: within one second, the next second, back again (the
        // per-second cache must notice), a leap day, far future, the epoch.
        let cases: [(SystemTime, &str); 8] = [
            (base, "2026-12-02T14:40:15.000000Z"),
            (base + micros(584_447), "2026-12-02T14:40:15.584447Z"),
            (base + micros(999_999), "2026-12-02T14:40:15.999999Z"),
            (base + micros(1_000_001), "2026-12-02T14:40:16.000001Z"),
            (base + micros(7), "2026-12-02T14:40:15.000007Z"),
            (
                UNIX_EPOCH + std::time::Duration::from_secs(1_709_164_800) + micros(10),
                "2024-02-29T00:00:00.000010Z",
            ),
            (
                UNIX_EPOCH + std::time::Duration::from_secs(4_102_444_799) + micros(123_456),
                "2099-12-31T23:59:59.123456Z",
            ),
            (UNIX_EPOCH, "1970-01-01T00:00:00.000000Z"),
        ];
        for (at, expected) in cases {
            let mut out = String::new();
            write_timestamp(&mut out, at).unwrap();
            assert_eq!(out, expected);
            assert_eq!(out, humantime::format_rfc3339_micros(at).to_string());
        }
    }

    fn micros(n: u64) -> std::time::Duration {
        std::time::Duration::from_micros(n)
    }

    #[test]
    fn numbers_are_written_like_display() {
        for value in [
            0,
            1,
            9,
            10,
            201,
            2501,
            65_535,
            1_000_000,
            u64::MAX / 7,
            u64::MAX,
        ] {
            let mut out = String::new();
            write_padded(&mut out, value, 1).unwrap();
            assert_eq!(out, value.to_string());
        }
        let padded: [(u64, usize, &str); 4] = [
            (0, 6, "000000"),
            (7, 6, "000007"),
            (584_447, 6, "584447"),
            (42, 1, "42"),
        ];
        for (value, width, expected) in padded {
            let mut out = String::new();
            write_padded(&mut out, value, width).unwrap();
            assert_eq!(out, expected);
        }
    }

    #[test]
    fn timestamp_before_epoch_does_not_panic() {
        let mut out = String::new();
        let early = UNIX_EPOCH - std::time::Duration::from_secs(5);
        write_timestamp(&mut out, early).unwrap();
        assert_eq!(out, "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn escaping_matches_serde_json() {
        let mut all: String = (0u8..0x80).map(char::from).collect();
        all.push_str("é😀 \"quoted\" back\\slash");
        for s in [all.as_str(), "", "plain", "\"", "a\nb", "\u{1f}"] {
            let mut out = String::new();
            write_string(&mut out, s).unwrap();
            assert_eq!(out, serde_json::to_string(s).unwrap());
        }
    }
}
