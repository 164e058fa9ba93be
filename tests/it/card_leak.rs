//! The card-data leak test (issue 3): the real binary at `trace` log
//! level takes a few hundred requests with distinct card numbers and CVVs of every brand
//! through every path (valid, each kind of invalid, bad credential, upstream 500, timeout
//! and reset, card data in unexpected places, card numbers where a token belongs, card
//! fields for a token-only gateway). Afterwards no card number (plain, spaced, dashed) and
//! no CVV next to its key may be found in stdout, stderr, any audit file or any response
//! received. The same search must find the card data where it belongs (in what the
//! upstream double received), so a broken search cannot pass.
//!
//! Search rules (`support::cards`): `find_pans` joins digit runs over single spaces or
//! dashes and looks up every 12-19 digit window, so plain, spaced and dashed forms are all
//! found; `find_cvvs` takes the value of every CVV-like key (`verification`, `cvv`, `cvc`,
//! `security_code`, case-insensitive): the digits that follow the key name and its
//! separators (quotes, `:`, `=`, spaces, backslashes) within 40 bytes. CVVs are
//! drawn distinct and never a status code or a year, so a match is a leak.

use crate::support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use serde_json::{Value, json};

use support::cards::{
    AMEX, BRANDS, Binary, BrandSpec, context, cvv_pool, find_cvvs, find_pans, grouped, luhn_broken,
    pan, previous_month, utc_year_month,
};
use support::payshim::{AUDIT_KEY, STOREFRONT_KEY, UPSTREAM_TOKEN, base_config, set_key};
use support::upstream::transaction;
use support::{HttpVersion, Reply, TestClient, TestPki, Upstream, handler};

/// The upstream double answers by order id.
const ORDER_OK: &str = "0a1b2c3d-0000-4000-8000-000000000201";
const ORDER_500: &str = "0a1b2c3d-0000-4000-8000-000000000500";
const ORDER_SLOW: &str = "0a1b2c3d-0000-4000-8000-000000000504";
const ORDER_RESET: &str = "0a1b2c3d-0000-4000-8000-000000000502";

/// What a request must get back.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Status(u16),
    /// The upstream reset the connection mid-answer: a 502, or a broken response.
    BrokenOr502,
}

/// One request of the run and the card data it carries.
struct Shot {
    kind: &'static str,
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
    expect: Expect,
    /// Reaches the upstream (so: payment.forwarded + payment.completed).
    forwarded: bool,
    /// Matches the payment route (so: audited; one record if not forwarded).
    payment_route: bool,
    /// Luhn-valid numbers it carries, anywhere (body, query, header, path).
    pans: Vec<String>,
    /// The PAN of its card fields, when the upstream must receive it.
    forwarded_pan: Option<String>,
    /// Luhn-invalid 12-19 digit numbers it carries.
    not_pans: Vec<String>,
    cvvs: Vec<String>,
    /// Cardholder last names (distinct, no digits): never logged either.
    names: Vec<String>,
}

/// Distinct card data on demand.
struct Gen {
    n: u64,
    cvv3: Box<dyn Iterator<Item = String>>,
    cvv4: Box<dyn Iterator<Item = String>>,
    names: u32,
}

impl Gen {
    fn new() -> Gen {
        Gen {
            n: 1_000,
            cvv3: Box::new(cvv_pool(3)),
            cvv4: Box::new(cvv_pool(4)),
            names: 0,
        }
    }

    fn pan(&mut self, brand: BrandSpec) -> String {
        self.n += 1;
        pan(brand, self.n)
    }

    fn cvv(&mut self, len: usize) -> String {
        let pool = if len == 3 {
            &mut self.cvv3
        } else {
            &mut self.cvv4
        };
        pool.next().expect("CVV pool large enough")
    }

    /// A last name made of letters only, distinct per call.
    fn name(&mut self) -> String {
        self.names += 1;
        let mut n = self.names;
        let mut s = String::from("Qx");
        while n > 0 {
            s.push((b'a' + (n % 26) as u8) as char);
            n /= 26;
        }
        s.push_str("ovelace");
        s
    }
}

fn payment_path(order: &str) -> String {
    format!("/v2/orders/{order}/payments")
}

