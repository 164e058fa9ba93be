//! What valid payments send upstream and what comes back: every brand (and the token form)
//! forwarded as the canonical body with the store's token, the card summary in the audit
//! log, the upstream's answer returned byte for byte with its status and headers, and no
//! header that described the client's own body bytes.

use crate::support;

use std::collections::HashSet;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{Method, Request};
use serde_json::{Value, json};
use sha2::Sha256;

use support::cards::{
    self, AMEX, BRANDS, BrandSpec, DINERS, DISCOVER, JCB, MASTERCARD, UNIONPAY, VISA, find_pans,
    pan, pan_of_len, utc_year_month,
};
use support::payshim::{AUDIT_KEY, ORDER, STOREFRONT_KEY, UPSTREAM_TOKEN};
use support::{HttpVersion, Recorded, Reply, handler};

use super::{
    UPSTREAM_ANSWER, VERSIONS, World, assert_no_secrets, card_body, payments_path, valid_year,
};

#[tokio::test]
async fn every_brand_is_forwarded_as_the_canonical_body() {
    let mut world = World::start().await;
    let (this_year, _) = utc_year_month();
    let year = (this_year + 2).to_string();
    // (number, cvv, brand): every prefix of every brand, plus well-known test numbers and the
    // other lengths a brand issues.
    let mut cards: Vec<(String, String, BrandSpec)> = Vec::new();
    for brand in BRANDS {
        for n in 0..brand.prefixes.len() as u64 {
            let cvv = if brand.cvv_len == 4 { "7373" } else { "737" };
            cards.push((pan(brand, n), cvv.into(), brand));
        }
    }
    for (number, brand) in [
        ("4111111111111111", VISA),
        ("4222222222222", VISA),
        ("5555555555554444", MASTERCARD),
        ("5105105105105100", MASTERCARD),
        ("2223003122003222", MASTERCARD),
        ("378282246310005", AMEX),
        ("371449635398431", AMEX),
        ("6011111111111117", DISCOVER),
        ("3530111333300000", JCB),
        ("3566002020360505", JCB),
        ("36227206271667", DINERS),
        ("30569309025904", DINERS),
    ] {
        let cvv = if brand.cvv_len == 4 { "1234" } else { "123" };
        cards.push((number.into(), cvv.into(), brand));
    }
    cards.push((pan_of_len(VISA, 19, 5), "321".into(), VISA));
    cards.push((pan_of_len(UNIONPAY, 16, 5), "321".into(), UNIONPAY));
    cards.push((pan_of_len(DINERS, 16, 5), "321".into(), DINERS));
    cards.push((pan_of_len(DISCOVER, 19, 5), "321".into(), DISCOVER));

    let months = ["7", "07", "1", "12"];
    for (i, (number, cvv, brand)) in cards.iter().enumerate() {
        let version = VERSIONS[i % 2];
        let month = months[i % months.len()];
        let (first, last) = match i % 3 {
            0 => ("Zoë".to_string(), "N".repeat(100)),
            1 => ("A".to_string(), "O'Brien-Smith".to_string()),
            _ => ("Ada".to_string(), "Lovelace".to_string()),
        };
        // Not canonical on purpose: pretty-printed, keys in another order.
        let sent = format!(
            "{{\n  \"data\" : {{\n    \"verification_value\": \"{cvv}\",\n    \"year\": \"{year}\",\n    \"month\": \"{month}\",\n    \"number\": \"{number}\",\n    \"last_name\": {},\n    \"first_name\": {},\n    \"method\": \"purchase\",\n    \"gateway\": \"card_connect\"\n  }}\n}}\n",
            json!(last),
            json!(first)
        );
        let before = world.upstream.count();
        let resp = world.pay(version, &sent).await;
        let case = format!("{} {number} over {version:?}", brand.name);
        assert_eq!(resp.status, 201, "{case}: {}", resp.text());
        assert_eq!(
            resp.body.as_ref(),
            UPSTREAM_ANSWER.as_bytes(),
            "{case}: the upstream's answer must come back unchanged"
        );
        assert_eq!(world.upstream.count(), before + 1, "{case}");
        let got = &world.upstream.requests()[before];
        assert_forwarded_payment(&case, got);
        let canonical = json!({
            "data": {
                "gateway": "card_connect",
                "method": "purchase",
                "first_name": first,
                "last_name": last,
                "number": number,
                "month": format!("{:02}", month.parse::<u8>().unwrap()),
                "year": year,
                "verification_value": cvv,
            }
        });
        assert_eq!(got.json(), canonical, "{case}: the canonical body");
        let raw = String::from_utf8_lossy(&got.body);
        assert!(
            raw.contains(&format!(
                "\"month\":\"{:02}\"",
                month.parse::<u8>().unwrap()
            )),
            "{case}: month as two digits: {raw}"
        );
        assert!(
            !raw.contains('\n') && !raw.contains(": "),
            "{case}: re-serialized, not the client's bytes: {raw}"
        );
        assert_no_secrets(&case, &resp.body, &[number, cvv]);
    }

    // The audit log: one forwarded and one completed record per card, with the card summary
    // (brand, first six, last four, keyed fingerprint) and never the PAN or the CVV.
    world.stop().await;
    let records = world.audit_records();
    let forwarded: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "payment.forwarded")
        .collect();
    let completed = records
        .iter()
        .filter(|r| r["event"] == "payment.completed")
        .count();
    assert_eq!(forwarded.len(), cards.len());
    assert_eq!(completed, cards.len());
    for (record, (number, _, brand)) in forwarded.iter().zip(&cards) {
        let card = &record["card"];
        assert_eq!(card["brand"], brand.name, "{record}");
        assert_eq!(card["bin"], number[..6], "{record}");
        assert_eq!(card["last4"], number[number.len() - 4..], "{record}");
        assert_eq!(card["fingerprint"], fingerprint(number), "{record}");
        assert_eq!(
            card.as_object().unwrap().len(),
            4,
            "only the summary: {record}"
        );
        assert_eq!(record["order_id"], ORDER);
        assert_eq!(record["client_id"], "web-eu");
    }
    let audit_text = std::fs::read(world.audit.path().join("payshim.jsonl")).unwrap();
    let pans: HashSet<String> = cards.iter().map(|c| c.0.clone()).collect();
    assert!(
        find_pans(&audit_text, &pans).is_empty(),
        "a PAN in the audit log"
    );
    let cvvs: HashSet<String> = cards.iter().map(|c| c.1.clone()).collect();
    assert!(
        cards::find_cvvs(&audit_text, &cvvs).is_empty(),
        "a CVV in the audit log"
    );
    assert!(!String::from_utf8_lossy(&audit_text).contains("verification_value"));
}

