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
//!
//! Files: `shots.rs` builds the run's requests, `leak.rs` sends them and searches for the
//! card data; `log_lines.rs` checks the log lines themselves (valid JSON, batching, the
//! fields they carry, no credential).

mod leak;
mod log_lines;
mod shots;

use crate::support;

use std::time::Duration;

use serde_json::{Value, json};

use support::upstream::transaction;
use support::{Reply, handler};

/// The upstream double answers by order id.
const ORDER_OK: &str = "0a1b2c3d-0000-4000-8000-000000000201";
const ORDER_500: &str = "0a1b2c3d-0000-4000-8000-000000000500";
const ORDER_SLOW: &str = "0a1b2c3d-0000-4000-8000-000000000504";
const ORDER_RESET: &str = "0a1b2c3d-0000-4000-8000-000000000502";

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
