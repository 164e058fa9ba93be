//! The audit log end to end (issue 3), through the real server and the
//! real binary: the chain verifies after concurrent load (across rotated files), any edited,
//! deleted or reordered line is named by `payshim audit verify`, a SIGKILL during load leaves
//! files that verify with nothing forwarded before its durable record, and an unwritable
//! audit directory gives 503, failed readiness and an error line, never silence.
//!
//! The writer's own unit tests (tamper, rotation, torn tail, concurrency) are in
//! src/audit/tests.rs.
//!
//! One topic per file: `concurrent_load.rs` the chain after concurrent HTTP/1.1 and HTTP/2
//! load across rotated files; `tampering.rs` edited, deleted, swapped and replayed lines
//! named by `payshim audit verify`; `sigkill.rs` a SIGKILL during load and the restart on
//! the same log; `unwritable.rs` an audit directory that cannot be created;
//! `upstream_call.rs` the forwarded and completed records around the upstream call. The
//! helpers they share are here.

mod concurrent_load;
mod sigkill;
mod tampering;
mod unwritable;
mod upstream_call;

use crate::support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{Method, Request};
use serde_json::{Value, json};
use sha2::Sha256;

use support::cards::{BRANDS, pan, utc_year_month};
use support::payshim::{AUDIT_KEY, ORDER, STOREFRONT_KEY};

/// A valid payment for card number `n` (brands cycle with `n`).
fn payment(n: u64) -> (String, String) {
    let brand = BRANDS[(n as usize) % BRANDS.len()];
    let number = pan(brand, n);
    let cvv = if brand.cvv_len == 4 { "7373" } else { "737" };
    let body = json!({
        "data": {
            "gateway": "card_connect",
            "method": "purchase",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "number": number,
            "month": "9",
            "year": (utc_year_month().0 + 2).to_string(),
            "verification_value": cvv,
        }
    })
    .to_string();
    (number, body)
}

/// A payment refused by validation (Luhn failure).
fn invalid_payment(n: u64) -> String {
    let (number, body) = payment(n);
    let broken = support::cards::luhn_broken(&number);
    body.replace(&number, &broken)
}

fn payment_request(base_url: &str, body: &str) -> Request<Bytes> {
    Request::builder()
        .method(Method::POST)
        .uri(format!("{base_url}/v2/orders/{ORDER}/payments"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {STOREFRONT_KEY}"))
        .body(Bytes::copy_from_slice(body.as_bytes()))
        .expect("build request")
}

/// Hex HMAC-SHA-256(audit key, PAN): a record's card fingerprint.
fn fingerprint(pan: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(AUDIT_KEY.as_bytes()).unwrap();
    mac.update(pan.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The complete lines of the chain's files (oldest first), parsed.
fn records(files: &[PathBuf]) -> Vec<Value> {
    let mut out = Vec::new();
    for file in files {
        let text = payshim::audit::read_records(file).expect("read audit file");
        for line in text.split_inclusive('\n') {
            if line.ends_with('\n') {
                out.push(serde_json::from_str(line).expect("audit line is JSON"));
            }
        }
    }
    out
}

fn chain(audit_path: &Path) -> Vec<PathBuf> {
    payshim::audit::chain_files(audit_path).expect("list audit files")
}

/// Checks the pairing of a finished run: seq 1..=N in order; every forwarded record has one
/// completed record with the same request id after it; returns the event counts.
fn check_pairing(records: &[Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    let mut forwarded: HashMap<String, u64> = HashMap::new();
    let mut completed: HashSet<String> = HashSet::new();
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["seq"], i as u64 + 1, "seq order: {r}");
        let event = r["event"].as_str().unwrap().to_string();
        let Some(id) = r["request_id"].as_str().map(str::to_string) else {
            // A system record (start, stop): counted, nothing to pair.
            *counts.entry(event).or_insert(0) += 1;
            continue;
        };
        match event.as_str() {
            "payment.forwarded" => {
                assert!(
                    forwarded.insert(id, i as u64).is_none(),
                    "two forwarded: {r}"
                );
            }
            "payment.completed" => {
                assert!(
                    forwarded.contains_key(&id),
                    "completed before (or without) its forwarded record: {r}"
                );
                assert!(completed.insert(id), "two completed: {r}");
            }
            _ => {}
        }
        *counts.entry(event).or_insert(0) += 1;
    }
    assert_eq!(
        forwarded.len(),
        completed.len(),
        "every forwarded payment has its completed record"
    );
    counts
}
