//! The bodies of the transaction actions (`capture`, `refund`, `cancel`, `confirm`), checked
//! with the same member tables and rules as the payment's token form (`token_form.rs`):
//! unknown members, wrong types and card numbers are refused, naming the member.
//!
//! Every body is optional: the SDK captures with no body at all and refunds or cancels with
//! `{"data":{}}`. The SDK also sends `options` at the top level, beside `data`, whenever its
//! caller passes options (its `buildRequestBody`), so the top-level `options` is accepted
//! with the same members as `data.options`. The body still travels as it came: only its
//! validity is decided here.

use super::field_error::{FieldError, malformed};
use super::gateway::{Field, Kind, NAMES, opt};
use super::json::{Fields, Json};
use super::token_form::{refuse_rest, take_fields};
use crate::route::TransactionAction;

const CAPTURE_OPTIONS: Kind = Kind::Object(&[
    opt("soft_descriptor", Kind::Text),
    opt("note_to_payer", Kind::Text),
]);
/// The guides add `custom_reference` and the manual gateway's `capture_mechanism`; the 2020
/// API's manual capture sent `gateway` and `method` too.
const CAPTURE: &[Field] = &[
    opt(
        "data",
        Kind::Object(&[
            opt("options", CAPTURE_OPTIONS),
            opt("custom_reference", Kind::Text),
            opt("capture_mechanism", Kind::OneOf(&["manual"])),
            opt("gateway", Kind::OneOf(&NAMES)),
            opt("method", Kind::OneOf(&["capture"])),
        ]),
    ),
    opt("options", CAPTURE_OPTIONS),
];

const REFUND_OPTIONS: Kind =
    Kind::Object(&[opt("note", Kind::Text), opt("note_to_payer", Kind::Text)]);
const REFUND: &[Field] = &[
    opt(
        "data",
        Kind::Object(&[opt("amount", Kind::Amount), opt("options", REFUND_OPTIONS)]),
    ),
    opt("options", REFUND_OPTIONS),
];

/// `reason` is free text ("may include duplicate, fraudulent, ..."); `options` an object
/// the specification leaves open.
const CANCEL: &[Field] = &[
    opt(
        "data",
        Kind::Object(&[opt("reason", Kind::Text), opt("options", Kind::TextMap)]),
    ),
    opt("options", Kind::TextMap),
];

/// `{"data":{}}` after 3-D Secure, `{"data":{"gateway":"paypal_express_checkout"}}` after
/// PayPal approval, and the 2020 Payment Intents form with `method` and `payment`.
const CONFIRM: &[Field] = &[
    opt(
        "data",
        Kind::Object(&[
            opt("gateway", Kind::OneOf(&NAMES)),
            opt(
                "method",
                Kind::OneOf(&["purchase", "authorize", "purchase_setup", "authorize_setup"]),
            ),
            opt("payment", Kind::Token),
            opt("options", Kind::TextMap),
        ]),
    ),
    opt("options", Kind::TextMap),
];

