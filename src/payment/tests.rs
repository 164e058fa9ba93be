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

// ---------------------------------------------------------------------------------------------
// Card numbers
// ---------------------------------------------------------------------------------------------

#[test]
fn every_brand_at_every_length() {
    for (brand, prefixes, lengths) in BRANDS {
        for prefix in *prefixes {
            for len in 12..=19 {
                let pan = luhn_number(prefix, len);
                let expected = if lengths.contains(&len) {
                    Ok(*brand)
                } else {
                    Err(CardError::BrandLength)
                };
                let got = CardNumber::parse(&pan).map(|n| n.brand());
                assert_eq!(got, expected, "{brand} prefix {prefix} length {len}");
            }
        }
    }
}

#[test]
fn card_number_table() {
    let rows: Vec<(&str, String, Result<Brand, CardError>)> = vec![
        ("visa test card", PAN.into(), Ok(Brand::Visa)),
        ("amex test card", AMEX_PAN.into(), Ok(Brand::Amex)),
        (
            "mastercard 2-series",
            "2223003122003222".into(),
            Ok(Brand::Mastercard),
        ),
        (
            "discover test card",
            "6011111111111117".into(),
            Ok(Brand::Discover),
        ),
        ("jcb test card", "3530111333300000".into(), Ok(Brand::Jcb)),
        (
            "diners test card",
            "36227206271667".into(),
            Ok(Brand::Diners),
        ),
        (
            "unionpay test card",
            "6200000000000005".into(),
            Ok(Brand::UnionPay),
        ),
        ("11 digits", luhn_number("4", 11), Err(CardError::Length)),
        ("20 digits", luhn_number("4", 20), Err(CardError::Length)),
        ("empty", String::new(), Err(CardError::Length)),
        ("luhn failure", break_luhn(PAN), Err(CardError::Luhn)),
        (
            "luhn failure amex",
            break_luhn(AMEX_PAN),
            Err(CardError::Luhn),
        ),
        (
            "unknown 1",
            luhn_number("1", 16),
            Err(CardError::UnknownBrand),
        ),
        (
            "unknown 2220",
            luhn_number("2220", 16),
            Err(CardError::UnknownBrand),
        ),
        (
            "unknown 2721",
            luhn_number("2721", 16),
            Err(CardError::UnknownBrand),
        ),
        (
            "unknown 3527",
            luhn_number("3527", 16),
            Err(CardError::UnknownBrand),
        ),
        (
            "unknown 3590",
            luhn_number("3590", 16),
            Err(CardError::UnknownBrand),
        ),
        (
            "unknown 306",
            luhn_number("306", 16),
            Err(CardError::UnknownBrand),
        ),
        (
            "unknown 50",
            luhn_number("50", 16),
            Err(CardError::UnknownBrand),
        ),
        (
            "unknown 56",
            luhn_number("56", 16),
            Err(CardError::UnknownBrand),
        ),
        (
            "unknown 643",
            luhn_number("643", 16),
            Err(CardError::UnknownBrand),
        ),
        (
            "unknown 6010",
            luhn_number("6010", 16),
            Err(CardError::UnknownBrand),
        ),
        (
            "unknown 7",
            luhn_number("7", 16),
            Err(CardError::UnknownBrand),
        ),
        (
            "unknown 9",
            luhn_number("9", 16),
            Err(CardError::UnknownBrand),
        ),
        (
            "unknown 0",
            luhn_number("0", 16),
            Err(CardError::UnknownBrand),
        ),
        (
            "fullwidth digits",
            "４１１１１１１１１１１１１１１１".into(),
            Err(CardError::NotDigits),
        ),
        (
            "arabic-indic digits",
            "٤١١١١١١١١١١١١١١١".into(),
            Err(CardError::NotDigits),
        ),
        (
            "spaces",
            "4111 1111 1111 1111".into(),
            Err(CardError::NotDigits),
        ),
        (
            "dashes",
            "4111-1111-1111-1111".into(),
            Err(CardError::NotDigits),
        ),
        (
            "leading space",
            format!(" {PAN}"),
            Err(CardError::NotDigits),
        ),
        (
            "trailing newline",
            format!("{PAN}\n"),
            Err(CardError::NotDigits),
        ),
        ("plus sign", format!("+{PAN}"), Err(CardError::NotDigits)),
        (
            "letters",
            "4111111111111a11".into(),
            Err(CardError::NotDigits),
        ),
    ];
    for (name, input, expected) in rows {
        let got = CardNumber::parse(&input).map(|n| n.brand());
        assert_eq!(got, expected, "{name}");
        if let Err(e) = got {
            assert!(
                !e.to_string().contains(&input) || input.is_empty(),
                "{name}"
            );
        }
    }
}

#[test]
fn card_number_bin_last4_and_mask() {
    let number = CardNumber::parse(PAN).unwrap();
    assert_eq!(number.bin(), "411111");
    assert_eq!(number.last4(), "1111");
    assert_eq!(format!("{number:?}"), "visa ****1111");
    assert_eq!(format!("{number}"), "visa ****1111");
    let amex = CardNumber::parse(AMEX_PAN).unwrap();
    assert_eq!(format!("{amex}"), "amex ****0005");
}

