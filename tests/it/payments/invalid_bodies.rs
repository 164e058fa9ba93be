//! The invalid-payment table, the body's shape: wrong JSON types, unknown and duplicate
//! fields, malformed JSON, missing fields, gateway and method, several bad fields at once,
//! and the token form.

use crate::support;

use serde_json::{Value, json};

use support::cards::{DISCOVER, VISA, luhn_broken, pan};

use super::validation::{Bad, bad};
use super::{card_body, valid_year, with};

/// The body's shape broken one rule at a time (one case several at once).
pub(super) fn body_cases() -> Vec<Bad> {
    let year = valid_year();
    let visa = pan(VISA, 11);
    let ok = || card_body(&visa, "737", "7", &year);
    let s = |v: Value| v.to_string();
    vec![
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
    ]
}
