//! What one audit record holds, and the signed line it becomes in the chain.
//!
//! A record never holds a card number or a CVV: the only card data is a
//! [`CardSummary`] (brand, first six, last four and a keyed fingerprint),
//! so no audit file ever falls in PCI scope for card data.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::key_id::{KeyId, Signer};
use crate::keyed::KeyedHash;
use crate::outcome::Outcome;

/// `prev` of the first record ever written.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const MAC_HEX_LEN: usize = 64;
const MAC_PREFIX: &[u8] = b",\"mac\":\"";
const MAC_SUFFIX: &[u8] = b"\"}";
/// `,"mac":"<64 hex>"}`: what the writer puts in place of the unsigned line's final `}`.
const SIGNED_TAIL_LEN: usize = MAC_PREFIX.len() + MAC_HEX_LEN + MAC_SUFFIX.len();

/// The kind of event a record reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum AuditEvent {
    /// A payment refused by payshim: nothing was sent upstream.
    #[serde(rename = "payment.rejected")]
    PaymentRejected,
    /// A payment about to be sent upstream (durable before the upstream call).
    #[serde(rename = "payment.forwarded")]
    PaymentForwarded,
    /// The upstream answer (or failure) for a forwarded payment.
    #[serde(rename = "payment.completed")]
    PaymentCompleted,
    /// A transaction action (capture, refund, cancel) refused by payshim.
    #[serde(rename = "transaction.rejected")]
    TransactionRejected,
    /// A transaction action about to be sent upstream.
    #[serde(rename = "transaction.forwarded")]
    TransactionForwarded,
    /// The upstream answer (or failure) for a forwarded transaction action.
    #[serde(rename = "transaction.completed")]
    TransactionCompleted,
    /// A payment answered with the stored answer of an earlier one (same
    /// `Idempotency-Key`, or a duplicate within the window): nothing was sent upstream.
    #[serde(rename = "payment.replayed")]
    PaymentReplayed,
    /// A payment whose earlier attempt was forwarded without an answer, answered with that
    /// attempt's transaction as found among the order's transactions: nothing was sent
    /// upstream again.
    #[serde(rename = "payment.resolved")]
    PaymentResolved,
    /// A transaction action answered with the stored answer of an earlier one.
    #[serde(rename = "transaction.replayed")]
    TransactionReplayed,
    /// A transaction action whose earlier attempt was forwarded without an answer,
    /// answered with what the order's transactions show of it: nothing was sent again.
    #[serde(rename = "transaction.resolved")]
    TransactionResolved,
    /// The proxy started (version, config hash): see [`SystemEvent`](super::SystemEvent).
    #[serde(rename = "system.started")]
    SystemStarted,
    /// The proxy stopped cleanly, after draining.
    #[serde(rename = "system.stopped")]
    SystemStopped,
    /// A new config took effect (hash, changed sections, trigger).
    #[serde(rename = "config.reloaded")]
    ConfigReloaded,
    /// A new config was refused (reason, trigger); the running one stays.
    #[serde(rename = "config.reload_refused")]
    ConfigReloadRefused,
    /// The chain's key switches: this record is signed with the old key and names the
    /// new key's id; every later record is signed with the new key.
    #[serde(rename = "audit.key_rotated")]
    AuditKeyRotated,
    /// Another key (e.g. `auth.session_key`) was replaced: old and new key ids.
    #[serde(rename = "key.rotated")]
    KeyRotated,
}

impl AuditEvent {
    /// The name written to the log, e.g. `payment.forwarded`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PaymentRejected => "payment.rejected",
            Self::PaymentForwarded => "payment.forwarded",
            Self::PaymentCompleted => "payment.completed",
            Self::TransactionRejected => "transaction.rejected",
            Self::TransactionForwarded => "transaction.forwarded",
            Self::TransactionCompleted => "transaction.completed",
            Self::PaymentReplayed => "payment.replayed",
            Self::PaymentResolved => "payment.resolved",
            Self::TransactionReplayed => "transaction.replayed",
            Self::TransactionResolved => "transaction.resolved",
            Self::SystemStarted => "system.started",
            Self::SystemStopped => "system.stopped",
            Self::ConfigReloaded => "config.reloaded",
            Self::ConfigReloadRefused => "config.reload_refused",
            Self::AuditKeyRotated => "audit.key_rotated",
            Self::KeyRotated => "key.rotated",
        }
    }
}

