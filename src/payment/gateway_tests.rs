//! Table tests per gateway, one row per case (in the style of Sentry Relay's `relay-pii`):
//! every documented form of every gateway is accepted and forwarded canonically; every bad
//! member names its `source`; a card number hidden in any token, option or name member (the
//! paths are generated from the gateway table itself) is refused without being echoed; card
//! fields for a gateway not configured for them are refused.

use serde_json::{Map, Value, json};

use super::gateway::{Field, GATEWAYS, Kind};
use super::*;

mod invalid;

const TODAY: YearMonth = YearMonth {
    year: 2026,
    month: 5,
};
const PAN: &str = "4111111111111111";
const CARD: &str = r#""first_name":"Ada","last_name":"Lovelace","number":"4111111111111111","month":"08","year":"2031","verification_value":"123""#;

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Every gateway allowed; raw card fields for the seven that had them.
fn everything() -> GatewayPolicy {
    let all: Vec<&str> = GATEWAYS.iter().map(|g| g.name).collect();
    let raw: Vec<&str> = GATEWAYS
        .iter()
        .filter(|g| g.has_raw_card_form())
        .map(|g| g.name)
        .collect();
    GatewayPolicy::new(&names(&all), &names(&raw)).unwrap()
}

/// Every gateway allowed, none with raw card fields.
fn tokens_only() -> GatewayPolicy {
    let all: Vec<&str> = GATEWAYS.iter().map(|g| g.name).collect();
    GatewayPolicy::new(&names(&all), &[]).unwrap()
}