/// What every forwarded payment looks like upstream: the payment path, the store's token,
/// JSON, and no storefront key anywhere.
fn assert_forwarded_payment(case: &str, got: &Recorded) {
    assert_eq!(got.method, Method::POST, "{case}");
    assert_eq!(got.path, payments_path(), "{case}");
    assert_eq!(
        got.header("authorization"),
        Some(format!("Bearer {UPSTREAM_TOKEN}")),
        "{case}: the upstream gets the store's token"
    );
    assert_eq!(
        got.header("content-type").as_deref(),
        Some("application/json"),
        "{case}"
    );
    for (name, value) in &got.headers {
        assert!(
            !String::from_utf8_lossy(value.as_bytes()).contains(STOREFRONT_KEY),
            "{case}: storefront key forwarded in {name}"
        );
    }
}

/// Hex HMAC-SHA-256(audit key, PAN): the audit record's card fingerprint.
fn fingerprint(pan: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(AUDIT_KEY.as_bytes()).unwrap();
    mac.update(pan.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn token_form_is_forwarded_canonically() {
    let mut world = World::start().await;
    let long_part = "a1B2".repeat(16);
    let tokens = [
        ("acct123|profile456".to_string(), "purchase"),
        (format!("{long_part}|{long_part}"), "authorize"),
        ("1|Z".to_string(), "capture"),
    ];
    for (i, (token, method)) in tokens.iter().enumerate() {
        let version = VERSIONS[i % 2];
        let sent = format!(
            r#"{{ "data": {{ "payment": "{token}", "method": "{method}", "gateway": "card_connect" }} }}"#
        );
        let resp = world.pay(version, &sent).await;
        let case = format!("token {token} over {version:?}");
        assert_eq!(resp.status, 201, "{case}: {}", resp.text());
        assert_eq!(resp.body.as_ref(), UPSTREAM_ANSWER.as_bytes(), "{case}");
        assert_eq!(world.upstream.count(), i + 1, "{case}");
        let got = &world.upstream.requests()[i];
        assert_forwarded_payment(&case, got);
        assert_eq!(
            got.json(),
            json!({"data": {"gateway": "card_connect", "method": method, "payment": token}}),
            "{case}"
        );
        assert_ne!(
            got.body.as_ref(),
            sent.as_bytes(),
            "{case}: not the raw bytes"
        );
    }
    world.stop().await;
    // Forwarded and completed, with no card summary.
    let records = world.audit_records();
    assert_eq!(records.len(), tokens.len() * 2, "{records:?}");
    assert!(
        records.iter().all(|r| r.get("card").is_none()),
        "{records:?}"
    );
}

#[tokio::test]
async fn the_upstream_answer_comes_back_unchanged() {
    let mut world = World::start().await;
    let visa = pan(VISA, 60);
    let body = card_body(&visa, "737", "7", &valid_year()).to_string();
    // (status, body, the audit outcome of payment.completed)
    let answers: [(u16, &str, &str); 5] = [
        (
            422,
            r#"{"errors":[ {"status":422,"title":"Payment failed","detail":"Card declined by the issuer"} ]}"#,
            "declined",
        ),
        (
            402,
            "{\"errors\":[{\"status\":402,\"title\":\"Payment Required\"}]}\n",
            "declined",
        ),
        (
            201,
            r#"{ "data": { "type": "transaction", "status": "failed", "id": "tx-1" } }"#,
            "declined",
        ),
        (200, "  {\"data\":{\"id\":\"x\"}}  ", "approved"),
        (
            500,
            r#"{"errors":[{"status":500,"title":"Internal Server Error"}]}"#,
            "upstream_error",
        ),
    ];
    for (i, (status, answer, _)) in answers.iter().enumerate() {
        let (status, answer) = (*status, answer.to_string());
        world.upstream.set_handler(handler(move |_| Reply::Respond {
            status,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-upstream-note".into(), "note-7".into()),
            ],
            body: answer.as_bytes().to_vec(),
        }));
        for (j, version) in VERSIONS.into_iter().enumerate() {
            let case = format!("upstream {status} over {version:?}");
            let resp = world.pay(version, &body).await;
            assert_eq!(resp.status, status, "{case}: {}", resp.text());
            assert_eq!(
                resp.body.as_ref(),
                answers[i].1.as_bytes(),
                "{case}: the body must be byte for byte the upstream's"
            );
            assert_eq!(
                resp.header("content-type").as_deref(),
                Some("application/json"),
                "{case}"
            );
            assert_eq!(
                resp.header("x-upstream-note").as_deref(),
                Some("note-7"),
                "{case}: the upstream's headers come back"
            );
            assert!(resp.header("x-request-id").is_some(), "{case}");
            assert_eq!(world.upstream.count(), i * 2 + j + 1, "{case}: sent once");
            assert_forwarded_payment(&case, &world.upstream.requests()[i * 2 + j]);
        }
    }
    world.stop().await;
    let mut outcomes: Vec<(u64, String)> = world
        .audit_records()
        .into_iter()
        .filter(|r| r["event"] == "payment.completed")
        .map(|r| {
            (
                r["upstream_status"].as_u64().unwrap_or_default(),
                r["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let mut expected: Vec<(u64, String)> = answers
        .iter()
        .flat_map(|(status, _, outcome)| vec![(u64::from(*status), outcome.to_string()); 2])
        .collect();
    outcomes.sort();
    expected.sort();
    assert_eq!(outcomes, expected);
}

/// payshim sends its own canonical body, so headers describing the client's body bytes
/// (their encoding, their digest) must not travel with it.
#[tokio::test]
async fn headers_describing_the_client_body_are_not_forwarded_with_the_canonical_body() {
    let mut world = World::start().await;
    let body = card_body(&pan(VISA, 70), "737", "7", &valid_year()).to_string();
    let req = Request::builder()
        .method(Method::POST)
        .uri(world.payshim().url(&payments_path()))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {STOREFRONT_KEY}"))
        .header("content-encoding", "gzip")
        .header(
            "digest",
            "sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=",
        )
        .header("content-md5", "Q2hlY2sgSW50ZWdyaXR5IQ==")
        .body(Bytes::from(body))
        .unwrap();
    let resp = world
        .payshim()
        .client(HttpVersion::Http1)
        .send(req)
        .await
        .unwrap();
    // Either refused (the body was not gzip) or forwarded without the stale headers.
    if resp.status == 201 {
        let got = &world.upstream.requests()[0];
        for name in ["content-encoding", "digest", "content-md5"] {
            assert_eq!(
                got.header(name),
                None,
                "{name} forwarded with payshim's own (canonical, unencoded) body"
            );
        }
    } else {
        assert_eq!(world.upstream.count(), 0, "{}", resp.text());
    }
    world.stop().await;
}
