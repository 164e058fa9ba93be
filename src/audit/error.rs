//! The error every appender sees, in a file of their own so that the queue and the writer
//! can name it without importing the module root that drives them.

/// Why a record was not made durable.
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditError {
    /// The log could not be written or synced (the writer logged the cause).
    #[error("audit log unavailable: the record could not be written to disk")]
    Unavailable,
    /// The writer has stopped (after [`AuditLog::shutdown`](super::AuditLog::shutdown)).
    #[error("audit log closed")]
    Closed,
}
