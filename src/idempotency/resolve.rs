//! Unknown outcomes: a request was forwarded and no answer came (upstream timeout, reset),
//! so it may or may not have been charged. Its key stays claimed as unknown; a retry
//! resolves it from the order's transactions (see README.md, "Idempotency and retries"):
//!
//! - a transaction of the same gateway and method created after the first attempt was
//!   sent is its outcome: the retry gets it as the answer, and it is recorded;
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
    /// For payments, what a matching transaction has; `None` for transaction actions,
    /// which are never resolved this way (they stay held until `idempotency.ttl`).
    pub probe: Option<Probe>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Probe {
    pub gateway: String,
    pub method: String,
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

/// The newest transaction in an order's transaction list (`{"data":[...]}`) that matches
/// `unknown`: same gateway, same method, created after it was sent. `Err` when the list is
/// not one: then nothing can be concluded (and a retry must not go through).
pub(crate) fn matching_transaction(
    list: &[u8],
    unknown: &UnknownOutcome,
) -> Result<Option<Value>, NotAList> {
    let Some(probe) = unknown.probe.as_ref() else {
        return Ok(None);
    };
    let mut list: Value = serde_json::from_slice(list).map_err(|_| NotAList)?;
    let since = UNIX_EPOCH + Duration::from_millis(unknown.sent_at_ms);
    let since = since.checked_sub(CLOCK_SLACK).unwrap_or(UNIX_EPOCH);
    let Some(Value::Array(transactions)) = list.get_mut("data").map(Value::take) else {
        return Err(NotAList);
    };
    Ok(transactions
        .into_iter()
        .filter(|t| t["gateway"].as_str() == Some(probe.gateway.as_str()))
        .filter(|t| same_method(t, &probe.method))
        .filter_map(|t| {
            let created = t["meta"]["timestamps"]["created_at"].as_str()?;
            let created = humantime::parse_rfc3339_weak(created).ok()?;
            (created >= since).then_some((created, t))
        })
        .max_by_key(|(created, _)| *created)
        .map(|(_, t)| t))
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
            probe: Some(Probe {
                gateway: "card_connect".into(),
                method: "purchase".into(),
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