#[test]
fn brand_names() {
    let names: Vec<&str> = BRANDS.iter().map(|(b, _, _)| b.as_str()).collect();
    assert_eq!(
        names,
        [
            "visa",
            "mastercard",
            "amex",
            "discover",
            "jcb",
            "diners",
            "unionpay"
        ]
    );
}

#[test]
fn card_fingerprint_is_stable_and_keyed() {
    let a = CardNumber::parse(PAN).unwrap();
    let b = CardNumber::parse(PAN).unwrap();
    let other = CardNumber::parse(AMEX_PAN).unwrap();
    assert_eq!(
        a.fingerprint(&KeyedHash::new(b"key-1")),
        b.fingerprint(&KeyedHash::new(b"key-1"))
    );
    assert_ne!(
        a.fingerprint(&KeyedHash::new(b"key-1")),
        a.fingerprint(&KeyedHash::new(b"key-2"))
    );
    assert_ne!(
        a.fingerprint(&KeyedHash::new(b"key-1")),
        other.fingerprint(&KeyedHash::new(b"key-1"))
    );
    assert_eq!(
        a.fingerprint(&KeyedHash::new(b"key-1")),
        hmac(b"key-1", PAN.as_bytes())
    );
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().into()
}

// ---------------------------------------------------------------------------------------------
// CVV
// ---------------------------------------------------------------------------------------------

/// Name, input, brand (`None`: unknown), expected.
type CvvRow = (
    &'static str,
    &'static str,
    Option<Brand>,
    Result<(), CvvError>,
);

#[test]
fn cvv_table() {
    let rows: Vec<CvvRow> = vec![
        ("visa 3", "987", Some(Brand::Visa), Ok(())),
        (
            "visa 4",
            "9876",
            Some(Brand::Visa),
            Err(CvvError::NotThreeDigits),
        ),
        (
            "visa 2",
            "98",
            Some(Brand::Visa),
            Err(CvvError::NotThreeDigits),
        ),
        ("mastercard 3", "987", Some(Brand::Mastercard), Ok(())),
        ("discover 3", "987", Some(Brand::Discover), Ok(())),
        ("jcb 3", "987", Some(Brand::Jcb), Ok(())),
        ("diners 3", "987", Some(Brand::Diners), Ok(())),
        ("unionpay 3", "987", Some(Brand::UnionPay), Ok(())),
        (
            "unionpay 4",
            "9876",
            Some(Brand::UnionPay),
            Err(CvvError::NotThreeDigits),
        ),
        ("amex 4", "9876", Some(Brand::Amex), Ok(())),
        (
            "amex 3",
            "987",
            Some(Brand::Amex),
            Err(CvvError::NotFourDigits),
        ),
        (
            "amex 5",
            "98765",
            Some(Brand::Amex),
            Err(CvvError::NotFourDigits),
        ),
        ("unknown 3", "987", None, Ok(())),
        ("unknown 4", "9876", None, Ok(())),
        ("unknown 2", "98", None, Err(CvvError::Length)),
        ("unknown 5", "98765", None, Err(CvvError::Length)),
        (
            "empty",
            "",
            Some(Brand::Visa),
            Err(CvvError::NotThreeDigits),
        ),
        ("letter", "98a", Some(Brand::Visa), Err(CvvError::NotDigits)),
        (
            "fullwidth",
            "９８７",
            Some(Brand::Visa),
            Err(CvvError::NotDigits),
        ),
        ("space", "98 7", None, Err(CvvError::NotDigits)),
    ];
    for (name, input, brand, expected) in rows {
        assert_eq!(Cvv::parse(input, brand).map(|_| ()), expected, "{name}");
    }
    // A plain `Brand` works as well as an `Option<Brand>`.
    assert!(Cvv::parse("9876", Brand::Amex).is_ok());
}

