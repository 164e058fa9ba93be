//! No double charge (issue 15): `Idempotency-Key`, one payment per order in flight and the
//! duplicate window, through a real payshim (in process, TLS) to the upstream double.
//!
//! Every case counts what reached the upstream: a replay or a refusal forwards nothing.
//! The card-data checks scan the answers, the audit files, the real binary's logs and
//! every Redis entry (`SCAN` + `GET`) for the PAN and the CVV.
//!
//! `keys.rs`: `Idempotency-Key` replays, mismatches and malformed keys; `orders.rs`: one
//! payment per order in flight and the duplicate window; `with_redis.rs`: the keys kept in
//! Redis; `unknown_outcome.rs`: a payment or action that timed out, resolved from the
//! order's transactions. The helpers they share are here.

mod keys;
mod orders;
mod unknown_outcome;
mod with_redis;

use crate::support;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request};
use serde_json::{Value, json};

use support::cards::{find_cvvs, find_pans};
use support::payshim::{ORDER, Payshim, STOREFRONT_KEY, admin_get, payment_body, set_key};
use support::{HttpVersion, Reply, TestResponse, World, handler};

const PAN: &str = "4111111111111111";
const CVV: &str = "123";
const TRANSACTION: &str = "5e1d2c3b-4a59-4687-9a1b-2c3d4e5f6a7b";

/// The double's answer to a payment: a complete transaction (or `status`).
fn answer(status: &str) -> Reply {
    Reply::json(
        201,
        json!({"data": {"type": "transaction", "id": TRANSACTION,
            "gateway": "card_connect", "status": status}}),
    )
}

/// A world whose upstream answers a complete transaction after `delay`, and payshim on it
/// with `window` as `idempotency.duplicate_window` and one payment per order in flight.
async fn start(delay: Duration, window: &str) -> (World, Payshim) {
    let world = World::new(handler(move |_| answer("complete").delayed(delay))).await;
    let window = format!("\"{window}\"");
    let config = set_key(
        &world.base_config(),
        "idempotency",
        "duplicate_window",
        Some(&window),
    );
    // The shared test config turns this off; here it is what is tested.
    let config = set_key(
        &config,
        "idempotency",
        "one_payment_per_order",
        Some("true"),
    );
    let payshim = Payshim::start(&config).await;
    (world, payshim)
}

/// A card payment for `order` with `pan`, with an `Idempotency-Key` when given.
fn pay_request(payshim: &Payshim, order: &str, pan: &str, key: Option<&[u8]>) -> Request<Bytes> {
    let body = payment_body().replace(PAN, pan);
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(payshim.url(&format!("/v2/orders/{order}/payments")))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {STOREFRONT_KEY}"));
    if let Some(key) = key {
        req = req.header(
            "idempotency-key",
            HeaderValue::from_bytes(key).expect("header"),
        );
    }
    req.body(Bytes::from(body)).expect("request")
}

async fn send(payshim: &Payshim, req: Request<Bytes>) -> TestResponse {
    tokio::time::timeout(
        Duration::from_secs(15),
        payshim.client(HttpVersion::Http1).send(req),
    )
    .await
    .expect("payshim answered within 15 s")
    .expect("request")
}

async fn pay(payshim: &Payshim, pan: &str, key: Option<&[u8]>) -> TestResponse {
    send(payshim, pay_request(payshim, ORDER, pan, key)).await
}

fn audit_text(world: &World) -> String {
    payshim::audit::read_records(&world.audit.path().join("payshim.jsonl")).unwrap_or_default()
}

fn audit_events(world: &World) -> Vec<Value> {
    audit_text(world)
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
        .collect()
}

/// No PAN and no CVV in `hay` (a response or a file).
fn assert_no_card_data(what: &str, hay: &[u8]) {
    let pans: HashSet<String> = [PAN.to_string()].into();
    let cvvs: HashSet<String> = [CVV.to_string()].into();
    assert!(find_pans(hay, &pans).is_empty(), "{what} holds the PAN");
    assert!(find_cvvs(hay, &cvvs).is_empty(), "{what} holds the CVV");
}

/// `payshim_idempotency_total{event}` is `n`.
async fn assert_metric(payshim: &Payshim, event: &str, n: u64) {
    let (status, text) = admin_get(payshim.admin, "/metrics").await;
    assert_eq!(status, 200);
    let line = format!("payshim_idempotency_total{{event=\"{event}\"}} {n}");
    assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
}

/// Every key payshim wrote to Redis and its value (all are strings).
fn redis_entries(url: &str) -> Vec<(String, String)> {
    let client = redis::Client::open(url).expect("redis client");
    let mut con = client.get_connection().expect("redis connection");
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(&mut con)
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.into_iter()
        .map(|k| {
            let v: Option<String> = redis::cmd("GET").arg(&k).query(&mut con).expect("GET");
            (k, v.unwrap_or_default())
        })
        .collect()
}