fn card_data(name: &str, number: &str, month: &str, year: &str, cvv: &str) -> Value {
    json!({
        "gateway": "card_connect",
        "method": "purchase",
        "first_name": "Ada",
        "last_name": name,
        "number": number,
        "month": month,
        "year": year,
        "verification_value": cvv,
    })
}

/// Builds the whole run: (kind, count) per path, brands cycling, card data distinct.
fn plan() -> Vec<Shot> {
    let mut cards_gen = Gen::new();
    let year = (utc_year_month().0 + 3).to_string();
    let (expired_year, expired_month) = previous_month(utc_year_month());
    let json_headers = |auth: Option<&str>| {
        let mut h = vec![("content-type".to_string(), "application/json".to_string())];
        if let Some(a) = auth {
            h.push(("authorization".to_string(), a.to_string()));
        }
        h
    };
    let bearer = format!("Bearer {STOREFRONT_KEY}");
    let kinds: [(&str, usize); 27] = [
        ("valid", 70),
        ("upstream_500", 21),
        ("upstream_timeout", 14),
        ("upstream_reset", 14),
        ("luhn_invalid", 14),
        ("expired", 14),
        ("bad_cvv", 14),
        ("unknown_field", 14),
        ("wrong_type", 14),
        ("duplicate_field", 14),
        ("control_char_name", 7),
        ("malformed_json", 7),
        ("wrong_content_type", 7),
        ("oversized", 7),
        ("bad_credential", 14),
        ("missing_credential", 7),
        ("mixed_forms", 7),
        ("pan_in_query", 7),
        ("pan_in_unknown_field", 7),
        ("pan_as_json_key", 7),
        ("pan_in_header", 7),
        ("pan_in_unknown_route", 7),
        ("pan_as_order_id", 7),
        ("pan_as_token", 7),
        ("pan_in_token_option", 7),
        ("pan_in_token_name", 7),
        ("card_for_token_gateway", 7),
    ];
    let mut shots = Vec::new();
    let mut b = 0usize;
    for (kind, count) in kinds {
        for i in 0..count {
            let brand = BRANDS[b % BRANDS.len()];
            b += 1;
            let number = cards_gen.pan(brand);
            let cvv = cards_gen.cvv(brand.cvv_len);
            let name = cards_gen.name();
            let mut data = card_data(&name, &number, "7", &year, &cvv);
            let mut shot = Shot {
                kind,
                method: Method::POST,
                path: payment_path(ORDER_OK),
                headers: json_headers(Some(&bearer)),
                body: String::new(),
                expect: Expect::Status(400),
                forwarded: false,
                payment_route: true,
                pans: vec![number.clone()],
                forwarded_pan: None,
                not_pans: Vec::new(),
                cvvs: vec![cvv.clone()],
                names: vec![name.clone()],
            };
            match kind {
                "valid" | "upstream_500" | "upstream_timeout" | "upstream_reset" => {
                    let (order, expect) = match kind {
                        "valid" => (ORDER_OK, Expect::Status(201)),
                        "upstream_500" => (ORDER_500, Expect::Status(500)),
                        "upstream_timeout" => (ORDER_SLOW, Expect::Status(504)),
                        _ => (ORDER_RESET, Expect::BrokenOr502),
                    };
                    shot.path = payment_path(order);
                    shot.expect = expect;
                    shot.forwarded = true;
                    shot.forwarded_pan = Some(number.clone());
                }
                "luhn_invalid" => {
                    let broken = luhn_broken(&number);
                    data["number"] = json!(broken);
                    shot.pans.clear();
                    shot.not_pans.push(broken);
                }
                "expired" => {
                    data["month"] = json!(expired_month.to_string());
                    data["year"] = json!(expired_year.to_string());
                }
                "bad_cvv" => {
                    // The other length: 3 digits for Amex, 4 for the rest.
                    let wrong = cards_gen.cvv(if brand.name == AMEX.name { 3 } else { 4 });
                    data["verification_value"] = json!(wrong);
                    shot.cvvs.push(wrong);
                }
                "unknown_field" => data["note"] = json!("leave at the door"),
                "wrong_type" => data["month"] = json!(7),
                "duplicate_field" => {
                    // Two `number` keys, two valid PANs (raw text).
                    let second = cards_gen.pan(brand);
                    let text = data.to_string();
                    let dup = text.replacen(
                        "\"number\":",
                        &format!("\"number\":\"{second}\",\"number\":"),
                        1,
                    );
                    assert_ne!(dup, text);
                    shot.body = format!("{{\"data\":{dup}}}");
                    shot.pans.push(second);
                }
                "control_char_name" => data["first_name"] = json!("Ad\u{1b}a"),
                "malformed_json" => {
                    let text = json!({ "data": data }).to_string();
                    shot.body = text[..text.len() - 2].to_string();
                }
                "wrong_content_type" => {
                    shot.headers[0].1 = "text/plain".into();
                    shot.expect = Expect::Status(415);
                }
                "oversized" => {
                    data["first_name"] = json!("A".repeat(17 * 1024));
                    shot.expect = Expect::Status(413);
                }
                "bad_credential" => {
                    shot.headers = json_headers(Some("Bearer sf-web-eu-wrong-key-0000000000"));
                    shot.expect = Expect::Status(401);
                }
                "missing_credential" => {
                    shot.headers = json_headers(None);
                    shot.expect = Expect::Status(401);
                }
                "mixed_forms" => data["payment"] = json!("acct1|prof1"),
                "pan_in_query" => {
                    let extra = cards_gen.pan(BRANDS[i % BRANDS.len()]);
                    let extra_cvv = cards_gen.cvv(3);
                    shot.path = format!(
                        "{}?note={}&cvv={extra_cvv}",
                        payment_path(ORDER_OK),
                        grouped(&extra, '-')
                    );
                    shot.expect = Expect::Status(201);
                    shot.forwarded = true;
                    shot.forwarded_pan = Some(number.clone());
                    shot.pans.push(extra);
                    shot.cvvs.push(extra_cvv);
                }
                "pan_in_unknown_field" => {
                    let extra = cards_gen.pan(BRANDS[i % BRANDS.len()]);
                    data["note"] = json!(format!("card {}", grouped(&extra, ' ')));
                    shot.pans.push(extra);
                }
                "pan_as_json_key" => {
                    let extra = cards_gen.pan(BRANDS[i % BRANDS.len()]);
                    data[extra.as_str()] = json!("x");
                    shot.pans.push(extra);
                }
                "pan_in_header" => {
                    let extra = cards_gen.pan(BRANDS[i % BRANDS.len()]);
                    let extra_cvv = cards_gen.cvv(3);
                    shot.headers
                        .push(("x-note".into(), format!("{extra} cvv={extra_cvv}")));
                    shot.expect = Expect::Status(201);
                    shot.forwarded = true;
                    shot.forwarded_pan = Some(number.clone());
                    shot.pans.push(extra);
                    shot.cvvs.push(extra_cvv);
                }
                "pan_in_unknown_route" => {
                    shot.method = Method::GET;
                    shot.path = format!("/v2/cards/{number}?verification_value={cvv}");
                    shot.expect = Expect::Status(404);
                    shot.payment_route = false;
                }
                // Token-form bodies (issue 18) carrying the card where a token belongs:
                // refused, never forwarded. No CVV travels with them.
                "pan_as_token" => {
                    shot.cvvs.clear();
                    shot.names.clear();
                    let data =
                        json!({"gateway": "stripe", "method": "purchase", "payment": number});
                    shot.body = json!({ "data": data }).to_string();
                }
                "pan_in_token_option" => {
                    shot.cvvs.clear();
                    shot.names.clear();
                    let note = format!("card {}", grouped(&number, ' '));
                    let data = json!({"gateway": "stripe", "method": "purchase",
                                      "payment": "tok_visa", "options": {"receipt_email": note}});
                    shot.body = json!({ "data": data }).to_string();
                }
                "pan_in_token_name" => {
                    shot.cvvs.clear();
                    let meta = json!({"name": name, "custom_reference": grouped(&number, '-')});
                    let data = json!({"gateway": "manual", "method": "authorize",
                                      "paymentmethod_meta": meta});
                    shot.body = json!({ "data": data }).to_string();
                }
                "card_for_token_gateway" => data["gateway"] = json!("stripe"),
                "pan_as_order_id" => {
                    // The payment route with a bad order id: refused (400) and audited as
                    // rejected, without the segment in the audit record or the log line.
                    shot.path = payment_path(&number);
                    shot.expect = Expect::Status(400);
                }
                other => unreachable!("{other}"),
            }
            if shot.body.is_empty() {
                shot.body = json!({ "data": data }).to_string();
            }
            shots.push(shot);
        }
    }
    shots
}