/// Checks the body of a transaction action; an empty body is valid.
pub fn check_transaction_body(
    action: TransactionAction,
    body: &[u8],
) -> Result<(), Vec<FieldError>> {
    if body.is_empty() {
        return Ok(());
    }
    let root: Json = serde_json::from_slice(body).map_err(|e| vec![malformed(&e)])?;
    let Json::Object(pairs) = root else {
        return Err(vec![FieldError::new(
            "body",
            "Invalid type",
            "the body must be a JSON object, e.g. {\"data\":{}}",
        )]);
    };
    let spec = match action {
        TransactionAction::Capture => CAPTURE,
        TransactionAction::Refund => REFUND,
        TransactionAction::Cancel => CANCEL,
        TransactionAction::Confirm => CONFIRM,
    };
    let mut fields = Fields::new(pairs);
    let mut errors = Vec::new();
    take_fields(&mut fields, spec, "", &mut errors);
    refuse_rest(&fields, "", &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TransactionAction::{Cancel, Capture, Confirm, Refund};

    /// (case, action, body, the (source, title) of each error; empty: accepted)
    type Row<'a> = (
        &'a str,
        TransactionAction,
        &'a str,
        &'a [(&'a str, &'a str)],
    );

    #[test]
    fn table() {
        let rows: &[Row] = &[
            ("capture without a body (SDK)", Capture, "", &[]),
            ("capture, empty data", Capture, r#"{"data":{}}"#, &[]),
            (
                "capture with options and reference",
                Capture,
                r#"{"data":{"custom_reference":"","options":{"soft_descriptor":"SHOP","note_to_payer":"thanks"}}}"#,
                &[],
            ),
            (
                "manual capture",
                Capture,
                r#"{"data":{"capture_mechanism":"manual"}}"#,
                &[],
            ),
            (
                "2020 manual capture",
                Capture,
                r#"{"data":{"gateway":"manual","method":"capture"}}"#,
                &[],
            ),
            (
                "capture mechanism not manual",
                Capture,
                r#"{"data":{"capture_mechanism":"auto"}}"#,
                &[("data.capture_mechanism", "Invalid value")],
            ),
            (
                "capture with an amount",
                Capture,
                r#"{"data":{"amount":100}}"#,
                &[("data.amount", "Unknown field")],
            ),
            ("refund, mark as refunded", Refund, r#"{"data":{}}"#, &[]),
            (
                "partial refund with a note",
                Refund,
                r#"{"data":{"amount":500,"options":{"note":"damaged"}}}"#,
                &[],
            ),
            (
                "refund options at the top (SDK)",
                Refund,
                r#"{"options":{"note_to_payer":"sorry"}}"#,
                &[],
            ),
            (
                "refund amount as a string",
                Refund,
                r#"{"data":{"amount":"500"}}"#,
                &[("data.amount", "Invalid type")],
            ),
            (
                "refund amount with decimals",
                Refund,
                r#"{"data":{"amount":5.5}}"#,
                &[("data.amount", "Invalid amount")],
            ),
            (
                "refund amount zero",
                Refund,
                r#"{"data":{"amount":0}}"#,
                &[("data.amount", "Invalid amount")],
            ),
            (
                "cancel, the guide's example",
                Cancel,
                r#"{"data":{"reason":"requested_by_customer","options":{}}}"#,
                &[],
            ),
            (
                "cancel reason not a string",
                Cancel,
                r#"{"data":{"reason":1}}"#,
                &[("data.reason", "Invalid type")],
            ),
            ("confirm after 3-D Secure", Confirm, r#"{"data":{}}"#, &[]),
            (
                "confirm after PayPal approval",
                Confirm,
                r#"{"data":{"gateway":"paypal_express_checkout"}}"#,
                &[],
            ),
            (
                "2020 Payment Intents confirm",
                Confirm,
                r#"{"data":{"gateway":"stripe_payment_intents","method":"purchase","payment":"pm_1"}}"#,
                &[],
            ),
            (
                "confirm options at the top, data left out (SDK)",
                Confirm,
                r#"{"options":{"return_url":"https://shop.example/r"}}"#,
                &[],
            ),
            (
                "confirm, unknown gateway",
                Confirm,
                r#"{"data":{"gateway":"paypal"}}"#,
                &[("data.gateway", "Invalid value")],
            ),
            (
                "card number in a reason",
                Cancel,
                r#"{"data":{"reason":"card 4111 1111 1111 1111"}}"#,
                &[("data.reason", "Card number where a token is expected")],
            ),
            (
                "card number as a confirm token",
                Confirm,
                r#"{"data":{"payment":"4111111111111111"}}"#,
                &[("data.payment", "Card number where a token is expected")],
            ),
            (
                "unknown top-level member",
                Capture,
                r#"{"data":{},"meta":{}}"#,
                &[("meta", "Unknown field")],
            ),
            (
                "data twice",
                Refund,
                r#"{"data":{},"data":{"amount":1}}"#,
                &[("data", "Duplicate field")],
            ),
            (
                "data not an object",
                Cancel,
                r#"{"data":[]}"#,
                &[("data", "Invalid type")],
            ),
            ("not an object", Capture, "[]", &[("body", "Invalid type")]),
            ("not JSON", Capture, "{", &[("body", "Malformed JSON")]),
        ];
        for (case, action, body, expected) in rows {
            let got: Vec<(String, &str)> = match check_transaction_body(*action, body.as_bytes()) {
                Ok(()) => Vec::new(),
                Err(errors) => {
                    let text = format!("{errors:?}");
                    assert!(!text.contains("4111"), "{case}: echoes the card: {text}");
                    errors.into_iter().map(|e| (e.source, e.title)).collect()
                }
            };
            let expected: Vec<(String, &str)> = expected
                .iter()
                .map(|(s, t)| ((*s).to_owned(), *t))
                .collect();
            assert_eq!(got, expected, "{case}");
        }
    }
}
