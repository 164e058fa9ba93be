//! What passes between the [`AuditLog`](super::AuditLog) handles and the writer thread: the
//! queued messages, where each record's outcome goes, and the state both sides read.

use std::sync::atomic::{AtomicBool, AtomicU64};

use tokio::sync::{mpsc, oneshot};
use tracing::error;

use super::error::AuditError;
use super::key_id::Signer;
use super::record::AuditRecord;
use super::system::SystemRecord;

/// Capacity of the queue in front of the writer; also the largest group.
pub(super) const CHANNEL_CAPACITY: usize = 16_384;

/// Where a record's outcome goes: the caller waiting for it to be durable, or nobody for
/// records submitted without waiting (a lost one is then logged here, and the log being
/// unhealthy already stops further payments).
pub(super) struct Reply(pub Option<oneshot::Sender<Result<u64, AuditError>>>);

impl Reply {
    pub(super) fn send(self, outcome: Result<u64, AuditError>) {
        match (self.0, outcome) {
            (Some(waiting), outcome) => {
                // The caller may have gone away; the record's fate no longer matters to it.
                let _ = waiting.send(outcome);
            }
            (None, Err(e)) => error!(error = %e, "audit record lost"),
            (None, Ok(_)) => {}
        }
    }
}

/// Answers the waiters of a durable group from a task on the async runtime, all at once.
///
/// Completing a waiter's oneshot from the writer thread wakes its task across threads, and
/// every such wake-up writes the runtime's eventfd and, on a core shared with the runtime,
/// switches to it and back: 0.6 `write`s per record under the payments benchmark. Handed
/// over as one message, a group costs one such wake-up; the task then wakes the waiters
/// from inside the runtime. Without a runtime at start, or once that runtime is gone, the
/// writer answers them itself.
pub(super) struct Answers {
    to_runtime: Option<mpsc::UnboundedSender<Vec<(Reply, u64)>>>,
}

impl Answers {
    /// Starts the answering task on the current runtime, if there is one.
    pub(super) fn start() -> Answers {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Answers { to_runtime: None };
        };
        let (to_runtime, mut groups) = mpsc::unbounded_channel::<Vec<(Reply, u64)>>();
        runtime.spawn(async move {
            while let Some(group) = groups.recv().await {
                answer(group);
            }
        });
        Answers {
            to_runtime: Some(to_runtime),
        }
    }

    /// Tells each waiter in `waiting` that its record is durable as `seq`.
    pub(super) fn durable(&self, waiting: impl Iterator<Item = (Reply, u64)>) {
        // Records nobody waits for need no answer, and a group of those no hand-over.
        let group: Vec<(Reply, u64)> = waiting.filter(|(reply, _)| reply.0.is_some()).collect();
        if group.is_empty() {
            return;
        }
        let group = match &self.to_runtime {
            Some(to_runtime) => match to_runtime.send(group) {
                Ok(()) => return,
                // The task is gone with its runtime: answer from here.
                Err(mpsc::error::SendError(group)) => group,
            },
            None => group,
        };
        answer(group);
    }
}

fn answer(group: Vec<(Reply, u64)>) {
    for (reply, seq) in group {
        reply.send(Ok(seq));
    }
}

pub(super) enum Msg {
    /// Boxed: a record is large next to the other variant.
    Append {
        record: Box<AuditRecord>,
        reply: Reply,
    },
    /// A system event (start, stop, reload): see [`SystemEvent`](super::SystemEvent).
    System {
        record: Box<SystemRecord>,
        reply: Reply,
    },
    /// Switch the chain to a new key: `audit.key_rotated`, signed with the old key and
    /// naming the new one, then every later record signed with the new key.
    RotateKey { signer: Box<Signer>, reply: Reply },
    /// Write what is queued, then stop.
    Shutdown,
}

/// State shared between the handles and the writer thread.
#[derive(Debug)]
pub(super) struct Shared {
    pub healthy: AtomicBool,
    /// Records made durable.
    pub records: AtomicU64,
    /// Successful `sync_data` calls on the log file.
    pub syncs: AtomicU64,
    /// Test hook: the next write stops half-way and fails.
    #[cfg(test)]
    pub fail_next_write: AtomicBool,
    /// Test hook: opening the file fails as if the disk were too full to preallocate it.
    #[cfg(test)]
    pub fail_prealloc: AtomicBool,
}

impl Shared {
    pub(super) fn new() -> Self {
        Self {
            healthy: AtomicBool::new(true),
            records: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            #[cfg(test)]
            fail_next_write: AtomicBool::new(false),
            #[cfg(test)]
            fail_prealloc: AtomicBool::new(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(seq: u64) -> ((Reply, u64), oneshot::Receiver<Result<u64, AuditError>>) {
        let (tx, rx) = oneshot::channel();
        ((Reply(Some(tx)), seq), rx)
    }

    /// A group handed over on the runtime reaches every waiter with its own `seq`; records
    /// nobody waits for are skipped.
    #[tokio::test]
    async fn a_group_is_answered_from_the_runtime() {
        let answers = Answers::start();
        assert!(
            answers.to_runtime.is_some(),
            "no answering task on the runtime"
        );
        let (a, a_rx) = waiter(7);
        let (b, b_rx) = waiter(8);
        answers.durable([a, (Reply(None), 9), b].into_iter());
        assert_eq!(a_rx.await.unwrap().unwrap(), 7);
        assert_eq!(b_rx.await.unwrap().unwrap(), 8);
    }

    /// Without a runtime, or once the runtime the task ran on is gone, the writer answers
    /// itself: no waiter is left without its answer.
    #[test]
    fn without_a_runtime_the_writer_answers_itself() {
        let (a, mut a_rx) = waiter(1);
        Answers::start().durable([a].into_iter());
        assert_eq!(a_rx.try_recv().unwrap().unwrap(), 1);

        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let answers = {
            let _inside = runtime.enter();
            Answers::start()
        };
        drop(runtime);
        let (b, mut b_rx) = waiter(2);
        answers.durable([b].into_iter());
        assert_eq!(b_rx.try_recv().unwrap().unwrap(), 2);
    }
}
