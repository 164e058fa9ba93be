//! The payment pipeline end to end (issue 3): `POST /v2/orders/{uuid}/payments` through a
//! real payshim (in process, TLS, HTTP/1.1 and HTTP/2) to the upstream double.
//!
//! Table-driven: every valid brand is forwarded as the canonical body; every invalid request
//! is refused with the right status and one error entry per bad field (`source`), its
//! response never contains the PAN or the CVV, and the upstream receives nothing. The unit
//! tables of the parser itself are in src/payment/tests.rs; these check the wiring.

use crate::support;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{Method, Request};
use serde_json::{Value, json};
use sha2::Sha256;
use tempfile::TempDir;

use support::cards::{
    self, AMEX, BRANDS, BrandSpec, DINERS, DISCOVER, JCB, MASTERCARD, UNIONPAY, VISA, find_pans,
    grouped, luhn_broken, pan, pan_of_len, previous_month, utc_year_month,
};
use support::payshim::{AUDIT_KEY, ORDER, Payshim, STOREFRONT_KEY, UPSTREAM_TOKEN, base_config};
use support::{HttpVersion, Recorded, Reply, TestPki, TestResponse, Upstream, handler};

const VERSIONS: [HttpVersion; 2] = [HttpVersion::Http1, HttpVersion::Http2];

/// What the double answers to payments: deliberately not serde_json's canonical form, so
/// only an unchanged body compares equal.
const UPSTREAM_ANSWER: &str = r#"{ "data": { "type": "transaction", "id": "5e1d2c3b-4a59-4687-9a1b-2c3d4e5f6a7b", "gateway": "card_connect", "status": "complete", "amount": 4999 } }"#;

fn payments_path() -> String {
    format!("/v2/orders/{ORDER}/payments")
}

/// One test's world: upstream double (answering `UPSTREAM_ANSWER` with 201) and payshim.
struct World {
    _pki: TestPki,
    upstream: Upstream,
    audit: TempDir,
    payshim: Option<Payshim>,
}

impl World {
    async fn start() -> World {
        let pki = TestPki::new();
        let upstream = Upstream::start(
            &pki,
            handler(|_| Reply::Respond {
                status: 201,
                headers: vec![("content-type".into(), "application/json".into())],
                body: UPSTREAM_ANSWER.as_bytes().to_vec(),
            }),
        )
        .await;
        let audit = tempfile::tempdir().expect("audit dir");
        let payshim = Payshim::start(&base_config(&pki, &upstream.url(), audit.path())).await;
        World {
            _pki: pki,
            upstream,
            audit,
            payshim: Some(payshim),
        }
    }

    fn payshim(&self) -> &Payshim {
        self.payshim.as_ref().expect("payshim running")
    }

    /// Stops payshim (which writes every queued audit record).
    async fn stop(&mut self) {
        self.payshim.take().expect("payshim running").stop().await;
    }

    /// POST `path` with the storefront key (unless `auth` says otherwise) and `content_type`.
    async fn post_with(
        &self,
        version: HttpVersion,
        path: &str,
        content_type: Option<&str>,
        auth: Option<&str>,
        body: &str,
    ) -> TestResponse {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(self.payshim().url(path));
        if let Some(ct) = content_type {
            builder = builder.header("content-type", ct);
        }
        if let Some(auth) = auth {
            builder = builder.header("authorization", auth);
        }
        let req = builder
            .body(Bytes::copy_from_slice(body.as_bytes()))
            .expect("build request");
        tokio::time::timeout(
            Duration::from_secs(15),
            self.payshim().client(version).send(req),
        )
        .await
        .expect("payshim answered within 15 s")
        .unwrap_or_else(|e| panic!("request failed: {e}"))
    }

    /// A JSON payment POST with the storefront key.
    async fn pay(&self, version: HttpVersion, body: &str) -> TestResponse {
        self.post_with(
            version,
            &payments_path(),
            Some("application/json"),
            Some(&format!("Bearer {STOREFRONT_KEY}")),
            body,
        )
        .await
    }

