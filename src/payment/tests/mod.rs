//! Tests for the payment module: tables of (name, input, expected), in the style of Sentry
//! Relay's `relay-pii`, plus property tests.
//!
//! Every rejected case also checks that no error quotes the PAN, CVV or names it was given.

use hmac::{Hmac, Mac};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use sha2::Sha256;

use super::*;
use crate::keyed::KeyedHash;

/// A fixed "now" for expiry: May 2026.
const TODAY: YearMonth = YearMonth {
    year: 2026,
    month: 5,
};

const PAN: &str = "4111111111111111";
const AMEX_PAN: &str = "378282246310005";
const CVV: &str = "987";
const FIRST: &str = "Zelda";
const LAST: &str = "Quux";

/// Brand, IIN prefixes at the edges of its ranges, lengths it issues.
const BRANDS: &[(Brand, &[&str], &[usize])] = &[
    (Brand::Visa, &["4"], &[13, 16, 19]),
    (Brand::Mastercard, &["51", "55", "2221", "2720"], &[16]),
    (Brand::Amex, &["34", "37"], &[15]),
    (
        Brand::Discover,
        &["6011", "644", "649", "65"],
        &[16, 17, 18, 19],
    ),
    (Brand::Jcb, &["3528", "3589"], &[16, 17, 18, 19]),
    (
        Brand::Diners,
        &["300", "305", "36", "38", "39"],
        &[14, 15, 16, 17, 18, 19],
    ),
    (Brand::UnionPay, &["62"], &[16, 17, 18, 19]),
];

/// card_connect with its raw-card form, stripe with tokens only.
fn policy() -> GatewayPolicy {
    GatewayPolicy::new(
        &["card_connect".to_owned(), "stripe".to_owned()],
        &["card_connect".to_owned()],
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The Luhn check digit to append to `partial`.
fn check_digit(partial: &str) -> char {
    let sum: u32 = partial
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            // The rightmost digit of `partial` is doubled once the check digit is appended.
            if i % 2 == 0 {
                let doubled = 2 * d;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    char::from_digit((10 - sum % 10) % 10, 10).unwrap()
}

/// `prefix`, then digits from `fill`, then a check digit: a Luhn-valid number of `len` digits.
fn luhn_with(prefix: &str, fill: &str, len: usize) -> String {
    let mut s = prefix.to_owned();
    s.extend(fill.chars().cycle().take(len - 1 - prefix.len()));
    s.push(check_digit(&s));
    s
}

fn luhn_number(prefix: &str, len: usize) -> String {
    luhn_with(prefix, "7392018465", len)
}

/// The same number with its check digit changed, so it fails only the Luhn check.
fn break_luhn(pan: &str) -> String {
    let (body, last) = pan.split_at(pan.len() - 1);
    let digit = last.parse::<u8>().unwrap();
    format!("{body}{}", (digit + 1) % 10)
}

/// A valid raw-card `data` object.
fn card_data() -> Map<String, Value> {
    let value = json!({
        "gateway": "card_connect",
        "method": "purchase",
        "first_name": FIRST,
        "last_name": LAST,
        "number": PAN,
        "month": "08",
        "year": "2031",
        "verification_value": CVV,
    });
    match value {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

/// A change to the valid card body: set a field, or remove it.
enum Change {
    Set(&'static str, Value),
    Del(&'static str),
}
use Change::{Del, Set};

fn set(field: &'static str, value: impl Into<Value>) -> Change {
    Set(field, value.into())
}

fn apply(mut data: Map<String, Value>, changes: Vec<Change>) -> Vec<u8> {
    for change in changes {
        match change {
            Set(field, value) => {
                data.insert(field.to_owned(), value);
            }
            Del(field) => {
                data.remove(field);
            }
        }
    }
    serde_json::to_vec(&json!({ "data": data })).unwrap()
}

fn card_body(changes: Vec<Change>) -> Vec<u8> {
    apply(card_data(), changes)
}

fn token_body(changes: Vec<Change>) -> Vec<u8> {
    let mut data = Map::new();
    data.insert("gateway".into(), json!("card_connect"));
    data.insert("method".into(), json!("purchase"));
    data.insert("payment".into(), json!("acct1|prof2"));
    apply(data, changes)
}

fn raw(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn parse(body: &[u8]) -> Result<PaymentRequest, Vec<FieldError>> {
    PaymentRequest::parse(body, &policy(), TODAY)
}

/// Strings that must never appear in an error for this body: the constant card data, and every
/// string value of at least three characters found in the body.
fn secrets(body: &[u8]) -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::String(s) if s.chars().count() >= 3 => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            Value::Object(map) => map.values().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = vec![
        PAN.to_owned(),
        AMEX_PAN.to_owned(),
        CVV.to_owned(),
        FIRST.to_owned(),
        LAST.to_owned(),
    ];
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        walk(&value, &mut out);
    }
    out
}

fn assert_no_echo(name: &str, body: &[u8], errors: &[FieldError]) {
    for secret in secrets(body) {
        for e in errors {
            for text in [e.source.as_str(), e.title, e.detail.as_str()] {
                assert!(
                    !text.contains(&secret),
                    "{name}: error {e:?} echoes an input value"
                );
            }
        }
    }
}

/// Runs one table row: `expected` empty means accepted, otherwise the exact (source, title)
/// list in order.
fn check(name: &str, body: &[u8], expected: &[(&str, &str)]) {
    match parse(body) {
        Ok(request) => assert!(
            expected.is_empty(),
            "{name}: accepted {request:?}, expected {expected:?}"
        ),
        Err(errors) => {
            let got: Vec<(&str, &str)> = errors
                .iter()
                .map(|e| (e.source.as_str(), e.title))
                .collect();
            assert_eq!(got, expected, "{name}: {errors:#?}");
            assert_no_echo(name, body, &errors);
        }
    }
}

type Row = (
    &'static str,
    Vec<u8>,
    &'static [(&'static str, &'static str)],
);

fn run(rows: Vec<Row>) {
    for (name, body, expected) in rows {
        check(name, &body, expected);
    }
}

const OK: &[(&str, &str)] = &[];

/// HMAC-SHA-256, computed independently of `KeyedHash`, to check fingerprints against.
fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().into()
}

mod body;
mod card;
mod fields;
mod output;
