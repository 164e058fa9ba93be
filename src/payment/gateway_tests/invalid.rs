//! Every bad member of every gateway names its `source` (one row per case).

use super::*;

/// (case, data as sent, the (source, title) of each error in order).
type BadRow<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

#[test]
fn invalid_members_name_their_source() {
    let rows: &[BadRow] = &[
        (
            "unknown option",
            r#""gateway":"stripe","method":"purchase","payment":"tok_visa","options":{"colour":"red"}"#,
            &[("data.options.colour", "Unknown field")],
        ),
        (
            "option of another gateway",
            r#""gateway":"stripe_connect","method":"purchase","options":{"destination":"acct_1"}"#,
            &[("data.options.destination", "Unknown field")],
        ),
        (
            "option of the wrong type",
            r#""gateway":"stripe","method":"purchase","options":{"receipt_email":7}"#,
            &[("data.options.receipt_email", "Invalid type")],
        ),
        (
            "options not an object",
            r#""gateway":"stripe","method":"purchase","options":"x""#,
            &[("data.options", "Invalid type")],
        ),
        (
            "option twice",
            r#""gateway":"stripe","method":"purchase","options":{"customer":"a","customer":"b"}"#,
            &[("data.options.customer", "Duplicate field")],
        ),
        (
            "boolean as a string",
            r#""gateway":"braintree","method":"purchase","payment":"t","options":{"payment_method_token":"true"}"#,
            &[("data.options.payment_method_token", "Invalid type")],
        ),
        (
            "required payment missing",
            r#""gateway":"braintree","method":"purchase""#,
            &[("data.payment", "Missing field")],
        ),
        (
            "payment where the gateway takes none",
            r#""gateway":"paypal_express_checkout","method":"purchase","payment":"x""#,
            &[("data.payment", "Unknown field")],
        ),
        (
            "nested member of the wrong type",
            r#""gateway":"paypal_express_checkout","method":"purchase","options":{"application_context":{"landing_page":3}}"#,
            &[(
                "data.options.application_context.landing_page",
                "Invalid type",
            )],
        ),
        (
            "unknown nested member",
            r#""gateway":"manual","method":"authorize","paymentmethod_meta":{"note":"x"}"#,
            &[("data.paymentmethod_meta.note", "Unknown field")],
        ),
        (
            "value outside the enumeration",
            r#""gateway":"elastic_path_payments_stripe","method":"purchase","confirmation_method":"sometimes""#,
            &[("data.confirmation_method", "Invalid value")],
        ),
        (
            "list as a string",
            r#""gateway":"elastic_path_payments_stripe","method":"purchase","payment_method_types":"card""#,
            &[("data.payment_method_types", "Invalid type")],
        ),
        (
            "list of numbers",
            r#""gateway":"elastic_path_payments_stripe","method":"purchase","payment_method_types":[1]"#,
            &[("data.payment_method_types", "Invalid type")],
        ),
        (
            "map value not a string",
            r#""gateway":"cyber_source","method":"purchase","payment":"t","options":{"a":1}"#,
            &[("data.options.a", "Invalid type")],
        ),
        (
            "map name not a field name",
            r#""gateway":"cyber_source","method":"purchase","payment":"t","options":{"a-b":"x"}"#,
            &[("data.options", "Invalid field name")],
        ),
        (
            "token with a space",
            r#""gateway":"stripe","method":"purchase","payment":"tok visa""#,
            &[("data.payment", "Invalid payment token")],
        ),
        (
            "empty token",
            r#""gateway":"stripe","method":"purchase","payment":"""#,
            &[("data.payment", "Invalid payment token")],
        ),
        (
            "control character in text",
            r#""gateway":"stripe","method":"purchase","options":{"receipt_email":"a\nb"}"#,
            &[("data.options.receipt_email", "Invalid value")],
        ),
        (
            "amount zero",
            r#""gateway":"manual","method":"purchase","amount":0"#,
            &[("data.amount", "Invalid amount")],
        ),
        (
            "amount negative",
            r#""gateway":"manual","method":"purchase","amount":-5"#,
            &[("data.amount", "Invalid amount")],
        ),
        (
            "amount with decimals",
            r#""gateway":"manual","method":"purchase","amount":54.99"#,
            &[("data.amount", "Invalid amount")],
        ),
        (
            "amount as a string",
            r#""gateway":"manual","method":"purchase","amount":"5499""#,
            &[("data.amount", "Invalid type")],
        ),
        (
            "refund is not a payment method",
            r#""gateway":"manual","method":"refund""#,
            &[("data.method", "Invalid method")],
        ),
        (
            "capture where it was never documented",
            r#""gateway":"braintree","method":"capture","payment":"t""#,
            &[("data.method", "Method not supported")],
        ),
        (
            "card form method",
            &format!(r#""gateway":"braintree","method":"authorize",{CARD}"#),
            &[("data.method", "Method not supported")],
        ),
        (
            "names on the card form that has none",
            &format!(r#""gateway":"authorize_net","method":"purchase",{CARD}"#),
            &[
                ("data.first_name", "Unknown field"),
                ("data.last_name", "Unknown field"),
            ],
        ),
        (
            "card form option of the token form",
            &format!(
                r#""gateway":"stripe","method":"purchase",{CARD},"options":{{"customer":"c"}}"#
            ),
            &[("data.options.customer", "Unknown field")],
        ),
        (
            "payment method types with automatic payment methods",
            r#""gateway":"elastic_path_payments_stripe","method":"purchase","payment_method_types":["card"],"automatic_payment_methods":{"enabled":true}"#,
            &[("data.payment_method_types", "Conflicting fields")],
        ),
        (
            "payment method types with automatic payment methods in options",
            r#""gateway":"elastic_path_payments_stripe","method":"purchase","payment_method_types":["card"],"options":{"automatic_payment_methods":{"enabled":true}}"#,
            &[("data.payment_method_types", "Conflicting fields")],
        ),
        (
            "several at once",
            r#""gateway":"stripe","method":"refund","amount":0,"payment":"","options":{"x":1},"y":2"#,
            &[
                ("data.method", "Invalid method"),
                ("data.amount", "Invalid amount"),
                ("data.payment", "Invalid payment token"),
                ("data.options.x", "Unknown field"),
                ("data.y", "Unknown field"),
            ],
        ),
    ];
    let policy = everything();
    for (case, data, expected) in rows {
        let got = errors_of(&policy, &body(data));
        let expected: Vec<(String, &str)> = expected
            .iter()
            .map(|(s, t)| ((*s).to_owned(), *t))
            .collect();
        assert_eq!(got, expected, "{case}");
    }
}
