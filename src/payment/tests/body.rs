//! Whole requests through the parser: gateways, methods, types, missing, unknown and repeated members, JSON errors, forms.

use super::*;

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
