//! The payment pipeline end to end (issue 3): `POST /v2/orders/{uuid}/payments` through a
//! real payshim (in process, TLS, HTTP/1.1 and HTTP/2) to the upstream double.
//!
//! Table-driven: every valid brand is forwarded as the canonical body; every invalid request
//! is refused with the right status and one error entry per bad field (`source`), its
//! response never contains the PAN or the CVV, and the upstream receives nothing. The unit
//! tables of the parser itself are in src/payment/tests.rs; these check the wiring.
//!
//! One file per topic: `validation.rs` walks the table of invalid payments (its cases in
//! `invalid_cards.rs` and `invalid_bodies.rs`) and the expiry boundary, `refusals.rs` the
//! refusals before parsing, `forwarding.rs` what valid payments send upstream and what comes
//! back. This file holds their shared world and assertions.

mod forwarding;
mod invalid_bodies;
mod invalid_cards;
mod refusals;
mod validation;

use crate::support;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use serde_json::{Value, json};
use tempfile::TempDir;

use support::cards::{find_pans, utc_year_month};
use support::payshim::{ORDER, Payshim, STOREFRONT_KEY, base_config};
use support::{HttpVersion, Reply, TestPki, TestResponse, Upstream, handler};

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