#[test]
fn cvv_prints_only_a_mask() {
    let cvv = Cvv::parse(CVV, Brand::Visa).unwrap();
    assert_eq!(format!("{cvv:?}"), "***");
    assert_eq!(format!("{cvv}"), "***");
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

#[test]
fn valid_requests() {
    run(vec![
        ("card purchase", card_body(vec![]), OK),
        (
            "card authorize",
            card_body(vec![set("method", "authorize")]),
            OK,
        ),
        (
            "card capture",
            card_body(vec![set("method", "capture")]),
            OK,
        ),
        (
            "card fields for a gateway not configured for them",
            card_body(vec![set("gateway", "stripe")]),
            &[("data", "Card data not accepted")],
        ),
        ("token", token_body(vec![]), OK),
    ]);
}

#[test]
fn every_brand_through_the_parser() {
    for (brand, prefixes, lengths) in BRANDS {
        for len in *lengths {
            let pan = luhn_number(prefixes[0], *len);
            let cvv = if *brand == Brand::Amex { "9876" } else { "987" };
            let body = card_body(vec![
                set("number", pan.as_str()),
                set("verification_value", cvv),
            ]);
            let request = parse(&body).unwrap_or_else(|e| panic!("{brand} {len}: {e:?}"));
            assert_eq!(request.card().unwrap().number.brand(), *brand);
        }
    }
}

#[test]
fn number_rules() {
    run(vec![
        (
            "amex with 4-digit cvv",
            card_body(vec![
                set("number", AMEX_PAN),
                set("verification_value", "9876"),
            ]),
            OK,
        ),
        (
            "luhn failure",
            card_body(vec![set("number", break_luhn(PAN))]),
            &[("data.number", "Invalid card number")],
        ),
        (
            "too short",
            card_body(vec![set("number", luhn_number("4", 11))]),
            &[("data.number", "Invalid card number")],
        ),
        (
            "too long",
            card_body(vec![set("number", luhn_number("4", 20))]),
            &[("data.number", "Invalid card number")],
        ),
        (
            "visa 14",
            card_body(vec![set("number", luhn_number("4", 14))]),
            &[("data.number", "Invalid card number")],
        ),
        (
            "mastercard 15",
            card_body(vec![set("number", luhn_number("51", 15))]),
            &[("data.number", "Invalid card number")],
        ),
        (
            "amex 16",
            card_body(vec![
                set("number", luhn_number("37", 16)),
                set("verification_value", "9876"),
            ]),
            &[("data.number", "Invalid card number")],
        ),
        (
            "discover 15",
            card_body(vec![set("number", luhn_number("6011", 15))]),
            &[("data.number", "Invalid card number")],
        ),
        (
            "jcb 15",
            card_body(vec![set("number", luhn_number("3528", 15))]),
            &[("data.number", "Invalid card number")],
        ),
        (
            "diners 13",
            card_body(vec![set("number", luhn_number("36", 13))]),
            &[("data.number", "Invalid card number")],
        ),
        (
            "unionpay 15",
            card_body(vec![set("number", luhn_number("62", 15))]),
            &[("data.number", "Invalid card number")],
        ),
        (
            "unknown brand",
            card_body(vec![set("number", luhn_number("9", 16))]),
            &[("data.number", "Invalid card number")],
        ),
        (
            "fullwidth digits",
            card_body(vec![set("number", "４１１１１１１１１１１１１１１１")]),
            &[("data.number", "Invalid card number")],
        ),
        (
            "arabic-indic digits",
            card_body(vec![set("number", "٤١١١١١١١١١١١١١١١")]),
            &[("data.number", "Invalid card number")],
        ),
        (
            "spaces",
            card_body(vec![set("number", "4111 1111 1111 1111")]),
            &[("data.number", "Invalid card number")],
        ),
        (
            "dashes",
            card_body(vec![set("number", "4111-1111-1111-1111")]),
            &[("data.number", "Invalid card number")],
        ),
        (
            "empty",
            card_body(vec![set("number", "")]),
            &[("data.number", "Invalid card number")],
        ),
    ]);
}

#[test]
fn expiry_rules() {
    run(vec![
        (
            "this month is still valid",
            card_body(vec![set("month", "05"), set("year", "2026")]),
            OK,
        ),
        (
            "this month, one digit",
            card_body(vec![set("month", "5"), set("year", "2026")]),
            OK,
        ),
        (
            "last month has expired",
            card_body(vec![set("month", "04"), set("year", "2026")]),
            &[("data.year", "Card expired")],
        ),
        (
            "december last year",
            card_body(vec![set("month", "12"), set("year", "2025")]),
            &[("data.year", "Card expired")],
        ),
        (
            "january next year",
            card_body(vec![set("month", "01"), set("year", "2027")]),
            OK,
        ),
        (
            "20 years ahead",
            card_body(vec![set("month", "12"), set("year", "2046")]),
            OK,
        ),
        (
            "21 years ahead",
            card_body(vec![set("month", "01"), set("year", "2047")]),
            &[("data.year", "Invalid expiry year")],
        ),
        (
            "two-digit year",
            card_body(vec![set("year", "31")]),
            &[("data.year", "Invalid expiry year")],
        ),
        (
            "five-digit year",
            card_body(vec![set("year", "20311")]),
            &[("data.year", "Invalid expiry year")],
        ),
        (
            "fullwidth year",
            card_body(vec![set("year", "２０３１")]),
            &[("data.year", "Invalid expiry year")],
        ),
        (
            "signed year",
            card_body(vec![set("year", "+203")]),
            &[("data.year", "Invalid expiry year")],
        ),
        ("month 1", card_body(vec![set("month", "1")]), OK),
        ("month 12", card_body(vec![set("month", "12")]), OK),
        (
            "month 0",
            card_body(vec![set("month", "0")]),
            &[("data.month", "Invalid expiry month")],
        ),
        (
            "month 00",
            card_body(vec![set("month", "00")]),
            &[("data.month", "Invalid expiry month")],
        ),
        (
            "month 13",
            card_body(vec![set("month", "13")]),
            &[("data.month", "Invalid expiry month")],
        ),
        (
            "month 008",
            card_body(vec![set("month", "008")]),
            &[("data.month", "Invalid expiry month")],
        ),
        (
            "month empty",
            card_body(vec![set("month", "")]),
            &[("data.month", "Invalid expiry month")],
        ),
        (
            "month arabic-indic",
            card_body(vec![set("month", "٨")]),
            &[("data.month", "Invalid expiry month")],
        ),
        (
            "month with space",
            card_body(vec![set("month", " 8")]),
            &[("data.month", "Invalid expiry month")],
        ),
        // Without a valid month the expiry cannot be judged: only the month is reported.
        (
            "bad month, past year",
            card_body(vec![set("month", "13"), set("year", "2020")]),
            &[("data.month", "Invalid expiry month")],
        ),
    ]);
}

#[test]
fn cvv_rules() {
    run(vec![
        ("visa 3", card_body(vec![]), OK),
        (
            "visa 4",
            card_body(vec![set("verification_value", "9876")]),
            &[("data.verification_value", "Invalid security code")],
        ),
        (
            "visa 2",
            card_body(vec![set("verification_value", "98")]),
            &[("data.verification_value", "Invalid security code")],
        ),
        (
            "amex 3",
            card_body(vec![set("number", AMEX_PAN)]),
            &[("data.verification_value", "Invalid security code")],
        ),
        (
            "amex 4",
            card_body(vec![
                set("number", AMEX_PAN),
                set("verification_value", "9876"),
            ]),
            OK,
        ),
        (
            "letters",
            card_body(vec![set("verification_value", "98a")]),
            &[("data.verification_value", "Invalid security code")],
        ),
        (
            "empty",
            card_body(vec![set("verification_value", "")]),
            &[("data.verification_value", "Invalid security code")],
        ),
        // The number is invalid, so the brand is unknown: 4 digits pass, 2 do not.
        (
            "unknown brand, 4 digits",
            card_body(vec![
                set("number", break_luhn(PAN)),
                set("verification_value", "9876"),
            ]),
            &[("data.number", "Invalid card number")],
        ),
        (
            "unknown brand, 2 digits",
            card_body(vec![
                set("number", break_luhn(PAN)),
                set("verification_value", "98"),
            ]),
            &[
                ("data.number", "Invalid card number"),
                ("data.verification_value", "Invalid security code"),
            ],
        ),
    ]);
}

#[test]
fn name_rules() {
    let a100 = "a".repeat(100);
    let a101 = "a".repeat(101);
    let e100 = "é".repeat(100); // 200 bytes, 100 characters
    let e101 = "é".repeat(101);
    run(vec![
        (
            "100 characters",
            card_body(vec![set("first_name", a100.as_str())]),
            OK,
        ),
        (
            "100 two-byte characters",
            card_body(vec![set("last_name", e100.as_str())]),
            OK,
        ),
        ("one character", card_body(vec![set("first_name", "Z")]), OK),
        (
            "inner spaces and accents",
            card_body(vec![set("last_name", "de la Peña-Zoë")]),
            OK,
        ),
        (
            "empty first",
            card_body(vec![set("first_name", "")]),
            &[("data.first_name", "Invalid first name")],
        ),
        (
            "empty last",
            card_body(vec![set("last_name", "")]),
            &[("data.last_name", "Invalid last name")],
        ),
        (
            "101 characters",
            card_body(vec![set("first_name", a101.as_str())]),
            &[("data.first_name", "Invalid first name")],
        ),
        (
            "101 two-byte characters",
            card_body(vec![set("last_name", e101.as_str())]),
            &[("data.last_name", "Invalid last name")],
        ),
        (
            "NUL",
            card_body(vec![set("first_name", "Zel\u{0}da")]),
            &[("data.first_name", "Invalid first name")],
        ),
        (
            "newline",
            card_body(vec![set("last_name", "Qu\nux")]),
            &[("data.last_name", "Invalid last name")],
        ),
        (
            "DEL",
            card_body(vec![set("last_name", "Qu\u{7f}ux")]),
            &[("data.last_name", "Invalid last name")],
        ),
        (
            "C1 control",
            card_body(vec![set("first_name", "Zel\u{85}da")]),
            &[("data.first_name", "Invalid first name")],
        ),
        (
            "only spaces",
            card_body(vec![set("first_name", "   ")]),
            &[("data.first_name", "Invalid first name")],
        ),
        (
            "only no-break space",
            card_body(vec![set("last_name", "\u{a0}")]),
            &[("data.last_name", "Invalid last name")],
        ),
    ]);
}

#[test]
fn gateway_and_method_rules() {
    run(vec![
        (
            "gateway not allowed",
            card_body(vec![set("gateway", "paypal")]),
            &[("data.gateway", "Gateway not allowed")],
        ),
        (
            "gateway wrong case",
            card_body(vec![set("gateway", "Card_Connect")]),
            &[("data.gateway", "Gateway not allowed")],
        ),
        (
            "gateway with space",
            card_body(vec![set("gateway", "card_connect ")]),
            &[("data.gateway", "Gateway not allowed")],
        ),
        (
            "method refund",
            card_body(vec![set("method", "refund")]),
            &[("data.method", "Invalid method")],
        ),
        (
            "method upper case",
            card_body(vec![set("method", "PURCHASE")]),
            &[("data.method", "Invalid method")],
        ),
    ]);
    let errors =
        PaymentRequest::parse(&card_body(vec![]), &GatewayPolicy::default(), TODAY).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].source, "data.gateway");
}

