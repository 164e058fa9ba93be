//! The decline breaker through the server: a run of declines trips it for that storefront
//! only (429 with `Retry-After`, nothing forwarded), and after the cool-down payments are
//! served again; the declines and the refusal are audited.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{Value, json};

use support::cards::{MASTERCARD, VISA};
use support::load::{audit_records, payment_to, wait_rejected};
use support::payshim::{Payshim, STOREFRONT_KEY};
use support::upstream::random_uuid;
use support::{Handler, HttpVersion, Recorded, Reply, World, handler, moltin_like};

use super::{
    OTHER_KEY, WorldExt, assert_rate_limited, assert_rejection_record, assert_served, payment, send,
};

/// Declines every Visa card (402 and 422 in turn, like CardConnect through the API) and
/// approves anything else as the API does.
fn declining_visa() -> Handler {
    let approve = moltin_like();
    let n = Arc::new(AtomicUsize::new(0));
    handler(move |req: &Recorded| {
        let number = serde_json::from_slice::<Value>(&req.body)
            .ok()
            .and_then(|v| v["data"]["number"].as_str().map(str::to_owned))
            .unwrap_or_default();
        if req.method == Method::POST && number.starts_with('4') {
            let status = if n.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                402
            } else {
                422
            };
            Reply::json(
                status,
                json!({"errors": [{"status": status, "title": "Payment declined",
                    "detail": "The card was declined"}]}),
            )
        } else {
            approve(req)
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decline_breaker_trips_per_storefront_and_recovers() {
    let world = World::new(declining_visa()).await;
    let payshim = Payshim::start(&world.config(&[
        ("decline_window", "5"),
        ("decline_ratio", "0.8"),
        ("decline_cooldown", "\"2s\""),
    ]))
    .await;
    let client = payshim.client(HttpVersion::Http1);
    let base = payshim.url("");

    // Five declines in a row (distinct cards: a card-testing run).
    for n in 0..5 {
        let resp = send(
            &client,
            payment_to(&base, &random_uuid(), STOREFRONT_KEY, &payment(VISA, n).1),
        )
        .await;
        assert!(
            resp.status == 402 || resp.status == 422,
            "decline {n} passed through as is: {} {}",
            resp.status,
            resp.text()
        );
    }
    assert_eq!(world.upstream.count(), 5);
    // The breaker is open: even a good card is refused, and nothing is forwarded.
    let order = random_uuid();
    let tripped = Instant::now();
    let resp = send(
        &client,
        payment_to(&base, &order, STOREFRONT_KEY, &payment(MASTERCARD, 1).1),
    )
    .await;
    let retry = assert_rate_limited(&resp, "decline_breaker", Duration::from_secs(2));
    assert_eq!(world.upstream.count(), 5, "nothing forwarded while open");

    // Another storefront is unaffected (its own decline goes through to the upstream).
    let resp = send(
        &client,
        payment_to(&base, &random_uuid(), OTHER_KEY, &payment(VISA, 10).1),
    )
    .await;
    assert!(
        resp.status == 402 || resp.status == 422,
        "web-us: {} {}",
        resp.status,
        resp.text()
    );
    let resp = send(
        &client,
        payment_to(&base, &random_uuid(), OTHER_KEY, &payment(MASTERCARD, 2).1),
    )
    .await;
    assert_served(&resp, "web-us");
    assert_eq!(world.upstream.count(), 7);

    // After the cool-down (as Retry-After said) web-eu is served again.
    let wait = Duration::from_secs(retry).saturating_sub(tripped.elapsed());
    tokio::time::sleep(wait + Duration::from_millis(100)).await;
    let resp = send(
        &client,
        payment_to(
            &base,
            &random_uuid(),
            STOREFRONT_KEY,
            &payment(MASTERCARD, 3).1,
        ),
    )
    .await;
    assert_served(&resp, "web-eu after the cool-down");
    assert_eq!(world.upstream.count(), 8);

    let rejected = wait_rejected(&world.audit_path(), "decline_breaker", 1).await;
    assert_eq!(rejected.len(), 1);
    assert_rejection_record(&rejected[0], "web-eu", &order);
    let records = audit_records(&world.audit_path());
    let declined = records
        .iter()
        .filter(|r| r["event"] == "payment.completed" && r["outcome"] == "declined")
        .count();
    assert_eq!(declined, 6, "the declines are audited as such");
}
