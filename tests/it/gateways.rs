//! Every gateway of today's Elastic Path API end to end (issue 18): a valid payment of each
//! reaches the upstream double as its canonical body, with the store token; the API's 200
//! and 201 answers both come back unchanged; a card number hidden in a token, option or
//! name is refused, reaches nothing and is never repeated; card fields for a gateway that
//! takes tokens only are refused. The per-gateway rule tables are unit tests in
//! src/payment/gateway_tests.rs; these check the wiring through a running payshim.

use crate::support;

use bytes::Bytes;
use http::Request;
use serde_json::{Value, json};

use support::payshim::{Payshim, STOREFRONT_KEY, UPSTREAM_TOKEN, base_config};
use support::{HttpVersion, Reply, TestPki, Upstream, handler};

const ALL: &str = r#"["adyen", "authorize_net", "braintree", "card_connect", "cyber_source",
  "elastic_path_payments_stripe", "manual", "paypal_express_checkout", "stripe",
  "stripe_connect", "stripe_payment_intents"]"#;

/// One valid payment per gateway, each written in canonical member order, so what the
/// upstream must receive is the `data` exactly as sent.
const PAYMENTS: [&str; 11] = [
    r#"{"gateway":"adyen","method":"purchase","payment":"8315","options":{"shopper_reference":"s-1"}}"#,
    r#"{"gateway":"authorize_net","method":"authorize","payment":"1505372010","options":{"customer_payment_profile_id":"1504721893"}}"#,
    r#"{"gateway":"braintree","method":"purchase","payment":"fake-valid-nonce","options":{"payment_method_nonce":true}}"#,
    r#"{"gateway":"card_connect","method":"purchase","payment":"1|16178397535388255208"}"#,
    r#"{"gateway":"cyber_source","method":"purchase","payment":";;;;;;11234FS"}"#,
    r#"{"gateway":"elastic_path_payments_stripe","method":"purchase","amount":5499,"payment":"pm_card_threeDSecureRequired","options":{"receipt_email":"john@example.com"}}"#,
    r#"{"gateway":"manual","method":"authorize"}"#,
    r#"{"gateway":"paypal_express_checkout","method":"purchase","options":{"application_context":{"return_url":"https://shop.example/ok","cancel_url":"https://shop.example/no"}}}"#,
    r#"{"gateway":"stripe","method":"purchase","payment":"tok_visa","options":{"idempotency_key":"8f14e45f","destination":"acct_XXX"}}"#,
    r#"{"gateway":"stripe_connect","method":"authorize","payment":"pm_1"}"#,
    r#"{"gateway":"stripe_payment_intents","method":"purchase_setup","payment":"pm_card_visa"}"#,
];

/// A card number hidden in one member per gateway, and the `source` it must be refused on.
const HIDDEN: [(&str, &str); 11] = [
    (
        r#"{"gateway":"adyen","method":"purchase","payment":"4111111111111111"}"#,
        "data.payment",
    ),
    (
        r#"{"gateway":"authorize_net","method":"purchase","payment":"1","options":{"customer_payment_profile_id":"4111 1111 1111 1111"}}"#,
        "data.options.customer_payment_profile_id",
    ),
    (
        r#"{"gateway":"braintree","method":"purchase","payment":"t","options":{"custom_fields":{"note":"4111-1111-1111-1111"}}}"#,
        "data.options.custom_fields.note",
    ),
    (
        r#"{"gateway":"card_connect","method":"purchase","payment":"1|4111111111111111"}"#,
        "data.payment",
    ),
    (
        r#"{"gateway":"cyber_source","method":"purchase","payment":";;;;;;4111111111111111"}"#,
        "data.payment",
    ),
    (
        r#"{"gateway":"elastic_path_payments_stripe","method":"purchase","payment_method_types":["card","4111111111111111"]}"#,
        "data.payment_method_types",
    ),
    (
        r#"{"gateway":"manual","method":"purchase","paymentmethod_meta":{"name":"Ada 4111111111111111"}}"#,
        "data.paymentmethod_meta.name",
    ),
    (
        r#"{"gateway":"paypal_express_checkout","method":"purchase","options":{"description":"card 4111111111111111 exp 08/31"}}"#,
        "data.options.description",
    ),
    (
        r#"{"gateway":"stripe","method":"purchase","payment":"tok_4111111111111111"}"#,
        "data.payment",
    ),
    (
        r#"{"gateway":"stripe_connect","method":"purchase","options":{"customer":"4111111111111111"}}"#,
        "data.options.customer",
    ),
    (
        r#"{"gateway":"stripe_payment_intents","method":"purchase","options":{"receipt_email":"4111111111111111@example.com"}}"#,
        "data.options.receipt_email",
    ),
];