#[test]
fn wrong_types() {
    const FIELDS: [&str; 8] = [
        "gateway",
        "method",
        "first_name",
        "last_name",
        "number",
        "month",
        "year",
        "verification_value",
    ];
    let wrong = [
        json!(4111111111111111_u64),
        json!(8),
        json!(null),
        json!(true),
        json!([PAN]),
        json!({"v": CVV}),
    ];
    for field in FIELDS {
        for value in &wrong {
            let body = card_body(vec![Set(field, value.clone())]);
            let errors = parse(&body).unwrap_err();
            let got: Vec<(&str, &str)> = errors
                .iter()
                .map(|e| (e.source.as_str(), e.title))
                .collect();
            assert_eq!(
                got,
                [(format!("data.{field}").as_str(), "Invalid type")],
                "{field} = {value}"
            );
            assert_no_echo(field, &body, &errors);
        }
    }
    run(vec![
        (
            "payment as number",
            token_body(vec![set("payment", 12)]),
            &[("data.payment", "Invalid type")],
        ),
        (
            "data as string",
            raw(r#"{"data":"x"}"#),
            &[("data", "Invalid type")],
        ),
        (
            "data as array",
            raw(r#"{"data":[]}"#),
            &[("data", "Invalid type")],
        ),
        (
            "data null",
            raw(r#"{"data":null}"#),
            &[("data", "Invalid type")],
        ),
        ("body array", raw("[]"), &[("body", "Invalid type")]),
        (
            "body string",
            raw(r#""4111111111111111""#),
            &[("body", "Invalid type")],
        ),
        ("body number", raw("42"), &[("body", "Invalid type")]),
        ("body null", raw("null"), &[("body", "Invalid type")]),
    ]);
}

#[test]
fn missing_fields() {
    let mut rows: Vec<Row> = vec![
        (
            "gateway",
            card_body(vec![Del("gateway")]),
            &[("data.gateway", "Missing field")],
        ),
        (
            "method",
            card_body(vec![Del("method")]),
            &[("data.method", "Missing field")],
        ),
        (
            "first_name",
            card_body(vec![Del("first_name")]),
            &[("data.first_name", "Missing field")],
        ),
        (
            "last_name",
            card_body(vec![Del("last_name")]),
            &[("data.last_name", "Missing field")],
        ),
        (
            "number",
            card_body(vec![Del("number")]),
            &[("data.number", "Missing field")],
        ),
        (
            "month",
            card_body(vec![Del("month")]),
            &[("data.month", "Missing field")],
        ),
        (
            "year",
            card_body(vec![Del("year")]),
            &[("data.year", "Missing field")],
        ),
        (
            "verification_value",
            card_body(vec![Del("verification_value")]),
            &[("data.verification_value", "Missing field")],
        ),
    ];
    rows.extend([
        ("no data", raw("{}"), &[("data", "Missing field")][..]),
        (
            "empty data: without a gateway nothing else is checked",
            raw(r#"{"data":{}}"#),
            &[
                ("data.gateway", "Missing field"),
                ("data.method", "Missing field"),
            ][..],
        ),
        (
            "token without gateway",
            token_body(vec![Del("gateway")]),
            &[("data.gateway", "Missing field")][..],
        ),
    ]);
    run(rows);
}

#[test]
fn unknown_fields() {
    let long_name = "a".repeat(65);
    run(vec![
        (
            "unknown in data",
            card_body(vec![set("extra", "x")]),
            &[("data.extra", "Unknown field")],
        ),
        (
            "two unknown in data",
            card_body(vec![set("aa", 1), set("zz", 2)]),
            &[("data.aa", "Unknown field"), ("data.zz", "Unknown field")],
        ),
        (
            "unknown name not echoed",
            card_body(vec![set("bad-name", 1)]),
            &[("data", "Unknown field")],
        ),
        (
            "pan as a key",
            card_body_with_key(PAN),
            &[("data", "Unknown field")],
        ),
        (
            "pan as a key, nothing else",
            raw(&format!(r#"{{"data":{{"{PAN}":1}}}}"#)),
            &[
                ("data.gateway", "Missing field"),
                ("data.method", "Missing field"),
            ],
        ),
        (
            "cvv inside a key",
            card_body(vec![set("cvv987", 1)]),
            &[("data", "Unknown field")],
        ),
        (
            "65-character name",
            card_body_with_key(&long_name),
            &[("data", "Unknown field")],
        ),
        (
            "64-character name",
            card_body_with_key(&long_name[1..]),
            LONG_64,
        ),
        (
            "unknown at top level",
            raw(&format!(
                r#"{{"data":{},"meta":1}}"#,
                serde_json::to_string(&card_data()).unwrap()
            )),
            &[("meta", "Unknown field")],
        ),
        (
            "unsafe name at top level",
            raw(&format!(
                r#"{{"data":{},"x-y":1}}"#,
                serde_json::to_string(&card_data()).unwrap()
            )),
            &[("body", "Unknown field")],
        ),
        (
            "top-level unknown and data missing",
            raw(r#"{"dat":{}}"#),
            &[("data", "Missing field"), ("dat", "Unknown field")],
        ),
    ]);
}

/// The valid card body plus a member named `key`.
fn card_body_with_key(key: &str) -> Vec<u8> {
    let mut data = card_data();
    data.insert(key.to_owned(), json!(1));
    serde_json::to_vec(&json!({ "data": data })).unwrap()
}

const LONG_64: &[(&str, &str)] = &[(
    "data.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "Unknown field",
)];

#[test]
fn duplicate_fields() {
    let valid = r#""gateway":"card_connect","method":"purchase","first_name":"Zelda","last_name":"Quux","month":"08","year":"2031","verification_value":"987""#;
    run(vec![
        (
            "number twice",
            raw(&format!(
                r#"{{"data":{{{valid},"number":"{PAN}","number":"{AMEX_PAN}"}}}}"#
            )),
            &[("data.number", "Duplicate field")],
        ),
        (
            "same number twice",
            raw(&format!(
                r#"{{"data":{{{valid},"number":"{PAN}","number":"{PAN}"}}}}"#
            )),
            &[("data.number", "Duplicate field")],
        ),
        (
            "cvv twice",
            raw(&format!(
                r#"{{"data":{{{valid},"number":"{PAN}","verification_value":"123"}}}}"#
            )),
            &[("data.verification_value", "Duplicate field")],
        ),
        (
            "gateway twice, second not allowed",
            raw(&format!(
                r#"{{"data":{{{valid},"number":"{PAN}","gateway":"paypal"}}}}"#
            )),
            &[("data.gateway", "Duplicate field")],
        ),
        (
            "unknown twice is one error",
            raw(&format!(
                r#"{{"data":{{{valid},"number":"{PAN}","extra":1,"extra":2}}}}"#
            )),
            &[("data.extra", "Unknown field")],
        ),
        (
            "data twice",
            raw(&format!(
                r#"{{"data":{{{valid},"number":"{PAN}"}},"data":{{}}}}"#
            )),
            &[("data", "Duplicate field")],
        ),
    ]);
}

#[test]
fn malformed_json() {
    let rows: Vec<Row> = vec![
        ("empty body", raw(""), &[("body", "Malformed JSON")]),
        (
            "truncated",
            raw(&format!(r#"{{"data":{{"number":"{PAN}""#)),
            &[("body", "Malformed JSON")],
        ),
        (
            "not json",
            raw("number=4111111111111111&cvv=987"),
            &[("body", "Malformed JSON")],
        ),
        (
            "trailing garbage",
            raw(&format!(r#"{{"data":{{}}}} {PAN}"#)),
            &[("body", "Malformed JSON")],
        ),
        (
            "single quotes",
            raw(&format!("{{'data':{{'number':'{PAN}'}}}}")),
            &[("body", "Malformed JSON")],
        ),
        (
            "trailing comma",
            raw(r#"{"data":{},}"#),
            &[("body", "Malformed JSON")],
        ),
        (
            "invalid utf-8",
            b"{\"data\":{\"first_name\":\"\xff\"}}".to_vec(),
            &[("body", "Malformed JSON")],
        ),
        (
            "lone surrogate",
            raw(r#"{"data":{"first_name":"\ud800"}}"#),
            &[("body", "Malformed JSON")],
        ),
        (
            "deep nesting",
            raw(&format!("{}{}", "[".repeat(1000), "]".repeat(1000))),
            &[("body", "Malformed JSON")],
        ),
    ];
    run(rows);
}

#[test]
fn token_form() {
    let part64 = "a".repeat(64);
    let part65 = "a".repeat(65);
    run(vec![
        ("valid", token_body(vec![]), OK),
        (
            "64-character parts",
            token_body(vec![set("payment", format!("{part64}|{part64}"))]),
            OK,
        ),
        (
            "authorize",
            token_body(vec![set("method", "authorize")]),
            OK,
        ),
        (
            "no separator",
            token_body(vec![set("payment", "acct1prof2")]),
            &[("data.payment", "Invalid payment token")],
        ),
        (
            "empty account",
            token_body(vec![set("payment", "|prof2")]),
            &[("data.payment", "Invalid payment token")],
        ),
        (
            "empty profile",
            token_body(vec![set("payment", "acct1|")]),
            &[("data.payment", "Invalid payment token")],
        ),
        (
            "three parts",
            token_body(vec![set("payment", "acct1|prof2|x")]),
            &[("data.payment", "Invalid payment token")],
        ),
        (
            "dash",
            token_body(vec![set("payment", "acct-1|prof2")]),
            &[("data.payment", "Invalid payment token")],
        ),
        (
            "non-ascii",
            token_body(vec![set("payment", "acctü|prof2")]),
            &[("data.payment", "Invalid payment token")],
        ),
        (
            "65-character part",
            token_body(vec![set("payment", format!("{part65}|prof2"))]),
            &[("data.payment", "Invalid payment token")],
        ),
        (
            "empty",
            token_body(vec![set("payment", "")]),
            &[("data.payment", "Invalid payment token")],
        ),
        (
            "payment twice",
            raw(
                r#"{"data":{"gateway":"card_connect","method":"purchase","payment":"acct1|prof2","payment":"acct3|prof4"}}"#,
            ),
            &[("data.payment", "Duplicate field")],
        ),
    ]);
}

#[test]
fn mixed_forms() {
    run(vec![
        (
            "payment and number",
            token_body(vec![set("number", PAN)]),
            &[("data", "Mixed payment forms")],
        ),
        (
            "payment and cvv",
            token_body(vec![set("verification_value", CVV)]),
            &[("data", "Mixed payment forms")],
        ),
        (
            "card and payment",
            card_body(vec![set("payment", "acct1|prof2")]),
            &[("data", "Mixed payment forms")],
        ),
        (
            "mixed with other errors",
            card_body(vec![
                set("payment", "acct1|prof2"),
                set("gateway", "paypal"),
                set("extra", 1),
            ]),
            &[
                ("data.gateway", "Gateway not allowed"),
                ("data", "Mixed payment forms"),
            ],
        ),
    ]);
}

#[test]
fn all_errors_are_collected() {
    run(vec![(
        "one error per bad field, in field order",
        card_body(vec![
            set("method", "refund"),
            set("first_name", ""),
            set("number", break_luhn(PAN)),
            set("month", "13"),
            set("year", "31"),
            set("verification_value", "98"),
            set("extra", 1),
        ]),
        &[
            ("data.method", "Invalid method"),
            ("data.first_name", "Invalid first name"),
            ("data.number", "Invalid card number"),
            ("data.month", "Invalid expiry month"),
            ("data.year", "Invalid expiry year"),
            ("data.verification_value", "Invalid security code"),
            ("data.extra", "Unknown field"),
        ],
    )]);
}

// ---------------------------------------------------------------------------------------------
// Output: Debug, upstream body, fingerprints
// ---------------------------------------------------------------------------------------------

#[test]
fn debug_and_display_never_show_card_data_or_names() {
    let request = parse(&card_body(vec![])).unwrap();
    let card = request.card().unwrap();
    let outputs = [
        format!("{request:?}"),
        format!("{request:#?}"),
        format!("{card:?}"),
        format!("{:?}", request.data),
        format!("{:?}", card.number),
        format!("{}", card.number),
        format!("{:?}", card.cvv),
        format!("{}", card.cvv),
    ];
    for output in &outputs {
        for secret in [PAN, CVV, FIRST, LAST, "2031"] {
            assert!(!output.contains(secret), "{output:?} shows {secret}");
        }
    }
    assert!(outputs[0].contains("visa ****1111"), "{}", outputs[0]);

    let token = parse(&token_body(vec![])).unwrap();
    let output = format!("{token:?}");
    assert!(
        !output.contains("acct1") && !output.contains("prof2"),
        "{output}"
    );
}

#[test]
fn upstream_body_is_canonical() {
    let expected_card = format!(
        r#"{{"data":{{"gateway":"card_connect","method":"purchase","first_name":"{FIRST}","last_name":"{LAST}","number":"{PAN}","month":"08","year":"2031","verification_value":"{CVV}"}}}}"#
    );
    // Field order, one-digit month and a shuffled input all come out the same.
    let shuffled = raw(&format!(
        r#"{{"data":{{"verification_value":"{CVV}","year":"2031","month":"8","number":"{PAN}","last_name":"{LAST}","first_name":"{FIRST}","method":"purchase","gateway":"card_connect"}}}}"#
    ));
    for body in [card_body(vec![]), shuffled] {
        let upstream = parse(&body).unwrap().to_upstream_body();
        assert_eq!(std::str::from_utf8(&upstream).unwrap(), expected_card);
    }

    let token = parse(&token_body(vec![])).unwrap().to_upstream_body();
    assert_eq!(
        std::str::from_utf8(&token).unwrap(),
        r#"{"data":{"gateway":"card_connect","method":"purchase","payment":"acct1|prof2"}}"#
    );
}

#[test]
fn upstream_body_round_trips() {
    let name = "Zoë \"Z\" \\ O'Brien 山田";
    let body = card_body(vec![
        set("first_name", name),
        set("number", AMEX_PAN),
        set("verification_value", "9876"),
    ]);
    let first = parse(&body).unwrap().to_upstream_body();
    let value: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(value["data"]["first_name"], name);
    assert_eq!(value["data"]["number"], AMEX_PAN);
    // The canonical body is itself a valid request that serializes to the same bytes.
    let second = parse(&first).unwrap().to_upstream_body();
    assert_eq!(*first, *second);
}

#[test]
fn upstream_body_buffer_never_grows() {
    // Worst case for escaping within the rules: names full of quotes and backslashes.
    let name = "\"\\".repeat(50);
    let body = card_body(vec![
        set("first_name", name.as_str()),
        set("last_name", name.as_str()),
    ]);
    let upstream = parse(&body).unwrap().to_upstream_body();
    assert!(upstream.len() <= upstream.capacity());
    let value: Value = serde_json::from_slice(&upstream).unwrap();
    assert_eq!(value["data"]["last_name"], name.as_str());
}

#[test]
fn attempt_fingerprint_covers_expiry_and_cvv() {
    let fingerprint = |changes: Vec<Change>, key: &[u8]| {
        parse(&card_body(changes))
            .unwrap()
            .card()
            .unwrap()
            .attempt_fingerprint(&KeyedHash::new(key))
    };
    let base = fingerprint(vec![], b"k");
    assert_eq!(base, fingerprint(vec![], b"k"));
    assert_eq!(base, fingerprint(vec![set("month", "8")], b"k"));
    assert_eq!(base, hmac(b"k", format!("{PAN}|08|2031|{CVV}").as_bytes()));
    assert_ne!(base, fingerprint(vec![], b"other key"));
    assert_ne!(
        base,
        fingerprint(vec![set("verification_value", "986")], b"k")
    );
    assert_ne!(base, fingerprint(vec![set("month", "09")], b"k"));
    assert_ne!(base, fingerprint(vec![set("year", "2032")], b"k"));
    // The card fingerprint ignores expiry and CVV.
    let card = parse(&card_body(vec![set("verification_value", "986")])).unwrap();
    assert_eq!(
        card.card()
            .unwrap()
            .number
            .fingerprint(&KeyedHash::new(b"k")),
        hmac(b"k", PAN.as_bytes())
    );
}

// ---------------------------------------------------------------------------------------------
// Calendar
// ---------------------------------------------------------------------------------------------

#[test]
fn year_month_from_days() {
    let rows = [
        ("epoch", 0, (1970, 1)),
        ("1970-01-31", 30, (1970, 1)),
        ("1970-02-01", 31, (1970, 2)),
        ("1999-12-31", 10_956, (1999, 12)),
        ("2000-02-29", 11_016, (2000, 2)),
        ("2000-03-01", 11_017, (2000, 3)),
        ("2024-01-01", 19_723, (2024, 1)),
        ("2024-02-29", 19_782, (2024, 2)),
        ("2026-05-31", 20_604, (2026, 5)),
        ("2026-06-01", 20_605, (2026, 6)),
        ("1969-12-31", -1, (1969, 12)),
    ];
    for (name, days, (year, month)) in rows {
        assert_eq!(
            YearMonth::from_unix_days(days),
            YearMonth { year, month },
            "{name}"
        );
    }
    let now = YearMonth::now_utc();
    assert!(now.year >= 2025 && (1..=12).contains(&now.month), "{now:?}");
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// A Luhn-valid PAN of any supported brand, prefix and length, with random middle digits.
fn any_pan() -> impl Strategy<Value = (Brand, String)> {
    (
        0..BRANDS.len(),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        "[0-9]{19}",
    )
        .prop_map(|(b, prefix, len, fill)| {
            let (brand, prefixes, lengths) = BRANDS[b];
            (
                brand,
                luhn_with(prefix.get::<&str>(prefixes), &fill, *len.get(lengths)),
            )
        })
}

proptest! {
    #[test]
    fn any_luhn_valid_pan_parses((brand, pan) in any_pan()) {
        let number = CardNumber::parse(&pan).unwrap();
        prop_assert_eq!(number.brand(), brand);
        prop_assert_eq!(number.bin(), &pan[..6]);
        prop_assert_eq!(number.last4(), &pan[pan.len() - 4..]);
        let debug = format!("{number:?}");
        let display = format!("{number}");
        prop_assert!(!debug.contains(&pan));
        prop_assert!(!display.contains(&pan));
    }

    #[test]
    fn parse_never_panics(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse(&body);
    }

    #[test]
    fn card_values_are_never_echoed(number in "[0-9]{4,19}", cvv in "[0-9]{3,5}", month in "[0-9]{0,3}") {
        let body = card_body(vec![set("number", number.as_str()), set("verification_value", cvv.as_str()), set("month", month.as_str())]);
        if let Err(errors) = parse(&body) {
            for e in &errors {
                let text = format!("{} {} {}", e.source, e.title, e.detail);
                prop_assert!(!text.contains(&number), "{}", text);
                prop_assert!(!text.contains(&cvv), "{}", text);
            }
        }
    }
}

/// Card types cannot be serialized (only the upstream body builder reads them). Method
/// resolution picks the inherent `serializable` only when the type implements `Serialize`, and
/// falls back to the trait's `false` otherwise, so adding a `Serialize` impl (or derive) to
/// either type makes this test fail.
#[test]
fn card_types_do_not_implement_serialize() {
    use std::marker::PhantomData;
    struct Probe<T>(PhantomData<T>);
    trait Fallback {
        fn serializable(&self) -> bool {
            false
        }
    }
    impl<T> Fallback for Probe<T> {}
    impl<T: serde::Serialize> Probe<T> {
        fn serializable(&self) -> bool {
            true
        }
    }
    assert!(
        Probe::<String>(PhantomData).serializable(),
        "the probe works"
    );
    assert!(!Probe::<CardNumber>(PhantomData).serializable());
    assert!(!Probe::<Cvv>(PhantomData).serializable());
}