/// The upstream double: 201, 500, slow (past upstream.timeout) or reset, by order id.
fn upstream_handler() -> support::Handler {
    handler(|req| {
        if req.path.contains(ORDER_500) {
            Reply::json(
                500,
                json!({"errors": [{"status": 500, "title": "Internal Server Error"}]}),
            )
        } else if req.path.contains(ORDER_SLOW) {
            Reply::json(201, json!({ "data": transaction(ORDER_SLOW, "purchase") }))
                .delayed(Duration::from_millis(1500))
        } else if req.path.contains(ORDER_RESET) {
            Reply::ResetAfterHeaders
        } else {
            Reply::json(201, json!({ "data": transaction(ORDER_OK, "purchase") }))
        }
    })
}

/// What a request got: (status, headers and body as text), or why it failed.
type Outcome = Result<(u16, Vec<u8>), String>;

async fn fire(client: &TestClient, binary_url: &str, shot: &Shot) -> Outcome {
    let mut builder = Request::builder()
        .method(shot.method.clone())
        .uri(format!("{binary_url}{}", shot.path));
    for (name, value) in &shot.headers {
        builder = builder.header(name, value);
    }
    let req = builder
        .body(Bytes::copy_from_slice(shot.body.as_bytes()))
        .expect("build request");
    let resp = tokio::time::timeout(Duration::from_secs(20), client.send(req))
        .await
        .map_err(|_| "no answer within 20 s".to_string())??;
    // Headers are searched too: everything the client got back.
    let mut seen = Vec::new();
    for (name, value) in &resp.headers {
        seen.extend_from_slice(name.as_str().as_bytes());
        seen.extend_from_slice(b": ");
        seen.extend_from_slice(value.as_bytes());
        seen.push(b'\n');
    }
    seen.extend_from_slice(&resp.body);
    Ok((resp.status, seen))
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

fn audit_lines(path: &Path) -> usize {
    payshim::audit::read_records(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_card_data_in_logs_audit_or_responses_at_trace_level() {
    support::cards::self_check();
    let started = Instant::now();
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, upstream_handler()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let audit_dir = dir.path().join("audit");
    let audit_path = audit_dir.join("payshim.jsonl");
    let config = base_config(&pki, &upstream.url(), &audit_dir);
    let config = set_key(&config, "log", "level", Some("\"trace\""));
    let config = set_key(&config, "upstream", "timeout", Some("\"1s\""));
    // Token-form gateways, raw card fields for card_connect only (the default).
    let config =
        format!("{config}\n[payments]\ngateways = [\"card_connect\", \"stripe\", \"manual\"]\n");
    let mut binary = Binary::start(dir.path(), "payshim", &config).await;
    let base_url = binary.url("");

    let shots = Arc::new(plan());
    let total = shots.len();
    assert!(total >= 300, "{total} requests");

    // Phase 1: everything but the resets, 16 tasks, half over HTTP/1.1, half over HTTP/2.
    // Phase 2: the resets one at a time (a reset kills payshim's whole upstream HTTP/2
    // connection, which would fail unrelated requests sharing it).
    let h1 = TestClient::new(&pki.ca_pem, HttpVersion::Http1);
    let h2 = TestClient::new(&pki.ca_pem, HttpVersion::Http2);
    let mut results: Vec<Option<Outcome>> = vec![None; total];
    let concurrent: Vec<usize> = (0..total)
        .filter(|&i| shots[i].expect != Expect::BrokenOr502)
        .collect();
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let shots = shots.clone();
            let client = if t % 2 == 0 { h1.clone() } else { h2.clone() };
            let mine: Vec<usize> = concurrent.iter().copied().skip(t).step_by(16).collect();
            let base_url = base_url.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                for i in mine {
                    out.push((i, fire(&client, &base_url, &shots[i]).await));
                }
                out
            })
        })
        .collect();
    for task in tasks {
        for (i, r) in task.await.expect("sender task") {
            results[i] = Some(r);
        }
    }
    for (k, i) in (0..total)
        .filter(|&i| shots[i].expect == Expect::BrokenOr502)
        .enumerate()
    {
        let client = if k % 2 == 0 { &h1 } else { &h2 };
        results[i] = Some(fire(client, &base_url, &shots[i]).await);
    }
    let results: Vec<Outcome> = results.into_iter().map(|r| r.expect("sent")).collect();

    // Every request got what its path must give.
    let mut per_kind: HashMap<&str, usize> = HashMap::new();
    for (shot, result) in shots.iter().zip(&results) {
        *per_kind.entry(shot.kind).or_default() += 1;
        match (shot.expect, result) {
            (Expect::Status(s), Ok((status, seen))) => assert_eq!(
                *status,
                s,
                "{}: {} {}: {}",
                shot.kind,
                shot.method,
                shot.path,
                String::from_utf8_lossy(seen)
            ),
            (Expect::Status(s), Err(e)) => {
                panic!("{}: expected {s}, the request failed: {e}", shot.kind)
            }
            (Expect::BrokenOr502, Ok((status, _))) => {
                assert_eq!(*status, 502, "{}", shot.kind)
            }
            (Expect::BrokenOr502, Err(_)) => {}
        }
    }

    // The upstream got exactly the forwarded payments, each once.
    let forwarded = shots.iter().filter(|s| s.forwarded).count();
    assert_eq!(
        upstream.count(),
        forwarded,
        "payments that reached the upstream"
    );

    // Audit: one record per refused payment, two per forwarded one, and the start and
    // stop records. Completions and rejections are written after the answer: wait for
    // them (all but the stop record), then stop the process.
    let expected_records = 2 + shots
        .iter()
        .filter(|s| s.payment_route)
        .map(|s| if s.forwarded { 2 } else { 1 })
        .sum::<usize>();
    let deadline = Instant::now() + Duration::from_secs(10);
    while audit_lines(&audit_path) < expected_records - 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    binary.stop().await;

    let report = payshim::audit::verify_files(
        &payshim::audit::chain_files(&audit_path).expect("chain files"),
        AUDIT_KEY.as_bytes(),
    )
    .unwrap_or_else(|e| panic!("audit chain: {e}"));
    assert_eq!(report.records as usize, expected_records);
    assert!(!report.torn_tail);
    let mut events: HashMap<String, usize> = HashMap::new();
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for line in payshim::audit::read_records(&audit_path).unwrap().lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        let event = record["event"].as_str().unwrap().to_string();
        if event == "payment.completed" {
            *outcomes
                .entry(record["outcome"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        *events.entry(event).or_default() += 1;
    }
    let rejected = shots
        .iter()
        .filter(|s| s.payment_route && !s.forwarded)
        .count();
    assert_eq!(
        events.get("payment.forwarded"),
        Some(&forwarded),
        "{events:?}"
    );
    assert_eq!(
        events.get("payment.completed"),
        Some(&forwarded),
        "{events:?}"
    );
    assert_eq!(
        events.get("payment.rejected"),
        Some(&rejected),
        "{events:?}"
    );
    // The completions say what happened upstream.
    let count = |kinds: &[&str]| shots.iter().filter(|s| kinds.contains(&s.kind)).count();
    assert_eq!(
        outcomes.get("approved").copied().unwrap_or(0),
        count(&["valid", "pan_in_query", "pan_in_header"]),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.get("timeout").copied().unwrap_or(0),
        count(&["upstream_timeout"]),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.get("upstream_error").copied().unwrap_or(0),
        count(&["upstream_500", "upstream_reset"]),
        "{outcomes:?}"
    );

    // What is searched for.
    let pans: HashSet<String> = shots.iter().flat_map(|s| s.pans.clone()).collect();
    let not_pans: HashSet<String> = shots.iter().flat_map(|s| s.not_pans.clone()).collect();
    let cvvs: HashSet<String> = shots.iter().flat_map(|s| s.cvvs.clone()).collect();
    let names: Vec<String> = shots.iter().flat_map(|s| s.names.clone()).collect();
    assert_eq!(
        pans.len(),
        shots.iter().map(|s| s.pans.len()).sum::<usize>(),
        "PANs are distinct"
    );
    assert_eq!(
        cvvs.len(),
        shots.iter().map(|s| s.cvvs.len()).sum::<usize>(),
        "CVVs are distinct"
    );

    // Positive control: the same search finds every forwarded card where it belongs, in
    // what the upstream received.
    let received = upstream.requests();
    let mut found_upstream: HashSet<String> = HashSet::new();
    let mut cvvs_upstream: HashSet<String> = HashSet::new();
    for req in &received {
        found_upstream.extend(find_pans(&req.body, &pans).into_iter().map(|(p, _)| p));
        cvvs_upstream.extend(find_cvvs(&req.body, &cvvs).into_iter().map(|(c, _)| c));
    }
    let expected_upstream: HashSet<String> = shots
        .iter()
        .filter_map(|s| s.forwarded_pan.clone())
        .collect();
    assert_eq!(
        found_upstream, expected_upstream,
        "the search must find exactly the forwarded PANs in the upstream's bodies"
    );
    assert_eq!(
        cvvs_upstream.len(),
        forwarded,
        "forwarded CVVs found upstream"
    );

    // The haystacks: stdout, stderr, every audit file, every response.
    let stdout = std::fs::read(&binary.stdout).expect("stdout");
    let stderr = std::fs::read(&binary.stderr).expect("stderr");
    let mut haystacks: Vec<(String, Vec<u8>)> =
        vec![("stdout".into(), stdout.clone()), ("stderr".into(), stderr)];
    let audit_files = files_under(&audit_dir);
    assert!(!audit_files.is_empty());
    for file in &audit_files {
        haystacks.push((file.display().to_string(), std::fs::read(file).unwrap()));
    }
    for (i, (shot, result)) in shots.iter().zip(&results).enumerate() {
        let seen = match result {
            Ok((_, seen)) => seen.clone(),
            Err(e) => e.clone().into_bytes(),
        };
        haystacks.push((format!("response {i} ({})", shot.kind), seen));
    }

    // The logs are real trace logs with one line per request, not an empty file.
    let stdout_text = String::from_utf8_lossy(&stdout);
    let request_lines = stdout_text
        .lines()
        .filter(|l| l.contains("\"message\":\"request\""))
        .count();
    assert!(
        request_lines >= total,
        "{request_lines} request log lines for {total} requests"
    );
    assert!(
        stdout_text.contains("\"level\":\"TRACE\""),
        "no trace-level line in stdout: is the log level in effect?"
    );
    // The log does speak of these very cards, by their allowed part: brand and last four.
    for shot in shots.iter().filter(|s| s.forwarded) {
        let number = shot.forwarded_pan.as_deref().unwrap();
        let last4 = format!("\"last4\":\"{}\"", &number[number.len() - 4..]);
        assert!(
            stdout_text.contains(&last4),
            "no request log line with {last4} ({})",
            shot.kind
        );
    }

    let mut leaks = Vec::new();
    let mut bytes_searched = 0usize;
    for (name, hay) in &haystacks {
        bytes_searched += hay.len();
        for (p, at) in find_pans(hay, &pans) {
            leaks.push(format!("PAN {p} in {name}: …{}…", context(hay, at)));
        }
        for (p, at) in find_pans(hay, &not_pans) {
            leaks.push(format!(
                "submitted (Luhn-invalid) number {p} in {name}: …{}…",
                context(hay, at)
            ));
        }
        for (c, at) in find_cvvs(hay, &cvvs) {
            leaks.push(format!("CVV {c} in {name}: …{}…", context(hay, at)));
        }
        if !name.starts_with("response") {
            let text = String::from_utf8_lossy(hay);
            for n in &names {
                if let Some(at) = text.find(n.as_str()) {
                    leaks.push(format!(
                        "cardholder name {n} in {name}: …{}…",
                        context(hay, at)
                    ));
                }
            }
        }
    }
    eprintln!(
        "leak test: {total} requests ({per_kind:?}), {} PANs + {} Luhn-invalid numbers + {} \
         CVVs + {} names searched in {} haystacks ({} bytes, stdout {} bytes, {} audit \
         records); positive control: {} of {} forwarded PANs and {} CVVs found in the \
         upstream's {} bodies; {:?}",
        pans.len(),
        not_pans.len(),
        cvvs.len(),
        names.len(),
        haystacks.len(),
        bytes_searched,
        stdout.len(),
        report.records,
        found_upstream.len(),
        expected_upstream.len(),
        cvvs_upstream.len(),
        received.len(),
        started.elapsed()
    );
    assert!(
        leaks.is_empty(),
        "{} leaks:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}

/// Every line payshim logs in JSON format is a JSON object, under load too.
#[tokio::test]
async fn json_log_lines_stay_valid_json() {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, upstream_handler()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = base_config(&pki, &upstream.url(), &dir.path().join("audit"));
    let config = set_key(&config, "log", "level", Some("\"info\""));
    let mut binary = Binary::start(dir.path(), "payshim", &config).await;
    let client = TestClient::new(&pki.ca_pem, HttpVersion::Http2);
    let year = (utc_year_month().0 + 3).to_string();
    for n in 0..100u64 {
        let brand = BRANDS[(n as usize) % BRANDS.len()];
        let cvv = if brand.cvv_len == 4 { "7373" } else { "737" };
        let body = json!({ "data": card_data("Lovelace", &pan(brand, n), "7", &year, cvv) });
        let req = Request::post(binary.url(&payment_path(ORDER_OK)))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {STOREFRONT_KEY}"))
            .body(Bytes::from(body.to_string()))
            .unwrap();
        let resp = client.send(req).await.unwrap();
        assert_eq!(resp.status, 201, "{}", resp.text());
    }
    binary.stop().await;
    let stdout = std::fs::read_to_string(&binary.stdout).unwrap();
    let bad: Vec<&str> = stdout
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).map_or(true, |v| !v.is_object()))
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} log lines are not JSON objects, e.g.:\n{}",
        bad.len(),
        stdout.lines().count(),
        bad.iter().take(3).copied().collect::<Vec<_>>().join("\n")
    );
}

