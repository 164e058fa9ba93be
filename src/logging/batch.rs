//! Log lines gathered in memory and written out in batches, as nginx's
//! `access_log ... buffer= flush=` does.
//!
//! One `write(2)` per request line was a tenth of the passthrough route's CPU in bench/
//! (measured side by side with `log.flush_interval = "0s"`). Lines are handed over whole
//! (already scrubbed), so a batch never splits one; they reach stdout in the order they
//! were logged, at the latest `flush_interval` later, at once when [`BATCH_BYTES`] have
//! gathered, and when the [`FlushGuard`] drops at exit. A process killed with SIGKILL
//! loses at most that interval's lines; the audit log, not this one, is the durable record.
//!
//! Only the per-request lines (target [`REQUEST_LINE_TARGET`]) are batched: they are the
//! ones that come at request rates. Every other line (start-up with the bound addresses,
//! warnings, errors, shutdown) is written at once, with whatever was gathered before it,
//! so an operator or a supervisor sees it when it happens.

use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

use crate::redact;

/// Gathered bytes that trigger a write without waiting for the interval.
pub(super) const BATCH_BYTES: usize = 64 * 1024;

/// The target of the per-request log line, the only one batched.
pub(super) const REQUEST_LINE_TARGET: &str = "payshim::pipeline::observe";

/// A [`MakeWriter`] that batches whole lines in front of `W`.
pub(super) struct Batched<W> {
    shared: Arc<Shared<W>>,
}

struct Shared<W> {
    pending: Mutex<Vec<u8>>,
    /// Held while a batch is taken and written, so batches leave in the order they
    /// were gathered even when a request thread and the flush thread write at once.
    out: Mutex<W>,
    batch_bytes: usize,
}

/// Writes what is still gathered when dropped: hold it until the process ends.
#[must_use = "dropping the guard is what writes the last lines"]
pub struct FlushGuard {
    flush: Box<dyn Fn() + Send + Sync>,
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        (self.flush)();
    }
}

impl<W: Write + Send + 'static> Batched<W> {
    /// Batches in front of `out`; a background thread writes the batch every `interval`.
    pub(super) fn new(out: W, interval: Duration) -> (Batched<W>, FlushGuard) {
        Self::with_batch_bytes(out, interval, BATCH_BYTES)
    }

    fn with_batch_bytes(
        out: W,
        interval: Duration,
        batch_bytes: usize,
    ) -> (Batched<W>, FlushGuard) {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::with_capacity(batch_bytes)),
            out: Mutex::new(out),
            batch_bytes,
        });
        spawn_flusher(Arc::downgrade(&shared), interval);
        let for_guard = shared.clone();
        let guard = FlushGuard {
            flush: Box::new(move || for_guard.flush()),
        };
        (Batched { shared }, guard)
    }
}

/// The interval flush; ends once the writer is gone.
fn spawn_flusher<W: Write + Send + 'static>(shared: Weak<Shared<W>>, interval: Duration) {
    let spawned = std::thread::Builder::new()
        .name("payshim-log-flush".into())
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                shared.flush();
            }
        });
    if let Err(e) = spawned {
        // Lines are still written once a batch fills up, and at exit.
        let _ = warn_no_flusher(&mut io::stderr().lock(), &e);
    }
}

/// Tells stderr that the flush thread could not start (the logger itself cannot say it).
/// Through the scrubber, like everything else that leaves the process: never `eprintln!`.
fn warn_no_flusher(out: &mut impl Write, e: &io::Error) -> io::Result<()> {
    let text = format!("payshim: warning: no log flush thread ({e}); log lines may come late\n");
    redact::write_scrubbed(out, &text)
}

impl<W: Write> Shared<W> {
    fn append(&self, line: &[u8]) {
        let full = {
            let mut pending = lock(&self.pending);
            pending.extend_from_slice(line);
            pending.len() >= self.batch_bytes
        };
        if full {
            self.flush();
        }
    }

    fn flush(&self) {
        let mut out = lock(&self.out);
        let batch = {
            let mut pending = lock(&self.pending);
            if pending.is_empty() {
                return;
            }
            std::mem::replace(&mut *pending, Vec::with_capacity(self.batch_bytes))
        };
        // A logger has nowhere to report its own write errors.
        let _ = out.write_all(&batch);
        let _ = out.flush();
    }
}

