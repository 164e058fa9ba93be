//! The payment parser (DESIGN.md §4, §5): on any body, `PaymentRequest::parse` does not panic,
//! and neither its errors nor a parsed request's `Debug` output show a card number (errors
//! never quote input values; card data prints as a mask). A parsed request's canonical upstream
//! body parses again to the same canonical body.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use payshim::payment::{GatewayPolicy, PaymentRequest, YearMonth, gateway};

const TODAY: YearMonth = YearMonth {
    year: 2025,
    month: 6,
};

fn assert_no_card_number(what: &str, text: &str) {
    if let Some(run) = common::luhn_valid_run(text) {
        panic!("{what} shows a card number ({})", common::masked(&run));
    }
}

/// Every gateway, with raw card fields where the 2020 API took them.
fn policy() -> GatewayPolicy {
    let all: Vec<String> = gateway::all_names().map(str::to_owned).collect();
    let raw: Vec<String> = all
        .iter()
        .filter(|n| gateway::find(n).is_some_and(|g| g.has_raw_card_form()))
        .cloned()
        .collect();
    GatewayPolicy::new(&all, &raw).expect("the gateway table's own names")
}

fuzz_target!(|data: &[u8]| {
    let gateways = policy();
    match PaymentRequest::parse(data, &gateways, TODAY) {
        Ok(request) => {
            assert_no_card_number("PaymentRequest Debug", &format!("{request:?}"));
            let body = request.to_upstream_body();
            match PaymentRequest::parse(&body, &gateways, TODAY) {
                Ok(again) => assert!(
                    *again.to_upstream_body() == *body,
                    "canonical body is not stable under re-parsing"
                ),
                Err(errors) => panic!("canonical body does not parse again: {errors:?}"),
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "Err without any FieldError");
            for error in &errors {
                assert_no_card_number("FieldError Display", &error.to_string());
                assert_no_card_number("FieldError Debug", &format!("{error:?}"));
            }
        }
    }
});