/// Log lines are batched (`log.flush_interval`): a request's line reaches stdout within the
/// interval while payshim runs, and a line still waiting when SIGTERM comes is written at
/// exit, not lost.
#[tokio::test]
async fn batched_log_lines_arrive_within_the_interval_and_at_exit() {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, upstream_handler()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let base = base_config(&pki, &upstream.url(), &dir.path().join("audit"));
    let base = set_key(&base, "log", "level", Some("\"info\""));
    let client = TestClient::new(&pki.ca_pem, HttpVersion::Http1);
    let request_line = |stdout: &Path, id: &str| {
        std::fs::read_to_string(stdout)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("\"message\":\"request\"") && l.contains(id))
    };
    let unknown_route = |binary: &Binary| {
        Request::get(binary.url("/v2/not-a-route"))
            .body(Bytes::new())
            .unwrap()
    };

    // Short interval: the line shows up while payshim keeps running.
    let config = set_key(&base, "log", "flush_interval", Some("\"200ms\""));
    let mut binary = Binary::start(dir.path(), "interval", &config).await;
    let resp = client.send(unknown_route(&binary)).await.unwrap();
    assert_eq!(resp.status, 404);
    let id = resp.header("x-request-id").expect("request id");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !request_line(&binary.stdout, &id) {
        assert!(
            Instant::now() < deadline,
            "request line not written within 5 s:\n{}",
            binary.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    binary.stop().await;

    // Long interval: nothing written yet, then everything at exit.
    let config = set_key(&base, "log", "flush_interval", Some("\"10s\""));
    let mut binary = Binary::start(dir.path(), "at-exit", &config).await;
    let resp = client.send(unknown_route(&binary)).await.unwrap();
    let id = resp.header("x-request-id").expect("request id");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !request_line(&binary.stdout, &id),
        "with a 10 s interval the line must still be waiting"
    );
    binary.stop().await;
    assert!(
        request_line(&binary.stdout, &id),
        "the waiting line was not written at exit:\n{}",
        binary.output()
    );
}

