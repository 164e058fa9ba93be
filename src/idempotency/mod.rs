//! No double charge: `Idempotency-Key`, one payment per order in flight, and the duplicate
//! window for payments sent without a key (see README.md, "Idempotency and retries").
//!
//! The pipeline asks [`Idempotency::check`] between the pre-forward checks and the
//! `forwarded` audit record. The answer is either a stored answer to replay, a refusal
//! (409 in flight, 422 key reused for another request) or a [`Ticket`] that travels with
//! the detached forward and records its outcome, so a storefront that disconnects cannot
//! leave a key claimed or a charge unrecorded.
//!
//! One concept per file: `key.rs` validates the header and scopes the key to its client,
//! `fingerprint.rs` hashes the canonical request (the card only as its keyed fingerprint),
//! `answer.rs` is the stored answer and its replay, `store.rs` the bounded local store,
//! `orders.rs` the orders in flight, `redis.rs` the shared store (with `limits.redis_url`)
//! and `codec.rs` its entries, `claim.rs` the check, `ticket.rs` the claims a request
//! holds until its outcome is recorded and `resolve.rs` the rule for unknown outcomes.
//! Nothing stored holds a client's key, a PAN or a CVV: keys and requests are keyed
//! hashes, answers are kept as the log scrubber would write them.

mod answer;
mod claim;
mod codec;
mod fingerprint;
mod key;
mod orders;
mod redis;
mod resolve;
mod store;
mod ticket;

pub(crate) use answer::StoredAnswer;
pub(crate) use claim::{Decision, Idempotency, Resolution, TicketRequest};
pub(crate) use fingerprint::{payment_fingerprint, transaction_fingerprint};
pub(crate) use key::scoped_key;
pub(crate) use resolve::{NotAList, Probe, Unresolved, matching_transaction, now_ms};
pub(crate) use ticket::{Settled, Ticket};

/// A keyed hash: a scoped key, a request's fingerprint.
pub(crate) type Digest = [u8; 32];
