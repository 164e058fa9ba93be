//! Unknown outcomes: a request was forwarded and no answer came (upstream timeout, reset),
//! so it may or may not have been charged. Its key stays claimed as unknown; a retry
//! resolves it from the order's transactions (see README.md, "Idempotency and retries"):
//!
//! - for a payment, a refund or a capture: a transaction of the same gateway (payments) and
//!   type created after the first attempt was sent is its outcome; for a cancel: the
//!   transaction itself, once `cancelled`. The retry gets it as the answer, and it is
//!   recorded;
//! - none, while the first attempt could still complete upstream (until twice
//!   `upstream.timeout` after it was sent): 409, nothing forwarded;
//! - none after that: the retry takes the key over and is forwarded.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::Digest;

/// Clocks differ and the API's timestamps have whole seconds: a transaction created this
/// much before the first attempt was sent still counts as after it.
const CLOCK_SLACK: Duration = Duration::from_secs(2);

/// A forwarded request whose answer never came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownOutcome {
    /// When it was handed to the upstream (Unix time, ms).
    pub sent_at_ms: u64,
    /// The request that was forwarded.
    pub request_id: String,
    /// What in the order's transactions shows the outcome. `None` only in entries
    /// written by older versions for transaction actions: those stay held until
    /// `idempotency.ttl`.
    pub probe: Option<Probe>,
}

/// Where the outcome of a forwarded request shows in the order's transaction list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Probe {
    /// A new transaction of type `kind` (`purchase`, `authorize`, `capture`, `refund`...),
    /// of `gateway` when known: what a payment, a capture or a refund creates.
    Created {
        gateway: Option<String>,
        kind: String,
    },
    /// The existing transaction `id` in `status`: what a cancel changes.
    Updated { id: String, status: String },
}

/// An unknown outcome a retry found, to resolve against the order's transactions.
pub(crate) struct Unresolved {
    pub(super) key: Digest,
    pub(super) unknown: Arc<UnknownOutcome>,
    /// In the shared store: the entry as read, for compare-and-set.
    pub(super) shared_value: Option<String>,
}

impl Unresolved {
    /// Whether the order's transactions can tell the outcome (payments only).
    pub(crate) fn can_probe(&self) -> bool {
        self.unknown.probe.is_some()
    }

    pub(crate) fn unknown(&self) -> &UnknownOutcome {
        &self.unknown
    }