fn body(data: &str) -> Vec<u8> {
    format!(r#"{{"data":{{{data}}}}}"#).into_bytes()
}

fn errors_of(policy: &GatewayPolicy, body: &[u8]) -> Vec<(String, &'static str)> {
    match PaymentRequest::parse(body, policy, TODAY) {
        Ok(r) => panic!("accepted {r:?}"),
        Err(errors) => {
            let text = format!("{errors:?}");
            assert!(!text.contains("4111"), "an error echoes the card: {text}");
            errors.into_iter().map(|e| (e.source, e.title)).collect()
        }
    }
}

#[test]
fn every_documented_form_is_forwarded_canonically() {
    // (case, data as sent, canonical data forwarded)
    let rows: &[(&str, &str, &str)] = &[
        (
            "adyen token, options in any order",
            r###""options":{"recurring_processing_model":"CardOnFile","shopper_reference":"s-1"},"payment":"##8315","method":"purchase","gateway":"adyen""###,
            r###""gateway":"adyen","method":"purchase","payment":"##8315","options":{"shopper_reference":"s-1","recurring_processing_model":"CardOnFile"}"###,
        ),
        (
            "adyen card",
            &format!(r#""gateway":"adyen","method":"purchase",{CARD}"#),
            &format!(r#""gateway":"adyen","method":"purchase",{CARD}"#),
        ),
        (
            "authorize_net profile",
            r#""gateway":"authorize_net","method":"authorize","payment":"1505372010","options":{"customer_payment_profile_id":"1504721893"}"#,
            r#""gateway":"authorize_net","method":"authorize","payment":"1505372010","options":{"customer_payment_profile_id":"1504721893"}"#,
        ),
        (
            "authorize_net card has no names",
            r#""gateway":"authorize_net","method":"capture","number":"4111111111111111","month":"8","year":"2031","verification_value":"123""#,
            r#""gateway":"authorize_net","method":"capture","number":"4111111111111111","month":"08","year":"2031","verification_value":"123""#,
        ),
        (
            "braintree customer id",
            r#""gateway":"braintree","method":"purchase","payment":"84632718""#,
            r#""gateway":"braintree","method":"purchase","payment":"84632718""#,
        ),
        (
            "braintree payment method token",
            r#""gateway":"braintree","method":"authorize","payment":"8hb5rw","options":{"payment_method_token":true}"#,
            r#""gateway":"braintree","method":"authorize","payment":"8hb5rw","options":{"payment_method_token":true}"#,
        ),
        (
            "braintree nonce with custom fields, sorted",
            r#""gateway":"braintree","method":"purchase","payment":"fake-valid-nonce","options":{"custom_fields":{"z_note":"gift","a_ref":"r-1"},"payment_method_nonce":true}"#,
            r#""gateway":"braintree","method":"purchase","payment":"fake-valid-nonce","options":{"payment_method_nonce":true,"custom_fields":{"a_ref":"r-1","z_note":"gift"}}"#,
        ),
        (
            "braintree card with custom fields",
            &format!(
                r#""gateway":"braintree","method":"purchase",{CARD},"options":{{"custom_fields":{{"ref":"x"}}}}"#
            ),
            &format!(
                r#""gateway":"braintree","method":"purchase",{CARD},"options":{{"custom_fields":{{"ref":"x"}}}}"#
            ),
        ),
        (
            "card_connect stored card (20-digit profile id)",
            r#""gateway":"card_connect","method":"purchase","payment":"1|16178397535388255208""#,
            r#""gateway":"card_connect","method":"purchase","payment":"1|16178397535388255208""#,
        ),
        (
            "card_connect card, legacy capture",
            &format!(r#""gateway":"card_connect","method":"capture",{CARD}"#),
            &format!(r#""gateway":"card_connect","method":"capture",{CARD}"#),
        ),
        (
            "cyber_source token with free options",
            r#""gateway":"cyber_source","method":"purchase","payment":";;;;;;11234FS","options":{"merchant_ref":"m-9"}"#,
            r#""gateway":"cyber_source","method":"purchase","payment":";;;;;;11234FS","options":{"merchant_ref":"m-9"}"#,
        ),
        (
            "cyber_source card",
            &format!(r#""gateway":"cyber_source","method":"purchase",{CARD}"#),
            &format!(r#""gateway":"cyber_source","method":"purchase",{CARD}"#),
        ),
        (
            "elastic_path_payments_stripe, the guide's 3-D Secure example",
            r#""gateway":"elastic_path_payments_stripe","method":"purchase","amount":5499,"payment":"pm_card_threeDSecureRequired","options":{"receipt_email":"john@example.com"}"#,
            r#""gateway":"elastic_path_payments_stripe","method":"purchase","amount":5499,"payment":"pm_card_threeDSecureRequired","options":{"receipt_email":"john@example.com"}"#,
        ),
        (
            "elastic_path_payments_stripe payment element, setup",
            r#""gateway":"elastic_path_payments_stripe","method":"purchase_setup","payment_method_types":["card"],"options":{"confirm":false,"execute_threed":true,"return_url":"https://shop.example/r","confirmation_method":"manual","idempotency_key":"k-1","customer":"cus_1"}"#,
            r#""gateway":"elastic_path_payments_stripe","method":"purchase_setup","payment_method_types":["card"],"options":{"idempotency_key":"k-1","customer":"cus_1","return_url":"https://shop.example/r","confirm":false,"execute_threed":true,"confirmation_method":"manual"}"#,
        ),
        (
            "elastic_path_payments_stripe, automatic methods at the top (SDK) and in options",
            r#""gateway":"elastic_path_payments_stripe","method":"authorize_setup","automatic_payment_methods":{"enabled":true},"confirmation_method":"automatic","options":{"automatic_payment_methods":{"enabled":false}}"#,
            r#""gateway":"elastic_path_payments_stripe","method":"authorize_setup","confirmation_method":"automatic","automatic_payment_methods":{"enabled":true},"options":{"automatic_payment_methods":{"enabled":false}}"#,
        ),
        (
            "manual, the guide's example",
            r#""gateway":"manual","method":"authorize""#,
            r#""gateway":"manual","method":"authorize""#,
        ),
        (
            "manual with its meta, legacy capture",
            r#""gateway":"manual","method":"capture","paymentmethod_meta":{"name":"cash","custom_reference":"till 4"}"#,
            r#""gateway":"manual","method":"capture","paymentmethod_meta":{"custom_reference":"till 4","name":"cash"}"#,
        ),
        (
            "paypal_express_checkout with an application context",
            r#""gateway":"paypal_express_checkout","method":"purchase","amount":1000,"options":{"description":"Order 7","soft_descriptor":"SHOP","application_context":{"brand_name":"Shop","locale":"en-US","landing_page":"LOGIN","shipping_preference":"SET_PROVIDED_ADDRESS","user_action":"PAY_NOW","return_url":"https://shop.example/ok","cancel_url":"https://shop.example/no"}}"#,
            r#""gateway":"paypal_express_checkout","method":"purchase","amount":1000,"options":{"description":"Order 7","soft_descriptor":"SHOP","application_context":{"brand_name":"Shop","locale":"en-US","landing_page":"LOGIN","shipping_preference":"SET_PROVIDED_ADDRESS","user_action":"PAY_NOW","return_url":"https://shop.example/ok","cancel_url":"https://shop.example/no"}}"#,
        ),
        (
            "stripe, the guide's example",
            r#""gateway":"stripe","method":"purchase","payment":"tok_visa","options":{"destination":"acct_XXX","receipt_email":"john@example.com"}"#,
            r#""gateway":"stripe","method":"purchase","payment":"tok_visa","options":{"receipt_email":"john@example.com","destination":"acct_XXX"}"#,
        ),
        (
            "stripe, the SDK's minimal token payment",
            r#""gateway":"stripe","method":"purchase","payment":"tok_1N3T00LkdIwHu7ix""#,
            r#""gateway":"stripe","method":"purchase","payment":"tok_1N3T00LkdIwHu7ix""#,
        ),
        (
            "stripe customer source with an idempotency key",
            r#""gateway":"stripe","method":"authorize","payment":"src_1","options":{"customer":"cus_1","idempotency_key":"8f14e45f"}"#,
            r#""gateway":"stripe","method":"authorize","payment":"src_1","options":{"idempotency_key":"8f14e45f","customer":"cus_1"}"#,
        ),
        (
            "stripe card with a receipt",
            &format!(
                r#""gateway":"stripe","method":"authorize",{CARD},"options":{{"receipt_email":"a@b.example"}}"#
            ),
            &format!(
                r#""gateway":"stripe","method":"authorize",{CARD},"options":{{"receipt_email":"a@b.example"}}"#
            ),
        ),
        (
            "stripe_connect",
            r#""gateway":"stripe_connect","method":"purchase","payment":"pm_1","options":{"idempotency_key":"k"}"#,
            r#""gateway":"stripe_connect","method":"purchase","payment":"pm_1","options":{"idempotency_key":"k"}"#,
        ),
        (
            "stripe_payment_intents",
            r#""gateway":"stripe_payment_intents","method":"authorize","payment":"pm_card_visa","amount":250"#,
            r#""gateway":"stripe_payment_intents","method":"authorize","amount":250,"payment":"pm_card_visa""#,
        ),
        (
            "stripe_payment_intents card (the guide's 3-D Secure card)",
            r#""gateway":"stripe_payment_intents","method":"purchase","first_name":"A","last_name":"B","number":"4000000000003063","month":"10","year":"2031","verification_value":"123""#,
            r#""gateway":"stripe_payment_intents","method":"purchase","first_name":"A","last_name":"B","number":"4000000000003063","month":"10","year":"2031","verification_value":"123""#,
        ),
    ];
    let policy = everything();
    for (case, sent, forwarded) in rows {
        let request = PaymentRequest::parse(&body(sent), &policy, TODAY)
            .unwrap_or_else(|e| panic!("{case}: refused: {e:#?}"));
        let upstream = request.to_upstream_body();
        let expected = String::from_utf8(body(forwarded)).unwrap();
        assert_eq!(std::str::from_utf8(&upstream).unwrap(), expected, "{case}");
        // The canonical body is itself accepted and comes out the same.
        let again = PaymentRequest::parse(&upstream, &policy, TODAY).unwrap();
        assert_eq!(*again.to_upstream_body(), *upstream, "{case}: round trip");
    }
}

#[test]
fn every_gateway_and_method() {
    let policy = everything();
    for g in &GATEWAYS {
        for m in Method::ALL {
            let b = body(&format!(
                r#""gateway":"{}","method":"{}"{}"#,
                g.name,
                m.as_str(),
                minimal_token(g.fields)
            ));
            let result = PaymentRequest::parse(&b, &policy, TODAY);
            if g.methods.contains(&m) {
                assert!(result.is_ok(), "{} {}: {result:?}", g.name, m.as_str());
            } else {
                assert_eq!(
                    errors_of(&policy, &b),
                    [("data.method".to_owned(), "Method not supported")],
                    "{} {}",
                    g.name,
                    m.as_str()
                );
            }
        }
    }
}

/// `,"payment":"..."` when the gateway requires one.
fn minimal_token(fields: &[Field]) -> &'static str {
    match fields.iter().find(|f| f.name == "payment" && f.required) {
        Some(Field {
            kind: Kind::AcctProfile,
            ..
        }) => r#","payment":"1|2""#,
        Some(_) => r#","payment":"tok_1""#,
        None => "",
    }
}

/// Every string member of a gateway's token form, as (path below `data`, JSON to put there
/// so that the member holds `value`), walked from the table.
fn string_members(fields: &[Field], prefix: &str, value: &str, out: &mut Vec<(String, Value)>) {
    for f in fields {
        let path = format!("{prefix}{}", f.name);
        match &f.kind {
            Kind::Token | Kind::AcctProfile | Kind::Text => out.push((path, json!(value))),
            Kind::TextList => out.push((path, json!(["card", value]))),
            Kind::TextMap => out.push((format!("{path}.ref"), json!(value))),
            Kind::Object(inner) => string_members(inner, &format!("{path}."), value, out),
            Kind::Bool | Kind::OneOf(_) | Kind::Amount => {}
        }
    }
}

/// Sets `path` (dotted, below `data`) to `value`, creating objects on the way.
fn put(data: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            data.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let inner = data
                .entry(head.to_owned())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .unwrap();
            put(inner, rest, value);
        }
    }
}

#[test]
fn a_card_number_in_any_token_option_or_name_is_refused() {
    let hidden = [
        PAN.to_owned(),
        "4111 1111 1111 1111".to_owned(),
        "4111-1111-1111-1111".to_owned(),
        format!("tok_{PAN}"),
        "378282246310005".to_owned(),
    ];
    let policy = tokens_only();
    let mut cases = 0;
    for g in &GATEWAYS {
        for value in &hidden {
            let mut members = Vec::new();
            string_members(g.fields, "", value, &mut members);
            for (path, v) in members {
                let mut data = Map::new();
                data.insert("gateway".into(), json!(g.name));
                data.insert("method".into(), json!("purchase"));
                if g.fields.iter().any(|f| f.name == "payment" && f.required) {
                    let token = if g.name == "card_connect" { "1|2" } else { "t" };
                    data.insert("payment".into(), json!(token));
                }
                put(&mut data, &path, v);
                let b = serde_json::to_vec(&json!({ "data": data })).unwrap();
                let source = format!("data.{path}");
                let got = errors_of(&policy, &b);
                assert_eq!(
                    got,
                    [(source, "Card number where a token is expected")],
                    "{} {path} = {value:?}",
                    g.name
                );
                cases += 1;
            }
        }
    }
    // 40 string members across the eleven gateways, five disguises each.
    assert_eq!(cases, 5 * 40);
}

#[test]
fn numbers_that_are_not_cards_pass() {
    let policy = tokens_only();
    for data in [
        r#""gateway":"card_connect","method":"purchase","payment":"1|16178397535388255208""#,
        r#""gateway":"braintree","method":"purchase","payment":"411111111111""#,
        r#""gateway":"stripe","method":"purchase","options":{"idempotency_key":"4111111111111112"}"#,
        r#""gateway":"manual","method":"purchase","paymentmethod_meta":{"custom_reference":"2026-12-05 order 1234"}"#,
    ] {
        let result = PaymentRequest::parse(&body(data), &policy, TODAY);
        assert!(result.is_ok(), "{data}: {result:?}");
    }
}

#[test]
fn card_fields_are_refused_for_a_gateway_not_configured_for_them() {
    let policy = tokens_only();
    for g in &GATEWAYS {
        let b = body(&format!(
            r#""gateway":"{}","method":"purchase",{CARD}"#,
            g.name
        ));
        assert_eq!(
            errors_of(&policy, &b),
            [("data".to_owned(), "Card data not accepted")],
            "{}",
            g.name
        );
    }
    // Allowed for card_connect alone (the default), still refused for stripe.
    let policy = GatewayPolicy::new(
        &names(&["card_connect", "stripe"]),
        &names(&["card_connect"]),
    )
    .unwrap();
    let stripe = body(&format!(r#""gateway":"stripe","method":"purchase",{CARD}"#));
    assert_eq!(
        errors_of(&policy, &stripe),
        [("data".to_owned(), "Card data not accepted")]
    );
    let cc = body(&format!(
        r#""gateway":"card_connect","method":"purchase",{CARD}"#
    ));
    assert!(PaymentRequest::parse(&cc, &policy, TODAY).is_ok());
}

#[test]
fn policy_errors_name_the_key() {
    let err = GatewayPolicy::new(&names(&["card_connect", "paypal"]), &[]).unwrap_err();
    assert_eq!(err.key(), "payments.gateways");
    let text = err.to_string();
    assert!(text.contains("\"paypal\""), "{text}");
    for g in &GATEWAYS {
        assert!(text.contains(g.name), "{text} lacks {}", g.name);
    }
    assert_eq!(
        GatewayPolicy::new(&[], &[]).unwrap_err(),
        PolicyError::Empty
    );
    let err = GatewayPolicy::new(&names(&["card_connect"]), &names(&["stripe"])).unwrap_err();
    assert_eq!(err.key(), "payments.raw_card_gateways");
    let err = GatewayPolicy::new(&names(&["manual"]), &names(&["manual"])).unwrap_err();
    assert_eq!(err, PolicyError::NoRawCardForm("manual".into()));
    assert!(err.to_string().contains("card_connect"), "{err}");
}

#[test]
fn the_name_list_matches_the_table() {
    let table: Vec<&str> = GATEWAYS.iter().map(|g| g.name).collect();
    assert_eq!(table, super::gateway::NAMES);
}
