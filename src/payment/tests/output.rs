//! What leaves the module: Debug and Display, the upstream body, fingerprints, the calendar, properties.

use super::*;

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
