//! The invalid-payment table, card fields: the number, the expiry fields, the CVV per
//! brand, the names, and numbers of a length their brand never issues.

use crate::support;

use serde_json::{Value, json};

use support::cards::{
    self, AMEX, DINERS, DISCOVER, JCB, MASTERCARD, UNIONPAY, VISA, grouped, luhn_broken, pan,
    pan_of_len, utc_year_month,
};

use super::validation::{Bad, bad};
use super::{card_body, valid_year, with};

/// The card fields broken one rule at a time.
pub(super) fn card_cases() -> Vec<Bad> {
    let year = valid_year();
    let visa = pan(VISA, 11);
    let amex = pan(AMEX, 12);
    let ok = || card_body(&visa, "737", "7", &year);
    let s = |v: Value| v.to_string();
    let long_name = "N".repeat(101);
    let far_year = (utc_year_month().0 + 21).to_string();
    vec![
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
    ]
}

/// Luhn-valid numbers with a brand's prefix and a length it never issues.
pub(super) fn wrong_length_cases() -> Vec<Bad> {
    let year = valid_year();
    let s = |v: Value| v.to_string();
    let mut cases = Vec::new();
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