    pub(crate) fn original_request_id(&self) -> &str {
        &self.unknown.request_id
    }
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// The transaction in an order's transaction list (`{"data":[...]}`) that shows
/// `unknown`'s outcome (see [`Probe`]): for a new one, the newest matching one created after
/// the request was sent. `Err` when the list is not one: then nothing can be concluded (and
/// a retry must not go through).
pub(crate) fn matching_transaction(
    list: &[u8],
    unknown: &UnknownOutcome,
) -> Result<Option<Value>, NotAList> {
    let Some(probe) = unknown.probe.as_ref() else {
        return Ok(None);
    };
    let mut list: Value = serde_json::from_slice(list).map_err(|_| NotAList)?;
    let Some(Value::Array(transactions)) = list.get_mut("data").map(Value::take) else {
        return Err(NotAList);
    };
    let since = UNIX_EPOCH + Duration::from_millis(unknown.sent_at_ms);
    let since = since.checked_sub(CLOCK_SLACK).unwrap_or(UNIX_EPOCH);
    Ok(match probe {
        Probe::Created { gateway, kind } => transactions
            .into_iter()
            .filter(|t| gateway.is_none() || t["gateway"].as_str() == gateway.as_deref())
            .filter(|t| same_method(t, kind))
            .filter_map(|t| Some((created_at(&t)?, t)))
            .filter(|(created, _)| *created >= since)
            .max_by_key(|(created, _)| *created)
            .map(|(_, t)| t),
        Probe::Updated { id, status } => transactions.into_iter().find(|t| {
            t["id"].as_str() == Some(id.as_str()) && t["status"].as_str() == Some(status.as_str())
        }),
    })
}

/// When a transaction was created: `meta.timestamps.created_at` (older answers put it at
/// `meta.created_at`).
fn created_at(t: &Value) -> Option<SystemTime> {
    let created = t["meta"]["timestamps"]["created_at"]
        .as_str()
        .or_else(|| t["meta"]["created_at"].as_str())?;
    humantime::parse_rfc3339_weak(created).ok()
}

/// Whether transaction `t` is of payment method `method`. The spec names the member
/// `transaction-type`, today's answers `transaction_type` (the 2019 ones carried both), and
/// setups come back as `purchase-setup` for the method `purchase_setup`.
fn same_method(t: &Value, method: &str) -> bool {
    let kind = t["transaction_type"]
        .as_str()
        .or_else(|| t["transaction-type"].as_str());
    kind.is_some_and(|k| k.replace('-', "_") == method)
}

/// The answer to a transaction list request was not a transaction list.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NotAList;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn unknown(sent_at_ms: u64) -> UnknownOutcome {
        UnknownOutcome {
            sent_at_ms,
            request_id: "r1".into(),
            probe: Some(Probe::Created {
                gateway: Some("card_connect".into()),
                kind: "purchase".into(),
            }),
        }
    }

    fn txn(id: &str, kind: &str, created: &str) -> Value {
        json!({"id": id, "gateway": "card_connect", "transaction-type": kind,
               "meta": {"timestamps": {"created_at": created}}})
    }

    #[test]
    fn the_newest_matching_transaction_after_the_attempt() {
        // 2026-01-01T00:00:10Z
        let sent = 1_767_225_610_000;
        let list = json!({"data": [
            txn("old", "purchase", "2026-01-01T00:00:00Z"),
            txn("auth", "authorize", "2026-01-01T00:00:20Z"),
            txn("new", "purchase", "2026-01-01T00:00:11Z"),
            txn("slack", "purchase", "2026-01-01T00:00:09Z"),
        ]});
        let body = serde_json::to_vec(&list).unwrap();
        let found = matching_transaction(&body, &unknown(sent))
            .unwrap()
            .unwrap();
        assert_eq!(found["id"], "new");
        let old = txn("old", "purchase", "2026-01-01T00:00:00Z");
        let none = serde_json::to_vec(&json!({ "data": [old] })).unwrap();
        assert_eq!(matching_transaction(&none, &unknown(sent)), Ok(None));
        assert_eq!(
            matching_transaction(b"not json", &unknown(sent)),
            Err(NotAList)
        );
        assert_eq!(matching_transaction(b"{}", &unknown(sent)), Err(NotAList));
    }

    fn list(transactions: Vec<Value>) -> Vec<u8> {
        serde_json::to_vec(&json!({ "data": transactions })).unwrap()
    }

    fn action(probe: Probe) -> UnknownOutcome {
        UnknownOutcome {
            sent_at_ms: 1_767_225_610_000, // 2026-01-01T00:00:10Z
            request_id: "r1".into(),
            probe: Some(probe),
        }
    }

    /// Table: which transaction (by id) each probe finds in one order's list.
    #[test]
    fn probes_of_transaction_actions() {
        let order = list(vec![
            json!({"id": "auth", "gateway": "stripe", "transaction_type": "authorize",
                   "status": "complete",
                   "meta": {"timestamps": {"created_at": "2026-01-01T00:00:00Z"}}}),
            json!({"id": "cap", "gateway": "stripe", "transaction_type": "capture",
                   "status": "complete",
                   "meta": {"timestamps": {"created_at": "2026-01-01T00:00:12Z"}}}),
            json!({"id": "old-refund", "gateway": "stripe", "transaction-type": "refund",
                   "meta": {"created_at": "2026-01-01T00:00:01Z"}}),
            json!({"id": "pay", "gateway": "stripe", "transaction_type": "purchase",
                   "status": "cancelled",
                   "meta": {"timestamps": {"created_at": "2026-01-01T00:00:02Z"}}}),
        ]);
        let created = |kind: &str| Probe::Created {
            gateway: None,
            kind: kind.into(),
        };
        let updated = |id: &str, status: &str| Probe::Updated {
            id: id.into(),
            status: status.into(),
        };
        let cases: &[(&str, Probe, Option<&str>)] = &[
            ("capture created after", created("capture"), Some("cap")),
            ("refund only before", created("refund"), None),
            ("cancelled target", updated("pay", "cancelled"), Some("pay")),
            ("target not cancelled", updated("auth", "cancelled"), None),
            ("unknown target", updated("nope", "cancelled"), None),
            (
                "gateway must match when known",
                Probe::Created {
                    gateway: Some("paypal_express_checkout".into()),
                    kind: "capture".into(),
                },
                None,
            ),
        ];
        for (name, probe, want) in cases {
            let found = matching_transaction(&order, &action(probe.clone())).unwrap();
            let got = found.as_ref().and_then(|t| t["id"].as_str());
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn todays_member_name_and_hyphenated_setups_match() {
        let sent = 1_767_225_610_000;
        let list = json!({"data": [
            {"id": "today", "gateway": "card_connect", "transaction_type": "purchase",
             "meta": {"timestamps": {"created_at": "2026-01-01T00:00:11Z"}}},
        ]});
        let body = serde_json::to_vec(&list).unwrap();
        let found = matching_transaction(&body, &unknown(sent))
            .unwrap()
            .unwrap();
        assert_eq!(found["id"], "today");
        let setup = json!({"transaction_type": "purchase-setup"});
        assert!(same_method(&setup, "purchase_setup"));
        assert!(!same_method(&setup, "purchase"));
    }
}
