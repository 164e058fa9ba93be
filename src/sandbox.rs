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

use crate::payment::Method as PaymentMethod;
use crate::payment::gateway;

pub const HEADER: &str = "x-payshim-sandbox";

/// Answers one forwarded request. Bodies are never echoed back.
pub fn respond(method: &Method, path_and_query: &str, body: &[u8]) -> Response<Bytes> {
    let path = path_and_query.split('?').next().unwrap_or("");
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let value = match (method, parts.as_slice()) {
        (&Method::POST, ["v2", "orders", order, "payments"]) => {
            json!({ "data": payment(order, &Sent::read(body)) })
        }
        (&Method::POST, ["v2", "orders", order, "transactions", _, action]) => {
            json!({ "data": action_answer(order, action, &Sent::read(body)) })
        }
        (&Method::GET, ["v2", "orders", order, "transactions"]) => {
            let t = Transaction::new(order, "card_connect", "purchase", "complete");
            json!({ "data": [t.json()] })
        }
        (&Method::GET, ["v2", "orders", order, "transactions", _]) => {
            let t = Transaction::new(order, "card_connect", "purchase", "complete");
            json!({ "data": t.json() })
        }
        _ => json!({ "data": {} }),
    };
    // Today's API answers 200 to payments and transaction actions alike.
    let mut resp = Response::new(Bytes::from(value.to_string()));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(HEADER, HeaderValue::from_static("true"));
    resp
}

/// What the sandbox reads from a forwarded body: only known names and numbers, never a
/// value it could echo.
struct Sent {
    gateway: &'static str,
    method: &'static str,
    amount: Option<u64>,
    /// Stripe's test payment method that requires 3-D Secure.
    three_d_secure: bool,
}

impl Sent {
    fn read(body: &[u8]) -> Sent {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let data = &v["data"];
        let gateway = data["gateway"].as_str().unwrap_or("");
        let method = data["method"].as_str().unwrap_or("");
        Sent {
            gateway: gateway::all_names()
                .find(|g| *g == gateway)
                .unwrap_or("card_connect"),
            method: PaymentMethod::from_wire(method).map_or("purchase", PaymentMethod::as_str),
            amount: data["amount"].as_u64(),
            three_d_secure: data["payment"]
                .as_str()
                .is_some_and(|p| p.contains("threeDSecure")),
        }
    }
}

/// A payment: `complete`, except where the gateway would hand the shopper over first
/// (PayPal approval, Stripe's 3-D Secure), which is `pending` with the client parameters
/// the storefront needs before it calls `confirm`.
fn payment(order: &str, sent: &Sent) -> serde_json::Value {
    let kind = sent.method.replace('_', "-");
    let stripe = sent.gateway.contains("stripe") && sent.gateway != "stripe";
    let pending = sent.gateway == "paypal_express_checkout" || (stripe && sent.three_d_secure);
    let status = if pending { "pending" } else { "complete" };
    let mut t = Transaction::new(order, sent.gateway, &kind, status);
    t.amount = sent.amount.unwrap_or(t.amount);
    let mut value = t.json();
    let token = format!("sandbox-{}", &t.id[24..]);
    if sent.gateway == "paypal_express_checkout" {
        value["client_parameters"] = json!({
            "token": token,
            "redirect_url": format!("https://www.sandbox.paypal.com/checkoutnow?token={token}"),
        });
    } else if pending {
        value["client_parameters"] =
            json!({ "token": token, "secret": format!("pi_{token}_secret") });
        value["payment_details"] = json!({ "detailed_status": "requires_action" });
    }
    value
}

/// capture, refund, cancel and confirm on an existing transaction.
fn action_answer(order: &str, action: &str, sent: &Sent) -> serde_json::Value {
    let (kind, status) = match action {
        "capture" => ("capture", "complete"),
        "refund" => ("refund", "complete"),
        "confirm" => ("purchase", "complete"),
        _ => ("purchase", "cancelled"),
    };
    let mut t = Transaction::new(order, "card_connect", kind, status);
    if action == "refund" {
        t.refunded = sent.amount.unwrap_or(t.amount);
    }
    let mut value = t.json();
    if action == "refund" {
        value["refund_mechanism"] = json!("automatic");
    }
    value
}

