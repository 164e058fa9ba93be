//! The scanner's rules as a table of cases, and as properties over generated text; and the
//! start-up canary against the scrubbing writer, which spans two files (`canary.rs`,
//! `writer.rs`) and so is tested here rather than in either.

use std::borrow::Cow;

use proptest::prelude::*;

use super::canary::group;
use super::pan::{MAX_PAN, MIN_PAN};
use super::{CANARY_PAN, CanaryError, ScrubbingMakeWriter, canary_check, scrub, scrub_bytes};

// --- reference implementation of the invariant (kept deliberately naive) -----------------

/// Maximal digit runs (single space/dash between digits joins), as digit strings.
fn digit_runs(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let mut runs = Vec::new();
    let mut cur = String::new();
    for (i, &c) in b.iter().enumerate() {
        if c.is_ascii_digit() {
            cur.push(c as char);
        } else if (c == b' ' || c == b'-')
            && !cur.is_empty()
            && i > 0
            && b[i - 1].is_ascii_digit()
            && b.get(i + 1).is_some_and(u8::is_ascii_digit)
        {
        } else if !cur.is_empty() {
            runs.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        runs.push(cur);
    }
    runs
}

fn luhn_ok(digits: &[u8]) -> bool {
    crate::luhn::valid(digits.iter().copied())
}

fn luhn_str(d: &str) -> bool {
    let v: Vec<u8> = d.bytes().map(|c| c - b'0').collect();
    luhn_ok(&v)
}

fn has_luhn_valid_run(s: &str) -> bool {
    digit_runs(s)
        .iter()
        .any(|r| (MIN_PAN..=MAX_PAN).contains(&r.len()) && luhn_str(r))
}

fn strip_seps(s: &str) -> String {
    s.chars().filter(|&c| c != ' ' && c != '-').collect()
}

// --- table -------------------------------------------------------------------------------

#[test]
fn table() {
    #[rustfmt::skip]
    let cases: &[(&str, &str, &str)] = &[
        // brands, plain
        ("visa_16", "card 4111111111111111 ok", "card [PAN ****1111] ok"),
        ("visa_13", "card 4222222222222 ok", "card [PAN ****2222] ok"),
        ("visa_12", "n=400000000002.", "n=[PAN ****0002]."),
        ("mastercard_5", "5555555555554444", "[PAN ****4444]"),
        ("mastercard_2_series", "pan 2223003122003222", "pan [PAN ****3222]"),
        ("mastercard_2221", "pan 2221000000000009", "pan [PAN ****0009]"),
        ("amex_15", "amex 378282246310005", "amex [PAN ****0005]"),
        ("discover", "6011111111111117", "[PAN ****1117]"),
        ("jcb", "jcb 3530111333300000", "jcb [PAN ****0000]"),
        ("diners_14", "diners 30569309025904 x", "diners [PAN ****5904] x"),
        ("diners_36", "36227206271667", "[PAN ****1667]"),
        ("unionpay_16", "6200000000000005", "[PAN ****0005]"),
        ("unionpay_19", "cup 6212345678901234569 end", "cup [PAN ****4569] end"),
        // spaced and dashed
        ("visa_spaced", "card 4111 1111 1111 1111 ok", "card [PAN ****1111] ok"),
        ("visa_dashed", "card 4111-1111-1111-1111 ok", "card [PAN ****1111] ok"),
        ("amex_spaced", "3782 822463 10005", "[PAN ****0005]"),
        ("amex_dashed", "3782-822463-10005", "[PAN ****0005]"),
        ("diners_spaced", "3056 930902 5904", "[PAN ****5904]"),
        ("unionpay_19_spaced", "6212 3456 7890 1234 569", "[PAN ****4569]"),
        ("mixed_separators", "4111 1111-1111 1111", "[PAN ****1111]"),
        // position
        ("start", "4111111111111111 first", "[PAN ****1111] first"),
        ("end", "last 5555555555554444", "last [PAN ****4444]"),
        ("alone", "378282246310005", "[PAN ****0005]"),
        ("next_to_letters", "abc4111111111111111xyz", "abc[PAN ****1111]xyz"),
        ("next_to_punct", "(4111111111111111)", "([PAN ****1111])"),
        ("two_pans", "a 4111111111111111 b 5555555555554444", "a [PAN ****1111] b [PAN ****4444]"),
        // JSON
        ("json_string", r#"{"number":"4111111111111111","x":1}"#, r#"{"number":"[PAN ****1111]","x":1}"#),
        ("json_number", r#"{"number": 4111111111111111}"#, r#"{"number": [PAN ****1111]}"#),
        ("escaped_json", r#"{"message":"body {\"number\":\"4111111111111111\"}"}"#,
            r#"{"message":"body {\"number\":\"[PAN ****1111]\"}"}"#),
        ("json_spaced", r#"{"number":"4111 1111 1111 1111"}"#, r#"{"number":"[PAN ****1111]"}"#),
        // runs touching other digits
        ("glued_by_space", "qty 2 4111111111111111", "qty [PAN ****1111]"),
        ("glued_long_run", "4111111111111111 2024 12", "[PAN ****1111]"),
        // (long runs show the last four of the first Luhn-valid window found)
        ("inside_25_digits", "id 1234567894111111111111111", "id [PAN ****9411]"),
        ("pan_then_cvv", "4111 1111 1111 1111 123", "[PAN ****1111]"),
        // non-PANs left alone
        ("timestamp_ms", "ts=1700000000000 done", "ts=1700000000000 done"),
        ("uuid", "order 0190a3b2-7c4d-7123-8456-123456789012 ok", "order 0190a3b2-7c4d-7123-8456-123456789012 ok"),
        ("uuid_upper", "0190A3B2-7C4D-7123-8456-123456789012", "0190A3B2-7C4D-7123-8456-123456789012"),
        ("ipv4", "peer 192.168.100.200:8443", "peer 192.168.100.200:8443"),
        ("eleven_digits", "n 41111111111 x", "n 41111111111 x"),
        ("order", "order 12345 paid", "order 12345 paid"),
        ("luhn_fail_16", "4111111111111112", "4111111111111112"),
        ("luhn_fail_spaced", "4111 1111 1111 1112", "4111 1111 1111 1112"),
        ("double_space_splits", "400000  000002", "400000  000002"),
        ("date", "2025-01-15T10:00:00.123456Z", "2025-01-15T10:00:00.123456Z"),
        ("phone", "+1 415 555 0100", "+1 415 555 0100"),
        ("empty", "", ""),
        ("unicode", "ünïcödé 🦀 text", "ünïcödé 🦀 text"),
        ("unicode_pan", "ü4111111111111111🦀", "ü[PAN ****1111]🦀"),
        // CVV keys, every form
        ("json_cvv", r#"{"cvv":"123"}"#, r#"{"cvv":"[REDACTED]"}"#),
        ("json_cvv_number", r#"{"cvv": 123}"#, r#"{"cvv": [REDACTED]}"#),
        ("json_cvv_spaces", r#"{"cvv" : "1234" }"#, r#"{"cvv" : "[REDACTED]" }"#),
        ("json_verification_value", r#"{"verification_value":"123","month":"01"}"#,
            r#"{"verification_value":"[REDACTED]","month":"01"}"#),
        ("escaped_json_cvv", r#"{"message":"{\"verification_value\":\"123\"}"}"#,
            r#"{"message":"{\"verification_value\":\"[REDACTED]\"}"}"#),
        ("escaped_json_cvv_number", r#"{"m":"{\"cvc\":123}"}"#, r#"{"m":"{\"cvc\":[REDACTED]}"}"#),
        ("double_escaped", r#"{"m":"{\"n\":\"{\\\"cvv\\\":\\\"123\\\"}\"}"}"#,
            r#"{"m":"{\"n\":\"{\\\"cvv\\\":\\\"[REDACTED]\\\"}\"}"}"#),
        ("kv", "cvv=123 next=1", "cvv=[REDACTED] next=1"),
        ("kv_quoted", r#"cvv="123" next=1"#, r#"cvv="[REDACTED]" next=1"#),
        ("kv_single_quoted", "cvv='123'", "cvv='[REDACTED]'"),
        ("colon", "cvv: 123", "cvv: [REDACTED]"),
        ("colon_comma", "cvv: 123, month: 1", "cvv: [REDACTED], month: 1"),
        ("upper", "CVV=123", "CVV=[REDACTED]"),
        ("mixed_case", r#"{"Security_Code":"1234"}"#, r#"{"Security_Code":"[REDACTED]"}"#),
        ("cvc", "cvc=123", "cvc=[REDACTED]"),
        ("cvv2", "cvv2=123", "cvv2=[REDACTED]"),
        ("cvc2", r#""cvc2":"123""#, r#""cvc2":"[REDACTED]""#),
        ("security_code", "security_code: 1234", "security_code: [REDACTED]"),
        ("card_code", "card_code=123", "card_code=[REDACTED]"),
        ("camel_case", r#"{"securityCode":"123","verificationValue":"456"}"#,
            r#"{"securityCode":"[REDACTED]","verificationValue":"[REDACTED]"}"#),
        ("suffix_key", r#"{"card_cvv":"123"}"#, r#"{"card_cvv":"[REDACTED]"}"#),
        ("form_bracket", "card[cvc]=123&x=1", "card[cvc]=[REDACTED]&x=1"),
        ("form_encoded_bracket", "card%5Bcvc%5D=123&x=1", "card%5Bcvc%5D=[REDACTED]&x=1"),
        ("debug_some", "Card { cvv: Some(123) }", "Card { cvv: [REDACTED] }"),
        ("debug_some_str", r#"Card { cvv: Some("123") }"#, "Card { cvv: [REDACTED] }"),
        ("string_with_escaped_quote", r#"{"cvv":"1\"23","x":1}"#, r#"{"cvv":"[REDACTED]","x":1}"#),
        ("unterminated", r#"{"cvv":"123"#, r#"{"cvv":"[REDACTED]"#),
        ("empty_value", r#"{"cvv":""}"#, r#"{"cvv":""}"#),
        // CVV-like words that are not keys with values
        ("cvv_prose", "invalid cvv length", "invalid cvv length"),
        ("cvv_other_key", "cvv_length=3", "cvv_length=3"),
        ("cvv_as_value", r#"{"field":"cvv","n":3}"#, r#"{"field":"cvv","n":3}"#),
        ("cvvs", "cvvs=3", "cvvs=3"),
        ("ansi_colours", "\x1b[3mcvv\x1b[0m\x1b[2m=\x1b[0m\"123\" \x1b[3mcvc\x1b[0m\x1b[2m=\x1b[0m123\x1b[0m",
            "\x1b[3mcvv\x1b[0m\x1b[2m=\x1b[0m\"[REDACTED]\" \x1b[3mcvc\x1b[0m\x1b[2m=\x1b[0m[REDACTED]\x1b[0m"),
        // found by the fuzzer: digits inside what looked like a colour sequence
        ("not_a_colour_sequence", "card_code\x1b[26\"1234567890123456 9m=456",
            "card_code\x1b[26\"[PAN ****4569]m=456"),
        ("nested_object", r#"{"cvv":{"v":1}}"#, r#"{"cvv":{"v":1}}"#),
    ];
    let mut failures = Vec::new();
    for (name, input, expected) in cases {
        let got = scrub(input);
        if got != *expected {
            failures.push(format!(
                "{name}:\n  input:    {input}\n  expected: {expected}\n  got:      {got}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn test_numbers_are_what_the_table_says() {
    assert!(
        !luhn_str("1700000000000"),
        "the timestamp case must fail Luhn"
    );
    assert!(!luhn_str("4111111111111112"));
    assert!(luhn_str(CANARY_PAN));
    for pan in [
        "4111111111111111",
        "378282246310005",
        "6212345678901234569",
        "30569309025904",
    ] {
        assert!(luhn_str(pan), "{pan}");
    }
}

#[test]
fn nothing_found_borrows() {
    for s in [
        "plain log line",
        "ts=1700000000000",
        r#"{"level":"INFO","n":12}"#,
        "",
    ] {
        assert!(matches!(scrub(s), Cow::Borrowed(_)), "{s}");
        assert!(matches!(scrub_bytes(s.as_bytes()), Cow::Borrowed(_)), "{s}");
    }
}

#[test]
fn scrub_bytes_handles_invalid_utf8() {
    let mut input = b"\xff\xfe card 4111111111111111 \xc3".to_vec();
    input.extend_from_slice(b" cvv=123");
    let out = scrub_bytes(&input);
    assert_eq!(&*out, b"\xff\xfe card [PAN ****1111] \xc3 cvv=[REDACTED]");
}

#[test]
fn long_digit_runs() {
    // Windows of 12-19 ones sum to 18, 19, 21, 22, 24, 25, 27, 28: none is Luhn-valid.
    let ones = "1".repeat(30);
    assert!(matches!(scrub(&ones), Cow::Borrowed(_)));
    assert_eq!(scrub(&"0".repeat(25)), "[PAN ****0000]");
}

#[test]
fn uuid_exemption_does_not_hide_luhn_valid_groups() {
    // The last group is 12 digits and Luhn-valid: the rule still applies inside a UUID.
    let s = "0190a3b2-7c4d-7abc-8def-400000000002";
    assert_eq!(scrub(s), "0190a3b2-7c4d-7abc-8def-[PAN ****0002]");
    // Touching digits: not a standalone UUID, so the long-run rule applies.
    let glued = "1 01900000-0000-7000-8000-000000000000";
    assert!(!has_luhn_valid_run(&scrub(glued)));
}

// --- properties --------------------------------------------------------------------------

const BRAND_PREFIXES: &[&str] = &[
    "4", "51", "52", "53", "54", "55", "2221", "2500", "2720", "34", "37", "6011", "644", "65",
    "3528", "3589", "36", "300", "305", "38", "62", "81", "60", "9",
];

/// A Luhn-valid number of 12-19 digits starting with one of the brand prefixes.
fn pan() -> impl Strategy<Value = String> {
    (prop::sample::select(BRAND_PREFIXES), MIN_PAN..=MAX_PAN).prop_flat_map(|(prefix, len)| {
        prop::collection::vec(0u8..10, len - prefix.len() - 1).prop_map(move |body| {
            let mut digits: Vec<u8> = prefix.bytes().map(|c| c - b'0').collect();
            digits.extend(body);
            digits.push(0);
            let check = (0..10u8)
                .find(|&d| {
                    *digits.last_mut().unwrap() = d;
                    luhn_ok(&digits)
                })
                .unwrap();
            *digits.last_mut().unwrap() = check;
            digits.iter().map(|d| char::from(b'0' + d)).collect()
        })
    })
}

/// Plain, spaced or dashed in groups of four, or Amex-style 4-6-rest.
fn formatted_pan() -> impl Strategy<Value = (String, String)> {
    (pan(), 0..5u8).prop_map(|(pan, style)| {
        let text = match style {
            0 => pan.clone(),
            1 => group(&pan, ' '),
            2 => group(&pan, '-'),
            3 => format!("{} {} {}", &pan[..4], &pan[4..10], &pan[10..]),
            _ => format!("{}-{}-{}", &pan[..4], &pan[4..10], &pan[10..]),
        };
        (pan, text)
    })
}

fn fence(prefix: &str, suffix: &str, middle: &str) -> String {
    // Text touching the number with a digit would make it a different number.
    let mut s = prefix.to_string();
    if s.ends_with(|c: char| c.is_ascii_digit()) {
        s.push('x');
    }
    s.push_str(middle);
    if suffix.starts_with(|c: char| c.is_ascii_digit()) {
        s.push('x');
    }
    s.push_str(suffix);
    s
}

fn uuid() -> impl Strategy<Value = String> {
    (any::<[u8; 16]>(), any::<bool>()).prop_map(|(bytes, upper)| {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let s = format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        );
        if upper { s.to_ascii_uppercase() } else { s }
    })
}

/// Text without digits and without the first letters of the CVV keys.
const QUIET_TEXT: &str = "[a-bd-ru-zA-BD-RU-Z .,:;{}\"=/_()ü🦀]{0,24}";

proptest! {
    // No regression files: this module's tests must not write into the source tree.
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn pan_in_text_is_masked(
        (pan, text) in formatted_pan(),
        prefix in "\\PC{0,40}",
        suffix in "\\PC{0,40}",
    ) {
        let input = fence(&prefix, &suffix, &text);
        let out = scrub(&input);
        prop_assert!(!strip_seps(&out).contains(&pan), "{input:?} -> {out:?}");
        prop_assert!(!has_luhn_valid_run(&out), "{input:?} -> {out:?}");
    }

    #[test]
    fn pan_in_json_is_masked(
        (pan, text) in formatted_pan(),
        note in "\\PC{0,20}",
        form in 0..4u8,
    ) {
        let note = note.replace(['"', '\\'], "");
        let input = match form {
            0 => format!(r#"{{"data":{{"number":"{text}","note":"{note}"}}}}"#),
            1 => format!(r#"{{"data":{{"number":{pan},"note":"{note}"}}}}"#),
            2 => format!(r#"{{"message":"body {{\"number\":\"{text}\",\"n\":\"{note}\"}}"}}"#),
            _ => format!(r#"{{"message":"{note} card {text} declined","level":"WARN"}}"#),
        };
        let out = scrub(&input);
        prop_assert!(!strip_seps(&out).contains(&pan), "{input:?} -> {out:?}");
        prop_assert!(!has_luhn_valid_run(&out), "{input:?} -> {out:?}");
    }

    #[test]
    fn luhn_invalid_runs_pass_unchanged(
        mut digits in prop::collection::vec(0u8..10, MIN_PAN..=MAX_PAN),
        prefix in QUIET_TEXT,
        suffix in QUIET_TEXT,
    ) {
        if luhn_ok(&digits) {
            let last = digits.last_mut().unwrap();
            *last = (*last + 1) % 10;
        }
        let run: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
        let input = format!("{prefix}{run}{suffix}");
        let out = scrub(&input);
        prop_assert!(matches!(out, Cow::Borrowed(_)), "{input:?} -> {out:?}");
    }

    #[test]
    fn short_numbers_pass_unchanged(
        nums in prop::collection::vec(0u64..100_000_000_000, 1..6),
        sep in prop::sample::select(vec![", ", "; ", ".", ":", "/", " | "]),
    ) {
        let input = nums.iter().map(u64::to_string).collect::<Vec<_>>().join(sep);
        prop_assert!(matches!(scrub(&input), Cow::Borrowed(_)), "{input:?}");
    }

    #[test]
    fn uuids_pass_unchanged(
        ids in prop::collection::vec(uuid(), 1..4),
        prefix in QUIET_TEXT,
        sep in prop::sample::select(vec![", ", "\",\"", "  ", " / ", "\n"]),
    ) {
        // Not joined by a single space: digits on both sides of one would make one long
        // digit run of two UUIDs (only a UUID standing alone is exempt).
        let input = format!("{prefix}{}", ids.join(sep));
        prop_assume!(!has_luhn_valid_run(&input));
        let out = scrub(&input);
        prop_assert!(matches!(out, Cow::Borrowed(_)), "{input:?} -> {out:?}");
    }

    #[test]
    fn never_panics_and_is_idempotent(s in "\\PC*") {
        let once = scrub(&s).into_owned();
        let twice = scrub(&once).into_owned();
        prop_assert_eq!(&once, &twice);
    }

    #[test]
    fn invariant_on_digit_heavy_text(s in "[0-9 \\-a\"cv=:]{0,80}") {
        let out = scrub(&s);
        prop_assert!(!has_luhn_valid_run(&out), "{s:?} -> {out:?}");
        prop_assert_eq!(scrub(&out), out.clone());
    }

    #[test]
    fn long_runs_masked_iff_a_window_is_valid(
        digits in prop::collection::vec(0u8..10, MAX_PAN + 1..40),
        dashes in any::<bool>(),
    ) {
        let run: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
        let any_valid = (0..digits.len()).any(|a| {
            (MIN_PAN..=MAX_PAN).any(|len| a + len <= digits.len() && luhn_ok(&digits[a..a + len]))
        });
        let input = if dashes { group(&run, '-') } else { run };
        let out = scrub(&input);
        prop_assert_eq!(any_valid, out.starts_with("[PAN ****"), "{:?} -> {:?}", input, out);
        prop_assert!(any_valid || out == input.as_str());
    }

    #[test]
    fn never_panics_on_bytes(b in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = scrub_bytes(&b);
    }

    #[test]
    fn cvv_values_are_redacted(
        key in prop::sample::select(vec!["cvv", "CVC", "cvv2", "Cvc2", "verification_value", "security_code", "card_code"]),
        cvv in "[0-9]{3,4}",
        form in 0..6u8,
    ) {
        let input = match form {
            0 => format!(r#"{{"{key}":"{cvv}"}}"#),
            1 => format!(r#"{{"{key}": {cvv}}}"#),
            2 => format!(r#"{{"m":"{{\"{key}\":\"{cvv}\"}}"}}"#),
            3 => format!("{key}={cvv} x=1"),
            4 => format!(r#"{key}="{cvv}" x=1"#),
            _ => format!("{key}: {cvv}, x: 1"),
        };
        let out = scrub(&input);
        prop_assert!(out.contains("[REDACTED]"), "{input:?} -> {out:?}");
        prop_assert!(!out.contains(&cvv), "{input:?} -> {out:?}");
    }
}

// --- the start-up canary through the scrubbing writer -------------------------------------

#[test]
fn canary_passes_with_scrubbing_pipeline() {
    let json = canary_check(|w| {
        tracing_subscriber::fmt()
            .json()
            .with_writer(ScrubbingMakeWriter::new(w))
            .finish()
    });
    assert_eq!(json, Ok(()));
    let pretty = canary_check(|w| {
        tracing_subscriber::fmt()
            .pretty()
            .with_ansi(false)
            .with_writer(ScrubbingMakeWriter::new(w))
            .finish()
    });
    assert_eq!(pretty, Ok(()));
    let text = canary_check(|w| {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_writer(ScrubbingMakeWriter::new(w))
            .finish()
    });
    assert_eq!(text, Ok(()));
}

#[test]
fn canary_fails_when_filtered_out() {
    let err = canary_check(|w| {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("off"))
            .with_writer(ScrubbingMakeWriter::new(w))
            .finish()
    });
    assert_eq!(err, Err(CanaryError::NotEmitted));
}
