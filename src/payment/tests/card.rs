//! Card numbers and CVVs: brands, lengths, Luhn, masks, fingerprints.

use super::*;

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