/// The transaction object of today's API.
struct Transaction<'a> {
    id: String,
    order_id: &'a str,
    gateway: &'a str,
    kind: &'a str,
    status: &'a str,
    amount: u64,
    refunded: u64,
}

impl<'a> Transaction<'a> {
    fn new(order_id: &'a str, gateway: &'a str, kind: &'a str, status: &'a str) -> Self {
        Transaction {
            id: uuid::Uuid::now_v7().to_string(),
            order_id,
            gateway,
            kind,
            status,
            amount: 1000,
            refunded: 0,
        }
    }

    fn json(&self) -> serde_json::Value {
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        json!({
            "id": self.id,
            "type": "transaction",
            "reference": format!("sandbox-{}", &self.id[24..]),
            "name": null,
            "custom_reference": null,
            "gateway": self.gateway,
            "amount": self.amount,
            "refunded_amount": self.refunded,
            "currency": "USD",
            "transaction_type": self.kind,
            "status": self.status,
            "relationships": { "order": { "data": { "type": "order", "id": self.order_id } } },
            "meta": {
                "display_price": money(self.amount),
                "display_refunded_amount": money(self.refunded),
                "timestamps": { "created_at": now, "updated_at": now }
            }
        })
    }
}

fn money(cents: u64) -> serde_json::Value {
    json!({
        "amount": cents,
        "currency": "USD",
        "formatted": format!("${}.{:02}", cents / 100, cents % 100),
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
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[HEADER], "true");
        let text = std::str::from_utf8(resp.body()).unwrap();
        assert!(!text.contains("4111111111111111") && !text.contains("\"123\""));
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["data"]["transaction_type"], "authorize");
        assert_eq!(v["data"]["status"], "complete");
        assert_eq!(v["data"]["gateway"], "card_connect");
        assert_eq!(v["data"]["relationships"]["order"]["data"]["id"], order);
    }

    #[test]
    fn answers_per_gateway_and_action() {
        let order = "0a1b2c3d-0000-4000-8000-00000000abcd";
        let pay = |body: &str| {
            let resp = respond(
                &Method::POST,
                &format!("/v2/orders/{order}/payments"),
                body.as_bytes(),
            );
            assert_eq!(resp.status(), StatusCode::OK);
            serde_json::from_slice::<serde_json::Value>(resp.body()).unwrap()["data"].clone()
        };
        let t = pay(
            r#"{"data":{"gateway":"stripe","method":"purchase","payment":"tok_visa","amount":5499}}"#,
        );
        assert_eq!(
            (t["gateway"].as_str(), t["status"].as_str()),
            (Some("stripe"), Some("complete"))
        );
        assert_eq!(t["amount"], 5499);
        assert_eq!(t["meta"]["display_price"]["formatted"], "$54.99");
        let t = pay(
            r#"{"data":{"gateway":"elastic_path_payments_stripe","method":"purchase_setup","payment":"pm_card_threeDSecureRequired"}}"#,
        );
        assert_eq!(t["status"], "pending");
        assert_eq!(t["transaction_type"], "purchase-setup");
        assert!(t["client_parameters"]["secret"].is_string());
        let t = pay(r#"{"data":{"gateway":"paypal_express_checkout","method":"authorize"}}"#);
        assert_eq!(t["status"], "pending");
        assert!(
            t["client_parameters"]["redirect_url"]
                .as_str()
                .unwrap()
                .starts_with("https://")
        );
        let t = pay(r#"{"data":{"gateway":"manual","method":"authorize"}}"#);
        assert_eq!(
            (t["transaction_type"].as_str(), t["status"].as_str()),
            (Some("authorize"), Some("complete"))
        );

        let act = |action: &str, body: &str| {
            let path = format!("/v2/orders/{order}/transactions/{order}/{action}");
            let resp = respond(&Method::POST, &path, body.as_bytes());
            assert_eq!(resp.status(), StatusCode::OK);
            serde_json::from_slice::<serde_json::Value>(resp.body()).unwrap()["data"].clone()
        };
        assert_eq!(act("capture", "")["transaction_type"], "capture");
        let refund = act("refund", r#"{"data":{"amount":250}}"#);
        assert_eq!(refund["refunded_amount"], 250);
        assert_eq!(refund["refund_mechanism"], "automatic");
        assert_eq!(act("cancel", "{}")["status"], "cancelled");
        assert_eq!(act("confirm", r#"{"data":{}}"#)["status"], "complete");
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