/// A logger must keep logging after a panic elsewhere: a poisoned lock still holds
/// whole lines (each is appended in one call).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One event's writer. The scrubbing writer in front of it hands over each line in one
/// `write_all`, so a line is appended whole.
pub(super) struct BatchWriter<'a, W> {
    shared: &'a Shared<W>,
    /// Written out at once instead of waiting for the batch.
    immediate: bool,
}

impl<W: Write> Write for BatchWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared.append(buf);
        if self.immediate {
            self.shared.flush();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + 'a> MakeWriter<'a> for Batched<W> {
    type Writer = BatchWriter<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        BatchWriter {
            shared: &self.shared,
            immediate: false,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        BatchWriter {
            shared: &self.shared,
            immediate: meta.target() != REQUEST_LINE_TARGET,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A writer the test can read back: every `write` call as one chunk.
    #[derive(Clone, Default)]
    struct Chunks(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Chunks {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Chunks {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().concat()).unwrap()
        }
        fn writes(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    fn log(b: &Batched<Chunks>, line: &str) {
        b.make_writer().write_all(line.as_bytes()).unwrap();
    }

    #[test]
    fn flush_thread_warning_is_scrubbed() {
        let mut out = Vec::new();
        let e = io::Error::other("card 4111 1111 1111 1111 cvv=123");
        warn_no_flusher(&mut out, &e).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "payshim: warning: no log flush thread (card [PAN ****1111] cvv=[REDACTED]); \
             log lines may come late\n"
        );
    }

    #[test]
    fn lines_wait_for_the_interval_then_leave_in_one_write() {
        let out = Chunks::default();
        let (b, _guard) = Batched::new(out.clone(), Duration::from_millis(50));
        for i in 0..100 {
            log(&b, &format!("line {i}\n"));
        }
        assert_eq!(out.writes(), 0, "nothing written before the interval");
        let deadline = Instant::now() + Duration::from_secs(5);
        while out.writes() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(out.writes(), 1, "one write for the whole batch");
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(out.text(), expected);
    }

    #[test]
    fn a_full_batch_is_written_at_once() {
        let out = Chunks::default();
        let (b, _guard) = Batched::with_batch_bytes(out.clone(), Duration::from_secs(3600), 64);
        log(&b, &"a".repeat(40));
        assert_eq!(out.writes(), 0);
        log(&b, &"b".repeat(40));
        assert_eq!(
            out.writes(),
            1,
            "64 bytes gathered: written without waiting"
        );
        assert_eq!(out.text(), format!("{}{}", "a".repeat(40), "b".repeat(40)));
    }

    #[test]
    fn only_request_lines_wait_for_the_batch() {
        use tracing_subscriber::layer::SubscriberExt;
        let out = Chunks::default();
        let (b, _guard) = Batched::new(out.clone(), Duration::from_secs(3600));
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(b)
                .without_time()
                .with_ansi(false),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "payshim::pipeline::observe", "request one");
            assert_eq!(out.writes(), 0, "a request line waits for the interval");
            tracing::info!(target: "payshim", "payshim serving");
        });
        assert_eq!(out.writes(), 1, "a lifecycle line is written at once");
        let text = out.text();
        let (first, second) = text.split_once('\n').unwrap();
        assert!(first.contains("request one"), "{text}");
        assert!(second.contains("payshim serving"), "order kept: {text}");
    }

    #[test]
    fn dropping_the_guard_writes_what_is_left() {
        let out = Chunks::default();
        let (b, guard) = Batched::new(out.clone(), Duration::from_secs(3600));
        log(&b, "last words\n");
        assert_eq!(out.text(), "");
        drop(guard);
        assert_eq!(out.text(), "last words\n");
    }

    #[test]
    fn concurrent_lines_stay_whole_and_in_order_per_thread() {
        let out = Chunks::default();
        let (b, guard) = Batched::with_batch_bytes(out.clone(), Duration::from_millis(1), 256);
        let b = Arc::new(b);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        log(&b, &format!("t{t} {i:05} {}\n", "x".repeat(i % 50)));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = out.text();
        assert_eq!(text.lines().count(), 8000);
        for t in 0..4 {
            let seq: Vec<usize> = text
                .lines()
                .filter(|l| l.starts_with(&format!("t{t} ")))
                .map(|l| {
                    let (n, pad) = l[3..].split_once(' ').unwrap();
                    assert!(pad.bytes().all(|c| c == b'x'), "torn line: {l}");
                    n.parse().unwrap()
                })
                .collect();
            assert_eq!(
                seq,
                (0..2000).collect::<Vec<_>>(),
                "thread {t} out of order"
            );
        }
    }
}
