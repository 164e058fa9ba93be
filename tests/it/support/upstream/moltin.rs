//! A handler that answers like the Moltin API, the CardConnect transactions it returns,
//! and the random ids and timestamps they carry.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::reply::{Handler, Recorded, Reply};

/// A handler that answers like the Moltin API:
/// - `POST /oauth/access_token`: `{"access_token":"upstream-token-N",...}`, N = 1, 2, ...
/// - `POST /v2/orders/{id}/payments`: 201 with a CardConnect transaction (about 600 bytes);
///   `transaction-type` follows the request's `data.method` (purchase, authorize, capture).
/// - `GET /v2/orders/{id}/transactions`: 200 `{"data":[transaction]}`.
/// - anything else: 200 `{"data":{}}`.
pub fn moltin_like() -> Handler {
    let tokens = AtomicU64::new(0);
    Arc::new(move |req: &Recorded| {
        let path = req.path.split('?').next().unwrap_or_default();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (req.method.as_str(), segments.as_slice()) {
            ("POST", ["oauth", "access_token"]) => {
                let n = tokens.fetch_add(1, Ordering::SeqCst) + 1;
                Reply::json(
                    200,
                    json!({
                        "access_token": format!("upstream-token-{n}"),
                        "expires_in": 3600,
                        "expires": unix_now() + 3600,
                        "token_type": "Bearer",
                        "identifier": "client_credentials",
                    }),
                )
            }
            ("POST", ["v2", "orders", order_id, "payments"]) => {
                let method = serde_json::from_slice::<Value>(&req.body)
                    .ok()
                    .and_then(|v| v["data"]["method"].as_str().map(str::to_owned))
                    .filter(|m| ["purchase", "authorize", "capture"].contains(&m.as_str()))
                    .unwrap_or_else(|| "purchase".to_owned());
                Reply::json(201, json!({ "data": transaction(order_id, &method) }))
            }
            ("GET", ["v2", "orders", order_id, "transactions"]) => {
                Reply::json(200, json!({ "data": [transaction(order_id, "purchase")] }))
            }
            _ => Reply::json(200, json!({ "data": {} })),
        }
    })
}

/// A CardConnect transaction object as the API returns it.
pub fn transaction(order_id: &str, transaction_type: &str) -> Value {
    let now = rfc3339(unix_now());
    json!({
        "id": random_uuid(),
        "type": "transaction",
        "reference": format!("{:012}", random_u64() % 1_000_000_000_000),
        "name": null,
        "custom_reference": null,
        "gateway": "card_connect",
        "amount": 4999,
        "refunded_amount": 0,
        "currency": "USD",
        "transaction-type": transaction_type,
        "status": "complete",
        "relationships": {
            "order": { "data": { "type": "order", "id": order_id } }
        },
        "meta": {
            "display_price": { "amount": 4999, "currency": "USD", "formatted": "$49.99" },
            "display_refunded_amount": { "amount": 0, "currency": "USD", "formatted": "$0.00" },
            "timestamps": { "created_at": now, "updated_at": now }
        }
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    RandomState::new().hash_one((COUNTER.fetch_add(1, Ordering::Relaxed), nanos))
}

/// A random (version 4 layout) UUID string.
pub fn random_uuid() -> String {
    let hi = (random_u64() & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    let lo = (random_u64() & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

/// `YYYY-MM-DDTHH:MM:SS.000Z` for a Unix time (UTC).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.000Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}