/// The request log line (issue 2) and the payment log line (issue 3) carry what an operator
/// needs: request id, client, route, method, HTTP version, status, total and upstream latency, and for a
/// payment the order, brand, last four, method and outcome. No credential is ever logged:
/// neither the storefront key nor the store's upstream token. In sandbox mode every line
/// says `"sandbox":true`.
#[tokio::test]
async fn log_lines_carry_the_request_and_payment_fields_and_no_credential() {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, upstream_handler()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = base_config(&pki, &upstream.url(), &dir.path().join("audit"));
    let config = set_key(&config, "log", "level", Some("\"trace\""));
    let mut binary = Binary::start(dir.path(), "fields", &config).await;
    let client = TestClient::new(&pki.ca_pem, HttpVersion::Http1);
    let year = (utc_year_month().0 + 3).to_string();
    let number = pan(BRANDS[0], 4242);
    let body = json!({ "data": card_data("Lovelace", &number, "7", &year, "737") });
    let payment = |binary: &Binary| {
        Request::post(binary.url(&payment_path(ORDER_OK)))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {STOREFRONT_KEY}"))
            .body(Bytes::from(body.to_string()))
            .unwrap()
    };
    let paid = client.send(payment(&binary)).await.unwrap();
    assert_eq!(paid.status, 201, "{}", paid.text());
    let not_found = || {
        Request::get(binary.url("/v2/not-a-route"))
            .body(Bytes::new())
            .unwrap()
    };
    let missing = client.send(not_found()).await.unwrap();
    assert_eq!(missing.status, 404);
    let h2 = TestClient::new(&pki.ca_pem, HttpVersion::Http2)
        .send(not_found())
        .await
        .unwrap();
    assert_eq!(h2.status, 404);
    binary.stop().await;

    let stdout = std::fs::read_to_string(&binary.stdout).unwrap();
    let stderr = std::fs::read_to_string(&binary.stderr).unwrap();
    for secret in [STOREFRONT_KEY, UPSTREAM_TOKEN] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "a credential reached the log"
        );
    }
    let line = |id: &str| -> Value {
        stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["message"] == "request" && v["request_id"] == id)
            .unwrap_or_else(|| panic!("no request line for {id}:\n{stdout}"))
    };
    let pay = line(&paid.header("x-request-id").unwrap());
    for (key, want) in [
        ("client", json!("web-eu")),
        ("route", json!("payments")),
        ("method", json!("POST")),
        ("http", json!("1.1")),
        ("status", json!(201)),
        ("order_id", json!(ORDER_OK)),
        ("brand", json!(BRANDS[0].name)),
        ("last4", json!(&number[number.len() - 4..])),
        ("payment_method", json!("purchase")),
        ("outcome", json!("approved")),
        ("upstream_status", json!(201)),
    ] {
        assert_eq!(pay[key], want, "{key} in {pay}");
    }
    for key in ["total_us", "upstream_us"] {
        assert!(pay[key].is_u64(), "{key} in {pay}");
    }
    assert!(pay.get("sandbox").is_none(), "not a sandbox: {pay}");
    let over_h2 = line(&h2.header("x-request-id").unwrap());
    assert_eq!(over_h2["http"], "2", "{over_h2}");
    let miss = line(&missing.header("x-request-id").unwrap());
    assert_eq!(miss["http"], "1.1", "{miss}");
    assert_eq!(miss["route"], "not_found", "{miss}");
    assert_eq!(miss["status"], 404, "{miss}");
    assert!(
        miss.get("client").is_none() && miss.get("upstream_us").is_none(),
        "{miss}"
    );

    // The same binary as a sandbox: every line is marked.
    let sandbox = base_config(&pki, "sandbox", &dir.path().join("audit-sandbox"));
    let sandbox = set_key(&sandbox, "log", "level", Some("\"info\""));
    let mut binary = Binary::start(dir.path(), "sandbox", &sandbox).await;
    let resp = client.send(payment(&binary)).await.unwrap();
    // The sandbox answers as today's API does: 200.
    assert_eq!(resp.status, 200, "{}", resp.text());
    binary.stop().await;
    let stdout = std::fs::read_to_string(&binary.stdout).unwrap();
    assert!(stdout.lines().count() >= 2, "{stdout}");
    for l in stdout.lines() {
        let v: Value = serde_json::from_str(l).expect(l);
        assert_eq!(v["sandbox"], true, "unmarked sandbox line: {l}");
    }
}
