//! The `tracing` writer: scrubs each formatted event as a whole before it is written.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

use super::scan::scrub_bytes;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::CaptureWriter;
    use std::sync::{Arc, Mutex};

    fn strip_seps(s: &str) -> String {
        s.chars().filter(|&c| c != ' ' && c != '-').collect()
    }

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
}