impl fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The only card data an audit record may hold (PCI DSS 3.3.1, 3.4.1, 3.5.1.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CardSummary {
    /// Card brand, e.g. `visa`.
    pub brand: String,
    /// First six digits.
    pub bin: String,
    /// Last four digits.
    pub last4: String,
    /// Hex HMAC-SHA-256(audit key, PAN digits), i.e. `hex::encode(card.fingerprint(&key))`
    /// of the payment module's `CardNumber`.
    pub fingerprint: String,
}

/// One audit event. `seq`, `ts`, `prev` and `mac` are added by the writer.
///
/// `None` fields are left out of the line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    pub event: AuditEvent,
    pub request_id: String,
    pub client_id: String,
    pub remote_addr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// `capture`, `refund` or `cancel` for transaction events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card: Option<CardSummary>,
    pub outcome: Outcome,
    /// Rejection reason title; never an input value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// For a replay: the request whose answer was replayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_request_id: Option<String>,
}

impl AuditRecord {
    /// A record with the required fields set and every optional field `None`.
    pub fn new(
        event: AuditEvent,
        request_id: impl Into<String>,
        client_id: impl Into<String>,
        remote_addr: impl Into<String>,
        outcome: Outcome,
    ) -> Self {
        Self {
            event,
            request_id: request_id.into(),
            client_id: client_id.into(),
            remote_addr: remote_addr.into(),
            order_id: None,
            transaction_id: None,
            action: None,
            gateway: None,
            method: None,
            card: None,
            outcome,
            reason: None,
            upstream_status: None,
            latency_ms: None,
            original_request_id: None,
        }
    }
}

/// Where the chain stands: the `seq` the next record gets, the `mac` it links to, and
/// the id of the key that must sign it (`None`: not known yet, at the start of a chain
/// being verified, or after a record written before records named their key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ChainHead {
    pub next_seq: u64,
    pub prev: String,
    pub key: Option<KeyId>,
}

impl ChainHead {
    pub(super) fn genesis(key: Option<KeyId>) -> Self {
        Self {
            next_seq: 1,
            prev: GENESIS_PREV.to_owned(),
            key,
        }
    }

    /// The head after `line`, which `signed_by` signed (a key rotation record hands the
    /// chain over to the key it names), or `None` if its seq is `u64::MAX`.
    pub(super) fn after(line: &SignedLine, signed_by: Option<&KeyId>) -> Option<Self> {
        Some(Self {
            next_seq: line.seq.checked_add(1)?,
            prev: line.mac.clone(),
            key: line.switches_to.or_else(|| signed_by.cloned()),
        })
    }
}

/// The unsigned line L:
/// `{"seq":..,"ts":..,"event":..,<record fields>,"key_id":"..","prev":".."}`.
#[derive(Serialize)]
struct Unsigned<'a, R> {
    seq: u64,
    ts: &'a str,
    #[serde(flatten)]
    record: &'a R,
    key_id: &'a KeyId,
    prev: &'a str,
}

/// Encodes `record` (an [`AuditRecord`] or a system record) as a line signed by `signer`,
/// `\n` included; returns the line and its mac (hex).
pub(super) fn encode_line<R: Serialize>(
    signer: &Signer,
    seq: u64,
    ts: &str,
    record: &R,
    prev: &str,
) -> Result<(Vec<u8>, String), serde_json::Error> {
    let mut line = serde_json::to_vec(&Unsigned {
        seq,
        ts,
        record,
        key_id: &signer.id,
        prev,
    })?;
    let mac_hex = hex32(&signer.hash.mac(&[&line]));
    // L ends with the object's `}`: replace it with `,"mac":"<hex>"}`.
    debug_assert_eq!(line.last(), Some(&b'}'));
    line.pop();
    line.reserve(SIGNED_TAIL_LEN + 1);
    line.extend_from_slice(MAC_PREFIX);
    line.extend_from_slice(mac_hex.as_bytes());
    line.extend_from_slice(MAC_SUFFIX);
    line.push(b'\n');
    Ok((line, mac_hex))
}

/// Lower-case hex of a 32-byte digest (macs, card fingerprints). `hex::encode` builds its
/// string a `char` at a time, which showed in payment profiles; this encodes into a buffer.
pub fn hex32(bytes: &[u8; 32]) -> String {
    let mut buf = [0u8; 64];
    hex::encode_to_slice(bytes, &mut buf).expect("64 bytes hold 32 in hex");
    String::from_utf8(buf.to_vec()).expect("hex is ASCII")
}

/// The chain fields of a line whose mac verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SignedLine {
    pub seq: u64,
    pub prev: String,
    pub mac: String,
    /// The key the line says signed it (`None` on lines written before records named it).
    pub key_id: Option<KeyId>,
    /// For `audit.key_rotated`: the key that signs every later record.
    pub switches_to: Option<KeyId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LineError {
    Malformed(&'static str),
    BadMac,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(what) => write!(f, "malformed line: {what}"),
            Self::BadMac => f.write_str("bad mac"),
        }
    }
}