/// A distinct order per request, so no per-order rule ties the cases together.
fn order(i: usize) -> String {
    format!("7d3c1a52-9e4f-4b8a-8c6d-{i:012}")
}

fn pay(payshim: &Payshim, order: &str, data: &str) -> Request<Bytes> {
    Request::post(payshim.url(&format!("/v2/orders/{order}/payments")))
        .header("authorization", format!("Bearer {STOREFRONT_KEY}"))
        .header("content-type", "application/json")
        .body(Bytes::from(format!(r#"{{"data":{data}}}"#)))
        .unwrap()
}

/// The answer of the double: 200 for the even-numbered orders, 201 for the others (the
/// API's documents give both), with a body payshim must pass on byte for byte.
fn answer(path: &str) -> (u16, String) {
    let last = path
        .split('/')
        .nth(3)
        .and_then(|o| o.rsplit('-').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    let status = if last.is_multiple_of(2) { 200 } else { 201 };
    let body = format!(
        r#"{{ "data": {{ "type": "transaction", "id": "5e1d2c3b-4a59-4687-9a1b-{last:012}", "status": "complete", "transaction_type": "purchase" }} }}"#
    );
    (status, body)
}

async fn start(pki: &TestPki, upstream: &Upstream, dir: &std::path::Path) -> Payshim {
    let config = base_config(pki, &upstream.url(), dir);
    Payshim::start(&format!("{config}\n[payments]\ngateways = {ALL}\n")).await
}

#[tokio::test]
async fn every_gateway_forwards_canonically_and_its_answer_comes_back() {
    let pki = TestPki::new();
    let upstream = Upstream::start(
        &pki,
        handler(|req| {
            let (status, body) = answer(&req.path);
            Reply::Respond {
                status,
                headers: vec![("content-type".into(), "application/json".into())],
                body: body.into_bytes(),
            }
        }),
    )
    .await;
    let audit = tempfile::tempdir().unwrap();
    let payshim = start(&pki, &upstream, audit.path()).await;
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let client = payshim.client(version);
        for (i, data) in PAYMENTS.iter().enumerate() {
            let order = order(i + 20 * version as usize);
            let resp = client.send(pay(&payshim, &order, data)).await.unwrap();
            let (status, body) = answer(&format!("/v2/orders/{order}/payments"));
            assert_eq!(resp.status, status, "{data}: {}", resp.text());
            assert_eq!(resp.text(), body, "{data}: the answer was changed");
            let got = upstream.requests().pop().expect("a request upstream");
            assert_eq!(got.path, format!("/v2/orders/{order}/payments"));
            assert_eq!(
                String::from_utf8_lossy(&got.body),
                format!(r#"{{"data":{data}}}"#),
                "{data}: not forwarded canonically"
            );
            assert_eq!(
                got.headers["authorization"],
                format!("Bearer {UPSTREAM_TOKEN}").as_str()
            );
        }
    }
    assert_eq!(upstream.count(), 2 * PAYMENTS.len());
    payshim.stop().await;
}

#[tokio::test]
async fn shuffled_members_are_forwarded_in_canonical_order() {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, handler(|_| Reply::json(200, json!({"data": {}})))).await;
    let audit = tempfile::tempdir().unwrap();
    let payshim = start(&pki, &upstream, audit.path()).await;
    let sent = r#"{"options":{"receipt_email":"a@b.example","idempotency_key":"k1"},"payment":"tok_visa","amount":250,"method":"authorize","gateway":"stripe"}"#;
    let resp = payshim
        .client(HttpVersion::Http1)
        .send(pay(&payshim, &order(99), sent))
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let got = upstream.requests().pop().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got.body),
        r#"{"data":{"gateway":"stripe","method":"authorize","amount":250,"payment":"tok_visa","options":{"receipt_email":"a@b.example","idempotency_key":"k1"}}}"#
    );
    payshim.stop().await;
}

#[tokio::test]
async fn card_numbers_where_tokens_belong_and_card_fields_for_token_gateways_are_refused() {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, handler(|_| Reply::json(200, json!({"data": {}})))).await;
    let audit = tempfile::tempdir().unwrap();
    let payshim = start(&pki, &upstream, audit.path()).await;
    let client = payshim.client(HttpVersion::Http2);
    let card = r#""first_name":"Ada","last_name":"Lovelace","number":"4111111111111111","month":"08","year":"2031","verification_value":"123""#;
    let mut cases: Vec<(String, &str, &str)> = HIDDEN
        .iter()
        .map(|(data, source)| {
            (
                (*data).to_owned(),
                *source,
                "Card number where a token is expected",
            )
        })
        .collect();
    for gateway in [
        "stripe",
        "braintree",
        "adyen",
        "stripe_payment_intents",
        "manual",
    ] {
        cases.push((
            format!(r#"{{"gateway":"{gateway}","method":"purchase",{card}}}"#),
            "data",
            "Card data not accepted",
        ));
    }
    for (i, (data, source, title)) in cases.iter().enumerate() {
        let resp = client.send(pay(&payshim, &order(i), data)).await.unwrap();
        assert_eq!(resp.status, 400, "{data}: {}", resp.text());
        let body: Value = resp.json();
        assert_eq!(body["errors"][0]["source"], *source, "{data}: {body}");
        assert_eq!(body["errors"][0]["title"], *title, "{data}: {body}");
        assert!(
            !resp.text().contains("4111"),
            "{data}: echoed: {}",
            resp.text()
        );
    }
    assert_eq!(
        upstream.count(),
        0,
        "a refused payment reached the upstream"
    );
    // The same card fields are taken for card_connect, the default raw-card gateway.
    let cc = format!(r#"{{"gateway":"card_connect","method":"purchase",{card}}}"#);
    let resp = client.send(pay(&payshim, &order(98), &cc)).await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    payshim.stop().await;
    let audit_text = payshim::audit::read_records(&audit.path().join("payshim.jsonl")).unwrap();
    let rejected = audit_text
        .lines()
        .filter(|l| l.contains("\"payment.rejected\""))
        .count();
    assert_eq!(rejected, cases.len(), "one rejected record per refusal");
    assert!(!audit_text.contains("4111 1111") && !audit_text.contains("4111-1111"));
    assert_eq!(
        audit_text.matches("4111111111111111").count(),
        0,
        "a card number in the audit log"
    );
}

/// Without an `Idempotency-Key` (the SDK sends none), a token payment resent within the
/// duplicate window is answered from the first one; another token or amount is a new
/// payment. The token's canonical members stand in for the card fingerprint.
#[tokio::test]
async fn the_duplicate_window_covers_token_payments() {
    let pki = TestPki::new();
    let upstream = Upstream::start(
        &pki,
        handler(|_| Reply::json(200, json!({"data": {"status": "complete"}}))),
    )
    .await;
    let audit = tempfile::tempdir().unwrap();
    let config = base_config(&pki, &upstream.url(), audit.path());
    let config = support::payshim::set_key(
        &config,
        "idempotency",
        "duplicate_window",
        Some("\"10min\""),
    );
    let payshim = Payshim::start(&format!("{config}\n[payments]\ngateways = {ALL}\n")).await;
    let client = payshim.client(HttpVersion::Http1);
    let order = order(7);
    let first = r#"{"gateway":"stripe","method":"purchase","payment":"tok_visa","amount":100}"#;
    let resp = client.send(pay(&payshim, &order, first)).await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("idempotent-replayed"), None);
    // The same members in another order: the same payment, replayed.
    let same = r#"{"amount":100,"payment":"tok_visa","gateway":"stripe","method":"purchase"}"#;
    let again = client.send(pay(&payshim, &order, same)).await.unwrap();
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(
        upstream.count(),
        1,
        "a duplicate token payment was charged twice"
    );
    for other in [
        r#"{"gateway":"stripe","method":"purchase","payment":"tok_mastercard","amount":100}"#,
        r#"{"gateway":"stripe","method":"purchase","payment":"tok_visa","amount":200}"#,
    ] {
        let resp = client.send(pay(&payshim, &order, other)).await.unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.header("idempotent-replayed"), None, "{other}");
    }
    assert_eq!(upstream.count(), 3);
    payshim.stop().await;
}
