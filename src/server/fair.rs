//! A fair share of a worker for each HTTP/2 connection.
//!
//! An HTTP/2 connection task reads and handles frames until its socket runs dry or tokio's
//! cooperative budget runs out (128 socket reads of 4 KiB or more each in rustls: half a MiB
//! of frames or more). A peer flooding cheap frames that each need an answer (SETTINGS, PING) keeps the
//! socket full, so its task held a worker for up to that much per turn while every other
//! connection's requests waited: the normal client's p99 went up 2.3-4x from one such
//! connection (bench/h2-abuse.sh, bench/README.md), with payshim's CPU far from busy. [`Fair`] makes
//! the task give way after every `quantum` bytes read, so a turn costs at most a quantum's
//! worth of frames, and a normal request (a few hundred bytes) never gives way.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::flood::FrameCounter;

/// An I/O stream whose reader gives way after every `quantum` bytes.
pub(super) struct Fair<T> {
    inner: T,
    /// Bytes read between two turns; `None`: never give way (HTTP/1.1, which handles one
    /// request at a time anyway).
    quantum: Option<usize>,
    /// Bytes read since the task last gave way.
    since_yield: usize,
    /// HTTP/2: the frames read, to end a SETTINGS or PING flood (`flood.rs`).
    frames: Option<FrameCounter>,
}

impl<T> Fair<T> {
    pub(super) fn new(inner: T, quantum: Option<usize>) -> Fair<T> {
        Fair {
            inner,
            quantum,
            since_yield: 0,
            frames: None,
        }
    }

    /// The stream read from.
    pub(super) fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Also ends the connection when the peer floods SETTINGS or PING frames.
    pub(super) fn with_flood_limit(mut self, per_second: u32) -> Fair<T> {
        self.frames = Some(FrameCounter::new(per_second));
        self
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Fair<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.quantum.is_some_and(|q| this.since_yield >= q) {
            this.since_yield = 0;
            // Woken by itself while running, a tokio task goes to the back of the run
            // queue: the other tasks get their turn first.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if polled.is_ready() {
            this.since_yield += buf.filled().len() - before;
            if let Some(frames) = &mut this.frames
                && !frames.feed(&buf.filled()[before..])
            {
                tracing::debug!("HTTP/2 peer flooded SETTINGS or PING frames: connection ended");
                return Poll::Ready(Err(io::Error::other("HTTP/2 control frame flood")));
            }
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Fair<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    /// Counts its wake-ups.
    struct Counting(AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Polls one read of up to `len` bytes: Some(bytes read) or None if it gave way.
    fn read_once<T: AsyncRead + Unpin>(
        fair: &mut Fair<T>,
        cx: &mut Context<'_>,
        len: usize,
    ) -> Option<usize> {
        let mut storage = vec![0u8; len];
        let mut buf = ReadBuf::new(&mut storage);
        match Pin::new(fair).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => Some(buf.filled().len()),
            Poll::Ready(Err(e)) => panic!("read failed: {e}"),
            Poll::Pending => None,
        }
    }

    #[test]
    fn gives_way_once_after_each_quantum_and_wakes_itself() {
        let wakes = Arc::new(Counting(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut fair = Fair::new(tokio::io::repeat(b'x'), Some(10));
        assert_eq!(read_once(&mut fair, &mut cx, 4), Some(4));
        assert_eq!(read_once(&mut fair, &mut cx, 4), Some(4));
        assert_eq!(read_once(&mut fair, &mut cx, 4), Some(4));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        // 12 bytes >= 10: this turn is over, and the task is woken for the next one.
        assert_eq!(read_once(&mut fair, &mut cx, 4), None);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(read_once(&mut fair, &mut cx, 4), Some(4));
    }

    #[test]
    fn without_a_quantum_never_gives_way() {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut fair = Fair::new(tokio::io::repeat(b'x'), None);
        for _ in 0..1_000 {
            assert_eq!(read_once(&mut fair, &mut cx, 4096), Some(4096));
        }
    }
}