#[derive(Deserialize)]
struct ChainFields {
    seq: u64,
    prev: String,
    event: Option<String>,
    key_id: Option<String>,
    new_key_id: Option<String>,
}

fn is_lower_hex(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A line taken apart but not yet verified: which key it names comes from bytes the
/// mac covers, so it is trusted only once [`ParsedLine::verify`] accepted it.
pub(super) struct ParsedLine<'a> {
    body: &'a [u8],
    event: Option<String>,
    expected: [u8; MAC_HEX_LEN / 2],
    line: SignedLine,
}

impl ParsedLine<'_> {
    /// The key the line names, if any.
    pub(super) fn key_id(&self) -> Option<&KeyId> {
        self.line.key_id.as_ref()
    }

    /// Whether the line reports a system event (start, stop, reload, key rotation)
    /// rather than a payment or a transaction action.
    pub(super) fn is_system_event(&self) -> bool {
        self.event
            .as_deref()
            .is_some_and(|e| !e.starts_with("payment.") && !e.starts_with("transaction."))
    }

    /// For `audit.key_rotated`: the key it hands the chain over to.
    pub(super) fn switches_to(&self) -> Option<&KeyId> {
        self.line.switches_to.as_ref()
    }

    /// The line's chain fields without checking its mac: only where the key is known to
    /// be absent and the caller says why that is acceptable.
    pub(super) fn unverified(self) -> SignedLine {
        self.line
    }

    /// The line's chain fields if `key` made its mac.
    pub(super) fn verify(&self, key: &KeyedHash) -> Result<SignedLine, LineError> {
        if key.verify(&[self.body, b"}"], &self.expected) {
            Ok(self.line.clone())
        } else {
            Err(LineError::BadMac)
        }
    }
}

const BAD_TAIL: LineError = LineError::Malformed("does not end with ,\"mac\":\"<64 hex digits>\"}");

/// Takes one line (without its `\n`) apart: shape, mac text, chain fields.
///
/// Error messages never quote the line's content.
pub(super) fn parse_line(line: &[u8]) -> Result<ParsedLine<'_>, LineError> {
    if line.len() <= SIGNED_TAIL_LEN || !line.ends_with(MAC_SUFFIX) {
        return Err(BAD_TAIL);
    }
    let (body, tail) = line.split_at(line.len() - SIGNED_TAIL_LEN);
    if !tail.starts_with(MAC_PREFIX) {
        return Err(BAD_TAIL);
    }
    let mac_hex = &tail[MAC_PREFIX.len()..MAC_PREFIX.len() + MAC_HEX_LEN];
    // Lowercase only, so that the mac text (outside the signed bytes) has one spelling.
    if !is_lower_hex(mac_hex) {
        return Err(LineError::Malformed("mac is not 64 lowercase hex digits"));
    }
    let mut expected = [0u8; MAC_HEX_LEN / 2];
    hex::decode_to_slice(mac_hex, &mut expected)
        .map_err(|_| LineError::Malformed("mac is not 64 lowercase hex digits"))?;

    let mut unsigned = Vec::with_capacity(body.len() + 1);
    unsigned.extend_from_slice(body);
    unsigned.push(b'}');
    let fields: ChainFields = serde_json::from_slice(&unsigned)
        .map_err(|_| LineError::Malformed("not a JSON record with seq and prev"))?;
    if fields.prev.len() != MAC_HEX_LEN || !is_lower_hex(fields.prev.as_bytes()) {
        return Err(LineError::Malformed("prev is not 64 lowercase hex digits"));
    }
    let key_id = match fields.key_id.as_deref() {
        None => None,
        Some(text) => Some(KeyId::parse(text).ok_or(LineError::Malformed(
            "key_id is not 16 lowercase hex digits",
        ))?),
    };
    let rotation = fields.event.as_deref() == Some(AuditEvent::AuditKeyRotated.as_str());
    let switches_to = match (rotation, fields.new_key_id.as_deref()) {
        (false, _) => None,
        (true, Some(text)) => Some(KeyId::parse(text).ok_or(LineError::Malformed(
            "new_key_id is not 16 lowercase hex digits",
        ))?),
        (true, None) => return Err(LineError::Malformed("audit.key_rotated without new_key_id")),
    };
    Ok(ParsedLine {
        body,
        event: fields.event,
        expected,
        line: SignedLine {
            seq: fields.seq,
            prev: fields.prev,
            mac: String::from_utf8_lossy(mac_hex).into_owned(),
            key_id,
            switches_to,
        },
    })
}

/// Checks one line (without its `\n`) with one key: shape, mac, then the chain fields.
#[cfg(test)]
pub(super) fn check_line(key: &KeyedHash, line: &[u8]) -> Result<SignedLine, LineError> {
    parse_line(line)?.verify(key)
}

#[cfg(test)]
mod tests;