    /// The payment and transaction records written so far (parsed lines); the system
    /// records (start, stop), which have no request id, are left out.
    fn audit_records(&self) -> Vec<Value> {
        let text = payshim::audit::read_records(&self.audit.path().join("payshim.jsonl"))
            .unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("audit line is JSON"))
            .filter(|r| r.get("request_id").is_some())
            .collect()
    }
}

/// A raw-card payment body.
fn card_body(number: &str, cvv: &str, month: &str, year: &str) -> Value {
    json!({
        "data": {
            "gateway": "card_connect",
            "method": "purchase",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "number": number,
            "month": month,
            "year": year,
            "verification_value": cvv,
        }
    })
}

/// `body` with `data.<field>` set to `value`, or removed (`None`).
fn with(mut body: Value, field: &str, value: Option<Value>) -> Value {
    let data = body["data"].as_object_mut().expect("data object");
    match value {
        Some(v) => {
            data.insert(field.to_string(), v);
        }
        None => {
            data.remove(field);
        }
    }
    body
}

/// A year in which a card is certainly valid.
fn valid_year() -> String {
    (utc_year_month().0 + 3).to_string()
}

/// payshim's own refusal: `status`, JSON, `X-Request-Id`, one entry per expected source (the
/// same multiset; an empty `sources` means exactly one entry without `source`), each entry
/// with that status, a title, a detail and the request id. The body contains none of
/// `secrets` (plain, nor spaced/dashed when it is a number).
fn assert_refused(
    case: &str,
    resp: &TestResponse,
    status: u16,
    sources: &[&str],
    secrets: &[&str],
) {
    let body = resp.text();
    assert_eq!(resp.status, status, "{case}: body {body}");
    let content_type = resp.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{case}: content-type {content_type:?}"
    );
    let request_id = resp
        .header("x-request-id")
        .unwrap_or_else(|| panic!("{case}: no x-request-id"));
    let json = resp.json();
    let errors = json["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{case}: no errors array: {body}"));
    for entry in errors {
        assert_eq!(entry["status"], status, "{case}: {body}");
        assert!(
            entry["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{case}: {body}"
        );
        assert!(
            entry["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{case}: {body}"
        );
        assert_eq!(
            entry["request_id"].as_str(),
            Some(request_id.as_str()),
            "{case}: {body}"
        );
    }
    if sources.is_empty() {
        assert_eq!(errors.len(), 1, "{case}: {body}");
        assert!(errors[0].get("source").is_none(), "{case}: {body}");
    } else {
        let mut got: Vec<&str> = errors
            .iter()
            .map(|e| {
                e["source"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{case}: entry without source: {body}"))
            })
            .collect();
        let mut want = sources.to_vec();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "{case}: sources; body {body}");
    }
    assert_no_secrets(case, &resp.body, secrets);
}

/// `text` with every UUID (request ids, transaction ids) replaced by `<uuid>`, so that a
/// short secret such as a CVV is not "found" among a UUID's random hex digits.
fn without_uuids(text: &str) -> String {
    let bytes = text.as_bytes();
    let is_uuid = |w: &[u8]| {
        w.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
    };
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes.len() - i >= 36 && is_uuid(&bytes[i..i + 36]) {
            out.push_str("<uuid>");
            i += 36;
        } else {
            let c = text[i..].chars().next().expect("char boundary");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// None of `secrets` in `bytes`: as written (UUIDs aside), and numbers of 12+ digits also
/// spaced or dashed.
fn assert_no_secrets(case: &str, bytes: &[u8], secrets: &[&str]) {
    let text = without_uuids(&String::from_utf8_lossy(bytes));
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "{case}: {secret:?} echoed in the response: {text}"
        );
    }
    let numbers: HashSet<String> = secrets
        .iter()
        .filter(|s| s.len() >= 12 && s.bytes().all(|b| b.is_ascii_digit()))
        .map(|s| s.to_string())
        .collect();
    let found = find_pans(bytes, &numbers);
    assert!(
        found.is_empty(),
        "{case}: card number {found:?} in the response: {text}"
    );
}

/// An invalid request: its body, and what payshim must answer.
struct Bad {
    name: String,
    body: String,
    sources: Vec<&'static str>,
    /// Values that must not come back (PANs, CVVs, other submitted values).
    secrets: Vec<String>,
}

fn bad(name: &str, body: impl Into<String>, sources: &[&'static str], secrets: &[&str]) -> Bad {
    Bad {
        name: name.to_string(),
        body: body.into(),
        sources: sources.to_vec(),
        secrets: secrets.iter().map(|s| s.to_string()).collect(),
    }
}

/// Every rule of the payment parser (src/payment), broken once (some several at a time).
fn invalid_cases() -> Vec<Bad> {
    let year = valid_year();
    let visa = pan(VISA, 11);
    let amex = pan(AMEX, 12);
    let ok = || card_body(&visa, "737", "7", &year);
    let s = |v: Value| v.to_string();
    let long_name = "N".repeat(101);
    let far_year = (utc_year_month().0 + 21).to_string();
    let mut cases = vec![
        // The card number.
        bad(
            "Luhn failure",
            s(card_body(&luhn_broken(&visa), "737", "7", &year)),
            &["data.number"],
            &[&luhn_broken(&visa), "737"],
        ),
        bad(
            "unknown brand (Luhn-valid)",
            s(card_body("1234567812345670", "737", "7", &year)),
            &["data.number"],
            &["1234567812345670", "737"],
        ),
        bad(
            "11 digits",
            s(card_body(
                &cards::luhn_complete("4111111111"),
                "737",
                "7",
                &year,
            )),
            &["data.number"],
            &["737"],
        ),
        bad(
            "20 digits",
            s(card_body(
                &cards::luhn_complete("4111111111111111111"),
                "737",
                "7",
                &year,
            )),
            &["data.number"],
            &[&cards::luhn_complete("4111111111111111111"), "737"],
        ),
        bad(
            "spaces in the number",
            s(card_body(&grouped(&visa, ' '), "737", "7", &year)),
            &["data.number"],
            &[&visa, "737"],
        ),
        bad(
            "dashes in the number",
            s(card_body(&grouped(&visa, '-'), "737", "7", &year)),
            &["data.number"],
            &[&visa, "737"],
        ),
        bad(
            "fullwidth digits in the number",
            s(card_body(
                "４１１１１１１１１１１１１１１１",
                "737",
                "7",
                &year,
            )),
            &["data.number"],
            &["４１１１１１１１１１１１１１１１", "737"],
        ),
        bad(
            "Arabic-Indic digits in the number",
            s(card_body("٤١١١١١١١١١١١١١١١", "737", "7", &year)),
            &["data.number"],
            &["٤١١١١١١١١١١١١١١١", "737"],
        ),
        bad(
            "Devanagari digits in the CVV",
            s(card_body(&visa, "७३७", "7", &year)),
            &["data.verification_value"],
            &[&visa, "७३७"],
        ),
        bad(
            "Arabic-Indic digits in the month",
            s(card_body(&visa, "737", "٠٧", &year)),
            &["data.month"],
            &[&visa, "737"],
        ),
        bad(
            "fullwidth digits in the year",
            s(card_body(&visa, "737", "7", "２０３１")),
            &["data.year"],
            &[&visa, "737"],
        ),
        // Expiry fields (the expired card is in `expiry_is_decided_at_the_utc_month_boundary`).
        bad(
            "month 13",
            s(card_body(&visa, "737", "13", &year)),
            &["data.month"],
            &[&visa, "737"],
        ),
        bad(
            "month 0",
            s(card_body(&visa, "737", "0", &year)),
            &["data.month"],
            &[&visa, "737"],
        ),
        bad(
            "month 007",
            s(card_body(&visa, "737", "007", &year)),
            &["data.month"],
            &[&visa, "737"],
        ),
        bad(
            "two-digit year",
            s(card_body(&visa, "737", "7", "31")),
            &["data.year"],
            &[&visa, "737"],
        ),
        bad(
            "year more than 20 years ahead",
            s(card_body(&visa, "737", "7", &far_year)),
            &["data.year"],
            &[&visa, "737"],
        ),
        // CVV per brand.
        bad(
            "Amex with a 3-digit CVV",
            s(card_body(&amex, "737", "7", &year)),
            &["data.verification_value"],
            &[&amex, "737"],
        ),
        bad(
            "Visa with a 4-digit CVV",
            s(card_body(&visa, "7373", "7", &year)),
            &["data.verification_value"],
            &[&visa, "7373"],
        ),
        bad(
            "Mastercard with a 4-digit CVV",
            s(card_body(&pan(MASTERCARD, 5), "7373", "7", &year)),
            &["data.verification_value"],
            &[&pan(MASTERCARD, 5), "7373"],
        ),
        bad(
            "2-digit CVV",
            s(card_body(&visa, "73", "7", &year)),
            &["data.verification_value"],
            &[&visa],
        ),
        bad(
            "5-digit CVV on Amex",
            s(card_body(&amex, "73737", "7", &year)),
            &["data.verification_value"],
            &[&amex, "73737"],
        ),
        bad(
            "letters in the CVV",
            s(card_body(&visa, "7a7", "7", &year)),
            &["data.verification_value"],
            &[&visa, "7a7"],
        ),
        // Names.
        bad(
            "empty first name",
            s(with(ok(), "first_name", Some(json!("")))),
            &["data.first_name"],
            &[&visa, "737"],
        ),
        bad(
            "101-character last name",
            s(with(ok(), "last_name", Some(json!(long_name)))),
            &["data.last_name"],
            &[&visa, "737", &long_name],
        ),
        bad(
            "control character (BEL) in the first name",
            s(with(ok(), "first_name", Some(json!("Ad\u{7}a")))),
            &["data.first_name"],
            &[&visa, "737"],
        ),
        bad(
            "newline in the last name",
            s(with(ok(), "last_name", Some(json!("Love\nlace")))),
            &["data.last_name"],
            &[&visa, "737"],
        ),
        bad(
            "whitespace-only first name",
            s(with(ok(), "first_name", Some(json!("   ")))),
            &["data.first_name"],
            &[&visa, "737"],
        ),
        // Wrong JSON types.
        bad(
            "number as a JSON number",
            s(with(ok(), "number", Some(json!(4111111111111111u64)))),
            &["data.number"],
            &["4111111111111111", "737"],
        ),
        bad(
            "CVV as a JSON number",
            s(with(ok(), "verification_value", Some(json!(737)))),
            &["data.verification_value"],
            &[&visa, "737"],
        ),
        bad(
            "month as a JSON number",
            s(with(ok(), "month", Some(json!(7)))),
            &["data.month"],
            &[&visa, "737"],
        ),
        bad(
            "year as a boolean",
            s(with(ok(), "year", Some(json!(true)))),
            &["data.year"],
            &[&visa, "737"],
        ),
        bad(
            "first name null",
            s(with(ok(), "first_name", Some(Value::Null))),
            &["data.first_name"],
            &[&visa, "737"],
        ),
        bad(
            "number as an array of strings",
            s(with(ok(), "number", Some(json!([visa])))),
            &["data.number"],
            &[&visa, "737"],
        ),
        bad(
            "gateway as an object",
            s(with(ok(), "gateway", Some(json!({"name": "card_connect"})))),
            &["data.gateway"],
            &[&visa, "737"],
        ),
        bad(
            "data as an array",
            s(json!({"data": [visa, "737"]})),
            &["data"],
            &[&visa, "737"],
        ),
        bad(
            "data as a string",
            s(json!({"data": visa})),
            &["data"],
            &[&visa],
        ),
        bad(
            "body as an array",
            s(json!([ok()])),
            &["body"],
            &[&visa, "737"],
        ),
        bad("body as a string", s(json!(visa)), &["body"], &[&visa]),
        // Unknown fields.
        bad(
            "unknown field in data",
            s(with(ok(), "note", Some(json!("deliver at noon")))),
            &["data.note"],
            &[&visa, "737", "deliver at noon"],
        ),
        bad(
            "unknown top-level field",
            {
                let mut v = ok();
                v["meta"] = json!({"x": 1});
                s(v)
            },
            &["meta"],
            &[&visa, "737"],
        ),
        bad(
            "the PAN as an unknown key (not echoed as a source)",
            s(with(ok(), &pan(DISCOVER, 3), Some(json!("x")))),
            &["data"],
            &[&visa, "737", &pan(DISCOVER, 3)],
        ),
        // Duplicate fields (raw text: serde_json::Value would keep only one).
        bad(
            "duplicate number",
            format!(
                r#"{{"data":{{"gateway":"card_connect","method":"purchase","first_name":"Ada","last_name":"Lovelace","number":"{visa}","number":"{}","month":"7","year":"{year}","verification_value":"737"}}}}"#,
                pan(VISA, 12)
            ),
            &["data.number"],
            &[&visa, &pan(VISA, 12), "737"],
        ),
        bad(
            "duplicate verification_value",
            format!(
                r#"{{"data":{{"gateway":"card_connect","method":"purchase","first_name":"Ada","last_name":"Lovelace","number":"{visa}","month":"7","year":"{year}","verification_value":"737","verification_value":"738"}}}}"#
            ),
            &["data.verification_value"],
            &[&visa, "737", "738"],
        ),
        bad(
            "duplicate number, the second key spelled with a JSON escape",
            format!(
                r#"{{"data":{{"gateway":"card_connect","method":"purchase","first_name":"Ada","last_name":"Lovelace","number":"{visa}","n\u0075mber":"{}","month":"7","year":"{year}","verification_value":"737"}}}}"#,
                pan(VISA, 13)
            ),
            &["data.number"],
            &[&visa, &pan(VISA, 13), "737"],
        ),
        bad(
            "duplicate data",
            format!(r#"{{"data":{},"data":{}}}"#, ok()["data"], ok()["data"]),
            &["data"],
            &[&visa, "737"],
        ),
        // Malformed JSON.
        bad(
            "truncated JSON",
            {
                let text = s(ok());
                text[..text.len() - 10].to_string()
            },
            &["body"],
            &[&visa, "737"],
        ),
        bad(
            "trailing comma",
            s(ok()).replacen('}', ",}", 1),
            &["body"],
            &[&visa, "737"],
        ),
        bad(
            "garbage after the object",
            format!("{} {visa}", s(ok())),
            &["body"],
            &[&visa, "737"],
        ),
        bad("empty body", "", &["body"], &[]),
        bad(
            "byte order mark before the object",
            format!("\u{feff}{}", s(ok())),
            &["body"],
            &[&visa, "737"],
        ),
        bad(
            "unknown field nested 4000 levels deep",
            {
                let text = s(ok());
                let deep = format!("{}{}", "[".repeat(4000), "]".repeat(4000));
                let nested =
                    text.replacen("\"gateway\":", &format!("\"deep\":{deep},\"gateway\":"), 1);
                assert_ne!(nested, text);
                nested
            },
            &["body"],
            &[&visa, "737"],
        ),
        bad(
            "not JSON at all",
            format!("number={visa}&cvv=737"),
            &["body"],
            &[&visa, "737"],
        ),
        // Missing fields, gateway, method.
        bad(
            "no number",
            s(with(ok(), "number", None)),
            &["data.number"],
            &["737"],
        ),
        bad(
            "no CVV",
            s(with(ok(), "verification_value", None)),
            &["data.verification_value"],
            &[&visa],
        ),
        bad(
            "empty data: without a gateway nothing else is checked",
            s(json!({"data": {}})),
            &["data.gateway", "data.method"],
            &[],
        ),
        bad("no data", s(json!({})), &["data"], &[]),
        bad(
            "gateway not allowed",
            s(with(ok(), "gateway", Some(json!("stripe")))),
            &["data.gateway"],
            &[&visa, "737", "stripe"],
        ),
        bad(
            "method refund",
            s(with(ok(), "method", Some(json!("refund")))),
            &["data.method"],
            &[&visa, "737"],
        ),
        bad(
            "method in capitals",
            s(with(ok(), "method", Some(json!("Purchase")))),
            &["data.method"],
            &[&visa, "737", "Purchase"],
        ),
        // Several bad fields: one entry each.
        bad(
            "Luhn failure, bad month and bad CVV together",
            s(with(
                card_body(&luhn_broken(&visa), "73", "13", &year),
                "first_name",
                Some(json!("")),
            )),
            &[
                "data.number",
                "data.month",
                "data.verification_value",
                "data.first_name",
            ],
            &[&luhn_broken(&visa)],
        ),
        // The token form.
        bad(
            "token and card fields together",
            s(with(ok(), "payment", Some(json!("acct1|prof1")))),
            &["data"],
            &[&visa, "737", "acct1|prof1"],
        ),
        bad(
            "token without a profile",
            s(
                json!({"data": {"gateway": "card_connect", "method": "purchase", "payment": "acct77|"}}),
            ),
            &["data.payment"],
            &["acct77|"],
        ),
        bad(
            "token with three parts",
            s(
                json!({"data": {"gateway": "card_connect", "method": "purchase", "payment": "a1|b2|c3"}}),
            ),
            &["data.payment"],
            &["a1|b2|c3"],
        ),
        bad(
            "token without a pipe",
            s(
                json!({"data": {"gateway": "card_connect", "method": "purchase", "payment": "acct7prof"}}),
            ),
            &["data.payment"],
            &["acct7prof"],
        ),
        bad(
            "token as a JSON number",
            s(json!({"data": {"gateway": "card_connect", "method": "purchase", "payment": 12345}})),
            &["data.payment"],
            &[],
        ),
        bad(
            "a PAN as the token",
            s(
                json!({"data": {"gateway": "card_connect", "method": "purchase", "payment": format!("{visa}-{visa}")}}),
            ),
            &["data.payment"],
            &[&visa],
        ),
    ];
    // Wrong length for the brand: Luhn-valid, right prefix, a length the brand never issues.
    for (brand, len) in [
        (AMEX, 16),
        (AMEX, 14),
        (VISA, 15),
        (VISA, 14),
        (MASTERCARD, 15),
        (MASTERCARD, 19),
        (DINERS, 13),
        (JCB, 15),
        (DISCOVER, 15),
        (UNIONPAY, 15),
    ] {
        let number = pan_of_len(brand, len, 21);
        let cvv = if brand.cvv_len == 4 { "7373" } else { "737" };
        cases.push(Bad {
            name: format!("{} with {len} digits", brand.name),
            body: s(card_body(&number, cvv, "7", &year)),
            sources: vec!["data.number"],
            secrets: vec![number, cvv.to_string()],
        });
    }
    cases
}

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
async fn invalid_payments_are_400_per_field_and_never_forwarded() {
    let mut world = World::start().await;
    let cases = invalid_cases();
    for case in &cases {
        for version in VERSIONS {
            let resp = world.pay(version, &case.body).await;
            let name = format!("{} over {version:?}", case.name);
            let secrets: Vec<&str> = case.secrets.iter().map(String::as_str).collect();
            assert_refused(&name, &resp, 400, &case.sources, &secrets);
            assert_eq!(
                world.upstream.count(),
                0,
                "{name}: an invalid payment reached the upstream: {:?}",
                world.upstream.requests()
            );
        }
    }
    // Each refusal is audited as payment.rejected (written after the answer: wait for it).
    world.stop().await;
    let records = world.audit_records();
    assert_eq!(records.len(), cases.len() * 2);
    assert!(
        records
            .iter()
            .all(|r| r["event"] == "payment.rejected" && r["outcome"] == "rejected"),
        "{records:?}"
    );
}

#[tokio::test]
async fn expiry_is_decided_at_the_utc_month_boundary() {
    let mut world = World::start().await;
    let visa = pan(VISA, 40);
    for version in VERSIONS {
        // Computed per request so a month boundary between two requests cannot flake.
        let now = utc_year_month();
        let (year, month) = previous_month(now);
        let resp = world
            .pay(
                version,
                &card_body(&visa, "737", &month.to_string(), &year.to_string()).to_string(),
            )
            .await;
        if utc_year_month() == now {
            assert_refused("expired last month", &resp, 400, &["data.year"], &[&visa]);
        }
        assert_eq!(world.upstream.count(), 0);
    }
    for (i, version) in VERSIONS.into_iter().enumerate() {
        let (year, month) = utc_year_month();
        let resp = world
            .pay(
                version,
                &card_body(&visa, "737", &format!("{month:02}"), &year.to_string()).to_string(),
            )
            .await;
        if utc_year_month() == (year, month) {
            assert_eq!(resp.status, 201, "expiring this month: {}", resp.text());
            assert_eq!(world.upstream.count(), i + 1);
            assert_eq!(
                world.upstream.requests()[i].json()["data"]["month"],
                format!("{month:02}")
            );
        }
    }
    world.stop().await;
}

#[tokio::test]
async fn refusals_before_parsing_never_reach_the_upstream() {
    let mut world = World::start().await;
    let visa = pan(VISA, 50);
    let valid = card_body(&visa, "737", "7", &valid_year()).to_string();
    let bearer = format!("Bearer {STOREFRONT_KEY}");
    let path = payments_path();
    // 17 KiB: over the 16 KiB limits.max_body.
    let oversized = with(
        card_body(&visa, "737", "7", &valid_year()),
        "first_name",
        Some(json!("A".repeat(17 * 1024))),
    )
    .to_string();
    struct Case<'a> {
        name: &'a str,
        path: String,
        content_type: Option<&'a str>,
        auth: Option<&'a str>,
        body: &'a str,
        status: u16,
        sources: &'a [&'a str],
    }
    let case = |name, path: &str, content_type, auth, body, status| Case {
        name,
        path: path.to_string(),
        content_type,
        auth,
        body,
        status,
        sources: &[],
    };
    let json = Some("application/json");
    // The payment route with something else than a UUID where the order id goes: 400
    // naming the path segment (never echoing it: it may be a card number).
    let bad_order = |name, path: String| Case {
        name,
        path,
        content_type: json,
        auth: Some(&bearer),
        body: &valid,
        status: 400,
        sources: &["path.order_id"],
    };
    let cases = [
        case(
            "body over max_body",
            &path,
            json,
            Some(&bearer),
            &oversized,
            413,
        ),
        case(
            "text/plain",
            &path,
            Some("text/plain"),
            Some(&bearer),
            &valid,
            415,
        ),
        case("no content type", &path, None, Some(&bearer), &valid, 415),
        case(
            "form-encoded",
            &path,
            Some("application/x-www-form-urlencoded"),
            Some(&bearer),
            &valid,
            415,
        ),
        bad_order(
            "order id not a UUID",
            "/v2/orders/not-a-uuid/payments".to_string(),
        ),
        bad_order("order id a number", "/v2/orders/12345/payments".to_string()),
        bad_order("order id a PAN", format!("/v2/orders/{visa}/payments")),
        bad_order(
            "order id UUID without dashes",
            format!("/v2/orders/{}/payments", ORDER.replace('-', "")),
        ),
        bad_order(
            "order id UUID with a suffix",
            format!("/v2/orders/{ORDER}0/payments"),
        ),
        case(
            "trailing slash",
            &format!("{path}/"),
            json,
            Some(&bearer),
            &valid,
            404,
        ),
        case("no credential", &path, json, None, &valid, 401),
        case(
            "wrong storefront key",
            &path,
            json,
            Some("Bearer sf-web-eu-wrong-key-000000000000"),
            &valid,
            401,
        ),
    ];
    for case in &cases {
        for version in VERSIONS {
            let name = format!("{} over {version:?}", case.name);
            let resp = world
                .post_with(version, &case.path, case.content_type, case.auth, case.body)
                .await;
            assert_refused(&name, &resp, case.status, case.sources, &[&visa, "737"]);
            assert_eq!(
                world.upstream.count(),
                0,
                "{name}: reached the upstream: {:?}",
                world.upstream.requests()
            );
        }
    }
    // A vnd.api+json type and a charset are JSON, and a body just under the limit is read.
    let resp = world
        .post_with(
            HttpVersion::Http1,
            &path,
            Some("application/json; charset=utf-8"),
            Some(&bearer),
            &valid,
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(world.upstream.count(), 1);
    world.stop().await;
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
