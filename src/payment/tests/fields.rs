//! Whole requests through the parser: the rules of each card field.

use super::*;

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
