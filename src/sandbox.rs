//! Offline stand-in for the commerce API, for the shipped dev config only.
//!
//! With `upstream.url = "sandbox"` payshim answers the allowed routes itself, like a test
//! store would, so a fresh checkout runs with no account and no network. Every response
//! carries `X-Payshim-Sandbox: true`; config validation refuses sandbox mode on a
//! non-loopback listener, so it can never face real shoppers.

use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use serde_json::json;

pub const HEADER: &str = "x-payshim-sandbox";

/// Answers one forwarded request. Bodies are never echoed back.
pub fn respond(method: &Method, path_and_query: &str, body: &[u8]) -> Response<Bytes> {
    let path = path_and_query.split('?').next().unwrap_or("");
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (status, value) = match (method, parts.as_slice()) {
        (&Method::POST, ["v2", "orders", order, "payments"]) => {
            let kind = payment_method(body);
            (
                StatusCode::CREATED,
                json!({ "data": transaction(order, &kind, "complete") }),
            )
        }
        (&Method::POST, ["v2", "orders", order, "transactions", _, action]) => {
            let status = match *action {
                "capture" => "complete",
                "refund" => "refunded",
                _ => "cancelled",
            };
            (
                StatusCode::CREATED,
                json!({ "data": transaction(order, action, status) }),
            )
        }
        (&Method::GET, ["v2", "orders", order, "transactions"]) => (
            StatusCode::OK,
            json!({ "data": [transaction(order, "purchase", "complete")] }),
        ),
        (&Method::GET, ["v2", "orders", order, "transactions", _]) => (
            StatusCode::OK,
            json!({ "data": transaction(order, "purchase", "complete") }),
        ),
        _ => (StatusCode::OK, json!({ "data": {} })),
    };
    let mut resp = Response::new(Bytes::from(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(HEADER, HeaderValue::from_static("true"));
    resp
}

/// The payment `method` of the request, if it is one we know; never anything else.
fn payment_method(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    match v["data"]["method"].as_str() {
        Some(m @ ("purchase" | "authorize" | "capture")) => m.to_string(),
        _ => "purchase".to_string(),
    }
}

fn transaction(order_id: &str, kind: &str, status: &str) -> serde_json::Value {
    let id = uuid::Uuid::now_v7().to_string();
    let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    json!({
        "id": id,
        "type": "transaction",
        "reference": format!("sandbox-{}", &id[24..]),
        "name": null,
        "custom_reference": null,
        "gateway": "card_connect",
        "amount": 1000,
        "refunded_amount": if status == "refunded" { 1000 } else { 0 },
        "currency": "USD",
        "transaction_type": kind,
        "status": status,
        "relationships": { "order": { "data": { "type": "order", "id": order_id } } },
        "meta": {
            "display_price": { "amount": 1000, "currency": "USD", "formatted": "$10.00" },
            "display_refunded_amount": { "amount": 0, "currency": "USD", "formatted": "$0.00" },
            "timestamps": { "created_at": now, "updated_at": now }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payment_creates_a_transaction_without_echoing_card_data() {
        let body = br#"{"data":{"gateway":"card_connect","method":"authorize","number":"4111111111111111","verification_value":"123"}}"#;
        let order = "0a1b2c3d-0000-4000-8000-00000000abcd";
        let resp = respond(&Method::POST, &format!("/v2/orders/{order}/payments"), body);
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(resp.headers()[HEADER], "true");
        let text = std::str::from_utf8(resp.body()).unwrap();
        assert!(!text.contains("4111111111111111") && !text.contains("\"123\""));
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["data"]["transaction_type"], "authorize");
        assert_eq!(v["data"]["relationships"]["order"]["data"]["id"], order);
    }

    #[test]
    fn transactions_list() {
        let order = "0a1b2c3d-0000-4000-8000-00000000abcd";
        let resp = respond(
            &Method::GET,
            &format!("/v2/orders/{order}/transactions"),
            b"",
        );
        let v: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(v["data"].is_array());
    }
}
