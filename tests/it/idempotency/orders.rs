//! Without a key: one payment per order in flight, and the duplicate window, which
//! replays a successful payment (only) when it is submitted again.

use std::time::Duration;

use bytes::Bytes;
use http::Request;

use super::{CVV, PAN, answer, assert_metric, pay, pay_request, send, start};
use crate::support;
use support::handler;
use support::payshim::{ORDER, payment_body};

#[tokio::test]
async fn two_payments_for_one_order_at_once_forward_one() {
    let (world, payshim) = start(Duration::from_millis(500), "off").await;
    let (a, b) = tokio::join!(
        pay(&payshim, PAN, None),
        pay(&payshim, "5555555555554444", None)
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "{} / {}", a.text(), b.text());
    assert_eq!(world.upstream.count(), 1);
    assert_metric(&payshim, "order_in_flight", 1).await;
    // Once the first is done, the order takes payments again.
    assert_eq!(pay(&payshim, "5555555555554444", None).await.status, 201);
    assert_eq!(world.upstream.count(), 2);
}

#[tokio::test]
async fn duplicate_window_replays_a_successful_payment_only() {
    let (world, payshim) = start(Duration::ZERO, "10min").await;
    let first = pay(&payshim, PAN, None).await;
    assert_eq!(first.status, 201);
    let double = pay(&payshim, PAN, None).await;
    assert_eq!(
        double.header("idempotent-replayed").as_deref(),
        Some("true")
    );
    assert_eq!(double.body, first.body);
    assert_eq!(
        world.upstream.count(),
        1,
        "a double submit is not charged again"
    );
    // Another card (the API's payment body has no amount): a new payment.
    assert_eq!(pay(&payshim, "5555555555554444", None).await.status, 201);
    assert_eq!(world.upstream.count(), 2);
    // After a failed transaction, the retry goes through (every time).
    world.upstream.set_handler(handler(|_| answer("failed")));
    let card = "378282246310005";
    for n in 3..=4 {
        let body = payment_body().replace(PAN, card).replace(CVV, "1234");
        let req = pay_request(&payshim, ORDER, PAN, None);
        let (parts, _) = req.into_parts();
        let resp = send(&payshim, Request::from_parts(parts, Bytes::from(body))).await;
        assert_eq!(resp.status, 201, "{}", resp.text());
        assert_eq!(resp.header("idempotent-replayed"), None);
        assert_eq!(world.upstream.count(), n);
    }
}

#[tokio::test]
async fn duplicate_window_off_forwards_every_payment() {
    let (world, payshim) = start(Duration::ZERO, "off").await;
    for n in 1..=2 {
        assert_eq!(pay(&payshim, PAN, None).await.status, 201);
        assert_eq!(world.upstream.count(), n);
    }
}
